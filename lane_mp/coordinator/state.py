"""The coordinator's record of one command, from intake to its final outcome."""

from __future__ import annotations

from ..protocol import messages as m
from ..scheduling.scheduler import SchedItem

__all__ = ["Command", "PENDING", "ASSIGNED", "BACKOFF"]

PENDING, ASSIGNED, BACKOFF = 0, 1, 2


class Command:
    """Retry bookkeeping rides on the command, so journal, dead letters and stats see one record."""

    __slots__ = ("sub", "item", "attempts", "state", "worker", "dispatched_at", "cancelled", "run_bytes")

    def __init__(self, sub: m.Submit, item: SchedItem) -> None:
        self.sub = sub
        self.item = item
        self.attempts = 0  # runs started so far
        self.state = PENDING
        self.worker = -1
        self.dispatched_at = 0.0
        self.cancelled = False
        self.run_bytes: bytes | None = None  # encoded Run, built once, reused by retries
