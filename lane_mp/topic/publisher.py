"""``Publisher``: append messages under the cross-process lock and ring sleeping consumers.

One publish = take the lock (flock, ~0.5 us), copy the record into the ring, store ``head_pos``
once, release, ring any consumer that said it is asleep. ``publish_many`` does the same for a whole
batch under one lock and one head store, which is where the throughput is (MEASURED.md: publishing
the head once per batch is the main win).

Backpressure when the log is full (the topic's policy):

* ``block``: release the lock, sleep with exponential back-off (:data:`BACKOFF_MIN_S` doubling to
  :data:`BACKOFF_MAX_S`), retry until ``timeout`` then raise :class:`TopicFull`. Back-off rather
  than a doorbell because a full log is a backpressure state, not idle: the waiting costs a few
  wake-ups per ms at most, only while full, and keeps consumers free of any per-read signalling.
* ``error``: raise :class:`TopicFull` at once (after reaping dead consumers once).
* ``drop_slowest``: never waits; the records the slowest consumers have not read are reclaimed and
  those consumers find the gap on their next read (``Message.lost``, ``Consumer.lost``).

In all policies a full log first triggers :meth:`Topic.reap_dead_consumers` (rate limited), so a
consumer killed mid-stream cannot hold the log forever.

Groups: ``publish(data, group=(group_id, size))`` opens a group of ``size`` messages and
``publish(data, group=group_id)`` adds the next member; the publisher numbers members itself, so a
group's members must come from one ``Publisher``. ``publish_group`` sends a whole group at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Self

import msgspec
import xxhash

from lane_mp.errors import ConfigError, EncodeError, PayloadTooLarge, TopicClosed, TopicFull
from lane_mp.topic import layout as L
from lane_mp.topic.doorbell import Ringer
from lane_mp.topic.lock import AppendLock
from lane_mp.topic.log import Meta

if TYPE_CHECKING:
    from lane_mp.topic.topic import Topic

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "Publisher"]

# Back-off while the log is full under "block": short enough that a consumer freeing space is
# noticed within a couple of ms, long enough that a blocked publisher costs well under 1% CPU.
BACKOFF_MIN_S = 50e-6
BACKOFF_MAX_S = 2e-3

Group = tuple[str, int] | str | None
_SLOT_WORDS = L.SLOT_BYTES // 8


def _flat(data: Any) -> memoryview:
    """A flat unsigned-byte view of ``data`` without copying it."""
    if isinstance(data, str):
        raise EncodeError("publish takes bytes-like data; encode the str or use publish_obj")
    try:
        mv = memoryview(data)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
    except TypeError as exc:
        raise EncodeError(f"cannot publish {type(data).__name__}: needs a C-contiguous buffer") from exc
    return mv


def _meta_text(value: str, field: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > L.MAX_META_BYTES:
        raise ConfigError(f"{field} longer than {L.MAX_META_BYTES} bytes: {value[:40]!r}...", field=field)
    return raw


class Publisher:
    """Publishes to one topic from this process. Thread-safe; one per thread avoids contention."""

    def __init__(self, topic: Topic, producer_id: str = "") -> None:
        self.topic = topic
        self.producer_id = producer_id
        self._producer = _meta_text(producer_id, "producer_id")
        self._lock = AppendLock(topic.segment_name)
        self._ringer = Ringer(topic.segment_name)
        self._drop = topic.policy == "drop_slowest"
        self._error = topic.policy == "error"
        self._max = topic.max_message_bytes
        self._plen = len(self._producer)
        self._meta_cache: dict[str, tuple[bytes, int, int, int]] = {}
        self._groups: dict[str, list[int]] = {}  # open groups: id -> [size, next index]
        self._groups_lock = threading.RLock()
        self._ring_lock = threading.Lock()
        self._encoder = msgspec.msgpack.Encoder()
        self._log = topic._log
        self._q = topic._log.q
        self._sleep0 = L.slot_word(0) + L.S_SLEEPING
        self._closed = False

    # -- building items ---------------------------------------------------------------------

    def _meta(self, message_type: str) -> tuple[bytes, int, int, int]:
        """(meta bytes, type length, meta key, payload limit) for an ungrouped message, cached."""
        cached = self._meta_cache.get(message_type)
        if cached is None:
            mtype = _meta_text(message_type, "message_type")
            meta = self._producer + mtype
            cached = (meta, len(mtype), xxhash.xxh3_64_intdigest(meta) if meta else 0, self._limit(meta))
            if len(self._meta_cache) < 256:
                self._meta_cache[message_type] = cached
        return cached

    def _limit(self, meta: bytes) -> int:
        return min(self._max, L.max_data_bytes(self.topic.capacity_bytes, len(meta)))

    def _too_large(self, size: int, limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"{size} bytes is above this topic's limit of {limit} (max_message_bytes={self._max}, "
            f"less any metadata beyond {L.RESERVED_META} bytes)",
            size=size,
            limit=limit,
        )

    def _item(
        self, data: Any, message_type: str, flags: int, group: Group
    ) -> tuple[Meta, bytes | memoryview]:
        mv = data if type(data) is bytes else _flat(data)
        if group is None:
            meta, tlen, key, limit = self._meta(message_type)
            if len(mv) > limit:
                raise self._too_large(len(mv), limit)
            return (meta, self._plen, tlen, 0, flags, 0, 0, key), mv
        mtype = _meta_text(message_type, "message_type")
        graw = _meta_text(str(group[0] if isinstance(group, tuple) else group), "group_id")
        meta = self._producer + mtype + graw
        if len(mv) > self._limit(meta):
            raise self._too_large(len(mv), self._limit(meta))
        _gid, size, index = self._group_member(group)
        key = xxhash.xxh3_64_intdigest(meta)
        return (meta, self._plen, len(mtype), len(graw), flags | L.FLAG_GROUP, size, index, key), mv

    def _group_member(self, group: tuple[str, int] | str) -> tuple[str, int, int]:
        with self._groups_lock:
            if isinstance(group, tuple):
                gid, size = group
                if not isinstance(size, int) or not 1 <= size < 2**32:
                    raise ConfigError(f"group size must be a positive int: {size!r}", field="group")
                gid = str(gid)
                state = [size, 1]
                if size > 1:
                    self._groups[gid] = state
                else:
                    self._groups.pop(gid, None)
                return gid, size, 0
            gid = str(group)
            open_group = self._groups.get(gid)
            if open_group is None:
                raise ConfigError(
                    f"group {gid!r} is not open: start it with group=({gid!r}, size)", field="group"
                )
            index = open_group[1]
            open_group[1] += 1
            if open_group[1] >= open_group[0]:
                del self._groups[gid]
            return gid, 0, index

    # -- public API -------------------------------------------------------------------------

    def publish(
        self, data: Any, *, message_type: str = "", group: Group = None, timeout: float | None = None
    ) -> int:
        """Append one message; returns its sequence number.

        ``timeout`` bounds the wait for room under the ``block`` policy (None waits forever).
        """
        meta, mv = self._item(data, message_type, 0, group)
        return self._append([meta], [mv], timeout)[0]

    def publish_obj(
        self, obj: Any, *, message_type: str = "", group: Group = None, timeout: float | None = None
    ) -> int:
        """Append a msgspec-encodable object as msgpack; read it back with ``Message.obj()``."""
        try:
            payload = self._encoder.encode(obj)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise EncodeError(f"cannot encode {type(obj).__name__} with msgspec: {exc}") from exc
        meta, mv = self._item(payload, message_type, L.FLAG_OBJ, group)
        return self._append([meta], [mv], timeout)[0]

    def publish_many(
        self, items: Iterable[Any], *, message_type: str = "", timeout: float | None = None
    ) -> list[int]:
        """Append a batch under one lock and one head store; returns the sequence numbers.

        The batch is atomic only while it fits: when it must wait for room, other publishers may
        interleave, so the returned sequences are increasing but not always consecutive.
        """
        meta, tlen, key, limit = self._meta(message_type)
        datas = [d if type(d) is bytes else _flat(d) for d in items]
        for mv in datas:
            if len(mv) > limit:
                raise self._too_large(len(mv), limit)
        return self._append([(meta, self._plen, tlen, 0, 0, 0, 0, key)], datas, timeout) if datas else []

    def publish_group(
        self, group_id: str, items: Iterable[Any], *, message_type: str = "", timeout: float | None = None
    ) -> list[int]:
        """Publish a whole group (consecutive sequence numbers when it fits in the free space)."""
        datas = list(items)
        if not datas:
            raise ConfigError("a group needs at least one message", field="items")
        with self._groups_lock:  # members numbered together, even if another thread uses the id
            pairs = [self._item(datas[0], message_type, 0, (group_id, len(datas)))]
            pairs += [self._item(d, message_type, 0, group_id) for d in datas[1:]]
        return self._append([m for m, _ in pairs], [d for _, d in pairs], timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._lock.close()
            with self._ring_lock:
                self._ringer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the append loop --------------------------------------------------------------------

    def _append(self, metas: list[Meta], datas: list[bytes | memoryview], timeout: float | None) -> list[int]:
        if self._closed or self.topic._closed:
            raise TopicClosed("publisher or topic handle is closed", topic=self.topic.name)
        log, q, lock, n = self._log, self._q, self._lock, len(datas)
        seqs: list[int] = []
        done = 0
        deadline: float | None = None
        backoff = BACKOFF_MIN_S
        while True:
            lock.acquire()
            try:
                closed = q[L.W_CLOSED]
                if not closed:
                    if q[L.W_LOCK_OWNER]:
                        log.recover()  # the previous holder died in here
                    q[L.W_LOCK_OWNER] = lock.pid
                    before = q[L.W_HEAD_SEQ]
                    wrote = log.append(metas, datas, done, self._drop)
                    q[L.W_LOCK_OWNER] = 0
            finally:
                # threading.Lock.release inside is a locked instruction: the full fence between
                # the head store above and the sleeping-flag loads below (lost wake-up, MEASURED.md).
                lock.release()
            if closed:
                name = self.topic.name
                raise TopicClosed(f"topic {name!r} was unlinked", topic=name, published=done, sequences=seqs)
            if wrote:
                if n == 1:
                    self._ring()
                    return [before + 1]
                seqs.extend(range(before + 1, before + 1 + wrote))
                done += wrote
                self._ring()
                if done == n:
                    return seqs
            # Full. Dead consumers first: one killed mid-stream must not hold the log forever.
            if self.topic._maybe_reap():
                continue
            if self._error:
                raise self._full(done, seqs)
            now = time.monotonic()
            if deadline is None:
                deadline = float("inf") if timeout is None else now + timeout
            if now >= deadline:
                raise self._full(done, seqs)
            time.sleep(min(backoff, max(0.0, deadline - now)))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _full(self, done: int, seqs: list[int]) -> TopicFull:
        t = self.topic
        return TopicFull(
            f"topic {t.name!r} is full (policy {t.policy!r}, {t.capacity_bytes} bytes); "
            f"{done} message(s) of this call were published",
            topic=t.name,
            published=done,
            sequences=seqs,
        )

    def _ring(self) -> None:
        """Ring every consumer that raised its sleeping flag (a few loads when none did).

        The scan is lock-free; the ringer's cached descriptors are shared by this publisher's
        threads, so ringing itself takes a thread lock (only when someone sleeps).
        """
        q = self._q
        w = self._sleep0
        for slot in range(q[L.W_SLOT_HWM]):
            if q[w]:
                with self._ring_lock:
                    self._ringer.ring(slot, q[w - L.S_SLEEPING + L.S_TOKEN])
            w += _SLOT_WORDS
