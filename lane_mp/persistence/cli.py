"""CLI commands on a storage file: ``pending``, ``dlq list|replay|clear``, ``mailbox list|fetch``, ``stats``.

``register(main)`` adds them to the project's click group (``lane_mp/cli.py`` owns ``main``). Each
command opens the file, does one thing and closes it (``persistence/inspect.py``), so it is safe
next to a running pool: WAL lets it read while the coordinator writes, and its few writes (clear,
replay) wait for the coordinator's commit like any second connection.

Output: a plain table by default (``inspect.format_table``), ``--json`` for machines. An encrypted
file lists without its key (columns only); commands that need a payload take ``--key-hex`` or the
``LANE_MP_STORAGE_KEY`` environment variable (64 hex digits).

Examples::

    python -m lane_mp pending jobs.db
    python -m lane_mp dlq list jobs.db --json
    python -m lane_mp dlq replay jobs.db 17 42        # back to pending; the next pool runs them
    python -m lane_mp dlq replay jobs.db --all
    python -m lane_mp dlq clear jobs.db --yes
    python -m lane_mp mailbox list jobs.db --tenant acme
    python -m lane_mp mailbox fetch jobs.db 42
    python -m lane_mp stats jobs.db
"""

from __future__ import annotations

from typing import Any, Final

import click

from lane_mp.errors import LaneMPError

from . import inspect as insp

__all__ = ["register"]

PENDING_COLUMNS: Final = ("id", "lane", "fn", "status", "attempts", "tenant", "created_at", "integrity")
DLQ_COLUMNS: Final = ("id", "lane", "fn", "attempts", "error_type", "error_message", "failed_at", "integrity")
MAILBOX_COLUMNS: Final = ("command_id", "tenant", "status", "error", "finished_at", "fetched", "integrity")

_path = click.argument("path", type=click.Path(exists=True, dir_okay=False))
_json = click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
_key = click.option(
    "--key-hex",
    envvar="LANE_MP_STORAGE_KEY",
    default=None,
    help="Encryption key of the file, 64 hex digits (or LANE_MP_STORAGE_KEY).",
)


def _key_bytes(key_hex: str | None) -> bytes | None:
    if key_hex is None:
        return None
    try:
        return bytes.fromhex(key_hex)
    except ValueError as exc:
        raise click.BadParameter("the key must be hex digits", param_hint="--key-hex") from exc


def _emit(rows: Any, columns: tuple[str, ...], as_json: bool) -> None:
    click.echo(insp.to_json(rows) if as_json else insp.format_table(rows, columns))


def _guarded(fn: Any) -> Any:
    """Turn the library's errors into a one-line message and exit code 1, not a traceback."""
    import functools

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LaneMPError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc

    return run


@click.command("pending")
@_path
@_json
@_guarded
def pending(path: str, as_json: bool) -> None:
    """Commands in the journal (pending or running): what the next pool would recover."""
    _emit(insp.pending(path), PENDING_COLUMNS, as_json)


@click.group("dlq")
def dlq() -> None:
    """The dead-letter queue kept in a storage file."""


@dlq.command("list")
@_path
@_json
@click.option("--limit", default=100, show_default=True)
@click.option("--offset", default=0, show_default=True)
@_guarded
def dlq_list(path: str, as_json: bool, limit: int, offset: int) -> None:
    """Dead letters, oldest first."""
    _emit(insp.dlq_list(path, limit=limit, offset=offset), DLQ_COLUMNS, as_json)


@dlq.command("replay")
@_path
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@_key
@_json
@_guarded
def dlq_replay(path: str, ids: tuple[int, ...], replay_all: bool, key_hex: str | None, as_json: bool) -> None:
    """Move dead letters back to pending (attempts reset); the next pool on PATH runs them."""
    if not ids and not replay_all:
        raise click.UsageError("name the ids to replay, or pass --all")
    moved = insp.dlq_replay(path, None if replay_all else list(ids), encryption_key=_key_bytes(key_hex))
    click.echo(
        insp.to_json(moved) if as_json else f"replayed {len(moved)}: {' '.join(map(str, moved)) or '-'}"
    )


@dlq.command("clear")
@_path
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_guarded
def dlq_clear(path: str, yes: bool) -> None:
    """Remove every dead letter."""
    if not yes:
        click.confirm(f"remove every dead letter in {path}?", abort=True)
    click.echo(f"removed {insp.dlq_clear(path)}")


@click.group("mailbox")
def mailbox() -> None:
    """Kept outcomes (mailbox=True, tenant and recovered commands) in a storage file."""


@mailbox.command("list")
@_path
@click.option("--tenant", default=None, help="Only this tenant's outcomes.")
@_json
@_guarded
def mailbox_list(path: str, tenant: str | None, as_json: bool) -> None:
    """Outcomes, oldest first (without their values; see ``mailbox fetch``)."""
    _emit(insp.mailbox_list(path, tenant), MAILBOX_COLUMNS, as_json)


@mailbox.command("fetch")
@_path
@click.argument("command_id", type=int)
@click.option("--mark-fetched", is_flag=True, help="Mark it fetched (off by default: looking is not taking).")
@_key
@_json
@_guarded
def mailbox_fetch(path: str, command_id: int, mark_fetched: bool, key_hex: str | None, as_json: bool) -> None:
    """One outcome with its value (ok) or its error."""
    row = insp.mailbox_fetch(path, command_id, encryption_key=_key_bytes(key_hex), mark_fetched=mark_fetched)
    if row is None:
        raise click.ClickException(f"no outcome for command {command_id} in {path}")
    raw = row.pop("result", None)
    row["value"] = _value(raw) if row["status"] == "ok" and raw is not None else None
    if as_json:
        click.echo(insp.to_json(row))
        return
    for name, value in row.items():
        click.echo(f"{name:>12}: {value if value is not None else '-'}")


def _value(raw: bytes) -> Any:
    """The decoded value when it is plain data, else its repr (the CLI has no user classes)."""
    from .payloads import decode_stored  # imports the codec: only when a value is shown

    try:
        value = decode_stored(raw)
    except Exception as exc:  # noqa: BLE001 - unpickling runs code this process may lack
        return f"<cannot decode: {exc}>"
    try:
        insp.to_json(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


@click.command("stats")
@_path
@_json
@_guarded
def stats(path: str, as_json: bool) -> None:
    """Counts of live, finished, dead-lettered, kept and quarantined records, and file sizes."""
    data = insp.storage_stats(path)
    if as_json:
        click.echo(insp.to_json(data))
        return
    rows = [{"name": k, "value": insp.to_json(v) if isinstance(v, dict) else v} for k, v in data.items()]
    click.echo(insp.format_table(rows, ("name", "value")))


def register(group: click.Group) -> None:
    """Add the storage commands to ``group`` (the ``lane_mp`` CLI's ``main``)."""
    for command in (pending, dlq, mailbox, stats):
        group.add_command(command)
