"""The stats board: a pool's latest snapshot in shared memory, readable from any process.

Why: ``python -m lane_mp top`` runs in another process and must not ask the pool anything (no
request on the submit ring, no socket, no lock the pool could wait on). So the coordinator
*publishes* its ``snapshot()`` every :data:`PUBLISH_INTERVAL_S` into a small segment and readers
copy it out whenever they like; a reader can never slow the pool down or block it.

Layout of ``lmp_<token>_stats`` (8-byte little-endian words, stored through ``cast('Q')``)::

    offset                      field
    0                           magic "LMPBOARD"
    8                           layout version (1)
    16                          slot count (2)
    24                          slot payload capacity in bytes (SLOT_BYTES)
    64   + 64*i                 slot i sequence word (seqlock), alone in its cache line
    72   + 64*i                 slot i payload length
    4096 + SLOT_BYTES*i         slot i payload: one msgpack map

    slot 0  written by the coordinator: snapshot() + pids + per-lane rates (COORDINATOR)
    slot 1  written by the caller when it keeps metrics: latency / wait percentiles (CALLER)

Each slot has exactly one writer and uses a seqlock: the writer makes the sequence odd, writes
payload and length, then makes it even again (``seq + 2``). A reader reads the sequence, retries
while it is odd, copies length and payload, and keeps the copy only if the sequence is unchanged;
sequence 0 means "never published". Writers never wait for readers.

Memory ordering: this relies on x86-64 TSO (stores become visible in program order, loads are not
reordered with other loads), measured in MEASURED.md (aligned ``cast('Q')`` stores never tore,
payload-then-cursor never reordered). On a weakly ordered CPU (ARM) the writer would need a
release fence before each sequence store and the reader an acquire fence after each sequence
load; that assumption lives here and nowhere else.

Ownership: the coordinator creates the segment (:meth:`StatsBoard.create`) and its exit sweep of
``lmp_<token>_*`` unlinks it; the caller and readers only attach (our ``Segment`` never registers
with the 3.11 resource tracker, so an attached reader cannot unlink it by accident).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import msgspec
from loguru import logger

from ..ipc.segments import PAGE, PREFIX, Segment, list_segments

__all__ = [
    "StatsBoard",
    "BoardBusy",
    "board_name",
    "list_boards",
    "COORDINATOR",
    "CALLER",
    "PUBLISH_INTERVAL_S",
    "SLOT_BYTES",
]

MAGIC = int.from_bytes(b"LMPBOARD", "little")
VERSION = 1
COORDINATOR, CALLER = 0, 1
SLOTS = 2
SUFFIX = "_stats"
# 64 KiB per slot: a snapshot of 56 lanes and a few hundred workers is ~25 KB of msgpack. A
# larger board would cost first-touch time (~2 µs/page) for nothing.
SLOT_BYTES = 64 * 1024
_HEADER = PAGE  # payloads start on the second page
_SIZE = _HEADER + SLOTS * SLOT_BYTES
# How often the coordinator (and the caller) publish. Twice a second is smooth enough for a
# human watching `top` and costs ~50 µs of coordinator time per publish (snapshot + encode).
# LANE_MP_BOARD_INTERVAL=0 turns publishing off.
PUBLISH_INTERVAL_S = float(os.environ.get("LANE_MP_BOARD_INTERVAL", "0.5"))
# A reader gives up after this many inconsistent reads (a writer killed mid-write leaves the
# sequence odd for good); each retry after the first few sleeps 100 µs.
_READ_RETRIES = 200


class BoardBusy(Exception):
    """No consistent copy after many retries: the writer is stuck or died mid-write."""


def board_name(token: str) -> str:
    return f"{PREFIX}{token}{SUFFIX}"


def list_boards() -> list[str]:
    """Tokens of every board in /dev/shm (live or left behind by a killed pool)."""
    return [name[len(PREFIX) : -len(SUFFIX)] for name in list_segments(PREFIX) if name.endswith(SUFFIX)]


def _caller_pid() -> int:
    """The pool owner's pid. Not ``os.getppid()``: under forkserver that is the fork server."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getppid()


def _seq(slot: int) -> int:
    return 8 + 8 * slot  # word index: 64 + 64*slot bytes


class StatsBoard:
    """One mapped board. The coordinator owns it (``create``), everyone else ``attach``-es.

    ``due`` is the monotonic time of the next publication: the coordinator's loop checks
    ``now >= board.due`` (one comparison per turn) and only then calls :meth:`publish_snapshot`.
    """

    def __init__(self, segment: Segment, token: str, *, init: bool = False) -> None:
        self.segment = segment
        self.token = token
        self.words = segment.buf.cast("Q")
        if init:
            w = self.words
            w[1], w[2], w[3] = VERSION, SLOTS, SLOT_BYTES
            w[0] = MAGIC  # last: a reader that sees the magic sees the header
        self.interval = PUBLISH_INTERVAL_S
        self.due = 0.0 if self.interval > 0 else math.inf
        self._enc = msgspec.msgpack.Encoder()
        self._prev: tuple[float, list[int]] | None = None
        self.publications = 0

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def create(cls, token: str) -> StatsBoard:
        """Create the board of pool ``token`` (the coordinator does this once)."""
        return cls(Segment.create(board_name(token), _SIZE), token, init=True)

    @classmethod
    def attach(cls, token: str, *, writable: bool = False) -> StatsBoard:
        """Map an existing board; FileNotFoundError when it is gone, ValueError if not a board."""
        seg = Segment.attach(board_name(token), readonly=not writable)
        board = cls(seg, token)
        w = board.words
        if w[0] != MAGIC or w[1] != VERSION or w[2] < SLOTS or w[3] != SLOT_BYTES:
            board.close()
            raise ValueError(f"{seg.name} is not a version {VERSION} lane_mp stats board")
        return board

    def close(self) -> None:
        """Unmap (the owner's exit sweep removes the name)."""
        self.words.release()
        self.segment.close()

    # -- writing ---------------------------------------------------------------------------------

    def write(self, slot: int, data: bytes) -> bool:
        """Publish ``data`` in ``slot`` (one writer per slot). False if it does not fit."""
        n = len(data)
        if n > SLOT_BYTES:
            return False
        w = self.words
        i = _seq(slot)
        seq = w[i]
        w[i] = seq + 1  # odd: readers retry
        off = _HEADER + slot * SLOT_BYTES
        self.segment.buf[off : off + n] = data
        w[i + 1] = n
        w[i] = seq + 2  # even again: the copy is consistent
        return True

    def publish(self, slot: int, doc: dict[str, Any]) -> None:
        data = self._enc.encode(doc)
        if not self.write(slot, data):
            self.write(slot, self._enc.encode({"error": f"snapshot too large ({len(data)} bytes)"}))
        self.publications += 1

    def publish_snapshot(self, snapshot: dict[str, Any], now: float) -> None:
        """The coordinator's publication: ``snapshot()`` plus pids, time and per-lane rates.

        ``rate`` is finished commands (completed + failed) per second since the previous
        publication, so a reader gets a rate from a single read.
        """
        self.due = now + self.interval
        try:
            self._publish_snapshot(snapshot, now)
        except Exception:  # noqa: BLE001 - the board is a nicety; it must never break the loop
            logger.opt(exception=True).error("stats board disabled: publishing failed")
            self.due = math.inf

    def _publish_snapshot(self, snapshot: dict[str, Any], now: float) -> None:
        lanes = snapshot.get("lanes", [])
        finished = [lane["completed"] + lane["failed"] for lane in lanes]
        prev = self._prev
        if prev is not None and now > prev[0] and len(prev[1]) == len(finished):
            dt = now - prev[0]
            for lane, a, b in zip(lanes, prev[1], finished, strict=True):
                lane["rate"] = (b - a) / dt
        else:
            for lane in lanes:
                lane["rate"] = 0.0
        self._prev = (now, finished)
        doc = dict(snapshot)
        doc.update(
            token=self.token,
            coordinator_pid=os.getpid(),
            caller_pid=_caller_pid(),
            published_at=time.time(),
            interval=self.interval,
        )
        self.publish(COORDINATOR, doc)

    # -- reading ---------------------------------------------------------------------------------

    def read_bytes(self, slot: int) -> bytes | None:
        """A consistent copy of ``slot``'s payload; None if never published; BoardBusy if the
        writer keeps it inconsistent."""
        w = self.words
        i = _seq(slot)
        buf = self.segment.buf
        off = _HEADER + slot * SLOT_BYTES
        for attempt in range(_READ_RETRIES):
            s1 = w[i]
            if s1 == 0:
                return None
            if not s1 & 1:
                n = w[i + 1]
                if n <= SLOT_BYTES:
                    data = bytes(buf[off : off + n])
                    if w[i] == s1:
                        return data
            if attempt > 3:
                time.sleep(0.0001)
        raise BoardBusy(f"{self.segment.name} slot {slot}: no consistent copy after {_READ_RETRIES} tries")

    def read(self, slot: int = COORDINATOR) -> dict[str, Any] | None:
        """The decoded document of ``slot`` (None if never published)."""
        data = self.read_bytes(slot)
        return None if data is None else msgspec.msgpack.decode(data)

    def sequence(self, slot: int = COORDINATOR) -> int:
        """How many times ``slot`` was published (x2); changes whenever a new copy lands."""
        return self.words[_seq(slot)]

    def __repr__(self) -> str:
        return f"StatsBoard({self.segment.name!r}, owner={self.segment.owner})"
