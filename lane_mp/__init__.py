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
    from .futures import LaneFuture
    from .pool import LanePool
