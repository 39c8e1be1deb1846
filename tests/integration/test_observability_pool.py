"""Observability end to end, with real processes: what the pool records equals what happened.

Each test builds its own pool with its own emitter / metrics / alerts, drives a known workload and
checks exact counts after the futures resolve (counters), or waits with a timeout for events that
the coordinator sends after the outcome (worker respawns, gauges).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tasks
from prometheus_client.parser import text_string_to_metric_families

from lane_mp import (
    AlertLevel,
    AlertManager,
    EventEmitter,
    LaneConfig,
    LaneEvent,
    LanePool,
    QueueMetrics,
    RetryPolicy,
    TaskTimeout,
    WorkerCrashed,
)
from lane_mp.observability import key_prefix
from lane_mp.observability import metrics as mt
from lane_mp.observability.alerts import LATENCY_P99, QUEUE_DEPTH, Alert

WAIT_S = 20.0


def collect_until(sub: Any, done: Callable[[list[LaneEvent]], bool], into: list[LaneEvent]) -> list[LaneEvent]:
    """Read events into ``into`` until ``done(into)`` holds; fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not done(into):
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"events never arrived; got {Counter(e.key for e in into)}")
        ev = sub.get(min(left, 0.2))
        if ev is not None:
            into.append(ev)
    return into


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def held_pool(*args: Any, **kwargs: Any) -> Iterator[LanePool]:
    """A pool for tests that pause lanes: on the way out queued work is cancelled, so a failed
    assertion with a paused lane cannot leave shutdown waiting forever."""
    pool = LanePool(*args, **kwargs)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def resolve_all(futs: list[Any]) -> tuple[int, int]:
    ok = failed = 0
    for fut in futs:
        try:
            fut.result(WAIT_S)
            ok += 1
        except Exception:  # noqa: BLE001 - counting outcomes of every kind
            failed += 1
    return ok, failed


# ---- counters -----------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_counters_and_events_equal_what_happened(tmp_path: Path) -> None:
    """100 submits: 90 succeed at once, 3 fail once then succeed (3 retries), 7 fail for good."""
    em = EventEmitter()
    sub = em.subscribe()
    metrics = QueueMetrics.local()
    lanes = {"work": LaneConfig(retry=RetryPolicy.fixed(3, 0.01)), "fragile": LaneConfig()}
    pool = LanePool(2, lanes=lanes, emitter=em, metrics=metrics, dead_letters=100)
    try:
        futs = [pool.submit(tasks.noop, i, lane="work") for i in range(90)]
        futs += [pool.submit(tasks.fail_times, str(tmp_path / f"f{i}"), 1, lane="work") for i in range(3)]
        futs += [pool.submit(tasks.boom, "for good", lane="fragile") for _ in range(7)]
        assert resolve_all(futs) == (93, 7)

        # Exact right after the futures resolve: the pool records before it resolves.
        expected = {
            mt.SUBMITTED: 100, mt.COMPLETED: 93, mt.FAILED: 7, mt.RETRIED: 3, mt.DEAD_LETTERED: 7,
            mt.TIMEOUT: 0,
        }
        assert {name: metrics.count(name) for name in expected} == expected
        assert metrics.count(mt.SUBMITTED, "work") == 93
        assert metrics.count(mt.SUBMITTED, "fragile") == 7
        assert metrics.count(mt.COMPLETED, "work") == 93
        assert metrics.count(mt.RETRIED, "work") == 3
        assert metrics.count(mt.FAILED, "fragile") == 7
        assert metrics.count(mt.DEAD_LETTERED, "fragile") == 7
        assert metrics.count(mt.FAILED, "work") == 0
        snap = metrics.snapshot()
        latency, wait = snap.histograms[mt.LATENCY_MS], snap.histograms[mt.WAIT_TIME_MS]
        assert latency.count == wait.count == 93  # one observation per completed command
        assert snap.histograms[f"{mt.LATENCY_MS}.work"].count == 93
        assert f"{mt.LATENCY_MS}.fragile" not in snap.histograms

        # The coordinator's own counters agree with the caller's metrics.
        stats = pool.stats()
        assert (stats["completed"], stats["failed"], stats["retried"], stats["dead_lettered"]) == (93, 7, 3, 7)
        assert len(pool.dead_letters) == 7

        events = sub.drain()
        counts = Counter(e.key for e in events)
        assert counts["queue.command.submitted"] == 100
        assert counts["queue.command.started"] == 103  # 100 first attempts + 3 retries
        assert counts["queue.command.completed"] == 93
        assert counts["queue.command.failed"] == 7
        assert counts["queue.command.retry"] == 3
        assert counts["queue.command.dead_lettered"] == 7
        # Per command, the events come in lifecycle order.
        by_id: dict[int, list[str]] = {}
        for ev in events:
            if ev.key.startswith("queue.command."):
                by_id.setdefault(ev.payload["id"], []).append(ev.key.rsplit(".", 1)[1])
        assert len(by_id) == 100
        for cid, keys in by_id.items():
            assert keys[0] == "submitted", (cid, keys)
            assert keys[-1] in ("completed", "failed"), (cid, keys)
        retried = [keys for keys in by_id.values() if "retry" in keys]
        assert retried == [["submitted", "started", "retry", "started", "completed"]] * 3
        failed = [e.payload for e in events if e.key == "queue.command.failed"]
        assert all(p["lane"] == "fragile" and p["error"] == "" and p["kind"] == "failed" for p in failed)
        lettered = [e.payload for e in events if e.key == "queue.command.dead_lettered"]
        assert all(p["error_type"].endswith("ValueError") and "payload" not in p for p in lettered)
    finally:
        pool.shutdown(wait=True)
    rest = sub.drain()
    assert [e.key for e in rest].count("queue.shutdown.started") == 1
    assert sub.dropped == 0
    sub.close()


@pytest.mark.timeout(90)
def test_timeouts_crashes_and_worker_events() -> None:
    em = EventEmitter()
    sub = em.subscribe()
    workers_only = em.subscribe_filtered(key_prefix("worker."))
    metrics = QueueMetrics.local()
    lanes = {"slow": LaneConfig(timeout=0.5), "crashy": LaneConfig()}
    with LanePool(2, lanes=lanes, emitter=em, metrics=metrics, dead_letters=10) as pool:
        timed_out = pool.submit(tasks.sleep, 30, lane="slow")
        crashed = pool.submit(tasks.sigkill_self, lane="crashy")
        with pytest.raises(TaskTimeout):
            timed_out.result(WAIT_S)
        with pytest.raises(WorkerCrashed):
            crashed.result(WAIT_S)
        assert metrics.count(mt.TIMEOUT) == 1
        assert metrics.count(mt.TIMEOUT, "slow") == 1
        assert metrics.count(mt.FAILED) == 2
        assert metrics.count(mt.DEAD_LETTERED) == 2
        assert metrics.count(mt.COMPLETED) == 0

        # Respawns are reported after the outcome: wait for 2 initial + 2 replacement workers.
        events: list[LaneEvent] = []
        collect_until(sub, lambda evs: sum(e.key == "worker.started" for e in evs) >= 4, events)
        by_key: dict[str, list[dict[str, Any]]] = {}
        for ev in events:
            by_key.setdefault(ev.key, []).append(ev.payload)
        assert len(by_key["queue.command.timeout"]) == 1
        assert by_key["queue.command.timeout"][0]["lane"] == "slow"
        assert by_key["queue.command.timeout"][0]["id"] == timed_out.command_id
        assert [p["reason"] for p in by_key["worker.exited"]] == ["timeout"]
        (crash,) = by_key["worker.crashed"]
        assert crash["signal"] == "SIGKILL" and crash["command_id"] == crashed.command_id
        failed = {p["id"]: p for p in by_key["queue.command.failed"]}
        assert failed[timed_out.command_id]["kind"] == "timeout"
        assert failed[crashed.command_id]["error"] == "WorkerCrashed"
        assert len(by_key["queue.command.dead_lettered"]) == 2
        pids = [p["pid"] for p in by_key["worker.started"]]
        assert len(set(pids)) == 4
        assert pool.submit(tasks.add, 1, 2, lane="crashy").result(WAIT_S) == 3  # respawned workers run
    # The filtered subscription saw only worker events, and all of them.
    worker_events = workers_only.drain()
    assert {e.key for e in worker_events} >= {"worker.started", "worker.crashed", "worker.exited"}
    assert all(e.key.startswith("worker.") for e in worker_events)
    assert sum(e.key == "worker.started" for e in worker_events) == 4
    sub.close()
    workers_only.close()


@pytest.mark.timeout(60)
def test_lane_pressure_and_idle_are_edge_triggered() -> None:
    em = EventEmitter()
    sub = em.subscribe_filtered(key_prefix("queue.lane."))
    with held_pool(2, lanes={"a": LaneConfig()}, emitter=em, pressure_threshold=20) as pool:
        pool.pause_lane("a")
        futs = [pool.submit(tasks.noop, i, lane="a") for i in range(30)]
        events: list[LaneEvent] = []
        collect_until(sub, lambda evs: any(e.key == "queue.lane.pressure" for e in evs), events)
        # More work while still above the threshold: more gauge reports, no second pressure event.
        for wave in range(3):
            futs += [pool.submit(tasks.noop, i, lane="a") for i in range(5)]
            time.sleep(0.15)
        pool.resume_lane("a")
        resolve_all(futs)
        collect_until(sub, lambda evs: any(e.key == "queue.lane.idle" for e in evs), events)
        time.sleep(0.3)
        events += sub.drain()
    keys = [e.key for e in events]
    assert keys.count("queue.lane.pressure") == 1
    assert keys.count("queue.lane.idle") == 1
    pressure = next(e.payload for e in events if e.key == "queue.lane.pressure")
    assert pressure["lane"] == "a" and pressure["pending"] >= 20
    sub.close()


@pytest.mark.timeout(60)
def test_async_subscriber_sees_a_real_pool() -> None:
    em = EventEmitter()

    async def consume(sub: Any, n: int) -> list[str]:
        out = []
        async for ev in sub:
            out.append(ev.key)
            if len(out) == n:
                break
        return out

    with LanePool(2, emitter=em) as pool:
        sub = em.subscribe_filtered(lambda ev: ev.key == "queue.command.completed")
        futs = [pool.submit(tasks.noop, i) for i in range(20)]
        keys = asyncio.run(asyncio.wait_for(consume(sub, 20), WAIT_S))
        resolve_all(futs)
    assert keys == ["queue.command.completed"] * 20
    sub.close()


# ---- histograms -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_latency_and_wait_histograms_are_populated() -> None:
    metrics = QueueMetrics.local()
    with LanePool(2, lanes={"a": LaneConfig(max_concurrency=2)}, metrics=metrics) as pool:
        t0 = time.monotonic()
        futs = [pool.submit(tasks.sleep, 0.05, lane="a") for _ in range(10)]
        resolve_all(futs)
        elapsed_ms = (time.monotonic() - t0) * 1e3
    snap = metrics.snapshot()
    for name in (mt.LATENCY_MS, f"{mt.LATENCY_MS}.a", mt.WAIT_TIME_MS, f"{mt.WAIT_TIME_MS}.a"):
        assert snap.histograms[name].count == 10, name
    lat = snap.histograms[mt.LATENCY_MS]
    assert 50.0 <= lat.min <= lat.p50 <= lat.p90 <= lat.p95 <= lat.p99 <= lat.max <= elapsed_ms
    assert lat.sum >= 10 * 50.0
    wait = snap.histograms[mt.WAIT_TIME_MS]
    # 10 sleeps on 2 workers: the last ones queue behind about 4 others (~200 ms).
    assert 0.0 <= wait.min <= wait.p50 <= wait.max
    assert wait.max >= 150.0
    assert metrics.latency_p99_ms() == lat.p99


# ---- alerts --------------------------------------------------------------------------------------------


class CountingAlerts(AlertManager):
    """Counts how often the pool evaluates, to prove repeated checks do not re-fire."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluations = 0
        self.notices: list[Alert] = []
        self.add_callback(self.notices.append)

    def evaluate(self, depth_by_lane: dict[str, int], latency_p99_ms: float | None, now: float) -> list[Alert]:
        self.evaluations += 1
        return super().evaluate(depth_by_lane, latency_p99_ms, now)

    def fired(self, level: AlertLevel, resolved: bool = False, prefix: str = QUEUE_DEPTH) -> int:
        return sum(
            1 for a in self.notices if a.level == level and a.resolved == resolved and a.name.startswith(prefix)
        )


@pytest.mark.timeout(90)
def test_queue_depth_alerts_fire_once_per_crossing() -> None:
    alerts = CountingAlerts().with_queue_depth_alerts(10, 30)
    W, C = AlertLevel.WARNING, AlertLevel.CRITICAL
    with held_pool(2, lanes={"a": LaneConfig()}, alerts=alerts) as pool:
        assert pool.metrics is not None  # alerts bring metrics along (latency alerts need them)
        pool.pause_lane("a")
        futs = [pool.submit(tasks.noop, i, lane="a") for i in range(40)]
        wait_until(lambda: alerts.fired(C) == 1, "the critical depth alert")
        # Keep the queue deep across several more evaluations: nothing fires again.
        start = alerts.evaluations
        for _ in range(4):
            futs.append(pool.submit(tasks.noop, 0, lane="a"))
            time.sleep(0.15)
        assert alerts.evaluations >= start + 3
        assert (alerts.fired(W), alerts.fired(C)) == (1, 1)
        assert {a.level for a in alerts.active()} == {W, C}

        pool.resume_lane("a")
        resolve_all(futs)
        wait_until(lambda: alerts.fired(W, resolved=True) == 1, "the warning to resolve")
        assert alerts.fired(C, resolved=True) == 1
        assert alerts.active() == []

        # A second crossing (warning only) fires again, once.
        pool.pause_lane("a")
        futs = [pool.submit(tasks.noop, i, lane="a") for i in range(15)]
        wait_until(lambda: alerts.fired(W) == 2, "the second warning")
        time.sleep(0.3)
        pool.resume_lane("a")
        resolve_all(futs)
        wait_until(lambda: alerts.fired(W, resolved=True) == 2, "the second resolve")
    assert (alerts.fired(W), alerts.fired(C)) == (2, 1)
    first = next(a for a in alerts.notices if a.level == W and not a.resolved)
    assert first.name == f"{QUEUE_DEPTH}.a" and first.value >= 10 and first.threshold == 10


@pytest.mark.timeout(60)
def test_latency_alert_fires_once() -> None:
    alerts = CountingAlerts().with_latency_alerts(30, 60_000)
    with LanePool(2, alerts=alerts) as pool:
        resolve_all([pool.submit(tasks.sleep, 0.05) for _ in range(4)])
        wait_until(lambda: alerts.fired(AlertLevel.WARNING, prefix=LATENCY_P99) == 1, "the latency alert")
        resolve_all([pool.submit(tasks.sleep, 0.05) for _ in range(4)])
        time.sleep(0.3)
    assert alerts.fired(AlertLevel.WARNING, prefix=LATENCY_P99) == 1
    assert alerts.fired(AlertLevel.CRITICAL, prefix=LATENCY_P99) == 0
    (alert,) = alerts.notices
    assert alert.value >= 50.0 and "p99" in alert.message


# ---- Prometheus ----------------------------------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.timeout(60)
def test_prometheus_text_from_a_real_pool_parses_and_is_served_over_http() -> None:
    metrics = QueueMetrics.local()
    with LanePool(2, lanes={"a": LaneConfig(), "b": LaneConfig()}, metrics=metrics) as pool:
        resolve_all([pool.submit(tasks.noop, i, lane="a") for i in range(12)])
        resolve_all([pool.submit(tasks.boom, lane="b") for _ in range(3)])
        text = metrics.snapshot().to_prometheus()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["lane_mp_lane_commands_submitted"].type == "counter"
        assert families["lane_mp_lane_command_latency_ms"].type == "summary"
        assert families["lane_mp_lane_queue_depth"].type == "gauge"
        samples = _samples(text)
        assert samples[("lane_mp_lane_commands_submitted_total", ())] == 15
        assert samples[("lane_mp_lane_commands_submitted_total", (("lane", "a"),))] == 12
        assert samples[("lane_mp_lane_commands_failed_total", (("lane", "b"),))] == 3
        assert samples[("lane_mp_lane_command_latency_ms_count", ())] == 12
        for q in ("0.5", "0.9", "0.95", "0.99"):
            assert samples[("lane_mp_lane_command_latency_ms", (("lane", "a"), ("quantile", q)))] > 0

        server = pool.serve_metrics(0)
        try:
            with urllib.request.urlopen(server.url, timeout=10) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                served = resp.read().decode()
            over_http = _samples(served)
            assert over_http[("lane_mp_lane_commands_submitted_total", ())] == 15
            assert over_http[("lane_mp_lane_commands_completed_total", (("lane", "a"),))] == 12
            # Served live: new work shows up in the next scrape.
            pool.submit(tasks.noop, 0, lane="a").result(WAIT_S)
            with urllib.request.urlopen(server.url, timeout=10) as resp:
                again = _samples(resp.read().decode())
            assert again[("lane_mp_lane_commands_submitted_total", ())] == 16
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=10)
            assert info.value.code == 404
        finally:
            server.close()


def test_serve_metrics_needs_metrics() -> None:
    from lane_mp import ConfigError

    with LanePool(1) as pool, pytest.raises(ConfigError):
        pool.serve_metrics(0)


@pytest.mark.timeout(60)
def test_events_are_ordered_on_durable_lanes(tmp_path: Path) -> None:
    """A durable submit returns after its commit, when the command may already have run: the
    submitted event must still come first."""
    em = EventEmitter()
    sub = em.subscribe()
    with LanePool(2, emitter=em, storage=str(tmp_path / "jobs.db"), durable=True) as pool:
        for i in range(30):
            pool.submit(tasks.noop, i).result(WAIT_S)
    first: dict[int, str] = {}
    for ev in sub.drain():
        if ev.key.startswith("queue.command."):
            first.setdefault(ev.payload["id"], ev.key)
    assert len(first) == 30
    assert set(first.values()) == {"queue.command.submitted"}
    sub.close()


# ---- monitor ---------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_monitor_watches_a_real_pool() -> None:
    from loguru import logger

    from lane_mp.observability import MonitorConfig, QueueMonitor

    logs: list[str] = []
    logger.enable("lane_mp")
    sink = logger.add(lambda msg: logs.append(msg.record["message"]), level="WARNING",
                      filter="lane_mp.observability.monitor")
    try:
        with held_pool(2, lanes={"a": LaneConfig(), "b": LaneConfig()}) as pool:
            pool.pause_lane("a")
            futs = [pool.submit(tasks.noop, i, lane="a") for i in range(25)]
            with QueueMonitor(pool, MonitorConfig(0.05, pending_warning_threshold=20)) as mon:
                wait_until(lambda: mon.stats().warnings == ("pending:a",), "the pending warning")
                pool.resume_lane("a")
                resolve_all(futs)
                wait_until(lambda: mon.stats().warnings == (), "the warning to clear")
                wait_until(lambda: mon.stats().lanes[0].completed == 25, "the completions")
                stats = mon.stats()
            assert stats.polls >= 2 and stats.errors == 0 and stats.warnings_logged == 1
            assert [lane.name for lane in stats.lanes] == ["a", "b"]
            assert stats.snapshot is not None and stats.snapshot["completed"] == 25
            # A monitor left running stops by itself when the pool shuts down.
            orphan = QueueMonitor(pool, MonitorConfig(0.05)).start()
            wait_until(lambda: orphan.stats().polls >= 1, "the first poll")
        wait_until(lambda: not orphan.running, "the monitor to notice the shutdown")
    finally:
        logger.remove(sink)
        logger.disable("lane_mp")
    assert logs == ["lane 'a': 25 pending (threshold 20)"]


# ---- stats board and `lane_mp top` ------------------------------------------------------------------


def _token_of(pool: LanePool) -> str:
    from lane_mp.observability.top import find_pools

    def mine() -> list[Any]:
        return [p for p in find_pools() if p.coordinator_pid == pool.coordinator_pid]

    wait_until(lambda: bool(mine()), "the pool's first board publication")  # a few µs after start
    (ref,) = mine()
    return ref.token


@pytest.mark.timeout(60)
def test_stats_board_is_published_by_a_real_pool() -> None:
    import os

    from lane_mp.observability.board import CALLER, StatsBoard, list_boards

    with LanePool(2, lanes={"a": LaneConfig(), "b": LaneConfig()}, metrics=QueueMetrics.local()) as pool:
        token = _token_of(pool)
        board = StatsBoard.attach(token)
        try:
            resolve_all([pool.submit(tasks.sleep, 0.002, lane="a") for _ in range(50)])
            wait_until(lambda: board.read()["lanes"][0]["completed"] == 50, "the board to show the work")
            doc = board.read()
            assert doc["coordinator_pid"] == pool.coordinator_pid
            assert doc["caller_pid"] == os.getpid()
            assert sorted(w["pid"] for w in doc["workers"]) == sorted(pool.worker_pids)
            assert [lane["name"] for lane in doc["lanes"]] == ["a", "b"]
            assert doc["completed"] == 50
            wait_until(lambda: "a" in (board.read(CALLER) or {}).get("lanes", {}), "the caller's percentiles")
            p50, p99, count, _w50, _w99 = board.read(CALLER)["lanes"]["a"]
            assert count == 50 and 2.0 <= p50 <= p99
            before = board.sequence()
            time.sleep(1.2)  # idle: the coordinator still refreshes the board (its backstop wake-up)
            assert board.sequence() > before
        finally:
            board.close()
    assert token not in list_boards()  # the coordinator's exit sweep unlinked it


@pytest.mark.timeout(60)
def test_top_once_against_a_running_pool() -> None:
    from click.testing import CliRunner

    from lane_mp.observability.top import top

    runner = CliRunner()
    with held_pool(2, lanes={"fast": LaneConfig(), "slow": LaneConfig()}, metrics=QueueMetrics.local()) as pool:
        resolve_all([pool.submit(tasks.noop, i, lane="fast") for i in range(40)])
        pool.pause_lane("slow")
        held = [pool.submit(tasks.noop, i, lane="slow") for i in range(3)]
        wait_until(lambda: pool.stats()["lanes"][1]["pending"] == 3, "the held commands")
        time.sleep(0.6)  # one board publication after the state settled
        token = _token_of(pool)

        listing = runner.invoke(top, ["--list"])
        assert listing.exit_code == 0, listing.output
        assert token in listing.output and str(pool.coordinator_pid) in listing.output

        for target in (token, str(pool.coordinator_pid), token[:-2]):
            result = runner.invoke(top, ["--once", target])
            assert result.exit_code == 0, result.output
            out = result.output
            assert f"pool {token}" in out and "\x1b" not in out
            fast = next(line for line in out.splitlines() if line.startswith("fast"))
            assert fast.split()[2:6] == ["0", "0", "40", "0"]  # pending, active, completed, failed
            assert fast.split()[-1] != "-"  # p99 from the caller's metrics
            slow = next(line for line in out.splitlines() if line.startswith("slow"))
            assert "(paused)" in slow and slow.split()[3] == "3"
            for pid in pool.worker_pids:
                assert str(pid) in out
            coord = next(line for line in out.splitlines() if line.startswith("coord "))
            assert coord.split()[1] == str(pool.coordinator_pid)

        two = runner.invoke(top, ["-n", "2", "-i", "0.1", token])
        assert two.exit_code == 0 and two.output.count(f"pool {token}") == 2

        missing = runner.invoke(top, ["--once", "no-such-pool"])
        assert missing.exit_code == 1 and "no running lane_mp pool matches" in missing.output
        pool.resume_lane("slow")
        resolve_all(held)


@pytest.mark.timeout(60)
def test_top_live_view_on_a_terminal_quits_on_q() -> None:
    """The interactive view on a pseudo-terminal: redraws in place, q quits, the terminal's mode
    is restored (in-process: a pty pair, the view in a thread)."""
    import os
    import pty
    import termios
    import threading

    from lane_mp.observability.top import Sampler, _live

    master, slave = pty.openpty()
    mode_before = termios.tcgetattr(slave)
    out = os.fdopen(os.dup(slave), "w")
    chunks: list[bytes] = []
    try:
        with LanePool(1) as pool:
            sampler = Sampler(_token_of(pool))
            view = threading.Thread(target=_live, args=(sampler, 0.1, out, slave), daemon=True)
            view.start()

            def screen() -> str:
                while True:
                    import select as sel

                    if not sel.select([master], [], [], 0.05)[0]:
                        return b"".join(chunks).decode(errors="replace")
                    chunks.append(os.read(master, 65536))

            wait_until(lambda: screen().count("\x1b[H") >= 3, "three redraws")
            assert view.is_alive()
            os.write(master, b"q")
            view.join(10)
            assert not view.is_alive()
            sampler.close()
        text = screen()
        assert "\x1b[?1049h" in text and text.rstrip().endswith("\x1b[?1049l")  # alternate screen left
        assert "lane_mp top - pool" in text and "q quits" in text
        assert termios.tcgetattr(slave) == mode_before  # cbreak undone
    finally:
        out.close()
        os.close(slave)
        os.close(master)


def test_top_is_a_command_of_the_cli() -> None:
    cli = pytest.importorskip("lane_mp.cli")
    assert cli.main.commands["top"].name == "top"


@pytest.mark.timeout(60)
def test_subscribing_later_turns_command_events_on_and_closing_turns_them_off() -> None:
    em = EventEmitter()
    with LanePool(2, emitter=em) as pool:
        resolve_all([pool.submit(tasks.noop, i) for i in range(10)])  # nobody listens: no work done
        sub = em.subscribe()
        resolve_all([pool.submit(tasks.noop, i) for i in range(5)])
        sub.close()
        resolve_all([pool.submit(tasks.noop, i) for i in range(5)])
    counts = Counter(e.key for e in sub.drain())
    assert counts["queue.command.submitted"] == 5
    assert counts["queue.command.completed"] == 5
