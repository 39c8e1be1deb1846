"""Reliability: timeouts that kill, crash isolation, retries, the dead-letter queue, drain.

    python examples/reliability.py

Each step prints what the caller sees. The pool keeps serving through all of it.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from lane_mp import Lane, LaneConfig, LanePool, RetryPolicy, TaskTimeout, WorkerCrashed


def stuck(seconds: float) -> str:
    """A task that hangs far longer than anyone wants to wait."""
    time.sleep(seconds)
    return "finished"


def crash() -> None:
    """Dies the way a segfault or an OOM kill would: no exception, no cleanup."""
    os._exit(1)


def flaky(counter: str, failures: int) -> str:
    """Fails the first ``failures`` calls (counted in a file, since each retry may run in
    another worker process), then succeeds."""
    path = Path(counter)
    calls = int(path.read_text() or 0) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls <= failures:
        raise ConnectionError(f"attempt {calls}: upstream not ready")
    return f"ok after {calls} attempts"


def needs_config(flag: str) -> str:
    """Fails until ``flag`` exists: a permanent failure that an operator later fixes."""
    if not os.path.exists(flag):
        raise FileNotFoundError(f"missing {flag}")
    return "processed"


def main() -> None:
    lanes = [
        Lane("jobs", 0, LaneConfig(0, None).with_retry_policy(RetryPolicy.fixed(3, delay=0.05))),
        Lane("oneshot", 1, LaneConfig(0, None)),  # no retries: failures go straight to the DLQ
    ]
    with tempfile.TemporaryDirectory() as tmp, LanePool(2, lanes=lanes, dead_letters=100) as pool:
        # 1. a timeout kills the worker running the task and respawns it
        t0 = time.monotonic()
        try:
            pool.submit(stuck, 60, lane="oneshot", timeout=0.5).result(timeout=30)
        except TaskTimeout as exc:
            print(f"timeout: {type(exc).__name__} after {time.monotonic() - t0:.2f} s ({exc})")

        # 2. a crash fails only the task that was running; the pool respawns the worker
        try:
            pool.submit(crash, lane="oneshot").result(timeout=30)
        except WorkerCrashed as exc:
            print(f"crash: {type(exc).__name__}: {exc}")
        print("still serving:", pool.submit(stuck, 0, lane="oneshot").result(timeout=30))

        # 3. retries: the lane's RetryPolicy.fixed(3) runs the task up to 4 times
        fut = pool.submit(flaky, os.path.join(tmp, "calls"), 2, lane="jobs")
        print("retries:", fut.result(timeout=30), f"(future.attempts = {fut.attempts})")

        # 4. dead letters: a task that fails for good lands in pool.dead_letters
        flag = os.path.join(tmp, "config.ok")
        failed = [pool.submit(needs_config, flag, lane="oneshot") for _ in range(3)]
        for f in failed:
            f.exception(timeout=30)
        time.sleep(0.2)  # dead-letter records arrive with the failure events
        assert pool.dead_letters is not None
        for letter in pool.dead_letters.list():
            print(f"dead letter: #{letter.command_id} {letter.fn} lane={letter.lane} "
                  f"attempts={letter.attempts} {letter.error_type}: {letter.error}")

        # ... an operator fixes the cause, then replays those letters as they were (a predicate
        # picks them: replaying the timed-out or crashing ones would only fail again)
        Path(flag).touch()
        replayed = pool.dead_letters.replay(lambda letter: letter.fn.endswith(":needs_config"))
        print("replayed:", [f.result(timeout=30) for f in replayed], f"- left in the DLQ: {len(pool.dead_letters)}")

        # 5. drain: wait for everything submitted (retries in backoff included), bounded
        for i in range(10):
            pool.submit(stuck, 0.05, lane="jobs")
        pool.drain(timeout=30)
        print("drained: nothing pending")
    print("pool closed")


if __name__ == "__main__":
    main()
