"""Data functions behind the CLI (``pending``, ``dlq list|replay|clear``, ``mailbox list|fetch``, ``stats``).

Each call opens the storage file, does one thing and closes it, so it can run next to a live pool:
WAL lets it read while the coordinator writes, and the few writes here (clear, replay, fetch with
``mark_fetched``) wait for the coordinator's commit like any second connection would.

Listings read columns only and never decrypt, so they work on an encrypted file without its key;
each row carries ``integrity`` ("ok" or why not), computed from the checksum without touching the
payload. They never quarantine either: moving rows is the coordinator's job at recovery.

Results are plain dicts (bytes stay bytes); :func:`to_json` and :func:`format_table` render them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import msgspec

from lane_mp.errors import CorruptRecord, StorageError

from .records import DeadLetter
from .rows import integrity
from .sqlite import SQLiteStorage

__all__ = [
    "dlq_clear",
    "dlq_list",
    "dlq_replay",
    "format_table",
    "mailbox_fetch",
    "mailbox_list",
    "pending",
    "storage_stats",
    "to_json",
]

MAX_CELL: Final = 48  # wider cells are cut with an ellipsis; --json has the full text
_REPLAY_PAGE: Final = 500


@contextmanager
def _opened(path: str | os.PathLike[str], key: bytes | None = None) -> Iterator[SQLiteStorage]:
    # Never create a file by looking at it: a typo in the path should be an error, not an empty db.
    if not os.path.exists(path):
        raise StorageError(f"no storage file at {os.fspath(path)}", path=os.fspath(path))
    store = SQLiteStorage(path, encryption_key=key, metadata_only=key is None)
    store.open()
    try:
        yield store
    finally:
        store.close()


def _checked(
    rows: list[dict[str, Any]], blob: str, *, extra: str | None = None, nullable: bool = False
) -> list[dict[str, Any]]:
    """Replace the raw blob columns by their size and an integrity verdict (metadata decoded)."""
    for row in rows:
        stored, digest = row.pop(blob), row.pop("checksum")
        meta = row[extra] if extra else None
        row[f"{blob}_bytes"] = len(stored) if isinstance(stored, (bytes, str)) else 0
        row["integrity"] = verdict = integrity(stored, digest, meta, nullable=nullable)
        if extra:
            row[extra] = _metadata(meta) if verdict == "ok" else None
    return rows


def _metadata(blob: Any) -> Any:
    if blob is None:
        return None
    try:
        return msgspec.msgpack.decode(blob)
    except msgspec.DecodeError:
        return None


_COMMAND_VIEW: Final = (
    "id, lane, fn, status, priority, cost, tenant, deadline, attempts, max_attempts, "
    "created_at, updated_at, correlation_id, mailbox, payload, checksum, metadata"
)


def pending(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Commands in the journal (pending or running), in id order."""
    with _opened(path) as store:
        rows = store.read_rows(f"SELECT {_COMMAND_VIEW} FROM commands ORDER BY id")
    for row in rows:
        row["mailbox"] = bool(row["mailbox"])
    return _checked(rows, "payload", extra="metadata")


def dlq_list(path: str | os.PathLike[str], *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Dead letters, oldest first, with their error type, message and traceback."""
    with _opened(path) as store:
        rows = store.read_rows(
            f"SELECT {_COMMAND_VIEW}, error_type, error_message, traceback, failed_at "
            "FROM dead_letters ORDER BY failed_at, id LIMIT ? OFFSET ?",
            (limit, offset),
        )
    for row in rows:
        row["mailbox"] = bool(row["mailbox"])
    return _checked(rows, "payload", extra="metadata")


def dlq_clear(path: str | os.PathLike[str]) -> int:
    """Remove every dead letter; returns how many were removed."""
    with _opened(path) as store:
        return store.clear_dead_letters()


def dlq_replay(
    path: str | os.PathLike[str],
    ids: Sequence[int] | None = None,
    *,
    encryption_key: bytes | None = None,
) -> list[int]:
    """Move dead letters (all, or ``ids``) back into the journal as pending, attempts reset.

    Nothing runs them here: the next pool that opens the file recovers them like any pending
    command. Moved in one transaction, so a letter is never both dead and pending after a crash.
    Returns the ids moved; ids that are not dead letters are skipped, and so are corrupt letters
    (quarantined by the attempt, like the coordinator would).
    """
    moved: list[int] = []
    with _opened(path, encryption_key) as store:
        if ids is None:
            letters: list[DeadLetter] = []
            while page := store.list_dead_letters(_REPLAY_PAGE, len(letters)):
                letters.extend(page)
            ids = [letter.id for letter in letters]
        now = time.time()
        for command_id in ids:
            try:
                letter = store.pop_dead_letter(command_id)
            except CorruptRecord:
                continue  # quarantined by the pop; the others still deserve their replay
            if letter is not None:
                store.save_batch([letter.to_command(now=now)])
                moved.append(command_id)
    return moved


def mailbox_list(path: str | os.PathLike[str], tenant: str | None = None) -> list[dict[str, Any]]:
    """Kept outcomes (all tenants, or one), oldest first, without their result bytes."""
    where, params = ("", ()) if tenant is None else ("WHERE tenant = ?", (tenant,))
    with _opened(path) as store:
        rows = store.read_rows(
            "SELECT command_id, tenant, status, error, finished_at, fetched, result, checksum "
            f"FROM mailbox {where} ORDER BY finished_at, command_id",
            params,
        )
    for row in rows:
        row["fetched"] = bool(row["fetched"])
    return _checked(rows, "result", nullable=True)


def mailbox_fetch(
    path: str | os.PathLike[str],
    command_id: int,
    *,
    encryption_key: bytes | None = None,
    mark_fetched: bool = False,
) -> dict[str, Any] | None:
    """One outcome with its (still encoded) result bytes; None if there is none.

    ``mark_fetched`` is off by default: looking at an outcome from the CLI should not change what
    the application that owns it will see. A corrupt entry raises ``CorruptRecord``.
    """
    with _opened(path, encryption_key) as store:
        entry = store.fetch_mailbox(command_id, mark_fetched=mark_fetched)
    return None if entry is None else msgspec.structs.asdict(entry)


def storage_stats(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts of live, finished, dead-lettered, kept and quarantined records, and file sizes."""
    with _opened(path) as store:
        out = store.stats()
    del out["commits"]  # a count of this call's own commits: meaningless to a reader
    return out


def to_json(obj: Any) -> str:
    """JSON for ``--json`` output; bytes become base64 strings (msgspec's standard)."""
    return msgspec.json.encode(obj).decode()


def _is_time_column(name: str) -> bool:
    return name.endswith("_at") or name == "deadline"


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, float):
        if _is_time_column(name):
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        text = to_json(value)
    else:
        text = str(value)
    first, _, rest = text.partition("\n")
    if rest or len(first) > MAX_CELL:  # tracebacks and long messages: the first line says enough
        first = first[: MAX_CELL - 1] + "…"
    return first


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of ``columns`` (missing keys show as "-"); numbers right-aligned."""
    cells = [[_cell(col, row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(line[i]) for line in cells]) for i, col in enumerate(columns)]
    numeric = [
        bool(rows)
        and all(
            isinstance(r.get(col), int) and not isinstance(r.get(col), bool)
            for r in rows
            if r.get(col) is not None
        )
        for col in columns
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out.extend(line(values) for values in cells)
    if not rows:
        out.append("(no rows)")
    return "\n".join(out)
