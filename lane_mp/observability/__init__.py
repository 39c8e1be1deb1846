"""Observability building blocks: events, metrics, histograms, alerts, Prometheus exposition,
a polling monitor and the cross-process stats board behind ``python -m lane_mp top``.

The pure pieces (events, metrics, histograms, alerts) are in-memory and process-free; the pool
owns the instances and calls them through ``hub.py``. Every name loads lazily: the coordinator
imports ``board`` and the CLI imports ``top`` without paying for asyncio or ``http.server``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .alerts import Alert, AlertLevel, AlertManager
    from .board import StatsBoard
    from .events import EventEmitter, LaneEvent, Subscription, key_prefix
    from .histogram import Histogram, HistogramSummary
    from .metrics import LocalMetricsBackend, MetricsBackend, MetricsSnapshot, QueueMetrics
    from .monitor import LaneReading, MonitorConfig, MonitorStats, QueueMonitor
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
    # monitor
    "QueueMonitor",
    "MonitorConfig",
    "MonitorStats",
    "LaneReading",
    # exposition and the stats board
    "serve_metrics",
    "MetricsServer",
    "StatsBoard",
]

_WHERE = {
    "LaneEvent": "events",
    "EventEmitter": "events",
    "Subscription": "events",
    "key_prefix": "events",
    "MetricsBackend": "metrics",
    "LocalMetricsBackend": "metrics",
    "MetricsSnapshot": "metrics",
    "QueueMetrics": "metrics",
    "Histogram": "histogram",
    "HistogramSummary": "histogram",
    "AlertLevel": "alerts",
    "Alert": "alerts",
    "AlertManager": "alerts",
    "QueueMonitor": "monitor",
    "MonitorConfig": "monitor",
    "MonitorStats": "monitor",
    "LaneReading": "monitor",
    "serve_metrics": "prometheus",
    "MetricsServer": "prometheus",
    "StatsBoard": "board",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
