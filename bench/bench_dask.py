"""Round-trip latency and no-op throughput: lane_mp on a Dask LocalCluster vs local workers.

Run from the repository root: ``python bench/bench_dask.py [--quick]``. Prints numbers; asserts
nothing. Needs ``distributed`` (``pip install 'lane_mp[dask]'``).

Same machine, same number of workers (``WORKERS`` single-threaded Dask worker processes on a
``LocalCluster`` vs ``LanePool(WORKERS)``), best of ``ROUNDS``:

* ``latency``: one command at a time, ``submit(abs, i).result()``: p50 / p90 / p99 per command.
* ``idle``: the same with a 20 ms pause before each command (an isolated command; back to back,
  Dask's client sends at most one batch of messages per 10 ms, which paces a tight loop).
* ``submit``: ``N`` no-op commands submitted at once, all results awaited: commands per second.
  With Dask each command is one Dask task and at most one command per slot is in flight.
* ``map``: ``pool.map(abs, range(N))``: chunks are commands, so Dask sees few large tasks.
* ``dask raw``: the same through a plain ``distributed.Client`` in this process (no lane_mp), to
  show what Dask itself costs on this machine.
* ``dask slots=8``: the backend with ``DaskBackend(slots=8)`` on the same 2 worker threads: more
  commands in flight (throughput), at the price of Dask's queue (Dask priority = lane priority,
  not lane_mp's strict order) deciding among the 8.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import lane_mp  # noqa: F401
except ImportError:  # not installed: benchmark the checkout this file lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dask
import distributed

from lane_mp import LanePool
from lane_mp.backends.dask import DaskBackend

WORKERS = 2
ROUNDS = 3


def latency(submit: Callable[[int], Any], n: int, pause: float = 0.0) -> list[float]:
    out = []
    for i in range(n):
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        submit(i)
        out.append(time.perf_counter() - t0)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def best_rate(body: Callable[[int], None], n: int) -> float:
    best = 0.0
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        body(n)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def bench_pool(name: str, pool: LanePool, n_lat: int, n_tp: int) -> None:
    pool.submit(abs, -1).result(60)  # warm up
    lat = min((latency(lambda i: pool.submit(abs, i).result(60), n_lat) for _ in range(ROUNDS)),
              key=statistics.median)

    idle = latency(lambda i: pool.submit(abs, i).result(60), min(n_lat, 100), pause=0.02)

    def burst(n: int) -> None:
        for f in [pool.submit(abs, i) for i in range(n)]:
            f.result(300)

    def mapped(n: int) -> None:
        for _ in pool.map(abs, range(n)):
            pass

    print(f"{name:<14} latency p50 {pct(lat, .5) * 1e3:7.2f} ms  p90 {pct(lat, .9) * 1e3:7.2f} ms"
          f"  p99 {pct(lat, .99) * 1e3:7.2f} ms | idle p50 {pct(idle, .5) * 1e3:6.2f} ms"
          f" | submit {best_rate(burst, n_tp):9.0f}/s | map {best_rate(mapped, n_tp * 10):10.0f}/s", flush=True)


def bench_raw(client: Any, n_lat: int, n_tp: int) -> None:
    client.submit(abs, -1, pure=False).result()
    lat = min((latency(lambda i: client.submit(abs, i, pure=False).result(), n_lat) for _ in range(ROUNDS)),
              key=statistics.median)
    idle = latency(lambda i: client.submit(abs, i, pure=False).result(), min(n_lat, 100), pause=0.02)

    def burst(n: int) -> None:
        client.gather([client.submit(abs, i, pure=False) for i in range(n)])

    print(f"{'dask raw':<14} latency p50 {pct(lat, .5) * 1e3:7.2f} ms  p90 {pct(lat, .9) * 1e3:7.2f} ms"
          f"  p99 {pct(lat, .99) * 1e3:7.2f} ms | idle p50 {pct(idle, .5) * 1e3:6.2f} ms"
          f" | submit {best_rate(burst, n_tp):9.0f}/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer commands (a smoke run)")
    args = ap.parse_args()
    n_lat, n_tp = (50, 300) if args.quick else (300, 2000)
    print(f"{WORKERS} workers, best of {ROUNDS}; latency over {n_lat} commands, submit {n_tp}, map {n_tp * 10}")
    with LanePool(WORKERS) as pool:
        bench_pool("local", pool, n_lat * 10, n_tp * 10)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    try:
        with LanePool(backend=DaskBackend(cluster)) as pool:
            bench_pool("dask backend", pool, n_lat, n_tp)
        with LanePool(backend=DaskBackend(cluster, slots=8)) as pool:
            bench_pool("dask slots=8", pool, n_lat, n_tp)
        with distributed.Client(cluster, set_as_default=False) as client:
            bench_raw(client, n_lat, n_tp)
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
