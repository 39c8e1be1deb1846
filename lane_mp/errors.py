"""The one exception tree of lane_mp.

Every error the library raises is a :class:`LaneMPError`, split by whose fault it is::

    LaneMPError
    ├── UsageError                    the caller asked for something that cannot be done
    │   ├── PoolClosed                (RuntimeError)  submit after shutdown
    │   ├── UnknownLane               (LookupError)   lane name not configured
    │   ├── LaneFull                  submit_nowait on a lane at capacity / submit timed out
    │   ├── CostTooLarge              (ValueError)    cost above the pool's capacity_units
    │   ├── CircuitOpen               the lane's circuit breaker is open
    │   ├── FunctionNotImportable     (TypeError)     lambda, closure, __main__-only function
    │   └── ConfigError               (ValueError)    a bad option; names the field
    ├── TaskError                     the task ran (or was due to run) and did not succeed
    │   ├── TaskFailed                the remote exception could not travel; carries its text
    │   ├── TaskTimeout               (TimeoutError)  ran longer than its timeout; worker killed
    │   └── DeadlineExceeded          (TimeoutError)  not started before its deadline; never ran
    ├── InfrastructureError           a process of the pool failed
    │   ├── BrokenPool                (concurrent.futures.BrokenExecutor) coordinator died
    │   ├── WorkerCrashed             (concurrent.futures.process.BrokenProcessPool) one worker died
    │   └── DrainTimeout              (TimeoutError)  drain() ran out of time
    ├── ProtocolError                 bytes could not be made or read
    │   ├── EncodeError               (TypeError)     argument or result cannot be encoded
    │   ├── DecodeError               (ValueError)    a record could not be decoded
    │   └── PayloadTooLarge           (ValueError)    a payload above max_payload_bytes
    ├── StorageError                  the journal / mailbox backend failed
    │   ├── CorruptRecord             a stored row failed its checksum
    │   └── WrongKey                  the encryption key does not open the stored data
    └── TopicError                    a shared-memory topic failed
        ├── TopicFull                 the log is full and the policy is "error" (or block timed out)
        └── TopicClosed               the topic was closed or unlinked

Every class round-trips through pickle: the fields live in ``self.fields`` and ``__reduce__``
rebuilds the instance from them, so errors can cross process boundaries as data.
"""

from __future__ import annotations

from concurrent.futures import BrokenExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

__all__ = [
    "LaneMPError",
    "UsageError",
    "PoolClosed",
    "UnknownLane",
    "LaneFull",
    "CostTooLarge",
    "CircuitOpen",
    "FunctionNotImportable",
    "ConfigError",
    "TaskError",
    "TaskFailed",
    "TaskTimeout",
    "DeadlineExceeded",
    "InfrastructureError",
    "BrokenPool",
    "WorkerCrashed",
    "DrainTimeout",
    "ProtocolError",
    "EncodeError",
    "DecodeError",
    "PayloadTooLarge",
    "StorageError",
    "CorruptRecord",
    "WrongKey",
    "TopicError",
    "TopicFull",
    "TopicClosed",
]


class LaneMPError(Exception):
    """Base of every lane_mp error. ``fields`` holds the structured details (also attributes)."""

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields), self.__dict__.copy())

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[LaneMPError], message: str, fields: dict[str, Any]) -> LaneMPError:
    return cls(message, **fields)


class UsageError(LaneMPError):
    """The caller asked for something the pool cannot do."""


class PoolClosed(UsageError, RuntimeError):
    """The pool is shut down (or shutting down); like the stdlib this is a RuntimeError."""


class UnknownLane(UsageError, LookupError):
    """A lane name that the pool was not configured with."""

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError; keep it plain
        return self.message


class LaneFull(UsageError):
    """The lane has reached its capacity (``submit_nowait``) or ``submit`` timed out waiting."""


class CostTooLarge(UsageError, ValueError):
    """A command's cost exceeds the pool's ``capacity_units``: it could never be admitted."""


class CircuitOpen(UsageError):
    """The lane's circuit breaker is open after consecutive failures; retry after the cool-down."""


class FunctionNotImportable(UsageError, TypeError):
    """The function cannot be named by import path (lambda, closure, interactive ``__main__``)."""


class ConfigError(UsageError, ValueError):
    """An option or config file value is invalid; the message names the field."""


class TaskError(LaneMPError):
    """The task did not produce a result."""


class TaskFailed(TaskError):
    """The task raised an exception that could not be sent back as itself.

    ``remote_type`` is the qualified name of the original exception and ``remote_traceback``
    its formatted traceback.
    """


class TaskTimeout(TaskError, TimeoutError):
    """The task ran longer than its timeout; the worker running it was killed and replaced."""


class DeadlineExceeded(TaskError, TimeoutError):
    """The command was not started before its deadline and was never run."""


class InfrastructureError(LaneMPError):
    """A process of the pool failed."""


class BrokenPool(InfrastructureError, BrokenExecutor):
    """The coordinator process died or could not start: every pending future fails with this."""


class WorkerCrashed(InfrastructureError, BrokenProcessPool):
    """The worker running the command died (signal, ``os._exit``, OOM kill).

    Only the commands that worker held fail; the pool respawns it and keeps serving.
    Fields: ``pid``, ``exitcode``, ``signal_name``, ``command_id``.
    """


class DrainTimeout(InfrastructureError, TimeoutError):
    """``drain(timeout)`` returned before all pending work finished; ``pending`` says how many."""


class ProtocolError(LaneMPError):
    """Bytes could not be produced or read."""


class EncodeError(ProtocolError, TypeError):
    """An argument or result can be encoded neither by msgspec nor by pickle."""


class DecodeError(ProtocolError, ValueError):
    """A record or payload could not be decoded."""


class PayloadTooLarge(ProtocolError, ValueError):
    """A payload is larger than the pool's ``max_payload_bytes``."""


class StorageError(LaneMPError):
    """The storage backend failed (the sqlite3 error is the ``__cause__``)."""


class CorruptRecord(StorageError):
    """A stored record failed its checksum or could not be decoded; it was quarantined."""


class WrongKey(StorageError):
    """The encryption key given does not decrypt the stored payloads."""


class TopicError(LaneMPError):
    """A shared-memory topic failed."""


class TopicFull(TopicError):
    """The topic's log is full and its policy is ``error`` (or a ``block`` publish timed out)."""


class TopicClosed(TopicError):
    """The topic was closed or unlinked."""
