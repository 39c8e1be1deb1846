"""Records to SQLite rows and back, with every check a row must pass before it is trusted.

Kept apart from ``sqlite.py`` so the one rule is in one place: a row becomes a record only after
its checksum matches, its payload unseals and every field has the declared type
(``msgspec.convert``, strict). Anything else raises :class:`CorruptRecord` with a short ``reason``,
and the caller quarantines the row. Nothing here touches the connection.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

import msgspec

from lane_mp.errors import CorruptRecord, EncodeError

from .records import DeadLetter, MailboxEntry, StoredCommand
from .sealing import Sealer, aad, checksum

__all__ = [
    "COMMAND_COLUMNS",
    "DEAD_LETTER_COLUMNS",
    "KIND_COMMAND",
    "KIND_DEAD_LETTER",
    "KIND_MAILBOX",
    "MAILBOX_COLUMNS",
    "RowCodec",
    "integrity",
]

KIND_COMMAND: Final = b"c"
KIND_DEAD_LETTER: Final = b"d"
KIND_MAILBOX: Final = b"m"

# Column order = record field order, with the stored-form columns (codec, checksum) after payload.
_CMD_FIELDS: Final = StoredCommand.__struct_fields__
COMMAND_COLUMNS: Final = _CMD_FIELDS[:4] + ("codec", "checksum") + _CMD_FIELDS[4:]
_DL_EXTRA: Final = ("error_type", "error_message", "traceback", "failed_at")
DEAD_LETTER_COLUMNS: Final = COMMAND_COLUMNS + _DL_EXTRA
MAILBOX_COLUMNS: Final = (
    "command_id",
    "tenant",
    "status",
    "result",
    "codec",
    "checksum",
    "error",
    "finished_at",
    "fetched",
)

_R = TypeVar("_R", StoredCommand, DeadLetter)


def integrity(stored: Any, expected: Any, extra: Any = None, *, nullable: bool = False) -> str:
    """Return "ok", or why the stored bytes cannot be trusted. Needs no key: inspection uses it too."""
    if stored is None:
        if not nullable:
            return "payload missing"
        stored = b""
    if not isinstance(stored, bytes):
        return f"payload is {type(stored).__name__}, not a blob"
    if extra is not None and not isinstance(extra, bytes):
        return f"metadata is {type(extra).__name__}, not a blob"
    if not isinstance(expected, int) or checksum(stored, extra) != expected:
        return "checksum mismatch"
    return "ok"


class RowCodec:
    """Encodes records into parameter tuples and decodes fetched rows, for one open store."""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer
        self._meta_encoder = msgspec.msgpack.Encoder()
        self._meta_decoder = msgspec.msgpack.Decoder(dict[str, Any])

    # -- to rows -----------------------------------------------------------------------------

    def _seal_command(self, rec: StoredCommand | DeadLetter, kind: bytes) -> tuple[Any, ...]:
        try:
            meta = None if rec.metadata is None else self._meta_encoder.encode(rec.metadata)
        except (TypeError, msgspec.EncodeError) as exc:
            raise EncodeError(
                f"metadata of command {rec.id} cannot be stored: {exc}", command_id=rec.id
            ) from exc
        stored, flags = self.sealer.seal(rec.payload, aad(kind, rec.id))
        return (
            rec.id,
            rec.lane,
            rec.fn,
            stored,
            flags,
            checksum(stored, meta),
            rec.priority,
            rec.cost,
            rec.tenant,
            rec.deadline,
            rec.attempts,
            rec.max_attempts,
            rec.status,
            rec.created_at,
            rec.updated_at,
            rec.correlation_id,
            meta,
            int(rec.mailbox),
        )

    def command_params(self, cmd: StoredCommand) -> tuple[Any, ...]:
        return self._seal_command(cmd, KIND_COMMAND)

    def dead_letter_params(self, letter: DeadLetter) -> tuple[Any, ...]:
        return self._seal_command(letter, KIND_DEAD_LETTER) + (
            letter.error_type,
            letter.error_message,
            letter.traceback,
            letter.failed_at,
        )

    def mailbox_params(self, entry: MailboxEntry) -> tuple[Any, ...]:
        if entry.result is None:
            stored, flags = None, 0
            digest = checksum(b"")
        else:
            stored, flags = self.sealer.seal(entry.result, aad(KIND_MAILBOX, entry.command_id))
            digest = checksum(stored)
        return (
            entry.command_id,
            entry.tenant,
            entry.status,
            stored,
            flags,
            digest,
            entry.error,
            entry.finished_at,
            int(entry.fetched),
        )

    # -- from rows ---------------------------------------------------------------------------

    def _open_command(self, row: tuple[Any, ...], kind: bytes, cls: type[_R], width: int) -> _R:
        row_id, stored, flags, digest, meta = row[0], row[3], row[4], row[5], row[16]
        reason = integrity(stored, digest, meta)
        if reason != "ok":
            raise CorruptRecord(reason, reason=reason, row_id=row_id)
        if not isinstance(row_id, int) or not isinstance(flags, int):
            raise CorruptRecord("id or codec is not an integer", reason="bad field", row_id=row_id)
        payload = self.sealer.unseal(stored, flags, aad(kind, row_id))
        try:
            metadata = None if meta is None else self._meta_decoder.decode(meta)
        except msgspec.DecodeError as exc:
            raise CorruptRecord(f"metadata does not decode: {exc}", reason="metadata", row_id=row_id) from exc
        fields = dict(zip(_CMD_FIELDS, row[:3] + (payload,) + tuple(row[6:16])))
        fields["metadata"] = metadata
        fields["mailbox"] = bool(row[17]) if isinstance(row[17], int) else row[17]
        if width > len(COMMAND_COLUMNS):
            fields.update(zip(_DL_EXTRA, row[len(COMMAND_COLUMNS) : width]))
        try:
            return msgspec.convert(fields, cls)  # strict: a text where an int belongs is corruption
        except msgspec.ValidationError as exc:
            raise CorruptRecord(f"bad field: {exc}", reason="bad field", row_id=row_id) from exc

    def command(self, row: tuple[Any, ...]) -> StoredCommand:
        return self._open_command(row, KIND_COMMAND, StoredCommand, len(COMMAND_COLUMNS))

    def dead_letter(self, row: tuple[Any, ...]) -> DeadLetter:
        return self._open_command(row, KIND_DEAD_LETTER, DeadLetter, len(DEAD_LETTER_COLUMNS))

    def mailbox(self, row: tuple[Any, ...]) -> MailboxEntry:
        command_id, stored, flags, digest = row[0], row[3], row[4], row[5]
        reason = integrity(stored, digest, nullable=True)
        if reason != "ok":
            raise CorruptRecord(reason, reason=reason, row_id=command_id)
        if not isinstance(command_id, int) or not isinstance(flags, int):
            raise CorruptRecord("id or codec is not an integer", reason="bad field", row_id=command_id)
        result = None if stored is None else self.sealer.unseal(stored, flags, aad(KIND_MAILBOX, command_id))
        fields = dict(zip(MAILBOX_COLUMNS, row))
        del fields["codec"], fields["checksum"]
        fields["result"] = result
        fields["fetched"] = bool(row[8]) if isinstance(row[8], int) else row[8]
        try:
            return msgspec.convert(fields, MailboxEntry)
        except msgspec.ValidationError as exc:
            raise CorruptRecord(f"bad field: {exc}", reason="bad field", row_id=command_id) from exc
