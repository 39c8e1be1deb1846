"""Circuit breaker per lane: a pure state machine with the clock passed in.

closed --(N consecutive failures)--> open --(cooldown elapsed)--> half-open
half-open --(success)--> closed;  half-open --(failure)--> open again

The coordinator owns one per lane and publishes ``open_until`` in the control segment, so the
caller's ``submit`` fails fast with :class:`CircuitOpen` without a round trip.
"""

from __future__ import annotations

from ..config import CircuitBreakerConfig

__all__ = ["CircuitBreaker", "CLOSED", "OPEN", "HALF_OPEN"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(self, config: CircuitBreakerConfig) -> None:
        self.config = config
        self.failures = 0
        self.opened_at: float | None = None
        self.trips = 0

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return CLOSED
        if now - self.opened_at >= self.config.cooldown:
            return HALF_OPEN
        return OPEN

    def open_until(self) -> float | None:
        return None if self.opened_at is None else self.opened_at + self.config.cooldown

    def allows(self, now: float) -> bool:
        return self.state(now) != OPEN

    def record(self, ok: bool, now: float) -> bool:
        """Record an outcome; True when the state changed (the caller republishes it)."""
        before = self.state(now)
        if ok:
            self.failures = 0
            self.opened_at = None
        else:
            self.failures += 1
            if before == HALF_OPEN or self.failures >= self.config.failure_threshold:
                if before != OPEN:
                    self.trips += 1
                self.opened_at = now
        return self.state(now) != before
