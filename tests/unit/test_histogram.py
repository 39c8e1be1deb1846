"""The log-linear histogram: percentiles within 1 % of exact, bounded memory, merge."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lane_mp.observability.histogram import DEFAULT_HIGHEST, MAX_RELATIVE_ERROR, Histogram, HistogramSummary

PS = (0.0, 1.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0)


def exact_percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile, the definition the histogram approximates."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def assert_close(h: Histogram, values: list[float], ps: tuple[float, ...] = PS) -> None:
    for p in ps:
        exact = exact_percentile(values, p)
        got = h.percentile(p)
        assert got == pytest.approx(exact, rel=0.01), (p, exact, got)


def test_error_bound_is_below_one_percent() -> None:
    assert MAX_RELATIVE_ERROR < 0.005


@pytest.mark.parametrize(
    "draw",
    [
        pytest.param(lambda r: r.uniform(0.001, 1000.0), id="uniform"),
        pytest.param(lambda r: r.lognormvariate(1.0, 2.5), id="lognormal"),
        pytest.param(lambda r: r.expovariate(1 / 50.0), id="exponential"),
        pytest.param(lambda r: r.gauss(5.0, 0.5) if r.random() < 0.9 else r.gauss(800.0, 40.0), id="bimodal"),
        pytest.param(lambda r: 10 ** r.uniform(-3, 6.5), id="log-uniform-1us-1h"),
    ],
)
def test_percentiles_within_one_percent(draw) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(1234)
    values = [abs(draw(rng)) + 0.001 for _ in range(50_000)]
    h = Histogram()
    h.record_many(values)
    assert h.count == len(values)
    assert h.sum == pytest.approx(math.fsum(values))
    assert h.min == min(values) and h.max == max(values)
    assert_close(h, values)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0.001, max_value=3_600_000.0), min_size=1, max_size=300),
    p=st.floats(min_value=0.0, max_value=100.0),
)
def test_percentile_property(values: list[float], p: float) -> None:
    h = Histogram()
    h.record_many(values)
    assert h.percentile(p) == pytest.approx(exact_percentile(values, p), rel=0.01)


def test_constant_and_integer_values_are_exact_enough() -> None:
    h = Histogram()
    h.record_many([7.0] * 1000)
    assert h.percentile(50) == 7.0 and h.percentile(99) == 7.0  # clamped to [min, max]
    h2 = Histogram()
    values = [float(i) for i in range(1, 1001)]
    h2.record_many(values)
    assert_close(h2, values)


def test_memory_is_bounded_over_the_whole_range() -> None:
    h = Histogram()
    for v in (1e-9, 0.001, 1.0, 1000.0, 3_600_000.0, 1e12, 1e300):
        h.record(v)
    # The top bucket caps the list: one hour at 1 ns resolution needs 4,608 buckets.
    assert h.bucket_count <= 4608
    assert h.count == 7 and h.max == 1e300  # count and max stay exact above `highest`
    assert h.percentile(100) == 1e300


def test_merge_equals_recording_everything() -> None:
    rng = random.Random(7)
    a_vals = [rng.expovariate(0.1) for _ in range(5000)]
    b_vals = [rng.expovariate(0.01) for _ in range(3000)]
    a, b, both = Histogram(), Histogram(), Histogram()
    a.record_many(a_vals)
    b.record_many(b_vals)
    both.record_many(a_vals + b_vals)
    a.merge(b)
    assert a.count == both.count == 8000
    assert a.min == both.min and a.max == both.max
    assert a.sum == pytest.approx(both.sum)
    assert a.percentiles(PS) == both.percentiles(PS)
    assert_close(a, a_vals + b_vals)


def test_merge_rejects_other_layouts_and_copy_is_independent() -> None:
    with pytest.raises(ValueError):
        Histogram().merge(Histogram(resolution=1e-3))
    h = Histogram()
    h.record(1.0)
    c = h.copy()
    c.record(2.0)
    assert h.count == 1 and c.count == 2


def test_empty_histogram_and_bad_input() -> None:
    h = Histogram()
    assert math.isnan(h.percentile(50))
    s = h.summary()
    assert s.count == 0 and math.isnan(s.p99) and math.isnan(s.min) and math.isnan(s.mean)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError):
            h.record(bad)
    with pytest.raises(ValueError):
        h.percentile(101)
    with pytest.raises(ValueError):
        Histogram(resolution=0)
    assert h.count == 0


def test_summary_fields_and_reset() -> None:
    h = Histogram()
    values = [float(i) for i in range(1, 101)]
    h.record_many(values)
    s = h.summary()
    assert isinstance(s, HistogramSummary)
    assert (s.count, s.sum, s.min, s.max) == (100, 5050.0, 1.0, 100.0)
    assert s.mean == pytest.approx(50.5)
    for got, p in ((s.p50, 50), (s.p90, 90), (s.p95, 95), (s.p99, 99)):
        assert got == pytest.approx(float(p), rel=0.01)
    h.reset()
    assert h.count == 0 and h.bucket_count == 0


def test_record_many_and_shared_indexes_equal_one_by_one() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(0, 3) for _ in range(3000)] + [0.0, DEFAULT_HIGHEST * 2]
    one, many, shared = Histogram(), Histogram(), Histogram()
    for v in values:
        one.record(v)
    many.record_many(values)
    shared.add_indexed(one.indexes(values), values)
    for h in (many, shared):
        assert h.summary().count == one.summary().count
        assert h.percentiles(PS) == one.percentiles(PS)
        assert (h.min, h.max) == (one.min, one.max) and h.sum == pytest.approx(one.sum)
    with pytest.raises(ValueError):
        Histogram().record_many([1.0, float("nan")])
    with pytest.raises(ValueError):
        Histogram().record_many([-1.0])
    empty = Histogram()
    empty.record_many([])
    assert empty.count == 0


def test_copy_is_independent_and_equal() -> None:
    h = Histogram()
    h.record_many([1.0, 2.0, 3.0])
    c = h.copy()
    assert c.summary() == h.summary()
    c.record(100.0)
    assert h.count == 3 and h.max == 3.0
