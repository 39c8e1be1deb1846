"""Observability building blocks: events, metrics, histograms, alerts, Prometheus exposition.

All of them are pure, in-memory and process-free; the pool owns the instances and calls them.
``serve_metrics`` is loaded lazily so importing this package never imports ``http.server``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .alerts import Alert, AlertLevel, AlertManager
from .events import EventEmitter, LaneEvent, Subscription, key_prefix
from .histogram import Histogram, HistogramSummary
from .metrics import LocalMetricsBackend, MetricsBackend, MetricsSnapshot, QueueMetrics

if TYPE_CHECKING:
    from .prometheus import MetricsServer, serve_metrics

__all__ = [
    # events
    "LaneEvent",
    "EventEmitter",
    "Subscription",
    "key_prefix",
    # metrics
    "MetricsBackend",
    "LocalMetricsBackend",
    "MetricsSnapshot",
    "QueueMetrics",
    "Histogram",
    "HistogramSummary",
    # alerts
    "AlertLevel",
    "Alert",
    "AlertManager",
    # exposition
    "serve_metrics",
    "MetricsServer",
]


def __getattr__(name: str) -> Any:
    if name in ("serve_metrics", "MetricsServer"):
        from . import prometheus

        return getattr(prometheus, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
