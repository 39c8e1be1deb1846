"""How :meth:`Scheduler.pick` finds items: the machinery behind the rules in ``scheduler.py``.

Kept apart from the rules so each file stays readable; :class:`PickMixin` is only ever mixed
into :class:`~lane_mp.scheduling.scheduler.Scheduler` and works on its state.

How a pick stays cheap:

* **Fast path** (``_fast``): when a lane's best level holds one tenant whose items are all
  unpinned and cost-free, items are popped from one deque in a tight loop. This is the common
  case and costs O(1) per item.
* **Blocking is monotone within a pick**: free slots only shrink and used units only grow, so an
  item or tenant found blocked stays blocked until the pick ends. Blocked cost-bearing items are
  *set aside* (state ASIDE) and blocked tenants leave the rotation; both go back to the head of
  their queue / rotation when the pick ends, so nobody loses their place.
* **Placement classes** let a pinned class whose partition is full, or every cost-bearing class
  while a holder waits, be skipped whole in O(1) instead of item by item.
* The only per-item scan is the look-past of cost-bearing items that do not fit, bounded by
  :data:`LOOKAHEAD` per pick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .items import ACTIVE, ASIDE, FRONT, LOST, NLEVELS, Q, SchedItem
from .placement import LeastLoaded, RoundRobin
from .queues import LaneState, Level, SeqQueue, TenantQueue, class_partition

__all__ = ["LOOKAHEAD", "Pick", "PickMixin"]

# How many non-fitting cost-bearing items one pick may set aside while looking for one that
# fits. Larger finds small items further back (better packing) but a pick may then touch that
# many items; they go back in place at the end of the pick.
LOOKAHEAD = 256

# Above this many placement classes in one tenant queue, selection visits only the classes that
# can take a slot now instead of all of them (a dict walk is cheaper for a handful).
FEW_CLASSES = 8


class Pick:
    """State of one ``pick`` call."""

    __slots__ = (
        "now", "free", "slots", "out", "hol", "holder", "skipped", "blocked", "budget",
        "costly_full", "_rr", "_choose", "_open",
    )

    def __init__(self, now: float, free: list[int], slots: int, rr: RoundRobin | None) -> None:
        self.now = now
        self.free = free
        self.slots = slots  # free slots left over all partitions
        self.out: list[tuple[SchedItem, int]] = []
        self.hol: SchedItem | None = None  # first cost-bearing candidate that did not fit
        self.holder: SchedItem | None = None  # the holder, if its rule is in force
        self.skipped: list[SchedItem] = []  # set aside (ASIDE), put back at the end
        self.blocked: list[tuple[Level, TenantQueue]] = []  # tenants with nothing eligible
        self.budget = LOOKAHEAD
        self.costly_full = False  # lookahead budget spent: no more cost-bearing candidates
        self._rr = rr
        self._choose: Callable[[], int] | None = None
        self._open: list[int] | None = None

    def open_partitions(self) -> list[int]:
        """Partitions that had a free slot when first asked (callers re-check ``free[p]``:
        slots only get taken during a pick, so the list can only be too long, never short)."""
        parts = self._open
        if parts is None:
            parts = self._open = [p for p, f in enumerate(self.free) if f > 0]
        return parts

    def chooser(self) -> Callable[[], int]:
        """Placement for unpinned items, built on first use (a pick of only pinned items, or of
        nothing, never pays for the least-loaded heap)."""
        choose = self._choose
        if choose is None:
            free = self.free
            if self._rr is not None:
                choose = self._rr.start(free).choose
            elif len(free) == 1:
                def choose() -> int:
                    free[0] -= 1
                    return 0
            else:
                choose = LeastLoaded(free).choose
            self._choose = choose
        return choose


class PickMixin:
    """The selection half of the Scheduler (see the module docstring)."""

    # State owned by Scheduler, declared for the type checker.
    _lanes: list[LaneState]
    _index: dict[int, SchedItem]
    _cap: int | None
    _max_bypass: int
    _units: int
    _holder: SchedItem | None
    _npending: int
    _picks: int

    def _drain(self, lane: LaneState, ctx: Pick, limit: int) -> None:
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

    def _fast(self, lane: LaneState, ctx: Pick, limit: int) -> int:
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
        choose = ctx.chooser()
        want = limit if limit < ctx.slots else ctx.slots
        n = 0
        while n < want and dq:
            it = dq.popleft()
            if it._st != Q or it._level != lvl:
                if sq.dead:
                    sq.dead -= 1
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

    def _select(self, lane: LaneState, ctx: Pick) -> SchedItem | None:
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

    def _scan_front(self, lane: LaneState, ctx: Pick) -> tuple[SchedItem | None, SchedItem | None]:
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

    def _take_level(self, level: Level, lvl: int, ctx: Pick) -> SchedItem | None:
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

    def _take_tenant(self, tq: TenantQueue, lvl: int, ctx: Pick) -> SchedItem | None:
        """The tenant's eligible item with the smallest seq over its placement classes."""
        subs = tq.subs
        if len(subs) == 1 and 0 in subs:  # common: unpinned and cost-free only
            sq = subs[0]
            item = sq.head(lvl, ctx.now)
            if item is None:
                del subs[0]
            else:
                sq.pop()
            return item
        best: SchedItem | None = None
        best_sq = None
        empty: list[int] = []
        free = ctx.free
        if len(subs) > FEW_CLASSES:
            # Many pinned classes (keys hashed over many partitions): visit only the unpinned
            # ones and those of partitions with a free slot, not every partition's class.
            cands: list[tuple[int, SeqQueue]] = []
            for cls in (0, 1):
                if cls in subs:
                    cands.append((cls, subs[cls]))
            for p in ctx.open_partitions():
                if free[p] > 0:
                    base = (p + 1) << 1
                    for cls in (base, base | 1):
                        if cls in subs:
                            cands.append((cls, subs[cls]))
            pairs: Iterable[tuple[int, SeqQueue]] = cands
        else:
            pairs = subs.items()
        for cls, sq in pairs:
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
            del subs[cls]
        if best_sq is not None:
            best_sq.pop()
        return best

    def _costly_head(self, sq: SeqQueue, lvl: int, ctx: Pick) -> SchedItem | None:
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

    def _note_blocked(self, item: SchedItem, ctx: Pick) -> bool:
        """Record the head-of-line cost-blocked item; True if it just became the holder."""
        if ctx.hol is not None:
            return False
        ctx.hol = item
        if self._holder is None and item._bypassed >= self._max_bypass:
            self._holder = ctx.holder = item
            return True
        return False

    def _admit(self, lane: LaneState, item: SchedItem, ctx: Pick) -> None:
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
            choose = ctx._choose
            p = choose() if choose is not None else ctx.chooser()()
        else:
            ctx.free[p] -= 1
        ctx.slots -= 1
        item._st = ACTIVE
        del self._index[item.id]
        lane.active += 1
        lane.pending -= 1
        self._npending -= 1
        ctx.out.append((item, p))

    def _restore(self, ctx: Pick) -> None:
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
