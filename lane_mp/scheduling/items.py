"""The scheduler's record of one command: :class:`SchedItem`.

The coordinator builds one per submitted command and hands it to the scheduler; only plain data
lives here (``ref`` is the coordinator's own handle, never looked at by the scheduler). The
underscore slots are the scheduler's bookkeeping; they sit on the item itself so that moving an
item between queues never needs a side table lookup on the hot path.
"""

from __future__ import annotations

__all__ = ["SchedItem", "NLEVELS"]

# Number of item priority levels (lane_mp.config.Priority: CRITICAL=0 .. BACKGROUND=4).
NLEVELS = 5

# Item states. The pending ones are the small numbers, so "is pending" is one comparison.
# Q: in a level queue. FRONT: in its lane's front list (requeued, or the cost holder).
# ASIDE: taken out during the current pick, put back when the pick ends.
# LOST: past its deadline and dropped from its queue; still pending until expire() returns it.
Q, FRONT, ASIDE, LOST = 0, 1, 2, 3
NEW, ACTIVE, DONE, REMOVED, EXPIRED = 4, 5, 6, 7, 8
LAST_PENDING = LOST

_STATE_NAMES = ("queued", "front", "aside", "lost", "new", "active", "done", "removed", "expired")


class SchedItem:
    """One command as the scheduler sees it.

    ``priority`` is the item priority within its lane (0 best). ``deadline`` (absolute,
    monotonic seconds) fails the item if it has not started by then. ``cost`` is in the pool's
    capacity units. ``tenant`` groups items for fair sharing (None is a tenant too).
    ``partition`` pins the item to one partition (None: any). ``seq`` is assigned at enqueue
    and breaks ties first-in first-out.
    """

    __slots__ = (
        "id", "lane", "priority", "submitted_at", "deadline", "cost", "tenant", "partition", "ref",
        "seq", "_st", "_level", "_cls", "_due", "_promo_at", "_bypassed",
    )

    def __init__(
        self,
        id: int,
        lane: int,
        priority: int = 2,
        submitted_at: float = 0.0,
        deadline: float | None = None,
        cost: int = 0,
        tenant: str | None = None,
        partition: int | None = None,
        ref: object = None,
    ) -> None:
        self.id = id
        self.lane = lane
        self.priority = priority
        self.submitted_at = submitted_at
        self.deadline = deadline
        self.cost = cost
        self.tenant = tenant
        self.partition = partition
        self.ref = ref
        self.seq = -1
        self._st = NEW
        self._level = priority  # effective level, kept current by the scheduler
        self._cls = 0  # placement class: see queues.placement_class
        self._due: float | None = None  # boost target (deadline or soft horizon), None: no boost
        self._promo_at: float | None = None  # time of the pending promotion event, if any
        self._bypassed = 0  # times a cost-bearing item was admitted while this one did not fit

    @property
    def state(self) -> str:
        """Scheduler state, for debugging and tests: queued/front/aside/lost/new/active/done/..."""
        return _STATE_NAMES[self._st]

    @property
    def is_pending(self) -> bool:
        return self._st <= LAST_PENDING

    @property
    def effective_level(self) -> int:
        """Level after boosting, as of the scheduler's last look at this item."""
        return self._level

    @property
    def bypassed(self) -> int:
        return self._bypassed

    def __repr__(self) -> str:
        fields = (("deadline", self.deadline), ("tenant", self.tenant), ("partition", self.partition))
        extra = "".join(f" {k}={v!r}" for k, v in fields if v is not None)
        if self.cost:
            extra += f" cost={self.cost}"
        return (
            f"SchedItem(id={self.id} lane={self.lane} prio={int(self.priority)} seq={self.seq}"
            f" {self.state}{extra})"
        )
