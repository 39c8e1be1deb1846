"""Counters, gauges and latency histograms for the pool, and the frozen snapshot users read.

Why a backend protocol: the pool only talks to :class:`QueueMetrics`, whose helpers name the
metrics once; where the numbers go (memory here, StatsD or OpenTelemetry in a user's plugin) is
the backend's business. Why one lock in the local backend: commands are submitted from user
threads while completions arrive on the result thread, and "100 submits" must read as exactly 100.

Names (each ``lane.commands.*`` counter and each histogram exists globally and per lane as
``<name>.<lane>``; the gauges are per lane only)::

    lane.commands.submitted|completed|failed|timeout|retried|dead_lettered   counters
    lane.queue.depth.<lane>, lane.queue.active.<lane>                         gauges
    lane.command.latency_ms, lane.command.wait_time_ms                        histograms
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import msgspec

from .exposition import render_prometheus
from .histogram import Histogram, HistogramSummary

__all__ = [
    "MetricsBackend",
    "LocalMetricsBackend",
    "MetricsSnapshot",
    "HistogramSummary",
    "QueueMetrics",
    "LANE_FAMILIES",
    "SUBMITTED",
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "RETRIED",
    "DEAD_LETTERED",
    "QUEUE_DEPTH",
    "QUEUE_ACTIVE",
    "LATENCY_MS",
    "WAIT_TIME_MS",
]

SUBMITTED = "lane.commands.submitted"
COMPLETED = "lane.commands.completed"
FAILED = "lane.commands.failed"
TIMEOUT = "lane.commands.timeout"
RETRIED = "lane.commands.retried"
DEAD_LETTERED = "lane.commands.dead_lettered"
QUEUE_DEPTH = "lane.queue.depth"
QUEUE_ACTIVE = "lane.queue.active"
LATENCY_MS = "lane.command.latency_ms"
WAIT_TIME_MS = "lane.command.wait_time_ms"

# Names whose ``.<suffix>`` is a lane: the Prometheus rendering turns the suffix into a label.
LANE_FAMILIES: tuple[str, ...] = (
    SUBMITTED,
    COMPLETED,
    FAILED,
    TIMEOUT,
    RETRIED,
    DEAD_LETTERED,
    QUEUE_DEPTH,
    QUEUE_ACTIVE,
    LATENCY_MS,
    WAIT_TIME_MS,
)

HELP: dict[str, str] = {
    SUBMITTED: "Commands submitted (the sample without a lane label is the pool total).",
    COMPLETED: "Commands that completed successfully (unlabelled sample: pool total).",
    FAILED: "Commands that failed after their last attempt (unlabelled sample: pool total).",
    TIMEOUT: "Command attempts that timed out (unlabelled sample: pool total).",
    RETRIED: "Command attempts scheduled for a retry (unlabelled sample: pool total).",
    DEAD_LETTERED: "Commands moved to the dead-letter queue (unlabelled sample: pool total).",
    QUEUE_DEPTH: "Commands pending in the lane.",
    QUEUE_ACTIVE: "Commands of the lane running on a worker.",
    LATENCY_MS: "Run time of completed commands in milliseconds (unlabelled: all lanes).",
    WAIT_TIME_MS: "Time from submit to start of completed commands in ms (unlabelled: all lanes).",
}


class MetricsSnapshot(msgspec.Struct, frozen=True):
    """A point-in-time copy of every metric; the dicts are private copies, safe to keep.

    ``lane_families`` lists the names whose ``.<lane>`` suffix becomes a ``lane`` label in
    :meth:`to_prometheus`.
    """

    timestamp: float
    counters: dict[str, float]
    gauges: dict[str, float]
    histograms: dict[str, HistogramSummary]
    lane_families: tuple[str, ...] = LANE_FAMILIES

    def counter(self, name: str) -> float:
        return self.counters.get(name, 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (NaN stays a float NaN; ``msgspec.json`` writes it as null)."""
        return {
            "timestamp": self.timestamp,
            "counters": dict(self.counters),
            "gauges": dict(self.gauges),
            "histograms": {name: msgspec.structs.asdict(s) for name, s in self.histograms.items()},
        }

    def to_prometheus(self, prefix: str = "lane_mp_") -> str:
        """Prometheus text exposition format 0.0.4 (histograms as summaries)."""
        return render_prometheus(self, prefix=prefix, help_text=HELP)


@runtime_checkable
class MetricsBackend(Protocol):
    """Where metric values go. Implementations must be thread-safe."""

    def increment_counter(self, name: str, value: float = 1) -> None: ...

    def set_gauge(self, name: str, value: float) -> None: ...

    def record_histogram(self, name: str, value: float) -> None: ...

    def get_counter(self, name: str) -> float: ...

    def get_gauge(self, name: str) -> float | None: ...

    def get_histogram(self, name: str) -> HistogramSummary | None: ...

    def snapshot(self) -> MetricsSnapshot: ...

    def reset(self) -> None: ...


class LocalMetricsBackend:
    """In-memory backend: dicts under one lock, :class:`Histogram` per histogram name."""

    def __init__(self, histogram_factory: Callable[[], Histogram] = Histogram) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, float] = {}
        self._gauges: dict[str, float] = {}
        self._histograms: dict[str, Histogram] = {}
        self._new_histogram = histogram_factory

    def increment_counter(self, name: str, value: float = 1) -> None:
        if value < 0:
            raise ValueError(f"counters only go up; got {value!r} for {name}")
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + value

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def record_histogram(self, name: str, value: float) -> None:
        with self._lock:
            h = self._histograms.get(name)
            if h is None:
                h = self._histograms[name] = self._new_histogram()
            h.record(value)

    def record_batch(self, counters: tuple[str, ...], observations: tuple[tuple[str, float], ...]) -> None:
        """Counters +1 and histogram observations under one lock acquisition (the hot path)."""
        with self._lock:
            c = self._counters
            for name in counters:
                c[name] = c.get(name, 0) + 1
            hs = self._histograms
            for name, value in observations:
                h = hs.get(name)
                if h is None:
                    h = hs[name] = self._new_histogram()
                h.record(value)

    def get_counter(self, name: str) -> float:
        with self._lock:
            return self._counters.get(name, 0)

    def get_gauge(self, name: str) -> float | None:
        with self._lock:
            return self._gauges.get(name)

    def get_histogram(self, name: str) -> HistogramSummary | None:
        with self._lock:
            h = self._histograms.get(name)
            # Copy under the lock, summarise outside it: percentiles walk thousands of buckets.
            h = h.copy() if h is not None else None
        return h.summary() if h is not None else None

    def percentile(self, name: str, p: float) -> float:
        """One percentile of a histogram (NaN if it has no observations)."""
        with self._lock:
            h = self._histograms.get(name)
            return h.percentile(p) if h is not None else math.nan

    def snapshot(self) -> MetricsSnapshot:
        with self._lock:
            counters = dict(self._counters)
            gauges = dict(self._gauges)
            copies = {name: h.copy() for name, h in self._histograms.items()}
        return MetricsSnapshot(
            timestamp=time.time(),
            counters=counters,
            gauges=gauges,
            histograms={name: h.summary() for name, h in copies.items()},
        )

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()
            self._gauges.clear()
            self._histograms.clear()


class _LaneNames:
    """Per-lane metric names, formatted once per lane instead of once per command."""

    __slots__ = (
        "submitted",
        "completed",
        "failed",
        "timeout",
        "retried",
        "dead_lettered",
        "depth",
        "active",
        "latency",
        "wait",
    )

    def __init__(self, lane: str) -> None:
        self.submitted = (SUBMITTED, f"{SUBMITTED}.{lane}")
        self.completed = (COMPLETED, f"{COMPLETED}.{lane}")
        self.failed = (FAILED, f"{FAILED}.{lane}")
        self.timeout = (TIMEOUT, f"{TIMEOUT}.{lane}")
        self.retried = (RETRIED, f"{RETRIED}.{lane}")
        self.dead_lettered = (DEAD_LETTERED, f"{DEAD_LETTERED}.{lane}")
        self.depth = f"{QUEUE_DEPTH}.{lane}"
        self.active = f"{QUEUE_ACTIVE}.{lane}"
        self.latency = (LATENCY_MS, f"{LATENCY_MS}.{lane}")
        self.wait = (WAIT_TIME_MS, f"{WAIT_TIME_MS}.{lane}")


class QueueMetrics:
    """The pool's vocabulary of metrics on top of any :class:`MetricsBackend`.

    Each helper is one call per command event. With the local backend the counters and histogram
    observations of one event are applied under a single lock acquisition; other backends get
    the plain protocol calls. Negative latencies or waits (clocks of different processes) are
    clamped to 0 rather than raised: a metrics call must never fail a command.
    """

    def __init__(self, backend: MetricsBackend) -> None:
        self.backend = backend
        self._names: dict[str, _LaneNames] = {}
        self._batch: Callable[[tuple[str, ...], tuple[tuple[str, float], ...]], None] | None = getattr(
            backend, "record_batch", None
        )

    @classmethod
    def local(cls) -> QueueMetrics:
        """QueueMetrics over a fresh :class:`LocalMetricsBackend`."""
        return cls(LocalMetricsBackend())

    def _lane(self, lane: str) -> _LaneNames:
        names = self._names.get(lane)
        if names is None:
            # setdefault: two threads meeting a new lane agree on one object.
            names = self._names.setdefault(lane, _LaneNames(lane))
        return names

    def _count(self, names: tuple[str, ...]) -> None:
        if self._batch is not None:
            self._batch(names, ())
        else:
            for name in names:
                self.backend.increment_counter(name)

    def command_submitted(self, lane: str) -> None:
        self._count(self._lane(lane).submitted)

    def command_completed(self, lane: str, latency_ms: float, wait_ms: float) -> None:
        n = self._lane(lane)
        latency_ms = latency_ms if latency_ms > 0.0 else 0.0  # noqa: FURB136 - cheaper than max()
        wait_ms = wait_ms if wait_ms > 0.0 else 0.0  # noqa: FURB136
        lat_all, lat_lane = n.latency
        wait_all, wait_lane = n.wait
        observations = (
            (lat_all, latency_ms),
            (lat_lane, latency_ms),
            (wait_all, wait_ms),
            (wait_lane, wait_ms),
        )
        if self._batch is not None:
            self._batch(n.completed, observations)
            return
        for name in n.completed:
            self.backend.increment_counter(name)
        for name, value in observations:
            self.backend.record_histogram(name, value)

    def command_failed(self, lane: str) -> None:
        self._count(self._lane(lane).failed)

    def command_timeout(self, lane: str) -> None:
        self._count(self._lane(lane).timeout)

    def command_retried(self, lane: str) -> None:
        self._count(self._lane(lane).retried)

    def command_dead_lettered(self, lane: str) -> None:
        self._count(self._lane(lane).dead_lettered)

    def queue_depth(self, lane: str, n: int) -> None:
        self.backend.set_gauge(self._lane(lane).depth, n)

    def queue_active(self, lane: str, n: int) -> None:
        self.backend.set_gauge(self._lane(lane).active, n)

    # -- reading back (for stats(), alerts and tests) -------------------------------------------

    def snapshot(self) -> MetricsSnapshot:
        return self.backend.snapshot()

    def reset(self) -> None:
        self.backend.reset()

    def count(self, counter: str, lane: str | None = None) -> float:
        """A counter's value, e.g. ``count(SUBMITTED)`` or ``count(FAILED, "query")``."""
        return self.backend.get_counter(counter if lane is None else f"{counter}.{lane}")

    def depth_by_lane(self) -> dict[str, int]:
        """Last reported queue depth per lane: the input of ``AlertManager.evaluate``."""
        out: dict[str, int] = {}
        for lane, names in list(self._names.items()):
            value = self.backend.get_gauge(names.depth)
            if value is not None:
                out[lane] = int(value)
        return out

    def latency_p99_ms(self, lane: str | None = None) -> float | None:
        """p99 of command latency (all lanes or one), None before the first completion."""
        summary = self.backend.get_histogram(LATENCY_MS if lane is None else f"{LATENCY_MS}.{lane}")
        return None if summary is None or summary.count == 0 else summary.p99
