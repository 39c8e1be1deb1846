"""Run the pool's commands on a Dask distributed cluster: ``LanePool(backend=DaskBackend(...))``.

lane_mp stays authoritative: lanes, priorities, min/max concurrency, rate limits, cost
admission, deadlines, retries, dead letters, the journal and metrics all stay in the coordinator,
unchanged. Only *where a dispatched command runs* changes. Data flow in the coordinator process::

    coordinator loop (one thread)                      Dask client threads          cluster
    dispatch -> DaskSlot.writer.put(Run bytes) -- client.submit(run_encoded) ---> scheduler -> worker
    handle_results <- DaskSlot.reader (deque) <--- done-callback: Done bytes <---- CommandRunner
          ^------------ coordinator doorbell (1 byte, ring_fd) ---/
    check_timeouts / cancel(kill) -> DaskSlot.kill_tree() -> ops thread: cancel, SIGKILL worker

Actors and what each may touch:

- **coordinator loop**: calls the slots exactly like local ``WorkerSlot`` objects (``start``,
  ``discard``, ``put``, ``read_all``, ``running``, ``kill_tree``). It never blocks on Dask except
  for ``client.submit`` (which only queues a message) and ``discard`` of a busy slot.
- **Dask callback thread** (``Future.add_done_callback``): fetches the result bytes, appends them
  to the slot's deque (thread-safe), or marks the slot's stand-in process exited (worker lost);
  then rings the coordinator's doorbell so the single-threaded loop wakes up.
- **ops thread** (one, ``lane_mp-dask-ops``): slow cluster calls off the loop: kill the worker of
  a timed-out or kill-cancelled command, and release *held* replacement slots once the cluster
  has threads for them again.

Slots. One slot per Dask worker thread (``nthreads`` summed at start, or ``slots=``); a slot
holds at most one command (prefetch depth 1), so in-flight work is capped at the cluster's size
and lane priorities, not Dask's queue, decide the order. A slot has no sentinel (it is not
polled); its ``process`` is a stand-in whose ``exitcode`` the slot sets when its Dask worker was
lost (``LOST_EXITCODE``) or killed (``-SIGKILL``), which the coordinator's one crash transition
(``worker_exited``) turns into ``WorkerCrashed`` / ``TaskTimeout`` and the retry policy.

Limits (documented in the README):

- Dask cannot interrupt a running task. A timeout (or ``cancel(kill=True)``) cancels the future
  and SIGKILLs the Dask worker *process* through its nanny (``client.run(..., nanny=True)``),
  which starts a fresh one (~1 s). ``client.restart_workers`` does the same but first waits 4 s
  for a graceful close when the worker is busy (measured), so it is not used. Workers without a
  nanny are told to exit instead; the deployment must restart them. Other commands running on
  the *same* Dask worker (``nthreads > 1``) die with it and fail with ``WorkerCrashed``.
- A lost worker only maps to ``WorkerCrashed`` if the scheduler's
  ``distributed.scheduler.allowed-failures`` is 0; otherwise Dask re-runs the task elsewhere
  itself (up to that many times) before lane_mp hears of it.
- The timeout clock starts when the command is handed to Dask (includes Dask's ~ms latency).
- Payloads travel inline (no shared memory across machines): ``payload_limit`` bounds them.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
from loguru import logger

from ..errors import ConfigError
from ..ipc.doorbell import ring_fd
from ..protocol import messages as m
from .dask_task import kill_worker_process, processing_on, run_encoded

__all__ = ["DaskBackend", "DaskSupervisor", "DaskSlot", "LOST_EXITCODE", "payload_limit"]

# Exit code reported for a slot whose Dask worker was lost (KilledWorker, closed comm): Dask does
# not say how its worker died, so this only means "died"; the Dask reason is logged.
LOST_EXITCODE = 1
KILLED_EXITCODE = -signal.SIGKILL  # we SIGKILLed the worker process (timeout, cancel(kill=True))
# Bytes of a ring record kept for a Submit's other fields (function path, metadata, ids).
RECORD_HEADROOM = 16 << 10
# Lane priority p and item priority q map to Dask priority -(p * STRIDE + q): higher runs first.
PRIORITY_STRIDE = 8
# How long to wait for the scheduler (connect, first worker, kill look-ups). Override with
# LANE_MP_DASK_TIMEOUT; a pool start fails with BrokenPool after it.
DASK_TIMEOUT_S = float(os.environ.get("LANE_MP_DASK_TIMEOUT", "30"))
# While a replacement slot is held, how often the ops thread asks the scheduler for its threads.
HOLD_POLL_S = 0.1


def payload_limit(ring_capacity: int, user_limit: int | None) -> int:
    """Largest encoded argument / result with the Dask backend: half a ring minus headroom."""
    limit = ring_capacity // 2 - RECORD_HEADROOM
    return limit if user_limit is None else min(limit, user_limit)


class DaskBackend:
    """Where commands run: a Dask cluster. Picklable: the coordinator makes its own Client.

    ``address_or_client``: ``None`` (the coordinator starts a ``LocalCluster`` of its own:
    ``slots`` single-threaded worker processes, default one per CPU, closed with the pool;
    ``allowed-failures`` 0), a scheduler address
    (``"tcp://host:8786"``), or a ``distributed.Client`` / ``LocalCluster`` (only its scheduler
    address is used). ``resources``: Dask resources every command needs (e.g. ``{"GPU": 1}``).
    ``cost_resource``: a Dask resource name that a command's ``cost=`` is charged to, so Dask
    places it on a worker with that many units free; lane_mp's own cost admission still decides
    first, and as locally a cost only counts when the pool has ``capacity_units``.
    ``slots``: commands in flight at once (default: the cluster's worker threads at start).
    """

    max_prefetch = 1  # commands a slot holds: one, so lane_mp decides the order

    def __init__(
        self,
        address_or_client: Any = None,
        *,
        resources: dict[str, float] | None = None,
        cost_resource: str | None = None,
        slots: int | None = None,
    ) -> None:
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            raise ImportError("the Dask backend needs `distributed`: pip install 'lane_mp[dask]'") from exc
        if address_or_client is None or isinstance(address_or_client, str):
            address = address_or_client
        elif isinstance(getattr(address_or_client, "scheduler_address", None), str):
            address = address_or_client.scheduler_address  # a cluster object
        elif hasattr(address_or_client, "scheduler") and hasattr(address_or_client.scheduler, "address"):
            address = address_or_client.scheduler.address  # a Client
        else:
            raise ConfigError(f"DaskBackend needs a scheduler address or a Client, not {address_or_client!r}",
                              field="address_or_client")
        if address is not None and address.startswith("inproc://"):
            raise ConfigError("an in-process Dask cluster cannot be reached from the coordinator process: "
                              "use LocalCluster(processes=True) or a tcp:// address", field="address_or_client")
        if slots is not None and slots < 1:
            raise ConfigError("slots must be >= 1", field="slots")
        if resources is not None and not all(isinstance(k, str) and v >= 0 for k, v in resources.items()):
            raise ConfigError("resources must map names to amounts >= 0", field="resources")
        self.address: str | None = address
        self.resources = dict(resources) if resources else None
        self.cost_resource = cost_resource
        self.slots = slots

    def __repr__(self) -> str:
        return (f"DaskBackend({self.address!r}, resources={self.resources!r}, "
                f"cost_resource={self.cost_resource!r}, slots={self.slots!r})")

    def check_pool_options(self, **options: Any) -> None:
        """Refuse pool options that only mean something for local worker processes."""
        for name in ("initializer", "max_tasks_per_child", "max_memory_per_child"):
            if options.get(name):
                raise ConfigError(f"{name} is not supported with the Dask backend (use a Dask WorkerPlugin "
                                  "or the cluster's own worker settings)", field=name)

    def payload_limit(self, ring_capacity: int, user_limit: int | None) -> int:
        return payload_limit(ring_capacity, user_limit)

    def make_supervisor(self, cfg: Any, bell_w: int) -> DaskSupervisor:
        """Called in the coordinator process: connect and return the slots' supervisor."""
        return DaskSupervisor(self, cfg, bell_w)


class _RemoteProcess:
    """Stand-in for a slot's ``multiprocessing.Process``: the coordinator reads ``exitcode``."""

    pid = 0

    def __init__(self) -> None:
        self.exitcode: int | None = None
        self._gone = threading.Event()

    def set_exit(self, code: int) -> None:
        if self.exitcode is None:
            self.exitcode = code
            self._gone.set()

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        self._gone.wait(timeout)

    def close(self) -> None:
        pass


class _SlotWriter:
    """The slot's 'command ring': each Run put here is submitted to Dask at once."""

    consumer_waiting = False

    def __init__(self, slot: DaskSlot) -> None:
        self.slot = slot

    def put(self, tag: int, data: bytes) -> bool:
        self.slot._sup.send(self.slot, data)
        return True

    def publish(self) -> None:
        pass

    def clear_waiting(self) -> None:
        pass


class _SlotReader:
    """The slot's 'result ring': Done bytes appended by the Dask callback thread."""

    def __init__(self, slot: DaskSlot) -> None:
        self.slot = slot
        self.queue: deque[bytes] = deque()

    def read_all(self) -> list[tuple[int, bytes]]:
        q = self.queue
        out = []
        while q:
            out.append((0, q.popleft()))
        return out

    def has_data(self) -> bool:
        # A lost slot counts as input: the loop then keeps turning (<= SENTINEL_CHECK_S) until
        # its periodic exit check reaps the slot, since there is no sentinel to wake it.
        return bool(self.queue) or self.slot.process.exitcode is not None


class DaskSlot:
    """Duck-types ``coordinator.supervisor.WorkerSlot`` for one Dask worker thread."""

    sentinel = None  # nothing to poll: the Dask callback rings the coordinator's doorbell

    def __init__(self, sup: DaskSupervisor, index: int, generation: int) -> None:
        self.index = index
        self.generation = generation
        self.pid = 0  # unknown; the Dask worker's pid (on its host) once a crash or kill names it
        self.process = _RemoteProcess()
        self.writer = _SlotWriter(self)
        self.reader = _SlotReader(self)
        self.assigned: dict[int, Any] = {}
        self.retiring = False  # also: held until the cluster has a thread for it again
        self.kill_reason: tuple[str, int] | None = None
        self.dead = False
        self._sup = sup
        self._fut: Any = None  # the distributed.Future of the command in flight
        self._running: tuple[int, int] = (0, 0)  # (command id, monotonic_ns handed to Dask)
        self._killing = False

    def running(self) -> tuple[int, int]:
        return self._running

    def wake(self) -> None:
        pass

    def kill_tree(self) -> None:
        self._sup.kill(self)


class DaskSupervisor:
    """``start(index)`` / ``discard(slot)`` like the local Supervisor, plus ``slots`` and ``close``."""

    max_prefetch = DaskBackend.max_prefetch

    def __init__(self, backend: DaskBackend, cfg: Any, bell_w: int) -> None:
        from distributed import Client, LocalCluster

        self.backend = backend
        self.bell_w = bell_w
        self.token: str = cfg.token
        self.lane_priority = [lane.priority for lane in cfg.lanes]
        self.max_payload: int | None = cfg.max_payload_bytes
        self._cluster: Any = None
        self.client: Any = None
        try:
            address = backend.address
            if address is None:
                self._cluster = LocalCluster(n_workers=backend.slots, processes=True, threads_per_worker=1,
                                             dashboard_address=None, scheduler_kwargs={"allowed_failures": 0})
                address = self._cluster.scheduler_address
            self.client = Client(address, set_as_default=False, timeout=DASK_TIMEOUT_S)
            if backend.slots is None:
                self.client.wait_for_workers(1, timeout=DASK_TIMEOUT_S)
            threads = self._cluster_threads()
        except BaseException:
            self.close()
            raise
        self.slots: int = backend.slots or threads
        self._oversubscribe = self.slots - threads  # kept when releasing held slots
        self._dec = msgspec.msgpack.Decoder(m.CoordToWorker)
        self._keys = itertools.count(1)
        self._started = 0
        self._lock = threading.Lock()
        self._live: set[DaskSlot] = set()
        self._held: list[DaskSlot] = []
        self._restarting: set[str] = set()  # addresses of workers we killed, until they are gone
        self._ops: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._stop = object()
        self._ops_thread = threading.Thread(target=self._ops_loop, name="lane_mp-dask-ops", daemon=True)
        self._ops_thread.start()
        logger.debug("dask backend: scheduler {} threads={} slots={}", address, threads, self.slots)

    # ---- slots (coordinator thread) ----------------------------------------------------------
    def start(self, index: int) -> DaskSlot:
        self._started += 1
        slot = DaskSlot(self, index, self._started)
        replacement = self._started > self.slots
        with self._lock:
            self._live.add(slot)
            if replacement:  # after a crash / kill: wait until the cluster has a thread for it
                slot.retiring = True
                self._held.append(slot)
        if replacement:
            self._ops.put(None)  # check capacity now
        return slot

    def discard(self, slot: DaskSlot) -> None:
        slot.dead = True
        with self._lock:
            self._live.discard(slot)
            if slot in self._held:
                self._held.remove(slot)
        fut, slot._fut = slot._fut, None
        if fut is not None and not slot._killing and not fut.done():
            try:
                fut.cancel()  # e.g. the pool broke with commands in flight
            except Exception as exc:
                logger.debug("dask backend: cancel on discard failed: {!r}", exc)

    def send(self, slot: DaskSlot, data: bytes) -> None:
        """A record for the slot's worker: submit a Run; Stop ends the slot; Release is moot."""
        msg = self._dec.decode(data)
        tp = type(msg)
        if tp is m.Run:
            cmd = slot.assigned.get(msg.id)
            sub = cmd.sub if cmd is not None else None
            priority, resources = 0, dict(self.backend.resources or {})
            if sub is not None:
                priority = -(self.lane_priority[sub.lane] * PRIORITY_STRIDE + sub.priority)
                if self.backend.cost_resource and sub.cost:
                    resources[self.backend.cost_resource] = sub.cost
            key = f"lane_mp-{self.token}-{msg.id}-{msg.attempt}-{next(self._keys)}"
            slot._running = (msg.id, time.monotonic_ns())
            fut = self.client.submit(run_encoded, data, self.max_payload, key=key, priority=priority,
                                     resources=resources or None, pure=False, retries=0)
            slot._fut = fut
            fut.add_done_callback(partial(self._on_done, slot, msg.id))
        elif tp is m.Stop:
            fut, slot._fut = slot._fut, None
            slot._killing = True
            if fut is not None and not fut.done():
                fut.cancel()
            slot.process.set_exit(0)

    def kill(self, slot: DaskSlot) -> None:
        """Timeout / cancel(kill=True) / terminate: stop the command wherever it runs."""
        if slot._killing:
            return
        slot._killing = True
        fut = slot._fut
        if fut is None or fut.done():
            slot._fut = None
            slot.process.set_exit(KILLED_EXITCODE)  # nothing runs remotely
            ring_fd(self.bell_w)
            return
        self._ops.put(partial(self._kill_remote, slot, fut))

    # ---- Dask threads ------------------------------------------------------------------------
    def _on_done(self, slot: DaskSlot, cid: int, fut: Any) -> None:
        """Dask's callback thread: hand the outcome to the loop, or report the worker lost."""
        if slot._fut is not fut or slot._killing:
            return  # killed, stopped or discarded: the coordinator already accounts for it
        try:
            status = fut.status
            if status == "finished":
                data = fut.result(timeout=DASK_TIMEOUT_S)
            elif status == "error":
                exc = fut.exception()
                if _worker_lost(exc):
                    return self._lost(slot, exc)
                # The task itself failed before CommandRunner ran (e.g. lane_mp is missing or of
                # another protocol version on the worker): a failed attempt, not a crash.
                data = msgspec.msgpack.encode(m.Done(cid, m.ERROR, msgspec.msgpack.encode(m.ErrorInfo(
                    "TaskFailed", f"the Dask task of command {cid} failed before it could run: {exc!r}"))))
            else:  # cancelled / lost without our asking: the scheduler dropped it
                return self._lost(slot, f"Dask future {status}")
        except Exception as exc:  # the result could not be fetched: its worker is gone
            return self._lost(slot, exc)
        slot._fut = None
        slot._running = (0, 0)
        slot.reader.queue.append(data)
        ring_fd(self.bell_w)

    def _lost(self, slot: DaskSlot, why: Any) -> None:
        pid = getattr(getattr(why, "last_worker", None), "pid", None)
        if pid:
            slot.pid = pid
        logger.warning("dask backend: slot {} lost its worker: {}", slot.index, why)
        slot._fut = None
        slot.process.set_exit(LOST_EXITCODE)
        ring_fd(self.bell_w)

    def _kill_remote(self, slot: DaskSlot, fut: Any) -> None:
        """Ops thread: find the worker running ``fut``, cancel it, SIGKILL that worker process."""
        where = None
        try:
            where = self.client.run_on_scheduler(processing_on, fut.key, callback_timeout=DASK_TIMEOUT_S)
            fut.cancel()
        except Exception as exc:
            logger.warning("dask backend: cancelling {} failed: {!r}", fut.key, exc)
        if where is not None:
            address, pid = where
            slot.pid = pid or slot.pid
            with self._lock:
                self._restarting.add(address)
            try:
                self.client.run(kill_worker_process, workers=[address], nanny=True, callback_timeout=DASK_TIMEOUT_S)
            except Exception as exc:  # no nanny: ask the worker to exit; its deployment restarts it
                logger.warning("dask backend: no nanny killed {} ({!r}); asking the worker to exit", address, exc)
                try:
                    self.client.run(os._exit, 1, workers=[address], wait=False, on_error="ignore",
                                    callback_timeout=DASK_TIMEOUT_S)
                except Exception as exc2:
                    logger.error("dask backend: could not stop worker {}: {!r}", address, exc2)
        slot._fut = None
        slot.process.set_exit(KILLED_EXITCODE)
        ring_fd(self.bell_w)

    def _ops_loop(self) -> None:
        while True:
            try:
                op = self._ops.get(timeout=HOLD_POLL_S if self._held else None)
            except queue.Empty:
                op = None
            if op is self._stop:
                return
            try:
                if op is not None:
                    op()
                if self._held:
                    self._release_held()
            except Exception as exc:
                logger.warning("dask backend: ops thread: {!r}", exc)

    def _release_held(self) -> None:
        """Give held replacement slots back to the loop once the cluster has threads for them."""
        workers = self.client.scheduler_info()["workers"]
        released = False
        with self._lock:
            self._restarting &= set(workers)  # a killed worker is gone once the scheduler drops it
            threads = sum(w.get("nthreads", 0) for a, w in workers.items() if a not in self._restarting)
            active = sum(1 for s in self._live if not s.retiring and s.process.exitcode is None)
            room = threads + self._oversubscribe - active
            while room > 0 and self._held:
                self._held.pop(0).retiring = False
                room -= 1
                released = True
        if released:
            ring_fd(self.bell_w)

    def _cluster_threads(self) -> int:
        return sum(w.get("nthreads", 0) for w in self.client.scheduler_info()["workers"].values())

    # ---- end ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Coordinator exit: stop the ops thread (queued kills run first), close the client and
        the LocalCluster this backend started, if any. Never raises: cleanup must go on."""
        thread = getattr(self, "_ops_thread", None)
        if thread is not None:
            self._ops.put(self._stop)  # type: ignore[arg-type]
            thread.join(DASK_TIMEOUT_S)
        for closing in (self.client, self._cluster):
            if closing is None:
                continue
            try:
                closing.close(timeout=10)
            except Exception as exc:
                logger.debug("dask backend: close {!r}: {!r}", closing, exc)


def _worker_lost(exc: BaseException | None) -> bool:
    """KilledWorker or a broken connection: the worker died, the command did not fail by itself."""
    if exc is None:
        return False
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError

    return isinstance(exc, (KilledWorker, CommClosedError, OSError, EOFError))
