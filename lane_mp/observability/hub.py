"""The caller-side glue between the pool and its observers (metrics, events, alerts, DLQ).

The pool calls three hooks: ``submitted`` (in ``submit``), ``outcome`` (in the result thread,
per resolved command) and ``record`` (for the coordinator's event records). Each is a no-op
check when nothing is attached, so a pool without observers pays nothing.

Lane pressure / idle events are edge-triggered from the coordinator's periodic lane gauges:
``pressure`` when a lane's pending depth reaches ``pressure_threshold``, ``idle`` when the lane
has nothing pending and nothing active again.
"""

from __future__ import annotations

import time
from typing import Any

from .alerts import AlertManager
from .events import EventEmitter
from .metrics import QueueMetrics

__all__ = ["ObservabilityHub"]

# outcome kinds the pool reports
OK, FAILED, TIMEOUT, CANCELLED = "ok", "failed", "timeout", "cancelled"


class ObservabilityHub:
    def __init__(
        self,
        emitter: EventEmitter | None,
        metrics: QueueMetrics | None,
        alerts: AlertManager | None,
        dead_letters: Any = None,
        pressure_threshold: int = 1000,
    ) -> None:
        self.emitter = emitter
        self.metrics = metrics
        self.alerts = alerts
        self.dead_letters = dead_letters
        self.pressure_threshold = pressure_threshold
        self._pressured: set[str] = set()
        self._idle: dict[str, bool] = {}
        self.active = emitter is not None or metrics is not None or alerts is not None

    def submitted(self, cid: int, lane: str, correlation_id: str | None) -> None:
        if self.metrics is not None:
            self.metrics.command_submitted(lane)
        em = self.emitter
        if em is not None and em.has_subscribers:
            em.emit("queue.command.submitted", {"id": cid, "lane": lane, "correlation_id": correlation_id})

    def outcome(self, cid: int, lane: str, kind: str, latency_s: float, wait_s: float, attempts: int, error: str = "") -> None:
        m = self.metrics
        if m is not None:
            if kind == OK:
                m.command_completed(lane, latency_s * 1e3, wait_s * 1e3)
            elif kind != CANCELLED:
                m.command_failed(lane)
            for _ in range(attempts - 1):
                m.command_retried(lane)
        em = self.emitter
        if em is not None and em.has_subscribers:
            key = "queue.command.completed" if kind == OK else "queue.command.failed"
            payload: dict[str, Any] = {"id": cid, "lane": lane, "attempts": attempts, "latency_ms": latency_s * 1e3}
            if kind != OK:
                payload["error"] = error
                payload["kind"] = kind
            em.emit(key, payload)

    def record(self, key: str, timestamp: float, payload: dict[str, Any]) -> None:
        """An event record from the coordinator."""
        if key == "lane.gauges":
            self._gauges(payload["lanes"], timestamp)
            return
        m = self.metrics
        if m is not None:
            if key == "queue.command.timeout":
                m.command_timeout(payload["lane"])
            elif key == "queue.command.dead_lettered":
                m.command_dead_lettered(payload["lane"])
        em = self.emitter
        if em is not None and em.has_subscribers:
            if key == "queue.command.dead_lettered":
                payload = {k: v for k, v in payload.items() if k != "payload"}
            em.emit(key, payload)

    def _gauges(self, lanes: dict[str, list[int]], timestamp: float) -> None:
        m, em = self.metrics, self.emitter
        for lane, (pending, active) in lanes.items():
            if m is not None:
                m.queue_depth(lane, pending)
                m.queue_active(lane, active)
            if em is not None:
                if pending >= self.pressure_threshold and lane not in self._pressured:
                    self._pressured.add(lane)
                    em.emit("queue.lane.pressure", {"lane": lane, "pending": pending, "active": active})
                elif pending < self.pressure_threshold * 0.9:
                    self._pressured.discard(lane)
                idle = pending == 0 and active == 0
                if idle and self._idle.get(lane) is False:
                    em.emit("queue.lane.idle", {"lane": lane})
                self._idle[lane] = idle
        if self.alerts is not None:
            p99 = m.latency_p99_ms() if m is not None else None
            self.alerts.evaluate({lane: v[0] for lane, v in lanes.items()}, p99, time.time())

    def shutdown_started(self) -> None:
        if self.emitter is not None:
            self.emitter.emit("queue.shutdown.started", {})
