"""Scalability controls: rate limits, deadline boosting, key partitions, cost units.

    python examples/scalability.py

1. a lane limited to N dispatches per second (token bucket; a token is spent only on dispatch)
2. priority boosting: a LOW command whose deadline nears overtakes NORMAL ones queued before it
3. ``key=`` pins related work to one worker (a stable hash), e.g. to reuse a per-key cache
4. ``capacity_units`` + ``cost``: heavy commands never run together past the pool's budget
"""

from __future__ import annotations

import os
import time

from lane_mp import (
    CostTooLarge,
    Lane,
    LaneConfig,
    LanePool,
    Priority,
    PriorityBoostConfig,
    RateLimitConfig,
)


def call_api(i: int) -> float:
    """Stands in for a call to a rate-limited service; returns when it ran."""
    return time.monotonic()


def step(tag: str, seconds: float = 0.0) -> tuple[str, float]:
    time.sleep(seconds)
    return tag, time.monotonic()


def whoami(key: str) -> tuple[str, int]:
    return key, os.getpid()


def heavy(units: int, seconds: float) -> tuple[int, float, float]:
    """Holds ``units`` of the pool's budget (say GB of RAM) for ``seconds``."""
    start = time.monotonic()
    time.sleep(seconds)
    return units, start, time.monotonic()


def rate_limits(rate: int, n: int) -> None:
    lanes = [Lane("api", 0, LaneConfig(0, None, rate_limit=RateLimitConfig.per_second(rate, burst=1)))]
    with LanePool(2, lanes=lanes) as pool:
        t0 = time.monotonic()
        ran = sorted(f.result(timeout=30) for f in [pool.submit(call_api, i) for i in range(n)])
        span = ran[-1] - ran[0]
        print(f"1. rate limit {rate}/s: {n} calls dispatched over {span:.2f} s "
              f"(= {(n - 1) / span:.1f}/s), all done after {time.monotonic() - t0:.2f} s")


def boosting() -> None:
    # one worker, so the queue order is the run order
    lanes = [Lane("work", 0, LaneConfig(0, None, boost=PriorityBoostConfig.standard()))]
    with LanePool(1, lanes=lanes) as pool:
        blocker = pool.submit(step, "blocker", 0.6)
        normal = [pool.submit(step, f"normal-{i}", 0.05) for i in range(4)]
        # LOW priority, but due in 0.7 s: by the time the blocker finishes, 10 % of its time is
        # left and the standard boost (+4 levels at 10 %) lifts it above NORMAL
        urgent = pool.submit(step, "low-with-deadline", priority=Priority.LOW, deadline=0.7)
        results = [f.result(timeout=30) for f in [blocker, *normal, urgent]]
    order = [tag for tag, t in sorted(results, key=lambda r: r[1])]
    print("2. boosting: run order", " -> ".join(order))


def partitions() -> None:
    with LanePool(2) as pool:
        futs = [pool.submit(whoami, f"user-{i % 3}", key=f"user-{i % 3}") for i in range(12)]
        seen: dict[str, set[int]] = {}
        for f in futs:
            key, pid = f.result(timeout=30)
            seen.setdefault(key, set()).add(pid)
    print("3. key partitions:", ", ".join(f"{k} -> worker pid {sorted(p)}" for k, p in sorted(seen.items())))


def cost_units(capacity: int) -> None:
    with LanePool(3, capacity_units=capacity) as pool:
        jobs = [(3, 0.2), (1, 0.1), (1, 0.1), (3, 0.2), (2, 0.1), (1, 0.1)]
        futs = [pool.submit(heavy, u, s, cost=u) for u, s in jobs]
        spans = [f.result(timeout=30) for f in futs]
        try:
            pool.submit(heavy, capacity + 1, 0.1, cost=capacity + 1)
        except CostTooLarge as exc:
            refused = type(exc).__name__
    # the most units ever held at once, from the start/end times the tasks reported
    events = sorted([(start, units) for units, start, _ in spans] + [(end, -units) for units, _, end in spans])
    held = peak = 0
    for _, delta in events:
        held += delta
        peak = max(peak, held)
    print(f"4. cost units: capacity {capacity}, costs {[u for u, _ in jobs]} -> at most {peak} units held at once; "
          f"cost {capacity + 1} refused at submit with {refused}")


if __name__ == "__main__":
    rate_limits(rate=20, n=21)
    boosting()
    partitions()
    cost_units(capacity=4)
