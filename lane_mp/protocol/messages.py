"""Every record that crosses a process boundary: tagged, array-like msgspec structs.

Only ids and plain data travel; futures never leave the caller. Schema evolution is
append-only: new fields go at the end with a default, tags are never reused. The protocol
version travels once, in ``Hello`` (the coordinator's start-up report), not in every record.

Ring direction      records
caller -> coord     Submit, Cancel, Release, Control
coord  -> worker    Run, Release, Stop
worker -> coord     Done, Retiring, InitFailed
coord  -> caller    Outcome, Reply, EventRecord, Bye, Committed
"""

from __future__ import annotations

from typing import Any

import msgspec

PROTOCOL_VERSION = 1

__all__ = [
    "PROTOCOL_VERSION", "Submit", "Cancel", "Release", "Control", "Run", "Stop", "Done", "Retiring",
    "InitFailed", "Outcome", "Reply", "EventRecord", "Bye", "Committed", "Hello", "ErrorInfo",
    "OK", "RAISED", "ERROR",
]

_opts: dict[str, Any] = {"array_like": True, "gc": False, "frozen": True, "tag_field": "t"}


class Submit(msgspec.Struct, tag=1, **_opts):
    """A command: run ``fn`` (import path) on ``payload`` (encoded arguments) in ``lane``."""

    id: int
    fn: str
    payload: bytes
    lane: int
    priority: int = 2
    deadline: float | None = None  # absolute time.monotonic(); not started by then -> never runs
    timeout: float | None = None
    cost: int = 0
    key: int | None = None  # xxhash of the user's key (pins to a partition)
    tenant: str | None = None
    correlation_id: str | None = None
    metadata: dict[str, Any] | None = None
    chunk: bool = False  # payload is a list of argument tuples; the result is a list
    max_retries: int | None = None  # per-call override of the lane's retry policy count
    submitted_at: float = 0.0
    mailbox: bool = False  # keep the final outcome in storage until fetched (needs storage=)


class Cancel(msgspec.Struct, tag=2, **_opts):
    ids: list[int]
    kill: bool = False  # also kill the worker if the command is already running


class Release(msgspec.Struct, tag=3, **_opts):
    """Shared-memory blocks the reader no longer uses; their writer may reuse them."""

    blocks: list[str]


class Control(msgspec.Struct, tag=4, **_opts):
    """Out-of-band requests: stats, pause/resume, shutdown, drain. ``req`` pairs the Reply."""

    op: str
    req: int = 0
    arg: Any = None


class Run(msgspec.Struct, tag=10, **_opts):
    id: int
    fn: str
    payload: bytes
    chunk: bool = False
    attempt: int = 1


class Stop(msgspec.Struct, tag=11, **_opts):
    reason: str = "shutdown"


class Done(msgspec.Struct, tag=20, **_opts):
    """A finished command. ``status`` OK: payload is the encoded result; RAISED: the encoded
    exception; ERROR: an encoded :class:`ErrorInfo` (import / encode failures)."""

    id: int
    status: int
    payload: bytes
    elapsed: float = 0.0  # seconds the function ran
    exc_types: list[str] = []  # RAISED: qualified names of the exception class and its bases
    message: str = ""  # RAISED: str(exception), for retry predicates and dead letters


class Retiring(msgspec.Struct, tag=21, **_opts):
    """Sent by a worker right before a planned exit, so it is never mistaken for a crash."""

    reason: str
    tasks: int = 0


class InitFailed(msgspec.Struct, tag=22, **_opts):
    message: str


class Outcome(msgspec.Struct, tag=30, **_opts):
    id: int
    status: int
    payload: bytes
    attempts: int = 1
    wait_s: float = 0.0  # queued time of the last attempt (submit or retry -> dispatch)
    run_s: float = 0.0  # time the function ran in the last attempt


class Reply(msgspec.Struct, tag=31, **_opts):
    req: int
    data: Any = None


class EventRecord(msgspec.Struct, tag=32, **_opts):
    key: str
    timestamp: float
    payload: dict[str, Any] = {}


class Bye(msgspec.Struct, tag=33, **_opts):
    reason: str = ""


class Committed(msgspec.Struct, tag=34, **_opts):
    """The journal's group commit is durable: every durable command with id <= ``upto`` is on disk,
    except ``failed`` (their journal write failed; they will not run). Durable ``submit`` waits
    for it."""

    upto: int
    failed: list[int] = []
    error: str = ""


class Hello(msgspec.Struct, tag=40, **_opts):
    """The coordinator's start-up report to the caller (over the start-up pipe)."""

    version: int
    submit_ring: str
    result_ring: str
    worker_pids: list[int]
    id_floor: int = 0  # with storage: new command ids must be above this (ids are never reused)
    recovery: dict[str, Any] | None = None  # with storage: what the journal recovered at start-up


class ErrorInfo(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A failure the caller turns into one of lane_mp's own exceptions (by class name)."""

    error: str  # class name in lane_mp.errors
    message: str
    fields: dict[str, Any] = {}


OK, RAISED, ERROR = 0, 1, 2

CallerToCoord = Submit | Cancel | Release | Control
CoordToWorker = Run | Release | Stop
WorkerToCoord = Done | Retiring | InitFailed
CoordToCaller = Outcome | Reply | EventRecord | Bye | Committed
