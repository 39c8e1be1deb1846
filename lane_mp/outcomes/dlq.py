"""The dead-letter queue: commands that failed for good, kept for inspection and replay.

Bounded: when full, the oldest letter is evicted and counted (``evicted``), so a failure storm
can never exhaust memory. The record is plain data (msgspec), so the same letter can be stored
by the journal and shown by the CLI.
"""

from __future__ import annotations

import threading

from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["DeadLetter", "DeadLetterQueue"]


class DeadLetter(msgspec.Struct, frozen=True):
    command_id: int
    lane: str
    fn: str
    attempts: int
    error_type: str
    error: str
    traceback: str = ""
    failed_at: float = 0.0
    correlation_id: str | None = None
    metadata: dict[str, Any] | None = None
    tenant: str | None = None
    payload: bytes = b""  # the encoded arguments, so the command can be replayed as it was
    priority: int = 2
    chunk: bool = False


class DeadLetterQueue:
    """Thread-safe bounded FIFO of :class:`DeadLetter`. ``replay`` needs a pool: see
    ``LanePool.dead_letters.replay``."""

    def __init__(self, max_size: int = 1000) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self.max_size = max_size
        self._items: deque[DeadLetter] = deque()
        self._lock = threading.Lock()
        self.evicted = 0
        self._replayer: Callable[[DeadLetter], Any] | None = None

    def push(self, letter: DeadLetter) -> None:
        with self._lock:
            if len(self._items) >= self.max_size:
                self._items.popleft()
                self.evicted += 1
            self._items.append(letter)

    def pop(self) -> DeadLetter | None:
        """Remove and return the oldest letter (None when empty)."""
        with self._lock:
            return self._items.popleft() if self._items else None

    def list(self) -> list[DeadLetter]:
        with self._lock:
            return list(self._items)

    def clear(self) -> int:
        with self._lock:
            n = len(self._items)
            self._items.clear()
            return n

    def __len__(self) -> int:
        return len(self._items)

    def replay(self, predicate: Callable[[DeadLetter], bool] | None = None) -> list[Any]:
        """Re-submit matching letters (all by default) and remove them; returns the new futures."""
        if self._replayer is None:
            raise RuntimeError("this dead-letter queue is not attached to a pool")
        with self._lock:
            chosen = [d for d in self._items if predicate is None or predicate(d)]
            for d in chosen:
                self._items.remove(d)
        return [self._replayer(d) for d in chosen]

    def _attach(self, replayer: Callable[[DeadLetter], Any]) -> None:
        self._replayer = replayer


