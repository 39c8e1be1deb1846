"""Single-process tests of lane_mp.topic: the log, retention policies, consumers, groups.

Topic names start with this process's hex pid, so the conftest leak check covers their segments
and doorbell FIFOs (``/dev/shm/lmp_<pid>...``).
"""

from __future__ import annotations

import itertools
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lane_mp.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    PayloadTooLarge,
    TopicClosed,
    TopicError,
    TopicFull,
)
from lane_mp.topic import Message, Topic
from lane_mp.topic import layout as L

pytestmark = pytest.mark.timeout(30)

_counter = itertools.count()


def new_name() -> str:
    return f"{os.getpid():x}u{next(_counter)}"


@pytest.fixture
def make_topic() -> Iterator:
    made: list[Topic] = []

    def make(**kw: object) -> Topic:
        t = Topic.create(new_name(), **kw)  # type: ignore[arg-type]
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- basics ---------------------------------------------------------------------------------


def test_round_trip_fields_and_sequences(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16)
    con = t.consumer("c", start="earliest")
    pub = t.publisher("p1")
    before = time.time()
    assert pub.publish(b"hello", message_type="greet") == 1
    assert pub.publish_many([b"a", bytearray(b"bb"), memoryview(b"ccc")]) == [2, 3, 4]
    assert pub.publish_obj({"k": [1, 2]}, message_type="obj") == 5
    msgs = con.read_batch(10)
    assert [m.sequence for m in msgs] == [1, 2, 3, 4, 5]
    first = msgs[0]
    assert (first.producer_id, first.message_type, first.data, first.lost) == ("p1", "greet", b"hello", 0)
    assert before - 1 <= first.timestamp <= time.time() + 1
    assert [m.data for m in msgs[1:4]] == [b"a", b"bb", b"ccc"]
    assert msgs[4].is_obj and msgs[4].obj() == {"k": [1, 2]}
    assert con.position == 6 and con.committed == 6
    assert con.read(timeout=0) is None


def test_start_latest_earliest_and_sequence(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16)
    pub = t.publisher()
    pub.publish_many([bytes([i]) for i in range(10)])
    latest = t.consumer("latest")
    earliest = t.consumer("earliest", start="earliest")
    middle = t.consumer("middle", start=4)
    future = t.consumer("future", start=13)
    pub.publish_many([bytes([i]) for i in range(10, 15)])
    assert [m.sequence for m in latest.read_batch(100)] == list(range(11, 16))
    assert [m.sequence for m in earliest.read_batch(100)] == list(range(1, 16))
    assert [m.sequence for m in middle.read_batch(100)] == list(range(4, 16))
    assert [m.sequence for m in future.read_batch(100)] == [13, 14, 15]


def test_names_and_options_are_validated(make_topic) -> None:
    for bad in ("", "a/b", "x" * 64, "_x", "a.b"):
        with pytest.raises(ConfigError):
            Topic.create(bad)
    with pytest.raises(ConfigError):
        make_topic(policy="later")
    with pytest.raises(ConfigError):
        make_topic(capacity_bytes=1 << 16, max_message_bytes=1 << 16)
    t = make_topic(capacity_bytes=1 << 16, max_message_bytes=100)
    with pytest.raises(TopicError):
        Topic.create(t.name)
    with pytest.raises(TopicClosed):
        Topic.attach(new_name())
    pub = t.publisher()
    with pytest.raises(PayloadTooLarge):
        pub.publish(b"x" * 101)
    with pytest.raises(EncodeError):
        pub.publish("text")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        pub.publish_obj(object())
    with pytest.raises(ConfigError):
        t.consumer("c", start="middle")
    with pytest.raises(ConfigError):
        t.consumer("x" * 57)


def test_attach_and_pickle_share_one_log(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16, policy="error", max_consumers=4)
    other = Topic.attach(t.name)
    again = pickle.loads(pickle.dumps(t))
    try:
        assert (other.policy, other.capacity_bytes, other.max_consumers) == ("error", 1 << 16, 4)
        assert not other.owner and t.owner and not again.owner
        con = other.consumer("c")
        again.publisher("x").publish(b"1")
        assert con.read(timeout=1).data == b"1"
        with pytest.raises(TopicError):
            other.unlink()  # only the owner removes names
    finally:
        other.close()
        again.close()


def test_numpy_like_buffers_are_flattened(make_topic) -> None:
    import array

    t = make_topic(capacity_bytes=1 << 16)
    con = t.consumer("c")
    arr = array.array("d", [1.5, 2.5])
    t.publisher().publish(arr)
    assert con.read(timeout=1).data == arr.tobytes()


# -- retention and policies -------------------------------------------------------------------


def test_error_policy_and_reclaim_after_reads(make_topic) -> None:
    t = make_topic(capacity_bytes=4096, max_message_bytes=256, policy="error")
    con = t.consumer("c")
    pub = t.publisher()
    sent = 0
    with pytest.raises(TopicFull) as info:
        while True:
            pub.publish(b"x" * 200)
            sent += 1
    assert info.value.published == 0
    assert sent == t.stats().messages_retained > 10
    assert len(con.read_batch(1000)) == sent
    pub.publish(b"y")  # room again: every consumer passed the old records
    assert con.read(timeout=1).sequence == sent + 1


def test_no_consumers_means_a_ring_of_recent_messages(make_topic) -> None:
    t = make_topic(capacity_bytes=4096, max_message_bytes=256, policy="error")
    pub = t.publisher()
    for i in range(500):
        pub.publish(i.to_bytes(4, "little") * 10)
    stats = t.stats()
    assert stats.head_sequence == 500 and stats.bytes_used <= 4096
    late = t.consumer("late", start="earliest")
    got = late.read_batch(1000)
    assert [m.sequence for m in got] == list(range(stats.tail_sequence, 501))
    assert got[0].lost == 0  # "earliest" asked for what is retained, nothing more


def test_block_policy_times_out_then_unblocks(make_topic) -> None:
    t = make_topic(capacity_bytes=4096, max_message_bytes=256, policy="block")
    con = t.consumer("c")
    pub = t.publisher()
    with pytest.raises(TopicFull):
        for _ in range(100):
            pub.publish(b"x" * 200, timeout=0.05)
    n = t.stats().messages_retained

    def drain() -> None:
        time.sleep(0.1)
        con.read_batch(1000)

    th = threading.Thread(target=drain)
    th.start()
    t0 = time.monotonic()
    assert pub.publish(b"z" * 200, timeout=5) == n + 1  # waits for the reader, then goes through
    assert time.monotonic() - t0 >= 0.05
    th.join()


def test_drop_slowest_reports_every_lost_message(make_topic) -> None:
    t = make_topic(capacity_bytes=4096, max_message_bytes=256, policy="drop_slowest")
    fast = t.consumer("fast")
    slow = t.consumer("slow")
    pub = t.publisher()
    for i in range(200):
        pub.publish(i.to_bytes(2, "little") * 50)
        assert [m.lost for m in fast.read_batch(10)] == [0]
    got = slow.read_batch(1000)
    assert got[0].lost > 0 and sum(m.lost for m in got) + len(got) == 200
    assert slow.lost == got[0].lost == t.stats().dropped
    assert [m.sequence for m in got] == list(range(got[0].sequence, 201))
    info = {c.consumer_id: c for c in t.stats().consumers}
    assert info["slow"].lost == slow.lost and info["fast"].lost == 0


def test_zero_copy_views_are_protected_until_the_next_read(make_topic) -> None:
    t = make_topic(capacity_bytes=4096, max_message_bytes=256, policy="error")
    con = t.consumer("c")
    pub = t.publisher()
    pub.publish(b"A" * 200)
    msg = con.read(timeout=1, copy=False)
    assert isinstance(msg.data, memoryview) and msg.data.readonly
    with pytest.raises(TopicFull):
        for _ in range(100):
            pub.publish(b"B" * 200)  # may not reclaim the record behind the view
    assert bytes(msg.data) == b"A" * 200 and con.view_valid()
    rest = con.read_batch(1000)
    assert rest[0].sequence == 2
    msg.data.release()


def test_manual_commit_holds_retention_and_resume(make_topic) -> None:
    t = make_topic(capacity_bytes=4096, max_message_bytes=256, policy="error")
    pub = t.publisher()
    con = t.consumer("c", auto_commit=False)
    pub.publish_many([b"1", b"2", b"3"])
    assert [m.data for m in con.read_batch(2)] == [b"1", b"2"]
    assert con.committed == 1 and t.lag("c") == 3
    con.commit()
    assert con.committed == 3 and t.lag("c") == 1
    con.close(unregister=False)  # detached: keeps its position
    assert t.stats().consumers[0].detached
    again = t.consumer("c", start="latest")
    assert again.resumed and again.read(timeout=1).data == b"3"
    again.close()
    assert t.stats().consumers == ()


def test_consumer_ids_are_exclusive(make_topic) -> None:
    t = make_topic(capacity_bytes=4096, max_message_bytes=256, max_consumers=2)
    t.consumer("a")
    with pytest.raises(TopicError):
        t.consumer("a")
    t.consumer("b")
    with pytest.raises(TopicError, match="full"):
        t.consumer("c")


def test_stale_and_removed_consumers(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16)
    idle = t.consumer("idle")
    busy = t.consumer("busy")
    t.publisher().publish_many([b"x"] * 5)
    busy.read_batch(10)
    time.sleep(0.05)
    stale = t.stale_consumers(idle_seconds=0.04, min_lag=5)
    assert [c.consumer_id for c in stale] == ["idle"] and stale[0].lag == 5
    assert t.remove_consumer("idle") and not t.remove_consumer("idle")
    with pytest.raises(TopicError, match="removed"):
        idle.read(timeout=0)
    assert [c.consumer_id for c in t.stats().consumers] == ["busy"]


def test_a_sleeping_consumer_learns_at_once_that_it_was_removed(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16)
    con = t.consumer("c")
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            con.read(timeout=5)
        except TopicError as exc:
            errors.append(exc)

    th = threading.Thread(target=reader)
    th.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    assert t.remove_consumer("c")
    th.join(5)
    assert errors and "removed" in str(errors[0]) and time.monotonic() - t0 < 1.0


def test_threads_publishing_together_get_gap_free_sequences(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 20)
    con = t.consumer("c")
    shared = t.publisher("shared")
    seqs: list[int] = []
    lock = threading.Lock()

    def work(pub_id: str | None) -> None:
        pub = shared if pub_id is None else t.publisher(pub_id)
        mine = []
        for i in range(500):
            if i % 10 == 0:
                mine += pub.publish_many([b"m"] * 3)
            else:
                mine.append(pub.publish(b"s"))
        with lock:
            seqs.extend(mine)

    threads = [threading.Thread(target=work, args=(pid,)) for pid in ("a", "b", None, None)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)
    n = 4 * (450 + 50 * 3)
    assert sorted(seqs) == list(range(1, n + 1))
    got = con.read_batch(10 * n)
    assert [m.sequence for m in got] == list(range(1, n + 1))


def test_dead_consumers_are_reaped_when_full(make_topic) -> None:
    t = make_topic(capacity_bytes=4096, max_message_bytes=256, policy="error")
    ghost = t.consumer("ghost")
    pub = t.publisher()
    pub.publish(b"x")
    # Pretend the consumer's process died: its slot now names a pid that no longer exists.
    t._log.q[L.slot_word(ghost._slot) + L.S_PID] = dead_pid()
    assert [c.alive for c in t.stats().consumers] == [False]
    for _ in range(100):
        pub.publish(b"y" * 200)  # would be TopicFull if the ghost still held retention
    assert t.stats().reaped == 1 and t.stats().consumers == ()
    assert not os.path.exists(f"/dev/shm/{t.segment_name}.c{ghost._slot}")


def test_a_publisher_dying_inside_the_lock_is_repaired(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16)
    con = t.consumer("c")
    pub = t.publisher()
    pub.publish_many([b"1", b"2"])
    q = t._log.q
    # The state a holder killed between the head store and the sequence store leaves behind:
    q[L.W_LOCK_OWNER] = dead_pid()
    q[L.W_HEAD_SEQ] = 1
    q[L.W_TAIL_SEQ] = 7
    assert pub.publish(b"3") == 3  # repaired: no repeated sequence number
    assert q[L.W_LOCK_OWNER] == 0 and q[L.W_TAIL_SEQ] == 1
    assert [m.sequence for m in con.read_batch(10)] == [1, 2, 3]


# -- groups, objects, close -------------------------------------------------------------------


def test_groups_are_returned_whole(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16)
    con = t.consumer("c")
    a, b = t.publisher("a"), t.publisher("b")
    a.publish(b"a0", group=("g", 3))
    b.publish(b"solo")
    b.publish(b"b0", group=("g", 2))  # same group id, other producer: another group
    a.publish(b"a1", group="g")
    b.publish(b"b1", group="g")
    a.publish(b"a2", group="g")
    assert a.publish_group("h", [b"h0", b"h1"]) == [7, 8]
    with pytest.raises(ConfigError):
        a.publish(b"late", group="g")  # closed after its third member
    units = [con.read_group(timeout=1) for _ in range(4)]
    assert [[m.data for m in u] for u in units] == [
        [b"solo"],
        [b"b0", b"b1"],
        [b"a0", b"a1", b"a2"],
        [b"h0", b"h1"],
    ]
    assert units[2][0].group_size == 3 and [m.group_index for m in units[2]] == [0, 1, 2]
    assert con.read_group(timeout=0.01) is None


def test_incomplete_groups_are_abandoned(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16)
    con = t.consumer("c", group_timeout=0.05)
    pub = t.publisher("p")
    pub.publish(b"0", group=("g", 3))
    pub.publish(b"1", group="g")
    assert con.read_group(timeout=0.1) is None
    pub.publish(b"x")
    assert [m.data for m in con.read_group(timeout=1)] == [b"x"]
    assert con.abandoned_groups == 1


class Point(msgspec.Struct):
    x: int
    y: float


def test_objects_round_trip_with_types(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16)
    con = t.consumer("c")
    pub = t.publisher()
    pub.publish_obj(Point(1, 2.5), message_type="point")
    pub.publish(b"\xc1")  # never valid msgpack
    assert con.read(timeout=1).obj(Point) == Point(1, 2.5)
    with pytest.raises(DecodeError):
        con.read(timeout=1).obj()


def test_unlink_closes_for_everyone_after_draining(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16)
    other = Topic.attach(t.name)
    con = other.consumer("c")
    pub = other.publisher()
    pub.publish(b"last")
    t.unlink()
    assert other.closed
    with pytest.raises(TopicClosed):
        pub.publish(b"more")
    assert [m.data for m in con] == [b"last"]  # iteration drains, then ends
    other.close()
    assert not os.path.exists(f"/dev/shm/{t.segment_name}")


def test_a_blocked_read_wakes_on_publish(make_topic) -> None:
    t = make_topic(capacity_bytes=1 << 16)
    con = t.consumer("c")
    pub = t.publisher()
    got: list[tuple[Message | None, float]] = []

    def reader() -> None:
        got.append((con.read(timeout=5), time.monotonic()))

    th = threading.Thread(target=reader)
    th.start()
    time.sleep(0.2)  # long enough to be asleep on the doorbell, not spinning
    assert t.stats().consumers[0].sleeping
    sent = time.monotonic()
    pub.publish(b"ping")
    th.join(5)
    msg, when = got[0]
    assert msg is not None and msg.data == b"ping"
    assert when - sent < 0.05  # rung, not the 100 ms backstop poll
    t0 = time.monotonic()
    assert con.read(timeout=0.05) is None and time.monotonic() - t0 >= 0.05


# -- properties -------------------------------------------------------------------------------

payloads = st.binary(min_size=0, max_size=300)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(payloads, min_size=1, max_size=8), min_size=1, max_size=30))
def test_sequences_are_gap_free_and_wrap_is_invisible(batches: list[list[bytes]]) -> None:
    t = Topic.create(new_name(), capacity_bytes=2048, max_message_bytes=400, policy="error")
    try:
        con = t.consumer("c")
        pub = t.publisher("p")
        expected = 1
        for batch in batches:
            if len(batch) == 1:
                seqs = [pub.publish(batch[0])]
            else:
                seqs = pub.publish_many(batch)
            assert seqs == list(range(expected, expected + len(batch)))
            expected += len(batch)
            got = con.read_batch(100)
            assert [m.data for m in got] == batch and [m.sequence for m in got] == seqs
        stats = t.stats()
        assert stats.head_sequence == expected - 1 and 0 <= stats.bytes_used <= 2048
    finally:
        t.close()


class LogMachine(RuleBasedStateMachine):
    """Publish and read in any interleaving; every consumer sees every message once, in order.

    Policy "error" with a tiny log, so retention and wrap-around happen all the time; a TopicFull
    is only allowed while some consumer still has unread messages.
    """

    @initialize(ncons=st.integers(1, 3), capacity=st.sampled_from([1024, 2048, 4096]))
    def setup(self, ncons: int, capacity: int) -> None:
        self.topic = Topic.create(new_name(), capacity_bytes=capacity, max_message_bytes=200, policy="error")
        self.pub = self.topic.publisher("p")
        self.cons = [self.topic.consumer(f"c{i}") for i in range(ncons)]
        self.log: list[bytes] = []  # index i holds sequence i + 1
        self.next_index = [0] * ncons

    @rule(data=st.lists(st.binary(max_size=200), min_size=1, max_size=5))
    def publish(self, data: list[bytes]) -> None:
        try:
            seqs = self.pub.publish_many(data)
        except TopicFull as exc:
            seqs = exc.sequences
            assert any(i < len(self.log) + len(seqs) for i in self.next_index), "full with nothing unread"
        assert seqs == list(range(len(self.log) + 1, len(self.log) + 1 + len(seqs)))
        self.log.extend(data[: len(seqs)])

    @rule(which=st.integers(0, 2), n=st.integers(1, 10), copy=st.booleans())
    def read(self, which: int, n: int, copy: bool) -> None:
        which %= len(self.cons)
        got = self.cons[which].read_batch(n, timeout=0, copy=copy)
        start = self.next_index[which]
        assert [m.sequence for m in got] == list(range(start + 1, start + 1 + len(got)))
        assert [bytes(m.data) for m in got] == self.log[start : start + len(got)]
        assert all(m.lost == 0 for m in got)
        assert len(got) == min(n, len(self.log) - start)
        self.next_index[which] += len(got)

    @invariant()
    def bounded(self) -> None:
        if hasattr(self, "topic"):
            stats = self.topic.stats()
            assert 0 <= stats.bytes_used <= stats.capacity_bytes
            assert stats.head_sequence == len(self.log)
            assert stats.tail_sequence <= min(self.next_index) + 1  # nothing unread was reclaimed

    def teardown(self) -> None:
        if hasattr(self, "topic"):
            self.topic.close()


LogMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_log_machine = LogMachine.TestCase


class DropMachine(RuleBasedStateMachine):
    """drop_slowest: publishing never fails; each consumer sees an increasing subsequence whose
    gaps are exactly the ``lost`` counts, and every payload matches its sequence number."""

    @initialize(ncons=st.integers(1, 3))
    def setup(self, ncons: int) -> None:
        self.topic = Topic.create(
            new_name(), capacity_bytes=1024, max_message_bytes=200, policy="drop_slowest"
        )
        self.pub = self.topic.publisher("p")
        self.cons = [self.topic.consumer(f"c{i}") for i in range(ncons)]
        self.log: list[bytes] = []
        self.seen = [0] * ncons  # last sequence seen

    @rule(data=st.lists(st.binary(max_size=200), min_size=1, max_size=5))
    def publish(self, data: list[bytes]) -> None:
        seqs = self.pub.publish_many(data)
        assert seqs == list(range(len(self.log) + 1, len(self.log) + 1 + len(data)))
        self.log.extend(data)

    @precondition(lambda self: hasattr(self, "cons"))
    @rule(which=st.integers(0, 2), n=st.integers(1, 10))
    def read(self, which: int, n: int) -> None:
        which %= len(self.cons)
        for m in self.cons[which].read_batch(n, timeout=0):
            assert m.sequence == self.seen[which] + 1 + m.lost
            assert m.data == self.log[m.sequence - 1]
            self.seen[which] = m.sequence

    @invariant()
    def accounted(self) -> None:
        if hasattr(self, "cons"):
            for con, seen in zip(self.cons, self.seen):
                assert con.position == seen + 1 or con.position > seen  # a skip shows on the next read
                assert con.lost <= seen

    def teardown(self) -> None:
        if hasattr(self, "topic"):
            self.topic.close()


DropMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_drop_machine = DropMachine.TestCase
