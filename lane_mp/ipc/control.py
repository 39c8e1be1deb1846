"""The pool's control segment: a few words every process of one pool can see.

Layout (8-byte words, each alone in a 64-byte cache line, stored via ``cast('Q')``)::

    offset  field
    0       magic "LMPCTRL1"
    64      coordinator waiting: set by the coordinator before it sleeps; any producer that
            sees it clears it and rings the coordinator's doorbell
    128     state: 0 running, 1 draining/shutting down, 2 broken (set by the coordinator)
    192     reserved
    256+64k lane k: circuit breaker open until (time.monotonic_ns), 0 = closed; written by the
            coordinator, read by ``submit`` so an open breaker fails fast in the caller
"""

from __future__ import annotations

from .segments import Segment

MAGIC = int.from_bytes(b"LMPCTRL1", "little")
COORD_WAITING = 8
STATE = 16
_LANE_BASE = 32  # word index of lane 0's line
MAX_LANES = 56

__all__ = ["Control", "COORD_WAITING", "STATE", "MAX_LANES"]


class Control:
    def __init__(self, segment: Segment, *, init: bool = False) -> None:
        self.segment = segment
        self.words = segment.buf.cast("Q")
        if init:
            self.words[0] = MAGIC
        elif self.words[0] != MAGIC:
            raise ValueError(f"{segment.name} is not a lane_mp control segment")

    @classmethod
    def create(cls, name: str) -> Control:
        return cls(Segment.create(name, (_LANE_BASE + 8 * MAX_LANES) * 8), init=True)

    @classmethod
    def attach(cls, name: str) -> Control:
        return cls(Segment.attach(name))

    def breaker_open_until(self, lane: int) -> int:
        return self.words[_LANE_BASE + 8 * lane]

    def set_breaker(self, lane: int, until_ns: int) -> None:
        self.words[_LANE_BASE + 8 * lane] = until_ns

    def release(self) -> None:
        self.words.release()
        self.segment.close()
