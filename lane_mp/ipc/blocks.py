"""Shared-memory blocks for large payloads: leased, reused, always unlinked.

A payload above the inline threshold (numpy array, bytes, pickle out-of-band buffer, or a whole
encoded payload that is too big for a ring record) is copied once into a block and the ring
record carries only the block's name. Blocks are *reused*: a fresh page costs ~2.2 µs to touch on
this machine (MEASURED.md), so creating a segment per message is 10x slower than copying into a
warm one.

Ownership. Blocks are the one kind of segment not created by the coordinator: the process that
writes a payload creates the block (a round trip to the coordinator per payload would cost more
than the copy). Every block name still carries the pool token (``lmp_<token>_b<pid>_<n>``), so
the coordinator (and the caller, if the coordinator dies) removes every block of the pool by
prefix at shutdown, and the blocks of a crashed worker by its pid prefix.

- :class:`BlockPool` (writer side): ``lease(nbytes)`` returns a warm free block of the next
  power-of-two size class or creates one; ``give_back(name)`` returns it to the free list once
  the reader said it is done. Free bytes above ``max_free_bytes`` are unlinked.
- :class:`BlockCache` (reader side): attaches blocks by name and keeps a few mappings warm.
"""

from __future__ import annotations

from collections import OrderedDict

from .segments import Segment

MIN_BLOCK = 1 << 16
# Free (warm) bytes a writer keeps for reuse; more is unlinked. Trade-off: memory vs page faults.
MAX_FREE_BYTES = 512 << 20
# Mappings a reader keeps attached; each is cheap (no copy), but pins memory of unlinked blocks.
MAX_ATTACHED = 32

__all__ = ["BlockPool", "BlockCache", "size_class"]


def size_class(nbytes: int) -> int:
    return max(MIN_BLOCK, 1 << (max(nbytes, 1) - 1).bit_length())


class BlockPool:
    """Writer-side blocks of one process. Not thread-safe (callers hold their own lock)."""

    def __init__(self, prefix: str, max_free_bytes: int = MAX_FREE_BYTES) -> None:
        self.prefix = prefix
        self.max_free_bytes = max_free_bytes
        self._seq = 0
        self._free: dict[int, list[Segment]] = {}
        self._leased: dict[str, Segment] = {}
        self._free_bytes = 0

    def lease(self, nbytes: int) -> Segment:
        cls = size_class(nbytes)
        free = self._free.get(cls)
        if free:
            seg = free.pop()
            self._free_bytes -= seg.size
        else:
            self._seq += 1
            seg = Segment.create(f"{self.prefix}{self._seq:x}", cls)
        self._leased[seg.name] = seg
        return seg

    def give_back(self, name: str) -> None:
        seg = self._leased.pop(name, None)
        if seg is None:
            return
        if self._free_bytes + seg.size > self.max_free_bytes:
            seg.unlink()
            seg.close()
            return
        self._free.setdefault(size_class(seg.size), []).append(seg)
        self._free_bytes += seg.size

    def owns(self, name: str) -> bool:
        return name.startswith(self.prefix)

    @property
    def leased(self) -> int:
        return len(self._leased)

    def close(self) -> None:
        """Unlink every block this pool created (leased ones too: the pool is going away)."""
        for seg in [*self._leased.values(), *(s for lst in self._free.values() for s in lst)]:
            seg.unlink()
            seg.close()
        self._leased.clear()
        self._free.clear()
        self._free_bytes = 0


class BlockCache:
    """Reader-side attachments, most recently used kept."""

    def __init__(self, *, readonly: bool, max_attached: int = MAX_ATTACHED) -> None:
        self.readonly = readonly
        self.max_attached = max_attached
        self._segs: OrderedDict[str, Segment] = OrderedDict()

    def get(self, name: str) -> Segment:
        seg = self._segs.get(name)
        if seg is not None:
            self._segs.move_to_end(name)
            return seg
        seg = Segment.attach(name, readonly=self.readonly)
        self._segs[name] = seg
        while len(self._segs) > self.max_attached:
            _, old = self._segs.popitem(last=False)
            old.close()  # if views are still alive the GC unmaps it later
        return seg

    def close(self) -> None:
        for seg in self._segs.values():
            seg.close()
        self._segs.clear()
