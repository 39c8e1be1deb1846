"""The caller's side of persistence: durable-submit acknowledgements, the mailbox, stored dead letters.

Who touches the store:

- **While the pool runs** the coordinator is its only writer and its only reader from the pool:
  every request here travels as a ``journal.*`` control request and the coordinator answers from
  its open store. One writer, any ``Storage`` backend, and decryption happens where the key is.
  Reads cost a round trip to the coordinator (tens of µs), not a second SQLite connection.
- **After shutdown** there is no writer left, so requests on a SQLite file open the file directly
  (a short-lived connection per call; WAL lets it run next to any other reader). Outcomes stay
  fetchable after the pool is gone. Other backends raise :class:`PoolClosed` then.

Durable ``submit`` waits here for the coordinator's ``Committed`` record: it spins briefly (the
commit usually lands within a loop turn) and then sleeps on a condition variable.
"""

from __future__ import annotations

import builtins
import os
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, Final

import msgspec

from lane_mp import errors
from lane_mp.errors import BrokenPool, PoolClosed, StorageError
from lane_mp.protocol import messages as m

from .journal import RecoveryReport, storage_request
from .payloads import decode_stored
from .records import DeadLetter
from .sqlite import SQLiteStorage
from .storage import Storage

__all__ = ["JournalClient", "Mailbox", "MailboxResult", "StoredDeadLetters"]

# How long a durable submit spins (yielding) for its commit before it sleeps on a condition:
# a commit normally lands within one coordinator turn, and a sleep/wake costs ~50 µs per side.
COMMIT_SPIN_S: Final = float(os.environ.get("LANE_MP_COMMIT_SPIN_US", "300")) / 1e6
_POLL_S: Final = 0.02
RESULT_THREAD_PREFIX: Final = "lane_mp-results-"  # pool.py names its result thread so


class MailboxResult(msgspec.Struct, frozen=True):
    """A kept final outcome. ``result()`` returns the value or raises the error, like a future."""

    command_id: int
    tenant: str | None
    status: str  # "ok" | "error"
    error: str | None
    finished_at: float
    fetched: bool
    raw: bytes | None = None  # the stored (bundled) result; for errors the tagged error payload

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def result(self) -> Any:
        if self.ok:
            return None if self.raw is None else decode_stored(self.raw)
        exc = self.exception()
        assert exc is not None
        raise exc

    def exception(self) -> BaseException | None:
        """The error as an exception object (the remote traceback as ``__cause__`` when known)."""
        if self.ok:
            return None
        raw = self.raw or b""
        if raw[:1] == b"R":
            from lane_mp.protocol.codec import decode_exception

            return decode_exception(raw[1:])
        if raw[:1] == b"I":
            info = msgspec.msgpack.decode(raw[1:], type=m.ErrorInfo)
            cls = getattr(errors, info.error, None)
            if isinstance(cls, type) and issubclass(cls, errors.LaneMPError):
                return cls(info.message, **info.fields)
        return errors.TaskFailed(self.error or "failed", remote_type="?", remote_traceback="")

    @classmethod
    def _of(cls, row: dict[str, Any]) -> MailboxResult:
        return cls(
            row["command_id"],
            row.get("tenant"),
            row["status"],
            row.get("error"),
            row["finished_at"],
            bool(row.get("fetched")),
            row.get("result"),
        )


class JournalClient:
    """One per pool with storage: the commit watermark, the recovery report, mailbox and DLQ."""

    def __init__(self, storage: Storage, request: Callable[[str, Any], Any]) -> None:
        self.storage = storage
        self._request = request
        self._cv = threading.Condition()
        self._upto = 0
        self._failed: dict[int, str] = {}
        self.report = RecoveryReport()
        self.mailbox = Mailbox(self)
        self.dead_letters = StoredDeadLetters(self)

    # ---- start-up and acknowledgements -----------------------------------------------------
    def started(self, recovery: dict[str, Any] | None) -> None:
        if recovery is not None:
            self.report = msgspec.convert(recovery, RecoveryReport)

    def committed(self, msg: m.Committed) -> None:
        """Result thread: a group commit landed."""
        with self._cv:
            for cid in msg.failed:
                self._failed[cid] = msg.error or "journal write failed"
            self._upto = max(self._upto, msg.upto)
            self._cv.notify_all()

    def wait_committed(self, cid: int, fut: Future[Any]) -> None:
        """Return once command ``cid`` is in the journal; raise if it never will be.

        Not on the pool's result thread (a done-callback that submits): that thread is the one
        that would deliver the acknowledgement, so it cannot wait for it. Such a submit returns
        at once and its command is journaled at the coordinator's next commit.
        """
        if self._upto < cid and not threading.current_thread().name.startswith(RESULT_THREAD_PREFIX):
            end = time.monotonic() + COMMIT_SPIN_S
            while self._upto < cid and not fut.done() and time.monotonic() < end:
                os.sched_yield()
            with self._cv:
                while self._upto < cid and not fut.done():
                    self._cv.wait(_POLL_S)
        if self._failed:
            with self._cv:
                error = self._failed.pop(cid, None)
            if error is not None:
                raise StorageError(f"command {cid} was not journaled: {error}")
        if self._upto < cid and fut.done() and not fut.cancelled():
            exc = fut.exception()
            if isinstance(exc, BrokenPool):  # the pool died first: whether it is on disk is unknown
                raise exc

    # ---- requests --------------------------------------------------------------------------
    def call(self, op: str, arg: Any = None) -> Any:
        try:
            data = self._request(op, arg)
        except PoolClosed:
            data = self._offline(op, arg)
        if isinstance(data, dict) and "__error__" in data:
            cls = getattr(errors, data["__error__"], None)
            if not (isinstance(cls, type) and issubclass(cls, errors.LaneMPError)):
                cls = StorageError
            raise cls(data["message"])
        return data

    def _offline(self, op: str, arg: Any) -> Any:
        if not isinstance(self.storage, SQLiteStorage):
            raise PoolClosed(
                f"the pool is shut down and {type(self.storage).__name__} lives in its coordinator"
            )
        store: SQLiteStorage = pickle.loads(pickle.dumps(self.storage))  # a fresh, unopened copy
        store.open()
        try:
            if op == "journal.dlq.replay":
                op = "journal.dlq.requeue"
            if op == "journal.stats":
                return store.stats()
            if op == "journal.background":
                return 0
            return storage_request(store, op, arg)[0]
        finally:
            store.close()

    def wait_background(self, timeout: float | None) -> bool:
        """Wait until every recovered or replayed command is final; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.call("journal.background"):
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(_POLL_S)
        return True


class Mailbox:
    """Kept outcomes: of ``mailbox=True`` commands, commands with a ``tenant``, and recovered ones."""

    def __init__(self, client: JournalClient) -> None:
        self._client = client

    def fetch(self, command_id: int, *, mark_fetched: bool = True) -> MailboxResult | None:
        """The outcome of ``command_id`` (None if there is none yet); marks it fetched by default."""
        row = self._client.call("journal.mailbox.fetch", {"id": command_id, "mark": mark_fetched})
        return None if row is None else MailboxResult._of(row)

    def list(self, tenant: str | None = None, *, limit: int | None = None) -> list[MailboxResult]:
        """Outcomes oldest first, of one tenant or all."""
        rows = self._client.call("journal.mailbox.list", {"tenant": tenant, "limit": limit})
        return [MailboxResult._of(row) for row in rows]

    def cleanup(self, older_than: float | timedelta) -> int:
        """Remove outcomes that finished more than ``older_than`` (seconds or a timedelta) ago."""
        age = older_than.total_seconds() if isinstance(older_than, timedelta) else float(older_than)
        return int(self._client.call("journal.mailbox.cleanup", time.time() - age))


class StoredDeadLetters:
    """The dead-letter queue kept in storage (it survives restarts)."""

    def __init__(self, client: JournalClient) -> None:
        self._client = client

    def list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        rows = self._client.call("journal.dlq.list", {"limit": limit, "offset": offset})
        return [msgspec.convert(row, DeadLetter) for row in rows]

    def replay(self, ids: builtins.list[int] | None = None) -> builtins.list[int]:
        """Run dead letters again (all, or ``ids``), same ids, attempts reset. In a running pool they
        are enqueued now and their outcomes go to the mailbox; after shutdown they go back to the
        journal as pending, for the next pool to recover. Returns the ids moved."""
        return list(self._client.call("journal.dlq.replay", ids))

    def clear(self) -> int:
        return int(self._client.call("journal.dlq.clear"))

    def __len__(self) -> int:
        return int(self._client.call("journal.stats")["dead_letters"])
