"""Wake-ups: a pipe per sleeping reader, rung only when the reader said it is going to sleep.

Why a pipe: it is waitable together with process sentinels in one ``poll()``, it survives all
three start methods (the ends travel as ``multiprocessing.connection.Connection`` objects), and a
1-byte write is atomic with any number of writers. The cost (~30 µs cross-core) is paid only on
the transition to sleep, never per record while work flows.

The handshake (MEASURED.md: without a full fence on both sides ~6% of rounds lose a wake-up):

    reader: waiting = 1; FENCE; if rings empty: poll(doorbell, backstop); waiting = 0
    writer: publish head; FENCE; if waiting: waiting = 0; write(doorbell)

``FENCE`` is an uncontended ``threading.Lock`` acquire/release (a locked instruction on x86-64,
~100 ns). A poll timeout (``BACKSTOP_S``) bounds the damage of any wake-up lost anyway.
"""

from __future__ import annotations

import os
import threading

# Upper bound on the delay a lost wake-up can cause; also the idle poll rate (cheap: 10/s).
BACKSTOP_S = 0.1

_fence_lock = threading.Lock()


def fence() -> None:
    """Full memory barrier between our last store and our next load (see module docstring)."""
    _fence_lock.acquire()
    _fence_lock.release()


def ring_fd(fd: int) -> None:
    """Write one byte; a full pipe already holds a wake-up, so EAGAIN is fine."""
    try:
        os.write(fd, b"\x01")
    except (BlockingIOError, BrokenPipeError):
        pass


def ring_if_waiting(words: memoryview, index: int, fd: int) -> None:
    """The writer half of the handshake: fence, and ring ``fd`` only if the reader's waiting
    word (``words[index]``) says it sleeps. The one place every producer wakes a reader."""
    fence()
    if words[index]:
        words[index] = 0
        ring_fd(fd)


def drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def make_pipe() -> tuple[int, int]:
    """Non-blocking (read_fd, write_fd), close-on-exec."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    return r, w
