"""Where an unpinned item goes: least-loaded partition, or round-robin.

Both choosers work on the coordinator's ``free`` list (free slots per partition) and take one
slot from the partition they return. Pinned items bypass them (the scheduler decrements
``free[p]`` itself), which is why the least-loaded heap tolerates stale entries.
"""

from __future__ import annotations

from heapq import heapify, heappop, heapreplace

__all__ = ["LeastLoaded", "RoundRobin", "Chooser"]


class LeastLoaded:
    """Most free slots first, ties to the lowest index: spreads work, deterministically.

    A heap of ``(-free, index)`` costs O(log P) per item instead of a scan over all P
    partitions. Pinned items lower ``free[p]`` behind the heap's back, so an entry may claim more
    free slots than there are; such an entry is corrected when it reaches the top. Entries are
    never too pessimistic, because ``free`` only goes down during a pick.
    """

    __slots__ = ("free", "heap")

    def __init__(self, free: list[int]) -> None:
        self.free = free
        self.heap = [(-f, w) for w, f in enumerate(free) if f > 0]
        heapify(self.heap)

    def choose(self) -> int:
        free = self.free
        heap = self.heap
        while heap:
            negf, w = heap[0]
            f = free[w]
            if f == -negf:
                f -= 1
                free[w] = f
                if f > 0:
                    heapreplace(heap, (-f, w))
                else:
                    heappop(heap)
                return w
            if f > 0:
                heapreplace(heap, (-f, w))
            else:
                heappop(heap)
        raise RuntimeError("no free slot left (the scheduler's slot count is out of sync)")


class RoundRobin:
    """Rotate over partitions, skipping full ones; the cursor survives from pick to pick."""

    __slots__ = ("free", "next")

    def __init__(self) -> None:
        self.free: list[int] = []
        self.next = 0

    def start(self, free: list[int]) -> RoundRobin:
        self.free = free
        return self

    def choose(self) -> int:
        free = self.free
        n = len(free)
        w = self.next
        for _ in range(n):
            if w >= n:
                w = 0
            if free[w] > 0:
                free[w] -= 1
                self.next = w + 1
                return w
            w += 1
        raise RuntimeError("no free slot left (the scheduler's slot count is out of sync)")


Chooser = LeastLoaded | RoundRobin
