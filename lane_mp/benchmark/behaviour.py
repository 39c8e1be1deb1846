"""What happens: W5 priority under load, W6 a hung task, W7 a crashing task.

Libraries without priorities run W5 as plain FIFO and say so; libraries without a per-task
timeout run W6 with the only tool they have (a caller-side wait) and the report shows that the
hung task kept its worker. Every wait here is bounded; whatever is still hung when a workload
ends is killed by ``running`` (the outcome is marked dirty), never left to block shutdown.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

from . import tasks
from .adapters import Adapter
from .measure import error_name, now, outcome_of, percentile, running, wait_all
from .workloads import Outcome, Sizes

__all__ = ["w5_priority", "w6_timeout", "w7_crash"]

BOUND_S = 120.0
STOPPED_GRACE_S = 1.0  # how long after the error a hung task has to stop before we say it did not
HEARTBEAT_STALE_S = 0.3
USABLE_WAIT_S = 1.0  # W7: a follow-up no-op gets this long before the pool counts as hanging


def w5_priority(ad: Adapter, s: Sizes) -> Outcome:
    """W5: saturate the pool with background CPU tasks, then submit urgent ones at a steady pace;
    an urgent task's latency is submit -> done. A FIFO pool makes them wait for the backlog."""
    out = Outcome()
    lock = threading.Lock()
    bg_done: list[float] = []
    urgent_sub: list[float] = [0.0] * s.w5_urgent
    urgent_done: list[float] = [0.0] * s.w5_urgent

    def bg_cb() -> None:
        t = now()
        with lock:
            bg_done.append(t)

    def urgent_cb(i: int) -> None:
        urgent_done[i] = now()

    with running(ad, out, lanes=True):
        t0 = now()
        bg = [ad.submit(tasks.spin, s.w5_task_s, urgent=False, on_done=bg_cb) for _ in range(s.w5_background)]
        urgent = []
        next_at = now()
        for i in range(s.w5_urgent):
            delay = next_at - now()
            if delay > 0:
                time.sleep(delay)
            urgent_sub[i] = now()
            urgent.append(ad.submit(tasks.spin, s.w5_task_s, urgent=True, on_done=functools.partial(urgent_cb, i)))
            next_at += s.w5_gap_s
        done = wait_all(urgent + bg, BOUND_S)
        # callbacks run on the library's result thread, possibly just after wait() returned
        end = now() + 2.0
        while (len(bg_done) < len(bg) or not all(urgent_done)) and now() < end:
            time.sleep(0.005)
        failed = sum(1 for h in urgent + bg if not outcome_of(h)[0]) if done == len(bg) + len(urgent) else -1
    if done < len(bg) + len(urgent) or failed or not all(urgent_done):
        out.status = "error"
        out.notes.append(f"{done}/{len(bg) + len(urgent)} finished, {failed} failed")
        return out
    lat = sorted(d - u for d, u in zip(urgent_done, urgent_sub))
    out.metrics.update(
        urgent_p50_ms=percentile(lat, 50) * 1e3,
        urgent_p99_ms=percentile(lat, 99) * 1e3,
        bg_makespan_s=max(bg_done) - t0,
    )
    out.notes.append("lanes urgent(0) / background(5)" if ad.priorities else "FIFO: no priorities")
    return out


def _hung_task_state(pid_path: str, hb_path: str) -> str:
    """'killed' (its process is gone), 'interrupted' (process alive, task stopped) or 'still
    running', waiting up to STOPPED_GRACE_S for it to stop."""
    end = now() + STOPPED_GRACE_S
    pid = int(Path(pid_path).read_text() or 0)
    while True:
        alive = pid > 0 and psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        if not alive:
            return "killed"
        stale = time.time() - os.stat(hb_path).st_mtime > HEARTBEAT_STALE_S
        if stale:
            return "interrupted"
        if now() > end:
            return "still running"
        time.sleep(0.05)


def w6_timeout(ad: Adapter, s: Sizes) -> Outcome:
    """W6: a task that never returns, submitted with a 0.5 s timeout where the library has one
    (else the caller waits 0.5 s on it, the best a user can do), then 10 quick tasks."""
    out = Outcome()
    with tempfile.TemporaryDirectory(prefix="lane_mp_bench_") as tmp:
        pid_path = os.path.join(tmp, "pid")
        with running(ad, out):
            t0 = now()
            hung = ad.submit(tasks.hang, pid_path, timeout=s.w6_timeout_s if ad.task_timeout else None)
            quick = [ad.submit(tasks.sleep, 0.01) for _ in range(s.w6_quick)]
            if ad.task_timeout:
                if hung.wait(s.w6_timeout_s + 10.0):
                    ok, exc = outcome_of(hung)
                    out.metrics["caller_sees"] = "a result?!" if ok else error_name(exc)
                    out.metrics["error_s"] = now() - t0
                else:
                    out.metrics["caller_sees"] = "nothing: timeout never fired"
            else:
                hung.wait(s.w6_timeout_s)
                out.metrics["caller_sees"] = "n/a: no task timeout"
            quick_done = wait_all(quick, 10.0)
            if quick_done == len(quick):
                out.metrics["quick_s"] = now() - t0
            else:
                out.notes.append(f"only {quick_done}/{len(quick)} quick tasks finished in 10 s")
            if os.path.exists(pid_path):
                state = _hung_task_state(pid_path, pid_path + ".hb")
            else:
                state = "never started"
            out.metrics["hung_task"] = state
            # capacity back? one 0.1 s task per worker takes ~0.1 s when every slot serves, ~0.2 s
            # when the hung task still holds one of two
            t1 = now()
            follow = [ad.submit(tasks.sleep, 0.1) for _ in range(ad.workers)]
            if wait_all(follow, 10.0) == len(follow):
                out.metrics["recovered_s"] = now() - t1
            out.dirty = state == "still running" or quick_done < len(quick)
    if not ad.task_timeout:
        out.notes.append("no per-task timeout: the hung task keeps its worker")
    return out


def w7_crash(ad: Adapter, s: Sizes) -> Outcome:
    """W7: a task whose process dies (``os._exit(1)``), then 10 quick tasks: what does the
    caller see, do the later tasks still succeed, and does the pool keep serving?"""
    out = Outcome()
    with running(ad, out):
        t0 = now()
        crash = ad.submit(tasks.exit_now, 1)
        quick, refused = [], []
        for _ in range(s.w7_quick):
            try:
                quick.append(ad.submit(tasks.sleep, 0.01))
            except Exception as exc:  # noqa: BLE001 - ProcessPoolExecutor refuses submits once it knows it is broken
                refused.append(error_name(exc))
        done = wait_all([crash, *quick], s.w7_wait_s)
        if crash.wait(0):
            ok, value = outcome_of(crash)
            out.metrics["caller_sees"] = "a result?!" if ok else error_name(value)
        else:
            out.metrics["caller_sees"] = f"nothing in {s.w7_wait_s:g} s"
        if done == len(quick) + 1:
            out.metrics["resolved_s"] = now() - t0
        outcomes = [outcome_of(h) for h in quick if h.wait(0)]
        out.metrics["later_ok"] = sum(1 for ok, _ in outcomes if ok)
        errors = sorted({error_name(e) for ok, e in outcomes if not ok})
        if errors:
            out.notes.append("later tasks failed with " + ", ".join(errors))
        if refused:
            out.notes.append(f"later submits refused with {refused[0]}")
        try:
            after = ad.submit(tasks.noop, 7)
            if not after.wait(USABLE_WAIT_S):
                out.metrics["usable_after"] = "no: hangs"
            else:
                ok, val = outcome_of(after)
                out.metrics["usable_after"] = "yes" if ok and val == 7 else f"no: {error_name(val)}"
        except Exception as exc:  # noqa: BLE001 - submit itself refused: the pool is broken
            out.metrics["usable_after"] = f"no: {error_name(exc)}"
        out.dirty = done < len(quick) + 1
    return out
