"""Quick start: a process pool that is a drop-in ``concurrent.futures`` executor, with lanes.

    python examples/quickstart.py
"""

from __future__ import annotations

import math

from lane_mp import LanePool


def slow_sqrt(x: float) -> float:
    """Runs in a worker process (module-level, so workers can import it by name)."""
    return math.sqrt(x)


if __name__ == "__main__":
    with LanePool(2) as pool:  # 2 worker processes; default lanes system .. prompt
        fut = pool.submit(slow_sqrt, 2.0)  # a concurrent.futures.Future
        print("sqrt(2) =", round(fut.result(timeout=10), 6))

        urgent = pool.submit(slow_sqrt, 81.0, lane="system")  # lane 0: dispatched first
        print("urgent lane result:", urgent.result(timeout=10))

        print("map:", list(pool.map(slow_sqrt, [1, 4, 9, 16])))
    print("pool shut down cleanly")
