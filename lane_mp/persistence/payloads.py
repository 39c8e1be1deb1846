"""Encoded payloads to their stored form and back: a journal row must never point into shared memory.

Why this exists: an encoded argument list or result may *reference* shared-memory blocks instead of
holding the bytes (large ``bytes``, numpy arrays, pickle out-of-band buffers, or a whole payload
too big for a ring record; see ``protocol/codec.py``). Blocks die with the pool; journal rows must
not. So the coordinator *bundles* a payload before it stores it (copies the block contents in) and
*unbundles* a recovered one into fresh blocks of its own before a worker sees it.

Stored forms (first byte), all self-contained:

- ``M`` msgpack; numpy arrays inline (codec ext 1). A block-referencing ext 2 is rewritten inline.
- ``P`` pickle without out-of-band buffers (the codec's own form when nothing went to a block).
- ``J`` pickle *with* its out-of-band buffers inline: ``J`` + msgpack ``[pickle_bytes, [buf, ...]]``.
  Workers never see ``J``: :func:`unbundle` turns it back into ``P`` with block references.

The codec's ``B`` form (a whole payload in a block) is replaced by its content and never stored.

Cost: the common case (small arguments, no block) is one ``bytes.find`` and no copy.
"""

from __future__ import annotations

import pickle
from typing import Any, Final

import msgspec

from lane_mp.errors import DecodeError
from lane_mp.ipc.blocks import BlockCache, BlockPool
from lane_mp.protocol.codec import INLINE_MAX, PayloadCodec

__all__ = ["bundle", "decode_stored", "unbundle"]

# Must match the ext codes of protocol/codec.py (numpy array inline / in a block).
EXT_ND_INLINE: Final = 1
EXT_ND_BLOCK: Final = 2
# Every block name starts with this (ipc/blocks.py, segments.py): a payload without it has no block.
_BLOCK_MARK: Final = b"lmp_"

_ENC = msgspec.msgpack.Encoder()
_REFS = msgspec.msgpack.Decoder(tuple[bytes, list[tuple[str, int]]])
_BUNDLED = msgspec.msgpack.Decoder(tuple[bytes, list[bytes]])
_BLOCK = msgspec.msgpack.Decoder(tuple[str, int])


def bundle(payload: bytes, cache: BlockCache) -> bytes:
    """The self-contained form of ``payload``, reading any block it names through ``cache``.

    Must run while the blocks are alive: at intake for arguments (the caller frees them only after
    the outcome) and before the outcome is sent for results (the caller frees them on receipt).
    """
    if _BLOCK_MARK not in payload:
        return payload
    kind = payload[:1]
    body = memoryview(payload)[1:]
    if kind == b"B":
        name, n = _BLOCK.decode(body)
        return bundle(bytes(cache.get(name).buf[:n]), cache)
    if kind == b"P":
        data, refs = _REFS.decode(body)
        if not refs:
            return payload
        return b"J" + _ENC.encode((data, [bytes(cache.get(name).buf[:n]) for name, n in refs]))
    if kind == b"M":

        def inline(code: int, data: memoryview) -> msgspec.msgpack.Ext:
            if code == EXT_ND_BLOCK:
                dtype, shape, name, n = msgspec.msgpack.decode(data)
                raw = bytes(cache.get(name).buf[:n])
                return msgspec.msgpack.Ext(EXT_ND_INLINE, _ENC.encode((dtype, shape, raw)))
            return msgspec.msgpack.Ext(code, bytes(data))

        # msgpack has one array type, so decode -> encode keeps every other byte's meaning.
        return b"M" + _ENC.encode(msgspec.msgpack.Decoder(ext_hook=inline).decode(body))
    return payload


def unbundle(payload: bytes, blocks: BlockPool, inline_max: int = INLINE_MAX) -> tuple[bytes, list[str]]:
    """A stored payload in the form a worker decodes, plus the blocks leased for it (give them back
    when the command is final). Large payloads go to blocks again so they never clog a ring."""
    used: list[str] = []

    def to_block(data: bytes | memoryview) -> tuple[str, int]:
        n = len(data)
        seg = blocks.lease(n)
        seg.buf[:n] = data
        used.append(seg.name)
        return seg.name, n

    if payload[:1] == b"J":
        data, bufs = _BUNDLED.decode(memoryview(payload)[1:])
        payload = b"P" + _ENC.encode((data, [to_block(buf) for buf in bufs]))
    if len(payload) > inline_max:
        payload = b"B" + _ENC.encode(to_block(payload))
    return payload, used


_reader = PayloadCodec(None, BlockCache(readonly=True))


def decode_stored(payload: bytes) -> Any:
    """The value of a stored (bundled) result, in any process: it needs no block."""
    if payload[:1] == b"J":
        try:
            data, bufs = _BUNDLED.decode(memoryview(payload)[1:])
            return pickle.loads(data, buffers=bufs)
        except (msgspec.DecodeError, pickle.UnpicklingError, EOFError) as exc:
            raise DecodeError(f"cannot decode stored payload: {exc}") from exc
    return _reader.decode_value(payload)
