"""A bounded-memory, log-linear histogram (HDR style) for latencies and wait times.

Why not keep the samples: the pool records one latency per command, millions per hour; a sorted
list would grow without bound and a reservoir would lose the tail that p99 is about. Why not plain
log buckets: a log-linear layout finds a value's bucket with one ``bit_length`` and one shift
(no ``math.log``), which keeps :meth:`Histogram.record` well under a microsecond in CPython.

Layout (HDR Histogram's, with integer "units" of ``resolution``)::

    x = int(value / resolution)                     the value in units, truncated
    x <  SUB_BUCKETS:   index = x                   exact: one bucket per unit
    x >= SUB_BUCKETS:   e = x.bit_length() - SUB_BITS
                        index = e * HALF + (x >> e) buckets of width 2**e over [HALF << e, SUB_BUCKETS << e)

Every bucket at or above ``HALF`` units is at most ``1/HALF`` of its lower bound wide, and a
percentile reports the bucket's midpoint, so the relative error is at most ``1/(2*HALF)``
(0.39 % with ``SUB_BITS = 8``) for values of at least ``HALF * resolution``. With the defaults
(``resolution`` 1e-6 ms = 1 ns, ``highest`` one hour in ms) that covers 1 µs .. 1 h with at most
4,608 buckets (~37 KB); values above ``highest`` are counted in the top bucket (count, sum, min
and max stay exact, only their percentile saturates).

Not thread-safe on its own: the metrics backend serialises access with its lock.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import accumulate

import msgspec

__all__ = ["Histogram", "HistogramSummary", "SUB_BITS", "MAX_RELATIVE_ERROR"]

# 8 bits -> 256 sub-buckets: 0.39 % worst-case error with ~4.6k buckets for 1 ns..1 h.
# 7 bits would halve memory but sit at 0.78 %, too close to the promised 1 %.
SUB_BITS = 8
SUB_BUCKETS = 1 << SUB_BITS
HALF = SUB_BUCKETS >> 1
MAX_RELATIVE_ERROR = 1.0 / (2 * HALF)

DEFAULT_RESOLUTION = 1e-6  # in the caller's unit; 1 ns when values are milliseconds
DEFAULT_HIGHEST = 3_600_000.0  # one hour in milliseconds

SUMMARY_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0)


class HistogramSummary(msgspec.Struct, frozen=True):
    """What a snapshot keeps of a histogram. Empty histograms report NaN for min/max/quantiles."""

    count: int
    sum: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan


def _index(x: int) -> int:
    if x < SUB_BUCKETS:
        return x
    e = x.bit_length() - SUB_BITS
    return (e << (SUB_BITS - 1)) + (x >> e)


def _bounds(index: int) -> tuple[int, int]:
    """[lower, upper) of bucket ``index`` in units."""
    if index < SUB_BUCKETS:
        return index, index + 1
    e = (index >> (SUB_BITS - 1)) - 1
    sub = index - (e << (SUB_BITS - 1))
    return sub << e, (sub + 1) << e


class Histogram:
    """Log-linear histogram with bounded memory and a fixed relative error (see module doc)."""

    __slots__ = ("_resolution", "_inv", "_highest", "_top", "_counts", "count", "sum", "min", "max")

    def __init__(self, resolution: float = DEFAULT_RESOLUTION, highest: float = DEFAULT_HIGHEST) -> None:
        if not (resolution > 0 and math.isfinite(resolution)):
            raise ValueError(f"resolution must be a positive finite number, got {resolution!r}")
        if not (highest > resolution and math.isfinite(highest)):
            raise ValueError(f"highest must be finite and above resolution, got {highest!r}")
        self._resolution = resolution
        self._inv = 1.0 / resolution
        self._highest = highest
        self._top = int(highest * self._inv)
        # Grown on demand up to _index(_top) + 1 entries: an idle histogram costs a few bytes.
        self._counts: list[int] = []
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    @property
    def resolution(self) -> float:
        return self._resolution

    @property
    def highest(self) -> float:
        return self._highest

    def record(self, value: float) -> None:
        """Add one observation. Negative and NaN values are rejected (they are caller bugs)."""
        if not value >= 0.0:  # also catches NaN
            raise ValueError(f"histogram values must be >= 0, got {value!r}")
        x = int(value * self._inv) if value < self._highest else self._top
        # _index() inlined: this is on the per-command path.
        if x >= SUB_BUCKETS:
            e = x.bit_length() - SUB_BITS
            x = (e << (SUB_BITS - 1)) + (x >> e)
        counts = self._counts
        try:
            counts[x] += 1
        except IndexError:
            counts.extend([0] * (x + 1 - len(counts)))
            counts[x] += 1
        self.count += 1
        self.sum += value
        # Plain comparisons, not min()/max(): a builtin call costs more on this per-command path.
        if value < self.min:  # noqa: PLR1730
            self.min = value
        if value > self.max:  # noqa: PLR1730
            self.max = value

    def record_many(self, values: Iterable[float]) -> None:
        """Add many observations; one pass to find the buckets, builtins for count/sum/min/max
        (about twice as fast per value as :meth:`record`)."""
        values = values if isinstance(values, list) else list(values)
        if values:
            self.add_indexed(self.indexes(values), values)

    def indexes(self, values: list[float]) -> list[int]:
        """Bucket index of each value (for :meth:`add_indexed` on histograms of this layout)."""
        inv, highest, top = self._inv, self._highest, self._top
        out: list[int] = []
        append = out.append
        for v in values:
            if not v >= 0.0:  # also catches NaN
                raise ValueError(f"histogram values must be >= 0, got {v!r}")
            x = int(v * inv) if v < highest else top
            if x >= SUB_BUCKETS:
                e = x.bit_length() - SUB_BITS
                x = (e << (SUB_BITS - 1)) + (x >> e)
            append(x)
        return out

    def add_indexed(self, indexes: list[int], values: list[float]) -> None:
        """Add ``values`` whose bucket ``indexes`` were computed by :meth:`indexes` of a histogram
        with the same resolution and highest value (the metrics backend computes them once for
        the pool-wide and the per-lane histogram)."""
        counts = self._counts
        need = max(indexes) + 1
        if need > len(counts):
            counts.extend([0] * (need - len(counts)))
        for x in indexes:
            counts[x] += 1
        self.count += len(values)
        self.sum += sum(values)
        lo, hi = min(values), max(values)
        if lo < self.min:  # noqa: PLR1730
            self.min = lo
        if hi > self.max:  # noqa: PLR1730
            self.max = hi

    def percentiles(self, ps: Sequence[float]) -> list[float]:
        """Several percentiles (0..100) in one pass; nearest-rank definition, NaN when empty."""
        for p in ps:
            if not 0.0 <= p <= 100.0:
                raise ValueError(f"percentile must be within [0, 100], got {p!r}")
        if self.count == 0:
            return [math.nan for _ in ps]
        cumulative = list(accumulate(self._counts))
        out = []
        for p in ps:
            rank = max(1, math.ceil(p / 100.0 * self.count))
            if rank == self.count or rank == 1:
                # The extremes are known exactly, even above `highest` where buckets saturate.
                out.append(self.max if rank == self.count else self.min)
                continue
            index = bisect_left(cumulative, rank)
            lower, upper = _bounds(index)
            mid = (lower + upper) * 0.5 * self._resolution
            # The true value lies in [min, max]; clamping makes p0/p100 exact and helps the top bucket.
            out.append(min(max(mid, self.min), self.max))
        return out

    def percentile(self, p: float) -> float:
        return self.percentiles((p,))[0]

    def summary(self) -> HistogramSummary:
        p50, p90, p95, p99 = self.percentiles(SUMMARY_PERCENTILES)
        empty = self.count == 0
        return HistogramSummary(
            count=self.count,
            sum=self.sum,
            min=math.nan if empty else self.min,
            max=math.nan if empty else self.max,
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
        )

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s observations into this one (both must share resolution and highest)."""
        if other._resolution != self._resolution or other._highest != self._highest:
            raise ValueError("cannot merge histograms with different resolution or highest value")
        if len(other._counts) > len(self._counts):
            self._counts.extend([0] * (len(other._counts) - len(self._counts)))
        counts = self._counts
        for i, c in enumerate(other._counts):
            if c:
                counts[i] += c
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def copy(self) -> Histogram:
        """An independent copy (one list copy: snapshots take it under the backend's lock)."""
        new = Histogram(self._resolution, self._highest)
        new._counts = self._counts.copy()
        new.count = self.count
        new.sum = self.sum
        new.min = self.min
        new.max = self.max
        return new

    def reset(self) -> None:
        self._counts = []
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    @property
    def bucket_count(self) -> int:
        """Buckets currently allocated (bounded by the bucket of ``highest``)."""
        return len(self._counts)

    def __repr__(self) -> str:
        return f"Histogram(count={self.count}, min={self.min}, max={self.max})"
