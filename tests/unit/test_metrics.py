"""QueueMetrics over the local backend: exact counts, per-lane names, snapshots."""

from __future__ import annotations

import math
import random
import threading

import msgspec
import pytest

from lane_mp.observability.metrics import (
    COMPLETED,
    DEAD_LETTERED,
    FAILED,
    LATENCY_MS,
    RETRIED,
    SUBMITTED,
    TIMEOUT,
    WAIT_TIME_MS,
    LocalMetricsBackend,
    MetricsBackend,
    MetricsSnapshot,
    QueueMetrics,
)


def test_exact_counts_globally_and_per_lane() -> None:
    m = QueueMetrics.local()
    for i in range(100):
        m.command_submitted("query" if i < 60 else "skill")
    for _ in range(7):
        m.command_failed("query")
    for _ in range(3):
        m.command_retried("skill")
    for _ in range(2):
        m.command_timeout("query")
    m.command_dead_lettered("skill")
    for i in range(90):
        m.command_completed("query" if i < 50 else "skill", latency_ms=float(i), wait_ms=1.0)

    c = m.snapshot().counters
    assert c[SUBMITTED] == 100 and c[f"{SUBMITTED}.query"] == 60 and c[f"{SUBMITTED}.skill"] == 40
    assert c[FAILED] == 7 and c[f"{FAILED}.query"] == 7 and f"{FAILED}.skill" not in c
    assert c[RETRIED] == 3 and c[f"{RETRIED}.skill"] == 3
    assert c[TIMEOUT] == 2 and c[f"{TIMEOUT}.query"] == 2
    assert c[DEAD_LETTERED] == 1 and c[f"{DEAD_LETTERED}.skill"] == 1
    assert c[COMPLETED] == 90 and c[f"{COMPLETED}.query"] == 50 and c[f"{COMPLETED}.skill"] == 40
    assert m.count(FAILED) == 7 and m.count(FAILED, "query") == 7 and m.count(FAILED, "nope") == 0
    assert all(isinstance(v, int) for v in c.values())


def test_histograms_globally_and_per_lane() -> None:
    m = QueueMetrics.local()
    rng = random.Random(3)
    latencies = {
        "query": [rng.expovariate(1 / 20) for _ in range(2000)],
        "session": [rng.uniform(100, 200) for _ in range(1000)],
    }
    for lane, values in latencies.items():
        for v in values:
            m.command_completed(lane, latency_ms=v, wait_ms=v / 10)
    snap = m.snapshot()
    everything = sorted(latencies["query"] + latencies["session"])
    glob = snap.histograms[LATENCY_MS]
    assert glob.count == 3000 and glob.sum == pytest.approx(math.fsum(everything))
    assert glob.min == everything[0] and glob.max == everything[-1]
    assert glob.p99 == pytest.approx(everything[math.ceil(0.99 * 3000) - 1], rel=0.01)
    q = sorted(latencies["query"])
    assert snap.histograms[f"{LATENCY_MS}.query"].p50 == pytest.approx(q[999], rel=0.01)
    assert snap.histograms[f"{WAIT_TIME_MS}.session"].count == 1000
    assert snap.histograms[WAIT_TIME_MS].p90 == pytest.approx(everything[2699] / 10, rel=0.01)
    assert m.latency_p99_ms() == glob.p99
    assert m.latency_p99_ms("session") == snap.histograms[f"{LATENCY_MS}.session"].p99
    assert m.latency_p99_ms("never") is None


def test_negative_durations_are_clamped_not_raised() -> None:
    # Wait times mix clocks of two processes; a metrics call must never fail a command.
    m = QueueMetrics.local()
    m.command_completed("query", latency_ms=-0.5, wait_ms=-3.0)
    assert m.backend.get_histogram(WAIT_TIME_MS).min == 0.0  # type: ignore[union-attr]


def test_gauges_and_depth_by_lane() -> None:
    m = QueueMetrics.local()
    m.queue_depth("query", 12)
    m.queue_depth("query", 5)
    m.queue_depth("prompt", 0)
    m.queue_active("query", 3)
    assert m.backend.get_gauge("lane.queue.depth.query") == 5
    assert m.backend.get_gauge("lane.queue.active.query") == 3
    assert m.backend.get_gauge("lane.queue.active.prompt") is None
    assert m.depth_by_lane() == {"query": 5, "prompt": 0}


def test_snapshot_is_frozen_and_independent() -> None:
    m = QueueMetrics.local()
    m.command_submitted("query")
    snap = m.snapshot()
    m.command_submitted("query")
    assert snap.counters[SUBMITTED] == 1 and m.count(SUBMITTED) == 2
    assert isinstance(snap, MetricsSnapshot)
    with pytest.raises(AttributeError):
        snap.counters = {}  # type: ignore[misc]
    d = snap.to_dict()
    assert d["counters"][SUBMITTED] == 1
    assert msgspec.json.decode(msgspec.json.encode(d))["counters"][SUBMITTED] == 1


def test_to_dict_histogram_summary_fields() -> None:
    m = QueueMetrics.local()
    for v in range(1, 101):
        m.command_completed("query", float(v), 0.0)
    h = m.snapshot().to_dict()["histograms"][LATENCY_MS]
    assert set(h) == {"count", "sum", "min", "max", "p50", "p90", "p95", "p99"}
    assert (h["count"], h["sum"], h["min"], h["max"]) == (100, 5050.0, 1.0, 100.0)


def test_reset_clears_everything() -> None:
    m = QueueMetrics.local()
    m.command_submitted("query")
    m.command_completed("query", 1.0, 1.0)
    m.queue_depth("query", 4)
    m.reset()
    snap = m.snapshot()
    assert snap.counters == {} and snap.gauges == {} and snap.histograms == {}


def test_counts_are_exact_under_threads() -> None:
    m = QueueMetrics.local()
    n_threads, per_thread = 4, 5000

    def work() -> None:
        for _ in range(per_thread):
            m.command_submitted("query")
            m.command_completed("query", 1.0, 0.5)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert m.count(SUBMITTED) == n_threads * per_thread
    assert m.count(COMPLETED, "query") == n_threads * per_thread
    assert m.backend.get_histogram(LATENCY_MS).count == n_threads * per_thread  # type: ignore[union-attr]


class _DictBackend:
    """A minimal third-party backend: proves QueueMetrics only needs the protocol."""

    def __init__(self) -> None:
        self.inner = LocalMetricsBackend()
        self.calls = 0

    def increment_counter(self, name: str, value: float = 1) -> None:
        self.calls += 1
        self.inner.increment_counter(name, value)

    def set_gauge(self, name: str, value: float) -> None:
        self.inner.set_gauge(name, value)

    def record_histogram(self, name: str, value: float) -> None:
        self.calls += 1
        self.inner.record_histogram(name, value)

    def get_counter(self, name: str) -> float:
        return self.inner.get_counter(name)

    def get_gauge(self, name: str) -> float | None:
        return self.inner.get_gauge(name)

    def get_histogram(self, name: str):  # type: ignore[no-untyped-def]
        return self.inner.get_histogram(name)

    def snapshot(self) -> MetricsSnapshot:
        return self.inner.snapshot()

    def reset(self) -> None:
        self.inner.reset()


def test_protocol_only_backend() -> None:
    backend = _DictBackend()
    assert isinstance(backend, MetricsBackend)
    assert isinstance(LocalMetricsBackend(), MetricsBackend)
    m = QueueMetrics(backend)
    m.command_submitted("a")
    m.command_completed("a", 2.0, 1.0)
    assert backend.calls == 2 + 2 + 4
    assert m.count(SUBMITTED, "a") == 1 and m.count(COMPLETED) == 1
    assert m.snapshot().histograms[f"{WAIT_TIME_MS}.a"].count == 1


def test_backend_rejects_decreasing_counter() -> None:
    b = LocalMetricsBackend()
    with pytest.raises(ValueError):
        b.increment_counter("x", -1)
    b.increment_counter("x", 2.5)
    assert b.get_counter("x") == 2.5 and b.get_counter("missing") == 0
    assert b.get_histogram("missing") is None


def test_deferred_recording_is_exact_on_every_read_and_folds_in_batches() -> None:
    from lane_mp.observability.metrics import FOLD_AT

    b = LocalMetricsBackend()
    m = QueueMetrics(b)
    m.command_submitted("a")
    m.command_completed("a", 3.0, 1.0)
    assert len(b._pending) == 2  # deferred: nothing applied yet
    assert m.count(SUBMITTED) == 1  # ... but every read applies the queue first
    assert not b._pending
    m.command_completed("a", 5.0, 2.0)
    assert b.get_histogram(f"{LATENCY_MS}.a").count == 2  # type: ignore[union-attr]
    m.command_completed("b", 7.0, 0.0)
    assert b.percentile(LATENCY_MS, 100) == 7.0
    m.command_completed("b", 9.0, 0.0)
    assert b.percentiles(f"{LATENCY_MS}.b", (0.0, 100.0)) == (2, [7.0, 9.0])
    m.command_failed("b")
    assert m.snapshot().counters[f"{FAILED}.b"] == 1
    for _ in range(FOLD_AT + 10):  # a full queue folds by itself: bounded memory
        m.command_submitted("c")
    assert len(b._pending) < FOLD_AT
    b.flush()
    assert not b._pending and m.count(SUBMITTED, "c") == FOLD_AT + 10
    m.command_submitted("c")
    m.reset()  # pending entries are dropped with the rest
    assert m.count(SUBMITTED) == 0


def test_deferred_histograms_equal_direct_recording() -> None:
    rng = random.Random(7)
    values = [(rng.lognormvariate(1, 2), rng.expovariate(1 / 3)) for _ in range(5000)]
    deferred, direct = LocalMetricsBackend(), LocalMetricsBackend()
    qm = QueueMetrics(deferred)
    for lat, wait in values:
        qm.command_completed("q", lat, wait)
        direct.record_batch((COMPLETED, f"{COMPLETED}.q"), (
            (LATENCY_MS, lat), (f"{LATENCY_MS}.q", lat), (WAIT_TIME_MS, wait), (f"{WAIT_TIME_MS}.q", wait),
        ))
    a, b = deferred.snapshot(), direct.snapshot()
    assert a.counters == b.counters
    for name, summary in b.histograms.items():
        got = a.histograms[name]
        assert (got.count, got.min, got.max, got.p50, got.p90, got.p99) == (
            summary.count, summary.min, summary.max, summary.p50, summary.p90, summary.p99
        )
        assert got.sum == pytest.approx(summary.sum)


def test_counts_are_exact_with_readers_racing_recorders() -> None:
    m = QueueMetrics.local()
    stop = threading.Event()
    seen: list[float] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(m.count(SUBMITTED))

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=lambda: [m.command_submitted("a") for _ in range(3000)]) for _ in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(30)
    stop.set()
    r.join(30)
    assert m.count(SUBMITTED) == 9000
    assert seen == sorted(seen)  # a counter never goes back
