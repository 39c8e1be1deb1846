"""lane_mp.topic across real processes: 3 publishers x 3 consumers, crashes, idle CPU, spawn.

Every consumer checks in its own process that it saw sequences 1..N exactly once, in order, with
no gap, and that each producer's counter embedded in the payloads is gap-free too; the test
process compares the reports. Topics are named after this process's hex pid, so the conftest leak
check covers their segments and FIFOs; the owner (this process) always unlinks them.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import struct
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from lane_mp.ipc.segments import list_segments
from lane_mp.topic import Topic

pytestmark = pytest.mark.timeout(60)

FORK = mp.get_context("fork")
_counter = itertools.count()
WAIT_S = 20.0  # every blocking call in a child is bounded by this


def new_name() -> str:
    return f"{os.getpid():x}i{next(_counter)}"


# -- child processes ------------------------------------------------------------------------


def produce(name: str, label: str, count: int, go: Any) -> None:
    """Publish ``count`` messages (forever if 0): a little-endian counter, then filler."""
    topic = Topic.attach(name)
    pub = topic.publisher(label)
    go.wait(WAIT_S)
    i = 0
    while count == 0 or i < count:
        k = min(1 + i % 4, count - i) if count else 1 + i % 4
        batch = [struct.pack("<I", i + j) + b"." * ((i + j) % 90) for j in range(k)]
        if k == 1:
            pub.publish(batch[0], message_type="n", timeout=WAIT_S)
        else:
            pub.publish_many(batch, message_type="n", timeout=WAIT_S)
        i += k
    topic.close()


def consume(name: str, cid: str, ready: Any, results: Any) -> None:
    """Read until the "end" message; report what was seen and whether it was whole."""
    topic = Topic.attach(name)
    con = topic.consumer(cid, start="earliest")
    ready.set()
    seqs: list[int] = []
    per: dict[str, list[int]] = {}
    lost = 0
    while True:
        batch = con.read_batch(512, timeout=WAIT_S)
        if not batch:
            results.put((cid, "timeout", len(seqs)))
            return
        for m in batch:
            lost += m.lost
            seqs.append(m.sequence)
            if m.message_type == "end":
                ok = seqs == list(range(1, len(seqs) + 1))
                gapless = all(v == list(range(len(v))) for v in per.values())
                counts = {k: len(v) for k, v in per.items()}
                results.put((cid, "done", ok, gapless, lost, m.sequence, counts))
                con.close()
                topic.close()
                return
            per.setdefault(m.producer_id, []).append(struct.unpack_from("<I", m.data)[0])


def hold_lock_and_hang(name: str, locked: Any) -> None:
    """Die inside the append critical section: half a record written, sequence word bumped."""
    from lane_mp.topic import layout as L

    topic = Topic.attach(name)
    topic._enter(topic._lock)
    log = topic._log
    q = log.q
    off = q[L.W_HEAD_POS] % log.cap
    log.buf[log.base + off : log.base + off + 48] = b"\xff" * 48  # garbage past the head
    q[L.W_HEAD_SEQ] += 1  # as if killed between the two stores of a publish
    locked.set()
    time.sleep(60)


def payload_for(seq: int) -> bytes:
    """Content derived from the sequence number: a torn or misplaced read cannot match it."""
    return seq.to_bytes(8, "little") * (1 + seq % 13)


def slow_checker(name: str, cid: str, copy: bool, ready: Any, results: Any) -> None:
    """Fall behind on purpose under drop_slowest; every message must still be intact."""
    topic = Topic.attach(name)
    con = topic.consumer(cid)
    ready.set()
    prev, lost, got, bad, stale_views = 0, 0, 0, 0, 0
    while True:
        batch = con.read_batch(64, timeout=WAIT_S, copy=copy)
        if not batch:
            break
        for m in batch:
            if m.message_type == "end":
                results.put((cid, got, lost, con.lost, bad, stale_views, m.sequence))
                del batch, m
                con.close()
                topic.close()
                return
            if m.sequence != prev + 1 + m.lost:
                bad += 1
            intact = bytes(m.data) == payload_for(m.sequence)
            if not copy and not con.view_valid():
                stale_views += 1  # overwritten under us: allowed, and we were told
            elif not intact:
                bad += 1
            prev, lost, got = m.sequence, lost + m.lost, got + 1
        del batch
        if got % 512 < 64:
            time.sleep(0.002)  # fall behind now and then
    results.put((cid, "timeout", got))


def idle_reader(name: str, ready: Any, results: Any) -> None:
    topic = Topic.attach(name)
    con = topic.consumer("idle")
    ready.set()
    msg = con.read(timeout=WAIT_S)
    results.put((msg.data if msg else None, time.monotonic()))
    con.close()
    topic.close()


# -- helpers ----------------------------------------------------------------------------------


class Procs:
    """Start, reap and (on failure) kill children, so no test leaves one behind."""

    def __init__(self) -> None:
        self.procs: list[Any] = []

    def start(self, target: Any, *args: Any, ctx: Any = FORK) -> Any:
        p = ctx.Process(target=target, args=args, daemon=True)
        p.start()
        self.procs.append(p)
        return p

    def join(self, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))

    def cleanup(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
            p.join(5)


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    yield ps
    ps.cleanup()


def collect(results: Any, n: int) -> list[tuple[Any, ...]]:
    out = []
    for _ in range(n):
        out.append(results.get(timeout=WAIT_S + 10))
    return out


def wait_for(pred: Any, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


def no_names_left(topic: Topic) -> bool:
    return not list_segments(topic.segment_name)


# -- tests ------------------------------------------------------------------------------------


def test_three_publishers_three_consumers_exactly_once_in_order(procs: Procs) -> None:
    per_publisher = 3000
    topic = Topic.create(new_name(), capacity_bytes=32 << 10, max_message_bytes=256, policy="block")
    try:
        results, go = FORK.Queue(), FORK.Event()
        readies = [FORK.Event() for _ in range(3)]
        for i in range(3):
            procs.start(consume, topic.name, f"c{i}", readies[i], results)
        for ev in readies:
            assert ev.wait(WAIT_S)
        pubs = [procs.start(produce, topic.name, f"p{i}", per_publisher, go) for i in range(3)]
        go.set()
        for p in pubs:
            p.join(WAIT_S)
            assert p.exitcode == 0
        end = topic.publisher("main").publish(b"\0\0\0\0", message_type="end", timeout=WAIT_S)
        assert end == 3 * per_publisher + 1  # gap-free across three processes
        reports = collect(results, 3)
        for cid, status, ok, gapless, lost, last, counts in reports:
            assert status == "done" and ok and gapless and lost == 0, cid
            assert last == end and counts == {f"p{i}": per_publisher for i in range(3)}
        procs.join()
        # 32 KiB held 9000+ records of up to ~150 bytes: the log wrapped dozens of times.
        assert topic.stats().tail_position > 10 * topic.capacity_bytes
    finally:
        topic.close()
    assert no_names_left(topic)


def test_killed_consumer_and_publisher_do_not_stop_the_rest(procs: Procs) -> None:
    per_publisher = 2500
    topic = Topic.create(new_name(), capacity_bytes=16 << 10, max_message_bytes=256, policy="block")
    try:
        results, go = FORK.Queue(), FORK.Event()
        readies = [FORK.Event() for _ in range(3)]
        cons = [procs.start(consume, topic.name, f"c{i}", readies[i], results) for i in range(3)]
        for ev in readies:
            assert ev.wait(WAIT_S)
        survivors = [procs.start(produce, topic.name, f"p{i}", per_publisher, go) for i in range(2)]
        victim_pub = procs.start(produce, topic.name, "victim", 0, go)  # publishes until killed
        go.set()

        def reads(cid: str) -> int:
            return next((c.reads for c in topic.stats().consumers if c.consumer_id == cid), 0)

        wait_for(lambda: reads("c2") > 300)
        os.kill(cons[2].pid, signal.SIGKILL)  # a consumer dies mid-stream, holding retention
        wait_for(lambda: topic.stats().head_sequence > 2000)
        os.kill(victim_pub.pid, signal.SIGKILL)  # a publisher dies mid-stream
        cons[2].join(5)
        victim_pub.join(5)
        for p in survivors:
            p.join(WAIT_S)
            assert p.exitcode == 0  # unblocked: the dead consumer was reaped when the log filled
        end = topic.publisher("main").publish(b"\0\0\0\0", message_type="end", timeout=WAIT_S)
        reports = collect(results, 2)
        for cid, status, ok, gapless, lost, last, counts in reports:
            assert status == "done" and ok and gapless and lost == 0, cid
            assert last == end and counts["p0"] == counts["p1"] == per_publisher
            assert 0 < counts["victim"] == end - 1 - 2 * per_publisher  # all it published, no gap
        procs.join()  # the surviving consumers unregister as they exit
        stats = topic.stats()
        assert stats.reaped == 1 and stats.consumers == ()
    finally:
        topic.close()
    assert no_names_left(topic)


def test_drop_slowest_never_hands_out_torn_messages(procs: Procs) -> None:
    total = 20000
    topic = Topic.create(new_name(), capacity_bytes=8 << 10, max_message_bytes=256, policy="drop_slowest")
    try:
        results = FORK.Queue()
        readies = [FORK.Event() for _ in range(2)]
        procs.start(slow_checker, topic.name, "copying", True, readies[0], results)
        procs.start(slow_checker, topic.name, "views", False, readies[1], results)
        for ev in readies:
            assert ev.wait(WAIT_S)
        pub = topic.publisher("p")
        for seq in range(1, total + 1):
            assert pub.publish(payload_for(seq)) == seq  # never blocks, never fails
        pub.publish(b"", message_type="end")
        for cid, got, lost, lost_attr, bad, stale_views, end in collect(results, 2):
            assert bad == 0, cid
            assert got + lost == total and lost == lost_attr and end == total + 1, cid
            assert got > 500 and lost > 0, cid  # overrun, yet kept making progress
        assert topic.stats().dropped > 0  # the consumers really were overrun
        procs.join()
    finally:
        topic.close()


def test_publisher_killed_inside_the_lock(procs: Procs) -> None:
    topic = Topic.create(new_name(), capacity_bytes=16 << 10)
    try:
        con = topic.consumer("c")
        pub = topic.publisher("p")
        assert pub.publish(b"before") == 1
        locked = FORK.Event()
        holder = procs.start(hold_lock_and_hang, topic.name, locked)
        assert locked.wait(WAIT_S)
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(5)
        # The kernel dropped the flock; the next holder repairs the sequence word.
        assert pub.publish(b"after", timeout=5) == 2
        assert [(m.sequence, m.data) for m in con.read_batch(10, timeout=1)] == [
            (1, b"before"),
            (2, b"after"),
        ]
        con.close()
    finally:
        topic.close()


def test_idle_consumer_costs_no_cpu_and_wakes_fast(procs: Procs) -> None:
    topic = Topic.create(new_name(), capacity_bytes=16 << 10)
    try:
        results, ready = FORK.Queue(), FORK.Event()
        child = procs.start(idle_reader, topic.name, ready, results)
        assert ready.wait(WAIT_S)
        proc = psutil.Process(child.pid)
        time.sleep(0.2)
        before = sum(proc.cpu_times()[:2])
        time.sleep(1.0)
        idle_cpu = sum(proc.cpu_times()[:2]) - before
        assert idle_cpu < 0.05, f"idle consumer used {idle_cpu:.3f} s of CPU in 1 s"
        sent = time.monotonic()
        topic.publisher().publish(b"wake")
        data, woke = results.get(timeout=WAIT_S)
        assert data == b"wake" and woke - sent < 0.05  # the doorbell, not the 100 ms backstop
        procs.join()
    finally:
        topic.close()


def test_spawned_process_attaches_by_pickled_handle(procs: Procs) -> None:
    spawn = mp.get_context("spawn")
    topic = Topic.create(new_name(), capacity_bytes=64 << 10)
    try:
        con = topic.consumer("c")
        go = spawn.Event()
        go.set()
        p = procs.start(produce_from_handle, topic, 50, ctx=spawn)
        got = []
        while len(got) < 50:
            batch = con.read_batch(100, timeout=WAIT_S)
            assert batch
            got.extend(batch)
        p.join(WAIT_S)
        assert p.exitcode == 0
        assert [m.sequence for m in got] == list(range(1, 51))
        assert [struct.unpack_from("<I", m.data)[0] for m in got] == list(range(50))
        con.close()
    finally:
        topic.close()


def produce_from_handle(topic: Topic, count: int) -> None:
    pub = topic.publisher("spawned")  # the pickled handle re-attached by name in this process
    for i in range(count):
        pub.publish(struct.pack("<I", i))
    topic.close()
