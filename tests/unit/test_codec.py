"""Payload codec and function naming, in one process."""

from __future__ import annotations

import pickle

import pytest

import tasks
from lane_mp.errors import DecodeError, EncodeError, FunctionNotImportable, TaskFailed
from lane_mp.ipc.blocks import BlockCache, BlockPool
from lane_mp.ipc.segments import new_token, sweep
from lane_mp.protocol.codec import RemoteTraceback, PayloadCodec, decode_exception, encode_exception
from lane_mp.protocol.functions import function_path, resolve


@pytest.fixture
def codecs():
    token = new_token()
    writer = PayloadCodec(BlockPool(f"lmp_{token}_b1_"), BlockCache(readonly=False), inline_max=1024)
    reader = PayloadCodec(None, BlockCache(readonly=True))
    yield writer, reader
    reader.cache.close()
    writer.cache.close()
    writer.blocks.close()
    sweep(f"lmp_{token}_")


@pytest.mark.parametrize(
    "args",
    [
        (1, -2**63, 2**64 - 1, 1.5, "x", None, True, b"b"),
        ([1, [2, [3]]], {"k": {"v": 1}}),
        ((1, 2), {1, 2}, frozenset({3}), {1: "int key"}, 2**70),
        (list(range(1000)),),
    ],
)
def test_values_and_types_round_trip(codecs, args):
    w, r = codecs
    payload, blocks = w.encode_call(args, {"kw": args[0]})
    out_args, out_kwargs = r.decode_call(payload)
    assert out_args == args and [type(a) for a in out_args] == [type(a) for a in args]
    assert out_kwargs == {"kw": args[0]}


def test_msgpack_is_used_for_plain_values(codecs):
    w, _ = codecs
    payload, _ = w.encode_call((1, "a", [1.0]), {})
    assert payload[:1] == b"M"
    payload, _ = w.encode_call(((1, 2),), {})
    assert payload[:1] == b"P"


def test_large_payloads_go_to_blocks(codecs):
    np = pytest.importorskip("numpy")
    w, r = codecs
    a = np.arange(10_000, dtype=np.int32)
    payload, blocks = w.encode_call((a, b"z" * 5000, {"n": a}), {})
    assert len(payload) < 1024 and blocks
    (a2, z, d), _ = r.decode_call(payload)
    assert np.array_equal(a2, a) and not a2.flags.writeable and z == b"z" * 5000
    assert np.array_equal(d["n"], a)


def test_unencodable_argument(codecs):
    w, _ = codecs
    with pytest.raises(EncodeError, match="Unpicklable"):
        w.encode_call((tasks.Unpicklable(),), {})


def test_garbage_payload_is_a_decode_error(codecs):
    _, r = codecs
    with pytest.raises(DecodeError):
        r.decode_value(b"P\x00\x01")
    with pytest.raises(DecodeError):
        r.decode_value(b"?")


def test_exceptions_round_trip_with_traceback():
    try:
        tasks.boom("x")
    except ValueError as exc:
        payload = encode_exception(exc)
    back = decode_exception(payload)
    assert isinstance(back, ValueError) and str(back) == "x"
    assert isinstance(back.__cause__, RemoteTraceback) and "boom" in back.__cause__.tb


def test_unpicklable_exception_becomes_task_failed():
    class Local(Exception):
        pass

    back = decode_exception(encode_exception(Local("nope")))
    assert isinstance(back, TaskFailed) and "Local" in str(back)
    assert pickle.loads(pickle.dumps(back)).fields["remote_type"].endswith("Local")


def test_function_paths():
    assert function_path(tasks.add, fork=False) == "tasks:add"
    assert resolve("tasks:add") is tasks.add
    assert function_path(str.upper, fork=False) == "builtins:str.upper"
    with pytest.raises(FunctionNotImportable, match="lambda"):
        function_path(lambda: 0, fork=True)

    def inner():
        pass

    with pytest.raises(FunctionNotImportable, match="nested"):
        function_path(inner, fork=True)
