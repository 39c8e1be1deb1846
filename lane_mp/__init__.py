"""lane_mp: a process pool for CPU-heavy work with priority lanes.

Workers import this package too, so the public names load lazily: importing ``lane_mp`` costs
only the exception tree and the config objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger as _logger

from .config import (
    CircuitBreakerConfig,
    FailureInfo,
    Lane,
    LaneConfig,
    PartitionConfig,
    Priority,
    PriorityBoostConfig,
    RateLimitConfig,
    RetryPolicy,
)
from .errors import (
    BrokenPool,
    CircuitOpen,
    ConfigError,
    CostTooLarge,
    DeadlineExceeded,
    DecodeError,
    DrainTimeout,
    EncodeError,
    FunctionNotImportable,
    LaneFull,
    LaneMPError,
    PayloadTooLarge,
    PoolClosed,
    TaskFailed,
    TaskTimeout,
    UnknownLane,
    WorkerCrashed,
)

_logger.disable("lane_mp")  # a library stays quiet unless the user or the CLI enables it

__version__ = "0.1.0"

__all__ = [
    # the pool
    "LanePool",
    "LaneFuture",
    # failure handling and persistence
    "DeadLetterQueue",
    "DeadLetter",
    "SQLiteStorage",
    "MemoryStorage",
    "Storage",
    # observability
    "EventEmitter",
    "LaneEvent",
    "QueueMetrics",
    "AlertManager",
    "AlertLevel",
    "Alert",
    # topics
    "Topic",
    # backends
    "DaskBackend",
    # configuration
    "Lane",
    "LaneConfig",
    "Priority",
    "RetryPolicy",
    "FailureInfo",
    "RateLimitConfig",
    "PriorityBoostConfig",
    "PartitionConfig",
    "CircuitBreakerConfig",
    # errors (the whole tree is in lane_mp.errors)
    "LaneMPError",
    "PoolClosed",
    "UnknownLane",
    "LaneFull",
    "CostTooLarge",
    "CircuitOpen",
    "FunctionNotImportable",
    "ConfigError",
    "TaskFailed",
    "TaskTimeout",
    "DeadlineExceeded",
    "BrokenPool",
    "WorkerCrashed",
    "DrainTimeout",
    "EncodeError",
    "DecodeError",
    "PayloadTooLarge",
    # logging
    "enable_logging",
    "__version__",
]

_LAZY = {
    "LanePool": ("lane_mp.pool", "LanePool"),
    "LaneFuture": ("lane_mp.futures", "LaneFuture"),
    "DeadLetterQueue": ("lane_mp.outcomes.dlq", "DeadLetterQueue"),
    "DeadLetter": ("lane_mp.outcomes.dlq", "DeadLetter"),
    "SQLiteStorage": ("lane_mp.persistence", "SQLiteStorage"),
    "MemoryStorage": ("lane_mp.persistence", "MemoryStorage"),
    "Storage": ("lane_mp.persistence", "Storage"),
    "EventEmitter": ("lane_mp.observability.events", "EventEmitter"),
    "LaneEvent": ("lane_mp.observability.events", "LaneEvent"),
    "QueueMetrics": ("lane_mp.observability.metrics", "QueueMetrics"),
    "AlertManager": ("lane_mp.observability.alerts", "AlertManager"),
    "AlertLevel": ("lane_mp.observability.alerts", "AlertLevel"),
    "Alert": ("lane_mp.observability.alerts", "Alert"),
    "Topic": ("lane_mp.topic", "Topic"),
    # backends (extra lane_mp[dask]); joins __all__ once the README documents it
    "DaskBackend": ("lane_mp.backends.dask", "DaskBackend"),
}


def enable_logging(level: str = "INFO") -> None:
    """Turn on lane_mp's log lines (loguru) at ``level`` on stderr."""
    import sys

    _logger.enable("lane_mp")
    _logger.remove()
    _logger.add(sys.stderr, level=level)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'lane_mp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .backends.dask import DaskBackend
    from .futures import LaneFuture
    from .observability.alerts import Alert, AlertLevel, AlertManager
    from .observability.events import EventEmitter, LaneEvent
    from .observability.metrics import QueueMetrics
    from .outcomes.dlq import DeadLetter, DeadLetterQueue
    from .persistence import MemoryStorage, SQLiteStorage, Storage
    from .pool import LanePool
    from .topic import Topic
