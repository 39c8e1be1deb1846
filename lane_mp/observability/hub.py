"""The caller-side glue between the pool and its observers (metrics, events, alerts, DLQ).

The pool calls three hooks: ``submitted`` (in ``submit``), ``outcome`` (in the result thread,
per resolved command) and ``record`` (for the coordinator's event records). Each is a no-op
check when nothing is attached, so a pool without observers pays nothing.

Lane pressure / idle events are edge-triggered from the coordinator's periodic lane gauges:
``pressure`` when a lane's pending depth reaches ``pressure_threshold``, ``idle`` when the lane
has nothing pending and nothing active again.

Every submitted command gets exactly one terminal event: ``queue.command.completed``, or
``queue.command.failed`` whose ``kind`` says ``failed``, ``timeout`` or ``cancelled`` (cancelled
commands are not counted in the ``failed`` counter). ``submitted`` is recorded before the command
is handed to the coordinator, so it precedes the command's other events.

With metrics on, the same gauge path publishes the caller's latency / wait percentiles per lane
into the caller slot of the pool's stats board (``board.py``) for ``lane_mp top``, at most every
``PUBLISH_INTERVAL_S``.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from typing import Any

from loguru import logger

from .alerts import AlertManager
from .board import CALLER, PUBLISH_INTERVAL_S, StatsBoard
from .events import COMMAND_STARTED, EventEmitter, LaneEvent
from .metrics import COMPLETED, LATENCY_MS, RETRIED, SUBMITTED, WAIT_TIME_MS, QueueMetrics
from .metrics import FAILED as FAILED_COUNT

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
        token: str | None = None,
    ) -> None:
        self.emitter = emitter
        self.metrics = metrics
        self.alerts = alerts
        self.dead_letters = dead_letters
        self.pressure_threshold = pressure_threshold
        self._pressured: set[str] = set()
        self._idle: dict[str, bool] = {}
        # Per-command hooks run only while someone needs them: metrics or alerts, or an emitter
        # with at least one subscriber (the emitter tells us when that changes).
        self._always = metrics is not None or alerts is not None
        self.active = self._always or emitter is not None
        if emitter is not None:
            emitter.watch(weakref.WeakMethod(self._subscribers_changed))
        self.token = token
        self._board: StatsBoard | None = None
        self._board_rows: dict[str, list[float]] = {}
        publish = token is not None and metrics is not None and PUBLISH_INTERVAL_S > 0
        self._board_due = 0.0 if publish else math.inf  # inf: never (no metrics, or it failed)

    def _subscribers_changed(self, has_subscribers: bool) -> None:
        self.active = self._always or has_subscribers

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
        """An event record from the coordinator; its events carry the coordinator's timestamp."""
        if key == "lane.gauges":
            self._gauges(payload["lanes"], timestamp)
            return
        em = self.emitter
        if key == COMMAND_STARTED:  # one record per dispatch turn: [(id, lane, pid, attempt, cid)]
            if em is not None and em.has_subscribers:
                for cid, lane, pid, attempt, corr in payload["batch"]:
                    em.emit_event(LaneEvent(key, timestamp, {
                        "id": cid, "lane": lane, "pid": pid, "attempt": attempt, "correlation_id": corr,
                    }))
            return
        m = self.metrics
        if m is not None:
            if key == "queue.command.timeout":
                m.command_timeout(payload["lane"])
            elif key == "queue.command.dead_lettered":
                m.command_dead_lettered(payload["lane"])
        if em is not None and em.has_subscribers:
            if key == "queue.command.dead_lettered":
                payload = {k: v for k, v in payload.items() if k != "payload"}
            em.emit_event(LaneEvent(key, timestamp, payload))

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
        if self._board_due != math.inf:
            self._publish_board(list(lanes))

    def _publish_board(self, lanes: list[str]) -> None:
        """Latency and wait percentiles per lane into the board's caller slot (for ``top``).

        Runs with every gauge report (at most every ``gauges_interval``, and only while the pool
        changes, so the last state is always published); lanes whose latency count did not move
        reuse their previous row, so an idle lane costs nothing.
        """
        try:
            if self._board is None:
                self._board = StatsBoard.attach(self.token or "", writable=True)
            backend = self.metrics.backend  # type: ignore[union-attr]
            rows = self._board_rows
            changed = False
            for lane in lanes:
                row = self._lane_row(backend, lane, rows.get(lane))
                if row is not None and row is not rows.get(lane):
                    rows[lane] = row
                    changed = True
            if not changed and self._board.sequence(CALLER):
                return
            counters = {name.rsplit(".", 1)[1]: backend.get_counter(name)
                        for name in (SUBMITTED, COMPLETED, FAILED_COUNT, RETRIED)}
            self._board.publish(CALLER, {
                "caller_pid": os.getpid(), "published_at": time.time(), "lanes": rows, "counters": counters,
            })
        except Exception:  # noqa: BLE001 - the board is a nicety: never break the result thread
            logger.opt(exception=True).debug("caller stats board disabled")
            self._board_due = math.inf

    @staticmethod
    def _lane_row(backend: Any, lane: str, old: list[float] | None) -> list[float] | None:
        """[latency p50, p99, completed, wait p50, p99], or ``old`` when nothing new completed
        (the completed counter is the cheap change detector: one dict lookup)."""
        done = backend.get_counter(f"{COMPLETED}.{lane}")
        if not done or (old is not None and old[2] == done):
            return old
        pcts = getattr(backend, "percentiles", None)
        if pcts is not None:  # the local backend: copied under its lock, summarised outside it
            _, lat = pcts(f"{LATENCY_MS}.{lane}", (50.0, 99.0))
            _, wait = pcts(f"{WAIT_TIME_MS}.{lane}", (50.0, 99.0))
        else:
            h = backend.get_histogram(f"{LATENCY_MS}.{lane}")
            w = backend.get_histogram(f"{WAIT_TIME_MS}.{lane}")
            lat = [h.p50, h.p99] if h is not None and h.count else []
            wait = [w.p50, w.p99] if w is not None and w.count else []
        if not lat:
            return old
        return [lat[0], lat[1], done, *(wait or (math.nan, math.nan))]

    def shutdown_started(self) -> None:
        if self.emitter is not None:
            self.emitter.emit("queue.shutdown.started", {})
