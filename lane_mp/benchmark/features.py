"""lane_mp-only checks: what its features cost and how close they come to their promises.

No peer has lanes, rate limits or observability hooks, so these run on lane_mp alone (the
runner skips the other libraries) and compare lane_mp with itself, A/B interleaved:

- L1 idle: CPU used by an idle pool (caller thread + coordinator + workers), % of one core.
- L2 rate limit: a lane at 200/s (burst 1): the rate it really dispatches at.
- L3 lane features: no-op throughput with every lane feature configured / with default lanes.
- L4 observability: no-op throughput with events + metrics + alerts on / all off.
- L5 recovery: a timeout firing -> the replacement worker serving; throughput while workers are
  SIGKILLed 10 times (retries on), as a share of throughput without kills, and lost commands.
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from . import tasks
from .adapters import Adapter
from .measure import median, now
from .workloads import Outcome, Sizes

__all__ = ["l1_idle", "l2_rate_limit", "l3_lane_features", "l4_observability", "l5_recovery"]

BOUND_S = 120.0
IN_FLIGHT = 400  # L5: commands kept queued, so a kill always finds work to interrupt


def _pool(**kw: Any) -> Any:
    from lane_mp import LanePool

    return LanePool(2, **kw)


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def l1_idle(ad: Adapter, s: Sizes) -> Outcome:
    """L1: an idle pool must not spin. Counts the caller process too (its result thread)."""
    out = Outcome()
    pool = _pool()
    try:
        pool.submit(tasks.noop, 1).result(BOUND_S)
        time.sleep(0.5)  # let the post-work spin windows run out before measuring
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]  # the forkserver counts: lane_mp started it
        c0, t0 = _cpu_seconds(procs), now()
        time.sleep(s.l1_idle_s)
        used = _cpu_seconds(procs) - c0
        out.metrics["idle_cpu_pct"] = 100.0 * used / (now() - t0)
    finally:
        pool.shutdown()
    out.notes.append(f"over {s.l1_idle_s:g} s, target < 1 %")
    return out


def _dispatch_times(rate_limit: Any, n: int) -> list[float]:
    """Completion times of ``n`` no-op tasks submitted at once to a rate-limited lane (a no-op
    completes ~0.1 ms after dispatch, so these are dispatch times shifted by a constant)."""
    from lane_mp import Lane, LaneConfig

    pool = _pool(lanes=[Lane("limited", 0, LaneConfig(0, None, rate_limit=rate_limit))])
    done: list[float] = []
    lock = threading.Lock()

    def cb(_f: Any) -> None:
        t = now()
        with lock:
            done.append(t)

    try:
        futs = [pool.submit(tasks.noop, i) for i in range(n)]
        for f in futs:
            f.add_done_callback(cb)
        for f in futs:
            f.result(BOUND_S)
        time.sleep(0.05)  # callbacks of the last results
    finally:
        pool.shutdown()
    return sorted(done)


def l2_rate_limit(ad: Adapter, s: Sizes) -> Outcome:
    """L2: a lane at 200/s with more work queued than it may dispatch in the window; how many
    commands ran in the first ``l2_window_s`` seconds (sliding window and token bucket), and
    the steady rate of a token bucket without burst (where every late wake-up is lost)."""
    from lane_mp import RateLimitConfig

    out = Outcome()
    rate, window = 200.0, s.l2_window_s
    expected = rate * window
    burst = int(rate)  # the token bucket's default: one second's worth
    for key, cfg, n in (  # n: enough backlog to stay saturated through the whole window
        ("sliding_in_window", RateLimitConfig.per_second(rate, algorithm="sliding_window"), int(expected) + 40),
        ("bucket_in_window", RateLimitConfig.per_second(rate), int(expected) + burst + 40),
    ):
        done = _dispatch_times(cfg, n)
        out.metrics[key] = sum(1 for t in done if t - done[0] < window)
    out.metrics["sliding_error_pct"] = 100.0 * (out.metrics["sliding_in_window"] - expected) / expected
    done = _dispatch_times(RateLimitConfig.per_second(rate, burst=1), int(rate * min(window / 2, 3.0)))
    out.metrics["burst1_rate"] = (len(done) - 1) / (done[-1] - done[0])
    out.notes.append(f"200/s for {window:g} s: target {expected:.0f} within 2 %; the bucket starts full (burst 200)")
    return out


def _throughput(make: Callable[[], Any], n: int, submit: Callable[[Any, int], Any]) -> float:
    pool = make()
    try:
        for f in [submit(pool, i) for i in range(200)]:
            f.result(BOUND_S)
        t0 = now()
        futs = [submit(pool, i) for i in range(n)]
        for f in futs:
            f.result(BOUND_S)
        return n / (now() - t0)
    finally:
        pool.shutdown()


def _ab(out: Outcome, s: Sizes, a: Callable[[], float], b: Callable[[], float], keys: tuple[str, str, str]) -> None:
    """Interleave A B B A A B ... ``s.ab_reps`` pairs; report medians and the median ratio."""
    ra: list[float] = []
    rb: list[float] = []
    for i in range(s.ab_reps):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        x, y = first(), second()
        if i % 2 == 0:
            ra.append(x)
            rb.append(y)
        else:
            ra.append(y)
            rb.append(x)
    out.metrics[keys[0]] = median(ra)
    out.metrics[keys[1]] = median(rb)
    out.metrics[keys[2]] = statistics.median(y / x for x, y in zip(ra, rb))


def l3_lane_features(ad: Adapter, s: Sizes) -> Outcome:
    """L3: the scheduler's per-command cost with every lane feature configured (none binding)."""
    from lane_mp import (
        CircuitBreakerConfig,
        Lane,
        LaneConfig,
        Priority,
        PriorityBoostConfig,
        RateLimitConfig,
        RetryPolicy,
    )

    full = (
        LaneConfig(1, None, timeout=60.0, capacity=10_000_000)
        .with_retry_policy(RetryPolicy.exponential(3))
        .with_rate_limit(RateLimitConfig.per_second(10_000_000))
        .with_priority_boost(PriorityBoostConfig.standard(60.0))
        .with_circuit_breaker(CircuitBreakerConfig(1000, 1.0))
    )
    lanes = [Lane("hot", 0, full), Lane("cold", 1, full)]

    def featured(pool: Any, i: int) -> Any:
        return pool.submit(tasks.noop, i, lane="hot", priority=Priority.HIGH, deadline=600.0,
                           cost=1, tenant=f"t{i % 4}")

    out = Outcome()
    _ab(
        out, s,
        lambda: _throughput(_pool, s.w1_tasks, lambda p, i: p.submit(tasks.noop, i)),
        lambda: _throughput(lambda: _pool(lanes=lanes, capacity_units=1000), s.w1_tasks, featured),
        ("default_per_s", "featured_per_s", "ratio"),
    )
    out.notes.append("rate limit, retry, timeout, boost, deadline, capacity, breaker, cost, tenant; target >= 0.8")
    return out


def l4_observability(ad: Adapter, s: Sizes) -> Outcome:
    """L4: events (with a subscriber draining them), metrics and alerts on, against all off."""
    from lane_mp import AlertManager, EventEmitter, QueueMetrics

    def observed() -> Any:
        emitter = EventEmitter(capacity=1_000_000)
        sub = emitter.subscribe()
        threading.Thread(target=lambda: [None for _ in sub], daemon=True).start()
        alerts = AlertManager().with_queue_depth_alerts(50_000, 100_000).with_latency_alerts(60_000, 120_000)
        pool = _pool(emitter=emitter, metrics=QueueMetrics.local(), alerts=alerts)
        _close = pool.shutdown

        def shutdown(*a: Any, **k: Any) -> None:
            _close(*a, **k)
            sub.close()

        pool.shutdown = shutdown
        return pool

    out = Outcome()
    _ab(
        out, s,
        lambda: _throughput(_pool, s.w1_tasks, lambda p, i: p.submit(tasks.noop, i)),
        lambda: _throughput(observed, s.w1_tasks, lambda p, i: p.submit(tasks.noop, i)),
        ("off_per_s", "on_per_s", "ratio"),
    )
    out.notes.append("events + metrics + alerts; target >= 0.9")
    return out


def l5_recovery(ad: Adapter, s: Sizes) -> Outcome:
    """L5: how fast a timed-out worker is replaced, and what 10 SIGKILLs cost a busy pool."""
    from lane_mp import LanePool, RetryPolicy, TaskTimeout

    out = Outcome()
    gaps = []
    with tempfile.TemporaryDirectory(prefix="lane_mp_bench_") as tmp, LanePool(1) as pool:
        pool.submit(tasks.noop).result(BOUND_S)
        for i in range(5):
            hung = pool.submit(tasks.hang, os.path.join(tmp, f"pid{i}"), timeout=0.2)
            nxt = pool.submit(tasks.noop, 1)  # queued behind the hung task on the only worker
            try:
                hung.result(BOUND_S)
            except TaskTimeout:
                pass
            t0 = now()
            nxt.result(BOUND_S)
            gaps.append(now() - t0)
    out.metrics["replace_ms"] = median(gaps) * 1e3

    def stream(pool: LanePool, seconds: float) -> tuple[float, int, int]:
        """Keep ~IN_FLIGHT 1 ms tasks queued for ``seconds``; (ok tasks/s, failed, total)."""
        room = threading.BoundedSemaphore(IN_FLIGHT)
        futs = []
        t0 = now()
        while now() - t0 < seconds:
            room.acquire()
            f = pool.submit(tasks.spin, 0.001)
            f.add_done_callback(lambda _f: room.release())
            futs.append(f)
        ok = failed = 0
        for f in futs:
            try:
                f.result(BOUND_S)
                ok += 1
            except Exception:  # noqa: BLE001 - any failure after the retries counts as lost
                failed += 1
        return ok / (now() - t0), failed, len(futs)

    with LanePool(2, retry=RetryPolicy.fixed(3, 0.0)) as pool:
        pool.submit(tasks.noop).result(BOUND_S)
        base, _, _ = stream(pool, s.l5_stream_s)
        stop = threading.Event()
        kills = [0]

        def killer() -> None:
            period = s.l5_stream_s / 11
            while not stop.wait(period) and kills[0] < 10:
                pids = [w["pid"] for w in pool.stats()["workers"]]
                try:
                    os.kill(pids[kills[0] % len(pids)], signal.SIGKILL)
                    kills[0] += 1
                except (ProcessLookupError, IndexError):
                    pass

        th = threading.Thread(target=killer, daemon=True)
        th.start()
        during, failed, total = stream(pool, s.l5_stream_s)
        stop.set()
        th.join(10)
    out.metrics.update(base_per_s=base, kills_per_s=during, kill_ratio=during / base, lost=failed)
    out.notes.append(f"{kills[0]} SIGKILLs during {total} x 1 ms tasks, RetryPolicy.fixed(3)")
    return out
