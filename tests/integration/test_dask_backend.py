"""The Dask backend against a real ``distributed.LocalCluster`` (2 worker processes, 1 thread each).

Everything above dispatch is the coordinator's own code, so these tests check what the backend
changes: results and exceptions come back, lane priorities still decide the order, timeouts kill
the Dask worker and fail with TaskTimeout, a killed Dask worker fails only its command with
WorkerCrashed, and retries / dead letters behave as with local workers.

Clusters are created with ``distributed.scheduler.allowed-failures = 0`` (what the README asks of
a user's scheduler): otherwise Dask itself re-runs a task whose worker died. Tests that kill or
restart a Dask worker get a cluster of their own (``fresh_cluster``): the nanny starts a new
worker process, which the leak check (tests/conftest.py) would rightly flag on a shared cluster.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

distributed = pytest.importorskip(
    "distributed", reason="the Dask backend tests need `distributed` (pip install 'lane_mp[dask]')"
)

import dask
import tasks

from lane_mp import (
    DaskBackend,
    Lane,
    LaneConfig,
    LanePool,
    PayloadTooLarge,
    RetryPolicy,
    TaskTimeout,
    WorkerCrashed,
)
from lane_mp.protocol.codec import RemoteTraceback

pytestmark = [
    pytest.mark.timeout(60),
    # the scheduler's HTTP server (health checks) wants port 8787 even without a dashboard
    pytest.mark.filterwarnings("ignore:Port 8787 is already in use"),
]


def _cluster(**kwargs):
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, **kwargs
        )


@pytest.fixture(scope="module")
def cluster():
    c = _cluster(resources={"units": 2})
    yield c
    c.close(timeout=20)


@pytest.fixture
def fresh_cluster():
    c = _cluster()
    client = distributed.Client(c.scheduler_address, set_as_default=False)
    yield c, client
    client.close()
    c.close(timeout=20)


def _lanes(**specs: tuple[int, LaneConfig]) -> list[Lane]:
    return [Lane(name, prio, cfg) for name, (prio, cfg) in specs.items()]


def _running_on(dask_scheduler=None, cid: int = 0):
    """On the scheduler: pid of the worker processing lane_mp command ``cid`` (keys end -cid-attempt-n)."""
    for key, ts in dask_scheduler.tasks.items():
        if str(key).startswith("lane_mp-") and str(key).rsplit("-", 3)[1] == str(cid) and ts.processing_on:
            return ts.processing_on.pid
    return None


def _kill_worker_running(client, cid: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = client.run_on_scheduler(_running_on, cid=cid)
        if pid:
            time.sleep(0.1)  # let the task start
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.02)
    raise AssertionError(f"command {cid} never ran on a Dask worker")


def _worker_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


def test_results_exceptions_and_map(cluster):
    with LanePool(backend=DaskBackend(cluster)) as p:
        assert p.max_workers == 2  # one slot per Dask worker thread
        assert p.submit(tasks.add, 2, b=3).result(20) == 5
        with pytest.raises(ValueError, match="bad thing") as info:
            p.submit(tasks.boom, "bad thing").result(20)
        assert isinstance(info.value.__cause__, RemoteTraceback) and "boom" in str(info.value.__cause__)
        args = (1, 2.5, "s", None, b"bytes", (1, (2, 3)), {1, 2}, {3: "int key"})
        out_args, out_kwargs = p.submit(tasks.echo, *args, kw=(1, 2)).result(20)
        assert out_args == args and [type(a) for a in out_args] == [type(a) for a in args]
        assert out_kwargs == {"kw": (1, 2)}
        assert list(p.map(tasks.square, range(50), chunksize=7)) == [x * x for x in range(50)]
        assert p.submit(tasks.pid).result(20) != os.getpid()


def test_without_an_address_the_coordinator_runs_and_closes_its_own_cluster():
    with LanePool(backend=DaskBackend(slots=2)) as p:  # a LocalCluster of 2 workers, in the coordinator
        assert p.max_workers == 2
        assert p.submit(tasks.add, 1, 2).result(30) == 3
    # the leak check (conftest) then finds none of its processes


def test_payloads_travel_inline_up_to_the_ring_limit(cluster):
    # ring 64 KiB: records up to 32 KiB, minus 16 KiB headroom for the Submit's other fields
    with LanePool(backend=DaskBackend(cluster.scheduler_address), ring_capacity=1 << 16) as p:
        assert p.submit(tasks.ident, b"x" * 12_000).result(20) == b"x" * 12_000
        with pytest.raises(PayloadTooLarge):
            p.submit(tasks.ident, b"x" * 20_000)
        with pytest.raises(PayloadTooLarge):  # a result over the limit fails as data, not a crash
            p.submit(tasks.make_array, 4_000).result(20)
        assert p.submit(tasks.add, 1, 1).result(20) == 2


def test_cost_goes_out_as_a_dask_resource(cluster):
    # cost is admitted by lane_mp (capacity_units, as locally) and charged to a Dask resource,
    # which places the command on a worker that has the units (each worker here declares 2)
    backend = DaskBackend(cluster, resources={"units": 1}, cost_resource="units")
    with LanePool(backend=backend, capacity_units=4) as p:
        assert [p.submit(tasks.add, i, cost=1).result(20) for i in range(3)] == [0, 1, 2]
        # 3 units: admitted (3 <= 4) but no single worker has them, so Dask never starts it (the
        # resource was passed); lane_mp's timeout still applies and cancels it (no worker to kill)
        with pytest.raises(TaskTimeout):
            p.submit(tasks.add, 1, 1, cost=3, timeout=0.5).result(20)
        assert p.submit(tasks.add, 2, 2, cost=1).result(20) == 4


def test_urgent_lane_overtakes_a_backlog(cluster, tmp_path):
    log = tmp_path / "log"
    lanes = _lanes(hi=(0, LaneConfig(0, None)), lo=(5, LaneConfig(0, None)))
    with LanePool(backend=DaskBackend(cluster), lanes=lanes) as p:
        blockers = [p.submit(tasks.sleep, 0.5, lane="lo") for _ in range(2)]  # both slots busy
        time.sleep(0.2)
        low = [p.submit(tasks.log_run, str(log), f"lo{i}", 0.3, lane="lo") for i in range(6)]
        high = [p.submit(tasks.log_run, str(log), f"hi{i}", 0.3, lane="hi") for i in range(3)]
        for f in high:
            f.result(20)
        assert sum(f.done() for f in low) <= 1  # the backlog waited (lo0 may run next to hi2)
        for f in [*blockers, *low]:
            f.result(20)
    order = log.read_text().split()
    assert set(order[:2]) == {"hi0", "hi1"}
    assert order.index("hi2") < order.index("lo1")
    assert sorted(order) == sorted([f"hi{i}" for i in range(3)] + [f"lo{i}" for i in range(6)])


def test_retries_and_dead_letters_as_locally(cluster, tmp_path):
    counter = tmp_path / "n"
    lanes = _lanes(r=(0, LaneConfig(0, None, retry=RetryPolicy.fixed(2, delay=0.01))))
    with LanePool(backend=DaskBackend(cluster), lanes=lanes, dead_letters=5) as p:
        fut = p.submit(tasks.fail_times, str(counter), 2)
        assert fut.result(20) == "ok" and fut.attempts == 3
        fut = p.submit(tasks.boom, "kept", correlation_id="c-1")
        with pytest.raises(ValueError, match="kept"):
            fut.result(20)
        assert fut.attempts == 3
        deadline = time.monotonic() + 5
        while not p.dead_letters.list() and time.monotonic() < deadline:
            time.sleep(0.01)
        (letter,) = p.dead_letters.list()
        assert letter.fn == "tasks:boom" and letter.attempts == 3 and letter.lane == "r"
        assert letter.correlation_id == "c-1" and "boom" in letter.traceback
        (replayed,) = p.dead_letters.replay()
        with pytest.raises(ValueError, match="kept"):
            replayed.result(20)


def test_timeout_kills_the_dask_worker_and_the_cluster_keeps_serving(fresh_cluster):
    cluster, client = fresh_cluster
    before = _worker_pids(client)
    lanes = _lanes(q=(0, LaneConfig(0, None)),
                   t=(1, LaneConfig(0, None, timeout=0.4, retry=RetryPolicy.fixed(1, delay=0.0))))
    with LanePool(backend=DaskBackend(cluster), lanes=lanes) as p:
        other = p.submit(tasks.sleep, 1.0, "other", lane="q")
        t0 = time.monotonic()
        fut = p.submit(tasks.hang, timeout=0.5, lane="q")
        with pytest.raises(TaskTimeout) as info:
            fut.result(20)
        assert isinstance(info.value, TimeoutError) and info.value.timeout == 0.5
        assert 0.5 <= time.monotonic() - t0 < 3.0
        assert other.result(20) == "other"  # the other worker was untouched
        client.wait_for_workers(2, timeout=20)
        after = _worker_pids(client)
        (killed,) = before - after  # exactly the worker that ran `hang` was replaced
        assert len(after - before) == 1
        assert info.value.pid == killed  # the error names the Dask worker's pid
        assert p.submit(tasks.add, 1, 2, lane="q").result(20) == 3
        # the lane's timeout and retry policy apply as locally: two attempts, two kills
        fut = p.submit(tasks.hang, lane="t")
        with pytest.raises(TaskTimeout):
            fut.result(30)
        assert fut.attempts == 2
        client.wait_for_workers(2, timeout=20)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the held replacement slot comes back with its worker
            t0 = time.monotonic()
            pair = [p.submit(tasks.sleep, 0.4, lane="q") for _ in range(2)]
            for f in pair:
                f.result(20)
            if time.monotonic() - t0 < 0.75:
                break
        else:
            pytest.fail("both slots never ran in parallel again after the restarts")


def test_killed_dask_worker_fails_only_its_command(fresh_cluster):
    cluster, client = fresh_cluster
    lanes = _lanes(q=(0, LaneConfig(0, None)),
                   r=(1, LaneConfig(0, None, retry=RetryPolicy.fixed(1, delay=0.0))))
    with LanePool(backend=DaskBackend(cluster), lanes=lanes) as p:
        victim = p.submit(tasks.sleep, 30, "victim", lane="q")
        other = p.submit(tasks.sleep, 1.5, "other", lane="q")
        killed = _kill_worker_running(client, victim.command_id)
        with pytest.raises(WorkerCrashed) as info:
            victim.result(20)
        assert info.value.command_id == victim.command_id and info.value.pid == killed
        assert other.result(20) == "other"
        assert p.submit(tasks.add, 2, 2, lane="q").result(20) == 4
        # with a retry policy the crash is retried (on a live worker) and succeeds
        client.wait_for_workers(2, timeout=20)
        again = p.submit(tasks.sleep, 1.0, "again", lane="r")
        _kill_worker_running(client, again.command_id)
        assert again.result(30) == "again" and again.attempts == 2
        assert p.stats()["crashes"] == 2
