"""The caller-side record of a command: a real ``concurrent.futures.Future``.

``cancel()`` also tells the coordinator, so a command cancelled before dispatch never runs.
If the coordinator had already handed it to a worker, the command runs and its result is
dropped (use ``pool.cancel(future, kill=True)`` to stop a running one).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable

__all__ = ["LaneFuture"]


class LaneFuture(Future):  # type: ignore[type-arg]
    # Class-level defaults: one fewer attribute store per submit on the hot path.
    attempts = 0  # runs the command took (set when it resolves)
    lane = 0  # lane index
    t0 = 0.0  # time.monotonic() at submit (set only when observers need latency)

    def __init__(self, command_id: int, on_cancel: Callable[[int], None]) -> None:
        super().__init__()
        self.command_id = command_id
        self._on_cancel = on_cancel

    def cancel(self) -> bool:
        if super().cancel():
            self._on_cancel(self.command_id)
            return True
        return False

    def _cancel_local(self) -> bool:
        """Cancel without telling the coordinator (it is the one that said so)."""
        return super().cancel()

    def __repr__(self) -> str:
        return f"<LaneFuture id={self.command_id} {super().__repr__()[1:-1]}>"


