"""Edge-triggered alerts on queue depth and latency, with hysteresis.

Why edge-triggered: the monitor evaluates every few hundred milliseconds; a level-triggered
alert would page on every tick for as long as a queue stays deep. Here each (subject, level)
pair is a small state machine that produces exactly two notices per episode: one ``Alert`` when
the value reaches the threshold, one ``Alert(resolved=True)`` when it falls below
``threshold * hysteresis``. The gap between the two stops a value hovering at the threshold from
flapping.

Levels are independent rules, like Prometheus rules with a severity label: a depth that jumps
past both thresholds fires WARNING and CRITICAL (two notices), and falling back between them
resolves only CRITICAL. ``active()`` may therefore list both levels for one subject.

Pure logic: the time comes in as ``now`` and no thread or clock is touched, so tests run with
plain numbers.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable

import msgspec
from loguru import logger

from ..errors import ConfigError

__all__ = ["AlertLevel", "Alert", "AlertManager", "DEFAULT_HYSTERESIS", "LATENCY_P99", "QUEUE_DEPTH"]

# Leave a level only below 90 % of its threshold: wide enough to stop flapping on noisy depth
# readings, narrow enough that a resolved notice still means "clearly better".
DEFAULT_HYSTERESIS = 0.9

QUEUE_DEPTH = "queue_depth"  # alert names: "queue_depth.<lane>"
LATENCY_P99 = "latency_p99_ms"


class AlertLevel(enum.IntEnum):
    """Severity; ordered so ``max()`` and comparisons work."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2


class Alert(msgspec.Struct, frozen=True):
    """One notice: a level entered (``resolved=False``) or left (``resolved=True``).

    ``value`` is the reading that caused the notice and ``threshold`` the level's threshold
    (for a resolved notice the value is below ``threshold * hysteresis``).
    """

    name: str
    level: AlertLevel
    value: float
    threshold: float
    message: str
    timestamp: float
    resolved: bool = False


class _Rule:
    """Thresholds for one metric; the per-subject state lives in the manager."""

    __slots__ = ("metric", "thresholds", "hysteresis", "unit")

    def __init__(self, metric: str, warn: float, crit: float, hysteresis: float, unit: str) -> None:
        for field, value in (("warn", warn), ("crit", crit)):
            if not value > 0:
                raise ConfigError(f"{metric}.{field}: must be > 0, got {value!r}", field=f"{metric}.{field}")
        if warn > crit:
            raise ConfigError(
                f"{metric}: warn ({warn}) must not exceed crit ({crit})", field=f"{metric}.warn"
            )
        if not 0 < hysteresis <= 1:
            raise ConfigError(f"hysteresis: must be in (0, 1], got {hysteresis!r}", field="hysteresis")
        self.metric = metric
        self.thresholds = ((AlertLevel.WARNING, float(warn)), (AlertLevel.CRITICAL, float(crit)))
        self.hysteresis = hysteresis
        self.unit = unit


class AlertManager:
    """Holds the rules, the active alerts and the callbacks.

    The ``with_*`` builders configure this manager in place and return ``self`` so they chain:
    ``AlertManager().with_queue_depth_alerts(100, 1000).with_latency_alerts(500, 5000)``.
    Calling one again replaces that rule's thresholds and keeps the current alert states.
    Thread-safe; callbacks run outside the lock, in the thread that called :meth:`evaluate`.
    """

    def __init__(self, hysteresis: float = DEFAULT_HYSTERESIS) -> None:
        if not 0 < hysteresis <= 1:
            raise ConfigError(f"hysteresis: must be in (0, 1], got {hysteresis!r}", field="hysteresis")
        self.hysteresis = hysteresis
        self._lock = threading.Lock()
        self._depth_rule: _Rule | None = None
        self._latency_rule: _Rule | None = None
        self._active: dict[tuple[str, AlertLevel], Alert] = {}
        self._callbacks: list[Callable[[Alert], object]] = []

    def with_queue_depth_alerts(
        self, warn: float, crit: float, hysteresis: float | None = None
    ) -> AlertManager:
        """Alert per lane when its pending depth reaches ``warn`` / ``crit``. Returns self."""
        rule = _Rule(QUEUE_DEPTH, warn, crit, self.hysteresis if hysteresis is None else hysteresis, "")
        with self._lock:
            self._depth_rule = rule
        return self

    def with_latency_alerts(
        self, warn_ms: float, crit_ms: float, hysteresis: float | None = None
    ) -> AlertManager:
        """Alert when command latency p99 reaches ``warn_ms`` / ``crit_ms``. Returns self."""
        rule = _Rule(
            LATENCY_P99, warn_ms, crit_ms, self.hysteresis if hysteresis is None else hysteresis, " ms"
        )
        with self._lock:
            self._latency_rule = rule
        return self

    def add_callback(self, fn: Callable[[Alert], object]) -> AlertManager:
        """Call ``fn(alert)`` for every notice; an exception is logged, never propagated."""
        with self._lock:
            self._callbacks.append(fn)
        return self

    def evaluate(
        self, depth_by_lane: dict[str, int], latency_p99_ms: float | None, now: float
    ) -> list[Alert]:
        """Feed the current readings; return (and send to callbacks) the notices they cause.

        A lane missing from ``depth_by_lane`` or a ``None`` latency means "no reading": its
        alerts keep their state rather than being resolved on missing data.
        """
        notices: list[Alert] = []
        with self._lock:
            if self._depth_rule is not None:
                for lane, depth in depth_by_lane.items():
                    self._step(
                        self._depth_rule,
                        f"{QUEUE_DEPTH}.{lane}",
                        f"lane {lane!r} queue depth",
                        depth,
                        now,
                        notices,
                    )
            if self._latency_rule is not None and latency_p99_ms is not None:
                self._step(
                    self._latency_rule, LATENCY_P99, "command latency p99", latency_p99_ms, now, notices
                )
            callbacks = list(self._callbacks)
        for alert in notices:
            if alert.resolved:
                logger.info("alert resolved: {}", alert.message)
            else:
                logger.warning("alert: {}", alert.message)
            for fn in callbacks:
                try:
                    fn(alert)
                except Exception:  # noqa: BLE001 - a user callback may raise anything
                    logger.opt(exception=True).error("alert callback {!r} raised on {}", fn, alert.name)
        return notices

    def _step(self, rule: _Rule, name: str, what: str, value: float, now: float, out: list[Alert]) -> None:
        unit = rule.unit
        # Leave levels most severe first, enter them least severe first: notices read in order.
        for level, threshold in reversed(rule.thresholds):
            key = (name, level)
            floor = threshold * rule.hysteresis
            if key in self._active and value < floor:
                del self._active[key]
                message = f"{level.name} resolved: {what} is {value:g}{unit} (below {floor:g}{unit})"
                out.append(Alert(name, level, float(value), threshold, message, now, resolved=True))
        for level, threshold in rule.thresholds:
            key = (name, level)
            if key not in self._active and value >= threshold:
                message = f"{level.name}: {what} is {value:g}{unit} (threshold {threshold:g}{unit})"
                alert = Alert(name, level, float(value), threshold, message, now)
                self._active[key] = alert
                out.append(alert)

    def active(self) -> list[Alert]:
        """The firing notice of every active (subject, level), most severe first."""
        with self._lock:
            alerts = list(self._active.values())
        return sorted(alerts, key=lambda a: (-a.level, a.name))

    def clear(self) -> None:
        """Forget active alerts without notices (e.g. after the pool restarts)."""
        with self._lock:
            self._active.clear()
