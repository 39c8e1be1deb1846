"""Task functions for the persistence tests (workers import them by name).

Side effects go to an append-only log, one line per run, so a test can count how many times each
command really ran across pools and kills (``O_APPEND`` writes of one short line do not interleave).
"""

from __future__ import annotations

import os
import time


def log_run(path: str, i: int, delay: float = 0.0) -> int:
    """Record that item ``i`` ran, optionally take a while, return ``i``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    if delay:
        time.sleep(delay)
    return i


def fail_first(path: str, times: int) -> str:
    """Fail the first ``times`` calls (counted in a file, so it survives pools), then succeed."""
    n = 0
    if os.path.exists(path):
        with open(path) as f:
            n = int(f.read() or 0)
    with open(path, "w") as f:
        f.write(str(n + 1))
    if n < times:
        raise ValueError(f"failure {n + 1}")
    return "ok"


def big(n: int) -> bytes:
    """A result large enough to travel through a shared-memory block."""
    return bytes(range(256)) * (n // 256)


def size_of(data: bytes) -> int:
    return len(data)


def read_log(path: str) -> list[int]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line) for line in f if line.strip()]
