"""Helpers every workload uses: a pool's lifetime, warm-up, bounded waits, percentiles.

Kept apart from the workloads so each workload reads as the experiment it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import tasks
from .adapters import Adapter, Handle
from .workloads import Outcome

__all__ = ["error_name", "median", "now", "percentile", "running", "wait_all"]

now = time.perf_counter

# Warm-up tasks per worker before timing: several peers start workers lazily, and the first
# task through any pool pays imports; neither is what a workload measures.
WARMUP_PER_WORKER = 4
WARMUP_BOUND_S = 60.0


@contextmanager
def running(ad: Adapter, out: Outcome, *, lanes: bool = False, warm: bool = True) -> Iterator[Adapter]:
    """Start ``ad``'s pool, warm it, yield it; close politely unless the workload marked the
    outcome dirty (a task still hung or lost), in which case abort: kill its workers."""
    t0 = now()
    ad.start(lanes=lanes)
    try:
        if warm:
            hs = [ad.submit(tasks.noop, i) for i in range(WARMUP_PER_WORKER * ad.workers)]
            if wait_all(hs, WARMUP_BOUND_S) < len(hs):
                raise RuntimeError("warm-up tasks did not finish")
        out.metrics.setdefault("start_s", now() - t0)
        yield ad
    except BaseException:
        out.dirty = True
        ad.abort()
        raise
    if not out.dirty:
        try:
            ad.close()
            return
        except Exception as exc:  # noqa: BLE001 - e.g. mpire re-raises a worker's death at shutdown
            out.notes.append(f"shutdown raised {error_name(exc)}")
            out.dirty = True
    ad.abort()


def wait_all(handles: Sequence[Handle], bound_s: float) -> int:
    """Wait for every handle until ``bound_s`` from now; returns how many finished."""
    end = now() + bound_s
    done = 0
    for h in handles:
        if h.wait(max(0.0, end - now())):
            done += 1
    return done


def outcome_of(h: Handle) -> tuple[bool, Any]:
    """(succeeded, value or exception) of a finished handle."""
    try:
        return True, h.result()
    except BaseException as exc:  # noqa: BLE001 - the task's own error, whatever it is
        return False, exc


def error_name(exc: BaseException) -> str:
    return type(exc).__name__


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values: an observed value,
    never an interpolation, so a p99 of 40 samples is honestly the worst one."""
    if not sorted_values:
        return math.nan
    k = max(0, math.ceil(q / 100.0 * len(sorted_values)) - 1)
    return float(sorted_values[min(k, len(sorted_values) - 1)])


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)
