"""Assembling message groups on the reading side (``Consumer.read_group``).

A group is keyed by ``(producer_id, group_id)``: the publisher numbers members itself, so two
producers using the same group id make two groups. Members are held as copies in this process
until the last one arrives; the consumer's position moves past them as they are read, so memory,
not the shared log, holds a partial group. That is why partial groups expire: a producer that
died mid-group (or a consumer that started mid-group) must not pin memory forever.
"""

from __future__ import annotations

import time

from lane_mp.topic.message import Message

__all__ = ["GroupAssembler"]


class _Partial:
    __slots__ = ("count", "members", "started")

    def __init__(self, size: int) -> None:
        self.started = time.monotonic()
        self.members: list[Message | None] = [None] * size
        self.count = 0  # -1: an orphan (first member never seen); swallow its members until expiry


class GroupAssembler:
    """Feed messages in log order; get whole groups back. ``abandoned`` counts the ones given up."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.abandoned = 0
        self._open: dict[tuple[str, str], _Partial] = {}

    def feed(self, msg: Message) -> list[Message] | None:
        """A complete unit to hand out (a whole group, or ``[msg]`` if ungrouped), else None."""
        if msg.group_id is None:
            return [msg]
        key = (msg.producer_id, msg.group_id)
        if msg.group_size:  # the first member opens (or restarts) the group
            if key in self._open and self._open[key].count >= 0:
                self.abandoned += 1
            self._open[key] = _Partial(msg.group_size)
        partial = self._open.get(key)
        if partial is None:
            self.abandoned += 1  # a member whose first we never saw
            orphan = self._open[key] = _Partial(0)
            orphan.count = -1
            return None
        if partial.count < 0 or msg.group_index >= len(partial.members):
            return None
        if partial.members[msg.group_index] is None:
            partial.count += 1
        partial.members[msg.group_index] = msg
        if partial.count < len(partial.members):
            return None
        del self._open[key]
        return [m for m in partial.members if m is not None]

    def expire(self) -> None:
        """Give up on partial groups older than ``timeout`` seconds."""
        if not self._open:
            return
        limit = time.monotonic() - self.timeout
        for key in [k for k, p in self._open.items() if p.started < limit]:
            if self._open.pop(key).count >= 0:
                self.abandoned += 1

    def pending(self) -> int:
        return sum(1 for p in self._open.values() if p.count >= 0)
