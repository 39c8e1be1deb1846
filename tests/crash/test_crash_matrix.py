"""Crash matrix: every stage of a command x every way it can fail.

Each case checks the named error the caller sees and that the pool keeps serving afterwards.
"""

from __future__ import annotations

import pytest

import tasks
from lane_mp import DecodeError, EncodeError, LanePool, TaskTimeout, WorkerCrashed


@pytest.fixture
def pool():
    p = LanePool(2)
    yield p
    p.shutdown(wait=True)


def _still_serving(pool: LanePool) -> None:
    assert list(pool.map(tasks.square, range(10))) == [x * x for x in range(10)]


CASES = [
    # (stage, failure, call, expected exception, message fragment)
    ("encode in caller", "raise", lambda p: p.submit(tasks.ident, tasks.Unpicklable()), EncodeError, "argument 0"),
    ("decode in worker", "raise", lambda p: p.submit(tasks.ident, tasks.FailsToLoad("raise")), DecodeError, "cannot load"),
    ("decode in worker", "os._exit", lambda p: p.submit(tasks.ident, tasks.FailsToLoad("exit")), WorkerCrashed, "exit code 7"),
    ("run", "raise", lambda p: p.submit(tasks.boom, "x"), ValueError, "x"),
    ("run", "sys.exit", lambda p: p.submit(tasks.sys_exit, 3), SystemExit, "3"),
    ("run", "os._exit", lambda p: p.submit(tasks.exit_now, 1), WorkerCrashed, "exit code 1"),
    ("run", "SIGSEGV", lambda p: p.submit(tasks.segfault), WorkerCrashed, "SIGSEGV"),
    ("run", "SIGKILL", lambda p: p.submit(tasks.sigkill_self), WorkerCrashed, "SIGKILL"),
    ("run", "hang", lambda p: p.submit(tasks.hang, timeout=0.5), TaskTimeout, "timeout of 0.5s"),
    ("encode result", "raise", lambda p: p.submit(tasks.unpicklable_result), EncodeError, "cannot be encoded"),
    ("encode result", "os._exit", lambda p: p.submit(tasks.result_dies_when_pickled), WorkerCrashed, "exit code 9"),
    ("decode in caller", "raise", lambda p: p.submit(tasks.result_fails_to_load_in_caller), DecodeError, "cannot load"),
]


@pytest.mark.crash
@pytest.mark.timeout(60)
@pytest.mark.parametrize("stage,failure,call,expected,fragment", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_crash_matrix(pool, stage, failure, call, expected, fragment):
    with pytest.raises(expected) as info:
        fut = call(pool)
        fut.result(30)
    assert fragment in str(info.value) or fragment in repr(info.value.args)
    if expected is WorkerCrashed:
        err = info.value
        assert err.pid > 0 and err.command_id > 0
        assert (err.exitcode is not None) or (err.signal_name is not None)
    _still_serving(pool)


@pytest.mark.crash
@pytest.mark.timeout(60)
def test_crash_fails_only_the_running_command(pool):
    slow = [pool.submit(tasks.sleep, 0.3, i) for i in range(4)]
    crash = pool.submit(tasks.exit_now, 1)
    with pytest.raises(WorkerCrashed):
        crash.result(30)
    assert [f.result(30) for f in slow] == [0, 1, 2, 3]


@pytest.mark.crash
@pytest.mark.timeout(60)
def test_worker_crashed_is_a_broken_process_pool(pool):
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        pool.submit(tasks.exit_now, 2).result(30)
    _still_serving(pool)


@pytest.mark.timeout(60)
def test_oversized_payloads_are_refused_both_ways():
    from lane_mp import PayloadTooLarge

    pytest.importorskip("numpy")
    with LanePool(1, max_payload_bytes=1 << 20) as p:
        with pytest.raises(PayloadTooLarge) as info:
            p.submit(tasks.ident, b"x" * (2 << 20))
        assert info.value.limit == 1 << 20
        with pytest.raises(PayloadTooLarge):
            p.submit(tasks.make_array, 1 << 18).result(20)  # a 2 MiB result
        assert p.submit(tasks.ident, b"y" * 1000).result(20) == b"y" * 1000
