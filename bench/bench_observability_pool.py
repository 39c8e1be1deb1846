"""No-op throughput with observability on, as a ratio of all off, through a real pool.

Run from the repository root: ``python bench/bench_observability_pool.py [--quick]``. Prints
numbers; asserts nothing (the goal is a ratio of at least 0.9).

- ``off``: ``LanePool(2)``, nothing attached.
- ``on``: ``LanePool(2, emitter=..., metrics=QueueMetrics.local(), alerts=...)`` with depth and
  latency alert rules, and one subscriber to every event drained by its own thread (the
  realistic consumer). Three events per command reach it: submitted, started (sent by the
  coordinator) and completed.
- ``quiet`` (reported for reference): the same, but nobody subscribes to the emitter (metrics and
  alerts do their per-command work, events cost nothing until someone subscribes).

Workloads (each a fresh pool; start-up and a warm-up of ``WARMUP`` commands are not timed):

- ``submit``: one caller thread submits ``N`` no-op commands (``abs(i)``) one by one, then waits
  for every result. This is the worst case: per-command observability cost is all overhead.
- ``map``: ``pool.map(abs, range(MAP_N))``: chunks are commands, so events and metrics are per
  chunk.

Repetitions are interleaved (off, on, quiet, quiet, on, off, ...) so drift on a shared machine
hits every mode alike; the ratio is reported as the median of per-pair ratios and as the ratio of
medians. Throughput on a shared 2-core machine swings with whatever else runs, so the caller
process's CPU time per command (``time.process_time``, all its threads) is printed too: that is
where observability work lands, and it is far less sensitive to neighbours.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import lane_mp  # noqa: F401
except ImportError:  # not installed: benchmark the checkout this file lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lane_mp import AlertManager, EventEmitter, LanePool, QueueMetrics

WORKERS = 2
N = 20_000
MAP_N = 400_000
WARMUP = 2_000
REPS = 7


class Observed:
    """Everything on; with ``subscribe``, a consumer thread that counts the events it reads."""

    def __init__(self, subscribe: bool = True) -> None:
        self.emitter = EventEmitter(capacity=1_000_000)
        self.sub = self.emitter.subscribe() if subscribe else None
        self.seen = 0
        self.thread = threading.Thread(target=self._consume, daemon=True) if subscribe else None
        if self.thread is not None:
            self.thread.start()
        self.alerts = AlertManager().with_queue_depth_alerts(50_000, 100_000).with_latency_alerts(60_000, 120_000)

    def _consume(self) -> None:
        assert self.sub is not None
        for _ in self.sub:
            self.seen += 1

    def pool_kwargs(self) -> dict[str, Any]:
        return {"emitter": self.emitter, "metrics": QueueMetrics.local(), "alerts": self.alerts}

    def close(self) -> int:
        if self.sub is None or self.thread is None:
            return 0
        self.sub.close()
        self.thread.join(10)
        return self.sub.dropped


def submit_loop(pool: LanePool, n: int) -> None:
    futs = [pool.submit(abs, i) for i in range(n)]
    for fut in futs:
        fut.result(120)


def map_all(pool: LanePool, n: int) -> None:
    for _ in pool.map(abs, range(n)):
        pass


def one_run(mode: str, body: Callable[[LanePool, int], None], n: int) -> tuple[float, float]:
    """(commands per second, caller CPU µs per command)."""
    obs = Observed(subscribe=mode == "on") if mode != "off" else None
    kwargs = obs.pool_kwargs() if obs else {}
    with LanePool(WORKERS, **kwargs) as pool:
        submit_loop(pool, WARMUP)
        cpu0, t0 = time.process_time(), time.perf_counter()
        body(pool, n)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if obs is not None:
        dropped = obs.close()
        if dropped:
            print(f"    (subscriber dropped {dropped} events)")
    return n / elapsed, cpu / n * 1e6


MODES = ("off", "on", "quiet")


def bench(name: str, body: Callable[[LanePool, int], None], n: int, reps: int) -> None:
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    pairs: dict[str, list[float]] = {"on": [], "quiet": []}
    for rep in range(reps):
        order = MODES if rep % 2 == 0 else MODES[::-1]
        runs = {mode: one_run(mode, body, n) for mode in order}
        got = {mode: rate for mode, (rate, _) in runs.items()}
        for mode, (rate, us) in runs.items():
            results[mode].append(rate)
            cpu[mode].append(us)
        for mode, ratios in pairs.items():
            ratios.append(got[mode] / got["off"])
        print(f"  {name:<7} rep {rep + 1}: off {got['off']:>10,.0f}/s  on {got['on']:>10,.0f}/s "
              f"({pairs['on'][-1]:.3f})  quiet {got['quiet']:>10,.0f}/s ({pairs['quiet'][-1]:.3f})  "
              f"caller CPU us/cmd off {runs['off'][1]:.2f} on {runs['on'][1]:.2f} "
              f"quiet {runs['quiet'][1]:.2f}", flush=True)
    off = statistics.median(results["off"])
    off_cpu = statistics.median(cpu["off"])
    for mode in ("on", "quiet"):
        med = statistics.median(results[mode])
        med_cpu = statistics.median(cpu[mode])
        print(f"{name:<7} {mode:<5}: median off {off:>10,.0f}/s  {mode} {med:>10,.0f}/s  "
              f"ratio of medians {med / off:.3f}  median pair ratio {statistics.median(pairs[mode]):.3f}  "
              f"best/best {max(results[mode]) / max(results['off']):.3f}  |  caller CPU/cmd "
              f"{off_cpu:.2f} -> {med_cpu:.2f} us (x{off_cpu / med_cpu:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions, smaller N")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", choices=("submit", "map"), default=None)
    args = ap.parse_args()
    reps = args.reps or (3 if args.quick else REPS)
    n, map_n = (N // 2, MAP_N // 2) if args.quick else (N, MAP_N)
    print(f"lane_mp observability overhead: {WORKERS} workers, {reps} interleaved repetitions, "
          f"python {sys.version.split()[0]}")
    if args.only in (None, "submit"):
        bench("submit", submit_loop, n, reps)
    if args.only in (None, "map"):
        bench("map", map_all, map_n, reps)


if __name__ == "__main__":
    main()
