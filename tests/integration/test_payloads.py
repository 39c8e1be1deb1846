"""Large payloads travel through shared-memory blocks: correct, zero-copy, reused, freed."""

from __future__ import annotations

import gc
import os

import pytest

import tasks
from lane_mp import LanePool
from lane_mp.ipc.segments import list_segments

np = pytest.importorskip("numpy")


@pytest.mark.timeout(60)
def test_large_array_roundtrip_and_readonly_view():
    a = np.random.default_rng(0).random(1 << 20)  # 8 MiB
    with LanePool(2) as p:
        assert p.submit(tasks.array_sum, a).result(20) == pytest.approx(float(a.sum()))
        assert p.submit(tasks.array_writeable, a).result(20) is False  # worker sees a read-only view
        small = np.arange(10)
        assert p.submit(tasks.array_writeable, small).result(20) is True  # small: inline copy
        b = p.submit(tasks.ident, a).result(20)
        assert np.array_equal(a, b) and b.dtype == a.dtype
        c = p.submit(tasks.make_array, 1 << 20).result(20)
        assert c[-1] == (1 << 20) - 1


@pytest.mark.timeout(60)
def test_blocks_are_reused_not_created_per_message():
    a = np.ones(1 << 19)  # 4 MiB
    with LanePool(1) as p:
        prefix = f"lmp_{p._token}_b"
        for _ in range(20):
            r = p.submit(tasks.ident, a).result(20)
            assert r.sum() == a.size
            del r
            gc.collect()
        # one argument block (caller) and at most a couple of result blocks (worker)
        assert len(list_segments(prefix)) <= 4, list_segments(prefix)


@pytest.mark.timeout(60)
def test_large_bytes_and_pickled_objects():
    blob = os.urandom(3 << 20)
    with LanePool(1) as p:
        assert p.submit(tasks.ident, blob).result(20) == blob
        obj = {"arrays": [np.arange(300_000), np.ones(5)], "t": (1, 2)}
        out = p.submit(tasks.ident, obj).result(20)
        assert np.array_equal(out["arrays"][0], obj["arrays"][0]) and out["t"] == (1, 2)
