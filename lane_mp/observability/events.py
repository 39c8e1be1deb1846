"""Lifecycle events of the pool and an in-process publish/subscribe for them.

Why the design looks like this:

- ``emit`` runs on the caller's result thread once per command event, so with no subscriber it
  costs one attribute check, and with subscribers it never blocks: each subscription owns a
  bounded buffer, and an event that does not fit is dropped *for that subscriber* and counted in
  its ``dropped``. A slow dashboard must not slow the pool (trio's memory channels and
  dramatiq's middleware make the same trade for the same reason).
- The subscriber list is an immutable tuple replaced on (un)subscribe, so ``emit`` iterates it
  without taking the emitter's lock.
- Async consumers wait on a loop future that the emitting thread resolves with
  ``call_soon_threadsafe``: no executor thread is parked per consumer, and cancelling an
  ``await`` loses no event, because events stay in the buffer until the loop's thread pops them.
- Wake-ups are coalesced: a consumer that had to wait lingers :data:`WAKE_LINGER_S` after it is
  woken, so a burst is read in one go. Without it a fast consumer wakes once per event, and in
  one process every wake-up is a GIL hand-off that the pool's own threads pay for (measured: a
  consuming thread cut no-op throughput of a busy pool by ~40 %; with the linger, a few %).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Self

import msgspec
from loguru import logger

__all__ = [
    "LaneEvent",
    "EventEmitter",
    "Subscription",
    "key_prefix",
    "COMMAND_SUBMITTED",
    "COMMAND_STARTED",
    "COMMAND_COMPLETED",
    "COMMAND_FAILED",
    "COMMAND_TIMEOUT",
    "COMMAND_RETRY",
    "COMMAND_DEAD_LETTERED",
    "LANE_PRESSURE",
    "LANE_IDLE",
    "SHUTDOWN_STARTED",
    "WORKER_STARTED",
    "WORKER_EXITED",
    "WORKER_CRASHED",
    "WORKER_RECYCLED",
    "ALL_EVENT_KEYS",
    "DEFAULT_CAPACITY",
]

COMMAND_SUBMITTED = "queue.command.submitted"
COMMAND_STARTED = "queue.command.started"
COMMAND_COMPLETED = "queue.command.completed"
COMMAND_FAILED = "queue.command.failed"
COMMAND_TIMEOUT = "queue.command.timeout"
COMMAND_RETRY = "queue.command.retry"
COMMAND_DEAD_LETTERED = "queue.command.dead_lettered"
LANE_PRESSURE = "queue.lane.pressure"
LANE_IDLE = "queue.lane.idle"
SHUTDOWN_STARTED = "queue.shutdown.started"
WORKER_STARTED = "worker.started"
WORKER_EXITED = "worker.exited"
WORKER_CRASHED = "worker.crashed"
WORKER_RECYCLED = "worker.recycled"

ALL_EVENT_KEYS: frozenset[str] = frozenset(
    {
        COMMAND_SUBMITTED,
        COMMAND_STARTED,
        COMMAND_COMPLETED,
        COMMAND_FAILED,
        COMMAND_TIMEOUT,
        COMMAND_RETRY,
        COMMAND_DEAD_LETTERED,
        LANE_PRESSURE,
        LANE_IDLE,
        SHUTDOWN_STARTED,
        WORKER_STARTED,
        WORKER_EXITED,
        WORKER_CRASHED,
        WORKER_RECYCLED,
    }
)

# Per subscriber. 10k events of a few hundred bytes is a few MB at worst; a consumer that falls
# further behind than that is better served by a drop count than by unbounded memory.
DEFAULT_CAPACITY = 10_000
# How long a woken consumer waits for more events before it reads: the longest extra delay of an
# event, against at most 1/WAKE_LINGER_S wake-ups per second per consumer. 1 ms is far below
# what a human or a dashboard notices and keeps a consumer of a 100k events/s stream to <= 1000
# wake-ups/s. LANE_MP_EVENT_LINGER_US=0 delivers each event at once.
WAKE_LINGER_S = float(os.environ.get("LANE_MP_EVENT_LINGER_US", "1000")) / 1e6


class LaneEvent(msgspec.Struct, frozen=True, gc=False):
    """One thing that happened. ``timestamp`` is wall-clock ``time.time()`` (comparable across
    processes; events from the coordinator carry its clock reading); ``payload`` holds plain data
    (ids, lane, durations), never futures.

    ``gc=False``: an event holds plain data and is never part of a reference cycle, so the
    cyclic collector need not track the three events a busy pool creates per command.
    """

    key: str
    timestamp: float
    payload: dict[str, Any]


def key_prefix(*prefixes: str) -> Callable[[LaneEvent], bool]:
    """A cheap predicate for :meth:`EventEmitter.subscribe_filtered`: keys starting with any prefix."""
    wanted = tuple(prefixes)
    return lambda ev: ev.key.startswith(wanted)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Subscription:
    """A bounded, drop-counting stream of events; iterate it (blocking) or ``async for`` it.

    After :meth:`close` no new event is accepted; events already buffered are still delivered,
    then iteration ends. Several threads or tasks may consume one subscription; each event goes
    to one of them.
    """

    def __init__(
        self,
        emitter: EventEmitter | None,
        capacity: int,
        predicate: Callable[[LaneEvent], bool] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._emitter = emitter
        self._capacity = capacity
        self._predicate = predicate
        self._buf: deque[LaneEvent] = deque()
        self._lock = threading.Lock()  # producers take it directly (cheaper than the Condition)
        self._cond = threading.Condition(self._lock)
        self._sync_waiters = 0
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._closed = False
        self._dropped = 0
        self._delivered = 0

    # -- producer side (emitting thread) ---------------------------------------------------------

    def _offer(self, ev: LaneEvent) -> None:
        if self._predicate is not None:
            try:
                if not self._predicate(ev):
                    return
            except Exception:  # noqa: BLE001 - a user predicate may raise anything
                # A buggy filter must not break emit() for the pool or for other subscribers.
                logger.opt(exception=True).warning("event filter raised; event {} skipped", ev.key)
                return
        with self._lock:
            if self._closed:
                return
            if len(self._buf) >= self._capacity:
                self._dropped += 1
                return
            self._buf.append(ev)
            self._delivered += 1
            if self._sync_waiters:
                self._cond.notify()
            waiters = self._async_waiters
            if not waiters:
                return
            self._async_waiters = []
        self._wake_async(waiters)

    @staticmethod
    def _wake_async(waiters: Iterable[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_wake, fut)
            except RuntimeError:  # the consumer's loop is closed: nobody is left to wake
                pass

    # -- consumer side ---------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> LaneEvent | None:
        """The next event, waiting up to ``timeout`` seconds (forever if None).

        Returns None when nothing arrived in time or the subscription is closed and drained;
        ``closed`` tells the two apart. After a wait, the event may come up to
        :data:`WAKE_LINGER_S` later than it was emitted (see the module docstring).
        """
        buf = self._buf
        try:  # fast path without the lock: deque.popleft is atomic, and a consumer that never
            return buf.popleft()  # takes the lock cannot stall a producer that lost the GIL
        except IndexError:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                if self._buf:
                    return self._buf.popleft()
                if self._closed or (timeout is not None and timeout <= 0):
                    return None
                self._sync_waiters += 1
                try:
                    while not self._buf and not self._closed:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return None
                        self._cond.wait(remaining)
                    if not self._buf:
                        return None  # closed and drained
                    if not WAKE_LINGER_S:
                        return self._buf.popleft()
                finally:
                    self._sync_waiters -= 1
            # Woken by an emit: let the burst gather (outside the lock), then read it in one go
            # (if another consumer took it meanwhile, the loop waits again until the deadline).
            time.sleep(WAKE_LINGER_S)

    def get_nowait(self) -> LaneEvent | None:
        return self.get(0)

    def drain(self) -> list[LaneEvent]:
        """Every buffered event, without waiting."""
        with self._cond:
            out = list(self._buf)
            self._buf.clear()
            return out

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> LaneEvent:
        ev = self.get(None)
        if ev is None:
            raise StopIteration
        return ev

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LaneEvent:
        ev = await self.aget(None)
        if ev is None:
            raise StopAsyncIteration
        return ev

    async def aget(self, timeout: float | None = None) -> LaneEvent | None:
        """Async :meth:`get`: awaits without blocking the event loop."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._cond:
                if self._buf:
                    return self._buf.popleft()
                if self._closed:
                    return None
                fut: asyncio.Future[None] = loop.create_future()
                self._async_waiters.append((loop, fut))
            try:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(fut, remaining)
                except TimeoutError:
                    pass
                else:
                    if WAKE_LINGER_S:  # coalesce wake-ups, as in get()
                        await asyncio.sleep(WAKE_LINGER_S)
            finally:
                with self._cond:
                    try:
                        self._async_waiters.remove((loop, fut))
                    except ValueError:  # already taken by the producer
                        pass

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Events this subscriber lost because its buffer was full."""
        return self._dropped

    @property
    def delivered(self) -> int:
        """Events accepted into this subscriber's buffer."""
        return self._delivered

    @property
    def pending(self) -> int:
        return len(self._buf)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop receiving; wake every waiter. Buffered events stay readable. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        self._wake_async(waiters)
        if self._emitter is not None:
            self._emitter._remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Subscription(pending={self.pending}, dropped={self._dropped}, closed={self._closed})"


class EventEmitter:
    """Fan-out of :class:`LaneEvent` to subscriptions. Thread-safe; ``emit`` never blocks."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        # Replaced, never mutated: emit() reads it without the lock.
        self._subs: tuple[Subscription, ...] = ()
        self._watchers: list[Callable[[bool], object] | weakref.WeakMethod[Callable[[bool], object]]] = []
        self._notify_lock = threading.Lock()  # serialises watcher calls: the last one is current

    def emit(self, key: str, payload: dict[str, Any] | None = None) -> None:
        """Publish an event now. With no subscriber this is one attribute check.

        ``payload`` is shared with every subscriber, not copied (a copy per event would cost
        more than the rest of emit): do not mutate it afterwards.
        """
        if not self._subs:
            return
        ev = LaneEvent(key, time.time(), {} if payload is None else payload)
        for sub in self._subs:
            sub._offer(ev)

    def emit_event(self, ev: LaneEvent) -> None:
        """Publish a ready-made event (e.g. one relayed from the coordinator process)."""
        for sub in self._subs:
            sub._offer(ev)

    @property
    def has_subscribers(self) -> bool:
        """Lets a caller skip building an expensive payload nobody will read."""
        return bool(self._subs)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def subscribe(self, capacity: int | None = None) -> Subscription:
        """Every event from now on, buffered up to ``capacity`` (default: the emitter's)."""
        return self._add(Subscription(self, capacity or self.capacity))

    def subscribe_filtered(
        self, predicate: Callable[[LaneEvent], bool], capacity: int | None = None
    ) -> Subscription:
        """Events for which ``predicate(event)`` is true. The predicate runs on the emitting
        thread, so keep it cheap; if it raises, the event is skipped and the error logged."""
        return self._add(Subscription(self, capacity or self.capacity, predicate))

    def watch(self, fn: Callable[[bool], object] | weakref.WeakMethod[Callable[[bool], object]]) -> None:
        """Call ``fn(has_subscribers)`` now and whenever the first subscriber arrives or the last
        one leaves. The pool uses it to skip per-command event work while nobody listens. Pass a
        ``weakref.WeakMethod`` to avoid keeping the watcher alive (a dead one is dropped)."""
        with self._lock:
            self._watchers.append(fn)
        self._notify()

    def _notify(self) -> None:
        with self._notify_lock:
            has = bool(self._subs)  # read under the notify lock: the last call reports the truth
            for w in list(self._watchers):
                fn: Callable[[bool], object] | None = w() if isinstance(w, weakref.WeakMethod) else w
                if fn is None:
                    with self._lock:
                        self._watchers.remove(w)
                    continue
                try:
                    fn(has)
                except Exception:  # noqa: BLE001 - a watcher must not break subscribe()
                    logger.opt(exception=True).error("event watcher {!r} raised", fn)

    def _add(self, sub: Subscription) -> Subscription:
        with self._lock:
            first = not self._subs
            self._subs = (*self._subs, sub)
        if first and self._watchers:
            self._notify()
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            before = len(self._subs)
            self._subs = tuple(s for s in self._subs if s is not sub)
            last = before == 1 and not self._subs
        if last and self._watchers:
            self._notify()

    def close(self) -> None:
        """Close every subscription (their buffered events stay readable)."""
        with self._lock:
            subs, self._subs = self._subs, ()
        for sub in subs:
            sub.close()
        if subs and self._watchers:
            self._notify()
