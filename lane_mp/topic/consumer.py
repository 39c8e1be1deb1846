"""``Consumer``: read every message of a topic, in order, at this consumer's own position.

Reading takes no lock. The consumer loads ``head_pos``, copies the records before it, then
reloads ``tail_pos``: a record that starts before the tail may have been overwritten while it was
copied (only possible under ``drop_slowest``, or after this consumer was removed). Those records
are thrown away — the intact rest of the batch is kept when the walk provably went through the
tail — and reading continues at the tail. The sequence gap that leaves is exactly what was lost,
and it is reported on the next message (``Message.lost``) and in ``Consumer.lost``.

Positions and commits: the *cursor* is where the next read starts (``position`` is its sequence
number); the *committed* position in the shared slot is what retention respects and where a
consumer with the same id resumes. With ``auto_commit`` (default) a copying read commits as soon as
it has copied; a ``copy=False`` read commits at the start of the next read/commit instead, which
is what keeps its views valid until then. With ``auto_commit=False`` only :meth:`commit` moves it.

Waiting (no busy spin at idle): a few hundred reloads of ``head_pos`` (~10 us) catch a message
already on its way, then the consumer raises its ``sleeping`` flag, fences, re-checks and sleeps in
``poll`` on its doorbell FIFO (see :mod:`lane_mp.topic.doorbell`); a publisher that sees the flag
rings it. The spin is kept short because on two cores a long spin steals the publisher's core
(MEASURED.md: two spinners on one core stalled up to 8 ms).

Groups (:meth:`read_group`, assembled by :mod:`lane_mp.topic.groups`): a complete group comes
back as one list in member order, a message outside any group as a one-element list. The position
commits past members as they are read, so a consumer that restarts mid-group never completes that
group; a partial group older than ``group_timeout`` is abandoned and counted in
``abandoned_groups``. Use either ``read_group`` or the plain reads on one consumer, not both.
"""

from __future__ import annotations

import bisect
import mmap
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Self, cast

import msgspec

from lane_mp.errors import ConfigError, DecodeError, TopicClosed, TopicError
from lane_mp.topic import layout as L
from lane_mp.topic.doorbell import BACKSTOP_S, Doorbell
from lane_mp.topic.groups import GroupAssembler
from lane_mp.topic.lock import fence
from lane_mp.topic.message import Message
from lane_mp.topic.registry import register

if TYPE_CHECKING:
    from lane_mp.topic.topic import Topic

__all__ = ["SPIN_CHECKS", "Consumer"]

# Reloads of head_pos before sleeping (~30 ns each): long enough to catch a publisher mid-batch,
# short enough not to matter when two processes share a core.
SPIN_CHECKS = 300
_META_CACHE_MAX = 1024

# Consumers open in this process, by (segment, id): one id is one reader at a time.
_OPEN: dict[tuple[str, str], int] = {}
_OPEN_LOCK = threading.Lock()


def _reset_after_fork() -> None:
    global _OPEN_LOCK
    _OPEN_LOCK = threading.Lock()  # a thread of the parent may have held it at fork time


os.register_at_fork(after_in_child=_reset_after_fork)


class Consumer:
    """One registered reader of a topic (not thread-safe; one thread per consumer)."""

    def __init__(
        self,
        topic: Topic,
        consumer_id: str,
        start: str | int = "latest",
        *,
        auto_commit: bool = True,
        group_timeout: float = 60.0,
    ) -> None:
        raw_id = consumer_id.encode("utf-8") if isinstance(consumer_id, str) else b""
        if not raw_id or len(raw_id) > L.MAX_ID_BYTES:
            raise ConfigError(f"consumer_id must be 1..{L.MAX_ID_BYTES} UTF-8 bytes", field="consumer_id")
        if not (start in ("latest", "earliest") or (isinstance(start, int) and start >= 1)):
            raise ConfigError(
                f'start must be "latest", "earliest" or a sequence >= 1: {start!r}', field="start"
            )
        key = (topic.segment_name, consumer_id)
        with _OPEN_LOCK:  # check, register and record as one step for threads of this process
            self._open(topic, key, consumer_id, raw_id, start, auto_commit, group_timeout)

    def _open(
        self,
        topic: Topic,
        key: tuple[str, str],
        consumer_id: str,
        raw_id: bytes,
        start: str | int,
        auto_commit: bool,
        group_timeout: float,
    ) -> None:
        if key in _OPEN and _OPEN[key] == os.getpid():
            raise TopicError(
                f"consumer {consumer_id!r} is already open in this process", consumer_id=consumer_id
            )
        self.topic = topic
        self.consumer_id = consumer_id
        self.auto_commit = auto_commit
        self.lost = 0
        self._pid = os.getpid()
        self._closed = True
        log = topic._log
        self._log = log
        self._q = log.q
        self._buf = topic._seg.buf
        self._ro = self._buf.toreadonly()
        self._cap = log.cap
        self._base = log.base
        self._meta: dict[int, tuple[str, str, str | None]] = {}
        # memoryview.obj is the mmap: slicing it returns bytes in one step.
        self._mm = cast(mmap.mmap, self._buf.obj)
        self._pending = False  # a copy=False batch awaits its commit
        self._view_start = 0
        # Under drop_slowest the tail can pass a reading consumer: track record starts to salvage
        # the intact part of a batch (see _poll). Other policies never need it.
        self._track = topic.policy == "drop_slowest"
        self._walked: list[int] = []
        self._groups = GroupAssembler(group_timeout)
        reg = register(topic, consumer_id, raw_id, start)
        self.resumed = reg.resumed
        self._slot, self._token, self._cursor, self._expected = reg.slot, reg.token, reg.cursor, reg.expected
        self._min_seq = reg.min_seq
        self._doorbell: Doorbell | None = reg.doorbell
        self._w = log.slots0 + reg.slot * (L.SLOT_BYTES // 8)
        _OPEN[key] = self._pid
        self._closed = False

    # -- state ------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Sequence number of the next message this consumer will read."""
        return self._expected

    @property
    def committed(self) -> int:
        """The committed next sequence number (what a resumed consumer starts from)."""
        return self._q[self._w + L.S_NEXT_SEQ]

    def commit(self) -> None:
        """Commit everything read so far: retention may reclaim it, a resume starts after it."""
        self._check()
        self._commit()

    def _commit(self) -> None:
        q, w = self._q, self._w
        q[w + L.S_POSITION] = self._cursor
        q[w + L.S_NEXT_SEQ] = self._expected
        q[w + L.S_LAST_ACTIVE] = time.monotonic_ns()
        self._pending = False

    def view_valid(self) -> bool:
        """False if the views of the last ``copy=False`` read may have been overwritten."""
        return self._q[L.W_TAIL_POS] <= self._view_start and not self._closed

    def _check(self) -> None:
        if self._closed:
            raise TopicClosed(f"consumer {self.consumer_id!r} is closed", consumer_id=self.consumer_id)
        if self._pid != os.getpid():
            raise TopicError("a consumer belongs to the process that opened it; open another after fork")
        if self._q[self._w + L.S_TOKEN] != self._token:
            raise TopicError(
                f"consumer {self.consumer_id!r} was removed from topic {self.topic.name!r}",
                consumer_id=self.consumer_id,
                reason="removed",
            )

    # -- reading ----------------------------------------------------------------------------

    def _poll(self, n: int, copy: bool) -> list[Message]:
        """Up to ``n`` published messages at the cursor, without waiting."""
        q = self._q
        if self._pending and self.auto_commit:
            self._commit()
        while True:
            head = q[L.W_HEAD_POS]
            cursor = self._cursor
            if cursor >= head:
                return []
            starts: list[int] | None = [] if self._track else None
            out, end, expected, lost, bad = self._parse(cursor, head, n, copy, starts)
            tail = q[L.W_TAIL_POS]
            if tail > cursor:
                # Retention passed us while we copied: records that start before the tail may be
                # torn, and so may every boundary we derived from them. If the walk went through
                # the tail itself, what follows it is intact: keep that suffix (this is what
                # guarantees progress under drop_slowest, where restarting alone can be overrun
                # again and again). Otherwise restart at the tail. The sequence gap is the loss.
                keep = self._intact_from(starts, tail)
                if keep is None or (bad is None and keep >= len(out)):
                    self._cursor = tail
                    continue
            else:
                keep = 0
            if bad is not None:  # on a trusted walk: the record was not overwritten, it is bad
                raise DecodeError(
                    f"corrupt record at position {bad} in topic {self.topic.name!r}", position=bad
                )
            if keep:
                assert starts is not None
                out = out[keep:]
                out[0] = msgspec.structs.replace(out[0], lost=out[0].sequence - self._expected)
                lost = sum(m.lost for m in out)
                cursor = starts[keep]
            break
        self._cursor = end
        self._expected = expected
        w = self._w
        if lost:
            self.lost += lost
            q[w + L.S_LOST] += lost
        if out:
            q[w + L.S_READS] += len(out)
            if copy:
                if self.auto_commit:
                    self._commit()
                else:
                    q[w + L.S_LAST_ACTIVE] = time.monotonic_ns()
            else:
                self._view_start = cursor
                self._pending = True
                q[w + L.S_LAST_ACTIVE] = time.monotonic_ns()
        elif self.auto_commit:
            self._commit()  # only skipped records: move past them
        return out

    def _intact_from(self, starts: list[int] | None, tail: int) -> int | None:
        """Index of the first message at or after ``tail``, if the walk passed through ``tail``.

        ``tail`` is a true record boundary; a walk that reached it continued over intact records.
        A walk that jumped over it came from a torn length and proves nothing.
        """
        if starts is None:
            return None
        keep = bisect.bisect_left(starts, tail)
        if (keep < len(starts) and starts[keep] == tail) or tail in self._walked:
            return keep
        return None

    def _parse(
        self, cursor: int, head: int, n: int, copy: bool, starts: list[int] | None = None
    ) -> tuple[list[Message], int, int, int, int | None]:
        """Decode records in [cursor, head): (messages, end, next expected seq, lost, bad pos).

        The hot loop of every read: locals only, one unpack per record, strings from a cache keyed
        by the record's meta_key, one copy of the payload (slicing the mmap object gives bytes
        straight away, half the cost of ``bytes(memoryview[...])``).
        """
        buf = self._buf
        mm: mmap.mmap | memoryview = self._mm if copy else self._ro
        cap, base = self._cap, self._base
        unpack = L.RECORD.unpack_from
        header = L.RECORD_HEADER
        message, wrap = L.KIND_MESSAGE, L.KIND_WRAP
        meta_cache = self._meta
        expected = self._expected
        min_seq = self._min_seq
        lost_total = 0
        out: list[Message] = []
        append = out.append
        walked = self._walked  # boundaries reached over wrap markers (tracking mode only)
        walked.clear()
        while cursor < head and len(out) < n:
            off = cursor % cap
            p = base + off
            total, kind, flags, plen, tlen, seq, ts, dlen, glen, gsize, gidx, mkey = unpack(buf, p)
            if kind != message:
                if kind == wrap and total == cap - off:
                    cursor += total
                    if starts is not None:
                        walked.append(cursor)
                    continue
                return out, cursor, expected, lost_total, cursor
            d = p + header + ((plen + tlen + glen + 7) & ~7)
            if d + dlen > p + total or off + total > cap or total & 7:
                return out, cursor, expected, lost_total, cursor
            if seq < min_seq:
                cursor += total
                expected = seq + 1
                continue
            if mkey:
                meta = meta_cache.get(mkey)
                if meta is None:
                    meta = self._decode_meta(p + header, plen, tlen, glen)
                    if meta is None:
                        return out, cursor, expected, lost_total, cursor
                    if len(meta_cache) >= _META_CACHE_MAX:
                        meta_cache.clear()
                    meta_cache[mkey] = meta
                producer, mtype, gid = meta
            else:
                producer = mtype = ""
                gid = None
            if seq != expected:
                lost = seq - expected if seq > expected else 0
                lost_total += lost
            else:
                lost = 0
            expected = seq + 1
            append(
                Message(seq, ts, producer, mtype, mm[d : d + dlen], lost, gid, gidx, gsize, flags & 1 == 1)
            )
            if starts is not None:
                starts.append(cursor)
            cursor += total
        return out, cursor, expected, lost_total, None

    def _decode_meta(self, start: int, plen: int, tlen: int, glen: int) -> tuple[str, str, str | None] | None:
        raw = bytes(self._buf[start : start + plen + tlen + glen])
        try:
            return (
                raw[:plen].decode("utf-8"),
                raw[plen : plen + tlen].decode("utf-8"),
                raw[plen + tlen :].decode("utf-8") if glen else None,
            )
        except UnicodeDecodeError:
            return None  # torn (retention passed us) or corrupt: the caller checks the tail

    def _wait(self, deadline: float | None) -> None:
        """Return when a message may be there, the topic closed, or ``deadline`` passed."""
        q, cursor = self._q, self._cursor
        for _ in range(SPIN_CHECKS):
            if q[L.W_HEAD_POS] != cursor:
                return
        w = self._w
        q[w + L.S_SLEEPING] = 1
        fence()  # pairs with the publisher's fence: one of us must see the other's store
        try:
            if q[L.W_HEAD_POS] != cursor or q[L.W_CLOSED] or q[w + L.S_TOKEN] != self._token:
                return
            timeout = (
                BACKSTOP_S if deadline is None else min(BACKSTOP_S, max(0.0, deadline - time.monotonic()))
            )
            assert self._doorbell is not None
            self._doorbell.wait(timeout)
        finally:
            q[w + L.S_SLEEPING] = 0
            q[w + L.S_LAST_ACTIVE] = time.monotonic_ns()

    def read_batch(self, n: int = 256, timeout: float | None = None, *, copy: bool = True) -> list[Message]:
        """Up to ``n`` messages: as many as are there, waiting (up to ``timeout``) for at least one.

        Returns ``[]`` on timeout. ``timeout=0`` never waits. Raises :class:`TopicClosed` once the
        owner unlinked the topic and everything published before has been read.
        """
        self._check()
        out = self._poll(n, copy)
        if out or timeout == 0:
            return out
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._q[L.W_CLOSED]:
                out = self._poll(n, copy)
                if out:
                    return out
                raise TopicClosed(f"topic {self.topic.name!r} was unlinked", topic=self.topic.name)
            if deadline is not None and time.monotonic() >= deadline:
                return []
            self._wait(deadline)
            self._check()
            out = self._poll(n, copy)
            if out:
                return out

    def read(self, timeout: float | None = None, *, copy: bool = True) -> Message | None:
        """The next message, waiting up to ``timeout`` seconds (None: forever); None on timeout."""
        out = self.read_batch(1, timeout, copy=copy)
        return out[0] if out else None

    def read_group(self, timeout: float | None = None) -> list[Message] | None:
        """The next complete group (members in order), or ``[message]`` for an ungrouped one.

        None when ``timeout`` passes first. See :mod:`lane_mp.topic.groups`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._groups.expire()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            msg = self.read(remaining)
            if msg is None:
                return None
            unit = self._groups.feed(msg)
            if unit is not None:
                return unit

    @property
    def abandoned_groups(self) -> int:
        """Partial groups given up on (expired, restarted, or first member never seen)."""
        return self._groups.abandoned

    def __iter__(self) -> Iterator[Message]:
        """Every message, blocking between them; ends when the topic is unlinked and drained."""
        while True:
            try:
                msg = self.read()
            except TopicClosed:
                return
            if msg is not None:
                yield msg

    # -- lifecycle --------------------------------------------------------------------------

    def close(self, unregister: bool = True) -> None:
        """Stop reading. ``unregister=False`` keeps the committed position for a later resume.

        A kept (detached) consumer still holds retention: remove it or resume it.
        """
        if self._closed:
            return
        self._closed = True
        _OPEN.pop((self.topic.segment_name, self.consumer_id), None)
        if self._pid != os.getpid():
            return  # an inherited copy after fork: the parent owns the slot
        topic = self.topic
        if not topic._closed:
            if self._pending and self.auto_commit and self._q[self._w + L.S_TOKEN] == self._token:
                self._commit()
            topic._enter(topic._lock)
            try:
                if self._q[self._w + L.S_TOKEN] == self._token:
                    if unregister:
                        topic._slots.free(self._slot)
                    else:
                        topic._slots.detach(self._slot, self._token)
            finally:
                topic._leave(topic._lock)
        if self._doorbell is not None:
            self._doorbell.close()
            self._doorbell = None
        self._ro.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Consumer({self.consumer_id!r}, topic={self.topic.name!r}, position={self._expected})"
