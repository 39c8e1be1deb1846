"""Basic usage: the six default lanes, per-lane stats, pausing a lane, and shutting down.

    python examples/basic_usage.py [N]      # N tasks per lane (default 20)

A pool built with ``LanePool()`` has six lanes, highest priority first: system 0, control 1,
query 2 (the default for ``submit``), session 3, skill 4, prompt 5. When workers are busy, the
free slot always goes to the best lane that has work.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import as_completed

from lane_mp import LanePool


def work(n: int) -> int:
    """A small CPU task (module-level: workers import it by name)."""
    return sum(i * i for i in range(n))


def print_stats(pool: LanePool) -> None:
    stats = pool.stats()
    print(f"  {'lane':8} {'prio':>4} {'max':>4} {'pending':>8} {'active':>7} {'done':>5} {'failed':>6}")
    for lane in stats["lanes"]:
        print(
            f"  {lane['name']:8} {lane['priority']:>4} {lane['max_concurrency']:>4} {lane['pending']:>8}"
            f" {lane['active']:>7} {lane['completed']:>5} {lane['failed']:>6}"
        )
    print(f"  workers: {[w['pid'] for w in stats['workers']]}, completed in total: {stats['completed']}")


def main(per_lane: int) -> None:
    pool = LanePool(2)  # 2 worker processes; lanes=None gives the six defaults
    try:
        print("lanes:", ", ".join(f"{lane.name}({lane.priority})" for lane in pool.lanes))

        # submit() returns a concurrent.futures.Future; lane= picks the lane
        futures = [pool.submit(work, 20_000, lane=lane) for lane in ("query", "prompt") for _ in range(per_lane)]
        total = sum(f.result(timeout=30) for f in as_completed(futures, timeout=60))
        print(f"{len(futures)} tasks in lanes query and prompt, checksum {total}")

        # pause a lane: its commands wait (queued, not lost) until it is resumed
        pool.pause_lane("prompt")
        held = [pool.submit(work, 1_000, lane="prompt") for _ in range(3)]
        time.sleep(0.2)
        print("prompt paused: held tasks done?", [f.done() for f in held])
        pool.resume_lane("prompt")
        print("prompt resumed: results", [f.result(timeout=10) for f in held])

        print("stats:")
        print_stats(pool)
    finally:
        # shutdown(wait=True) finishes queued work first; cancel_futures=True would drop it.
        pool.shutdown(wait=True)
    print("shut down: no worker process and no shared-memory segment is left")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
