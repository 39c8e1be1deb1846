"""Deadline-driven priority boosting as pure functions of time.

An item's *effective level* is ``max(0, priority - boost.boost_for(fraction_left))`` with
``fraction_left = (due - now) / (due - submitted_at)``, where ``due`` is the item's deadline or,
for items without one, ``submitted_at + boost.horizon`` (a soft deadline that boosts but never
fails the item).

Why event times instead of re-evaluating every item at every pick: the boost is a step function
of time that only ever grows, so an item's level changes at a handful of known instants (one per
step at most). The scheduler keeps items in per-level queues and moves an item when its next
instant passes, which is O(log n) per step instead of O(pending) per pick.

``next_promotion`` returns the first float time at which the formula above (evaluated exactly as
:func:`level_at` does, rounding included) yields a better level, so the event and the formula
can never disagree by an ulp and leave an item parked one level too low.
"""

from __future__ import annotations

import math

from ..config import PriorityBoostConfig

__all__ = ["due_time", "level_at", "next_promotion"]

# Bound on the doubling search that absorbs float rounding in next_promotion: 2**64 ulps covers
# any representable distance, and the loop normally exits after 0 or 1 steps.
_MAX_NUDGES = 64


def due_time(
    priority: int, deadline: float | None, submitted_at: float, boost: PriorityBoostConfig | None
) -> float | None:
    """The instant boosting aims at, or None when this item is never boosted."""
    if boost is None or not boost.steps or priority <= 0:
        return None
    if deadline is not None:
        return deadline
    if boost.horizon is not None:
        return submitted_at + boost.horizon
    return None


def level_at(priority: int, boost: PriorityBoostConfig, due: float, submitted_at: float, now: float) -> int:
    """Effective level at ``now`` (0 = best)."""
    span = due - submitted_at
    # A due time at or before submission means no time was ever left: full boost.
    fraction_left = (due - now) / span if span > 0 else 0.0
    level = priority - boost.boost_for(fraction_left)
    return level if level > 0 else 0


def next_promotion(
    priority: int, boost: PriorityBoostConfig, due: float, submitted_at: float, now: float, level: int
) -> float | None:
    """Earliest time > ``now`` at which the level drops below ``level``; None if it never will."""
    if level <= 0 or due - submitted_at <= 0:
        return None
    span = due - submitted_at
    target: float | None = None
    for frac, amount in boost.steps:
        if priority - amount < level:
            t = due - frac * span
            if target is None or t < target:
                target = t
    if target is None:
        return None
    if target <= now:
        target = math.nextafter(now, math.inf)
    step = math.ulp(target)
    for _ in range(_MAX_NUDGES):
        if level_at(priority, boost, due, submitted_at, target) < level:
            break
        target += step
        step *= 2
    return target
