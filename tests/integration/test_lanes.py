"""Lane semantics with real processes: priority, min/max concurrency, rate limits, deadlines,
item priorities, tenants, partitions, cost admission, capacity, dedup, pause, config files."""

from __future__ import annotations

import json
import time

import pytest

import tasks
from lane_mp import (
    ConfigError, CostTooLarge, DeadlineExceeded, Lane, LaneConfig, LaneFull, LanePool, Priority,
    RateLimitConfig,
)

pytestmark = pytest.mark.timeout(60)


def _order(log) -> list[str]:
    return log.read_text().split()


def _lanes(**specs: tuple[int, LaneConfig]) -> list[Lane]:
    return [Lane(name, prio, cfg) for name, (prio, cfg) in specs.items()]


def test_urgent_lane_overtakes_a_backlog(tmp_path):
    log = tmp_path / "log"
    lanes = _lanes(hi=(0, LaneConfig(0, None)), lo=(5, LaneConfig(0, None)))
    with LanePool(1, lanes=lanes) as p:
        blocker = p.submit(tasks.sleep, 0.3, lane="lo")
        time.sleep(0.1)
        low = [p.submit(tasks.log_run, str(log), f"lo{i}", lane="lo") for i in range(5)]
        high = [p.submit(tasks.log_run, str(log), f"hi{i}", lane="hi") for i in range(3)]
        for f in [blocker, *low, *high]:
            f.result(20)
    assert _order(log) == ["hi0", "hi1", "hi2", "lo0", "lo1", "lo2", "lo3", "lo4"]


def test_item_priority_within_a_lane_and_fifo_within_a_level(tmp_path):
    log = tmp_path / "log"
    with LanePool(1, lanes=_lanes(q=(0, LaneConfig(0, None)))) as p:
        blocker = p.submit(tasks.sleep, 0.3)
        time.sleep(0.1)
        futs = [
            p.submit(tasks.log_run, str(log), "bg", priority=Priority.BACKGROUND),
            p.submit(tasks.log_run, str(log), "n1"),
            p.submit(tasks.log_run, str(log), "crit", priority=Priority.CRITICAL),
            p.submit(tasks.log_run, str(log), "n2"),
        ]
        for f in [blocker, *futs]:
            f.result(20)
    assert _order(log) == ["crit", "n1", "n2", "bg"]


def test_min_concurrency_reserves_a_slot_under_saturation(tmp_path):
    log = tmp_path / "log"
    lanes = _lanes(hi=(0, LaneConfig(0, None)), bg=(5, LaneConfig(1, None)))
    with LanePool(2, lanes=lanes) as p:
        hi = [p.submit(tasks.log_run, str(log), f"hi{i}", 0.1, lane="hi") for i in range(10)]
        bg = p.submit(tasks.log_run, str(log), "bg", lane="bg")
        bg.result(20)
        assert sum(not f.done() for f in hi) >= 4  # bg ran while hi still had a backlog
        for f in hi:
            f.result(20)


def test_max_concurrency_caps_running_commands():
    lanes = _lanes(one=(0, LaneConfig(0, 1)))
    with LanePool(2, lanes=lanes) as p:
        t0 = time.monotonic()
        futs = [p.submit(tasks.sleep, 0.3, lane="one") for _ in range(3)]
        for f in futs:
            f.result(20)
        assert time.monotonic() - t0 >= 0.85  # one at a time although two workers are free


def test_rate_limit_spends_tokens_on_dispatch():
    lanes = _lanes(rl=(0, LaneConfig(0, None, rate_limit=RateLimitConfig.per_second(20, burst=5))))
    with LanePool(2, lanes=lanes) as p:
        t0 = time.monotonic()
        futs = [p.submit(tasks.noop, i, lane="rl") for i in range(25)]
        for f in futs:
            f.result(20)
        took = time.monotonic() - t0
    assert 0.9 <= took < 3.0, took  # 5 at once, then 20 more at 20/s


def test_deadline_not_started_never_runs(tmp_path):
    log = tmp_path / "log"
    with LanePool(1) as p:
        blocker = p.submit(tasks.sleep, 0.5)
        late = p.submit(tasks.log_run, str(log), "late", deadline=0.1)
        with pytest.raises(DeadlineExceeded) as info:
            late.result(10)
        assert isinstance(info.value, TimeoutError)
        blocker.result(10)
        assert p.submit(tasks.log_run, str(log), "ok", deadline=5).result(10) == "ok"
    assert _order(log) == ["ok"]


def test_tenants_share_a_lane_fairly(tmp_path):
    log = tmp_path / "log"
    with LanePool(1, lanes=_lanes(q=(0, LaneConfig(0, None)))) as p:
        blocker = p.submit(tasks.sleep, 0.3)
        time.sleep(0.1)
        a = [p.submit(tasks.log_run, str(log), f"a{i}", tenant="A") for i in range(6)]
        b = [p.submit(tasks.log_run, str(log), f"b{i}", tenant="B") for i in range(2)]
        for f in [blocker, *a, *b]:
            f.result(20)
    order = _order(log)
    assert order.index("b1") < order.index("a3"), order  # B is not starved behind A's flood


def test_keys_pin_to_one_worker():
    with LanePool(2) as p:
        pids = {p.submit(tasks.pid, key="customer-7").result(10) for _ in range(20)}
        assert len(pids) == 1


def test_cost_admission_and_too_large():
    with LanePool(2, capacity_units=2) as p:
        with pytest.raises(CostTooLarge):
            p.submit(tasks.noop, cost=3)
        t0 = time.monotonic()
        futs = [p.submit(tasks.sleep, 0.3, cost=2) for _ in range(2)]
        for f in futs:
            f.result(20)
        assert time.monotonic() - t0 >= 0.55  # each takes the whole capacity: they run in turn


def test_lane_capacity_blocks_or_raises():
    lanes = _lanes(small=(0, LaneConfig(0, None, capacity=2)))
    with LanePool(1, lanes=lanes) as p:
        futs = [p.submit_nowait(tasks.sleep, 0.3, lane="small") for _ in range(2)]
        with pytest.raises(LaneFull):
            p.submit_nowait(tasks.noop, lane="small")
        # submit waits for room instead
        late = p.submit(tasks.noop, 5, lane="small")
        assert late.result(10) == 5 and all(f.done() for f in futs)


def test_dedup_key_returns_the_pending_future():
    with LanePool(1) as p:
        a = p.submit(tasks.sleep, 0.2, "x", dedup_key="job-1")
        b = p.submit(tasks.sleep, 0.2, "y", dedup_key="job-1")
        assert a is b and a.result(10) == "x"
        c = p.submit(tasks.sleep, 0.0, "z", dedup_key="job-1")
        assert c is not a and c.result(10) == "z"


def test_pause_and_resume_a_lane(tmp_path):
    with LanePool(1, lanes=_lanes(ctl=(0, LaneConfig(0, None)))) as p:
        p.pause_lane("ctl")
        fut = p.submit(tasks.noop, 1, lane="ctl")
        time.sleep(0.3)
        assert not fut.done()
        stats = {s["name"]: s for s in p.stats()["lanes"]}
        assert stats["ctl"]["paused"] and stats["ctl"]["pending"] == 1
        p.resume_lane("ctl")
        assert fut.result(10) == 1


def test_stats_count_per_lane():
    with LanePool(2) as p:
        for f in [p.submit(tasks.noop, lane="system") for _ in range(5)]:
            f.result(10)
        p.submit(tasks.boom, lane="prompt").exception(10)
        lanes = {s["name"]: s for s in p.stats()["lanes"]}
        assert lanes["system"]["completed"] == 5 and lanes["prompt"]["failed"] == 1
        assert set(lanes) == {"system", "control", "query", "session", "skill", "prompt"}


def test_reserved_keyword_names_pass_through_submit_call():
    with LanePool(1) as p:
        out = p.submit_call(tasks.echo, args=(1,), kwargs={"lane": "mine", "priority": 3}, lane="system")
        assert out.result(10) == ((1,), {"lane": "mine", "priority": 3})


def test_from_config_toml_json_and_errors(tmp_path):
    toml = tmp_path / "pool.toml"
    toml.write_text(
        """
max_workers = 1
default_lane = "urgent"
[lanes.urgent]
priority = 0
max_concurrency = 2
timeout = 5.0
[lanes.urgent.rate_limit]
rate = 100.0
[lanes.batch]
priority = 3
min_concurrency = 0
"""
    )
    with LanePool.from_config(str(toml)) as p:
        assert [lane.name for lane in p.lanes] == ["urgent", "batch"]
        assert p.lanes[0].config.timeout == 5.0 and p.default_lane == "urgent"
        assert p.submit(tasks.add, 1, 2).result(10) == 3
    js = tmp_path / "pool.json"
    js.write_text(json.dumps({"max_workers": 1, "lanes": {"a": {"max_concurrency": "many"}}}))
    with pytest.raises(ConfigError, match="max_concurrency"):
        LanePool.from_config(str(js))
    js.write_text(json.dumps({"lanes": {"a": {"timeout": -1}}}))
    with pytest.raises(ConfigError, match="timeout"):
        LanePool.from_config(str(js))
