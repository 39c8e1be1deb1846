"""Interpreter exit, caller death and Ctrl-C leave no process and no segment behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from lane_mp.ipc.segments import list_segments

ROOT = Path(__file__).resolve().parents[2]


def _script(body: str) -> list[str]:
    code = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        import tasks
        from lane_mp import LanePool
        if __name__ == "__main__":
        """
    ) + textwrap.indent(textwrap.dedent(body), "    ")
    return [sys.executable, "-c", code]


def _gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def _pool_pids(proc: subprocess.Popen) -> tuple[str, list[int]]:
    line = proc.stdout.readline().decode().split()
    return line[0], [int(x) for x in line[1:]]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_interpreter_exit_without_shutdown(method):
    body = f"""
    pool = LanePool(2, mp_context={method!r})
    print(pool._token, pool.coordinator_pid, *pool.worker_pids, flush=True)
    futs = [pool.submit(tasks.sleep, 0.05, i) for i in range(10)]
    # no shutdown: the exit hook must finish the work and clean up
    """
    proc = subprocess.Popen(_script(body), stdout=subprocess.PIPE, cwd=ROOT)
    token, pids = _pool_pids(proc)
    assert proc.wait(30) == 0
    assert _gone(pids)
    assert list_segments(f"lmp_{token}") == []


@pytest.mark.timeout(60)
def test_caller_sigkill_leaves_no_orphans():
    body = """
    pool = LanePool(2)
    futs = [pool.submit(tasks.hang) for i in range(2)]
    time.sleep(0.3)
    print(pool._token, pool.coordinator_pid, *pool.worker_pids, flush=True)
    time.sleep(60)
    """
    proc = subprocess.Popen(_script(body), stdout=subprocess.PIPE, cwd=ROOT)
    token, pids = _pool_pids(proc)
    proc.kill()
    proc.wait(10)
    assert _gone(pids), [p for p in pids if psutil.pid_exists(p)]
    deadline = time.monotonic() + 5
    while list_segments(f"lmp_{token}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list_segments(f"lmp_{token}") == []


@pytest.mark.timeout(60)
def test_ctrl_c_in_the_caller_leaves_no_orphans():
    body = """
    pool = LanePool(2)
    print(pool._token, pool.coordinator_pid, *pool.worker_pids, flush=True)
    try:
        while True:
            pool.submit(tasks.sleep, 0.01).result()
    except KeyboardInterrupt:
        pool.shutdown(cancel_futures=True)
        sys.exit(130)
    """
    proc = subprocess.Popen(_script(body), stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True)
    token, pids = _pool_pids(proc)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # like a terminal: the whole process group gets it
    assert proc.wait(20) == 130
    assert _gone(pids)
    assert list_segments(f"lmp_{token}") == []


@pytest.mark.timeout(60)
def test_ctrl_c_without_handler_still_cleans_up():
    body = """
    pool = LanePool(2)
    print(pool._token, pool.coordinator_pid, *pool.worker_pids, flush=True)
    futs = [pool.submit(tasks.sleep, 0.2) for _ in range(5)]
    time.sleep(60)
    """
    proc = subprocess.Popen(_script(body), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                            start_new_session=True)
    token, pids = _pool_pids(proc)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(20)
    assert _gone(pids)
    assert list_segments(f"lmp_{token}") == []
