"""Durable no-op throughput as a ratio of non-durable, and recovery time of a big journal, through the pool.

Run from the repository root: ``python bench/bench_durable.py [--quick]``. Prints numbers; asserts nothing.

Throughput (same run, same machine, alternating rounds, best of ``ROUNDS``): ``N`` no-op commands
(``abs(i)``) submitted and all results awaited, with and without ``durable=True`` on a SQLite file.

* ``1 thread``: one caller thread calling ``submit`` in a loop. A durable ``submit`` returns only
  once its command is committed, so this measures the commit round trip per command (latency-bound).
* ``T threads``: ``T`` caller threads submitting at once: their commands share group commits.
* ``map``: ``pool.map`` (chunks are commands: one journal row per chunk).

Recovery: ``RECOVER`` durable commands are journaled through a pool whose lane is paused, the pool
is SIGKILLed, and a new pool opens the file: time to a running pool (load + checksum + re-enqueue,
reported by the pool itself and as wall time of ``LanePool(...)``), then time until all have run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

try:
    import lane_mp  # noqa: F401
except ImportError:  # not installed: benchmark the checkout this file lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lane_mp import LanePool

WORKERS = 2
ROUNDS = 3


def seq(pool: LanePool, n: int) -> None:
    futs = [pool.submit(abs, i) for i in range(n)]
    for fut in futs:
        fut.result(120)


def threaded(threads: int, body: Callable[[LanePool, int], None] = seq) -> Callable[[LanePool, int], None]:
    def run(pool: LanePool, n: int) -> None:
        per = n // threads

        def one() -> None:
            body(pool, per)

        ts = [threading.Thread(target=one) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    return run


def mapped(pool: LanePool, n: int) -> None:
    for _ in pool.map(abs, range(n)):
        pass


def rate(pool: LanePool, how: Callable[[LanePool, int], None], n: int) -> float:
    t0 = time.perf_counter()
    how(pool, n)
    return n / (time.perf_counter() - t0)


def throughput(n: int, tmp: Path) -> None:
    modes: dict[str, Callable[[LanePool, int], None]] = {
        "1 thread": seq,
        "4 threads": threaded(4),
        "16 threads": threaded(16),
        "map": mapped,
    }
    best: dict[tuple[str, bool], list[float]] = {}
    with LanePool(WORKERS) as plain, LanePool(WORKERS, storage=tmp / "bench.db", durable=True) as durable:
        for pool in (plain, durable):
            seq(pool, 2000)  # warm up: workers, page cache, SQLite file
        for _ in range(ROUNDS):
            for name, how in modes.items():
                for is_durable, pool in ((False, plain), (True, durable)):
                    best.setdefault((name, is_durable), []).append(rate(pool, how, n))
        stats = durable.storage_stats()
    print(f"\nthroughput: {n} no-op commands per round, {WORKERS} workers, best / median of {ROUNDS} rounds")
    print(f"{'mode':<12} {'non-durable/s':>14} {'durable/s':>12} {'ratio (best)':>13} {'ratio (median)':>15}")
    for name in modes:
        p, d = best[(name, False)], best[(name, True)]
        print(
            f"{name:<12} {max(p):>14,.0f} {max(d):>12,.0f} {max(d) / max(p):>13.2f} "
            f"{statistics.median(d) / statistics.median(p):>15.2f}"
        )
    done = stats["finished"]["done"]
    print(
        f"journal: {done:,} commands done, {stats['commits']:,} commits ({done / max(1, stats['commits']):.1f} per commit)"
    )


def recovery(n: int, tmp: Path) -> None:
    db = tmp / "recover.db"
    pool = LanePool(WORKERS, storage=db, durable=True)
    pool.pause_lane("query")
    t0 = time.perf_counter()
    threaded(8, submit_only)(pool, n)
    journal_s = time.perf_counter() - t0
    pool.kill()
    t0 = time.perf_counter()
    with LanePool(WORKERS, storage=db) as again:
        up_s = time.perf_counter() - t0
        report = again.recovery
        assert report is not None and len(report.recovered) == n, report and len(report.recovered)
        again.wait_recovered(600)
        all_s = time.perf_counter() - t0
    print(f"\nrecovery of {n:,} pending durable commands ({WORKERS} workers):")
    print(f"  journaling them through a paused pool (8 threads): {journal_s:.2f} s ({n / journal_s:,.0f}/s)")
    print(f"  load + verify + re-enqueue in the coordinator:     {report.seconds:.2f} s")
    print(f"  LanePool(storage=...) until ready:                 {up_s:.2f} s")
    print(f"  until every recovered command has run:            {all_s:.2f} s ({n / all_s:,.0f}/s)")


def submit_only(pool: LanePool, n: int) -> None:
    for i in range(n):
        pool.submit(abs, i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    args = ap.parse_args()
    n, recover_n = (5_000, 10_000) if args.quick else (20_000, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        throughput(n, Path(tmp))
        recovery(recover_n, Path(tmp))


if __name__ == "__main__":
    main()
