"""The records the storage layer keeps: what a journaled command, a dead letter and a mailbox entry are.

Why a separate record type (convention 2): the coordinator's in-flight command carries things that
must never reach disk (futures live in the caller, timers in the coordinator). A stored record holds
only plain data, so any backend can keep it and a new coordinator can rebuild work from it.

The argument ``payload`` and a mailbox ``result`` are *already encoded* by the protocol codec; the
storage layer treats them as opaque bytes and only guards them (checksum, compression, encryption).

All records are frozen: a backend may hand the same object to several readers (``MemoryStorage``
does), and a status change is a new record, never an edit behind the store's back.
"""

from __future__ import annotations

import time
from typing import Any, Final

import msgspec

from lane_mp.errors import ConfigError

__all__ = [
    "FINAL_STATUSES",
    "LIVE_STATUSES",
    "MAILBOX_STATUSES",
    "STATUSES",
    "DeadLetter",
    "MailboxEntry",
    "QuarantinedRow",
    "RecoveryResult",
    "StoredCommand",
    "check_status",
]

# "running" is live on purpose: a command in flight when the coordinator died must be run again
# (at-least-once), so recovery treats it like a pending one.
LIVE_STATUSES: Final = ("pending", "running")
# A final status takes the command out of the journal; its outcome lives on in the dead-letter
# queue or the mailbox if it was kept there.
FINAL_STATUSES: Final = ("done", "failed", "dead", "cancelled")
STATUSES: Final = LIVE_STATUSES + FINAL_STATUSES
MAILBOX_STATUSES: Final = ("ok", "error")


def check_status(status: str, allowed: tuple[str, ...] = STATUSES) -> str:
    """Refuse a status the store would not understand before it is written, not at recovery."""
    if status not in allowed:
        raise ConfigError(f"status must be one of {', '.join(allowed)}; got {status!r}", field="status")
    return status


class _CommandFields(msgspec.Struct, kw_only=True, frozen=True):
    """Fields shared by a journaled command and its dead letter (one record, two stages: conv. 9)."""

    id: int
    lane: str
    fn: str  # import path "module:qualname": commands never carry code, so they can be replayed
    payload: bytes  # encoded arguments, opaque here
    priority: int = 2  # Priority.NORMAL; kept as a plain int so storage never imports config
    cost: int = 0
    tenant: str | None = None
    deadline: float | None = None  # wall-clock epoch seconds: monotonic time dies with the process
    attempts: int = 0
    max_attempts: int | None = None
    status: str = "pending"
    created_at: float = msgspec.field(default_factory=time.time)
    updated_at: float = msgspec.field(default_factory=time.time)
    correlation_id: str | None = None
    metadata: dict[str, Any] | None = None
    mailbox: bool = False


class StoredCommand(_CommandFields, kw_only=True, frozen=True):
    """One journaled command. ``id`` is assigned by the coordinator and never reused in a file."""


class DeadLetter(_CommandFields, kw_only=True, frozen=True):
    """A command that exhausted its retries, with why. Not a ``StoredCommand`` subclass on purpose:
    a dead letter must not be saved back into the journal by accident, only through ``to_command``."""

    error_type: str
    error_message: str
    traceback: str = ""
    failed_at: float = msgspec.field(default_factory=time.time)

    @classmethod
    def from_command(
        cls,
        cmd: StoredCommand,
        *,
        error_type: str,
        error_message: str,
        traceback: str = "",
        failed_at: float | None = None,
    ) -> DeadLetter:
        """The dead letter for ``cmd``, which keeps its id and attempt count for the record."""
        now = time.time() if failed_at is None else failed_at
        fields = msgspec.structs.asdict(cmd)
        fields["status"] = "dead"
        return cls(
            **fields, error_type=error_type, error_message=error_message, traceback=traceback, failed_at=now
        )

    def to_command(self, *, reset_attempts: bool = True, now: float | None = None) -> StoredCommand:
        """A pending command to replay this letter. Attempts restart by default: a replay is a
        deliberate new chance, and keeping the count would let the retry policy refuse it at once."""
        stamp = time.time() if now is None else now
        fields = {name: getattr(self, name) for name in _CommandFields.__struct_fields__}
        fields.update(status="pending", updated_at=stamp)
        if reset_attempts:
            fields["attempts"] = 0
        return StoredCommand(**fields)


class MailboxEntry(msgspec.Struct, kw_only=True, frozen=True):
    """The final outcome of a mailbox command, kept until fetched or until retention removes it."""

    command_id: int
    tenant: str | None = None
    status: str  # "ok" | "error"
    result: bytes | None = None  # encoded result, opaque here; None for errors
    error: str | None = None
    finished_at: float = msgspec.field(default_factory=time.time)
    fetched: bool = False


class QuarantinedRow(msgspec.Struct, frozen=True):
    """A row taken out of service because it failed its checksum or could not be decoded.

    The raw row stays in the backend's quarantine area for forensics; it is never run.
    """

    source: str  # "commands" | "dead_letters" | "mailbox"
    row_id: int
    reason: str
    quarantined_at: float


class RecoveryResult(msgspec.Struct, frozen=True):
    """What ``Storage.load_pending`` found.

    ``max_command_id`` is the highest id ever saved in this store (finished ones included), so a new
    coordinator starts its ids above it and never collides with a mailbox entry or a dead letter.
    """

    commands: list[StoredCommand]
    quarantined: list[QuarantinedRow]
    max_command_id: int

    @property
    def quarantined_count(self) -> int:
        return len(self.quarantined)
