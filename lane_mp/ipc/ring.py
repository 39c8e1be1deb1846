"""Single-producer single-consumer byte ring over one shared-memory segment.

Byte layout (all integers little-endian; every cursor is an aligned 8-byte word alone in its own
64-byte cache line, written with one store through ``memoryview.cast('Q')`` so it never tears;
``struct.pack_into`` is never used for a word another process reads — see MEASURED.md)::

    offset  size  field            written by
    0       8     magic "LMPRING1"  creator
    8       8     capacity (bytes of the data area, a power of two)
    64      8     head             producer: total bytes published (monotonic, never wraps)
    128     8     tail             consumer: total bytes consumed
    192     8     waiting          consumer sets 1 before it sleeps; a producer that sees 1
                                   clears it and rings the consumer's doorbell
    256     8     word0            consumer-owned status words (the worker keeps the id of the
    264     8     word1            command it is running and its start time here)
    512     ...   data area        records

A record is ``u32 length | u32 tag | payload | pad to 8``. Records are contiguous: one that
does not fit before the end of the data area is preceded by a wrap marker (length 0xFFFFFFFF)
and written at offset 0, so a reader can always decode straight from one slice.

Ordering: the producer writes the record bytes, then stores ``head``; the consumer loads
``head``, then reads the bytes. On x86-64 (TSO) stores are not reordered with older stores and
loads not with older loads, so this is enough; a weakly ordered CPU (ARM) would need a release /
acquire pair here. This module is the one place that relies on it.

Batching: ``put`` stages records without publishing; ``publish`` stores ``head`` once for the
whole batch, which is what makes the ring cost ~0.4 µs per record per side.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from .segments import Segment

MAGIC = int.from_bytes(b"LMPRING1", "little")
HEADER = 512
_HEAD, _TAIL, _WAITING, _WORD0, _WORD1 = 8, 16, 24, 32, 33  # indexes in the 'Q' view
WRAP = 0xFFFFFFFF
_REC = struct.Struct("<II")
_REC_pack_into = _REC.pack_into
_REC_unpack_from = _REC.unpack_from

__all__ = ["Ring", "RingWriter", "RingReader", "ring_size", "HEADER"]


def ring_size(capacity: int) -> int:
    if capacity & (capacity - 1) or capacity < 4096:
        raise ValueError("ring capacity must be a power of two >= 4096")
    return HEADER + capacity


class Ring:
    """A ring laid over a segment; both ends derive from it."""

    def __init__(self, segment: Segment, *, init: bool = False, capacity: int | None = None) -> None:
        self.segment = segment
        self.words = segment.buf[:HEADER].cast("Q")
        if init:
            assert capacity is not None
            self.words[1] = capacity
            self.words[0] = MAGIC
        elif self.words[0] != MAGIC:
            raise ValueError(f"segment {segment.name} is not a lane_mp ring")
        self.capacity = self.words[1]
        self.data = segment.buf[HEADER : HEADER + self.capacity]
        # The largest record that always fits: half the ring, so a wrap never deadlocks.
        self.max_record = self.capacity // 2 - 16

    @classmethod
    def create(cls, name: str, capacity: int) -> Ring:
        return cls(Segment.create(name, ring_size(capacity)), init=True, capacity=capacity)

    @classmethod
    def attach(cls, name: str) -> Ring:
        return cls(Segment.attach(name))

    # status words owned by the consumer (see layout)
    def set_words(self, w0: int, w1: int) -> None:
        self.words[_WORD1] = w1
        self.words[_WORD0] = w0

    def get_words(self) -> tuple[int, int]:
        return self.words[_WORD0], self.words[_WORD1]

    def pending_bytes(self) -> int:
        return self.words[_HEAD] - self.words[_TAIL]

    def release(self) -> None:
        """Drop the views so the segment can be closed."""
        self.data.release()
        self.words.release()
        self.segment.close()


class RingWriter:
    """Producer end. Not thread-safe: one producer (callers serialise with a lock)."""

    __slots__ = ("ring", "words", "data", "cap", "mask", "max_record", "_head", "_tail")

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.words = ring.words
        self.data = ring.data
        self.cap = ring.capacity
        self.mask = ring.capacity - 1
        self.max_record = ring.max_record
        self._head = self.words[_HEAD]
        self._tail = self.words[_TAIL]

    def put(self, tag: int, payload: bytes | bytearray | memoryview) -> bool:
        """Stage one record; False when the ring is full (nothing staged). Call publish()."""
        n = len(payload)
        size = (n + 15) & ~7  # 8-byte header + payload, padded to 8
        if size > self.max_record:
            raise ValueError(f"record of {n} bytes exceeds ring limit {self.max_record}")
        head = self._head
        pos = head & self.mask
        room = self.cap - pos
        need = size if size <= room else size + room
        if head + need - self._tail > self.cap:
            self._tail = self.words[_TAIL]
            if head + need - self._tail > self.cap:
                return False
        data = self.data
        if size > room:
            _REC_pack_into(data, pos, WRAP, 0)
            head += room
            pos = 0
        _REC_pack_into(data, pos, n, tag)
        data[pos + 8 : pos + 8 + n] = payload
        self._head = head + size
        return True

    def publish(self) -> bool:
        """Make staged records visible; True if anything new was published."""
        if self.words[_HEAD] == self._head:
            return False
        self.words[_HEAD] = self._head
        return True

    def put_many(self, records: Iterable[tuple[int, bytes]]) -> int:
        """Stage records until one does not fit; returns how many were staged."""
        count = 0
        for tag, payload in records:
            if not self.put(tag, payload):
                break
            count += 1
        return count

    def free_bytes(self) -> int:
        self._tail = self.words[_TAIL]
        return self.cap - (self._head - self._tail)

    @property
    def consumer_waiting(self) -> bool:
        return self.words[_WAITING] != 0

    def clear_waiting(self) -> None:
        self.words[_WAITING] = 0


class RingReader:
    """Consumer end: copies records out and frees their space in one cursor store."""

    __slots__ = ("ring", "words", "data", "mask", "_tail")

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.words = ring.words
        self.data = ring.data
        self.mask = ring.capacity - 1
        self._tail = self.words[_TAIL]

    def has_data(self) -> bool:
        return self.words[_HEAD] != self._tail

    def read_all(self, limit: int = 1 << 30) -> list[tuple[int, bytes]]:
        """Every published record (up to ``limit``) as ``(tag, bytes)``; advances the tail once."""
        head = self.words[_HEAD]
        tail = self._tail
        if head == tail:
            return []
        out: list[tuple[int, bytes]] = []
        data, mask = self.data, self.mask
        while tail < head and len(out) < limit:
            pos = tail & mask
            n, tag = _REC_unpack_from(data, pos)
            if n == WRAP:
                tail += len(data) - pos
                continue
            out.append((tag, bytes(data[pos + 8 : pos + 8 + n])))
            tail += (n + 15) & ~7
        self._tail = tail
        self.words[_TAIL] = tail
        return out

    def set_waiting(self, value: bool) -> None:
        self.words[_WAITING] = 1 if value else 0
