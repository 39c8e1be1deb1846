"""The SPSC ring in one process and across a real process boundary."""

from __future__ import annotations

import multiprocessing as mp
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lane_mp.ipc.ring import Ring, RingReader, RingWriter
from lane_mp.ipc.segments import Segment, list_segments, new_token, sweep


@pytest.fixture
def ring():
    token = new_token()
    r = Ring.create(f"lmp_{token}_t", 1 << 14)
    yield r
    r.release()
    sweep(f"lmp_{token}_")


def test_records_come_out_in_order_across_wraps(ring):
    w, rd = RingWriter(ring), RingReader(Ring.attach(ring.segment.name))
    rng = random.Random(1)
    sent, got = [], []
    for i in range(5000):
        payload = bytes([i % 251]) * rng.randint(0, 3000)
        while not w.put(i % 5, payload):
            assert w.publish() or True
            got += rd.read_all()
        sent.append((i % 5, payload))
        if rng.random() < 0.3:
            w.publish()
    w.publish()
    got += rd.read_all()
    assert got == sent
    rd.ring.release()


def test_unpublished_records_are_invisible(ring):
    w, rd = RingWriter(ring), RingReader(ring)
    assert w.put(1, b"abc")
    assert rd.read_all() == []
    w.publish()
    assert rd.read_all() == [(1, b"abc")]


def test_full_ring_refuses_and_oversized_record_raises(ring):
    w = RingWriter(ring)
    n = 0
    while w.put(0, b"x" * 1000):
        n += 1
    assert 10 <= n <= 16
    with pytest.raises(ValueError):
        w.put(0, b"x" * ring.capacity)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=2000), max_size=80), st.integers(1, 7))
def test_property_any_batching_preserves_records(payloads, batch):
    token = new_token()
    r = Ring.create(f"lmp_{token}_p", 1 << 13)
    try:
        w, rd = RingWriter(r), RingReader(r)
        got = []
        for i, p in enumerate(payloads):
            while not w.put(7, p):
                w.publish()
                got += rd.read_all()
            if i % batch == 0:
                w.publish()
        w.publish()
        got += rd.read_all()
        assert [p for _, p in got] == payloads
    finally:
        r.release()
        sweep(f"lmp_{token}_")


def _producer(name: str, n: int) -> None:
    w = RingWriter(Ring.attach(name))
    for i in range(n):
        data = i.to_bytes(8, "little") * (1 + i % 9)
        while not w.put(0, data):
            w.publish()
        if i % 16 == 0:
            w.publish()
    w.publish()


@pytest.mark.timeout(60)
def test_cross_process_no_tearing_no_loss(ring):
    n = 100_000
    proc = mp.get_context("fork").Process(target=_producer, args=(ring.segment.name, n))
    proc.start()
    rd = RingReader(ring)
    expect = 0
    while expect < n:
        for _, data in rd.read_all():
            i = int.from_bytes(data[:8], "little")
            assert i == expect and data == i.to_bytes(8, "little") * (1 + i % 9)
            expect += 1
    proc.join(10)
    assert proc.exitcode == 0


def test_segments_are_named_and_unlinked():
    token = new_token()
    seg = Segment.create(f"lmp_{token}_x", 100)
    assert seg.size >= 100 and list_segments(f"lmp_{token}_") == [seg.name]
    with pytest.raises(ValueError):
        Segment.create("not_ours", 100)
    seg.close()
    assert sweep(f"lmp_{token}_") == 1
    assert list_segments(f"lmp_{token}_") == []
    with pytest.raises(ValueError):
        sweep("lmp_")
