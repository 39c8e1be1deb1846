"""``SQLiteStorage``: the embedded journal, dead-letter queue and mailbox in one SQLite file.

Why these choices:

* **WAL mode, one writer.** Readers (the CLI) never block the coordinator's commits, and a commit
  is an append to the WAL. With ``synchronous=NORMAL`` (the default) a commit survives a killed
  process but the last commits may be lost on power failure; ``FULL`` fsyncs every commit.
* **Explicit transactions** (``isolation_level=None``): the first write after a commit opens one
  ``BEGIN IMMEDIATE``; ``commit()`` ends it. That is the group commit of the ``Storage`` protocol,
  and what makes a SIGKILL leave whole commits only.
* **One connection, one thread.** ``open()`` connects on the calling thread and sqlite3's own
  thread check stays on, so use from another thread is an error instead of a heisenbug.
* **Errors.** ``sqlite3.Error`` is translated to :class:`StorageError` here and only here
  (convention 13). A failed write rolls back everything staged since the last commit, so the caller
  never has to guess which half of a batch made it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Self

import msgspec

from lane_mp.errors import ConfigError, CorruptRecord, StorageError, WrongKey

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
from .rows import COMMAND_COLUMNS, DEAD_LETTER_COLUMNS, MAILBOX_COLUMNS, RowCodec
from .schema import migrate, read_version
from .sealing import Sealer

__all__ = ["SYNCHRONOUS_MODES", "SQLiteStorage"]

SYNCHRONOUS_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
# How long a statement waits for another connection's lock (the CLI clearing the DLQ, a second
# pool by mistake) before it fails; long enough for any one commit, short enough to surface a bug.
BUSY_TIMEOUT_S: Final = 5.0

_CMD_COLS: Final = ", ".join(COMMAND_COLUMNS)
_DL_COLS: Final = ", ".join(DEAD_LETTER_COLUMNS)
_MB_COLS: Final = ", ".join(MAILBOX_COLUMNS)
_LIVE_SQL: Final = ", ".join(f"'{s}'" for s in LIVE_STATUSES)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class SQLiteStorage:
    """The default :class:`~lane_mp.persistence.storage.Storage`: one SQLite file, WAL mode.

    ``metadata_only=True`` opens an encrypted file without its key, for inspection: listings of
    columns work, anything that needs a plaintext payload raises :class:`WrongKey`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression: bool = False,
        encryption_key: bytes | None = None,
        synchronous: str = "NORMAL",
        metadata_only: bool = False,
    ) -> None:
        mode = str(synchronous).upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ConfigError(
                f"synchronous must be one of {SYNCHRONOUS_MODES}; got {synchronous!r}", field="synchronous"
            )
        self.path = Path(path)
        self.synchronous = mode
        # Kept so the store pickles as its configuration (see __reduce__), never as a connection.
        self._config: dict[str, Any] = {
            "compression": compression,
            "encryption_key": encryption_key,
            "synchronous": mode,
            "metadata_only": metadata_only,
        }
        self.metadata_only = metadata_only
        # Built now, not at open(): a bad key length or a missing 'cryptography' fails at construction.
        self._sealer = Sealer(compression=compression, key=encryption_key)
        self._rows = RowCodec(self._sealer)
        self._conn: sqlite3.Connection | None = None
        self._commits = 0
        self.schema_found: int | None = None  # the version the file had before open() migrated it

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open storage file {self.path}: {exc}", path=str(self.path)) from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal" and str(self.path) != ":memory:":
                raise StorageError(f"{self.path}: could not switch to WAL (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self.schema_found, _ = migrate(conn)
            self._check_key(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"cannot open storage file {self.path}: {exc}", path=str(self.path)) from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _check_key(self, conn: sqlite3.Connection) -> None:
        token = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        self._sealer.verify_key_check(None if token is None else token[0])
        if self._sealer.locked and not self.metadata_only:
            raise WrongKey(f"{self.path} is encrypted: pass encryption_key to open it")
        if token is None and self._sealer.encrypting:
            # First key for this file: from now on a different key is refused at open.
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('key_check', ?)",
                (self._sealer.make_key_check(),),
            )
            again = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
            self._sealer.verify_key_check(again[0])  # another opener may have won the race

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("COMMIT")
                self._commits += 1
            conn.close()
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"closing {self.path} failed: {exc}", path=str(self.path)) from exc

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as an *unopened* store with the same settings: the pool hands its storage to the
        coordinator process, which opens it on its own thread (the one-writer rule)."""
        return (_reopen, (str(self.path), self._config))

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def commit(self) -> None:
        with self._sql("commit") as conn:
            if conn.in_transaction:
                conn.execute("COMMIT")
                self._commits += 1

    @contextmanager
    def _sql(self, op: str, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The sqlite3 -> StorageError boundary; ``write`` opens the group transaction if needed."""
        conn = self._conn
        if conn is None:
            raise StorageError(f"{op}: storage {self.path} is not open", op=op)
        try:
            if write and not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
        except sqlite3.Error as exc:
            self._rollback_quietly(conn)
            raise StorageError(f"{op} failed on {self.path}: {exc}", op=op, path=str(self.path)) from exc

    @staticmethod
    def _rollback_quietly(conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is already unusable; the original error is the one to report

    # -- journal -----------------------------------------------------------------------------

    def save_batch(self, cmds: list[StoredCommand]) -> None:
        if not cmds:
            return
        for cmd in cmds:
            check_status(cmd.status, LIVE_STATUSES)
        params = [self._rows.command_params(cmd) for cmd in cmds]  # encode all before any SQL runs
        with self._sql("save_batch", write=True) as conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO commands ({_CMD_COLS}) VALUES ({_marks(len(COMMAND_COLUMNS))})",
                params,
            )
            self._raise_max_id(conn, max(cmd.id for cmd in cmds))

    @staticmethod
    def _raise_max_id(conn: sqlite3.Connection, candidate: int) -> None:
        conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'max_command_id'", (candidate,))

    def mark_batch(self, updates: list[tuple[int, str, int]]) -> None:
        if not updates:
            return
        for _, status, _ in updates:
            check_status(status)
        now = time.time()
        with self._sql("mark_batch", write=True) as conn:
            # Runs of one status become one executemany; order across runs is kept, because the
            # same id may appear twice in a turn (started, then finished).
            start = 0
            while start < len(updates):
                status = updates[start][1]
                end = start
                while end < len(updates) and updates[end][1] == status:
                    end += 1
                run = updates[start:end]
                if status in FINAL_STATUSES:
                    cur = conn.executemany("DELETE FROM commands WHERE id = ?", [(u[0],) for u in run])
                    if cur.rowcount > 0:
                        conn.execute(
                            "INSERT INTO meta (key, value) VALUES (?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                            (f"finished.{status}", cur.rowcount),
                        )
                else:
                    conn.executemany(
                        "UPDATE commands SET status = ?, attempts = ?, updated_at = ? WHERE id = ?",
                        [(status, attempts, now, cid) for cid, _, attempts in run],
                    )
                start = end

    def load_pending(self) -> RecoveryResult:
        commands: list[StoredCommand] = []
        quarantined: list[QuarantinedRow] = []
        with self._sql("load_pending") as conn:
            rows = conn.execute(
                f"SELECT {_CMD_COLS} FROM commands WHERE status IN ({_LIVE_SQL}) ORDER BY id"
            ).fetchall()
        for row in rows:
            try:
                commands.append(self._rows.command(row))
            except CorruptRecord as exc:
                quarantined.append(self._quarantine("commands", row, exc))
        with self._sql("load_pending") as conn:
            found = conn.execute("SELECT value FROM meta WHERE key = 'max_command_id'").fetchone()
        self.commit()  # recovery is rare; make the quarantine moves durable before work restarts
        return RecoveryResult(commands, quarantined, int(found[0]) if found else 0)

    def _quarantine(self, source: str, row: tuple[Any, ...], exc: CorruptRecord) -> QuarantinedRow:
        """Move one bad row aside (kept raw for forensics) so it is reported once, never run."""
        entry = QuarantinedRow(source, row[0], getattr(exc, "reason", str(exc)), time.time())
        key = "command_id" if source == "mailbox" else "id"
        with self._sql("quarantine", write=True) as conn:
            conn.execute(
                "INSERT INTO quarantine (source, row_id, reason, quarantined_at, row) VALUES (?, ?, ?, ?, ?)",
                (source, row[0], str(exc), entry.quarantined_at, msgspec.msgpack.encode(list(row))),
            )
            conn.execute(f"DELETE FROM {source} WHERE {key} = ?", (row[0],))
        return entry

    # -- dead letters ------------------------------------------------------------------------

    def add_dead_letters(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        params = [self._rows.dead_letter_params(letter) for letter in letters]
        with self._sql("add_dead_letters", write=True) as conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO dead_letters ({_DL_COLS}) "
                f"VALUES ({_marks(len(DEAD_LETTER_COLUMNS))})",
                params,
            )
            self._raise_max_id(conn, max(letter.id for letter in letters))

    def list_dead_letters(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        with self._sql("list_dead_letters") as conn:
            rows = conn.execute(
                f"SELECT {_DL_COLS} FROM dead_letters ORDER BY failed_at, id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        out: list[DeadLetter] = []
        for row in rows:
            try:
                out.append(self._rows.dead_letter(row))
            except CorruptRecord as exc:
                self._quarantine("dead_letters", row, exc)
        return out

    def pop_dead_letter(self, command_id: int) -> DeadLetter | None:
        with self._sql("pop_dead_letter") as conn:
            row = conn.execute(f"SELECT {_DL_COLS} FROM dead_letters WHERE id = ?", (command_id,)).fetchone()
        if row is None:
            return None
        try:
            letter = self._rows.dead_letter(row)
        except CorruptRecord as exc:
            self._quarantine("dead_letters", row, exc)
            raise
        with self._sql("pop_dead_letter", write=True) as conn:
            conn.execute("DELETE FROM dead_letters WHERE id = ?", (command_id,))
        return letter

    def clear_dead_letters(self) -> int:
        with self._sql("clear_dead_letters", write=True) as conn:
            return conn.execute("DELETE FROM dead_letters").rowcount

    # -- mailbox -----------------------------------------------------------------------------

    def put_mailbox(self, entries: list[MailboxEntry]) -> None:
        if not entries:
            return
        for entry in entries:
            check_status(entry.status, MAILBOX_STATUSES)
        params = [self._rows.mailbox_params(entry) for entry in entries]
        with self._sql("put_mailbox", write=True) as conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO mailbox ({_MB_COLS}) VALUES ({_marks(len(MAILBOX_COLUMNS))})", params
            )
            # A mailbox entry may belong to a command that was never journaled (not durable): its id
            # still counts, or the next pool could reuse it and overwrite this outcome.
            self._raise_max_id(conn, max(entry.command_id for entry in entries))

    def fetch_mailbox(self, command_id: int, *, mark_fetched: bool = True) -> MailboxEntry | None:
        with self._sql("fetch_mailbox") as conn:
            row = conn.execute(
                f"SELECT {_MB_COLS} FROM mailbox WHERE command_id = ?", (command_id,)
            ).fetchone()
        if row is None:
            return None
        try:
            entry = self._rows.mailbox(row)
        except CorruptRecord as exc:
            self._quarantine("mailbox", row, exc)
            raise
        if mark_fetched and not entry.fetched:
            with self._sql("fetch_mailbox", write=True) as conn:
                conn.execute("UPDATE mailbox SET fetched = 1 WHERE command_id = ?", (command_id,))
            entry = msgspec.structs.replace(entry, fetched=True)
        return entry

    def list_mailbox(self, tenant: str | None = None, *, limit: int | None = None) -> list[MailboxEntry]:
        where, params = ("", []) if tenant is None else ("WHERE tenant = ?", [tenant])
        with self._sql("list_mailbox") as conn:
            rows = conn.execute(
                f"SELECT {_MB_COLS} FROM mailbox {where} ORDER BY finished_at, command_id LIMIT ?",
                (*params, -1 if limit is None else limit),
            ).fetchall()
        out: list[MailboxEntry] = []
        for row in rows:
            try:
                out.append(self._rows.mailbox(row))
            except CorruptRecord as exc:
                self._quarantine("mailbox", row, exc)
        return out

    def cleanup_mailbox(self, older_than: float) -> int:
        with self._sql("cleanup_mailbox", write=True) as conn:
            return conn.execute("DELETE FROM mailbox WHERE finished_at < ?", (older_than,)).rowcount

    # -- observation -------------------------------------------------------------------------

    def read_rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Run one read-only query, rows as dicts: for inspection tools, never for the hot path."""
        with self._sql("read_rows") as conn:
            cur = conn.execute(sql, params)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def stats(self) -> dict[str, Any]:
        with self._sql("stats") as conn:
            by_status = {status: 0 for status in LIVE_STATUSES}
            for status, count in conn.execute("SELECT status, count(*) FROM commands GROUP BY status"):
                by_status[status] = count
            meta = dict(conn.execute("SELECT key, value FROM meta WHERE key != 'key_check'").fetchall())
            encrypted = conn.execute("SELECT 1 FROM meta WHERE key = 'key_check'").fetchone() is not None

            def count(sql: str) -> int:
                return int(conn.execute(sql).fetchone()[0])

            out: dict[str, Any] = {
                "backend": "sqlite",
                "path": str(self.path),
                "schema_version": read_version(conn),
                "commands": by_status,
                "finished": {status: int(meta.get(f"finished.{status}", 0)) for status in FINAL_STATUSES},
                "dead_letters": count("SELECT count(*) FROM dead_letters"),
                "mailbox": count("SELECT count(*) FROM mailbox"),
                "mailbox_unfetched": count("SELECT count(*) FROM mailbox WHERE fetched = 0"),
                "quarantined": count("SELECT count(*) FROM quarantine"),
                "max_command_id": int(meta.get("max_command_id", 0)),
                "commits": self._commits,
                "encrypted": encrypted,
                "compression": self._sealer.compression,
                "synchronous": self.synchronous,
            }
        out["file_bytes"] = _size(self.path)
        out["wal_bytes"] = _size(Path(f"{self.path}-wal"))
        return out


def _reopen(path: str, config: dict[str, Any]) -> SQLiteStorage:
    return SQLiteStorage(path, **config)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
