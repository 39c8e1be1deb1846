"""LanePool: the caller side. A ``concurrent.futures.Executor`` that talks to the coordinator.

The caller process holds only futures, a ring writer (commands out) and one thread that reads
the result ring and resolves futures. All scheduling state lives in the coordinator process
(``coordinator/main.py`` draws the whole data flow).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import select
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import wait as futures_wait
from multiprocessing.connection import Connection
from typing import Any

import msgspec
from loguru import logger

from . import errors
from .config import Lane, PartitionConfig, Priority, RetryPolicy, normalize_lanes
from .coordinator.main import CoordinatorConfig, coordinator_main
from .errors import (
    BrokenPool, CircuitOpen, CostTooLarge, DrainTimeout, LaneFull, PoolClosed, UnknownLane,
)
from .futures import LaneFuture
from .observability.alerts import AlertManager
from .observability.events import EventEmitter
from .observability.hub import CANCELLED, FAILED, OK, TIMEOUT, ObservabilityHub
from .observability.metrics import QueueMetrics
from .outcomes.dlq import DeadLetter, DeadLetterQueue
from .ipc.blocks import BlockCache, BlockPool
from .ipc.control import COORD_WAITING, MAX_LANES, Control
from .ipc.doorbell import BACKSTOP_S, drain_fd, fence, make_pipe, ring_if_waiting
from .ipc.ring import Ring, RingReader, RingWriter
from .ipc.segments import new_token, sweep
from .partitions import key_hash
from .protocol import messages as m
from .protocol.codec import PayloadCodec, decode_exception
from .protocol.functions import function_path
from .persistence.client import JournalClient, Mailbox, StoredDeadLetters
from .persistence.journal import RecoveryReport
from .persistence.sqlite import SQLiteStorage

__all__ = ["LanePool", "default_workers"]

START_TIMEOUT_S = float(os.environ.get("LANE_MP_START_TIMEOUT", "60"))
# Default ring size: ~16k small commands in flight between caller and coordinator.
RING_CAPACITY = 1 << 20
# After a batch of results the result thread polls this long (yielding) before it sleeps.
RESULT_SPIN_S = float(os.environ.get("LANE_MP_RESULT_SPIN_US", "200")) / 1e6
# map/imap: chunks in flight per worker (bounds memory for unbounded inputs).
CHUNKS_IN_FLIGHT_PER_WORKER = 4
MAX_AUTO_CHUNK = 4096

_RESERVED = frozenset(
    {"lane", "priority", "deadline", "cost", "key", "dedup_key", "tenant", "correlation_id",
     "metadata", "timeout", "max_retries", "mailbox"}
)
_live_pools: weakref.WeakSet[LanePool] = weakref.WeakSet()


def default_workers() -> int:
    """CPUs this process may use (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        import psutil

        return max(1, psutil.cpu_count() or 1)


def _start_methods(mp_context: Any) -> tuple[multiprocessing.context.BaseContext, str]:
    """(context for the coordinator, start method for workers).

    Default: the coordinator starts through ``forkserver`` (safe when the caller has threads,
    unlike fork) and forks its workers: the coordinator is single-threaded, so fork is safe
    there, and a respawn after a crash or timeout takes milliseconds. ``spawn`` spawns both.
    """
    if mp_context is None:
        method = os.environ.get("LANE_MP_START_METHOD", "forkserver")
        ctx = multiprocessing.get_context(method)
    elif isinstance(mp_context, str):
        ctx = multiprocessing.get_context(mp_context)
    else:
        ctx = mp_context
    method = ctx.get_start_method()
    if method == "forkserver":
        ctx.set_forkserver_preload(["lane_mp.coordinator.main"])
    return ctx, ("spawn" if method == "spawn" else "fork")


class LanePool(Executor):
    """A pool of worker processes with priority lanes. See the README for the whole API."""

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        lanes: Any = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        workers: int | None = None,
        default_lane: str | None = None,
        capacity_units: int | None = None,
        partition: PartitionConfig | None = None,
        retry: RetryPolicy | None = None,
        ring_capacity: int = RING_CAPACITY,
        emitter: EventEmitter | None = None,
        metrics: QueueMetrics | None = None,
        alerts: AlertManager | None = None,
        dead_letters: DeadLetterQueue | int | None = None,
        pressure_threshold: int = 1000,
        max_payload_bytes: int | None = None,
        storage: Any = None,
        durable: bool = False,
        recover: bool = True,
        notify_url: str | None = None,
        backend: Any = None,
    ) -> None:
        n = max_workers if max_workers is not None else workers
        if n is None:
            n = default_workers()
        if n < 1:
            raise ValueError("max_workers must be greater than 0")
        if backend is not None:  # backends/ (e.g. DaskBackend): no shared-memory blocks, payloads inline
            backend.check_pool_options(initializer=initializer, max_tasks_per_child=max_tasks_per_child,
                                       max_memory_per_child=max_memory_per_child)
            max_payload_bytes = backend.payload_limit(ring_capacity, max_payload_bytes)
        self._lanes: list[Lane] = normalize_lanes(lanes)
        if len(self._lanes) > MAX_LANES:
            raise errors.ConfigError(f"at most {MAX_LANES} lanes", field="lanes")
        self._lane_index = {lane.name: i for i, lane in enumerate(self._lanes)}
        if default_lane is None:
            default_lane = "query" if "query" in self._lane_index else self._lanes[0].name
        if default_lane not in self._lane_index:
            raise UnknownLane(f"default_lane {default_lane!r} is not a lane of this pool", lane=default_lane)
        self.default_lane = default_lane
        self._default_lane_idx = self._lane_index[default_lane]
        self._max_workers = n
        self._capacity_units = capacity_units
        self._token = new_token()
        if isinstance(dead_letters, int):
            dead_letters = DeadLetterQueue(dead_letters)
        if alerts is not None and metrics is None:
            metrics = QueueMetrics.local()  # latency alerts need the latency histogram
        self.dead_letters: DeadLetterQueue | None = dead_letters
        if dead_letters is not None:
            dead_letters._attach(self._replay_letter)
        self._hub = ObservabilityHub(emitter, metrics, alerts, dead_letters, pressure_threshold, token=self._token)
        ctx, worker_method = _start_methods(mp_context)
        self._fork = backend is None and worker_method == "fork" and ctx.get_start_method() == "fork"
        cfg = CoordinatorConfig(
            token=self._token, workers=n, lanes=self._lanes, worker_start_method=worker_method,
            capacity_units=capacity_units, partition=partition or PartitionConfig(),
            ring_capacity=ring_capacity, max_tasks_per_child=max_tasks_per_child,
            max_memory_per_child=max_memory_per_child, default_retry=retry,
            dead_letters=dead_letters is not None, emit_started=emitter is not None,
            max_payload_bytes=max_payload_bytes,
            storage=self._storage_setup(storage, durable, notify_url), durable=durable, recover=recover,
            notify_url=notify_url, backend=backend,
        )
        # Locks: _lock serialises the submit ring, block pool and id counter (many caller threads).
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._futures: dict[int, LaneFuture] = {}
        self._arg_blocks: dict[int, list[str]] = {}
        self._lane_of: dict[int, int] = {}  # only for lanes with a capacity
        self._lane_outstanding = [0] * len(self._lanes)
        self._lane_capacity = [lane.config.capacity for lane in self._lanes]
        self._capacity_cv = threading.Condition(self._lock)
        self._dedup: dict[Any, LaneFuture] = {}
        self._fn_paths: dict[Any, str] = {}
        self._replies: dict[int, Future[Any]] = {}
        self._releases: deque[str] = deque()
        self._closed = False
        self._broken: str | None = None
        self._killed = False
        self._shutdown_thread: threading.Thread | None = None
        self._start(ctx, cfg, initializer, initargs)
        _live_pools.add(self)

    @classmethod
    def from_config(cls, path: str, **overrides: Any) -> LanePool:
        """A pool described by a TOML / JSON / YAML file (see ``PoolFileConfig``); keyword
        arguments override the file. A bad field raises ConfigError naming it."""
        from .config import load_pool_config

        cfg = load_pool_config(path)
        kwargs: dict[str, Any] = {
            k: v for k, v in msgspec.structs.asdict(cfg).items() if v is not None
        }
        return cls(**{**kwargs, **overrides})

    @classmethod
    def with_default_lanes(cls, max_workers: int | None = None, **kwargs: Any) -> LanePool:
        """The six default lanes (system, control, query, session, skill, prompt)."""
        return cls(max_workers, lanes=None, **kwargs)

    # ---- start-up ----------------------------------------------------------------------------
    def _start(self, ctx: Any, cfg: CoordinatorConfig, initializer: Any, initargs: tuple[Any, ...]) -> None:
        coord_r, coord_w = make_pipe()
        self._bell_r, caller_w = make_pipe()
        self._coord_bell_w = os.dup(coord_w)
        startup_r, startup_w = ctx.Pipe(duplex=False)
        conns = [Connection(coord_r, writable=False), Connection(coord_w, readable=False),
                 Connection(caller_w, readable=False)]
        self._process = ctx.Process(
            target=coordinator_main,
            args=(cfg, startup_w, *conns, initializer, initargs),
            name=f"lane_mp-coordinator-{self._token}",
            daemon=False,
        )
        try:
            self._process.start()
        finally:
            startup_w.close()
            for c in conns:
                c.close()
        hello = self._await_hello(startup_r)
        self._control = Control.attach(f"lmp_{cfg.token}_ctl")
        self._writer = RingWriter(Ring.attach(hello.submit_ring))
        self._reader = RingReader(Ring.attach(hello.result_ring))
        self._worker_pids = hello.worker_pids
        if cfg.backend is not None:  # the backend decided the slot count (e.g. Dask worker threads)
            self._max_workers = len(hello.worker_pids)
        if self._journal is not None:  # ids are never reused in a storage file: start above its floor
            self._ids = itertools.count(hello.id_floor + 1)
            self._journal.started(hello.recovery)
        self._blocks = BlockPool(f"lmp_{self._token}_b{os.getpid():x}_")
        self._codec = PayloadCodec(
            self._blocks if cfg.backend is None else None, BlockCache(readonly=False), on_view=self._on_view,
            max_payload=cfg.max_payload_bytes,
        )
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(m.CoordToCaller)
        self._err_dec = msgspec.msgpack.Decoder(m.ErrorInfo)
        self._thread = threading.Thread(target=self._result_loop, name=f"lane_mp-results-{self._token}", daemon=True)
        self._thread.start()
        logger.debug("pool {} started: coordinator pid={} workers={}", self._token, self._process.pid, hello.worker_pids)

    def _await_hello(self, startup: Connection) -> m.Hello:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if startup.poll(0.05):
                try:
                    msg = msgspec.msgpack.decode(startup.recv_bytes(), type=m.Hello | m.Bye)
                except EOFError:
                    break
                if isinstance(msg, m.Hello):
                    if msg.version != m.PROTOCOL_VERSION:
                        raise BrokenPool(f"protocol version {msg.version} != {m.PROTOCOL_VERSION}")
                    return msg
                self._cleanup_failed_start()
                raise BrokenPool(f"the pool could not start: {msg.reason}")
            if not self._process.is_alive():
                break
        self._cleanup_failed_start()
        raise BrokenPool(f"the coordinator process did not start (exit code {self._process.exitcode})")

    def _cleanup_failed_start(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(5)
        sweep(f"lmp_{self._token}_")
        os.close(self._bell_r)
        os.close(self._coord_bell_w)

    # ---- submit ------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> LaneFuture:
        """Run ``fn(*args, **kwargs)`` in a worker; returns a Future.

        Keywords ``lane, priority, deadline, cost, key, dedup_key, tenant, correlation_id,
        metadata, timeout, max_retries, mailbox`` are options of the command, not arguments of ``fn``;
        to pass a keyword with one of those names to ``fn`` use :meth:`submit_call`.
        """
        if kwargs and not _RESERVED.isdisjoint(kwargs):
            opts = {k: kwargs.pop(k) for k in list(kwargs) if k in _RESERVED}
            return self._submit(fn, args, kwargs, True, None, **opts)
        return self._submit(fn, args, kwargs, True, None)

    def submit_call(
        self, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> LaneFuture:
        """Like submit, with the function's arguments given explicitly (no reserved names)."""
        return self._submit(fn, tuple(args), dict(kwargs or {}), True, None, **options)

    def submit_nowait(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> LaneFuture:
        """Like submit, but raise :class:`LaneFull` instead of waiting when the lane is full."""
        opts = {k: kwargs.pop(k) for k in list(kwargs) if k in _RESERVED}
        return self._submit(fn, args, kwargs, False, None, **opts)

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        block: bool,
        wait_timeout: float | None,
        *,
        lane: str | None = None,
        priority: int = Priority.NORMAL,
        deadline: float | None = None,
        cost: int = 1,
        key: Any = None,
        dedup_key: Any = None,
        tenant: str | None = None,
        correlation_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        chunk: bool = False,
        submit_timeout: float | None = None,
        mailbox: bool = False,
    ) -> LaneFuture:
        if self._closed:
            if self._broken:
                raise BrokenPool(f"the pool is broken: {self._broken}")
            raise PoolClosed("cannot schedule new futures after shutdown")
        if lane is None:
            li = self._default_lane_idx
        else:
            li = self._lane_index.get(lane, -1)
            if li < 0:
                raise UnknownLane(f"unknown lane {lane!r}; lanes are {list(self._lane_index)}", lane=lane)
        path = self._fn_paths.get(fn)
        if path is None:
            path = self._fn_paths.setdefault(fn, function_path(fn, fork=self._fork))
        if self._capacity_units is not None:
            if cost > self._capacity_units:
                raise CostTooLarge(
                    f"cost {cost} exceeds the pool's capacity_units {self._capacity_units}; it could never run",
                    cost=cost, capacity_units=self._capacity_units,
                )
        else:
            cost = 0
        until = self._control.breaker_open_until(li)
        if until and until > time.monotonic_ns():
            raise CircuitOpen(
                f"lane {self._lanes[li].name!r}: circuit breaker is open after consecutive failures",
                lane=self._lanes[li].name,
            )
        if dedup_key is not None:
            existing = self._dedup.get(dedup_key)
            if existing is not None and not existing.done():
                return existing
        if deadline is not None:
            deadline = time.monotonic() + deadline
        kh = key_hash(key) if key is not None else None
        if metadata is not None and not isinstance(metadata, dict):
            raise errors.ConfigError("metadata must be a dict", field="metadata")
        if mailbox and self._journal is None:
            raise errors.ConfigError("mailbox=True needs LanePool(storage=...)", field="mailbox")
        with self._lock:
            cap = self._lane_capacity[li]
            if cap is not None:
                self._wait_capacity(li, cap, block, submit_timeout)
            cid = next(self._ids)
            payload, blocks = self._codec.encode_call(args, kwargs)
            sub = m.Submit(
                cid, path, payload, li, int(priority), deadline, timeout, cost, kh, tenant,
                correlation_id, metadata, chunk, max_retries, time.time(), mailbox,
            )
            fut = LaneFuture(cid, self._send_cancel)
            fut.lane = li
            fut.t0 = time.monotonic()
            self._futures[cid] = fut
            if blocks:
                self._arg_blocks[cid] = blocks
            if cap is not None:
                self._lane_outstanding[li] += 1
                self._lane_of[cid] = li
            if self._releases:
                self._put_release_locked()
            if self._hub.active:  # before the put: "submitted" must precede the command's other events
                self._hub.submitted(cid, self._lanes[li].name, correlation_id)
            self._put_locked(self._enc.encode(sub))
        self._wake_coordinator()
        if self._durable_lanes[li]:  # "in the journal before submit returns"
            self._journal.wait_committed(cid, fut)  # type: ignore[union-attr]
        if dedup_key is not None:
            self._dedup[dedup_key] = fut
            fut.add_done_callback(lambda f, k=dedup_key: self._dedup.pop(k, None) if self._dedup.get(k) is f else None)
        return fut

    def _wait_capacity(self, li: int, cap: int, block: bool, timeout: float | None) -> None:
        if self._lane_outstanding[li] < cap:
            return
        if not block:
            raise LaneFull(f"lane {self._lanes[li].name!r} is at capacity ({cap})", lane=self._lanes[li].name)
        end = None if timeout is None else time.monotonic() + timeout
        while self._lane_outstanding[li] >= cap:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise LaneFull(f"lane {self._lanes[li].name!r} stayed at capacity ({cap})", lane=self._lanes[li].name)
            self._capacity_cv.wait(left if left is not None else 0.5)
            if self._closed:
                raise PoolClosed("pool shut down while waiting for lane capacity")

    def _put_locked(self, data: bytes) -> None:
        w = self._writer
        while not w.put(0, data):
            w.publish()
            self._wake_coordinator()
            if self._broken or not self._process.is_alive():
                raise BrokenPool(f"the pool is broken: {self._broken or 'coordinator died'}")
            time.sleep(0.0002)  # the coordinator drains the ring every turn
        w.publish()

    def _wake_coordinator(self) -> None:
        ring_if_waiting(self._control.words, COORD_WAITING, self._coord_bell_w)

    def _send(self, msg: Any) -> None:
        if self._broken:
            return
        with self._lock:
            self._put_locked(self._enc.encode(msg))
        self._wake_coordinator()

    def _send_cancel(self, cid: int) -> None:
        self._send(m.Cancel([cid]))

    def _on_view(self, name: str, view: memoryview | None) -> None:
        if view is None:
            self._releases.append(name)
        else:  # release the block when the last user of the view is gone
            weakref.finalize(view, self._releases.append, name)

    def _put_release_locked(self) -> None:
        names = []
        while self._releases:
            names.append(self._releases.popleft())
        self._put_locked(self._enc.encode(m.Release(names)))

    # ---- results -----------------------------------------------------------------------------
    def _result_loop(self) -> None:
        reader = self._reader
        poller = select.poll()
        poller.register(self._bell_r, select.POLLIN)
        poller.register(self._process.sentinel, select.POLLIN)
        bye = False
        last = 0.0
        try:
            while not bye:
                records = reader.read_all()
                if records:
                    last = time.monotonic()
                    for _tag, data in records:
                        try:
                            bye |= self._handle(self._dec.decode(data))
                        except Exception as exc:  # one bad record must not stop the thread
                            logger.exception("lane_mp: could not handle a result record: {!r}", exc)
                    if self._releases and not self._broken:
                        with self._lock:
                            self._put_release_locked()
                        self._wake_coordinator()
                    continue
                if time.monotonic() - last < RESULT_SPIN_S:
                    os.sched_yield()
                    continue
                reader.set_waiting(True)
                fence()
                if not reader.has_data():
                    events = poller.poll(BACKSTOP_S * 1000)
                    drain_fd(self._bell_r)
                    if any(fd == self._process.sentinel for fd, _ in events) and not reader.has_data():
                        reader.set_waiting(False)
                        self._coordinator_died()
                        return
                reader.set_waiting(False)
        except BaseException as exc:  # never leave futures hanging
            logger.exception("lane_mp result thread failed: {!r}", exc)
            self._fail_all(BrokenPool(f"result thread failed: {exc!r}"))
            raise
        self._finish_shutdown()

    def _handle(self, msg: Any) -> bool:
        tp = type(msg)
        if tp is m.Outcome:
            self._resolve(msg)
        elif tp is m.Reply:
            fut = self._replies.pop(msg.req, None)
            if fut is not None:
                fut.set_result(msg.data)
        elif tp is m.EventRecord:
            if msg.key == "queue.command.dead_lettered" and self.dead_letters is not None:
                p = msg.payload
                self.dead_letters.push(DeadLetter(
                    p["id"], p["lane"], p["fn"], p["attempts"], p["error_type"], p["error"], p["traceback"],
                    msg.timestamp, p.get("correlation_id"), p.get("metadata"), p.get("tenant"),
                    p.get("payload", b""), p.get("priority", 2), p.get("chunk", False),
                ))
            self._hub.record(msg.key, msg.timestamp, msg.payload)
        elif tp is m.Committed:
            if self._journal is not None:
                self._journal.committed(msg)
        elif tp is m.Bye:
            logger.debug("pool {}: coordinator said bye ({})", self._token, msg.reason)
            return True
        return False

    def _resolve(self, out: m.Outcome) -> None:
        cid = out.id
        fut = self._futures.pop(cid, None)
        if self._arg_blocks:  # rare side tables: skip the lookups on the common path
            blocks = self._arg_blocks.pop(cid, None)
            if blocks is not None:
                with self._lock:
                    for name in blocks:
                        self._blocks.give_back(name)
        if self._lane_of:
            li = self._lane_of.pop(cid, None)
            if li is not None:
                with self._lock:
                    self._lane_outstanding[li] -= 1
                    self._capacity_cv.notify_all()
        status = out.status
        if fut is None:
            if status == m.OK:
                try:
                    self._codec.decode_value(out.payload)  # releases any result blocks
                except errors.LaneMPError:
                    pass
            return
        if self._hub.active:
            self._observe(fut, out)
        fut.attempts = out.attempts
        if status == m.OK:
            try:
                value = self._codec.decode_value(out.payload)
            except Exception as exc:
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(exc)
                return
            if fut.set_running_or_notify_cancel():
                fut.set_result(value)
            return
        if status == m.RAISED:
            exc = decode_exception(out.payload)
        else:
            info = self._err_dec.decode(out.payload)
            if info.error == "CancelledError":
                fut._cancel_local()
                return
            exc = _make_error(info)
        if out.attempts > 1:
            try:
                exc.add_note(f"lane_mp: failed after {out.attempts} attempts")
            except AttributeError:
                pass
        if fut.set_running_or_notify_cancel():
            fut.set_exception(exc)

    def _observe(self, fut: LaneFuture, out: m.Outcome) -> None:
        kind, error = OK, ""
        if out.status == m.RAISED:
            kind = FAILED
        elif out.status == m.ERROR:
            info = self._err_dec.decode(out.payload)
            kind = CANCELLED if info.error == "CancelledError" else TIMEOUT if info.error == "TaskTimeout" else FAILED
            error = info.error
        self._hub.outcome(
            fut.command_id, self._lanes[fut.lane].name, kind, time.monotonic() - fut.t0, out.wait_s, out.attempts, error
        )

    def _fail_all(self, exc: BaseException) -> None:
        futs = list(self._futures.values())
        self._futures.clear()
        for fut in futs:
            if self._killed:
                fut._cancel_local()
            elif fut.set_running_or_notify_cancel():
                fut.set_exception(exc)
        for fut in list(self._replies.values()):
            if not fut.done():
                fut.set_exception(exc)
        with self._lock:
            self._capacity_cv.notify_all()

    def _coordinator_died(self) -> None:
        code = self._process.exitcode
        self._broken = f"the coordinator process died (exit code {code})"
        self._closed = True
        logger.error("pool {}: {}", self._token, self._broken)
        self._fail_all(BrokenPool(f"the pool is broken: {self._broken}; pending work was lost", exitcode=code))
        self._finish_shutdown()

    def _finish_shutdown(self) -> None:
        """Runs on the result thread once the coordinator is gone or said bye."""
        self._closed = True
        self._process.join(10)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join(5)
        if self._futures:
            self._fail_all(BrokenPool("the pool stopped with work still pending"))
        sweep(f"lmp_{self._token}_")
        for fd in (self._bell_r, self._coord_bell_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # ---- public control ----------------------------------------------------------------------
    def _request(self, op: str, arg: Any = None, timeout: float = 10.0) -> Any:
        if self._closed:
            raise PoolClosed("the pool is shut down")
        req = next(self._ids)
        fut: Future[Any] = Future()
        self._replies[req] = fut
        self._send(m.Control(op, req, arg))
        return fut.result(timeout)

    def stats(self) -> dict[str, Any]:
        """A snapshot from the coordinator: per-lane pending / active / completed / failed / ...,
        per-worker pids and load, and pool counters."""
        return self._request("stats")

    def pause_lane(self, name: str) -> None:
        """Stop dispatching from a lane (queued commands stay queued)."""
        self._request("pause", self._lane_idx(name))

    def resume_lane(self, name: str) -> None:
        self._request("resume", self._lane_idx(name))

    def _lane_idx(self, name: str) -> int:
        try:
            return self._lane_index[name]
        except KeyError:
            raise UnknownLane(f"unknown lane {name!r}", lane=name) from None

    @property
    def metrics(self) -> QueueMetrics | None:
        return self._hub.metrics

    @property
    def events(self) -> EventEmitter | None:
        return self._hub.emitter

    @property
    def alerts(self) -> AlertManager | None:
        return self._hub.alerts

    def serve_metrics(self, port: int = 0, host: str = "127.0.0.1") -> Any:
        """Serve ``metrics.snapshot().to_prometheus()`` at ``http://host:port/metrics``."""
        if self._hub.metrics is None:
            raise errors.ConfigError("serve_metrics needs LanePool(metrics=QueueMetrics.local())", field="metrics")
        from .observability.prometheus import serve_metrics

        return serve_metrics(self._hub.metrics.snapshot, port=port, host=host)

    # ---- persistence (persistence/client.py does the work) -------------------------------------
    def _storage_setup(self, storage: Any, durable: bool, notify_url: str | None = None) -> Any:
        """Normalise ``storage=`` and decide per lane whether submit waits for the journal."""
        if isinstance(storage, (str, os.PathLike)):
            storage = SQLiteStorage(storage)
        self._journal: JournalClient | None = None
        if storage is not None:
            self._journal = JournalClient(storage, self._request)
        elif durable or notify_url or any(lane.config.durable for lane in self._lanes):
            raise errors.ConfigError(
                "durable=True (pool or lane) and notify_url need LanePool(storage=...)", field="storage"
            )
        self._durable_lanes = [storage is not None and (durable or lane.config.durable) for lane in self._lanes]
        return storage

    def _journal_client(self) -> JournalClient:
        if self._journal is None:
            raise errors.ConfigError("this pool has no storage: LanePool(storage='jobs.db')", field="storage")
        return self._journal

    @property
    def recovered(self) -> list[int]:
        """Ids of the commands this pool recovered from its storage at start-up (outcomes: mailbox)."""
        return list(self._journal.report.recovered) if self._journal is not None else []

    @property
    def recovery(self) -> RecoveryReport | None:
        """The start-up recovery report: recovered ids, quarantined rows, id floor, time taken."""
        return self._journal.report if self._journal is not None else None

    @property
    def mailbox(self) -> Mailbox:
        """Kept outcomes: ``fetch(command_id)``, ``list(tenant=None)``, ``cleanup(older_than)``."""
        return self._journal_client().mailbox

    @property
    def stored_dead_letters(self) -> StoredDeadLetters:
        """The dead-letter queue in storage (survives restarts): ``list``, ``replay``, ``clear``."""
        return self._journal_client().dead_letters

    def storage_stats(self) -> dict[str, Any]:
        """Counts from the store (live, finished, dead letters, mailbox, quarantined, commits)."""
        return dict(self._journal_client().call("journal.stats"))

    def wait_recovered(self, timeout: float | None = None) -> bool:
        """Wait until every recovered or replayed command has its final outcome; False on timeout."""
        return self._journal_client().wait_background(timeout)

    def _replay_letter(self, letter: DeadLetter) -> LaneFuture:
        """Re-submit a dead letter exactly as it was (same function and encoded arguments)."""
        if self._closed:
            raise PoolClosed("cannot replay into a shut-down pool")
        li = self._lane_idx(letter.lane)
        with self._lock:
            cid = next(self._ids)
            sub = m.Submit(cid, letter.fn, letter.payload, li, letter.priority, None, None, 0, None,
                           letter.tenant, letter.correlation_id, letter.metadata, letter.chunk, None, time.time())
            fut = LaneFuture(cid, self._send_cancel)
            fut.lane = li
            fut.t0 = time.monotonic()
            self._futures[cid] = fut
            self._put_locked(self._enc.encode(sub))
        self._wake_coordinator()
        return fut

    @property
    def lanes(self) -> list[Lane]:
        return list(self._lanes)

    @property
    def max_workers(self) -> int:
        return self._max_workers

    @property
    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.stats()["workers"]]

    @property
    def coordinator_pid(self) -> int | None:
        return self._process.pid

    @property
    def is_shutting_down(self) -> bool:
        return self._closed

    def cancel(self, future: Future[Any], *, kill: bool = False) -> bool:
        """Cancel ``future``. Without ``kill`` this is ``future.cancel()``: a command not yet
        dispatched never runs. With ``kill=True`` a command already running is stopped by
        killing its worker (which is replaced). Returns whether the future is now cancelled."""
        if not isinstance(future, LaneFuture) or future.done():
            return future.cancelled()
        if kill:
            if Future.cancel(future):  # local state only; one Cancel(kill) record follows
                self._send(m.Cancel([future.command_id], kill=True))
            return True
        return future.cancel()

    # ---- map ---------------------------------------------------------------------------------
    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        **options: Any,
    ) -> Iterator[Any]:
        """``Executor.map``: results in order; work starts at once; input consumed lazily with a
        bounded number of chunks in flight. ``timeout`` counts from this call."""
        end = None if timeout is None else time.monotonic() + timeout
        it = self._chunked(fn, zip(*iterables), chunksize, options)
        window: deque[Future[Any]] = deque()
        self._fill(window, it)  # start now, like the stdlib

        def results() -> Iterator[Any]:
            try:
                while window:
                    fut = window.popleft()
                    left = None if end is None else end - time.monotonic()
                    chunk = fut.result(left)
                    self._fill(window, it)
                    yield from chunk
            finally:
                for fut in window:
                    fut.cancel()

        return results()

    def imap(self, fn: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None, **options: Any) -> Iterator[Any]:
        """Ordered results of ``fn(x)`` for x in ``iterable``, consumed lazily, bounded in flight."""
        return self.map(fn, iterable, chunksize=chunksize, **options)

    def imap_unordered(
        self, fn: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None, **options: Any
    ) -> Iterator[Any]:
        """Results of ``fn(x)`` in completion order, input consumed lazily, bounded in flight."""
        it = self._chunked(fn, ((x,) for x in iterable), chunksize, options)
        window: set[Future[Any]] = set()
        self._fill(window, it)
        try:
            while window:
                done, _ = futures_wait(window, return_when="FIRST_COMPLETED")
                for fut in done:
                    window.discard(fut)
                self._fill(window, it)
                for fut in done:
                    yield from fut.result()
        finally:
            for fut in window:
                fut.cancel()

    def _fill(self, window: Any, it: Iterator[Future[Any]]) -> None:
        limit = self._max_workers * CHUNKS_IN_FLIGHT_PER_WORKER
        add = window.append if isinstance(window, deque) else window.add
        while len(window) < limit:
            fut = next(it, None)
            if fut is None:
                return
            add(fut)

    def _chunked(
        self, fn: Callable[..., Any], items: Iterator[tuple[Any, ...]], chunksize: int | None, options: dict[str, Any]
    ) -> Iterator[Future[Any]]:
        size = chunksize or 0
        if size < 1:
            size = 16  # adaptive below: doubles while chunks are cheap, up to MAX_AUTO_CHUNK
        adaptive = not chunksize
        last = time.monotonic()
        while True:
            batch = list(itertools.islice(items, size))
            if not batch:
                return
            yield self._submit(fn, (batch,), {}, True, None, chunk=True, **options)
            if adaptive and size < MAX_AUTO_CHUNK:
                now = time.monotonic()
                if now - last < 0.002:
                    size *= 2
                last = now

    # ---- shutdown ----------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop intake; finish queued work (or cancel it); then stop every process."""
        with self._lock:
            first = not self._closed
            self._closed = True
            self._capacity_cv.notify_all()
        if first:
            self._hub.shutdown_started()
        if first and not self._broken:
            try:
                self._send(m.Control("shutdown", 0, bool(cancel_futures)))
            except BrokenPool:
                pass
        elif cancel_futures and not self._broken:
            self._send(m.Control("shutdown", 0, True))
        if wait:
            self._thread.join()

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every submitted command (retries in backoff included) is resolved.
        Raises :class:`DrainTimeout` with the number still pending when ``timeout`` passes."""
        futs = list(self._futures.values())
        _, not_done = futures_wait(futs, timeout)
        if not_done:
            raise DrainTimeout(f"{len(not_done)} commands still pending after {timeout}s", pending=len(not_done))

    def terminate(self) -> None:
        """Kill running work now: workers are killed, pending futures cancelled."""
        with self._lock:
            self._closed = True
        if not self._broken and self._process.is_alive():
            try:
                self._send(m.Control("terminate"))
            except BrokenPool:
                pass
            self._thread.join(10)
        if self._thread.is_alive():
            self.kill()

    def kill(self) -> None:
        """SIGKILL the coordinator (workers die with it); pending futures are cancelled."""
        self._closed = True
        self._killed = True
        try:
            os.kill(self._process.pid, signal.SIGKILL)
        except (ProcessLookupError, TypeError):
            pass
        self._thread.join(10)

    def __enter__(self) -> LanePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        state = "broken" if self._broken else "closed" if self._closed else "running"
        return f"<LanePool {self._token} workers={self._max_workers} lanes={list(self._lane_index)} {state}>"


def _make_error(info: m.ErrorInfo) -> BaseException:
    cls = getattr(errors, info.error, None)
    if isinstance(cls, type) and issubclass(cls, errors.LaneMPError):
        return cls(info.message, **info.fields)
    return errors.TaskFailed(f"{info.error}: {info.message}", remote_type=info.error, remote_traceback="")


def _at_exit() -> None:
    for pool in list(_live_pools):
        try:
            pool.shutdown(wait=True)
        except Exception:
            pass


try:  # run before non-daemon threads are joined, like concurrent.futures.process
    threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover
    import atexit

    atexit.register(_at_exit)

