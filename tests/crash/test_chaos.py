"""Chaos: short commands with retries while workers are SIGKILLed at random.

Every future resolves exactly once (a result or a named error), no command runs more often
than its retry policy allows, and nothing is left behind.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time

import pytest

import tasks
from lane_mp import Lane, LaneConfig, LanePool, RetryPolicy, WorkerCrashed

N = 2000
MAX_RETRIES = 4


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_chaos_every_future_resolves_exactly_once(tmp_path):
    log = tmp_path / "runs.log"
    lanes = [Lane("chaos", 0, LaneConfig(0, None, retry=RetryPolicy.fixed(MAX_RETRIES, delay=0.005)))]
    stop = threading.Event()
    kills = 0
    with LanePool(2, lanes=lanes) as pool:

        def killer() -> None:
            nonlocal kills
            rng = random.Random(7)
            while not stop.is_set():
                time.sleep(rng.uniform(0.02, 0.08))
                try:
                    pids = [w["pid"] for w in pool.stats()["workers"]]
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills += 1
                except Exception:
                    pass

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        futs = [pool.submit(tasks.log_run, str(log), i, 0.001) for i in range(N)]
        outcomes = collections.Counter()
        resolved = 0
        for i, fut in enumerate(futs):
            try:
                assert fut.result(60) == i
                outcomes["ok"] += 1
            except WorkerCrashed:
                outcomes["crashed"] += 1
            resolved += 1
        stop.set()
        thread.join(5)
    assert resolved == N and sum(outcomes.values()) == N
    assert kills >= 5, kills
    runs = collections.Counter(int(x) for x in log.read_text().split())
    assert max(runs.values()) <= MAX_RETRIES + 1
    for i, fut in enumerate(futs):
        if fut.exception() is None:
            assert runs[i] >= 1  # a result means it really ran
            assert fut.attempts <= MAX_RETRIES + 1
    assert outcomes["ok"] > N * 0.9, outcomes
