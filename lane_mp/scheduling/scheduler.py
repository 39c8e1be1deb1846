"""The pure scheduler: which pending command goes to which partition, and when.

No processes, no I/O, no clock: the coordinator passes ``now`` (monotonic seconds) into every
call, and ``free`` (free command slots per partition) into :meth:`Scheduler.pick`. Given the same
calls, it makes the same decisions (no randomness, no wall clock, no ``hash()`` of strings).

Rules of :meth:`Scheduler.pick`, in the order they apply
---------------------------------------------------------
``pick(now, free)`` fills as many free slots as it can in one call (never one per tick),
decrements ``free`` in place and returns ``(item, partition)`` pairs, in pick order:

1. **Lanes.** Paused lanes are skipped. First a *reservation pass*: every lane whose active count
   is below its ``min_concurrency`` is served up to that minimum, lanes in priority order
   (0 = highest; equal priorities by lane index). Then a *priority pass* fills what is left by
   strict lane priority. A lane never exceeds ``max_concurrency`` (None = unlimited).
2. **Within a lane**: best *effective level* first, where effective level =
   ``max(0, priority - boost)`` and ``boost = lane.boost.boost_for(fraction_left)``,
   ``fraction_left = (due - now) / (due - submitted_at)``, ``due`` = the deadline, or for items
   without one ``submitted_at + boost.horizon`` if the lane sets a horizon. Boosts only grow
   with time, so the scheduler computes when each item's level next drops and moves it then
   (see ``boost.py``) instead of re-scoring every item at every pick. FIFO (``seq``) within a
   level. Items handed back by :meth:`Scheduler.requeue` go before every other item of the same
   effective level (oldest seq first among themselves).
3. **Tenants**: within a lane and level, tenants (``tenant=None`` is one too) take turns
   round-robin, one item per turn, so one tenant's flood cannot starve another.
4. **Rate limit** per lane: the lane's limiter is asked before each hand-out and a token is spent
   only for an item actually handed out. When it says no, the lane is done for this pick
   (``rate_limited`` counts it once per pick) and lower lanes get the slots.
5. **Cost admission** (``capacity_units``; None disables it): an item of cost ``c > 0`` is
   admitted only while ``active_units + c <= capacity_units``; ``enqueue`` rejects
   ``c > capacity_units`` with :class:`~lane_mp.errors.CostTooLarge` (it could never run).
   *Anti-starvation*: when the first cost-bearing candidate in pick order does not fit (the
   "head of line"), candidates behind it that fit may bypass it; every such cost-bearing
   admission counts one bypass against it (pick order: reservation pass, then priority pass,
   as in rule 1). Once it has been bypassed ``max_bypass`` times it
   becomes the *holder*: no other cost-bearing item is admitted, in any lane, until the holder
   fits and is admitted (cost-free items still flow, so running work drains and frees units).
   There is one holder at a time; it is released if it is cancelled or expires, and its rule is
   suspended while its lane is paused. Looking past non-fitting items is bounded by
   :data:`LOOKAHEAD` per pick; items further back wait for a later pick.
6. **Partitions**: an item with ``partition`` set goes only to ``free[partition]``; if that is
   full the item is skipped (it keeps its place and blocks nothing but itself). Unpinned items go
   to the partition with the most free slots (ties: lowest index), or rotate over partitions with
   free slots when ``PartitionConfig.mode == "round_robin"``. Turning keys into partitions
   (and ignoring them in mode ``none``) is the caller's job: see :mod:`lane_mp.partitions`.
7. **Deadlines**: an item whose deadline is ``<= now`` is never handed out; :meth:`expire`
   removes and returns it.

Cost model: O(1) per item in the common case (one tenant, unpinned, no cost; see
``picking.py``), O(log n) per boost step, deadline and placement, the cost look-past bounded by
:data:`LOOKAHEAD` per pick; never O(pending) per pick. Tenants with nothing eligible are passed
over once per pick (O(tenants) at worst). Cancel, expiry and boosting leave stale entries
behind (O(1) instead of a search); queues and heaps are compacted once stale entries dominate,
so memory stays proportional to what is pending.

Misuse is an error, not a silent fix: enqueueing an item twice, finishing or requeueing an
item that is not active, a duplicate pending id, a priority outside 0..4, a negative cost or
partition all raise. An item pinned to a partition that ``free`` does not have stays pending.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

import msgspec

from ..config import Lane, PartitionConfig
from ..errors import ConfigError, CostTooLarge, UnknownLane
from .boost import due_time, level_at, next_promotion
from .items import (
    ACTIVE,
    DONE,
    EXPIRED,
    FRONT,
    LAST_PENDING,
    NEW,
    NLEVELS,
    REMOVED,
    Q,
    SchedItem,
)
from .picking import LOOKAHEAD, Pick, PickMixin
from .placement import RoundRobin
from .queues import LaneState, placement_class

__all__ = ["Scheduler", "SchedItem", "LaneStats", "LOOKAHEAD"]

# The deadline and boost heaps are filtered when they outgrow twice their size after the last
# filtering (and this floor): O(n) every n pushes, so amortized O(1), and memory stays within 2x.
HEAP_COMPACT_MIN = 1024

_DEFAULT_PARTITION = PartitionConfig()  # frozen, so one shared default instance is safe


class LaneStats(msgspec.Struct, frozen=True):
    """Snapshot of one lane. ``rate_limited`` counts picks held back by the lane's limiter."""

    name: str
    priority: int
    pending: int
    active: int
    completed: int
    failed: int
    rate_limited: int
    expired: int
    paused: bool
    max_concurrency: int | None
    min_concurrency: int


class Scheduler(PickMixin):
    """Priority lanes over a pool of partitions; see the module docstring for the rules."""

    def __init__(
        self,
        lanes: list[Lane],
        *,
        capacity_units: int | None = None,
        partition: PartitionConfig = _DEFAULT_PARTITION,
        max_bypass: int = 16,
    ) -> None:
        if not lanes:
            raise ConfigError("lanes: at least one lane is needed", field="lanes")
        names = [lane.name for lane in lanes]
        if len(set(names)) != len(names):
            raise ConfigError("lanes: duplicate lane names", field="lanes")
        if capacity_units is not None and capacity_units < 0:
            raise ConfigError("capacity_units: must be >= 0", field="capacity_units")
        if max_bypass < 0:
            raise ConfigError("max_bypass: must be >= 0", field="max_bypass")
        self.lane_names: list[str] = names
        self._lanes = [LaneState(i, lane) for i, lane in enumerate(lanes)]
        self._order = sorted(self._lanes, key=lambda s: (s.priority, s.index))
        self._by_name = {name: i for i, name in enumerate(names)}
        self._cap = capacity_units
        self._max_bypass = max_bypass
        self._nparts = partition.partitions
        self._rr = RoundRobin() if partition.mode == "round_robin" else None
        self._index: dict[int, SchedItem] = {}  # pending items by id
        self._deadlines: list[tuple[float, int, SchedItem]] = []  # heap, lazy deletion
        self._promos: list[tuple[float, int, SchedItem]] = []  # heap of boost steps, lazy
        self._deadlines_max = self._promos_max = HEAP_COMPACT_MIN  # compaction thresholds
        self._seq = 0
        self._tick = 0  # unique heap tiebreak: an item may have two entries after a requeue
        self._units = 0
        self._holder: SchedItem | None = None
        self._npending = 0
        self._picks = 0

    # ------------------------------------------------------------------ lanes and counters

    def lane_index(self, name: str) -> int:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self.lane_names)
            raise UnknownLane(f"unknown lane {name!r} (lanes: {known})", lane=name) from None

    def _lane(self, lane: int) -> LaneState:
        if not 0 <= lane < len(self._lanes):
            raise UnknownLane(f"no lane with index {lane!r}", lane=lane)
        return self._lanes[lane]

    def pause(self, lane: int) -> None:
        self._lane(lane).paused = True

    def resume(self, lane: int) -> None:
        self._lane(lane).paused = False

    def pending(self, lane: int | None = None) -> int:
        return self._npending if lane is None else self._lane(lane).pending

    def active(self, lane: int | None = None) -> int:
        if lane is None:
            return sum(s.active for s in self._lanes)
        return self._lane(lane).active

    @property
    def active_units(self) -> int:
        """Capacity units held by active items (0 when cost admission is disabled)."""
        return self._units

    @property
    def holder(self) -> SchedItem | None:
        """The cost-bearing item other cost-bearing items currently wait for, if any."""
        return self._holder

    def stats(self) -> list[LaneStats]:
        return [
            LaneStats(
                s.name, s.priority, s.pending, s.active, s.completed, s.failed, s.rate_limited,
                s.expired, s.paused, s.max_c, s.min_c,
            )
            for s in self._lanes
        ]

    # ------------------------------------------------------------------ item lifecycle

    def enqueue(self, item: SchedItem, now: float) -> None:
        """Add a new item; raises CostTooLarge, UnknownLane, ValueError (bad fields, reused item).

        An item is enqueued once: lazily deleted heap entries of its past life (an old deadline)
        would otherwise apply to the new one. A retry is a new SchedItem.
        """
        lane = self._lane(item.lane)
        if item._st != NEW:
            raise ValueError(f"{item!r} was enqueued before; a retry needs a new SchedItem")
        prio = item.priority
        if not 0 <= prio < NLEVELS:
            raise ValueError(f"item priority must be in 0..{NLEVELS - 1}, got {prio!r}")
        cost = item.cost
        costly = False
        if cost:
            if cost < 0:
                raise ValueError(f"cost must be >= 0, got {cost!r}")
            cap = self._cap
            if cap is not None:
                if cost > cap:
                    raise CostTooLarge(
                        f"cost {cost} exceeds the pool's capacity_units ({cap}); it could never run",
                        cost=cost, capacity_units=cap,
                    )
                costly = True
        part = item.partition
        if part is None:
            item._cls = 1 if costly else 0
        else:
            if part < 0 or (self._nparts is not None and part >= self._nparts):
                raise ValueError(f"partition {part!r} out of range")
            item._cls = placement_class(part, costly)
        index = self._index
        if item.id in index:
            raise ValueError(f"an item with id {item.id!r} is already pending")
        item.seq = seq = self._seq
        self._seq = seq + 1
        index[item.id] = item
        level = int(prio)
        item._bypassed = 0
        item._promo_at = None
        boost = lane.boost
        due = None if boost is None else due_time(level, item.deadline, item.submitted_at, boost)
        item._due = due
        if due is not None:
            assert boost is not None
            level = level_at(level, boost, due, item.submitted_at, now)
        item._level = level
        if due is not None:
            self._schedule_promo(item, lane, now)
        item._st = Q
        if item.deadline is not None:
            self._push_deadline(item)
        lane.levels[level].add(item)
        lane.pending += 1
        self._npending += 1

    def requeue(self, item: SchedItem, now: float) -> None:
        """Take back an item handed out but never started (its worker died before it ran).

        Its slot and cost units are released, the rate-limit token it used is *not* refunded
        (it was dispatched), and it goes before every other item of its level, keeping its seq.
        """
        if item._st != ACTIVE:
            raise ValueError(f"{item!r} is not active")
        if item.id in self._index:
            raise ValueError(f"an item with id {item.id!r} is already pending")
        lane = self._lanes[item.lane]
        lane.active -= 1
        if item._cls & 1:
            self._units -= item.cost
        self._index[item.id] = item
        lane.pending += 1
        self._npending += 1
        item._st = FRONT
        lane.front.append(item)
        if item._due is not None and lane.boost is not None:
            level = level_at(item.priority, lane.boost, item._due, item.submitted_at, now)
            if level < item._level:
                item._level = level
            self._schedule_promo(item, lane, now)
        if item.deadline is not None:
            self._push_deadline(item)

    def remove(self, item_id: int) -> SchedItem | None:
        """Cancel a pending item; None if no pending item has that id."""
        item = self._index.get(item_id)
        if item is None:
            return None
        self._forget(item, REMOVED)
        return item

    def finished(self, item: SchedItem, now: float, ok: bool = True) -> None:
        """An item handed out by pick() is done: free its slot and units, count the outcome."""
        if item._st != ACTIVE:
            raise ValueError(f"{item!r} is not active")
        lane = self._lanes[item.lane]
        lane.active -= 1
        if item._cls & 1:
            self._units -= item.cost
        if ok:
            lane.completed += 1
        else:
            lane.failed += 1
        item._st = DONE

    def expire(self, now: float) -> list[SchedItem]:
        """Remove and return the pending items whose deadline is ``<= now``, earliest first."""
        heap = self._deadlines
        out: list[SchedItem] = []
        while heap and heap[0][0] <= now:
            item = heappop(heap)[2]
            if item._st > LAST_PENDING:
                continue  # picked, cancelled or already expired: a stale entry
            self._forget(item, EXPIRED)
            self._lanes[item.lane].expired += 1
            out.append(item)
        return out

    def _forget(self, item: SchedItem, state: int) -> None:
        """Bookkeeping shared by remove and expire; queue entries are dropped lazily."""
        del self._index[item.id]
        lane = self._lanes[item.lane]
        lane.pending -= 1
        self._npending -= 1
        old, item._st = item._st, state
        if old == Q:
            lane.entry_died(item, item._level)
        elif old == FRONT:
            lane.front.remove(item)
        if item is self._holder:
            self._holder = None

    def _push_deadline(self, item: SchedItem) -> None:
        deadline = item.deadline
        assert deadline is not None
        self._tick += 1
        heap = self._deadlines
        heappush(heap, (deadline, self._tick, item))
        if len(heap) > self._deadlines_max:
            # Entries of items that started stay until their deadline passes; with long
            # deadlines and high throughput that is unbounded, so drop them now and then.
            heap[:] = [e for e in heap if e[2]._st <= LAST_PENDING]
            heapify(heap)
            self._deadlines_max = max(HEAP_COMPACT_MIN, 2 * len(heap))

    def _schedule_promo(self, item: SchedItem, lane: LaneState, now: float) -> None:
        assert lane.boost is not None and item._due is not None
        t = next_promotion(item.priority, lane.boost, item._due, item.submitted_at, now, item._level)
        item._promo_at = t
        if t is not None:
            self._tick += 1
            heap = self._promos
            heappush(heap, (t, self._tick, item))
            if len(heap) > self._promos_max:  # same reason as in _push_deadline
                heap[:] = [e for e in heap if e[2]._promo_at == e[0] and e[2]._st <= FRONT]
                heapify(heap)
                self._promos_max = max(HEAP_COMPACT_MIN, 2 * len(heap))

    def _promote(self, now: float) -> None:
        """Apply every boost step due by ``now``: move queued items to their better level."""
        heap = self._promos
        while heap and heap[0][0] <= now:
            t, _, item = heappop(heap)
            # Stale if rescheduled since, or no longer waiting in a queue or front list.
            if item._promo_at != t or item._st > FRONT:
                continue
            lane = self._lanes[item.lane]
            boost = lane.boost
            assert boost is not None and item._due is not None
            level = level_at(item.priority, boost, item._due, item.submitted_at, now)
            if level < item._level:
                old, item._level = item._level, level
                if item._st == Q:
                    lane.levels[level].add(item)
                    lane.entry_died(item, old)  # the old entry is dead now (level mismatch)
            self._schedule_promo(item, lane, now)

    def next_wakeup(self, now: float) -> float | None:
        """Earliest time > now at which a pending item may become pickable or expire.

        Counts deadlines, boost steps and rate-limit refills of lanes that have pending work and
        room to run it. Call it after ``expire(now)``: if an item already past its deadline is
        still pending, this returns ``now`` itself so the caller does not sleep past it.
        """
        if self._promos and self._promos[0][0] <= now:
            self._promote(now)
        best: float | None = None
        promos = self._promos
        while promos and (promos[0][2]._promo_at != promos[0][0] or promos[0][2]._st > FRONT):
            heappop(promos)
        if promos:
            best = promos[0][0]
        deadlines = self._deadlines
        while deadlines and deadlines[0][2]._st > LAST_PENDING:
            heappop(deadlines)
        if deadlines:
            d = deadlines[0][0]
            if d <= now:
                return now
            if best is None or d < best:
                best = d
        for lane in self._lanes:
            lim = lane.limiter
            if lim is None or lane.paused or not lane.pending:
                continue
            if lane.max_c is not None and lane.active >= lane.max_c:
                continue
            if not lim.peek(now):
                t = now + lim.time_until_available(now)
                if best is None or t < best:
                    best = t
        return best

    # ------------------------------------------------------------------ pick

    def pick(self, now: float, free: list[int]) -> list[tuple[SchedItem, int]]:
        """Hand out as many items as the free slots allow (rules in the module docstring)."""
        if self._promos and self._promos[0][0] <= now:
            self._promote(now)  # even with no free slot: keeps levels (and stats) current
        if not self._npending:
            return []
        slots = sum(free)  # a negative entry (over-committed worker) only makes this conservative
        if slots <= 0:
            return []
        self._picks += 1
        picks = self._picks
        ctx = Pick(now, free, slots, self._rr)
        holder = self._holder
        if holder is not None and not self._lanes[holder.lane].paused:
            ctx.holder = holder
        try:
            for lane in self._order:  # reservation pass: min_concurrency
                need = lane.min_c - lane.active
                if need > 0 and lane.pending and not lane.paused:
                    self._drain(lane, ctx, need)
                    if ctx.slots <= 0:
                        break
            if ctx.slots > 0:
                for lane in self._order:  # priority pass
                    if not lane.pending or lane.paused or lane.stuck_pick == picks:
                        continue
                    limit = ctx.slots if lane.max_c is None else lane.max_c - lane.active
                    if limit > 0:
                        self._drain(lane, ctx, limit)
                        if ctx.slots <= 0:
                            break
        finally:
            if ctx.skipped or ctx.blocked:
                self._restore(ctx)
        return ctx.out
