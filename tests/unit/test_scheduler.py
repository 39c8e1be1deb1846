"""The pure scheduler, rule by rule (see lane_mp/scheduling/scheduler.py), with a fake clock."""

from __future__ import annotations

import itertools

import pytest

from lane_mp.config import (
    Lane,
    LaneConfig,
    PartitionConfig,
    Priority,
    PriorityBoostConfig,
    RateLimitConfig,
)
from lane_mp.errors import CostTooLarge, UnknownLane
from lane_mp.scheduling.scheduler import LaneStats, SchedItem, Scheduler
from lane_mp.testing import FakeClock

_ids = itertools.count()


def lane(
    name: str = "main", priority: int = 0, min_c: int = 0, max_c: int | None = None, **kw: object
) -> Lane:
    return Lane(name, priority, LaneConfig(min_concurrency=min_c, max_concurrency=max_c, **kw))  # type: ignore[arg-type]


def add(s: Scheduler, now: float = 0.0, lane: int = 0, **kw: object) -> SchedItem:
    kw.setdefault("submitted_at", now)
    it = SchedItem(next(_ids), lane, **kw)  # type: ignore[arg-type]
    s.enqueue(it, now)
    return it


def names(picked: list[tuple[SchedItem, int]]) -> list[object]:
    return [it.ref for it, _ in picked]


def finish_all(s: Scheduler, picked: list[tuple[SchedItem, int]], free: list[int] | None = None) -> None:
    for it, p in picked:
        s.finished(it, 0.0)
        if free is not None:
            free[p] += 1


# ----------------------------------------------------------------------------- basics


def test_fakeclock() -> None:
    c = FakeClock(5.0)
    assert c.now() == c() == 5.0
    assert c.advance(1.5) == 6.5
    assert c.set(10.0) == 10.0
    with pytest.raises(ValueError):
        c.advance(-1)
    with pytest.raises(ValueError):
        c.set(9.0)


def test_fills_every_free_slot_in_one_call_fifo() -> None:
    s = Scheduler([lane()])
    items = [add(s, ref=i) for i in range(10)]
    free = [2, 3, 1]
    picked = s.pick(0.0, free)
    assert names(picked) == [0, 1, 2, 3, 4, 5]
    assert free == [0, 0, 0]
    assert all(it.state == "active" for it, _ in picked)
    assert s.pending() == 4 and s.active() == 6
    assert s.pick(0.0, free) == []
    finish_all(s, picked[:2])
    assert names(s.pick(0.0, [0, 5, 0])) == [6, 7, 8, 9]
    assert items[9].state == "active" and s.pending() == 0


def test_least_loaded_placement_ties_to_lowest_index() -> None:
    s = Scheduler([lane()])
    for i in range(6):
        add(s, ref=i)
    free = [1, 3, 3, 0]
    picked = s.pick(0.0, free)
    # most free first (1 and 2 tie at 3 -> 1), then re-evaluated after every placement
    assert [p for _, p in picked] == [1, 2, 1, 2, 0, 1]
    assert free == [0, 0, 1, 0]


def test_round_robin_placement_rotates_across_picks() -> None:
    s = Scheduler([lane()], partition=PartitionConfig.round_robin())
    for i in range(4):
        add(s, ref=i)
    assert [p for _, p in s.pick(0.0, [5, 5, 5])] == [0, 1, 2, 0]
    for i in range(3):
        add(s, ref=i)
    picked = s.pick(0.0, [1, 0, 1])  # cursor is at 1: 1 is full, so 2, then 0
    assert [p for _, p in picked] == [2, 0]


def test_item_priority_then_fifo_within_a_level() -> None:
    s = Scheduler([lane()])
    add(s, ref="n1")
    add(s, ref="low", priority=Priority.LOW)
    add(s, ref="n2", priority=Priority.NORMAL)
    add(s, ref="crit", priority=Priority.CRITICAL)
    add(s, ref="bg", priority=Priority.BACKGROUND)
    add(s, ref="high", priority=Priority.HIGH)
    assert names(s.pick(0.0, [10])) == ["crit", "high", "n1", "n2", "low", "bg"]


def test_lane_index_and_unknown_lane() -> None:
    s = Scheduler([lane("a"), lane("b", 1)])
    assert s.lane_names == ["a", "b"] and s.lane_index("b") == 1
    with pytest.raises(UnknownLane):
        s.lane_index("nope")
    with pytest.raises(UnknownLane):
        add(s, lane=2)
    with pytest.raises(UnknownLane):
        s.pause(-1)


def test_enqueue_validation() -> None:
    s = Scheduler([lane()], capacity_units=5)
    it = add(s, ref=1)
    with pytest.raises(ValueError):
        s.enqueue(it, 0.0)  # already pending
    with pytest.raises(ValueError):
        s.enqueue(SchedItem(it.id, 0), 0.0)  # duplicate id
    with pytest.raises(ValueError):
        add(s, priority=5)
    with pytest.raises(ValueError):
        add(s, cost=-1)
    with pytest.raises(ValueError):
        add(s, partition=-1)
    with pytest.raises(CostTooLarge):
        add(s, cost=6)
    assert s.pending() == 1
    (got, _), = s.pick(0.0, [1])
    s.finished(got, 0.0)
    with pytest.raises(ValueError):
        s.enqueue(got, 0.0)  # a retry is a new SchedItem
    with pytest.raises(ValueError):
        s.finished(got, 0.0)  # twice


# ----------------------------------------------------------------------------- rule 1: lanes


def test_strict_lane_priority() -> None:
    s = Scheduler([lane("low", 2), lane("high", 0), lane("mid", 1)])
    for i in range(3):
        add(s, lane=0, ref=f"low{i}")
        add(s, lane=2, ref=f"mid{i}")
        add(s, lane=1, ref=f"high{i}")
    assert names(s.pick(0.0, [4])) == ["high0", "high1", "high2", "mid0"]


def test_max_concurrency_never_exceeded_and_slots_go_to_lower_lanes() -> None:
    s = Scheduler([lane("a", 0, max_c=2), lane("b", 1, max_c=None)])
    for i in range(5):
        add(s, lane=0, ref=f"a{i}")
        add(s, lane=1, ref=f"b{i}")
    picked = s.pick(0.0, [5])
    assert names(picked) == ["a0", "a1", "b0", "b1", "b2"]
    assert s.active(0) == 2
    assert s.pick(0.0, [5]) and s.active(0) == 2  # still capped; b gets them
    finish_all(s, [picked[0]])
    assert names(s.pick(0.0, [5])) == ["a2"]


def test_min_concurrency_reserves_slots_in_priority_order() -> None:
    lanes = [
        lane("top", 0, min_c=0, max_c=None),
        lane("mid", 1, min_c=1, max_c=5),
        lane("low", 2, min_c=2, max_c=5),
        lane("idle", 3, min_c=3, max_c=5),
    ]
    s = Scheduler(lanes)
    for i in range(10):
        add(s, lane=0, ref=f"top{i}")
        add(s, lane=1, ref=f"mid{i}")
        add(s, lane=2, ref=f"low{i}")
    picked = s.pick(0.0, [5])
    # reservations first (mid 1, low 2; idle has nothing), then strict priority
    assert names(picked) == ["mid0", "low0", "low1", "top0", "top1"]
    # minimums are met now: the next slots follow strict priority
    assert names(s.pick(0.0, [3])) == ["top2", "top3", "top4"]
    # only 2 slots: reservations in priority order get them
    finish_all(s, picked[:3])
    assert names(s.pick(0.0, [2])) == ["mid1", "low2"]


def test_paused_lane_is_skipped_until_resumed() -> None:
    s = Scheduler([lane("a", 0, min_c=1), lane("b", 1)])
    add(s, lane=0, ref="a0")
    add(s, lane=1, ref="b0")
    s.pause(0)
    assert names(s.pick(0.0, [5])) == ["b0"]
    assert s.stats()[0].paused and s.pending(0) == 1
    s.resume(0)
    assert names(s.pick(0.0, [5])) == ["a0"]


# ----------------------------------------------------------------------------- rule 2: boost


def boosted(**kw: object) -> Scheduler:
    return Scheduler([lane(boost=PriorityBoostConfig.standard(**kw))])  # type: ignore[arg-type]


def test_boost_raises_priority_as_the_deadline_nears() -> None:
    s = boosted()
    add(s, 0.0, ref="urgent", priority=Priority.LOW, deadline=100.0)
    for i in range(3):
        add(s, 0.0, ref=f"n{i}", priority=Priority.NORMAL)
    # t=10: 90% left, no boost: NORMAL first
    assert names(s.pick(10.0, [1])) == ["n0"]
    # t=25: 75% left, +1 -> NORMAL; FIFO among NORMAL puts it first (older seq)
    assert names(s.pick(25.0, [1])) == ["urgent"]


def test_boost_steps_and_floor_at_critical() -> None:
    s = boosted()
    it = add(s, 0.0, ref="bg", priority=Priority.BACKGROUND, deadline=100.0)
    for i in range(5):
        add(s, 0.0, ref=f"c{i}", priority=Priority.CRITICAL)
    for t, level in [(0.0, 4), (25.0, 3), (50.0, 2), (75.0, 1), (90.0, 0), (99.0, 0)]:
        s.pick(t, [0])  # no slot: just lets the scheduler apply due boosts
        assert it.effective_level == level, t
    # at level 0 it is older than every CRITICAL item
    assert names(s.pick(99.0, [1])) == ["bg"]


def test_aggressive_boost_and_wakeup_at_each_step() -> None:
    s = Scheduler([lane(boost=PriorityBoostConfig.aggressive())])
    it = add(s, 0.0, ref="x", priority=Priority.BACKGROUND, deadline=10.0)
    assert s.next_wakeup(0.0) == pytest.approx(2.0)  # 80% left: +2
    s.pick(2.0, [0])
    assert it.effective_level == 2
    assert s.next_wakeup(2.0) == pytest.approx(4.0)  # 60% left: +4 -> floor 0
    s.pick(4.0, [0])
    assert it.effective_level == 0
    assert s.next_wakeup(4.0) == 10.0  # only the deadline is left


def test_horizon_boosts_items_without_deadline_but_never_expires_them() -> None:
    s = boosted(deadline=10.0)  # PriorityBoostConfig.standard(horizon)
    old = add(s, 0.0, ref="old", priority=Priority.BACKGROUND)
    clock = FakeClock(6.0)
    for i in range(3):
        add(s, clock.now(), ref=f"new{i}", priority=Priority.HIGH)
    # t=9.5: old has 5% of its horizon left -> +4 -> CRITICAL; new ones have ~89% left
    clock.set(9.5)
    assert names(s.pick(clock.now(), [1])) == ["old"]
    assert s.expire(1e6) == [] and old.state == "active"


def test_without_boost_config_items_keep_their_priority() -> None:
    s = Scheduler([lane()])
    add(s, 0.0, ref="low", priority=Priority.LOW, deadline=10.0)
    add(s, 0.0, ref="n", priority=Priority.NORMAL)
    assert names(s.pick(9.0, [1])) == ["n"]
    assert s.next_wakeup(9.0) == 10.0


def test_boost_at_exact_step_boundary_matches_boost_for() -> None:
    # fraction_left computed with float rounding: the level at the wake-up time must be the
    # boosted one, never one ulp late.
    cfg = PriorityBoostConfig.standard()
    for submitted, deadline in [(0.1, 0.7), (1e6 + 0.3, 1e6 + 0.9), (3.3, 3.3000001)]:
        s = Scheduler([lane(boost=cfg)])
        it = add(s, submitted, ref="x", priority=Priority.BACKGROUND, deadline=deadline)
        now = submitted
        levels = []
        for _ in range(4):
            now = s.next_wakeup(now)  # type: ignore[assignment]
            s.pick(now, [0])
            levels.append(it.effective_level)
            frac = (deadline - now) / (deadline - submitted)
            assert it.effective_level == max(0, 4 - cfg.boost_for(frac))
        assert levels == [3, 2, 1, 0]


# ----------------------------------------------------------------------------- rule 3: tenants


def test_tenants_share_a_level_round_robin() -> None:
    s = Scheduler([lane()])
    for i in range(100):
        add(s, ref=f"A{i}", tenant="A")
    for i in range(3):
        add(s, ref=f"B{i}", tenant="B")
    for i in range(2):
        add(s, ref=f"N{i}")  # tenant None is a tenant of its own
    got: list[object] = []
    for _ in range(9):
        got += names(s.pick(0.0, [1]))
    assert got == ["A0", "B0", "N0", "A1", "B1", "N1", "A2", "B2", "A3"]


def test_tenant_fairness_in_one_big_pick() -> None:
    s = Scheduler([lane()])
    for i in range(50):
        add(s, ref=f"A{i}", tenant="A")
    add(s, ref="B0", tenant="B")
    assert names(s.pick(0.0, [3])) == ["A0", "B0", "A1"]


def test_tenant_does_not_jump_levels() -> None:
    s = Scheduler([lane()])
    add(s, ref="A-low", tenant="A", priority=Priority.LOW)
    add(s, ref="B-high", tenant="B", priority=Priority.HIGH)
    add(s, ref="A-high", tenant="A", priority=Priority.HIGH)
    assert names(s.pick(0.0, [3])) == ["B-high", "A-high", "A-low"]


# ----------------------------------------------------------------------------- rule 4: rate limits


def test_rate_limit_holds_lane_back_and_lower_lanes_use_the_slots() -> None:
    s = Scheduler([lane("fast", 0, rate_limit=RateLimitConfig.per_second(2)), lane("slow", 1)])
    for i in range(10):
        add(s, lane=0, ref=f"f{i}")
        add(s, lane=1, ref=f"s{i}")
    clock = FakeClock(100.0)
    assert names(s.pick(clock.now(), [4])) == ["f0", "f1", "s0", "s1"]
    assert s.stats()[0].rate_limited == 1
    assert names(s.pick(clock.now(), [1])) == ["s2"]
    assert s.stats()[0].rate_limited == 2  # once per pick
    assert s.next_wakeup(clock.now()) == pytest.approx(100.5)
    clock.advance(0.5)
    assert names(s.pick(clock.now(), [2])) == ["f2", "s3"]


def test_rate_limit_counted_once_per_pick_even_with_min_concurrency() -> None:
    s = Scheduler([lane("a", 0, min_c=2, max_c=4, rate_limit=RateLimitConfig.per_second(1))])
    for i in range(5):
        add(s, ref=i)
    assert names(s.pick(0.0, [5])) == [0]
    assert s.stats()[0].rate_limited == 1


def test_token_spent_only_when_an_item_is_handed_out() -> None:
    s = Scheduler([lane(rate_limit=RateLimitConfig.per_second(1))])
    # nothing pending: picking does not touch the limiter
    assert s.pick(0.0, [4]) == []
    # pinned to a full partition: not handed out, so no token spent
    add(s, 0.0, ref="pinned", partition=1)
    assert s.pick(0.0, [4, 0]) == []
    add(s, 0.0, ref="free")
    assert names(s.pick(0.0, [4, 0])) == ["free"]
    assert s.pick(0.0, [4, 4]) == []  # the one token is gone now
    assert names(s.pick(1.0, [4, 4])) == ["pinned"]


def test_sliding_window_rate_limit() -> None:
    cfg = RateLimitConfig.per_minute(2, algorithm="sliding_window")
    s = Scheduler([lane(rate_limit=cfg)])
    for i in range(5):
        add(s, ref=i)
    assert names(s.pick(0.0, [5])) == [0, 1]
    assert names(s.pick(30.0, [5])) == []
    assert s.next_wakeup(30.0) == pytest.approx(60.0)
    assert names(s.pick(60.0, [5])) == [2, 3]


def test_requeue_does_not_refund_the_token() -> None:
    s = Scheduler([lane(rate_limit=RateLimitConfig.per_second(1))])
    add(s, 0.0, ref="x")
    (it, _), = s.pick(0.0, [1])
    s.requeue(it, 0.0)
    assert s.pick(0.0, [1]) == []
    assert names(s.pick(1.0, [1])) == ["x"]


# ----------------------------------------------------------------------------- rule 5: cost


def test_cost_admission_units() -> None:
    s = Scheduler([lane()], capacity_units=10)
    add(s, ref="six", cost=6)
    add(s, ref="six-b", cost=6)
    add(s, ref="free", cost=0)
    picked = s.pick(0.0, [8])
    assert names(picked) == ["six", "free"]
    assert s.active_units == 6
    assert s.pick(0.0, [8]) == []
    s.finished(picked[0][0], 0.0)
    assert s.active_units == 0
    assert names(s.pick(0.0, [8])) == ["six-b"]
    with pytest.raises(CostTooLarge):
        add(s, cost=11)
    add(s, ref="ten", cost=10)  # == capacity is fine


def test_cost_ignored_without_capacity() -> None:
    s = Scheduler([lane()])
    for i in range(3):
        add(s, ref=i, cost=10**9)
    assert names(s.pick(0.0, [3])) == [0, 1, 2]


def test_small_items_bypass_a_big_one_at_most_max_bypass_times() -> None:
    s = Scheduler([lane()], capacity_units=10, max_bypass=3)
    (filler, _), = s.pick(0.0, [1]) if add(s, ref="filler", cost=5) else []
    big = add(s, ref="big", cost=8)
    smalls = [add(s, ref=f"s{i}", cost=1) for i in range(10)]
    add(s, ref="zero", cost=0)
    picked = s.pick(0.0, [20])
    # 3 bypasses, then the big one holds: no more cost-bearing items, cost-free still flows
    assert names(picked) == ["s0", "s1", "s2", "zero"]
    assert big.bypassed == 3 and s.holder is big
    s.finished(filler, 0.0)  # units 3: 3 + 8 > 10, still waiting, still holding
    assert s.pick(0.0, [20]) == []
    s.finished(picked[0][0], 0.0)  # units 2: big fits now
    assert names(s.pick(0.0, [20])) == ["big"]
    assert s.holder is None and s.active_units == 10
    s.finished(big, 0.0)
    assert names(s.pick(0.0, [20])) == [f"s{i}" for i in range(3, 10)]
    assert smalls[9].state == "active"


def test_holder_blocks_cost_bearing_items_in_other_lanes_too() -> None:
    s = Scheduler([lane("hi", 0), lane("lo", 1)], capacity_units=4, max_bypass=0)
    (run, _), = s.pick(0.0, [1]) if add(s, lane=1, ref="run", cost=2) else []
    add(s, lane=1, ref="big", cost=4)  # does not fit: max_bypass=0 -> holder at once
    add(s, lane=0, ref="hi-costly", cost=1)
    add(s, lane=0, ref="hi-free")
    # hi-costly comes first in pick order and fits: it is admitted before big is even seen
    assert names(s.pick(0.0, [5])) == ["hi-costly", "hi-free"]
    assert s.holder is not None and s.holder.ref == "big"
    add(s, lane=0, ref="hi-costly-2", cost=1)
    add(s, lane=0, ref="hi-free-2")
    assert names(s.pick(0.0, [5])) == ["hi-free-2"]


def test_holder_released_when_cancelled_or_paused() -> None:
    s = Scheduler([lane("a", 0), lane("b", 1)], capacity_units=4, max_bypass=0)
    (run, _), = s.pick(0.0, [1]) if add(s, lane=0, ref="run", cost=2) else []
    big = add(s, lane=0, ref="big", cost=4)
    add(s, lane=1, ref="small", cost=1)
    assert s.pick(0.0, [5]) == []
    assert s.holder is big
    s.pause(0)  # a paused holder must not freeze cost admission pool-wide
    assert names(s.pick(0.0, [5])) == ["small"]
    s.resume(0)
    add(s, lane=1, ref="small2", cost=1)
    assert s.pick(0.0, [5]) == []
    assert s.remove(big.id) is big and s.holder is None
    assert names(s.pick(0.0, [5])) == ["small2"]


def test_lookahead_past_non_fitting_items_keeps_their_order() -> None:
    s = Scheduler([lane()], capacity_units=10, max_bypass=100)
    add(s, ref="b1", cost=9)
    add(s, ref="b2", cost=9)
    add(s, ref="s1", cost=1)
    add(s, ref="s2", cost=1)
    picked = s.pick(0.0, [5])
    assert names(picked) == ["b1", "s1"]  # b2 does not fit next to b1; s1 does, s2 not any more
    s.finished(picked[0][0], 0.0)
    s.finished(picked[1][0], 0.0)
    assert names(s.pick(0.0, [5])) == ["b2", "s2"]  # set-aside items kept their places


def test_lookahead_is_bounded_per_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    from lane_mp.scheduling import picking as mod

    monkeypatch.setattr(mod, "LOOKAHEAD", 3)
    s = Scheduler([lane()], capacity_units=10, max_bypass=1000)
    (run, _), = s.pick(0.0, [1]) if add(s, ref="run", cost=5) else []
    for i in range(5):
        add(s, ref=f"big{i}", cost=6)
    add(s, ref="small", cost=1)
    add(s, ref="zero")
    assert names(s.pick(0.0, [5])) == ["zero"]  # "small" is beyond the lookahead
    assert names(s.pick(0.0, [5])) == []
    s.finished(run, 0.0)
    assert names(s.pick(0.0, [5])) == ["big0"]


# ----------------------------------------------------------------------------- rule 6: partitions


def test_pinned_items_wait_for_their_partition_without_blocking_others() -> None:
    s = Scheduler([lane()])
    add(s, ref="p1a", partition=1)
    add(s, ref="p1b", partition=1)
    add(s, ref="any")
    add(s, ref="p0", partition=0)
    free = [2, 0, 2]
    picked = s.pick(0.0, free)
    assert [(it.ref, p) for it, p in picked] == [("any", 0), ("p0", 0)]
    assert free == [0, 0, 2]
    # partition 1 frees up: pinned ones go there, in FIFO order
    assert [(it.ref, p) for it, p in s.pick(0.0, [0, 1, 5])] == [("p1a", 1)]
    assert [(it.ref, p) for it, p in s.pick(0.0, [0, 1, 5])] == [("p1b", 1)]


def test_pinned_beyond_partition_count_rejected_when_known() -> None:
    s = Scheduler([lane()], partition=PartitionConfig.hash(2))
    with pytest.raises(ValueError):
        add(s, partition=2)


def test_tenant_pinned_over_many_partitions_fifo_per_free_partition() -> None:
    s = Scheduler([lane()], capacity_units=100)
    for i in range(60):
        add(s, ref=i, partition=i % 12, cost=i % 2)  # 24 placement classes in one tenant queue
    add(s, ref="any")
    picked = s.pick(0.0, [0] * 7 + [1] + [0] * 4)
    assert [(it.ref, p) for it, p in picked] == [(7, 7)]
    picked = s.pick(0.0, [1, 0, 0, 2] + [0] * 8)
    assert [(it.ref, p) for it, p in picked] == [(0, 0), (3, 3), (15, 3)]
    picked = s.pick(0.0, [0] * 11 + [1] + [5])  # 12 partitions plus an extra one for "any"
    assert [(it.ref, p) for it, p in picked] == [(11, 11), ("any", 12)]


def test_pinned_to_a_partition_free_does_not_have_stays_pending() -> None:
    s = Scheduler([lane()])
    add(s, ref="far", partition=5)
    add(s, ref="any")
    assert names(s.pick(0.0, [3, 3])) == ["any"]
    assert s.pending() == 1
    assert names(s.pick(0.0, [0, 0, 0, 0, 0, 1])) == ["far"]


def test_many_pinned_items_do_not_hide_the_ones_behind() -> None:
    s = Scheduler([lane()])
    for i in range(5000):
        add(s, ref=f"hot{i}", partition=0)
    add(s, ref="cold", partition=1)
    add(s, ref="any")
    assert names(s.pick(0.0, [0, 1, 1])) == ["cold", "any"]


# ----------------------------------------------------------------------------- rule 7: deadlines


def test_expired_items_never_handed_out_and_expire_returns_them() -> None:
    s = Scheduler([lane()])
    a = add(s, 0.0, ref="a", deadline=5.0)
    b = add(s, 0.0, ref="b", deadline=3.0)
    add(s, 0.0, ref="c")
    assert s.next_wakeup(0.0) == 3.0
    assert names(s.pick(5.0, [1])) == ["c"]  # a and b are due: skipped
    assert s.next_wakeup(5.0) == 5.0  # due items still pending: wake now
    assert s.expire(5.0) == [b, a]
    assert a.state == b.state == "expired"
    assert s.stats()[0].expired == 2 and s.pending() == 0
    assert s.next_wakeup(5.0) is None


def test_expire_only_touches_due_pending_items() -> None:
    s = Scheduler([lane()])
    add(s, 0.0, ref="run", deadline=1.0)
    late = add(s, 0.0, ref="later", deadline=9.0)
    (run, _), = s.pick(0.0, [1])
    assert s.expire(5.0) == []  # "run" started in time
    assert run.state == "active" and late.is_pending


# ----------------------------------------------------------------------------- requeue / remove


def test_requeue_goes_first_in_its_level_and_undoes_accounting() -> None:
    s = Scheduler([lane(max_c=2)], capacity_units=10)
    x = add(s, ref="x", cost=4)
    for i in range(3):
        add(s, ref=f"n{i}")
    add(s, ref="crit", priority=Priority.CRITICAL)
    picked = s.pick(0.0, [2])
    assert names(picked) == ["crit", "x"]
    assert s.active_units == 4
    s.requeue(x, 0.0)
    assert s.active() == 1 and s.active_units == 0 and s.pending() == 4
    assert x.state == "front" and x.seq == 0  # keeps its seq
    assert names(s.pick(0.0, [1])) == ["x"]


def test_requeued_items_keep_seq_order_and_lose_to_better_levels() -> None:
    s = Scheduler([lane()])
    items = [add(s, ref=i) for i in range(3)]
    s.pick(0.0, [3])
    add(s, ref="crit", priority=Priority.CRITICAL)
    add(s, ref="n")
    for it in reversed(items):
        s.requeue(it, 0.0)
    assert names(s.pick(0.0, [10])) == ["crit", 0, 1, 2, "n"]


def test_requeue_requires_an_active_item() -> None:
    s = Scheduler([lane()])
    it = add(s)
    with pytest.raises(ValueError):
        s.requeue(it, 0.0)


def test_remove_cancels_pending_items_only() -> None:
    s = Scheduler([lane()])
    a = add(s, ref="a")
    b = add(s, ref="b")
    assert s.remove(a.id) is a and a.state == "removed"
    assert s.remove(a.id) is None
    assert s.remove(12345678) is None
    assert names(s.pick(0.0, [5])) == ["b"]
    assert s.remove(b.id) is None  # active, not pending
    assert s.pending() == 0


def test_remove_requeued_item() -> None:
    s = Scheduler([lane()])
    a = add(s, ref="a")
    s.pick(0.0, [1])
    s.requeue(a, 0.0)
    assert s.remove(a.id) is a
    assert s.pick(0.0, [1]) == [] and s.pending() == 0


# ----------------------------------------------------------------------------- stats, wakeups


def test_stats_snapshot() -> None:
    s = Scheduler([lane("a", 0, min_c=1, max_c=3), lane("b", 1)])
    x = add(s, lane=0)
    add(s, lane=0)
    add(s, lane=1, deadline=0.5)
    s.pick(0.0, [1])
    s.finished(x, 0.0, ok=False)
    s.pick(0.0, [1])
    s.expire(1.0)
    a, b = s.stats()
    assert isinstance(a, LaneStats)
    assert a == LaneStats("a", 0, 0, 1, 0, 1, 0, 0, False, 3, 1)
    assert b == LaneStats("b", 1, 0, 0, 0, 0, 0, 1, False, None, 0)


def test_next_wakeup_none_when_nothing_time_dependent() -> None:
    s = Scheduler([lane(rate_limit=RateLimitConfig.per_second(1))])
    assert s.next_wakeup(0.0) is None
    add(s, ref="x")
    add(s, ref="y")
    assert s.next_wakeup(0.0) is None  # the limiter allows now
    s.pick(0.0, [1])
    assert s.next_wakeup(0.0) == pytest.approx(1.0)
    s.pause(0)
    assert s.next_wakeup(0.0) is None  # paused: a refill would not make it pickable


def test_deterministic() -> None:
    def run() -> list[tuple[object, int]]:
        s = Scheduler(
            [lane("a", 0, min_c=1, max_c=3, boost=PriorityBoostConfig.standard(5.0)), lane("b", 1, min_c=1)],
            capacity_units=7,
        )
        out: list[tuple[object, int]] = []
        t = 0.0
        for i in range(200):
            add(s, t, lane=i % 2, ref=i, priority=i % 5, cost=i % 4, tenant=f"t{i % 3}",
                partition=i % 3 if i % 5 == 0 else None, deadline=t + 3.0 if i % 7 == 0 else None)
            t += 0.05
            s.expire(t)
            picked = s.pick(t, [1, 1, 1])
            out += [(it.ref, p) for it, p in picked]
            for it, _ in picked[: len(picked) // 2 + 1]:
                s.finished(it, t)
        return out

    first = run()
    assert first == run() and len(first) > 50


# ----------------------------------------------------------------------------- memory stays bounded


def queued_entries(s: Scheduler) -> int:
    """Entries, live or dead, in every level queue (internal: memory is the point here)."""
    return sum(
        len(sq)
        for ln in s._lanes  # noqa: SLF001
        for level in ln.levels
        for tq in level.tenants.values()
        for sq in tq.subs.values()
    )


def test_dead_entries_of_boosted_items_do_not_pile_up_in_unvisited_levels() -> None:
    # Level 0 never runs dry (CRITICAL flood), so levels 1..4 are never visited; boosted items
    # leave every one of them on their way up. Without compaction that is 4 entries per item.
    s = boosted()
    clock = FakeClock()
    for _ in range(3000):
        for _ in range(5):
            add(s, clock.now(), priority=Priority.CRITICAL)
            add(s, clock.now(), priority=Priority.BACKGROUND, deadline=clock.now() + 1.0)
        clock.advance(0.3)
        s.expire(clock.now())
        finish_all(s, s.pick(clock.now(), [10]))
    assert s.pending() < 100
    assert queued_entries(s) < 400


def test_cancelled_items_do_not_pile_up_in_a_paused_lane() -> None:
    s = Scheduler([lane()])
    s.pause(0)
    for _ in range(20_000):
        s.remove(add(s).id)
    assert queued_entries(s) < 100


def test_heaps_drop_entries_of_started_items() -> None:
    s = Scheduler([lane(boost=PriorityBoostConfig.standard())])
    for i in range(20_000):
        add(s, float(i), priority=Priority.LOW, deadline=1e9)
        finish_all(s, s.pick(float(i), [1]))
    assert len(s._deadlines) <= 2048 and len(s._promos) <= 2048  # noqa: SLF001


# ----------------------------------------------------------------------------- properties

from unittest.mock import patch  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402

from lane_mp.scheduling import picking  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BOOST = PriorityBoostConfig.standard(4.0)


class Reference:
    """Brute force over every pending item, straight from the rules (single tenant, no cost,
    no pins, no limiter): what the scheduler must agree with, pick by pick."""

    def __init__(self, specs: list[tuple[int, int, int | None, bool, bool]]) -> None:
        self.lanes = specs  # (priority, min, max, paused, boost)
        self.pending: list[SchedItem] = []
        self.active = [0] * len(specs)

    def level(self, it: SchedItem, now: float) -> int:
        if not self.lanes[it.lane][4] or it.priority == 0:
            return int(it.priority)
        due = it.deadline if it.deadline is not None else it.submitted_at + 4.0
        frac = (due - now) / (due - it.submitted_at)
        return max(0, it.priority - BOOST.boost_for(frac))

    def take(self, lane: int, now: float) -> SchedItem | None:
        cands = [it for it in self.pending
                 if it.lane == lane and (it.deadline is None or it.deadline > now)]
        if not cands:
            return None
        best = min(cands, key=lambda it: (self.level(it, now), it.seq))
        self.pending.remove(best)
        self.active[lane] += 1
        return best

    def pick(self, now: float, slots: int) -> list[SchedItem]:
        out: list[SchedItem] = []
        order = sorted(range(len(self.lanes)), key=lambda i: (self.lanes[i][0], i))
        for i in order:
            prio, min_c, max_c, paused, _ = self.lanes[i]
            while not paused and slots and self.active[i] < min_c and (it := self.take(i, now)):
                out.append(it)
                slots -= 1
        for i in order:
            prio, min_c, max_c, paused, _ = self.lanes[i]
            def room(i: int = i, max_c: int | None = max_c) -> bool:
                return max_c is None or self.active[i] < max_c

            while not paused and slots and room() and (it := self.take(i, now)):
                out.append(it)
                slots -= 1
        return out


lane_specs = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 2), st.one_of(st.none(), st.integers(2, 4)),
              st.just(False), st.booleans()),
    min_size=1, max_size=4,
)
ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"), st.integers(0, 3), st.integers(0, 4), st.one_of(st.none(), st.floats(0.1, 5.0))
        ),
        st.tuples(st.just("pick"), st.integers(0, 4)),
        st.tuples(st.just("finish"), st.integers(0, 100)),
        st.tuples(st.just("tick"), st.floats(0.0, 2.0)),
        st.tuples(st.just("pause"), st.integers(0, 3)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lane_specs, ops)
def test_matches_brute_force_reference(
    specs: list[tuple[int, int, int | None, bool, bool]], script: list
) -> None:
    specs = [(p, min(mn, mx) if mx else mn, mx, False, b) for p, mn, mx, _, b in specs]
    lanes = [lane(f"l{i}", p, min_c=mn, max_c=mx, boost=BOOST if b else None)
             for i, (p, mn, mx, _, b) in enumerate(specs)]
    s = Scheduler(lanes)
    ref = Reference(specs)
    now = 0.0
    active: list[SchedItem] = []
    for op in script:
        if op[0] == "add":
            _, ln, prio, dl = op
            ln %= len(specs)
            it = add(s, now, lane=ln, priority=prio, deadline=None if dl is None else now + dl)
            ref.pending.append(it)
        elif op[0] == "pick":
            expected = ref.pick(now, op[1])
            got = s.pick(now, [op[1]])
            assert [it for it, _ in got] == expected
            active += expected
        elif op[0] == "finish" and active:
            it = active.pop(op[1] % len(active))
            s.finished(it, now)
            ref.active[it.lane] -= 1
        elif op[0] == "tick":
            now += op[1]
            expired = s.expire(now)
            assert sorted(it.id for it in expired) == sorted(
                it.id for it in ref.pending if it.deadline is not None and it.deadline <= now)
            for it in expired:
                ref.pending.remove(it)
        elif op[0] == "pause":
            ln = op[1] % len(specs)
            p, mn, mx, paused, b = ref.lanes[ln]
            ref.lanes[ln] = (p, mn, mx, not paused, b)
            (s.resume if paused else s.pause)(ln)
        assert s.pending() == len(ref.pending)


items_st = st.tuples(
    st.integers(0, 2),  # lane
    st.integers(0, 4),  # priority
    st.one_of(st.none(), st.floats(0.5, 6.0)),  # deadline in
    st.sampled_from([0, 0, 1, 3, 6, 10]),  # cost
    st.sampled_from([None, "a", "b"]),  # tenant
    st.one_of(st.none(), st.integers(0, 2)),  # partition
)
full_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), items_st),
        st.tuples(st.just("pick"), st.lists(st.integers(0, 3), min_size=3, max_size=3)),
        st.tuples(st.just("finish"), st.integers(0, 100), st.booleans()),
        st.tuples(st.just("requeue"), st.integers(0, 100)),
        st.tuples(st.just("remove"), st.integers(0, 100)),
        st.tuples(st.just("tick"), st.floats(0.0, 1.5)),
        st.tuples(st.just("pause"), st.integers(0, 2)),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(full_ops, st.integers(0, 4), st.sampled_from(["auto", "round_robin"]), st.sampled_from([0, 8]))
def test_invariants_and_eventual_drain(script: list, max_bypass: int, mode: str, few: int) -> None:
    with patch.object(picking, "FEW_CLASSES", few):  # 0: always the many-partitions path
        _invariants_and_eventual_drain(script, max_bypass, mode)


def _invariants_and_eventual_drain(script: list, max_bypass: int, mode: str) -> None:
    lanes = [
        lane("a", 0, min_c=0, max_c=3, boost=PriorityBoostConfig.aggressive()),
        lane("b", 1, min_c=1, max_c=None, rate_limit=RateLimitConfig.per_second(4, burst=2)),
        lane("c", 2, min_c=2, max_c=4, rate_limit=RateLimitConfig.per_second(3, algorithm="sliding_window")),
    ]
    cap = 10
    s = Scheduler(lanes, capacity_units=cap, max_bypass=max_bypass, partition=PartitionConfig(mode))  # type: ignore[arg-type]
    now = 0.0
    pending: dict[int, SchedItem] = {}
    active: list[SchedItem] = []
    paused = [False] * 3
    seen: set[int] = set()

    def check_pick(free: list[int]) -> None:
        before = list(free)
        got = s.pick(now, free)
        for it, p in got:
            assert it.id in pending and it.id not in seen
            assert it.deadline is None or it.deadline > now
            assert not paused[it.lane]
            assert it.partition is None or p == it.partition
            seen.add(it.id)
            del pending[it.id]
            active.append(it)
        assert all(f >= 0 for f in free)
        assert sum(before) - sum(free) == len(got)
        for i, ln in enumerate(lanes):
            mx = ln.config.max_concurrency
            assert mx is None or s.active(i) <= mx
        units = sum(it.cost for it in active)
        assert s.active_units == units <= cap
        # Nothing that could obviously run was left behind: an unpinned (or pinned to a free
        # partition), cost-free, unexpired item of an unlimited, unpaused lane below its max.
        if s.holder is None:
            for it in pending.values():
                ln = lanes[it.lane].config
                if (it.cost == 0 and not paused[it.lane] and ln.rate_limit is None
                        and (it.deadline is None or it.deadline > now)
                        and (ln.max_concurrency is None or s.active(it.lane) < ln.max_concurrency)):
                    if it.partition is None:
                        assert sum(free) == 0, it
                    else:
                        assert free[it.partition] == 0, it

    for op in script:
        kind = op[0]
        if kind == "add":
            ln, prio, dl, cost, tenant, part = op[1]
            it = add(s, now, lane=ln, priority=prio, deadline=None if dl is None else now + dl,
                     cost=cost, tenant=tenant, partition=part)
            pending[it.id] = it
        elif kind == "pick":
            check_pick(list(op[1]))
        elif kind in ("finish", "requeue") and active:
            it = active.pop(op[1] % len(active))
            if kind == "finish":
                s.finished(it, now, ok=op[2])
            else:
                s.requeue(it, now)
                seen.discard(it.id)
                pending[it.id] = it
        elif kind == "remove" and pending:
            key = sorted(pending)[op[1] % len(pending)]
            assert s.remove(key) is pending.pop(key)
        elif kind == "tick":
            now += op[1]
            for it in s.expire(now):
                assert pending.pop(it.id) is it and it.deadline <= now  # type: ignore[operator]
        elif kind == "pause":
            paused[op[1]] = not paused[op[1]]
            (s.pause if paused[op[1]] else s.resume)(op[1])
        assert s.pending() == len(pending)
        assert s.active() == len(active)

    # Liveness: with everything resumed and work completing, every item runs or expires.
    for i in range(3):
        s.resume(i)
    paused[:] = [False] * 3
    for _ in range(2000):
        if not pending:
            break
        for it in active:
            s.finished(it, now)
        active.clear()
        for it in s.expire(now):
            del pending[it.id]
        if not pending:
            break
        wake = s.next_wakeup(now)
        check_pick([3, 3, 3])
        if not active:
            assert wake is not None, (pending, s.holder)
            now = max(now, wake)
    assert not pending
    assert s.pending() == 0
