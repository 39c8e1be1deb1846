"""The same lanes on a Dask cluster: ``LanePool(backend=DaskBackend(...))``.

Run it as is (it starts a two-worker ``LocalCluster``), or against a running scheduler::

    python examples/dask_cluster.py                       # a LocalCluster started here
    python examples/dask_cluster.py tcp://10.0.0.5:8786   # an existing cluster, e.g. started with
        DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 dask scheduler
        PYTHONPATH=examples dask worker tcp://10.0.0.5:8786 --nthreads 1 --nworkers 2

Dask workers import the functions by name, like local workers, so they live in a module the
workers can import (``dask_tasks.py``; on a real cluster, your package installed on every worker).
``allowed-failures: 0`` makes a lost worker lane_mp's to retry (``WorkerCrashed`` and the lane's
retry policy) instead of Dask re-running the task itself.
"""

import sys

import dask
from dask_tasks import count_primes, spin_forever  # next to this file: workers import it by name
from distributed import LocalCluster

from lane_mp import DaskBackend, Lane, LaneConfig, LanePool, Priority, RetryPolicy, TaskTimeout

LANES = [
    Lane("urgent", 0, LaneConfig(min_concurrency=0, max_concurrency=None, timeout=2.0)),
    Lane("batch", 5, LaneConfig(min_concurrency=0, max_concurrency=None,
                                retry=RetryPolicy.exponential(max_retries=2, initial_delay=0.1))),
]


def main(address: str | None) -> None:
    cluster = None
    if address is None:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        address = cluster.scheduler_address
    try:
        # DaskBackend also takes a distributed.Client or a cluster object (it uses its address).
        with LanePool(lanes=LANES, backend=DaskBackend(address)) as pool:
            print("slots (Dask worker threads):", pool.max_workers)
            batch = pool.map(count_primes, [300_000] * 20, lane="batch")  # a background backlog ...
            urgent = pool.submit(count_primes, 10_000, lane="urgent", priority=Priority.CRITICAL)
            print("urgent:", urgent.result())  # ... which urgent work overtakes
            print("batch total:", sum(batch))
            try:  # Dask cannot interrupt a task: its worker process is killed and restarted
                pool.submit(spin_forever, lane="urgent").result()
            except TaskTimeout as exc:
                print("timed out:", exc)
            print("still serving:", pool.submit(count_primes, 1_000, lane="urgent").result())
            print("lanes:", [(s["name"], s["completed"], s["failed"]) for s in pool.stats()["lanes"]])
    finally:
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
