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
   admission counts one bypass against it. Once it has been bypassed ``max_bypass`` times it
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

Cost model: O(1) per item in the common case (one tenant, unpinned, no cost; see ``_fast``),
O(log n) per boosted level change, lookahead bounded per pick otherwise; never O(pending).
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush

import msgspec

from ..config import Lane, PartitionConfig
from ..errors import ConfigError, CostTooLarge, UnknownLane
from .boost import due_time, level_at, next_promotion
from .items import ACTIVE, ASIDE, DONE, EXPIRED, FRONT, LAST_PENDING, LOST, NEW, NLEVELS, REMOVED, Q, SchedItem
from .placement import LeastLoaded, RoundRobin
from .queues import LaneState, Level, SeqQueue, TenantQueue, class_partition, placement_class

__all__ = ["Scheduler", "SchedItem", "LaneStats", "LOOKAHEAD"]

# How many non-fitting cost-bearing items one pick may set aside while looking for one that
# fits. Larger finds small items further back (better packing) but a pick may then touch that
# many items; they go back in place at the end of the pick.
LOOKAHEAD = 256


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


class _Pick:
    """State of one ``pick`` call. Blocking is monotone within a pick (free slots only shrink,
    units only grow), so whatever was found blocked stays out until the pick ends."""

    __slots__ = (
        "now", "free", "slots", "out", "choose", "hol", "holder", "skipped", "blocked", "budget",
        "costly_full",
    )

    def __init__(self, now: float, free: list[int], slots: int, choose: Callable[[], int]) -> None:
        self.now = now
        self.free = free
        self.slots = slots  # free slots left over all partitions
        self.out: list[tuple[SchedItem, int]] = []
        self.choose = choose
        self.hol: SchedItem | None = None  # first cost-bearing candidate that did not fit
        self.holder: SchedItem | None = None  # the holder, if its rule is in force
        self.skipped: list[SchedItem] = []  # set aside (ASIDE), put back at the end
        self.blocked: list[tuple[Level, TenantQueue]] = []  # tenants with nothing eligible
        self.budget = LOOKAHEAD
        self.costly_full = False  # lookahead budget spent: no more cost-bearing candidates


class Scheduler:
    """Priority lanes over a pool of partitions; see the module docstring for the rules."""

    def __init__(
        self,
        lanes: list[Lane],
        *,
        capacity_units: int | None = None,
        partition: PartitionConfig = PartitionConfig(),
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
            raise UnknownLane(f"unknown lane {name!r} (lanes: {', '.join(self.lane_names)})", lane=name) from None

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
        self._forget(item)
        item._st = REMOVED
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
            self._forget(item)
            item._st = EXPIRED
            self._lanes[item.lane].expired += 1
            out.append(item)
        return out

    def _forget(self, item: SchedItem) -> None:
        """Bookkeeping shared by remove and expire; queue entries are dropped lazily."""
        del self._index[item.id]
        lane = self._lanes[item.lane]
        lane.pending -= 1
        self._npending -= 1
        if item._st == FRONT:
            lane.front.remove(item)
        if item is self._holder:
            self._holder = None

    def _push_deadline(self, item: SchedItem) -> None:
        self._tick += 1
        heappush(self._deadlines, (item.deadline, self._tick, item))  # type: ignore[arg-type]

    def _schedule_promo(self, item: SchedItem, lane: LaneState, now: float) -> None:
        assert lane.boost is not None and item._due is not None
        t = next_promotion(item.priority, lane.boost, item._due, item.submitted_at, now, item._level)
        item._promo_at = t
        if t is not None:
            self._tick += 1
            heappush(self._promos, (t, self._tick, item))

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
                item._level = level
                if item._st == Q:
                    lane.levels[level].add(item)  # the old entry is now dead (level mismatch)
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
        slots = 0
        for f in free:
            if f > 0:
                slots += f
        if slots <= 0:
            return []
        self._picks += 1
        picks = self._picks
        if self._rr is not None:
            choose = self._rr.start(free).choose
        elif len(free) == 1:
            def choose() -> int:
                free[0] -= 1
                return 0
        else:
            choose = LeastLoaded(free).choose
        ctx = _Pick(now, free, slots, choose)
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
            self._restore(ctx)
        return ctx.out

    def _drain(self, lane: LaneState, ctx: _Pick, limit: int) -> None:
        """Hand out up to ``limit`` items of one lane, best first."""
        now = ctx.now
        lim = lane.limiter
        while limit > 0 and ctx.slots > 0:
            if lim is not None and not lim.peek(now):
                if lane.rl_pick != self._picks:
                    lane.rl_pick = self._picks
                    lane.rate_limited += 1
                lane.stuck_pick = self._picks
                return
            if not lane.front:
                n = self._fast(lane, ctx, limit)
                if n:
                    limit -= n
                    continue
                if lim is not None and not lim.peek(now):
                    continue
            item = self._select(lane, ctx)
            if item is None:
                lane.stuck_pick = self._picks
                return
            if lim is not None:
                lim.try_acquire(now)
            self._admit(lane, item, ctx)
            limit -= 1

    def _fast(self, lane: LaneState, ctx: _Pick, limit: int) -> int:
        """The common case in a tight loop: the best non-empty level has one tenant whose items
        are all unpinned, cost-free and in seq order. Returns how many it handed out."""
        for lvl in range(NLEVELS):
            level = lane.levels[lvl]
            if level.rr:
                break
        else:
            return 0
        rr = level.rr
        if len(rr) != 1:
            return 0
        subs = rr[0].subs
        if len(subs) != 1:
            return 0
        sq = subs.get(0)
        if sq is None or sq.late:
            return 0
        dq = sq.dq
        now = ctx.now
        lim = lane.limiter
        index = self._index
        out = ctx.out
        choose = ctx.choose
        want = limit if limit < ctx.slots else ctx.slots
        n = 0
        while n < want and dq:
            it = dq.popleft()
            if it._st != Q or it._level != lvl:
                continue
            d = it.deadline
            if d is not None and d <= now:
                it._st = LOST
                continue
            if lim is not None and not lim.try_acquire(now):
                dq.appendleft(it)
                break
            it._st = ACTIVE
            del index[it.id]
            out.append((it, choose()))
            n += 1
        if n:
            lane.active += n
            lane.pending -= n
            self._npending -= n
            ctx.slots -= n
        return n

    def _select(self, lane: LaneState, ctx: _Pick) -> SchedItem | None:
        """Take the lane's best eligible item out of its structures, or None."""
        fbest = fblk = None
        if lane.front:
            fbest, fblk = self._scan_front(lane, ctx)
        levels = lane.levels
        for lvl in range(NLEVELS):
            if fblk is not None and fblk._level <= lvl:
                blk, fblk = fblk, None
                if self._note_blocked(blk, ctx):
                    return self._select(lane, ctx)  # a holder now exists: eligibility changed
            if fbest is not None and fbest._level <= lvl:
                break  # requeued items win ties with queued ones
            level = levels[lvl]
            if level.rr:
                item = self._take_level(level, lvl, ctx)
                if item is not None:
                    return item
        if fbest is not None:
            lane.front.remove(fbest)
        return fbest

    def _scan_front(self, lane: LaneState, ctx: _Pick) -> tuple[SchedItem | None, SchedItem | None]:
        """Best eligible front item, and best front item kept out only by its cost."""
        best = blk = None
        now = ctx.now
        free = ctx.free
        holder = ctx.holder
        for it in lane.front:
            d = it.deadline
            if d is not None and d <= now:
                continue
            p = it.partition
            if p is not None and (p >= len(free) or free[p] <= 0):
                continue
            if it._cls & 1:
                if holder is not None and holder is not it:
                    continue
                if self._units + it.cost > self._cap:  # type: ignore[operator]
                    if blk is None or (it._level, it.seq) < (blk._level, blk.seq):
                        blk = it
                    continue
            if best is None or (it._level, it.seq) < (best._level, best.seq):
                best = it
        return best, blk

    def _take_level(self, level: Level, lvl: int, ctx: _Pick) -> SchedItem | None:
        """Next item of this level: tenants in turn; a tenant with nothing eligible sits out."""
        rr = level.rr
        while rr:
            tq = rr[0]
            item = self._take_tenant(tq, lvl, ctx)
            if item is not None:
                if len(rr) > 1:
                    rr.rotate(-1)
                return item
            rr.popleft()
            if tq.subs:
                ctx.blocked.append((level, tq))  # keeps its turn: back at the front after the pick
            else:
                level.drop(tq)
        return None

    def _take_tenant(self, tq: TenantQueue, lvl: int, ctx: _Pick) -> SchedItem | None:
        """The tenant's eligible item with the smallest seq over its placement classes."""
        best: SchedItem | None = None
        best_sq = None
        empty: list[int] = []
        free = ctx.free
        for cls, sq in tq.subs.items():
            if cls > 1:
                p = class_partition(cls)
                if p >= len(free) or free[p] <= 0:
                    continue
            item = self._costly_head(sq, lvl, ctx) if cls & 1 else sq.head(lvl, ctx.now)
            if item is None:
                if not sq.dq and not sq.late:
                    empty.append(cls)  # deleted after the loop, not while iterating the dict
                continue
            if best is None or item.seq < best.seq:
                best, best_sq = item, sq
        for cls in empty:
            del tq.subs[cls]
        if best_sq is not None:
            best_sq.pop()
        return best

    def _costly_head(self, sq: SeqQueue, lvl: int, ctx: _Pick) -> SchedItem | None:
        """Head of a cost-bearing class that fits, looking past (and setting aside) those that
        do not, within the pick's lookahead budget."""
        if ctx.holder is not None or ctx.costly_full:
            return None
        cap = self._cap
        assert cap is not None
        while True:
            item = sq.head(lvl, ctx.now)
            if item is None:
                return None
            if self._units + item.cost <= cap:
                return item
            sq.pop()
            item._st = ASIDE
            ctx.skipped.append(item)
            if self._note_blocked(item, ctx):
                return None
            ctx.budget -= 1
            if ctx.budget <= 0:
                ctx.costly_full = True
                return None

    def _note_blocked(self, item: SchedItem, ctx: _Pick) -> bool:
        """Record the head-of-line cost-blocked item; True if it just became the holder."""
        if ctx.hol is not None:
            return False
        ctx.hol = item
        if self._holder is None and item._bypassed >= self._max_bypass:
            self._holder = ctx.holder = item
            return True
        return False

    def _admit(self, lane: LaneState, item: SchedItem, ctx: _Pick) -> None:
        if item._cls & 1:
            self._units += item.cost
            if item is self._holder:
                self._holder = ctx.holder = None
            else:
                hol = ctx.hol
                if hol is not None and self._holder is None:
                    hol._bypassed += 1
                    if hol._bypassed >= self._max_bypass:
                        self._holder = ctx.holder = hol
        p = item.partition
        if p is None:
            p = ctx.choose()
        else:
            ctx.free[p] -= 1
        ctx.slots -= 1
        item._st = ACTIVE
        del self._index[item.id]
        lane.active += 1
        lane.pending -= 1
        self._npending -= 1
        ctx.out.append((item, p))

    def _restore(self, ctx: _Pick) -> None:
        """Put back what the pick set aside, each at the head of its queue and rotation."""
        for level, tq in reversed(ctx.blocked):
            level.rr.appendleft(tq)
        holder = self._holder
        for item in reversed(ctx.skipped):
            if item._st != ASIDE:
                continue
            lane = self._lanes[item.lane]
            if item is holder:
                item._st = FRONT
                lane.front.append(item)
            else:
                item._st = Q
                lane.levels[item._level].add_front(item)
