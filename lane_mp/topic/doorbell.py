"""Wake-ups for idle consumers: one named pipe (FIFO) per consumer slot.

Why a FIFO: Python has no futex, an eventfd cannot be shared with an unrelated process without
passing descriptors, and back-off sleeps either cost CPU at idle (waking every ms) or latency
(waking every 10+ ms). A FIFO is a name any process can open, ``poll`` sleeps on it at 0% CPU, and
a one-byte write wakes the reader in ~30 us across cores (MEASURED.md: pipes ~ eventfd).

The protocol (lost wake-ups are the hazard, measured in MEASURED.md):

* consumer: ``sleeping = 1``; full fence; reload ``head_pos``; sleep only if nothing arrived.
* publisher: store ``head_pos``; full fence; load every ``sleeping`` flag; ring the set ones.

With a fence on both sides at least one of them sees the other's store. A bounded poll timeout
(:data:`BACKSTOP_S`) is kept anyway, so a missed ring costs latency, never a hang.

The consumer holds a write end of its own FIFO open as well, so the FIFO never reports end of
file (``POLLHUP``) when no publisher has it open — otherwise ``poll`` would return at once forever.

FIFOs live next to the segment in /dev/shm as ``<segment>.c<slot>``: the same ``lmp_`` prefix, so
the owner's unlink (a prefix sweep) and leak checks cover them. The consumer creates and removes its
own; whoever reaps a dead consumer removes its FIFO.
"""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path

from lane_mp.ipc.segments import SHM_DIR

__all__ = ["BACKSTOP_S", "Doorbell", "Ringer", "fifo_path"]

# A sleeping consumer re-checks on its own this often even without a ring: the safety net for a
# ring that never comes (e.g. the publisher died between publishing and ringing). 100 ms keeps idle
# CPU at ~0 (ten cheap wake-ups a second) while bounding the worst case.
BACKSTOP_S = 0.1


def fifo_path(segment_name: str, slot: int) -> Path:
    return SHM_DIR / f"{segment_name}.c{slot}"


class Doorbell:
    """The consumer's end: create the FIFO, sleep on it, drain it, remove it."""

    __slots__ = ("_poll", "_rfd", "_wfd", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            os.unlink(path)  # a dead consumer's leftover in this slot
        except FileNotFoundError:
            pass
        os.mkfifo(path, 0o600)
        self._rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        self._poll = select.poll()
        self._poll.register(self._rfd, select.POLLIN)

    def wait(self, timeout: float) -> bool:
        """Sleep until rung or ``timeout`` seconds pass; True when rung."""
        events = self._poll.poll(max(0, int(timeout * 1000.0 + 0.999)))
        if events:
            self.drain()
            return True
        return False

    def drain(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Ringer:
    """The publisher's end: one cached write descriptor per (slot, registration token)."""

    __slots__ = ("_fds", "_gone", "segment_name")

    def __init__(self, segment_name: str) -> None:
        self.segment_name = segment_name
        self._fds: dict[int, tuple[int, int]] = {}
        # slot -> token whose FIFO could not be opened: a consumer that died asleep keeps its flag
        # up until it is reaped, and must not cost every publish a failing open() until then.
        self._gone: dict[int, int] = {}

    def ring(self, slot: int, token: int) -> None:
        cached = self._fds.get(slot)
        if cached is not None and cached[0] != token:
            self._drop(slot)
            cached = None
        if cached is None:
            if self._gone.get(slot) == token:
                return
            try:
                fd = os.open(fifo_path(self.segment_name, slot), os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                # No reader (ENXIO) or no FIFO: the consumer is gone. A live one always has its
                # FIFO open before its token is published, so this token will never answer.
                self._gone[slot] = token
                return
            os.set_inheritable(fd, False)
            self._fds[slot] = cached = (token, fd)
        try:
            os.write(cached[1], b"\x01")
        except BlockingIOError:
            pass  # the pipe is full of rings already: the consumer will wake
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                self._drop(slot)
                self._gone[slot] = token
            else:
                raise

    def _drop(self, slot: int) -> None:
        cached = self._fds.pop(slot, None)
        if cached is not None:
            try:
                os.close(cached[1])
            except OSError:
                pass

    def close(self) -> None:
        for slot in list(self._fds):
            self._drop(slot)
