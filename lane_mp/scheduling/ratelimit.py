"""Per-lane dispatch rate limits: a token bucket and a sliding window, clock passed in.

Both limiters answer three questions about a monotonic time ``now`` (seconds):

* ``peek(now)``: could one command be dispatched now? (no side effect on the budget)
* ``try_acquire(now)``: same, and if yes spend one unit of budget. The scheduler calls this only
  for a command it actually hands out, so a lane whose commands are all blocked for another
  reason (cost, a busy partition) never burns its budget.
* ``time_until_available(now)``: seconds until ``peek`` turns true (0.0 if it already is), so the
  coordinator can sleep exactly that long instead of polling.

The three are consistent by construction: ``peek(now + time_until_available(now))`` is true.
Float rounding could break that by one ulp (the coordinator would wake, find the lane still
blocked, and sleep again for ~1e-16 s), so both limiters accept a budget within :data:`EPS` of a
whole unit.

Time that goes backwards (it should not: the clock is monotonic) is ignored rather than trusted,
so a bogus timestamp can never mint tokens.
"""

from __future__ import annotations

import math
from collections import deque

from ..config import RateLimitConfig

__all__ = ["TokenBucket", "SlidingWindow", "Limiter", "make_limiter", "EPS"]

# Tolerance on "one whole token" / "the oldest dispatch left the window". Far below any rate a
# user can configure meaningfully (1e-9 s), far above float noise on monotonic seconds.
EPS = 1e-9


class TokenBucket:
    """Up to ``burst`` dispatches at once, refilled continuously at ``rate`` per second.

    The bucket starts full: a freshly created pool may dispatch a burst straight away.
    """

    __slots__ = ("rate", "burst", "_tokens", "_last")

    def __init__(self, rate: float, burst: int) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def _refill(self, now: float) -> float:
        last = self._last
        if last is None:
            self._last = now
        elif now > last:
            tokens = self._tokens + (now - last) * self.rate
            self._tokens = tokens if tokens < self.burst else float(self.burst)
            self._last = now
        return self._tokens

    def peek(self, now: float) -> bool:
        return self._refill(now) >= 1.0 - EPS

    def try_acquire(self, now: float) -> bool:
        tokens = self._refill(now)
        if tokens < 1.0 - EPS:
            return False
        # max(): a token accepted within EPS must not leave a negative balance behind.
        self._tokens = max(0.0, tokens - 1.0)
        return True

    def time_until_available(self, now: float) -> float:
        missing = 1.0 - self._refill(now)
        return 0.0 if missing <= EPS else missing / self.rate

    @property
    def tokens(self) -> float:
        """Tokens as of the last call (for stats and tests; does not refill)."""
        return self._tokens

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst}, tokens={self._tokens:.3f})"


class SlidingWindow:
    """At most ``limit`` dispatches in any ``window`` seconds (an exact sliding log).

    It keeps one timestamp per dispatch in the window, so memory is O(limit); that is the price of
    being exact (a fixed-window counter lets 2x the limit through across a window edge).
    A dispatch at ``t`` stops counting at ``t + window``.
    """

    __slots__ = ("limit", "window", "_log")

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        if not window > 0:
            raise ValueError(f"window must be > 0, got {window!r}")
        self.limit = int(limit)
        self.window = float(window)
        self._log: deque[float] = deque()

    def _prune(self, now: float) -> int:
        log = self._log
        cutoff = now - self.window + EPS
        while log and log[0] <= cutoff:
            log.popleft()
        return len(log)

    def peek(self, now: float) -> bool:
        return self._prune(now) < self.limit

    def try_acquire(self, now: float) -> bool:
        if self._prune(now) >= self.limit:
            return False
        log = self._log
        # Keep the log sorted even if a caller hands in an older timestamp.
        log.append(now if not log or now >= log[-1] else log[-1])
        return True

    def time_until_available(self, now: float) -> float:
        if self._prune(now) < self.limit:
            return 0.0
        # The entry that must leave before one more fits is the (len - limit + 1)-th oldest;
        # with len == limit (the normal case) that is the oldest.
        log = self._log
        oldest = log[len(log) - self.limit]
        return max(0.0, oldest + self.window - now)

    def __repr__(self) -> str:
        return f"SlidingWindow(limit={self.limit}, window={self.window}, used={len(self._log)})"


Limiter = TokenBucket | SlidingWindow


def make_limiter(cfg: RateLimitConfig | None) -> TokenBucket | SlidingWindow | None:
    """Build the limiter a lane's :class:`RateLimitConfig` asks for; ``None`` means unlimited.

    Token bucket: ``burst`` defaults to ``max(1, ceil(rate))`` (one second's worth), so
    ``per_second(10)`` may fire 10 at once and then 10/s. Sliding window: the limit is
    ``max(1, round(rate * window))`` (``per_minute(30)`` -> 30 per 60 s); ``burst`` does not apply.
    """
    if cfg is None or cfg.rate is None:
        return None
    rate = cfg.rate
    if cfg.algorithm == "sliding_window":
        return SlidingWindow(max(1, round(rate * cfg.window)), cfg.window)
    burst = cfg.burst if cfg.burst is not None else max(1, math.ceil(rate))
    return TokenBucket(rate, burst)
