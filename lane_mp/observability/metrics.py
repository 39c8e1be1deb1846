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

``latency_ms`` is what the caller sees, submit to result (queueing, retries and run time
included); ``wait_time_ms`` is the queued time of the last attempt (submit or retry to dispatch).

Deferred recording (local backend): the pool records two or three things per command, and in a
busy pool every microsecond on its threads is throughput. So :meth:`LocalMetricsBackend.defer`
only appends a tuple to a deque (~0.1 µs); the queue is applied in batches under one lock
acquisition, when :data:`FOLD_AT` entries are waiting and before every read. Reads are therefore
exact ("100 submits" reads 100 as soon as the 100th ``submit`` returned), and a batch costs less
per command than one-by-one recording (counters via ``collections.Counter``, one bucket
computation shared by the pool-wide and the per-lane histogram).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from itertools import chain
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

# Deferred entries waiting before a fold: bounds the queue's memory (~100 KB) and the pause of
# the recording thread that happens to fold (~0.3 ms), while amortising the lock and call costs.
FOLD_AT = 1024

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
    LATENCY_MS: "Time from submit to result of completed commands in ms (unlabelled: all lanes).",
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


_Obs = tuple[tuple[str, ...], float]  # (histogram names, value): one value for several histograms


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
        self._pending: deque[tuple[tuple[str, ...], _Obs | None, _Obs | None]] = deque()

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
        """Counters +1 and histogram observations, applied at once under the lock."""
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

    def defer(
        self,
        counters: tuple[str, ...],
        latency: tuple[tuple[str, ...], float] | None = None,
        wait: tuple[tuple[str, ...], float] | None = None,
    ) -> None:
        """The per-command hot path: counters +1 and up to two observations (each recorded in
        every histogram named), queued and applied in batches (module docstring, "Deferred")."""
        pending = self._pending
        pending.append((counters, latency, wait))
        if len(pending) >= FOLD_AT:
            with self._lock:
                self._fold_locked()

    def _fold_locked(self) -> None:
        """Apply everything deferred so far (the caller holds the lock)."""
        pending = self._pending
        n = len(pending)
        if not n:
            return
        pop = pending.popleft  # only folders pop (under the lock); recorders append on the right
        batch = [pop() for _ in range(n)]
        c = self._counters
        for name, k in Counter(chain.from_iterable(entry[0] for entry in batch)).items():
            c[name] = c.get(name, 0) + k
        groups: dict[tuple[str, ...], list[float]] = {}
        for _, latency, wait in batch:
            for obs in (latency, wait):
                if obs is not None:
                    values = groups.get(obs[0])
                    if values is None:
                        groups[obs[0]] = [obs[1]]
                    else:
                        values.append(obs[1])
        hs = self._histograms
        for names, values in groups.items():
            indexes = None
            for name in names:
                h = hs.get(name)
                if h is None:
                    h = hs[name] = self._new_histogram()
                if indexes is None:
                    indexes = h.indexes(values)
                h.add_indexed(indexes, values)  # one factory, one layout: the indexes are shared

    def flush(self) -> None:
        """Apply deferred recordings now (every read does this by itself)."""
        with self._lock:
            self._fold_locked()

    def get_counter(self, name: str) -> float:
        with self._lock:
            self._fold_locked()
            return self._counters.get(name, 0)

    def get_gauge(self, name: str) -> float | None:
        with self._lock:
            return self._gauges.get(name)

    def get_histogram(self, name: str) -> HistogramSummary | None:
        with self._lock:
            self._fold_locked()
            h = self._histograms.get(name)
            # Copy under the lock, summarise outside it: percentiles walk thousands of buckets.
            h = h.copy() if h is not None else None
        return h.summary() if h is not None else None

    def percentile(self, name: str, p: float) -> float:
        """One percentile of a histogram (NaN if it has no observations)."""
        with self._lock:
            self._fold_locked()
            h = self._histograms.get(name)
            return h.percentile(p) if h is not None else math.nan

    def percentiles(self, name: str, ps: tuple[float, ...]) -> tuple[int, list[float]]:
        """(count, percentiles) of one histogram; (0, []) if it does not exist. The histogram is
        copied under the lock (a list copy) and summarised outside it, so recorders never wait
        for the percentile walk."""
        with self._lock:
            self._fold_locked()
            h = self._histograms.get(name)
            h = h.copy() if h is not None else None
        if h is None:
            return 0, []
        return h.count, h.percentiles(ps)

    def snapshot(self) -> MetricsSnapshot:
        with self._lock:
            self._fold_locked()
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
            self._pending.clear()
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

    Each helper is one call per command event. With the local backend they are deferred (one
    deque append, applied in batches before any read, see the module docstring); other backends
    get ``record_batch`` if they have it, else the plain protocol calls. Negative latencies or waits (clocks of different processes) are
    clamped to 0 rather than raised: a metrics call must never fail a command.
    """

    def __init__(self, backend: MetricsBackend) -> None:
        self.backend = backend
        self._names: dict[str, _LaneNames] = {}
        self._batch: Callable[[tuple[str, ...], tuple[tuple[str, float], ...]], None] | None = getattr(
            backend, "record_batch", None
        )
        self._defer: Callable[..., None] | None = getattr(backend, "defer", None)

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
        if self._defer is not None:
            self._defer(names)
        elif self._batch is not None:
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
        if self._defer is not None:
            self._defer(n.completed, (n.latency, latency_ms), (n.wait, wait_ms))
            return
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
