"""Observability: metrics, an event subscriber, alerts, a monitor and Prometheus text from one pool.

Run it (a few seconds): ``python examples/observability.py``. While it runs,
``python -m lane_mp top`` in another terminal shows the same pool live.
"""

import random
import threading
import time
import urllib.request

import lane_mp
from lane_mp import AlertManager, EventEmitter, LaneConfig, LanePool, QueueMetrics, RetryPolicy
from lane_mp.observability import MonitorConfig, QueueMonitor, Subscription, key_prefix


def work(ms: float) -> float:
    time.sleep(ms / 1000)
    return ms


def flaky(i: int) -> int:
    if random.random() < 0.3:
        raise ValueError(f"item {i} failed this time")
    return i


def print_events(sub: Subscription) -> None:
    """A subscriber in its own thread: the pool never waits for it (bounded buffer)."""
    for ev in sub:  # ends when the subscription is closed
        payload = {k: v for k, v in ev.payload.items() if k not in ("traceback", "metadata", "tenant")}
        print(f"  event {ev.key:<28} {payload}")


if __name__ == "__main__":
    lane_mp.enable_logging("WARNING")  # the monitor's warnings go to the log (stderr)

    emitter = EventEmitter()
    # Everything except the per-command flood (submitted/started/completed: 3 events per command).
    interesting = emitter.subscribe_filtered(
        key_prefix("queue.command.retry", "queue.command.dead_lettered", "queue.lane.", "worker.")
    )
    threading.Thread(target=print_events, args=(interesting,), daemon=True).start()

    alerts = (
        AlertManager()
        .with_queue_depth_alerts(warn=20, crit=100)
        .with_latency_alerts(warn_ms=250, crit_ms=5_000)
        .add_callback(lambda a: print(f"  ALERT {'resolved' if a.resolved else 'fired'}: {a.message}"))
    )
    lanes = {
        "interactive": LaneConfig(),
        "batch": LaneConfig(retry=RetryPolicy.fixed(2, 0.05)),
    }
    with LanePool(
        2, lanes=lanes, emitter=emitter, metrics=QueueMetrics.local(), alerts=alerts,
        dead_letters=100, pressure_threshold=50,
    ) as pool, QueueMonitor(pool, MonitorConfig(interval=0.25, pending_warning_threshold=40)) as monitor:
        print("a backlog of 80 batch commands (depth alerts, lane pressure, monitor warning):")
        batch = [pool.submit(work, 20, lane="batch") for _ in range(80)]
        batch += [pool.submit(flaky, i, lane="batch") for i in range(20)]
        quick = [pool.submit(work, 1, lane="interactive") for _ in range(20)]
        for fut in quick + batch:
            try:
                fut.result(60)
            except ValueError:
                pass  # failed after its retries: also in pool.dead_letters
        time.sleep(0.3)  # let the last gauges arrive (idle events, resolved alerts)

        snap = pool.metrics.snapshot()
        print("\ncounters:")
        for name, value in sorted(snap.counters.items()):
            print(f"  {name:<40} {value:g}")
        for name in ("lane.command.latency_ms.interactive", "lane.command.latency_ms.batch"):
            h = snap.histograms[name]
            print(f"{name}: n={h.count} p50={h.p50:.1f} p90={h.p90:.1f} p99={h.p99:.1f} ms")
        print(f"dead letters: {len(pool.dead_letters)}")
        m = monitor.stats()
        print(f"monitor: {m.polls} polls, {m.warnings_logged} warning(s), lanes {[lane.name for lane in m.lanes]}")

        print("\nPrometheus text (served at /metrics too):")
        with pool.serve_metrics(port=0) as server, urllib.request.urlopen(server.url, timeout=5) as resp:
            body = resp.read().decode()
        print("\n".join(line for line in body.splitlines() if "interactive" in line or line.startswith("# TYPE")))
    interesting.close()
