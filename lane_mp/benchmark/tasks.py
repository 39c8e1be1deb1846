"""Task functions the benchmark sends to every library's workers.

They live in an importable module (never lambdas or ``__main__`` functions) because lane_mp
names functions by import path and the spawn-based peers (loky) re-import them in each worker.
Each is as small as the workload it serves, so the benchmark measures the pool, not the task.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = [
    "count_primes",
    "echo",
    "exit_now",
    "hang",
    "inc",
    "noop",
    "sleep",
    "spin",
    "worker_pid",
]


def noop(x: Any = None) -> Any:
    """W1/W4: the cheapest possible task, so the round trip is all that is timed."""
    return x


def inc(x: int) -> int:
    """W2: a tiny item whose result is checkable (the sum of results proves none was lost)."""
    return x + 1


def echo(x: Any) -> Any:
    """W3: send the argument back unchanged (a payload in, the same payload out)."""
    return x


def spin(seconds: float) -> float:
    """W5: burn CPU for ``seconds`` of wall time (busy loop, not sleep, so the core is taken)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def sleep(seconds: float) -> int:
    """W6/W7 follow-up work: occupies a slot without competing for the CPU; returns the pid."""
    time.sleep(seconds)
    return os.getpid()


def worker_pid(_: Any = None) -> int:
    return os.getpid()


def hang(pid_path: str) -> None:
    """W6: never return. Writes its pid, then touches ``<pid_path>.hb`` every 50 ms, so the bench
    can tell a killed worker (pid gone) from an interrupted task (heartbeat stops) from neither.

    Sleeps in short steps rather than once so a library that interrupts tasks with a signal
    (mpire) gets its chance; a library that only stops waiting leaves this running.
    """
    heartbeat = pid_path + ".hb"
    open(heartbeat, "w").close()
    with open(pid_path, "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.05)
        os.utime(heartbeat)


def exit_now(code: int = 1) -> None:
    """W7: die without unwinding, like a segfault or an OOM kill would."""
    os._exit(code)


def count_primes(lo: int, hi: int) -> int:
    """W8: a real pure-Python CPU kernel (trial division), holding the GIL the whole time."""
    n = 0
    for x in range(max(lo, 2), hi):
        if x % 2 == 0:
            n += x == 2
            continue
        d = 3
        prime = True
        while d * d <= x:
            if x % d == 0:
                prime = False
                break
            d += 2
        n += prime
    return n
