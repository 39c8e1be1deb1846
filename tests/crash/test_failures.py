"""Timeouts that kill, retries, dead letters, circuit breakers, cancellation, recycling."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import tasks
from lane_mp import (
    BrokenPool, CircuitBreakerConfig, CircuitOpen, DrainTimeout, Lane, LaneConfig, LanePool,
    RetryPolicy, TaskTimeout, WorkerCrashed,
)
from lane_mp.errors import PoolClosed

pytestmark = [pytest.mark.crash, pytest.mark.timeout(60)]


def test_timeout_kills_the_whole_worker_tree_and_replaces_it():
    with LanePool(2) as p:
        before = set(p.worker_pids)
        other = p.submit(tasks.sleep, 1.0, "other")
        t0 = time.monotonic()
        fut = p.submit(tasks.spawn_child_and_hang, timeout=0.5)
        time.sleep(0.2)
        hung_pid = next(pid for pid in before if psutil.Process(pid).children())
        grandchild = psutil.Process(hung_pid).children()[0]
        with pytest.raises(TaskTimeout) as info:
            fut.result(10)
        took = time.monotonic() - t0
        assert isinstance(info.value, TimeoutError) and info.value.timeout == 0.5
        assert 0.5 <= took < 3.0
        assert other.result(10) == "other"  # the other worker was untouched
        grandchild.wait(5)  # killed with its worker
        assert not psutil.pid_exists(hung_pid) or psutil.Process(hung_pid).status() == psutil.STATUS_ZOMBIE
        assert p.submit(tasks.add, 1, 2).result(10) == 3  # the replacement serves
        assert hung_pid not in p.worker_pids


def test_lane_default_timeout():
    lanes = [Lane("fast", 0, LaneConfig(0, None).with_timeout(0.3))]
    with LanePool(1, lanes=lanes) as p:
        with pytest.raises(TaskTimeout):
            p.submit(tasks.hang).result(10)
        assert p.submit(tasks.noop, 5).result(10) == 5


def test_retries_until_success_and_attempts_are_reported(tmp_path):
    counter = tmp_path / "n"
    lanes = [Lane("r", 0, LaneConfig(0, None, retry=RetryPolicy.fixed(3, delay=0.01)))]
    with LanePool(1, lanes=lanes) as p:
        fut = p.submit(tasks.fail_times, str(counter), 2)
        assert fut.result(10) == "ok" and fut.attempts == 3
        counter.unlink()
        fut = p.submit(tasks.fail_times, str(counter), 10)
        with pytest.raises(ValueError) as info:
            fut.result(10)
        assert fut.attempts == 4 and "failed after 4 attempts" in "".join(info.value.__notes__)
        assert counter.read_text() == "4"  # ran exactly max_retries + 1 times


def test_retry_on_filters_exception_types(tmp_path):
    counter = tmp_path / "n"
    lanes = [Lane("r", 0, LaneConfig(0, None, retry=RetryPolicy.fixed(3, delay=0.0, retry_on=(KeyError,))))]
    with LanePool(1, lanes=lanes) as p:
        with pytest.raises(ValueError):
            p.submit(tasks.fail_times, str(counter), 5).result(10)
        assert counter.read_text() == "1"


def test_crashes_retry_and_then_dead_letter(tmp_path):
    lanes = [Lane("r", 0, LaneConfig(0, None, retry=RetryPolicy.fixed(2, delay=0.0)))]
    with LanePool(1, lanes=lanes, dead_letters=5) as p:
        fut = p.submit(tasks.exit_now, 3, correlation_id="c-1")
        with pytest.raises(WorkerCrashed):
            fut.result(20)
        assert fut.attempts == 3
        deadline = time.monotonic() + 5
        while not p.dead_letters.list() and time.monotonic() < deadline:
            time.sleep(0.01)
        (letter,) = p.dead_letters.list()
        assert letter.fn == "tasks:exit_now" and letter.attempts == 3 and letter.lane == "r"
        assert letter.error_type == "WorkerCrashed" and letter.correlation_id == "c-1"
        p.submit(tasks.boom, "kept").exception(10)
        deadline = time.monotonic() + 5
        while len(p.dead_letters) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        raised = p.dead_letters.list()[1]
        assert "kept" in raised.error and "boom" in raised.traceback
        (replayed,) = p.dead_letters.replay(lambda d: d.fn == "tasks:boom")
        with pytest.raises(ValueError, match="kept"):
            replayed.result(10)


def test_circuit_breaker_opens_fails_fast_and_recovers():
    cfg = LaneConfig(0, None, circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown=0.5))
    with LanePool(1, lanes=[Lane("cb", 0, cfg)]) as p:
        for _ in range(2):
            p.submit(tasks.boom).exception(10)
        with pytest.raises(CircuitOpen):
            p.submit(tasks.noop, 1)
        time.sleep(0.6)
        assert p.submit(tasks.noop, 2).result(10) == 2  # half-open probe succeeds: closed
        assert p.submit(tasks.noop, 3).result(10) == 3


def test_cancel_running_command_by_killing_its_worker():
    with LanePool(1) as p:
        fut = p.submit(tasks.hang)
        time.sleep(0.3)
        assert p.cancel(fut, kill=True)
        with pytest.raises(BaseException) as info:
            fut.result(10)
        assert type(info.value).__name__ == "CancelledError"
        assert p.submit(tasks.noop, 1).result(10) == 1


def test_drain_waits_and_times_out():
    with LanePool(1) as p:
        futs = [p.submit(tasks.sleep, 0.05, i) for i in range(4)]
        p.drain(10)
        assert all(f.done() for f in futs)
        p.submit(tasks.sleep, 2.0)
        with pytest.raises(DrainTimeout) as info:
            p.drain(0.2)
        assert info.value.pending == 1


def test_terminate_cancels_and_stops_everything():
    p = LanePool(2)
    futs = [p.submit(tasks.hang) for _ in range(4)]
    time.sleep(0.3)
    p.terminate()
    assert all(f.cancelled() for f in futs), [(f, f.exception(0) if not f.cancelled() else None) for f in futs]
    with pytest.raises(PoolClosed):
        p.submit(tasks.noop)


def test_kill_cancels_pending_futures():
    p = LanePool(2)
    futs = [p.submit(tasks.hang) for _ in range(3)]
    time.sleep(0.2)
    p.kill()
    assert all(f.cancelled() for f in futs)


def test_coordinator_death_breaks_the_pool_promptly():
    p = LanePool(2)
    futs = [p.submit(tasks.sleep, 5) for _ in range(4)]
    time.sleep(0.2)
    t0 = time.monotonic()
    os.kill(p.coordinator_pid, signal.SIGKILL)
    for f in futs:
        with pytest.raises(BrokenPool):
            f.result(10)
    assert time.monotonic() - t0 < 3
    with pytest.raises(BrokenPool):
        p.submit(tasks.noop)
    p.shutdown()


def test_max_memory_per_child_recycles_without_crash_errors():
    with LanePool(1, max_memory_per_child=200 << 20) as p:
        pids = [p.submit(tasks.hog, 20).result(20) for _ in range(40)]
        assert len(set(pids)) >= 2
        stats = p.stats()
        assert stats["recycled"] >= 1 and stats["crashes"] == 0
