"""Micro-benchmark of the scheduler's hot path (prints numbers, asserts nothing).

Measures enqueue + pick + finished per item in the common case the coordinator loop hits
most: one lane, no rate limit, no cost, no tenant, no deadline, a deep backlog, and picks that
fill a handful of free slots at a time (as completions trickle in). A second scenario adds
tenants, pinned partitions and deadlines so regressions off the fast path show up too.

    python bench/bench_scheduler.py [N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from lane_mp.config import Lane, LaneConfig, PriorityBoostConfig
from lane_mp.scheduling.scheduler import SchedItem, Scheduler

PARTITIONS = 8
SLOTS_PER_PARTITION = 4


def run_common(n: int) -> float:
    sched = Scheduler([Lane("default", 0, LaneConfig(min_concurrency=0, max_concurrency=None))])
    items = [SchedItem(i, 0) for i in range(n)]
    t0 = time.perf_counter()
    now = 0.0
    for it in items:
        sched.enqueue(it, now)
    free = [SLOTS_PER_PARTITION] * PARTITIONS
    done = 0
    while done < n:
        got = sched.pick(now, free)
        for it, p in got:
            sched.finished(it, now)
            free[p] += 1
        done += len(got)
    return (time.perf_counter() - t0) / n * 1e6


def run_mixed(n: int) -> float:
    lanes = [
        Lane("urgent", 0, LaneConfig(1, 8, boost=PriorityBoostConfig.standard())),
        Lane("bulk", 1, LaneConfig(min_concurrency=1, max_concurrency=None)),
    ]
    sched = Scheduler(lanes)
    items = [
        SchedItem(
            i, i % 2, priority=i % 5, submitted_at=0.0,
            deadline=1e9 if i % 3 == 0 else None,
            tenant=f"t{i % 7}", partition=(i % PARTITIONS) if i % 4 == 0 else None,
        )
        for i in range(n)
    ]
    t0 = time.perf_counter()
    now = 0.0
    for it in items:
        sched.enqueue(it, now)
    free = [SLOTS_PER_PARTITION] * PARTITIONS
    done = 0
    while done < n:
        now += 1e-3
        got = sched.pick(now, free)
        for it, p in got:
            sched.finished(it, now)
            free[p] += 1
        done += len(got)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    best = min(run_common(n) for _ in range(3))
    print(f"common case  (1 lane, plain items), {n} items: {best:.2f} us/item (enqueue+pick+finished)")
    best = min(run_mixed(n) for _ in range(3))
    print(f"mixed case (2 lanes, 7 tenants, pins, deadlines, boost), {n} items: {best:.2f} us/item")


if __name__ == "__main__":
    main()
