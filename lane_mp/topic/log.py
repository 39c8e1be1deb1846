"""The ring of records: append, reclaim and crash repair, done by whoever holds the append lock.

Everything here runs under :class:`lane_mp.topic.lock.AppendLock` except :meth:`Log.walk` callers
that only read published records. Readers never take the lock (see ``consumer.py``); the only
thing they rely on is the publish order documented in :mod:`lane_mp.topic.layout`.

Why reclaim in chunks: once the log has wrapped, every append needs room. Reclaiming only the
bytes one record needs would rescan the consumer table on every publish, so a reclaim frees up to
:data:`RECLAIM_SLACK` of the capacity beyond what is needed — but never past a record some
registered consumer has not yet passed (except under ``drop_slowest``, which then frees only the
bytes it needs and counts what it dropped).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence

from lane_mp.errors import DecodeError
from lane_mp.topic import layout as L

__all__ = ["RECLAIM_SLACK", "Log", "Meta"]

# Fraction of the capacity freed beyond the immediate need in one reclaim: larger means fewer
# consumer-table scans per publish, smaller keeps more history for late "earliest" consumers.
RECLAIM_SLACK = 8  # capacity // 8


# Everything about a record but its payload and sequence (a plain tuple: a NamedTuple costs
# ~0.3 us more per message): (meta bytes, producer_len, type_len, group_len, flags, group_size,
# group_index, meta_key). publish_many shares one Meta across the whole batch.
Meta = tuple[bytes, int, int, int, int, int, int, int]

# Payloads up to this size are written together with their header by one pack_into of a
# per-size struct (~100 ns a record less than header + two slice copies); larger ones are copied
# by slice, where the per-call overhead no longer matters.
PACK_WHOLE_MAX = 4096
_PACKERS: dict[tuple[int, int], struct.Struct] = {}
_PACKERS_MAX = 512


def _packer(mpad: int, dpad: int) -> struct.Struct:
    packer = _PACKERS.get((mpad, dpad))
    if packer is None:
        if len(_PACKERS) >= _PACKERS_MAX:
            _PACKERS.clear()
        # "s" zero-fills up to its count: metadata and payload padding come for free.
        packer = _PACKERS[(mpad, dpad)] = struct.Struct(f"{L.RECORD.format}{mpad}s{dpad}s")
    return packer


class Log:
    """Operations over one mapping of a topic segment. Cheap to build; holds views only."""

    __slots__ = ("base", "buf", "cap", "max_consumers", "q", "slots0")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.q = buf.cast("Q")
        self.cap = self.q[L.W_CAPACITY]
        self.base = self.q[L.W_DATA_OFFSET]
        self.max_consumers = self.q[L.W_MAX_CONSUMERS]
        self.slots0 = L.slot_word(0)

    def release(self) -> None:
        self.q.release()

    # -- used by the lock holder ------------------------------------------------------------

    def retention_limit(self, tail: int, head: int) -> int:
        """The lowest committed position among registered consumers (or ``head`` if none)."""
        q = self.q
        limit = head
        w = self.slots0
        step = L.SLOT_BYTES // 8
        for _ in range(q[L.W_SLOT_HWM]):
            if q[w + L.S_STATE] != L.SLOT_FREE:
                pos = q[w + L.S_POSITION]
                limit = min(limit, pos)
            w += step
        return max(limit, tail)

    def reclaim(self, head: int, need: int, drop: bool) -> int:
        """Advance the tail until ``need`` bytes are free (if allowed); returns the new tail.

        ``head`` must be published already: the tail never passes the published head, so a
        consumer can always tell a reclaimed record (start < tail) from a live one.
        """
        q, buf, cap, base = self.q, self.buf, self.cap, self.base
        tail = q[L.W_TAIL_POS]
        tail_seq = q[L.W_TAIL_SEQ]
        limit = self.retention_limit(tail, head)
        want = min(cap, need + cap // RECLAIM_SLACK)
        dropped = 0
        while cap - (head - tail) < want and tail < head:
            if tail >= limit:
                if not drop:
                    break
                if cap - (head - tail) >= need:
                    break  # drop only what this append needs, never the slack
            off = tail % cap
            total, kind = L.WRAP.unpack_from(buf, base + off)
            if kind == L.KIND_MESSAGE:
                tail_seq = q[(base + off) // 8 + 1] + 1
                if tail >= limit:
                    dropped += 1
            tail += total
        if dropped:
            q[L.W_DROPPED] += dropped
        # Sequence first, position second: a reader keys off the position, and recover()
        # recomputes the sequence if we die in between.
        q[L.W_TAIL_SEQ] = tail_seq
        q[L.W_TAIL_POS] = tail
        return tail

    def append(
        self, metas: Sequence[Meta], datas: Sequence[bytes | memoryview], start: int, drop: bool
    ) -> int:
        """Write ``datas[start:]`` until one does not fit; publish; return how many were written.

        ``metas`` holds one Meta shared by every payload (publish_many) or one per payload. Each
        payload is ``bytes`` or a flat unsigned-byte memoryview (``len`` is its size in bytes).
        This is the publisher's hot loop: locals only, the physical offset carried along instead
        of a modulo per record, one head store for the whole batch.
        """
        q, buf, cap, base = self.q, self.buf, self.cap, self.base
        head = q[L.W_HEAD_POS]
        published = head
        free = cap - (head - q[L.W_TAIL_POS])
        seq = q[L.W_HEAD_SEQ]
        now = time.time()
        hdr = L.RECORD_HEADER
        kind = L.KIND_MESSAGE
        pack = L.RECORD.pack_into
        shared = len(metas) == 1
        meta, plen, tlen, glen, flags, gsize, gidx, mkey = metas[0]
        mlen = len(meta)
        mpad = (mlen + 7) & ~7
        off = head % cap
        written = 0
        for i in range(start, len(datas)):
            data = datas[i]
            if not shared:
                meta, plen, tlen, glen, flags, gsize, gidx, mkey = metas[i]
                mlen = len(meta)
                mpad = (mlen + 7) & ~7
            dlen = len(data)
            dpad = (dlen + 7) & ~7
            size = hdr + mpad + dpad
            contig = cap - off
            need = size if size <= contig else contig + size
            if free < need:
                if head != published:
                    q[L.W_HEAD_POS] = head  # publish first: reclaim stops at the published head
                    q[L.W_HEAD_SEQ] = seq
                    published = head
                free = cap - (head - self.reclaim(head, need, drop))
                if free < need:
                    break
            if size > contig:
                L.WRAP.pack_into(buf, base + off, contig, L.KIND_WRAP)
                head += contig
                free -= contig
                off = 0
            seq += 1
            p = base + off
            if dlen <= PACK_WHOLE_MAX and type(data) is bytes:
                _packer(mpad, dpad).pack_into(
                    buf, p, size, kind, flags, plen, tlen, seq, now, dlen, glen, gsize, gidx, mkey, meta, data
                )
            else:
                pack(buf, p, size, kind, flags, plen, tlen, seq, now, dlen, glen, gsize, gidx, mkey)
                p += hdr
                if mlen:
                    buf[p : p + mlen] = meta
                    p += mpad
                buf[p : p + dlen] = data
            head += size
            free -= size
            off += size
            if off == cap:
                off = 0
            written += 1
        if head != published:
            # The publish: one aligned 8-byte store after every byte of the records (x86 TSO).
            q[L.W_HEAD_POS] = head
            q[L.W_HEAD_SEQ] = seq
        return written

    def recover(self) -> None:
        """Repair the sequence words after a lock holder died inside the critical section.

        ``head_pos`` and ``tail_pos`` are single stores of record boundaries, so they are always
        right; the sequence words next to them may lag by one step. Re-derive both from the
        published records (O(retained records), only ever after a crash).
        """
        q = self.q
        first = last = 0
        for _pos, seq in self.walk(q[L.W_TAIL_POS], q[L.W_HEAD_POS]):
            if not first:
                first = seq
            last = seq
        if last:
            q[L.W_HEAD_SEQ] = last
            q[L.W_TAIL_SEQ] = first
        else:
            q[L.W_TAIL_SEQ] = q[L.W_HEAD_SEQ] + 1

    # -- read-only helpers ------------------------------------------------------------------

    def walk(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Yield ``(position, sequence)`` of each message record in ``[start, end)``."""
        buf, cap, base, q = self.buf, self.cap, self.base, self.q
        pos = start
        while pos < end:
            off = pos % cap
            total, kind = L.WRAP.unpack_from(buf, base + off)
            if total < 8 or total & 7 or off + total > cap or kind not in (L.KIND_MESSAGE, L.KIND_WRAP):
                raise DecodeError(f"corrupt record header at position {pos}", position=pos)
            if kind == L.KIND_MESSAGE:
                yield pos, q[(base + off) // 8 + 1]
            pos += total

    def find(self, sequence: int) -> tuple[int, int]:
        """Position of the first retained record with ``seq >= sequence`` (lock held)."""
        q = self.q
        head = q[L.W_HEAD_POS]
        for pos, seq in self.walk(q[L.W_TAIL_POS], head):
            if seq >= sequence:
                return pos, seq
        return head, q[L.W_HEAD_SEQ] + 1
