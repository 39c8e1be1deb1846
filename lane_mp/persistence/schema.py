"""The SQLite schema and its migrations.

Version 0 is "no ``schema_version`` table": a new or empty file. Each entry of :data:`MIGRATIONS`
takes the file from version ``n`` to ``n + 1``; :func:`migrate` applies the missing ones in order,
each in its own transaction together with the version bump, so a crash mid-migration leaves the
file at the last complete version, never in between. A file from a *newer* lane_mp is refused
rather than guessed at.

Schema evolution is append-only: add a migration, never edit a released one.

Why terminal commands leave the ``commands`` table (see ``SQLiteStorage.mark_batch``): a long batch
job would otherwise grow the journal without bound; the table holds only live work, and finished
work is counted in ``meta`` (``finished.<status>``). ``meta.max_command_id`` remembers the highest id
ever saved, so ids are not reused after their rows are gone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final

from lane_mp.errors import StorageError

__all__ = ["CURRENT_VERSION", "MIGRATIONS", "migrate", "read_version"]

_COMMAND_COLUMNS: Final = """
    id             INTEGER PRIMARY KEY,
    lane           TEXT    NOT NULL,
    fn             TEXT    NOT NULL,
    payload        BLOB,
    codec          INTEGER NOT NULL,
    checksum       INTEGER NOT NULL,
    priority       INTEGER NOT NULL,
    cost           INTEGER NOT NULL,
    tenant         TEXT,
    deadline       REAL,
    attempts       INTEGER NOT NULL,
    max_attempts   INTEGER,
    status         TEXT    NOT NULL,
    created_at     REAL    NOT NULL,
    updated_at     REAL    NOT NULL,
    correlation_id TEXT,
    metadata       BLOB,
    mailbox        INTEGER NOT NULL
"""

_V1: Final = (
    # No index on commands.status: the table holds only live rows, and every index is paid again
    # on each insert and status update of the hot path.
    f"CREATE TABLE commands ({_COMMAND_COLUMNS})",
    f"""CREATE TABLE dead_letters ({_COMMAND_COLUMNS},
        error_type    TEXT NOT NULL,
        error_message TEXT NOT NULL,
        traceback     TEXT NOT NULL,
        failed_at     REAL NOT NULL)""",
    "CREATE INDEX dead_letters_by_time ON dead_letters (failed_at, id)",
    """CREATE TABLE mailbox (
        command_id  INTEGER PRIMARY KEY,
        tenant      TEXT,
        status      TEXT    NOT NULL,
        result      BLOB,
        codec       INTEGER NOT NULL,
        checksum    INTEGER NOT NULL,
        error       TEXT,
        finished_at REAL    NOT NULL,
        fetched     INTEGER NOT NULL)""",
    "CREATE INDEX mailbox_by_tenant ON mailbox (tenant, finished_at)",
    "CREATE INDEX mailbox_by_time ON mailbox (finished_at)",
    """CREATE TABLE quarantine (
        qid            INTEGER PRIMARY KEY AUTOINCREMENT,
        source         TEXT    NOT NULL,
        row_id         INTEGER,
        reason         TEXT    NOT NULL,
        quarantined_at REAL    NOT NULL,
        row            BLOB)""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "INSERT INTO meta (key, value) VALUES ('max_command_id', 0)",
)


def _to_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _to_v1,
}
CURRENT_VERSION: Final = 1


def read_version(conn: sqlite3.Connection) -> int:
    """The file's schema version; 0 for a file that has never been initialised."""
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    found = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if found is None else int(found[0])


def migrate(conn: sqlite3.Connection, target: int = CURRENT_VERSION) -> tuple[int, int]:
    """Bring the file to ``target``; returns (version found, version now).

    ``conn`` must be in autocommit mode (``isolation_level=None``): transactions are explicit here.
    ``BEGIN IMMEDIATE`` takes the write lock before reading the version, so two processes opening a
    new file at once cannot both run the same migration.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = read_version(conn)
        if found > target:
            raise StorageError(
                f"storage file has schema version {found}; this lane_mp reads up to {target}",
                found=found,
                supported=target,
            )
        conn.execute("ROLLBACK")
        version = found
        while version < target:
            step = MIGRATIONS.get(version)
            if step is None:
                raise StorageError(f"no migration from schema version {version}", found=version)
            conn.execute("BEGIN IMMEDIATE")
            if read_version(conn) != version:  # another process migrated meanwhile
                conn.execute("ROLLBACK")
                version = read_version(conn)
                continue
            step(conn)
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
            conn.execute("COMMIT")
            version += 1
        return found, version
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
