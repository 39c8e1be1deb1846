"""Persistence: the optional journal of commands, the persistent dead-letter queue and the mailbox.

The coordinator is the only writer (see ``storage.py`` for the contract); ``inspect`` holds the
read-mostly functions behind the CLI. Wiring into the pool: ``journal`` (the coordinator's side:
staging, one group commit per loop turn, recovery), ``client`` (the caller's side: durable-submit
acknowledgements, mailbox, stored dead letters), ``payloads`` (stored forms that never point into
shared memory), ``cli`` (click commands). Nothing here starts a process; the optional ``notifier``
starts one thread in the coordinator.
"""

from __future__ import annotations

from .memory import MemoryStorage, MemoryStore
from .records import (
    FINAL_STATUSES,
    LIVE_STATUSES,
    STATUSES,
    DeadLetter,
    MailboxEntry,
    QuarantinedRow,
    RecoveryResult,
    StoredCommand,
)
from .sqlite import SQLiteStorage
from .storage import Storage

__all__ = [
    "FINAL_STATUSES",
    "LIVE_STATUSES",
    "STATUSES",
    "DeadLetter",
    "MailboxEntry",
    "MemoryStorage",
    "MemoryStore",
    "QuarantinedRow",
    "RecoveryResult",
    "SQLiteStorage",
    "Storage",
    "StoredCommand",
]
