"""The workload registry: what W1..W8 are, what they report, how big and how long they may run.

A workload is a function ``(adapter, sizes) -> Outcome`` that runs once on one library's pool.
It lives in ``throughput.py`` (W1-W4, W8: how fast) or ``behaviour.py`` (W5-W7: what happens
under priority, hangs and crashes). This module only describes them, so the runner, the report
and the CLI agree on ids, metrics and time bounds without importing any library.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .adapters import Adapter

__all__ = [
    "FULL",
    "QUICK",
    "WORKLOADS",
    "Metric",
    "Outcome",
    "Sizes",
    "Workload",
    "sizes_for",
    "workload_ids",
]

# LANE_MP_BENCH_SCALE shrinks (or grows) every task count, e.g. 0.05 for a smoke test of the
# bench itself; the workload shapes stay as issue 6 defines them.
SCALE_ENV = "LANE_MP_BENCH_SCALE"


@dataclass(frozen=True)
class Sizes:
    """Task counts and repetitions. FULL is the issue's definition; QUICK fits in 2 minutes."""

    w1_tasks: int = 20_000
    w2_items: int = 200_000
    w3_small_trips: int = 30  # round trips of the 1 MiB array
    w3_large_trips: int = 5  # round trips of the 64 MiB array
    w4_tasks: int = 2_000
    w5_background: int = 1_000
    w5_urgent: int = 40
    w5_task_s: float = 0.005
    w5_gap_s: float = 0.020
    w6_timeout_s: float = 0.5
    w6_quick: int = 10
    w7_quick: int = 10
    w7_wait_s: float = 5.0  # how long W7 waits for anything before calling it "never resolved"
    w8_tasks: int = 200
    w8_span: int = 2_500  # numbers per prime-counting task (~6 ms of pure Python here)
    l1_idle_s: float = 10.0
    l2_window_s: float = 10.0  # 200/s for this long: 2,000 dispatches
    ab_reps: int = 3  # L3/L4: A/B pairs inside one run
    l5_stream_s: float = 2.0
    reps: int = 3
    budget_scale: float = 1.0  # multiplies each workload's hard time bound

    def scaled(self, factor: float) -> Sizes:
        """Counts times ``factor`` (at least 1 each); durations and shapes unchanged."""

        def n(x: int) -> int:
            return max(1, round(x * factor))

        return dataclasses.replace(
            self,
            w1_tasks=n(self.w1_tasks),
            w2_items=n(self.w2_items),
            w3_small_trips=n(self.w3_small_trips),
            w3_large_trips=n(self.w3_large_trips),
            w4_tasks=n(self.w4_tasks),
            w5_background=n(self.w5_background),
            w5_urgent=n(self.w5_urgent),
            w8_tasks=n(self.w8_tasks),
        )


FULL = Sizes()
QUICK = Sizes(
    w1_tasks=5_000,
    w2_items=50_000,
    w3_large_trips=1,
    w4_tasks=500,
    w5_background=300,
    w5_urgent=20,
    w3_small_trips=5,
    w7_wait_s=2.0,
    w8_tasks=100,
    w8_span=2_000,
    l1_idle_s=3.0,
    l2_window_s=2.0,  # whole seconds: a 1 s sliding window allows 2 windows in 1.5 s
    ab_reps=2,
    l5_stream_s=1.0,
    reps=2,
    budget_scale=0.5,
)


def sizes_for(quick: bool, reps: int | None = None) -> Sizes:
    base = QUICK if quick else FULL
    factor = float(os.environ.get(SCALE_ENV, "1") or 1)
    if factor != 1.0:
        base = base.scaled(factor)
    if reps is not None:
        base = dataclasses.replace(base, reps=max(1, reps))
    return base


@dataclass(frozen=True)
class Metric:
    """One reported quantity. ``better`` is "higher", "lower" or "" (a text observation)."""

    key: str
    label: str
    better: Literal["higher", "lower", ""] = "higher"
    ratio: bool = True  # False where lane_mp/peer means nothing (a reference, a count)

    @property
    def numeric(self) -> bool:
        return self.better != ""


@dataclass
class Outcome:
    """What one run of one workload on one library produced (plain data: it crosses a pipe)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | n/a | error | hung | crashed
    dirty: bool = False  # the pool could not be closed politely (aborted instead)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


WorkloadFn = Callable[["Adapter", Sizes], Outcome]


@dataclass(frozen=True)
class Workload:
    id: str
    title: str
    fn_path: str  # "module:function", imported only in the bench server
    metrics: tuple[Metric, ...]
    budget_s: float  # hard bound for one run (full sizes); the runner kills past it
    describe: str = ""  # a format string over the Sizes fields
    lane_mp_only: bool = False  # a feature no peer has: run once, on lane_mp alone

    def description(self, sizes: Sizes) -> str:
        return self.describe.format(**dataclasses.asdict(sizes))

    def budget(self, sizes: Sizes) -> float:
        return max(15.0, self.budget_s * sizes.budget_scale)

    def load(self) -> WorkloadFn:
        import importlib

        mod, _, name = self.fn_path.partition(":")
        fn: WorkloadFn = getattr(importlib.import_module(mod), name)
        return fn


_T = "lane_mp.benchmark.throughput"
_B = "lane_mp.benchmark.behaviour"
_F = "lane_mp.benchmark.features"

WORKLOADS: dict[str, Workload] = {
    w.id: w
    for w in (
        Workload("W1", "tiny tasks", f"{_T}:w1_tiny", (Metric("tasks_per_s", "+ no-op tasks/s"),), 90,
                 "{w1_tasks:,} no-op tasks submitted one by one, then awaited"),
        Workload("W2", "map", f"{_T}:w2_map", (Metric("items_per_s", "+ items/s"),), 90,
                 "{w2_items:,} tiny items through the library's best chunked map (best of its chunksizes)"),
        Workload("W3", "payload", f"{_T}:w3_payload",
                 (Metric("mbps_1mib", "+ MB/s, 1 MiB echo"), Metric("mbps_64mib", "+ MB/s, 64 MiB echo")), 90,
                 "echo a float64 array ({w3_small_trips} x 1 MiB, {w3_large_trips} x 64 MiB after a warm-up); MB/s = array size / round trip"),
        Workload("W4", "latency", f"{_T}:w4_latency",
                 (Metric("p50_us", "- round trip p50 us", "lower"), Metric("p99_us", "- round trip p99 us", "lower")),
                 60, "one task at a time on an idle pool"),
        Workload("W5", "priority", f"{_B}:w5_priority",
                 (Metric("urgent_p50_ms", "- urgent p50 ms", "lower"), Metric("urgent_p99_ms", "- urgent p99 ms", "lower"),
                  Metric("bg_makespan_s", "- background makespan s", "lower")), 90,
                 "{w5_background:,} background 5 ms CPU tasks, then {w5_urgent} urgent 5 ms tasks 20 ms apart"),
        Workload("W6", "timeout", f"{_B}:w6_timeout",
                 (Metric("caller_sees", "hung task: caller sees", ""), Metric("hung_task", "hung task was", ""),
                  Metric("error_s", "- error after s", "lower"), Metric("quick_s", "- 10 quick done after s", "lower"),
                  Metric("recovered_s", "- then 1 task/worker s", "lower")), 60,
                 "a task that hangs (0.5 s timeout where the library has one), then 10 quick tasks"),
        Workload("W7", "crash", f"{_B}:w7_crash",
                 (Metric("caller_sees", "crash: caller sees", ""), Metric("later_ok", "+ later tasks ok (of 10)", ratio=False),
                  Metric("usable_after", "pool usable after", ""), Metric("resolved_s", "- all resolved after s", "lower", ratio=False)),
                 60, "a task calls os._exit(1), then 10 quick tasks"),
        Workload("W8", "CPU scaling", f"{_T}:w8_scaling",
                 (Metric("speedup", "+ speed-up vs serial"), Metric("makespan_s", "- makespan s", "lower"),
                  Metric("serial_s", "serial s (reference)", "lower", ratio=False)), 90,
                 "pure-Python prime counting split into {w8_tasks} tasks, against the same tasks run serially"),
        Workload("L1", "idle", f"{_F}:l1_idle", (Metric("idle_cpu_pct", "- idle CPU % of one core", "lower"),), 60,
                 "CPU an idle 2-worker pool uses over {l1_idle_s:g} s (caller + coordinator + workers)", True),
        Workload("L2", "rate limit", f"{_F}:l2_rate_limit",
                 (Metric("sliding_in_window", "sliding window: ran in window", ratio=False),
                  Metric("sliding_error_pct", "sliding window: error %", "lower", ratio=False),
                  Metric("bucket_in_window", "token bucket: ran in window", ratio=False),
                  Metric("burst1_rate", "token bucket burst=1: rate /s", ratio=False)), 90,
                 "a lane at RateLimitConfig.per_second(200) with a backlog; window {l2_window_s:g} s", True),
        Workload("L3", "lane features", f"{_F}:l3_lane_features",
                 (Metric("default_per_s", "+ no-op/s, default lanes"), Metric("featured_per_s", "+ no-op/s, all lane features"),
                  Metric("ratio", "+ featured / default")), 90,
                 "{w1_tasks:,} no-op tasks with every lane feature configured, A/B against default lanes", True),
        Workload("L4", "observability", f"{_F}:l4_observability",
                 (Metric("off_per_s", "+ no-op/s, observability off"), Metric("on_per_s", "+ no-op/s, events+metrics+alerts"),
                  Metric("ratio", "+ on / off")), 90,
                 "{w1_tasks:,} no-op tasks with events (drained by a subscriber), metrics and alerts, A/B against off", True),
        Workload("L5", "recovery", f"{_F}:l5_recovery",
                 (Metric("replace_ms", "- timeout -> replacement serving ms", "lower"),
                  Metric("base_per_s", "+ 1 ms tasks/s, no kills"), Metric("kills_per_s", "+ 1 ms tasks/s, 10 SIGKILLs"),
                  Metric("kill_ratio", "+ with kills / without"), Metric("lost", "- commands lost", "lower")), 90,
                 "worker replacement after a timeout; 1 ms tasks for {l5_stream_s:g} s with and without 10 SIGKILLs", True),
    )
}


def workload_ids() -> list[str]:
    return list(WORKLOADS)
