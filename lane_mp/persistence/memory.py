"""``MemoryStorage``: the ``Storage`` protocol in dicts, for tests and for pools that want no file.

It keeps the protocol's promises that a test can observe: writes are staged until ``commit()``,
``crash()`` drops what was not committed (like a SIGKILL would), final statuses leave the journal,
and a reopened store (``MemoryStorage(store=old.store)``) sees exactly the committed state. It has no
bytes on disk, so checksums, compression and encryption do not apply; ``corrupt(id)`` lets a test
make a row fail recovery the way a damaged SQLite row would.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from lane_mp.errors import StorageError

from .records import (
    FINAL_STATUSES,
    LIVE_STATUSES,
    MAILBOX_STATUSES,
    DeadLetter,
    MailboxEntry,
    QuarantinedRow,
    RecoveryResult,
    StoredCommand,
    check_status,
)

__all__ = ["MemoryStorage", "MemoryStore"]


class MemoryStore(msgspec.Struct):
    """The committed state; share it between instances to model "reopen the same file"."""

    commands: dict[int, StoredCommand] = msgspec.field(default_factory=dict)
    dead_letters: dict[int, DeadLetter] = msgspec.field(default_factory=dict)
    mailbox: dict[int, MailboxEntry] = msgspec.field(default_factory=dict)
    quarantine: list[QuarantinedRow] = msgspec.field(default_factory=list)
    finished: dict[str, int] = msgspec.field(default_factory=dict)
    max_command_id: int = 0
    corrupt: dict[int, str] = msgspec.field(default_factory=dict)

    def snapshot(self) -> MemoryStore:
        # Shallow copies are enough: records are frozen, so only the containers can change.
        return MemoryStore(
            commands=dict(self.commands),
            dead_letters=dict(self.dead_letters),
            mailbox=dict(self.mailbox),
            quarantine=list(self.quarantine),
            finished=dict(self.finished),
            max_command_id=self.max_command_id,
            corrupt=dict(self.corrupt),
        )

    def restore(self, other: MemoryStore) -> None:
        for name in self.__struct_fields__:
            setattr(self, name, getattr(other, name))


class MemoryStorage:
    """Dict-backed :class:`~lane_mp.persistence.storage.Storage` with real group-commit semantics."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self._before: MemoryStore | None = None  # committed state, kept while writes are staged
        self._open = False
        self._commits = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        if self._open:
            self.commit()
        self._open = False

    def commit(self) -> None:
        self._check_open()
        if self._before is not None:
            self._before = None
            self._commits += 1

    def crash(self) -> None:
        """Test helper: lose every staged write and close, as if the process had been killed."""
        if self._before is not None:
            self.store.restore(self._before)
            self._before = None
        self._open = False

    def corrupt(self, command_id: int, reason: str = "checksum mismatch") -> None:
        """Test helper: make the journal row ``command_id`` fail recovery with ``reason``."""
        self.store.corrupt[command_id] = reason

    def _check_open(self) -> None:
        if not self._open:
            raise StorageError("storage is not open")

    def _stage(self) -> MemoryStore:
        self._check_open()
        if self._before is None:
            self._before = self.store.snapshot()
        return self.store

    # -- journal -----------------------------------------------------------------------------

    def save_batch(self, cmds: list[StoredCommand]) -> None:
        for cmd in cmds:
            check_status(cmd.status, LIVE_STATUSES)
        store = self._stage()
        for cmd in cmds:
            store.commands[cmd.id] = cmd
            store.max_command_id = max(store.max_command_id, cmd.id)

    def mark_batch(self, updates: list[tuple[int, str, int]]) -> None:
        for _, status, _ in updates:
            check_status(status)
        store = self._stage()
        now = time.time()
        for command_id, status, attempts in updates:
            cmd = store.commands.get(command_id)
            if cmd is None:
                continue  # already final or never journaled: the same no-op as an UPDATE of no row
            if status in FINAL_STATUSES:
                del store.commands[command_id]
                store.finished[status] = store.finished.get(status, 0) + 1
            else:
                store.commands[command_id] = msgspec.structs.replace(
                    cmd, status=status, attempts=attempts, updated_at=now
                )

    def load_pending(self) -> RecoveryResult:
        self._check_open()
        quarantined: list[QuarantinedRow] = []
        runnable: list[StoredCommand] = []
        for command_id in sorted(self.store.commands):
            cmd = self.store.commands[command_id]
            reason = self.store.corrupt.get(command_id)
            if reason is not None:
                row = QuarantinedRow("commands", command_id, reason, time.time())
                store = self._stage()
                del store.commands[command_id]
                del store.corrupt[command_id]
                store.quarantine.append(row)
                quarantined.append(row)
            elif cmd.status in LIVE_STATUSES:
                runnable.append(cmd)
        self.commit()
        return RecoveryResult(runnable, quarantined, self.store.max_command_id)

    # -- dead letters ------------------------------------------------------------------------

    def add_dead_letters(self, letters: list[DeadLetter]) -> None:
        store = self._stage()
        for letter in letters:
            store.dead_letters[letter.id] = letter
            store.max_command_id = max(store.max_command_id, letter.id)

    def list_dead_letters(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        self._check_open()
        ordered = sorted(self.store.dead_letters.values(), key=lambda d: (d.failed_at, d.id))
        return ordered[offset : offset + limit]

    def pop_dead_letter(self, command_id: int) -> DeadLetter | None:
        if command_id not in self.store.dead_letters:
            self._check_open()
            return None
        return self._stage().dead_letters.pop(command_id)

    def clear_dead_letters(self) -> int:
        store = self._stage()
        count = len(store.dead_letters)
        store.dead_letters = {}
        return count

    # -- mailbox -----------------------------------------------------------------------------

    def put_mailbox(self, entries: list[MailboxEntry]) -> None:
        for entry in entries:
            check_status(entry.status, MAILBOX_STATUSES)
        store = self._stage()
        for entry in entries:
            store.mailbox[entry.command_id] = entry
            store.max_command_id = max(store.max_command_id, entry.command_id)

    def fetch_mailbox(self, command_id: int, *, mark_fetched: bool = True) -> MailboxEntry | None:
        self._check_open()
        entry = self.store.mailbox.get(command_id)
        if entry is None or not mark_fetched or entry.fetched:
            return entry
        entry = msgspec.structs.replace(entry, fetched=True)
        self._stage().mailbox[command_id] = entry
        return entry

    def list_mailbox(self, tenant: str | None = None, *, limit: int | None = None) -> list[MailboxEntry]:
        self._check_open()
        rows = [e for e in self.store.mailbox.values() if tenant is None or e.tenant == tenant]
        rows.sort(key=lambda e: (e.finished_at, e.command_id))
        return rows if limit is None else rows[:limit]

    def cleanup_mailbox(self, older_than: float) -> int:
        store = self._stage()
        old = [cid for cid, e in store.mailbox.items() if e.finished_at < older_than]
        for cid in old:
            del store.mailbox[cid]
        return len(old)

    # -- observation -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        self._check_open()
        store = self.store
        by_status = {status: 0 for status in LIVE_STATUSES}
        for cmd in store.commands.values():
            by_status[cmd.status] = by_status.get(cmd.status, 0) + 1
        return {
            "backend": "memory",
            "schema_version": None,
            "commands": by_status,
            "finished": {status: store.finished.get(status, 0) for status in FINAL_STATUSES},
            "dead_letters": len(store.dead_letters),
            "mailbox": len(store.mailbox),
            "mailbox_unfetched": sum(1 for e in store.mailbox.values() if not e.fetched),
            "quarantined": len(store.quarantine),
            "max_command_id": store.max_command_id,
            "commits": self._commits,
        }
