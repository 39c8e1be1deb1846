"""Encode once, copy once: arguments, results and exceptions to bytes and back.

Payload formats (first byte):

- ``M`` msgpack via msgspec — used when the value is *faithful* in msgpack (None, bool, int,
  float, str, bytes, numpy arrays, and small lists / str-keyed dicts of those), so the callee gets
  exactly the types the caller passed. numpy arrays travel as msgpack ``Ext``: inline when small,
  else as a shared-memory block reference (one copy in, a zero-copy view out).
- ``P`` pickle protocol 5 — everything else (tuples inside containers, sets, dataclasses, ...).
  Out-of-band buffers (numpy arrays inside other objects, bytearrays) above the threshold go to
  blocks. Followed by msgpack ``[pickle_bytes, [[block, nbytes], ...]]``.
- ``B`` the whole encoded payload did not fit a ring record: msgpack ``[block, nbytes]`` naming
  the block that holds it.

Why not msgpack for everything: untyped msgpack turns tuples into lists and sets into lists, which
silently changes what user code receives. msgspec errors are translated to :class:`EncodeError` /
:class:`DecodeError` here, at this one boundary.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import DecodeError, EncodeError, PayloadTooLarge, TaskFailed
from ..ipc.blocks import BlockCache, BlockPool

# Payloads up to this size travel inline in the ring record; larger ones go to a block.
INLINE_MAX = 64 * 1024
_FAITHFUL_SCALARS = frozenset({int, float, str, bool, type(None), bytes})
_MAX_WALK = 64  # longer containers are not walked: pickle is cheaper than the check
_EXT_ND_INLINE, _EXT_ND_BLOCK = 1, 2
_NO_BLOCKS: list[str] = []  # shared empty result: never mutated

__all__ = ["PayloadCodec", "encode_exception", "decode_exception", "RemoteTraceback"]


class RemoteTraceback(Exception):
    """Carries the worker's formatted traceback as the ``__cause__`` of a re-raised error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def _is_ndarray(x: Any) -> bool:
    tp = type(x)
    return tp.__name__ == "ndarray" and tp.__module__ == "numpy"


def _faithful(x: Any, depth: int) -> bool:
    tp = type(x)
    if tp in _FAITHFUL_SCALARS:
        return tp is not int or -(1 << 63) <= x < (1 << 64)
    if tp is list:
        return depth < 3 and len(x) <= _MAX_WALK and all(_faithful(i, depth + 1) for i in x)
    if tp is dict:
        return depth < 3 and len(x) <= _MAX_WALK and all(
            type(k) is str and _faithful(v, depth + 1) for k, v in x.items()
        )
    if _is_ndarray(x):
        return x.dtype.hasobject is False and x.dtype.fields is None
    return False


def _all_faithful(values: Any) -> bool:
    # A plain loop: this runs for every submit, and generator-based all() costs ~1 µs more.
    scalars = _FAITHFUL_SCALARS
    for v in values:
        tp = type(v)
        if tp in scalars and tp is not int:
            continue
        if not _faithful(v, 0):
            return False
    return True


class PayloadCodec:
    """One per process: a reused msgspec encoder, an optional block pool (writer side) and a
    block cache (reader side). ``on_view(name, view)`` is told of every block view handed out,
    so the owner can release the block when the view dies (``view`` None: release it now)."""

    def __init__(
        self,
        blocks: BlockPool | None,
        cache: BlockCache,
        *,
        inline_max: int = INLINE_MAX,
        on_view: Callable[[str, memoryview | None], None] | None = None,
        max_payload: int | None = None,
    ) -> None:
        self.max_payload = max_payload
        self.blocks = blocks
        self.cache = cache
        self.inline_max = inline_max
        self.on_view = on_view
        self._used: list[str] = []
        self._enc = msgspec.msgpack.Encoder(enc_hook=self._enc_hook)
        self._plain = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(ext_hook=self._ext_hook)
        self._refs_dec = msgspec.msgpack.Decoder(tuple[bytes, list[tuple[str, int]]])
        self._block_dec = msgspec.msgpack.Decoder(tuple[str, int])

    # ---- encoding -------------------------------------------------------------------------
    def encode_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bytes, list[str]]:
        """Arguments of one call. Returns the payload and the names of the blocks it uses."""
        if _all_faithful(args) and (not kwargs or _all_faithful(kwargs.values())):
            return self._finish(self._encode_msgpack((args, kwargs)))
        try:
            return self._finish(self._encode_pickle((args, kwargs)))
        except PayloadTooLarge:
            raise
        except EncodeError as exc:
            raise EncodeError(f"{_culprit(args, kwargs)}: {exc.__cause__}") from exc.__cause__

    def encode_value(self, value: Any) -> tuple[bytes, list[str]]:
        """A result (or a chunk's list of results)."""
        if _faithful(value, 0):
            return self._finish(self._encode_msgpack(value))
        return self._finish(self._encode_pickle(value))

    def _encode_msgpack(self, obj: Any) -> bytes:
        try:
            return b"M" + self._enc.encode(obj)
        except PayloadTooLarge:
            raise
        except (TypeError, ValueError, OverflowError):
            self._abort()
            return self._encode_pickle(obj)

    def _encode_pickle(self, obj: Any) -> bytes:
        refs: list[tuple[str, int]] = []

        def oob(buf: pickle.PickleBuffer) -> bool:
            raw = buf.raw()
            if raw.nbytes <= self.inline_max or self.blocks is None:
                return True
            refs.append(self._to_block(raw))
            return False

        try:
            data = pickle.dumps(obj, protocol=5, buffer_callback=oob)
        except PayloadTooLarge:
            raise
        except Exception as exc:
            self._abort()
            raise EncodeError(f"cannot encode {type(obj).__name__}: {exc}") from exc
        return b"P" + self._plain.encode((data, refs))

    def _finish(self, payload: bytes) -> tuple[bytes, list[str]]:
        if self.max_payload is not None and len(payload) > self.max_payload:
            self._abort()
            raise PayloadTooLarge(
                f"a payload of {len(payload)} bytes exceeds max_payload_bytes={self.max_payload}",
                nbytes=len(payload), limit=self.max_payload,
            )
        if len(payload) <= self.inline_max and not self._used:
            return payload, _NO_BLOCKS
        if len(payload) > self.inline_max and self.blocks is not None:
            name, n = self._to_block(memoryview(payload))
            payload = b"B" + self._plain.encode((name, n))
        used, self._used = self._used, []
        return payload, used

    def _abort(self) -> None:
        if self.blocks is not None:
            for name in self._used:
                self.blocks.give_back(name)
        self._used = []

    def _to_block(self, raw: memoryview) -> tuple[str, int]:
        assert self.blocks is not None
        n = raw.nbytes
        if self.max_payload is not None and n > self.max_payload:
            self._abort()
            raise PayloadTooLarge(
                f"a payload of {n} bytes exceeds max_payload_bytes={self.max_payload}",
                nbytes=n, limit=self.max_payload,
            )
        seg = self.blocks.lease(n)
        seg.buf[:n] = raw.cast("B") if raw.format != "B" or raw.ndim != 1 else raw
        self._used.append(seg.name)
        return seg.name, n

    def _enc_hook(self, obj: Any) -> Any:
        if _is_ndarray(obj):
            import numpy as np

            arr = np.ascontiguousarray(obj)
            if arr.nbytes > self.inline_max and self.blocks is not None:
                name, n = self._to_block(memoryview(arr).cast("B"))
                body = self._plain.encode((arr.dtype.str, arr.shape, name, n))
                return msgspec.msgpack.Ext(_EXT_ND_BLOCK, body)
            body = self._plain.encode((arr.dtype.str, arr.shape, arr.tobytes()))
            return msgspec.msgpack.Ext(_EXT_ND_INLINE, body)
        raise TypeError(f"unsupported type {type(obj).__name__}")

    # ---- decoding -------------------------------------------------------------------------
    def decode_call(self, payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = self.decode_value(payload)
        return tuple(args), kwargs

    def decode_value(self, payload: bytes) -> Any:
        try:
            kind = payload[:1]
            if kind == b"M":
                return self._dec.decode(memoryview(payload)[1:])
            if kind == b"P":
                data, refs = self._refs_dec.decode(memoryview(payload)[1:])
                return pickle.loads(data, buffers=[self._view(name, n) for name, n in refs])
            if kind == b"B":
                name, n = self._block_dec.decode(memoryview(payload)[1:])
                # The inner payload is copied out: it is small next to what blocks are for, and
                # the block can then be released at once.
                inner = bytes(self.cache.get(name).buf[:n])
                if self.on_view is not None:
                    self.on_view(name, None)
                return self.decode_value(inner)
        except DecodeError:
            raise
        except Exception as exc:  # unpickling runs arbitrary __setstate__ / __reduce__ code
            raise DecodeError(f"cannot decode payload: {exc!r}") from exc
        raise DecodeError(f"unknown payload format {payload[:1]!r}")

    def _view(self, name: str, n: int) -> memoryview:
        view = self.cache.get(name).buf[:n]
        if self.on_view is not None:
            self.on_view(name, view)
        return view

    def _ext_hook(self, code: int, data: memoryview) -> Any:
        import numpy as np

        if code == _EXT_ND_INLINE:
            dtype, shape, raw = msgspec.msgpack.decode(data)
            return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        if code == _EXT_ND_BLOCK:
            dtype, shape, name, n = msgspec.msgpack.decode(data)
            return np.frombuffer(self._view(name, n), dtype=dtype).reshape(shape)
        raise DecodeError(f"unknown ext code {code}")


def _culprit(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Name the argument that cannot be pickled (only on the error path)."""
    for where, value in [*((f"argument {i}", a) for i, a in enumerate(args)), *kwargs.items()]:
        try:
            pickle.dumps(value, protocol=5)
        except Exception:
            return f"{where} of type {type(value).__qualname__} cannot be encoded"
    return "the arguments cannot be encoded"


def encode_exception(exc: BaseException) -> bytes:
    """Pickle ``(exception, formatted traceback)``; an exception that will not pickle travels as
    :class:`TaskFailed` with its type and text, so the worker never dies of a bad exception."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        return pickle.dumps((exc, tb), protocol=5)
    except Exception:
        tp = type(exc)
        failed = TaskFailed(
            f"{tp.__module__}.{tp.__qualname__}: {exc}",
            remote_type=f"{tp.__module__}.{tp.__qualname__}",
            remote_traceback=tb,
        )
        return pickle.dumps((failed, tb), protocol=5)


def decode_exception(payload: bytes) -> BaseException:
    """The remote exception with the remote traceback as ``__cause__``."""
    try:
        exc, tb = pickle.loads(payload)
    except Exception as err:  # e.g. the exception class does not exist in the caller
        return TaskFailed(f"remote exception could not be decoded: {err}", remote_type="?", remote_traceback="")
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def exception_types(exc: BaseException) -> list[str]:
    return [f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__ if c is not object]


