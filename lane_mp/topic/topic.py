"""``Topic``: create or attach a shared-memory log by name, hand out publishers and consumers,
and watch it.

Ownership (DESIGN.md, shared-memory hygiene): the process that calls :meth:`Topic.create` owns the
segment and is the only one that unlinks it — on :meth:`close`, :meth:`unlink`, or at interpreter
exit (an ``atexit`` hook), so a normal exit never leaks it. Other processes :meth:`attach` by name
and only unmap. Consumers' doorbell FIFOs sit next to the segment under the same prefix, and the
owner's unlink removes any a killed consumer left. If the *owner* is killed, nothing can run in it:
:meth:`Topic.destroy` removes the leftovers by name.

Names: a topic called ``orders`` lives in ``/dev/shm/lmp_orders.topic`` (+ ``.c<slot>`` FIFOs).
"""

from __future__ import annotations

import atexit
import os
import re
import time
import weakref
from typing import TYPE_CHECKING, Any, Self

from loguru import logger

from lane_mp.errors import ConfigError, TopicClosed, TopicError
from lane_mp.ipc.segments import Segment, sweep, unlink_name
from lane_mp.topic import layout as L
from lane_mp.topic.doorbell import Ringer
from lane_mp.topic.lock import AppendLock, fence
from lane_mp.topic.log import Log
from lane_mp.topic.message import ConsumerInfo, TopicStats
from lane_mp.topic.registry import Slots

if TYPE_CHECKING:
    from lane_mp.topic.consumer import Consumer
    from lane_mp.topic.publisher import Publisher

__all__ = ["DEFAULT_CAPACITY", "Topic", "segment_name"]

DEFAULT_CAPACITY = 8 << 20  # enough for ~100 k small messages; large payloads want more
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_ATTACH_WAIT_S = 1.0  # how long attach waits for a creator that has not written MAGIC yet
# While a publisher waits for room it looks for dead consumers at most this often: psutil costs
# ~20 us per consumer, cheap next to a blocked publisher, too dear for every retry.
REAP_INTERVAL_S = 0.25

# Strong references on purpose: an owned topic dropped without close() must still be unlinked at
# exit, so it may not be garbage collected before then.
_OWNED: set[Topic] = set()


def segment_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"topic names are 1-63 characters of [A-Za-z0-9_-], starting alphanumeric: {name!r}",
            field="name",
        )
    return f"lmp_{name}.topic"


class Topic:
    """One mapping of a topic in this process. Cheap to attach; share by *name* (or pickle it)."""

    def __init__(self, name: str, segment: Segment, *, owner: bool) -> None:
        self.name = name
        self.segment_name = segment.name
        self._seg = segment
        self._log = Log(segment.buf)
        self._slots = Slots(self._log, segment.name)
        self._lock = AppendLock(segment.name)
        self._owner_pid = os.getpid() if owner else 0
        self._closed = False
        self._last_reap = 0.0
        self._children: weakref.WeakSet[Any] = weakref.WeakSet()
        q = self._log.q
        self.capacity_bytes: int = q[L.W_CAPACITY]
        self.max_message_bytes: int = q[L.W_MAX_MESSAGE]
        self.max_consumers: int = q[L.W_MAX_CONSUMERS]
        self.policy: str = L.POLICIES[q[L.W_POLICY]]
        if owner:
            _OWNED.add(self)

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        *,
        capacity_bytes: int = DEFAULT_CAPACITY,
        max_message_bytes: int | None = None,
        policy: str = "block",
        max_consumers: int = 64,
    ) -> Topic:
        """Create the topic (it must not exist); this process owns and will unlink it."""
        seg_name = segment_name(name)
        if policy not in L.POLICIES:
            raise ConfigError(f"policy must be one of {L.POLICIES}: {policy!r}", field="policy")
        if not 1 <= max_consumers <= 4096:
            raise ConfigError("max_consumers must be within 1..4096", field="max_consumers")
        capacity = L.align8(int(capacity_bytes))
        if capacity < 1024:
            raise ConfigError(f"capacity_bytes below 1024: {capacity_bytes}", field="capacity_bytes")
        # A record must fit in half the ring: then a record always fits once the log is empty,
        # whatever padding the wrap needs (pad < record size <= capacity / 2).
        largest = L.max_data_bytes(capacity, L.RESERVED_META)
        if max_message_bytes is None:
            max_message_bytes = min(largest, max(capacity // 4, 1))
        if not 0 < max_message_bytes <= largest:
            raise ConfigError(
                f"max_message_bytes must be within 1..{largest} for capacity {capacity}",
                field="max_message_bytes",
            )
        try:
            seg = Segment.create(seg_name, L.segment_bytes(capacity, max_consumers))
        except FileExistsError as exc:
            raise TopicError(f"topic {name!r} already exists", topic=name) from exc
        q = seg.buf.cast("Q")
        try:
            q[L.W_VERSION] = L.VERSION
            q[L.W_CAPACITY] = capacity
            q[L.W_MAX_MESSAGE] = max_message_bytes
            q[L.W_MAX_CONSUMERS] = max_consumers
            q[L.W_POLICY] = L.POLICIES.index(policy)
            q[L.W_DATA_OFFSET] = L.data_offset(max_consumers)
            q[L.W_SLOTS_OFFSET] = L.slots_offset()
            q[L.W_TAIL_SEQ] = 1
            q[L.W_OWNER_PID] = os.getpid()
            q[L.W_CREATED_NS] = time.time_ns()
            q[L.W_MAGIC] = L.MAGIC  # last: attach treats the header as ready once it sees this
        finally:
            q.release()
        logger.debug("topic {}: created {} ({} bytes, policy {})", name, seg_name, capacity, policy)
        return cls(name, seg, owner=True)

    @classmethod
    def attach(cls, name: str) -> Topic:
        """Map an existing topic by name from any process."""
        seg_name = segment_name(name)
        try:
            seg = Segment.attach(seg_name)
        except FileNotFoundError as exc:
            raise TopicClosed(
                f"topic {name!r} does not exist (not created, or unlinked)", topic=name
            ) from exc
        q = seg.buf.cast("Q")
        try:
            deadline = time.monotonic() + _ATTACH_WAIT_S
            while q[L.W_MAGIC] != L.MAGIC and time.monotonic() < deadline:
                time.sleep(0.001)
            if q[L.W_MAGIC] != L.MAGIC or q[L.W_VERSION] != L.VERSION:
                raise TopicError(f"{seg_name} is not a lane_mp topic of layout {L.VERSION}", topic=name)
            if q[L.W_CLOSED]:
                raise TopicClosed(f"topic {name!r} was unlinked", topic=name)
        except BaseException:
            q.release()
            seg.close()
            raise
        q.release()
        logger.debug("topic {}: attached in pid {}", name, os.getpid())
        return cls(name, seg, owner=False)

    @staticmethod
    def destroy(name: str) -> bool:
        """Remove a topic's segment and FIFOs by name, e.g. after its owner was killed."""
        seg_name = segment_name(name)
        found = unlink_name(seg_name)
        sweep(seg_name + ".c")
        return found

    @property
    def owner(self) -> bool:
        return self._owner_pid == os.getpid()

    @property
    def closed(self) -> bool:
        """True once this handle is closed or the owner unlinked the topic."""
        return self._closed or bool(self._log.q[L.W_CLOSED])

    def unlink(self) -> None:
        """Mark the topic closed for every process, wake its sleepers and remove its names.

        Only the owner may do this; attached processes keep their mapping until they close, and
        see :class:`TopicClosed` from publish and, once drained, from read.
        """
        if not self.owner:
            raise TopicError("only the process that created a topic unlinks it", topic=self.name)
        if self._closed:
            return
        q = self._log.q
        if not q[L.W_CLOSED]:
            q[L.W_CLOSED] = 1
            fence()  # the closed flag before the sleeping flags, as for a publish (doorbell.py)
            ringer = Ringer(self.segment_name)
            for slot, token in self._slots.sleepers():
                ringer.ring(slot, token)
            ringer.close()
        self._seg.unlink()
        sweep(self.segment_name + ".c")
        logger.debug("topic {}: unlinked", self.name)

    def close(self) -> None:
        """Close this handle: its publishers and consumers, then the mapping (owner: unlink too)."""
        if self._closed:
            return
        for child in list(self._children):
            child.close()
        if self.owner:
            self.unlink()
        self._closed = True
        _OWNED.discard(self)
        self._lock.close()
        self._log.release()
        self._seg.close()  # False while a copy=False view is alive; the GC unmaps it later

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # Another process gets its own mapping (never the owner role).
        return (Topic.attach, (self.name,))

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, policy={self.policy!r}, capacity={self.capacity_bytes}, owner={self.owner})"

    def _check_open(self) -> None:
        if self._closed:
            raise TopicClosed(f"topic handle {self.name!r} is closed", topic=self.name)

    # -- factories ------------------------------------------------------------------------

    def publisher(self, producer_id: str = "") -> Publisher:
        """A publisher stamping ``producer_id`` on its messages (one per thread is fastest)."""
        from lane_mp.topic.publisher import Publisher

        self._check_open()
        pub = Publisher(self, producer_id)
        self._children.add(pub)
        return pub

    def consumer(
        self,
        consumer_id: str,
        start: str | int = "latest",
        *,
        auto_commit: bool = True,
        group_timeout: float = 60.0,
    ) -> Consumer:
        """Register ``consumer_id`` and return its reader (see :mod:`lane_mp.topic.consumer`).

        ``start``: ``"latest"`` (only what is published from now on), ``"earliest"`` (everything
        retained) or a sequence number (a gap before the oldest retained shows as ``lost``). It
        applies to a new id only: an id already in the table (detached, or left by a dead process)
        resumes at its committed position, and ``consumer.resumed`` says so. An id owned by a
        live process is refused with :class:`TopicError`.
        """
        from lane_mp.topic.consumer import Consumer

        self._check_open()
        con = Consumer(self, consumer_id, start, auto_commit=auto_commit, group_timeout=group_timeout)
        self._children.add(con)
        return con

    # -- locked maintenance -----------------------------------------------------------------

    def _enter(self, lock: AppendLock) -> None:
        """Take the append lock and repair after a holder that died inside it."""
        lock.acquire()
        q = self._log.q
        if q[L.W_LOCK_OWNER]:
            self._log.recover()
        q[L.W_LOCK_OWNER] = lock.pid

    def _leave(self, lock: AppendLock) -> None:
        self._log.q[L.W_LOCK_OWNER] = 0
        lock.release()

    def reap_dead_consumers(self) -> list[str]:
        """Remove consumers whose process has died; returns their ids."""
        self._check_open()
        dead = self._slots.dead()
        if not dead:
            return []
        removed = []
        self._enter(self._lock)
        try:
            for slot in self._slots.dead():  # again under the lock: a slot may have been taken over
                removed.append(self._slots.id_of(slot))
                self._slots.free(slot)
            self._log.q[L.W_REAPED] += len(removed)
        finally:
            self._leave(self._lock)
        if removed:
            logger.debug("topic {}: reaped dead consumers {}", self.name, removed)
        return removed

    def _maybe_reap(self) -> bool:
        """Reap at most every REAP_INTERVAL_S (called by publishers facing a full log)."""
        now = time.monotonic()
        if now - self._last_reap < REAP_INTERVAL_S:
            return False
        self._last_reap = now
        return bool(self.reap_dead_consumers())

    def remove_consumer(self, consumer_id: str) -> bool:
        """Unregister a consumer (e.g. a stale one); it gets TopicError on its next read."""
        self._check_open()
        self._enter(self._lock)
        try:
            slot = self._slots.find(consumer_id)
            if slot is None:
                return False
            _state, token, _pid, _start = self._slots.state(slot)
            ringer = Ringer(self.segment_name)
            ringer.ring(slot, token)  # a sleeping consumer wakes and notices at once
            ringer.close()
            self._slots.free(slot)
            return True
        finally:
            self._leave(self._lock)

    # -- monitoring -------------------------------------------------------------------------

    def stats(self) -> TopicStats:
        self._check_open()
        q = self._log.q
        head_pos, head_seq = q[L.W_HEAD_POS], q[L.W_HEAD_SEQ]
        tail_pos, tail_seq = q[L.W_TAIL_POS], q[L.W_TAIL_SEQ]
        now = time.monotonic_ns()
        consumers = tuple(self._slots.info(s, head_seq, head_pos, tail_pos, now) for s in self._slots.used())
        return TopicStats(
            name=self.name,
            policy=self.policy,
            capacity_bytes=self.capacity_bytes,
            max_message_bytes=self.max_message_bytes,
            bytes_used=head_pos - tail_pos,
            head_sequence=head_seq,
            tail_sequence=tail_seq,
            messages_retained=max(0, head_seq + 1 - tail_seq),
            head_position=head_pos,
            tail_position=tail_pos,
            dropped=q[L.W_DROPPED],
            reaped=q[L.W_REAPED],
            closed=bool(q[L.W_CLOSED]),
            consumers=consumers,
        )

    def lag(self, consumer_id: str) -> int:
        """Messages published that ``consumer_id`` has not committed yet."""
        for info in self.stats().consumers:
            if info.consumer_id == consumer_id:
                return info.lag
        raise TopicError(f"no consumer {consumer_id!r} on topic {self.name!r}", topic=self.name)

    def stale_consumers(self, idle_seconds: float, min_lag: int = 1) -> list[ConsumerInfo]:
        """Consumers idle for ``idle_seconds`` or more while at least ``min_lag`` behind."""
        return [c for c in self.stats().consumers if c.idle_seconds >= idle_seconds and c.lag >= min_lag]


def _unlink_owned_at_exit() -> None:
    for topic in list(_OWNED):
        try:
            if topic.owner:
                topic.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit: try every topic
            logger.opt(exception=True).debug("topic {}: unlink at exit failed", topic.name)


atexit.register(_unlink_owned_at_exit)
