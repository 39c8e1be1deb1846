"""AlertManager: edge-triggered with hysteresis, one notice per crossing, safe callbacks."""

from __future__ import annotations

import pytest
from loguru import logger

from lane_mp.errors import ConfigError
from lane_mp.observability.alerts import Alert, AlertLevel, AlertManager

W, C = AlertLevel.WARNING, AlertLevel.CRITICAL


def kinds(alerts: list[Alert]) -> list[tuple[str, AlertLevel, bool]]:
    return [(a.name, a.level, a.resolved) for a in alerts]


def test_levels_are_ordered() -> None:
    assert AlertLevel.INFO < AlertLevel.WARNING < AlertLevel.CRITICAL
    assert max(AlertLevel) is AlertLevel.CRITICAL


def test_builders_chain_and_return_self() -> None:
    am = AlertManager()
    assert am.with_queue_depth_alerts(100, 200) is am
    assert am.with_latency_alerts(50.0, 500.0) is am
    assert am.add_callback(lambda a: None) is am


def test_depth_alert_fires_once_per_crossing_and_resolves_once() -> None:
    am = AlertManager().with_queue_depth_alerts(warn=100, crit=200)
    seen: list[Alert] = []
    am.add_callback(seen.append)
    depths = [0, 50, 100, 150, 120, 99, 91, 90, 150, 89, 50, 89, 99, 100, 101]
    per_step = [am.evaluate({"query": d}, None, now=float(t)) for t, d in enumerate(depths)]
    fired = [(t, kinds(n)) for t, n in enumerate(per_step) if n]
    name = "queue_depth.query"
    assert fired == [
        (2, [(name, W, False)]),  # reaches 100: enters WARNING
        (9, [(name, W, True)]),  # 89 < 100 * 0.9: leaves; 99, 91, 90 and 150 stay inside the band
        (13, [(name, W, False)]),  # 100 again: a new episode, a new notice
    ]
    assert kinds(seen) == [k for _, ks in fired for k in ks]
    assert per_step[2][0].value == 100 and per_step[2][0].threshold == 100 and per_step[2][0].timestamp == 2.0
    assert [a.name for a in am.active()] == [name]


def test_critical_is_its_own_edge() -> None:
    am = AlertManager().with_queue_depth_alerts(100, 200)
    name = "queue_depth.q"
    assert kinds(am.evaluate({"q": 250}, None, 0.0)) == [(name, W, False), (name, C, False)]
    assert am.evaluate({"q": 300}, None, 1.0) == []
    assert am.evaluate({"q": 181}, None, 2.0) == []  # inside CRITICAL's band (>= 180)
    assert kinds(am.evaluate({"q": 179}, None, 3.0)) == [(name, C, True)]  # WARNING stays
    assert [a.level for a in am.active()] == [W]
    assert kinds(am.evaluate({"q": 200}, None, 4.0)) == [(name, C, False)]
    # A fall below both bands resolves the most severe first.
    assert kinds(am.evaluate({"q": 0}, None, 5.0)) == [(name, C, True), (name, W, True)]
    assert am.active() == []
    assert am.evaluate({"q": 0}, None, 6.0) == []


def test_lanes_are_independent_and_missing_readings_keep_state() -> None:
    am = AlertManager().with_queue_depth_alerts(10, 20)
    first = am.evaluate({"a": 15, "b": 5}, None, 0.0)
    assert kinds(first) == [("queue_depth.a", W, False)]
    assert kinds(am.evaluate({"b": 15}, None, 1.0)) == [("queue_depth.b", W, False)]  # a: no reading
    assert sorted(a.name for a in am.active()) == ["queue_depth.a", "queue_depth.b"]
    assert am.evaluate({}, None, 2.0) == []  # no data resolves nothing


def test_latency_alerts_and_none_means_no_reading() -> None:
    am = AlertManager(hysteresis=0.5).with_latency_alerts(warn_ms=100.0, crit_ms=1000.0)
    assert kinds(am.evaluate({}, 150.0, 0.0)) == [("latency_p99_ms", W, False)]
    assert am.evaluate({}, None, 1.0) == []
    assert am.evaluate({}, 60.0, 2.0) == []  # hysteresis 0.5: leave below 50
    resolved = am.evaluate({}, 49.0, 3.0)
    assert kinds(resolved) == [("latency_p99_ms", W, True)]
    assert resolved[0].threshold == 100.0 and "resolved" in resolved[0].message


def test_per_rule_hysteresis_override() -> None:
    am = AlertManager().with_queue_depth_alerts(100, 200, hysteresis=1.0)
    assert len(am.evaluate({"q": 100}, None, 0.0)) == 1
    assert len(am.evaluate({"q": 99}, None, 1.0)) == 1  # no band at all


def test_raising_callback_is_logged_and_others_still_run() -> None:
    am = AlertManager().with_queue_depth_alerts(1, 2)
    seen: list[Alert] = []

    def broken(alert: Alert) -> None:
        raise RuntimeError("pager down")

    am.add_callback(broken).add_callback(seen.append)
    messages: list[str] = []
    logger.enable("lane_mp")
    sink = logger.add(messages.append, level="ERROR", format="{message}")
    try:
        notices = am.evaluate({"q": 5}, None, 0.0)
    finally:
        logger.remove(sink)
        logger.disable("lane_mp")
    assert len(notices) == 2 and seen == notices
    assert sum("pager down" in m or "raised" in m for m in messages) == 2
    assert len(am.active()) == 2  # state advanced despite the broken callback


def test_alert_is_frozen_and_validation() -> None:
    a = Alert("x", AlertLevel.INFO, 1.0, 1.0, "m", 0.0)
    assert a.resolved is False
    with pytest.raises(AttributeError):
        a.value = 2.0  # type: ignore[misc]
    with pytest.raises(ConfigError):
        AlertManager().with_queue_depth_alerts(200, 100)
    with pytest.raises(ConfigError):
        AlertManager().with_latency_alerts(0, 100)
    with pytest.raises(ConfigError):
        AlertManager(hysteresis=1.5)


def test_reconfiguring_keeps_state_and_clear_forgets() -> None:
    am = AlertManager().with_queue_depth_alerts(10, 20)
    am.evaluate({"q": 12}, None, 0.0)
    am.with_queue_depth_alerts(10, 30)
    assert am.evaluate({"q": 12}, None, 1.0) == []
    am.clear()
    assert am.active() == []
    assert len(am.evaluate({"q": 12}, None, 2.0)) == 1
