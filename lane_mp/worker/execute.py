"""Run one command: import the function, decode the arguments, call, encode the outcome.

Shared by the local worker loop (``worker/main.py``) and the Dask backend's task function, so a
command behaves the same wherever it runs. Every failure becomes a ``Done`` record, never an
exception: a worker must survive bad input.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import DecodeError, EncodeError, PayloadTooLarge
from ..protocol import messages as m
from ..protocol.codec import PayloadCodec, encode_exception, exception_types
from ..protocol.functions import resolve

__all__ = ["CommandRunner"]


class CommandRunner:
    def __init__(self, codec: PayloadCodec) -> None:
        self.codec = codec
        self.fns: dict[str, Callable[..., Any]] = {}
        self._err_enc = msgspec.msgpack.Encoder()

    def run(self, cmd: m.Run) -> m.Done:
        try:
            fn = self.fns.get(cmd.fn) or self.fns.setdefault(cmd.fn, resolve(cmd.fn))
        except Exception as exc:
            return self.error(cmd.id, "FunctionNotImportable", f"cannot import {cmd.fn}: {exc!r}")
        try:
            args, kwargs = self.codec.decode_call(cmd.payload)
        except DecodeError as exc:
            return self.error(cmd.id, "DecodeError", f"arguments of {cmd.fn}: {exc}")
        except Exception as exc:  # an argument class that fails to unpickle here
            return self.error(cmd.id, "DecodeError", f"arguments of {cmd.fn}: {exc!r}")
        t0 = time.perf_counter()
        try:
            if cmd.chunk:
                result: Any = [fn(*a) for a in args[0]]
            else:
                result = fn(*args, **kwargs)
        except BaseException as exc:  # SystemExit / KeyboardInterrupt from a task too: report it
            elapsed = time.perf_counter() - t0
            return m.Done(cmd.id, m.RAISED, encode_exception(exc), elapsed, exception_types(exc), str(exc)[:500])
        elapsed = time.perf_counter() - t0
        del args, kwargs  # drop views of argument blocks before the caller may reuse them
        try:
            payload, _blocks = self.codec.encode_value(result)
        except EncodeError as exc:
            return self.error(cmd.id, "EncodeError", f"result of {cmd.fn} cannot be encoded: {exc}")
        except PayloadTooLarge as exc:
            return self.error(cmd.id, "PayloadTooLarge", f"result of {cmd.fn}: {exc}")
        return m.Done(cmd.id, m.OK, payload, elapsed)

    def error(self, cid: int, error: str, message: str) -> m.Done:
        return m.Done(cid, m.ERROR, self._err_enc.encode(m.ErrorInfo(error, message)))
