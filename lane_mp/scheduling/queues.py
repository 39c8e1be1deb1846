"""The pending-item structures of one lane: level -> tenant -> placement class -> seq queue.

Why this shape (all choices serve "O(1) or O(log n) per item, never O(pending) per pick"):

* **Levels** (one per effective priority) make "best level first" a scan over 5 lists.
* **Tenants** within a level take turns (round-robin over a deque of tenant queues), so one
  tenant's flood cannot starve another's trickle.
* **Placement classes** within a tenant separate unpinned from pinned-to-partition-p items and
  cost-free from cost-bearing ones. A pinned item whose partition is full, or cost-bearing items
  while the cost holder waits, are then skipped as a whole class in O(1), instead of being
  popped and pushed back one by one.
* **SeqQueue**: items of one class in ``seq`` order. Enqueues arrive in seq order, so a deque
  does it; promotions (boosted items moving up a level) arrive out of order and go to a small
  heap beside it. The head is the smaller of the two.

Deletion is lazy: a cancelled, expired or promoted item stays where it was and is dropped when
it reaches a head (its state or level no longer matches the queue). That keeps ``remove`` O(1).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from heapq import heapify, heappop, heappush

from ..config import Lane, PriorityBoostConfig
from .items import LOST, NLEVELS, Q, SchedItem
from .ratelimit import Limiter, make_limiter

# A queue is rebuilt when more than half its entries, and more than this many, are dead:
# small enough to bound waste per queue, large enough that tiny queues never churn.
COMPACT_MIN = 16

__all__ = ["SeqQueue", "TenantQueue", "Level", "LaneState", "placement_class", "class_partition"]


def placement_class(partition: int | None, costly: bool) -> int:
    """Small int naming (pinned partition or any, cost-bearing or not). 0 = unpinned, free."""
    base = 0 if partition is None else (partition + 1) << 1
    return base | 1 if costly else base


def class_partition(cls: int) -> int:
    """Partition an item of this class is pinned to, -1 for any."""
    return (cls >> 1) - 1


class SeqQueue:
    """Items of one placement class, smallest ``seq`` first, with lazy deletion."""

    __slots__ = ("dq", "late", "dead", "_from_late")

    def __init__(self) -> None:
        self.dq: deque[SchedItem] = deque()  # sorted by seq (stale entries included)
        self.late: list[tuple[int, SchedItem]] = []  # heap of out-of-order arrivals
        self.dead = 0  # entries known to be stale (cancelled, expired, promoted away)
        self._from_late = False

    def mark_dead(self, level: int) -> None:
        """One entry went stale without being popped. Rebuild once most entries are stale.

        Why: a level that is never reached (higher levels always busy, e.g. every item boosted
        upwards by a horizon) would otherwise keep the dead entries of every item that ever
        passed through it. A rebuild after n/2 deaths costs O(n): amortized O(1) per death.
        """
        self.dead += 1
        if self.dead > COMPACT_MIN and self.dead * 2 > len(self.dq) + len(self.late):
            self.dq = deque(it for it in self.dq if it._st == Q and it._level == level)
            late = [e for e in self.late if e[1]._st == Q and e[1]._level == level]
            heapify(late)
            self.late = late
            self.dead = 0

    def push(self, item: SchedItem) -> None:
        dq = self.dq
        if not dq or dq[-1].seq < item.seq:
            dq.append(item)
        else:
            heappush(self.late, (item.seq, item))

    def push_front(self, item: SchedItem) -> None:
        """Put back an item taken from the head (its seq is below every entry left)."""
        self.dq.appendleft(item)

    def head(self, level: int, now: float) -> SchedItem | None:
        """The live item with the smallest seq, without removing it; drops dead entries.

        An entry is dead if the item left the queue (state) or was promoted (level). An item
        past its deadline is dropped too and marked LOST: it must never be handed out, and
        ``expire()`` will find it through the deadline heap.
        """
        dq = self.dq
        it: SchedItem | None = None
        while dq:
            it = dq[0]
            if it._st != Q or it._level != level:
                dq.popleft()
                if self.dead:
                    self.dead -= 1
            elif it.deadline is not None and it.deadline <= now:
                dq.popleft()
                it._st = LOST
            else:
                break
        else:
            it = None
        late = self.late
        while late:
            lt = late[0][1]
            if lt._st != Q or lt._level != level:
                heappop(late)
                if self.dead:
                    self.dead -= 1
            elif lt.deadline is not None and lt.deadline <= now:
                heappop(late)
                lt._st = LOST
            else:
                if it is None or lt.seq < it.seq:
                    self._from_late = True
                    return lt
                break
        self._from_late = False
        return it

    def pop(self) -> None:
        """Remove the item the last ``head()`` returned."""
        if self._from_late:
            heappop(self.late)
        else:
            self.dq.popleft()

    def __len__(self) -> int:  # entries, live or dead: only "is it empty" is meaningful
        return len(self.dq) + len(self.late)


class TenantQueue:
    """One tenant's items at one level, split by placement class."""

    __slots__ = ("key", "subs", "in_rr")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.subs: dict[int, SeqQueue] = {}
        self.in_rr = False  # in its level's rotation (or set aside as blocked by the pick)


class Level:
    """All pending items of one lane at one effective level; tenants take turns in ``rr``."""

    __slots__ = ("tenants", "rr")

    def __init__(self) -> None:
        self.tenants: dict[Hashable, TenantQueue] = {}
        self.rr: deque[TenantQueue] = deque()

    def tenant(self, key: Hashable, front: bool = False) -> TenantQueue:
        """The tenant's queue, created and put in the rotation (at the back, or front) if needed."""
        tq = self.tenants.get(key)
        if tq is None:
            tq = self.tenants[key] = TenantQueue(key)
        if not tq.in_rr:
            tq.in_rr = True
            if front:
                self.rr.appendleft(tq)
            else:
                self.rr.append(tq)
        return tq

    def add(self, item: SchedItem) -> None:
        tq = self.tenant(item.tenant)
        sq = tq.subs.get(item._cls)
        if sq is None:
            sq = tq.subs[item._cls] = SeqQueue()
        sq.push(item)

    def add_front(self, item: SchedItem) -> None:
        """Put back an item set aside during a pick, at the head of its class and rotation."""
        tq = self.tenant(item.tenant, front=True)
        sq = tq.subs.get(item._cls)
        if sq is None:
            sq = tq.subs[item._cls] = SeqQueue()
        sq.push_front(item)

    def drop(self, tq: TenantQueue) -> None:
        """Forget an emptied tenant (already out of ``rr``), so tenants never accumulate."""
        tq.in_rr = False
        if self.tenants.get(tq.key) is tq:
            del self.tenants[tq.key]


class LaneState:
    """A lane's config, counters and pending items (what the scheduler keeps per lane)."""

    __slots__ = (
        "index", "name", "priority", "min_c", "max_c", "limiter", "boost", "paused",
        "levels", "front", "pending", "active", "completed", "failed", "rate_limited", "expired",
        "stuck_pick", "rl_pick",
    )

    def __init__(self, index: int, lane: Lane) -> None:
        cfg = lane.config
        self.index = index
        self.name = lane.name
        self.priority = lane.priority
        self.min_c = cfg.min_concurrency
        self.max_c = cfg.max_concurrency
        self.limiter: Limiter | None = make_limiter(cfg.rate_limit)
        boost = cfg.boost
        self.boost: PriorityBoostConfig | None = boost if boost is not None and boost.steps else None
        self.paused = False
        self.levels = [Level() for _ in range(NLEVELS)]
        # Requeued items and the cost holder: few, scanned whole at every selection, and
        # preferred over queued items of the same level.
        self.front: list[SchedItem] = []
        self.pending = 0
        self.active = 0
        self.completed = 0
        self.failed = 0
        self.rate_limited = 0
        self.expired = 0
        self.stuck_pick = -1  # number of the pick in which this lane had nothing more to give
        self.rl_pick = -1  # number of the pick in which rate_limited was last counted

    def entry_died(self, item: SchedItem, level: int) -> None:
        """The queue entry of ``item`` at ``level`` went stale (call after changing the item)."""
        tq = self.levels[level].tenants.get(item.tenant)
        if tq is not None:
            sq = tq.subs.get(item._cls)
            if sq is not None:
                sq.mark_dead(level)
