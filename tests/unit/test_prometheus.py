"""Prometheus text exposition: parses with prometheus_client; the /metrics server serves it."""

from __future__ import annotations

import math
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lane_mp.observability.exposition import sanitize_name
from lane_mp.observability.histogram import Histogram
from lane_mp.observability.metrics import MetricsSnapshot, QueueMetrics
from lane_mp.observability.prometheus import serve_metrics

HTTP_TIMEOUT_S = 5.0


def busy_metrics() -> QueueMetrics:
    m = QueueMetrics.local()
    for i in range(100):
        m.command_submitted("query" if i % 2 else "session")
    for _ in range(7):
        m.command_failed("query")
    for _ in range(3):
        m.command_retried("session")
    for i in range(1, 91):
        m.command_completed("query" if i % 2 else "session", latency_ms=float(i), wait_ms=i / 10)
    m.queue_depth("query", 4)
    m.queue_active("query", 2)
    m.queue_depth('odd "lane"\\x', 1)
    m.backend.increment_counter("custom.bytes-sent", 2.5)
    m.backend.set_gauge("custom.temperature", -3.25)
    return m


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fams: dict[str, object], name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    fam = fams[name]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}  # type: ignore[attr-defined]


def test_sanitize_name() -> None:
    assert sanitize_name("lane.queue.depth") == "lane_mp_lane_queue_depth"
    assert sanitize_name("a-b c/d") == "lane_mp_a_b_c_d"
    assert sanitize_name("9x", prefix="") == "_9x"


def test_exposition_parses_with_types_labels_and_exact_values() -> None:
    text = busy_metrics().snapshot().to_prometheus()
    assert text.endswith("\n")
    fams = families(text)
    assert {f.type for f in fams.values()} <= {"counter", "gauge", "summary"}  # nothing fell to untyped
    assert fams["lane_mp_lane_commands_submitted"].type == "counter"  # type: ignore[attr-defined]
    sub = samples(fams, "lane_mp_lane_commands_submitted")
    assert sub == {
        ("lane_mp_lane_commands_submitted_total", ()): 100,
        ("lane_mp_lane_commands_submitted_total", (("lane", "query"),)): 50,
        ("lane_mp_lane_commands_submitted_total", (("lane", "session"),)): 50,
    }
    assert samples(fams, "lane_mp_lane_commands_failed")[("lane_mp_lane_commands_failed_total", ())] == 7
    assert (
        samples(fams, "lane_mp_lane_commands_retried")[
            ("lane_mp_lane_commands_retried_total", (("lane", "session"),))
        ]
        == 3
    )
    depth = samples(fams, "lane_mp_lane_queue_depth")
    assert depth[("lane_mp_lane_queue_depth", (("lane", "query"),))] == 4
    assert depth[("lane_mp_lane_queue_depth", (("lane", 'odd "lane"\\x'),))] == 1  # escaped and back
    assert fams["lane_mp_lane_queue_active"].type == "gauge"  # type: ignore[attr-defined]
    assert samples(fams, "lane_mp_custom_bytes_sent")[("lane_mp_custom_bytes_sent_total", ())] == 2.5
    assert samples(fams, "lane_mp_custom_temperature")[("lane_mp_custom_temperature", ())] == -3.25


def test_histograms_become_summaries_with_quantiles() -> None:
    fams = families(busy_metrics().snapshot().to_prometheus())
    lat = fams["lane_mp_lane_command_latency_ms"]
    assert lat.type == "summary"  # type: ignore[attr-defined]
    s = samples(fams, "lane_mp_lane_command_latency_ms")
    assert s[("lane_mp_lane_command_latency_ms_count", ())] == 90
    assert s[("lane_mp_lane_command_latency_ms_sum", ())] == sum(range(1, 91))
    assert s[("lane_mp_lane_command_latency_ms_count", (("lane", "query"),))] == 45
    for q, exact in (("0.5", 45), ("0.9", 81), ("0.95", 86), ("0.99", 90)):
        assert s[("lane_mp_lane_command_latency_ms", (("quantile", q),))] == pytest.approx(exact, rel=0.01)
    assert ("lane_mp_lane_command_latency_ms", (("lane", "session"), ("quantile", "0.99"))) in s
    assert fams["lane_mp_lane_command_wait_time_ms"].type == "summary"  # type: ignore[attr-defined]


def test_help_and_type_lines_precede_samples() -> None:
    text = busy_metrics().snapshot().to_prometheus()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert lines[i - 1].startswith(f"# HELP {name} ")
            assert lines[i + 1].startswith(name)
    types = [line.split()[2] for line in lines if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))  # one TYPE per family


def test_empty_snapshot_and_nan_quantiles() -> None:
    assert QueueMetrics.local().snapshot().to_prometheus() == ""
    snap = MetricsSnapshot(0.0, {}, {}, {"lane.command.latency_ms": Histogram().summary()})
    fams = families(snap.to_prometheus())
    values = samples(fams, "lane_mp_lane_command_latency_ms")
    assert math.isnan(values[("lane_mp_lane_command_latency_ms", (("quantile", "0.5"),))])
    assert values[("lane_mp_lane_command_latency_ms_count", ())] == 0


def test_server_serves_metrics_over_http() -> None:
    m = busy_metrics()
    with serve_metrics(m.snapshot) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=HTTP_TIMEOUT_S) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = resp.read().decode("utf-8")
        fams = families(body)
        assert (
            samples(fams, "lane_mp_lane_commands_submitted")[("lane_mp_lane_commands_submitted_total", ())]
            == 100
        )
        # Each scrape takes a fresh snapshot.
        m.command_submitted("query")
        with urllib.request.urlopen(server.url, timeout=HTTP_TIMEOUT_S) as resp:
            fams = families(resp.read().decode("utf-8"))
        assert (
            samples(fams, "lane_mp_lane_commands_submitted")[("lane_mp_lane_commands_submitted_total", ())]
            == 101
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=HTTP_TIMEOUT_S)
        assert info.value.code == 404
        info.value.close()


def test_server_reports_500_when_snapshot_fails_and_close_frees_port() -> None:
    def broken() -> MetricsSnapshot:
        raise RuntimeError("no snapshot")

    server = serve_metrics(broken)
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.url, timeout=HTTP_TIMEOUT_S)
        assert info.value.code == 500
        info.value.close()
    finally:
        server.close()
    server.close()  # idempotent
    assert not server._thread.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=HTTP_TIMEOUT_S)


def test_server_accepts_plain_text_snapshot_fn() -> None:
    with (
        serve_metrics(lambda: "# TYPE x gauge\nx 1\n") as server,
        urllib.request.urlopen(server.url, timeout=HTTP_TIMEOUT_S) as resp,
    ):
        assert resp.read() == b"# TYPE x gauge\nx 1\n"
