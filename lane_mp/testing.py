"""Test doubles shipped with the library, so pure logic can be tested in milliseconds.

Everything that depends on time in lane_mp takes ``now`` as an argument; a :class:`FakeClock`
is the single source of that ``now`` in a test, moved only by the test itself.
"""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A monotonic clock that only moves when told to.

    ``now()`` has the signature of ``time.monotonic`` so it can be passed wherever a clock
    callable is expected. It refuses to go backwards: the code under test is entitled to assume
    a monotonic clock, and a test that rewinds it would be testing an impossible world.
    """

    __slots__ = ("_t",)

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        return self._t

    __call__ = now

    def advance(self, dt: float) -> float:
        """Move forward by ``dt`` seconds (>= 0) and return the new time."""
        if dt < 0:
            raise ValueError(f"a monotonic clock cannot go back (dt={dt})")
        self._t += dt
        return self._t

    def set(self, t: float) -> float:
        """Jump to absolute time ``t`` (>= the current time) and return it."""
        if t < self._t:
            raise ValueError(f"a monotonic clock cannot go back ({t} < {self._t})")
        self._t = float(t)
        return self._t

    def __repr__(self) -> str:
        return f"FakeClock({self._t})"
