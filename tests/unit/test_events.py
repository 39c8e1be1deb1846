"""EventEmitter / Subscription: fan-out, filtering, bounded buffers, sync and async consumers."""

from __future__ import annotations

import asyncio
import threading
import time

import msgspec
import pytest

from lane_mp.observability import events as ev_mod
from lane_mp.observability.events import (
    ALL_EVENT_KEYS,
    COMMAND_COMPLETED,
    COMMAND_FAILED,
    COMMAND_SUBMITTED,
    WORKER_CRASHED,
    EventEmitter,
    LaneEvent,
    key_prefix,
)

WAIT_S = 5.0  # upper bound on every wait below; the happy path takes milliseconds


def test_event_keys() -> None:
    assert len(ALL_EVENT_KEYS) == 14
    assert {
        "queue.command.retry",
        "queue.lane.pressure",
        "queue.shutdown.started",
        "worker.recycled",
    } <= ALL_EVENT_KEYS


def test_emit_without_subscribers_is_a_no_op() -> None:
    em = EventEmitter()
    assert not em.has_subscribers
    em.emit(COMMAND_SUBMITTED, {"id": 1})
    sub = em.subscribe()
    assert sub.get_nowait() is None  # nothing emitted before subscribing is replayed


def test_subscriber_receives_events_in_order() -> None:
    em = EventEmitter()
    sub = em.subscribe()
    before = time.time()
    for i in range(5):
        em.emit(COMMAND_SUBMITTED, {"id": i})
    em.emit(COMMAND_COMPLETED)
    got = [sub.get(WAIT_S) for _ in range(6)]
    assert [e.payload.get("id") for e in got if e] == [0, 1, 2, 3, 4, None]
    assert got[-1] is not None and got[-1].key == COMMAND_COMPLETED and got[-1].payload == {}
    assert all(e is not None and before <= e.timestamp <= time.time() for e in got)
    assert sub.get(0.01) is None and not sub.closed


def test_event_is_frozen_plain_data() -> None:
    e = LaneEvent(COMMAND_FAILED, 1.5, {"lane": "query", "error": "boom"})
    with pytest.raises(AttributeError):
        e.key = "x"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(e), type=LaneEvent) == e


def test_filtered_subscriptions() -> None:
    em = EventEmitter()
    everything = em.subscribe()
    workers = em.subscribe_filtered(key_prefix("worker."))
    failures = em.subscribe_filtered(lambda e: e.key == COMMAND_FAILED and e.payload["lane"] == "query")
    em.emit(COMMAND_FAILED, {"lane": "query"})
    em.emit(COMMAND_FAILED, {"lane": "skill"})
    em.emit(WORKER_CRASHED, {"pid": 42})
    em.emit_event(LaneEvent(COMMAND_SUBMITTED, 0.0, {"lane": "query"}))
    assert [e.key for e in everything.drain()] == [
        COMMAND_FAILED,
        COMMAND_FAILED,
        WORKER_CRASHED,
        COMMAND_SUBMITTED,
    ]
    assert [e.payload for e in workers.drain()] == [{"pid": 42}]
    assert [e.payload for e in failures.drain()] == [{"lane": "query"}]


def test_raising_filter_skips_event_for_that_subscriber_only() -> None:
    em = EventEmitter()
    bad = em.subscribe_filtered(lambda e: e.payload["missing"])
    good = em.subscribe()
    em.emit(COMMAND_SUBMITTED, {"id": 1})  # must not raise
    assert bad.pending == 0 and good.pending == 1


def test_full_buffer_drops_and_counts_without_blocking() -> None:
    em = EventEmitter(capacity=5)
    slow = em.subscribe()
    roomy = em.subscribe(capacity=100)
    start = time.perf_counter()
    for i in range(12):
        em.emit(COMMAND_SUBMITTED, {"id": i})
    assert time.perf_counter() - start < 1.0  # nobody reads, yet emit returned at once
    assert slow.pending == 5 and slow.dropped == 7 and slow.delivered == 5
    assert roomy.pending == 12 and roomy.dropped == 0
    # The oldest events are kept: drops hit the newest arrivals, so what is read stays in order.
    assert [e.payload["id"] for e in slow.drain()] == [0, 1, 2, 3, 4]
    em.emit(COMMAND_SUBMITTED, {"id": 99})
    assert slow.get(WAIT_S).payload["id"] == 99  # type: ignore[union-attr]
    assert slow.dropped == 7


def test_concurrent_emitters_account_for_every_event() -> None:
    em = EventEmitter(capacity=1500)
    sub = em.subscribe()
    n_threads, per_thread = 4, 1000

    def work(t: int) -> None:
        for i in range(per_thread):
            em.emit(COMMAND_SUBMITTED, {"t": t, "i": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
        assert not t.is_alive()
    assert sub.pending == 1500
    assert sub.delivered + sub.dropped == n_threads * per_thread


def test_blocking_iteration_in_a_thread_ends_on_close() -> None:
    em = EventEmitter()
    sub = em.subscribe()
    received: list[int] = []

    def consume() -> None:
        for e in sub:
            received.append(e.payload["id"])

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(100):
        em.emit(COMMAND_SUBMITTED, {"id": i})
    deadline = time.monotonic() + WAIT_S
    while len(received) < 100 and time.monotonic() < deadline:
        time.sleep(0.005)
    sub.close()
    consumer.join(WAIT_S)
    assert not consumer.is_alive()
    assert received == list(range(100))


def test_get_wakes_up_on_emit_from_another_thread() -> None:
    em = EventEmitter()
    sub = em.subscribe()
    timer = threading.Timer(0.05, em.emit, args=(COMMAND_COMPLETED, {"id": 7}))
    timer.start()
    try:
        e = sub.get(WAIT_S)
    finally:
        timer.join(WAIT_S)
    assert e is not None and e.payload == {"id": 7}


def test_get_times_out() -> None:
    sub = EventEmitter().subscribe()
    start = time.monotonic()
    assert sub.get(0.05) is None
    assert 0.04 <= time.monotonic() - start < WAIT_S


def test_close_unsubscribes_and_keeps_buffered_events() -> None:
    em = EventEmitter()
    sub = em.subscribe()
    em.emit(COMMAND_SUBMITTED, {"id": 1})
    sub.close()
    sub.close()  # idempotent
    assert em.subscriber_count == 0 and not em.has_subscribers
    em.emit(COMMAND_SUBMITTED, {"id": 2})  # not delivered
    assert [e.payload["id"] for e in sub] == [1]
    assert sub.get(WAIT_S) is None and sub.closed


def test_emitter_close_closes_all_and_context_manager() -> None:
    em = EventEmitter()
    with em.subscribe() as a:
        b = em.subscribe_filtered(key_prefix("queue."))
        em.close()
        assert a.closed and b.closed and em.subscriber_count == 0
    with pytest.raises(ValueError):
        EventEmitter(capacity=0)


def test_async_iteration_does_not_block_the_loop() -> None:
    em = EventEmitter()
    sub = em.subscribe()

    async def main() -> tuple[list[int], int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        async def consume() -> list[int]:
            got = []
            async for e in sub:
                got.append(e.payload["id"])
            return got

        def produce() -> None:
            for i in range(50):
                em.emit(COMMAND_SUBMITTED, {"id": i})
                time.sleep(0.002)
            sub.close()

        tick_task = asyncio.create_task(ticker())
        producer = threading.Thread(target=produce)
        producer.start()
        try:
            got = await asyncio.wait_for(consume(), WAIT_S)
        finally:
            stop.set()
            await asyncio.wait_for(tick_task, WAIT_S)
            producer.join(WAIT_S)
        return got, ticks

    got, ticks = asyncio.run(main())
    assert got == list(range(50))
    assert ticks >= 3  # the loop kept running while the consumer waited


def test_async_get_timeout_and_cancellation_lose_nothing() -> None:
    em = EventEmitter()
    sub = em.subscribe()

    async def main() -> list[int]:
        assert await sub.aget(0.02) is None
        waiter = asyncio.create_task(sub.aget())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        em.emit(COMMAND_SUBMITTED, {"id": 1})  # arrives with no waiter: must stay buffered
        producer = threading.Thread(target=em.emit, args=(COMMAND_SUBMITTED, {"id": 2}))
        producer.start()
        first = await asyncio.wait_for(sub.aget(), WAIT_S)
        second = await asyncio.wait_for(sub.aget(), WAIT_S)
        producer.join(WAIT_S)
        return [first.payload["id"], second.payload["id"]]  # type: ignore[union-attr]

    assert asyncio.run(main()) == [1, 2]
    assert not sub._async_waiters  # no stale waiter left behind


def test_closed_loop_waiter_does_not_break_emit() -> None:
    em = EventEmitter()
    sub = em.subscribe()
    loop = asyncio.new_event_loop()
    fut = loop.create_future()
    loop.close()
    sub._async_waiters.append((loop, fut))  # a consumer whose loop died mid-wait
    em.emit(COMMAND_SUBMITTED, {"id": 1})
    assert sub.pending == 1


def test_default_capacity() -> None:
    assert EventEmitter().subscribe().capacity == ev_mod.DEFAULT_CAPACITY == 10_000


def test_woken_consumer_lingers_to_read_a_burst_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting consumer is woken by the first event of a burst and reads the rest without
    waiting again; the delay it adds is bounded by WAKE_LINGER_S."""
    monkeypatch.setattr(ev_mod, "WAKE_LINGER_S", 0.05)
    em = EventEmitter()
    sub = em.subscribe()
    got: list[tuple[float, int]] = []

    def consume() -> None:
        for e in sub:
            got.append((time.monotonic(), e.payload["i"]))

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.05)  # the consumer is waiting
    t0 = time.monotonic()
    for i in range(50):
        em.emit(COMMAND_COMPLETED, {"i": i})
    time.sleep(0.2)
    sub.close()
    consumer.join(WAIT_S)
    assert [i for _, i in got] == list(range(50))
    first, last = got[0][0] - t0, got[-1][0] - t0
    assert 0.04 <= first < 1.0  # it lingered ...
    assert last - first < 0.04  # ... then read the whole burst in one go


def test_no_linger_and_timeouts_still_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev_mod, "WAKE_LINGER_S", 0.0)
    em = EventEmitter()
    sub = em.subscribe()
    threading.Timer(0.02, em.emit, args=(COMMAND_COMPLETED, {"i": 1})).start()
    start = time.monotonic()
    e = sub.get(WAIT_S)
    assert e is not None and time.monotonic() - start < 1.0
    monkeypatch.setattr(ev_mod, "WAKE_LINGER_S", 0.01)
    start = time.monotonic()
    assert sub.get(0.05) is None
    assert 0.04 <= time.monotonic() - start < 1.0
    sub.close()


def test_watchers_hear_about_first_and_last_subscriber() -> None:
    import gc
    import weakref

    em = EventEmitter()
    calls: list[bool] = []
    em.watch(calls.append)
    assert calls == [False]  # told at once
    a = em.subscribe()
    b = em.subscribe_filtered(key_prefix("worker."))
    assert calls == [False, True]  # only the first subscriber is news
    a.close()
    assert calls == [False, True]
    b.close()
    assert calls == [False, True, False]
    c = em.subscribe()
    em.close()
    assert calls == [False, True, False, True, False]
    assert c.closed

    class Owner:
        def __init__(self) -> None:
            self.seen: list[bool] = []

        def changed(self, has: bool) -> None:
            self.seen.append(has)

    owner = Owner()
    em.watch(weakref.WeakMethod(owner.changed))
    em.subscribe()
    assert owner.seen == [False, True]
    del owner
    gc.collect()
    em.close()  # the dead watcher is dropped, not called
    assert len(em._watchers) == 1


def test_raising_watcher_does_not_break_subscribe() -> None:
    em = EventEmitter()

    def bad(_: bool) -> None:
        raise RuntimeError("watcher bug")

    em.watch(bad)
    sub = em.subscribe()
    em.emit(COMMAND_COMPLETED, {"id": 1})
    assert sub.get_nowait() is not None
