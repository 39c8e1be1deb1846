"""QueueMonitor against a scripted stand-in for the pool (no processes; a real pool is in
tests/integration/test_observability_pool.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger

from lane_mp.errors import ConfigError, PoolClosed
from lane_mp.observability.monitor import LaneReading, MonitorConfig, MonitorStats, QueueMonitor


def lane(name: str, pending: int = 0, active: int = 0, completed: int = 0, failed: int = 0) -> dict[str, Any]:
    return {"name": name, "pending": pending, "active": active, "completed": completed, "failed": failed}


class FakePool:
    """Returns the scripted snapshots in order (the last one forever); can be closed or fail."""

    def __init__(self, *snapshots: list[dict[str, Any]]) -> None:
        self.snapshots = list(snapshots)
        self.calls = 0
        self.closed = False
        self.fail_next = 0
        self.polled = threading.Event()

    def stats(self) -> dict[str, Any]:
        self.calls += 1
        self.polled.set()
        if self.closed:
            raise PoolClosed("the pool is shut down")
        if self.fail_next:
            self.fail_next -= 1
            raise TimeoutError("coordinator busy")
        lanes = self.snapshots[0] if len(self.snapshots) == 1 else self.snapshots.pop(0)
        return {"lanes": lanes, "workers": [], "completed": sum(x["completed"] for x in lanes)}


@pytest.fixture
def logs() -> Iterator[list[tuple[str, str]]]:
    records: list[tuple[str, str]] = []
    logger.enable("lane_mp")
    sink = logger.add(lambda msg: records.append((msg.record["level"].name, msg.record["message"])),
                      level="INFO", filter="lane_mp.observability.monitor")
    try:
        yield records
    finally:
        logger.remove(sink)
        logger.disable("lane_mp")


def test_config_validation() -> None:
    assert MonitorConfig() == MonitorConfig(1.0, None, None)
    with pytest.raises(ConfigError):
        MonitorConfig(interval=0)
    with pytest.raises(ConfigError):
        MonitorConfig(interval=float("inf"))
    with pytest.raises(ConfigError):
        MonitorConfig(1.0, pending_warning_threshold=0)
    with pytest.raises(ConfigError):
        MonitorConfig(1.0, active_warning_threshold=-3)


def test_poll_keeps_latest_snapshot_and_rates() -> None:
    pool = FakePool([lane("a", 5, 1, 10, 0)], [lane("a", 2, 1, 30, 2)])
    mon = QueueMonitor(pool, MonitorConfig(interval=1.0))
    before = mon.stats()
    assert (before.polls, before.snapshot, before.lanes, before.running) == (0, None, (), False)
    first = mon.poll()
    assert first.polls == 1 and first.lanes == (LaneReading("a", 5, 1, 10, 0, 0.0),)
    time.sleep(0.05)
    second = mon.poll()
    (reading,) = second.lanes
    assert (reading.pending, reading.completed, reading.failed) == (2, 30, 2)
    assert 0 < reading.rate <= 22 / 0.05  # 22 finished over at least 50 ms
    assert second.snapshot is not None and second.snapshot["completed"] == 30
    assert isinstance(second, MonitorStats)
    assert second.last_poll == pytest.approx(time.time(), abs=5)


def test_warnings_are_edge_triggered_per_lane_and_kind(logs: list[tuple[str, str]]) -> None:
    pool = FakePool(
        [lane("a", 5), lane("b", 0)],
        [lane("a", 12), lane("b", 0, active=3)],  # a enters pending, b enters active
        [lane("a", 15), lane("b", 0, active=4)],  # still above: nothing new
        [lane("a", 3), lane("b", 0, active=4)],  # a leaves
        [lane("a", 11), lane("b", 0, active=1)],  # a enters again, b leaves
    )
    mon = QueueMonitor(pool, MonitorConfig(1.0, pending_warning_threshold=10, active_warning_threshold=3))
    assert mon.poll().warnings == ()
    assert mon.poll().warnings == ("active:b", "pending:a")
    assert mon.poll().warnings == ("active:b", "pending:a")
    assert mon.poll().warnings == ("active:b",)
    last = mon.poll()
    assert last.warnings == ("pending:a",)
    assert last.warnings_logged == 3
    warnings = [m for level, m in logs if level == "WARNING"]
    infos = [m for level, m in logs if level == "INFO"]
    assert warnings == [
        "lane 'a': 12 pending (threshold 10)",
        "lane 'b': 3 active (threshold 3)",
        "lane 'a': 11 pending (threshold 10)",
    ]
    assert infos == ["lane 'a': pending back to 3 (threshold 10)", "lane 'b': active back to 1 (threshold 3)"]


def test_no_thresholds_means_no_warnings(logs: list[tuple[str, str]]) -> None:
    mon = QueueMonitor(FakePool([lane("a", 10**6, 10**6)]))
    assert mon.poll().warnings == ()
    assert logs == []


def test_thread_polls_in_background_and_context_manager_stops_it() -> None:
    pool = FakePool([lane("a", 1)])
    with QueueMonitor(pool, MonitorConfig(interval=0.02)) as mon:
        assert mon.running
        assert mon.start() is mon  # idempotent
        deadline = time.monotonic() + 5
        while mon.stats().polls < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mon.stats().polls >= 3
        assert mon.stats().running
    assert not mon.running
    polls = mon.stats().polls
    time.sleep(0.1)
    assert mon.stats().polls == polls  # stopped means stopped
    mon.stop()  # idempotent
    assert "polls=" in repr(mon)


def test_errors_are_counted_and_polling_goes_on() -> None:
    pool = FakePool([lane("a")])
    pool.fail_next = 2
    with QueueMonitor(pool, MonitorConfig(interval=0.01)) as mon:
        deadline = time.monotonic() + 5
        while mon.stats().polls < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    stats = mon.stats()
    assert stats.errors == 2 and stats.polls >= 2


def test_thread_stops_by_itself_when_the_pool_closes() -> None:
    pool = FakePool([lane("a")])
    mon = QueueMonitor(pool, MonitorConfig(interval=0.01)).start()
    assert pool.polled.wait(5)
    pool.closed = True
    deadline = time.monotonic() + 5
    while mon.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not mon.running
    assert mon.stats().errors == 0
    mon.stop()
    # and it can be started again on a live pool
    pool.closed = False
    with mon:
        assert mon.running


def test_stop_before_start_and_repr() -> None:
    mon = QueueMonitor(FakePool([lane("a")]))
    mon.stop()
    assert not mon.running
    assert mon.stats().polls == 0
