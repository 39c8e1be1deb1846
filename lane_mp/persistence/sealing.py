"""How a payload is guarded on disk: optional zlib, optional AES-GCM, always an xxh3-64 checksum.

Stored form of one payload (the row's ``codec`` column says which steps were applied, per row, so a
file written with compression on can be read with it off and vice versa)::

    plain  ──zlib (FLAG_ZLIB, only if it pays)──▶ z ──AES-GCM (FLAG_AESGCM)──▶ nonce(12) ‖ ct ‖ tag(16)
                                                                                   │
    checksum = xxh3_64(stored bytes [+ metadata bytes]) ◀───────────────────────────┘

Why the checksum is over the *stored* bytes: it is checked before anything else, so a flipped bit
is named as corruption (cheaply, without a key) instead of surfacing as a zlib or GCM error.
Why the table kind and row id are the AES-GCM associated data (:func:`aad`): an encrypted payload
copied onto another row fails authentication instead of silently running with someone else's
arguments.

``cryptography`` is an optional extra; it is imported only when a key is given.
"""

from __future__ import annotations

import os
import zlib
from typing import Any, Final

import xxhash

from lane_mp.errors import ConfigError, CorruptRecord, WrongKey

__all__ = ["FLAG_AESGCM", "FLAG_ZLIB", "KEY_BYTES", "Sealer", "aad", "checksum"]

FLAG_ZLIB: Final = 1
FLAG_AESGCM: Final = 2
_KNOWN_FLAGS: Final = FLAG_ZLIB | FLAG_AESGCM

KEY_BYTES: Final = 32  # AES-256 only: one key size means one thing to get right
NONCE_BYTES: Final = 12  # the GCM standard nonce; random per payload, so never reused in practice
# Level 1: the journal is on the hot path; higher levels cost several times the CPU for a few %.
ZLIB_LEVEL: Final = 1
# Below this, zlib's header and the CPU cost outweigh any saving on typical encoded arguments.
COMPRESS_MIN_BYTES: Final = 256
_KEY_CHECK_PLAINTEXT: Final = b"lane_mp key check v1"
_KEY_CHECK_AAD: Final = b"lane_mp:key-check"

_SIGN_BIT: Final = 1 << 63


def checksum(stored: bytes, extra: bytes | None = None) -> int:
    """xxh3-64 over the stored bytes (and the row's other blob, if any), as a *signed* 64-bit int:
    SQLite integers are signed, and an unsigned value above 2**63 would not fit."""
    h = xxhash.xxh3_64(stored)
    if extra is not None:
        h.update(extra)
    value = h.intdigest()
    return value - (1 << 64) if value & _SIGN_BIT else value


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # an optional extra: say what to install, not just "No module named"
        raise ConfigError(
            "encryption_key needs the 'cryptography' package: pip install cryptography",
            field="encryption_key",
        ) from exc
    return AESGCM(key)


def aad(kind: bytes, row_id: int) -> bytes:
    """Associated data binding a payload to its table (one byte) and row id."""
    return kind + row_id.to_bytes(8, "little", signed=True)


class Sealer:
    """Turns payloads into their stored form and back for one open store.

    ``locked`` means the store is encrypted but no key was given (inspection of metadata only):
    anything that needs a plaintext payload raises :class:`WrongKey` instead of guessing.
    """

    def __init__(self, *, compression: bool, key: bytes | None) -> None:
        if key is not None and (not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES):
            raise ConfigError(
                f"encryption_key must be exactly {KEY_BYTES} bytes (AES-256-GCM)", field="encryption_key"
            )
        self.compression = compression
        self._cipher = _aesgcm(bytes(key)) if key is not None else None
        self.locked = False

    @property
    def encrypting(self) -> bool:
        return self._cipher is not None

    # -- key check -------------------------------------------------------------------------------

    def make_key_check(self) -> bytes:
        """A small token only the right key opens; stored once per file (see ``verify_key_check``)."""
        assert self._cipher is not None
        nonce = os.urandom(NONCE_BYTES)
        token: bytes = nonce + self._cipher.encrypt(nonce, _KEY_CHECK_PLAINTEXT, _KEY_CHECK_AAD)
        return token

    def verify_key_check(self, token: bytes | None) -> None:
        """Fail at open, once, with :class:`WrongKey` rather than row after row during recovery."""
        if token is None:
            return  # an unencrypted file: a key may be added now; old rows stay readable (per-row flags)
        if self._cipher is None:
            self.locked = True
            return
        from cryptography.exceptions import InvalidTag

        try:
            plain = self._cipher.decrypt(token[:NONCE_BYTES], token[NONCE_BYTES:], _KEY_CHECK_AAD)
        except InvalidTag as exc:
            raise WrongKey("the encryption key does not open this storage file") from exc
        if plain != _KEY_CHECK_PLAINTEXT:
            raise WrongKey("the encryption key does not open this storage file")

    # -- payloads --------------------------------------------------------------------------------

    def seal(self, data: bytes, associated: bytes) -> tuple[bytes, int]:
        """(stored bytes, codec flags) for one payload."""
        if self.locked:
            raise WrongKey("this storage file is encrypted: pass encryption_key to write to it")
        flags = 0
        out = data
        if self.compression and len(data) >= COMPRESS_MIN_BYTES:
            packed = zlib.compress(data, ZLIB_LEVEL)
            if len(packed) < len(data):  # incompressible data (already packed, random) stays as is
                out, flags = packed, FLAG_ZLIB
        if self._cipher is not None:
            nonce = os.urandom(NONCE_BYTES)
            out = nonce + self._cipher.encrypt(nonce, out, associated)
            flags |= FLAG_AESGCM
        return out, flags

    def unseal(self, stored: bytes, flags: int, associated: bytes) -> bytes:
        """The original payload; :class:`CorruptRecord` if the stored form cannot be undone.

        The checksum has been verified by the caller already, so a failure here means tampering
        (or a bug), and it is reported as corruption of this one row.
        """
        if flags & ~_KNOWN_FLAGS:
            raise CorruptRecord(f"unknown codec flags {flags:#x}", reason="codec")
        out = stored
        if flags & FLAG_AESGCM:
            if self._cipher is None:
                raise WrongKey("this payload is encrypted: pass encryption_key to read it")
            from cryptography.exceptions import InvalidTag

            if len(out) < NONCE_BYTES + 16:
                raise CorruptRecord("encrypted payload is truncated", reason="decrypt")
            try:
                out = self._cipher.decrypt(out[:NONCE_BYTES], out[NONCE_BYTES:], associated)
            except InvalidTag as exc:
                raise CorruptRecord("encrypted payload failed authentication", reason="decrypt") from exc
        if flags & FLAG_ZLIB:
            try:
                out = zlib.decompress(out)
            except zlib.error as exc:
                raise CorruptRecord(
                    f"compressed payload does not inflate: {exc}", reason="decompress"
                ) from exc
        return out
