"""Pure scheduling logic: no processes, no I/O, the clock passed in as ``now``.

The coordinator owns one :class:`Scheduler` and feeds it :class:`SchedItem` records; see
``scheduler.py`` for the rules it applies.
"""

from .ratelimit import SlidingWindow, TokenBucket, make_limiter
from .scheduler import LaneStats, SchedItem, Scheduler

__all__ = ["Scheduler", "SchedItem", "LaneStats", "TokenBucket", "SlidingWindow", "make_limiter"]
