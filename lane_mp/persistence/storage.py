"""The ``Storage`` protocol: what the coordinator needs from a journal, and what it may rely on.

One writer: the coordinator owns one open ``Storage`` and calls it from one thread. The contract:

* **Group commit.** ``save_batch``, ``mark_batch``, ``add_dead_letters``, ``pop_dead_letter``,
  ``clear_dead_letters``, ``put_mailbox``, ``fetch_mailbox`` (marks fetched) and ``cleanup_mailbox``
  only *stage* writes; ``commit()`` makes everything staged since the last commit durable at once,
  in one transaction. The coordinator calls it once per loop turn, so the cost of a commit is paid
  per turn, never per command. Reads see the writer's own staged writes.
* **All or nothing per commit.** After a crash a store holds exactly the writes of the commits that
  returned, never part of one. If a write raises :class:`~lane_mp.errors.StorageError`, everything
  staged since the last commit is discarded: treat it as not journaled.
* **Live vs final.** ``mark_batch`` to a live status (pending, running) updates the row; to a final
  status (done, failed, dead, cancelled) removes it from the journal and counts it in ``stats()``.
  ``save_batch`` is an upsert by id.
* **Recovery** (``load_pending``) returns every pending or running command in id order, with its
  attempt count, and never returns a row that fails its checksum or decoding: such a row is
  quarantined, reported in the result and counted in ``stats()["quarantined"]``.
* **Errors**: backend failures are :class:`~lane_mp.errors.StorageError` (the backend's own error
  is the ``__cause__``); a wrong encryption key is :class:`~lane_mp.errors.WrongKey` at ``open()``;
  a single corrupt record asked for by id is :class:`~lane_mp.errors.CorruptRecord`.

Implementations: :class:`MemoryStorage` (tests, no durability) and :class:`SQLiteStorage`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .records import DeadLetter, MailboxEntry, RecoveryResult, StoredCommand

__all__ = ["MemoryStorage", "SQLiteStorage", "Storage"]


@runtime_checkable
class Storage(Protocol):
    """A journal of live commands, a dead-letter queue and a mailbox, written by one coordinator."""

    def open(self) -> None:
        """Open (creating or migrating if needed). Must be called on the thread that will use it."""

    def close(self) -> None:
        """Commit what is staged and release the backend. Idempotent."""

    def commit(self) -> None:
        """Make every write staged since the last commit durable, in one transaction."""

    def save_batch(self, cmds: list[StoredCommand]) -> None:
        """Stage commands for the journal (upsert by id)."""

    def mark_batch(self, updates: list[tuple[int, str, int]]) -> None:
        """Stage (id, new status, attempts) updates; a final status removes the row from the journal."""

    def load_pending(self) -> RecoveryResult:
        """Pending and running commands, corrupt rows quarantined. Commits its quarantine moves."""

    def add_dead_letters(self, letters: list[DeadLetter]) -> None:
        """Stage dead letters (upsert by command id)."""

    def list_dead_letters(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        """Dead letters, oldest first."""

    def pop_dead_letter(self, command_id: int) -> DeadLetter | None:
        """Remove and return one dead letter (for replay); None if there is none with that id."""

    def clear_dead_letters(self) -> int:
        """Remove every dead letter; returns how many."""

    def put_mailbox(self, entries: list[MailboxEntry]) -> None:
        """Stage final outcomes for the mailbox (upsert by command id)."""

    def fetch_mailbox(self, command_id: int, *, mark_fetched: bool = True) -> MailboxEntry | None:
        """One outcome by command id; by default it is marked fetched (a staged write)."""

    def list_mailbox(self, tenant: str | None = None, *, limit: int | None = None) -> list[MailboxEntry]:
        """Outcomes, oldest first; all tenants when ``tenant`` is None."""

    def cleanup_mailbox(self, older_than: float) -> int:
        """Remove outcomes finished before ``older_than`` (epoch seconds); returns how many."""

    def stats(self) -> dict[str, Any]:
        """A snapshot of counts (see the implementations for the keys); plain data, JSON-able."""


# Imported last: the implementations depend on records only, and users import them from here.
from .memory import MemoryStorage
from .sqlite import SQLiteStorage
