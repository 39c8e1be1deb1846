"""The stats board (seqlock over shared memory) and the pure parts of ``lane_mp top``."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator

import click
import msgspec
import pytest

from lane_mp.ipc.segments import list_segments, new_token, sweep
from lane_mp.observability.board import (
    CALLER,
    COORDINATOR,
    SLOT_BYTES,
    BoardBusy,
    StatsBoard,
    board_name,
    list_boards,
)
from lane_mp.observability.top import PoolRef, ProcSample, render, select_pool


@pytest.fixture
def board() -> Iterator[StatsBoard]:
    token = new_token()
    b = StatsBoard.create(token)
    try:
        yield b
    finally:
        b.close()
        sweep(f"lmp_{token}_")


def test_create_attach_roundtrip_and_listing(board: StatsBoard) -> None:
    assert board_name(board.token) in list_segments("lmp_")
    assert board.token in list_boards()
    reader = StatsBoard.attach(board.token)
    try:
        assert reader.read() is None and reader.read(CALLER) is None  # never published
        board.publish(COORDINATOR, {"lanes": [], "n": 1})
        board.publish(CALLER, {"caller": True})
        assert reader.read() == {"lanes": [], "n": 1}
        assert reader.read(CALLER) == {"caller": True}
        assert reader.sequence(COORDINATOR) == 2
        board.publish(COORDINATOR, {"n": 2})
        assert reader.read() == {"n": 2} and reader.sequence() == 4
        with pytest.raises(TypeError):  # attached read-only: a reader cannot scribble on the pool
            reader.write(COORDINATOR, b"x")
    finally:
        reader.close()


def test_attach_rejects_missing_and_foreign_segments() -> None:
    token = new_token()
    with pytest.raises(FileNotFoundError):
        StatsBoard.attach(token)
    from lane_mp.ipc.segments import Segment

    seg = Segment.create(board_name(token), 4096)
    try:
        with pytest.raises(ValueError, match="not a version"):
            StatsBoard.attach(token)
    finally:
        seg.close()
        sweep(f"lmp_{token}_")


def test_oversized_snapshot_publishes_an_error_instead(board: StatsBoard) -> None:
    assert not board.write(COORDINATOR, b"x" * (SLOT_BYTES + 1))
    board.publish(COORDINATOR, {"pad": "x" * SLOT_BYTES})
    doc = board.read()
    assert doc is not None and doc["error"].startswith("snapshot too large")


def test_writer_stuck_mid_write_makes_readers_give_up(board: StatsBoard) -> None:
    board.publish(COORDINATOR, {"n": 1})
    board.words[8] += 1  # odd: as if the writer died between its two sequence stores
    with pytest.raises(BoardBusy):
        board.read()


def test_publish_snapshot_adds_pids_and_rates(board: StatsBoard) -> None:
    lane = {"name": "a", "completed": 10, "failed": 0}
    board.publish_snapshot({"lanes": [dict(lane)], "workers": []}, now=100.0)
    first = board.read()
    assert first is not None and first["lanes"][0]["rate"] == 0.0
    assert first["token"] == board.token and first["coordinator_pid"] > 0 and first["caller_pid"] > 0
    assert board.due == pytest.approx(100.0 + board.interval)
    board.publish_snapshot({"lanes": [{"name": "a", "completed": 40, "failed": 10}], "workers": []}, now=100.5)
    second = board.read()
    assert second is not None and second["lanes"][0]["rate"] == pytest.approx(80.0)


def test_publish_snapshot_never_raises(board: StatsBoard) -> None:
    board.publish_snapshot({"lanes": [{"name": "broken"}]}, now=1.0)  # no counts: a bug, not a crash
    assert board.due == float("inf")


def _hammer(token: str, seconds: float) -> None:
    b = StatsBoard.attach(token, writable=True)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        pad = "x" * (i * 37 % 20_000)
        b.publish(COORDINATOR, {"i": i, "pad": pad, "check": len(pad) * 7 + i})
    b.publish(COORDINATOR, {"i": -1, "pad": "", "check": -1})
    b.close()


@pytest.mark.timeout(60)
def test_seqlock_readers_never_see_a_torn_copy(board: StatsBoard) -> None:
    """A writer in another process rewrites payloads of changing length as fast as it can; every
    copy the reader accepts must decode and be self-consistent."""
    proc = multiprocessing.get_context("fork").Process(target=_hammer, args=(board.token, 1.0))
    proc.start()
    seen = 0
    last = 0
    try:
        while True:
            try:
                doc = board.read()
            except BoardBusy:  # this writer never pauses (the coordinator writes twice a second)
                continue
            if doc is None:
                continue
            if doc["i"] == -1:
                break
            assert doc["check"] == len(doc["pad"]) * 7 + doc["i"]
            assert doc["i"] >= last  # copies never go back in time
            last = doc["i"]
            seen += 1
    finally:
        proc.join(30)
    assert proc.exitcode == 0
    assert seen > 100


def test_payload_is_plain_msgpack(board: StatsBoard) -> None:
    board.publish(COORDINATOR, {"a": [1, 2.5, "x", None]})
    data = board.read_bytes(COORDINATOR)
    assert data is not None and msgspec.msgpack.decode(data) == {"a": [1, 2.5, "x", None]}


# ---- top: pure parts ------------------------------------------------------------------------------


POOLS = [PoolRef("abc123", 200, 100, 2), PoolRef("abd456", 300, 100, 4), PoolRef("ffe001", 400, 150, 1)]


def test_select_pool_by_token_prefix_and_pid() -> None:
    assert select_pool("abc123", POOLS).coordinator_pid == 200
    assert select_pool("ffe", POOLS).token == "ffe001"
    assert select_pool("300", POOLS).token == "abd456"  # coordinator pid
    assert select_pool("150", POOLS).token == "ffe001"  # owner pid
    assert select_pool(None, POOLS[:1]).token == "abc123"
    with pytest.raises(click.ClickException, match="2 pools match"):
        select_pool("ab", POOLS)
    with pytest.raises(click.ClickException, match="2 pools match"):
        select_pool("100", POOLS)  # one process owning two pools
    with pytest.raises(click.ClickException, match="3 pools match"):
        select_pool(None, POOLS)
    with pytest.raises(click.ClickException, match="no running lane_mp pool matches 'zzz'"):
        select_pool("zzz", POOLS)
    with pytest.raises(click.ClickException, match="no running lane_mp pool;"):
        select_pool(None, [])


def test_render_frame() -> None:
    doc = {
        "token": "abc123", "caller_pid": 100, "coordinator_pid": 200, "published_at": 1000.0,
        "commands": 7, "backoff": 1, "completed": 50, "failed": 2, "retried": 3, "timeouts": 1,
        "crashes": 0, "dead_lettered": 2,
        "lanes": [
            {"name": "query", "priority": 2, "pending": 5, "active": 2, "completed": 50, "failed": 2,
             "paused": False, "rate": 12.345},
            {"name": "bulk", "priority": 5, "pending": 0, "active": 0, "completed": 0, "failed": 0,
             "paused": True, "rate": 0.0},
        ],
        "workers": [{"index": 0, "pid": 201, "assigned": 2, "generation": 1}],
    }
    caller = {"lanes": {"query": [1.25, 40.5, 50, 0.5, 3.0]}}
    procs = [ProcSample("coord", 200, 3.5, 30 * 1024 * 1024), ProcSample("0", 201, 99.0, 64 * 1024 * 1024, 2, 1),
             ProcSample("1", 202, float("nan"), -1)]
    text = render(doc, caller, procs, now=1002.0)
    assert "pool abc123" in text and "updated 2.0s ago" in text
    assert "in flight 7" in text and "dead letters 2" in text
    query = next(line for line in text.splitlines() if line.startswith("query"))
    assert query.split() == ["query", "2", "5", "2", "50", "2", "12.3", "1.2", "40.5"]
    bulk = next(line for line in text.splitlines() if line.startswith("bulk"))
    assert "(paused)" in bulk and bulk.split()[-2:] == ["-", "-"]
    worker = next(line for line in text.splitlines() if line.startswith("worker 0"))
    assert worker.split() == ["worker", "0", "201", "99.0", "64.0", "2", "1"]
    assert "gone" in next(line for line in text.splitlines() if line.startswith("worker 1"))
    assert "\x1b" not in text
    no_metrics = render(doc, None, procs, now=1002.0)
    assert "latency percentiles need" in no_metrics
    assert "waiting" in render(None, None, [])
