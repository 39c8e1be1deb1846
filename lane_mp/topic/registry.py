"""The consumer table: who reads this topic, from where, and how far behind.

Every change of a slot's ownership (register, take over, detach, remove, reap) happens under the
append lock, so a publisher computing the retention limit never races a half-registered slot.
The hot words of a slot (position, next_seq, last_active, sleeping) are written by the owning
consumer alone, without the lock.

Liveness: a slot stores its owner's pid *and* process start time, so a recycled pid is not taken
for the dead consumer (psutil reads the start time from /proc; ~20 us, only when reaping).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import psutil

from lane_mp.errors import TopicError
from lane_mp.topic import layout as L
from lane_mp.topic.doorbell import Doorbell, fifo_path
from lane_mp.topic.log import Log
from lane_mp.topic.message import ConsumerInfo

if TYPE_CHECKING:
    from lane_mp.topic.topic import Topic

__all__ = ["Registration", "Slots", "is_alive", "process_start_us", "register"]

# psutil's create_time has the resolution of the kernel clock tick (10 ms); allow for rounding.
_START_TOLERANCE_US = 50_000


def process_start_us(pid: int) -> int:
    try:
        return int(psutil.Process(pid).create_time() * 1e6)
    except psutil.Error:
        return 0


def is_alive(pid: int, start_us: int) -> bool:
    if pid <= 0 or not psutil.pid_exists(pid):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False  # dead, only waiting for its parent to reap it
        now_start = int(proc.create_time() * 1e6)
    except psutil.Error:
        return False
    return start_us == 0 or abs(now_start - start_us) <= _START_TOLERANCE_US


class Slots:
    """Read and change the consumer table of one mapping (lock held for every change)."""

    __slots__ = ("log", "segment_name")

    def __init__(self, log: Log, segment_name: str) -> None:
        self.log = log
        self.segment_name = segment_name

    def _word(self, slot: int) -> int:
        return self.log.slots0 + slot * (L.SLOT_BYTES // 8)

    def id_of(self, slot: int) -> str:
        q, w = self.log.q, self._word(slot)
        n = q[w + L.S_ID_LEN]
        start = L.slot_byte(slot) + L.SLOT_ID_OFFSET
        return bytes(self.log.buf[start : start + min(n, L.MAX_ID_BYTES)]).decode("utf-8", "replace")

    def used(self) -> Iterator[int]:
        q = self.log.q
        for slot in range(q[L.W_SLOT_HWM]):
            if q[self._word(slot) + L.S_STATE] != L.SLOT_FREE:
                yield slot

    def find(self, consumer_id: str) -> int | None:
        for slot in self.used():
            if self.id_of(slot) == consumer_id:
                return slot
        return None

    def allocate(self, consumer_id: bytes) -> int | None:
        """A free slot with the id written in, state still FREE (lock held)."""
        q = self.log.q
        for slot in range(self.log.max_consumers):
            w = self._word(slot)
            if q[w + L.S_STATE] == L.SLOT_FREE:
                start = L.slot_byte(slot) + L.SLOT_ID_OFFSET
                self.log.buf[start : start + len(consumer_id)] = consumer_id
                q[w + L.S_ID_LEN] = len(consumer_id)
                q[L.W_SLOT_HWM] = max(q[L.W_SLOT_HWM], slot + 1)
                return slot
        return None

    def activate(self, slot: int, token: int, position: int, next_seq: int) -> None:
        """Hand the slot to this process at ``position`` (lock held).

        Position before state: a publisher computing retention must never see the slot active
        with a stale position.
        """
        q, w = self.log.q, self._word(slot)
        pid = os.getpid()
        q[w + L.S_POSITION] = position
        q[w + L.S_NEXT_SEQ] = next_seq
        q[w + L.S_LAST_ACTIVE] = time.monotonic_ns()
        q[w + L.S_SLEEPING] = 0
        q[w + L.S_PID] = pid
        q[w + L.S_PROC_START] = process_start_us(pid)
        q[w + L.S_TOKEN] = token
        q[w + L.S_STATE] = L.SLOT_ACTIVE

    def detach(self, slot: int, token: int) -> None:
        q, w = self.log.q, self._word(slot)
        if q[w + L.S_TOKEN] == token:
            q[w + L.S_PID] = 0
            q[w + L.S_STATE] = L.SLOT_DETACHED

    def free(self, slot: int) -> None:
        """Remove the consumer in ``slot`` (lock held); its FIFO goes with it."""
        q, w = self.log.q, self._word(slot)
        q[w + L.S_STATE] = L.SLOT_FREE
        q[w + L.S_TOKEN] = 0
        q[w + L.S_SLEEPING] = 0
        try:
            os.unlink(fifo_path(self.segment_name, slot))
        except FileNotFoundError:
            pass

    def state(self, slot: int) -> tuple[int, int, int, int]:
        """(state, token, pid, process start) of a slot."""
        q, w = self.log.q, self._word(slot)
        return q[w + L.S_STATE], q[w + L.S_TOKEN], q[w + L.S_PID], q[w + L.S_PROC_START]

    def dead(self) -> list[int]:
        """Active slots whose process is gone (no lock needed to look)."""
        out = []
        for slot in self.used():
            state, _token, pid, start = self.state(slot)
            if state == L.SLOT_ACTIVE and not is_alive(pid, start):
                out.append(slot)
        return out

    def sleepers(self) -> Iterator[tuple[int, int]]:
        """(slot, token) of every consumer that said it is going to sleep."""
        q = self.log.q
        step = L.SLOT_BYTES // 8
        w = self.log.slots0
        for slot in range(q[L.W_SLOT_HWM]):
            if q[w + L.S_SLEEPING]:
                yield slot, q[w + L.S_TOKEN]
            w += step

    def info(self, slot: int, head_seq: int, head_pos: int, tail_pos: int, now_ns: int) -> ConsumerInfo:
        q, w = self.log.q, self._word(slot)
        state, _token, pid, start = self.state(slot)
        detached = state == L.SLOT_DETACHED
        position = q[w + L.S_NEXT_SEQ]
        pos_bytes = max(q[w + L.S_POSITION], tail_pos)
        return ConsumerInfo(
            consumer_id=self.id_of(slot),
            slot=slot,
            pid=pid,
            alive=None if detached else is_alive(pid, start),
            detached=detached,
            position=position,
            lag=max(0, head_seq + 1 - position),
            lag_bytes=max(0, head_pos - pos_bytes),
            idle_seconds=max(0.0, (now_ns - q[w + L.S_LAST_ACTIVE]) / 1e9),
            reads=q[w + L.S_READS],
            lost=q[w + L.S_LOST],
            sleeping=bool(q[w + L.S_SLEEPING]),
        )


class Registration(NamedTuple):
    """Where a newly registered (or resumed) consumer starts."""

    slot: int
    token: int
    cursor: int  # virtual byte position of the next record to read
    expected: int  # sequence number expected there (a larger one means messages were lost)
    min_seq: int  # records below this are skipped (start= a future sequence number)
    resumed: bool
    doorbell: Doorbell


def register(topic: Topic, consumer_id: str, raw_id: bytes, start: str | int) -> Registration:
    """Register ``consumer_id`` or take over its slot (resume at the committed position).

    ``start`` only applies to a new id. An id whose slot is owned by a live process is refused;
    one left by a dead process, detached, or abandoned by this process is resumed.
    """
    log, q, slots = topic._log, topic._log.q, topic._slots
    me = os.getpid()
    topic._enter(topic._lock)
    try:
        min_seq = 0
        slot = slots.find(consumer_id)
        if slot is not None:
            state, _token, pid, pstart = slots.state(slot)
            if state == L.SLOT_ACTIVE and pid != me and is_alive(pid, pstart):
                raise TopicError(
                    f"consumer {consumer_id!r} is in use by pid {pid}", consumer_id=consumer_id, pid=pid
                )
            w = log.slots0 + slot * (L.SLOT_BYTES // 8)
            cursor = max(q[w + L.S_POSITION], q[L.W_TAIL_POS])
            expected = q[w + L.S_NEXT_SEQ]
            resumed = True
        else:
            slot = slots.allocate(raw_id)
            if slot is None:
                raise TopicError(
                    f"consumer table of {topic.name!r} is full (max_consumers={log.max_consumers})",
                    topic=topic.name,
                )
            cursor, expected, min_seq = _start_at(log, start)
            resumed = False
        doorbell = Doorbell(fifo_path(topic.segment_name, slot))  # before the token is published
        token = secrets.randbits(62) | 1
        slots.activate(slot, token, cursor, expected)
    finally:
        topic._leave(topic._lock)
    return Registration(slot, token, cursor, expected, min_seq, resumed, doorbell)


def _start_at(log: Log, start: str | int) -> tuple[int, int, int]:
    """(cursor, expected sequence, min sequence) for a new consumer (lock held)."""
    q = log.q
    if start == "latest":
        return q[L.W_HEAD_POS], q[L.W_HEAD_SEQ] + 1, 0
    if start == "earliest":
        return q[L.W_TAIL_POS], q[L.W_TAIL_SEQ], 0
    assert isinstance(start, int)
    if start <= q[L.W_TAIL_SEQ]:
        # Asked for history retention no longer has: the gap shows up as ``lost``.
        return q[L.W_TAIL_POS], start, 0
    if start > q[L.W_HEAD_SEQ] + 1:
        return q[L.W_HEAD_POS], q[L.W_HEAD_SEQ] + 1, start  # the future: skip up to it
    pos, seq = log.find(start)
    return pos, seq, 0
