"""QueueMonitor: a background thread that polls ``pool.stats()`` and warns about deep lanes.

Why a poller next to events and alerts: events say what happened to each command, alerts judge
metrics the pool records itself; the monitor is the simple "look at the pool every N seconds"
loop that an operator wants in a log, and it keeps the latest snapshot for whoever asks
(:meth:`QueueMonitor.stats`), e.g. a health endpoint.

Warnings are edge-triggered per (lane, kind) like :mod:`alerts`: one loguru warning when a lane's
pending (or active) count reaches its threshold, one info line when it drops back below, never
one per poll. ``pool.stats()`` is a request to the coordinator (a few hundred µs), so polling
faster than :data:`MIN_INTERVAL_S` is refused.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Protocol, Self

import msgspec
from loguru import logger

from ..errors import BrokenPool, ConfigError, PoolClosed

__all__ = ["MonitorConfig", "QueueMonitor", "MonitorStats", "LaneReading", "MIN_INTERVAL_S"]

# Below ~10 ms the monitor's own stats requests would show up in the pool's throughput.
MIN_INTERVAL_S = 0.01
_JOIN_TIMEOUT_S = 10.0


class _StatsSource(Protocol):
    def stats(self) -> dict[str, Any]: ...


class MonitorConfig(msgspec.Struct, frozen=True):
    """``interval`` seconds between polls; a threshold of None turns that warning off."""

    interval: float = 1.0
    pending_warning_threshold: int | None = None
    active_warning_threshold: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval) and self.interval >= MIN_INTERVAL_S):
            raise ConfigError(f"interval: must be >= {MIN_INTERVAL_S}, got {self.interval!r}", field="interval")
        for field in ("pending_warning_threshold", "active_warning_threshold"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ConfigError(f"{field}: must be >= 1 or None, got {value!r}", field=field)


class LaneReading(msgspec.Struct, frozen=True):
    """One lane at the last poll. ``rate`` is finished commands (completed + failed attempts)
    per second since the previous poll (0.0 on the first)."""

    name: str
    pending: int
    active: int
    completed: int
    failed: int
    rate: float


class MonitorStats(msgspec.Struct, frozen=True):
    """What the monitor knows (a frozen copy, safe to keep).

    - ``running``: the polling thread is alive.
    - ``polls`` / ``errors``: successful polls, and polls that raised (pool busy, timeout).
    - ``last_poll``: wall-clock ``time.time()`` of the last successful poll (0.0 before one).
    - ``lanes``: per-lane readings of the last poll, in the pool's lane order.
    - ``warnings``: the warnings active now, e.g. ``("pending:query",)``.
    - ``warnings_logged``: warnings entered since start (each crossing counts once).
    - ``snapshot``: the raw ``pool.stats()`` dict of the last poll (None before one).
    """

    running: bool
    polls: int
    errors: int
    last_poll: float
    lanes: tuple[LaneReading, ...]
    warnings: tuple[str, ...]
    warnings_logged: int
    snapshot: dict[str, Any] | None


class QueueMonitor:
    """Poll ``pool.stats()`` every ``config.interval`` seconds in a daemon thread.

    ``with QueueMonitor(pool, MonitorConfig(1.0, pending_warning_threshold=100)) as mon: ...``
    starts and stops it. The thread stops by itself when the pool is shut down or broken.
    """

    def __init__(self, pool: _StatsSource, config: MonitorConfig | None = None) -> None:
        self.pool = pool
        self.config = config or MonitorConfig()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polls = 0
        self._errors = 0
        self._last_poll = 0.0
        self._last_mono = 0.0
        self._lanes: tuple[LaneReading, ...] = ()
        self._snapshot: dict[str, Any] | None = None
        self._active: set[str] = set()
        self._warnings_logged = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start polling (the first poll runs at once). Idempotent while running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="lane_mp-monitor", daemon=True)
            self._thread.start()
        logger.debug("queue monitor started (every {}s)", self.config.interval)
        return self

    def stop(self, timeout: float | None = _JOIN_TIMEOUT_S) -> None:
        """Stop polling and wait for the thread (at most ``timeout`` s). Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        logger.debug("queue monitor stopped after {} polls", self._polls)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- polling ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except (PoolClosed, BrokenPool) as exc:
                logger.debug("queue monitor: pool is gone ({}); stopping", exc)
                return
            except Exception as exc:  # noqa: BLE001 - a slow pool must not kill the monitor
                with self._lock:
                    self._errors += 1
                logger.debug("queue monitor: stats() failed: {!r}", exc)
            self._stop.wait(self.config.interval)

    def poll(self) -> MonitorStats:
        """Poll once now (also usable without the thread); returns the new stats."""
        snap = self.pool.stats()
        mono = time.monotonic()
        lanes = snap.get("lanes", [])
        with self._lock:
            previous = {lane.name: lane for lane in self._lanes}
            dt = mono - self._last_mono if self._polls else 0.0
            readings = []
            for lane in lanes:
                finished = lane["completed"] + lane["failed"]
                before = previous.get(lane["name"])
                rate = (finished - before.completed - before.failed) / dt if before and dt > 0 else 0.0
                readings.append(
                    LaneReading(lane["name"], lane["pending"], lane["active"], lane["completed"], lane["failed"], rate)
                )
            self._lanes = tuple(readings)
            self._snapshot = snap
            self._polls += 1
            self._last_poll = time.time()
            self._last_mono = mono
            notices = self._judge(readings)
        for level, message in notices:
            logger.log(level, message)
        return self.stats()

    def _judge(self, readings: list[LaneReading]) -> list[tuple[str, str]]:
        """Edge-triggered warnings; runs under the lock, returns what to log outside it."""
        out: list[tuple[str, str]] = []
        cfg = self.config
        for reading in readings:
            for kind, value, threshold in (
                ("pending", reading.pending, cfg.pending_warning_threshold),
                ("active", reading.active, cfg.active_warning_threshold),
            ):
                if threshold is None:
                    continue
                key = f"{kind}:{reading.name}"
                if value >= threshold and key not in self._active:
                    self._active.add(key)
                    self._warnings_logged += 1
                    out.append(("WARNING", f"lane {reading.name!r}: {value} {kind} (threshold {threshold})"))
                elif value < threshold and key in self._active:
                    self._active.discard(key)
                    out.append(("INFO", f"lane {reading.name!r}: {kind} back to {value} (threshold {threshold})"))
        return out

    def stats(self) -> MonitorStats:
        """The latest snapshot and the monitor's own counters."""
        with self._lock:
            return MonitorStats(
                running=self.running,
                polls=self._polls,
                errors=self._errors,
                last_poll=self._last_poll,
                lanes=self._lanes,
                warnings=tuple(sorted(self._active)),
                warnings_logged=self._warnings_logged,
                snapshot=self._snapshot,
            )

    def __repr__(self) -> str:
        return f"QueueMonitor(interval={self.config.interval}, polls={self._polls}, running={self.running})"
