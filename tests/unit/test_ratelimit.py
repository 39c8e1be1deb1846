"""Token bucket and sliding window, driven by a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lane_mp.config import RateLimitConfig
from lane_mp.scheduling.ratelimit import SlidingWindow, TokenBucket, make_limiter
from lane_mp.testing import FakeClock


def drain(limiter: TokenBucket | SlidingWindow, now: float) -> int:
    n = 0
    while limiter.try_acquire(now):
        n += 1
        assert n < 10_000
    return n


class TestTokenBucket:
    def test_starts_full_and_allows_a_burst(self) -> None:
        tb = TokenBucket(rate=2.0, burst=5)
        assert tb.peek(0.0)
        assert drain(tb, 0.0) == 5
        assert not tb.peek(0.0)

    def test_refills_at_rate_and_caps_at_burst(self) -> None:
        clock = FakeClock(100.0)
        tb = TokenBucket(rate=4.0, burst=3)
        assert drain(tb, clock.now()) == 3
        clock.advance(0.25)
        assert drain(tb, clock.now()) == 1
        clock.advance(0.6)  # 2.4 tokens
        assert drain(tb, clock.now()) == 2
        clock.advance(3600)
        assert drain(tb, clock.now()) == 3

    def test_time_until_available(self) -> None:
        tb = TokenBucket(rate=4.0, burst=1)
        assert tb.time_until_available(0.0) == 0.0
        assert tb.try_acquire(0.0)
        assert tb.time_until_available(0.0) == pytest.approx(0.25)
        assert tb.time_until_available(0.1) == pytest.approx(0.15)
        assert not tb.peek(0.2499)
        assert tb.peek(0.25)

    def test_peek_does_not_spend(self) -> None:
        tb = TokenBucket(rate=1.0, burst=1)
        for _ in range(5):
            assert tb.peek(0.0)
        assert tb.try_acquire(0.0)
        assert not tb.try_acquire(0.0)

    def test_time_going_backwards_mints_nothing(self) -> None:
        tb = TokenBucket(rate=1.0, burst=1)
        assert tb.try_acquire(10.0)
        assert not tb.try_acquire(5.0)
        assert not tb.try_acquire(10.5)
        assert tb.try_acquire(11.0)

    @pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
    def test_rejects_bad_parameters(self, rate: float, burst: int) -> None:
        with pytest.raises(ValueError):
            TokenBucket(rate, burst)


class TestSlidingWindow:
    def test_at_most_limit_per_window(self) -> None:
        sw = SlidingWindow(limit=3, window=10.0)
        assert sw.try_acquire(0.0)
        assert sw.try_acquire(4.0)
        assert sw.try_acquire(5.0)
        assert not sw.try_acquire(9.99)
        assert sw.time_until_available(9.0) == pytest.approx(1.0)
        assert sw.try_acquire(10.0)  # the dispatch at 0.0 left the window
        assert not sw.try_acquire(13.0)
        assert sw.try_acquire(14.0)

    def test_no_burst_across_a_window_edge(self) -> None:
        # A fixed-window counter would allow 2 * limit around t=1.0; the sliding log does not.
        sw = SlidingWindow(limit=5, window=1.0)
        assert drain(sw, 0.99) == 5
        assert drain(sw, 1.01) == 0
        assert drain(sw, 1.99) == 5

    def test_peek_does_not_spend(self) -> None:
        sw = SlidingWindow(limit=1, window=1.0)
        assert sw.peek(0.0) and sw.peek(0.0)
        assert sw.try_acquire(0.0)
        assert not sw.peek(0.5)
        assert sw.time_until_available(0.5) == pytest.approx(0.5)

    @pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (1, 0.0), (1, -1.0)])
    def test_rejects_bad_parameters(self, limit: int, window: float) -> None:
        with pytest.raises(ValueError):
            SlidingWindow(limit, window)


class TestMakeLimiter:
    def test_unlimited(self) -> None:
        assert make_limiter(None) is None
        assert make_limiter(RateLimitConfig.unlimited()) is None

    def test_token_bucket_default_burst_is_one_second_of_rate(self) -> None:
        tb = make_limiter(RateLimitConfig.per_second(2.5))
        assert isinstance(tb, TokenBucket) and tb.rate == 2.5 and tb.burst == 3
        slow = make_limiter(RateLimitConfig.per_minute(6))
        assert isinstance(slow, TokenBucket) and slow.burst == 1 and slow.rate == pytest.approx(0.1)

    def test_token_bucket_explicit_burst(self) -> None:
        tb = make_limiter(RateLimitConfig.per_second(10, burst=2))
        assert isinstance(tb, TokenBucket) and tb.burst == 2

    def test_sliding_window_limit(self) -> None:
        sw = make_limiter(RateLimitConfig.per_minute(30, algorithm="sliding_window"))
        assert isinstance(sw, SlidingWindow) and sw.limit == 30 and sw.window == 60.0
        tiny = make_limiter(RateLimitConfig(rate=0.01, algorithm="sliding_window", window=1.0))
        assert isinstance(tiny, SlidingWindow) and tiny.limit == 1


steps = st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=1, max_size=40)


@given(
    st.floats(0.01, 1000.0), st.integers(1, 20), steps,
)
def test_token_bucket_wakeup_is_exact_and_rate_holds(rate: float, burst: int, gaps: list[float]) -> None:
    tb = TokenBucket(rate, burst)
    clock = FakeClock(1000.0)
    start = clock.now()
    granted = 0
    for gap in gaps:
        clock.advance(gap)
        granted += drain(tb, clock.now())
        wait = tb.time_until_available(clock.now())
        assert wait > 0
        if gap > 2.5:  # sometimes sleep exactly as told: that must be enough
            clock.advance(wait)
            assert tb.peek(clock.now())
    assert granted <= burst + rate * (clock.now() - start) + 1e-6


@given(st.integers(1, 10), st.floats(0.01, 100.0), steps)
def test_sliding_window_never_exceeds_limit_in_any_window(
    limit: int, window: float, gaps: list[float]
) -> None:
    sw = SlidingWindow(limit, window)
    clock = FakeClock()
    times: list[float] = []
    for gap in gaps:
        clock.advance(gap * window / 2)
        n = drain(sw, clock.now())
        times += [clock.now()] * n
        wait = sw.time_until_available(clock.now())
        assert wait > 0
        if gap > 2.5:
            clock.advance(wait)
            assert sw.peek(clock.now())
    for t in times:
        in_window = [u for u in times if t <= u < t + window * (1 - 1e-9)]
        assert len(in_window) <= limit
