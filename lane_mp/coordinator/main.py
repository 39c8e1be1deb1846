"""The coordinator process: one loop that owns every piece of scheduling state.

Data flow (what moves where; arrows are shared-memory rings, each with one producer and one
consumer; wake-ups travel on doorbell pipes, never on a data channel)::

    caller                coordinator                                        worker w
    ------                -----------                                        --------
    submit ring ------->  intake -> scheduler (lanes) -> dispatch ---cmd ring w----->  run
    result ring <-------  outbox <- outcomes (retry? dead letter?) <--result ring w---  Done
                          timers: retry backoff, deadlines, timeouts, rate-limit refills
                          supervisor: spawn, watch sentinels, kill trees, respawn, retire
                          journal (optional): accept/dispatch/finish stage writes; ONE commit
                          per loop turn, before dispatch; Committed(upto) -> caller
                          stats board (lmp_<token>_stats): snapshot() every ~0.5 s, read by `top`
                          backend (optional, cfg.backend): dispatch goes to its slots instead
                          of worker rings, e.g. Dask tasks (backends/dask.py draws that flow)

Actors and what each may touch:

- **caller** (``LanePool``): writes the submit ring, reads the result ring, holds the futures.
  Never touches worker rings or scheduling state.
- **coordinator** (this module): reads the submit ring and every worker's result ring, writes
  every worker's command ring and the caller's result ring; owns the scheduler, the command
  table, timers and the segments (creates and unlinks them). Single-threaded, so forking
  workers from it is safe.
- **worker**: reads its command ring, writes its result ring and its own result blocks.
- **stats board readers** (``lane_mp top``, ``observability/board.py``): attach the board segment
  read-only and copy snapshots out with a seqlock; they never write to the pool. The caller
  writes its latency percentiles into the board's second slot.
- **journal** (``persistence/journal.py``, optional): lives in this process and is the store's only
  writer; touched only from this loop's thread (``open()`` runs here, never in the caller).
- **backend** (``backends/``, optional): its supervisor makes the slots (no sentinel, a stand-in
  process); its own threads (e.g. Dask's client) only append outcomes to a slot's thread-safe
  queue, set a slot's exit code and ring this loop's doorbell. No worker is forked then.

One blocking wait per process: the coordinator sleeps in one ``poll()`` over its doorbell, every
worker sentinel and its parent's sentinel, with a timeout from the next timer.
"""

from __future__ import annotations

import heapq
import os
import random
import select
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import msgspec
from loguru import logger

from ..config import FailureInfo, Lane, PartitionConfig, RetryPolicy
from ..ipc.control import COORD_WAITING, STATE, Control
from ..ipc.doorbell import BACKSTOP_S, drain_fd, fence, ring_fd
from ..ipc.ring import Ring, RingReader, RingWriter
from ..outcomes.breaker import CircuitBreaker
from ..ipc.segments import sweep
from ..observability.board import StatsBoard
from ..partitions import partition_for
from ..persistence.journal import Journal
from ..protocol import messages as m
from ..scheduling.scheduler import SchedItem, Scheduler
from .state import ASSIGNED, BACKOFF, PENDING, Command
from .supervisor import Supervisor, WorkerSlot, describe_exit

# Prefetch: a worker may hold several queued commands so tiny tasks are batched, but only about
# this much estimated work, so an urgent command never waits long behind prefetched ones.
PREFETCH_BUDGET_S = 0.0005
MAX_PREFETCH = 64
SENTINEL_CHECK_S = 0.005  # while busy, how often worker deaths are looked for
TIMEOUT_POLL_S = 0.01  # wake-up granularity while a command with a timeout is queued on a worker
STOP_GRACE_S = 3.0
# After activity the coordinator keeps polling its rings this long (yielding the CPU each
# round) before it sleeps: a reply usually comes back within tens of µs, and each sleep/wake
# costs ~30 µs on each side (MEASURED.md).
SPIN_S = float(os.environ.get("LANE_MP_COORD_SPIN_US", "200")) / 1e6

__all__ = ["CoordinatorConfig", "coordinator_main"]


class CoordinatorConfig(msgspec.Struct, frozen=True):
    token: str
    workers: int
    lanes: list[Lane]
    worker_start_method: str
    capacity_units: int | None = None
    partition: PartitionConfig = PartitionConfig()
    ring_capacity: int = 1 << 20
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    default_retry: RetryPolicy | None = None
    dead_letters: bool = False  # send permanently failed commands back as dead letters
    emit_started: bool = False  # send a queue.command.started event per dispatch (costly)
    gauges_interval: float = 0.1  # seconds between lane gauge reports while anything changes
    max_payload_bytes: int | None = None
    storage: Any = None  # a persistence Storage (SQLiteStorage pickles as its settings), opened here
    durable: bool = False  # journal every command, not only those of durable lanes
    recover: bool = True  # re-enqueue what the journal held at start-up
    notify_url: str | None = None  # POST kept outcomes here (persistence/notifier.py: a thread)
    backend: Any = None  # where commands run (backends/, e.g. DaskBackend); None: local workers


class Coordinator:
    def __init__(
        self, cfg: CoordinatorConfig, bell_r: int, bell_w: int, caller_bell_w: int, initializer: Any, initargs: tuple
    ) -> None:
        import multiprocessing

        self.cfg = cfg
        self.bell_r = bell_r
        self.caller_bell_w = caller_bell_w
        self.control = Control.create(f"lmp_{cfg.token}_ctl")
        self.submit_ring = Ring.create(f"lmp_{cfg.token}_sub", cfg.ring_capacity)
        self.result_ring = Ring.create(f"lmp_{cfg.token}_res", cfg.ring_capacity)
        self.intake = RingReader(self.submit_ring)
        self.outbox = RingWriter(self.result_ring)
        self.sched = Scheduler(cfg.lanes, capacity_units=cfg.capacity_units, partition=cfg.partition)
        self.lane_timeout = [lane.config.timeout for lane in cfg.lanes]
        self.lane_retry = [lane.config.retry or cfg.default_retry or RetryPolicy.none() for lane in cfg.lanes]
        self.commands: dict[int, Command] = {}
        self.timers: list[tuple[float, int]] = []  # (due, command id) retry backoff
        self.rng = random.Random()
        self.enc = msgspec.msgpack.Encoder()
        self.dec_in = msgspec.msgpack.Decoder(m.CallerToCoord)
        self.dec_w = msgspec.msgpack.Decoder(m.WorkerToCoord)
        self.pending_out: list[bytes] = []
        self.ewma = PREFETCH_BUDGET_S  # unknown duration counts as one budget: depth 1
        self.shutting_down = False
        self.cancel_on_shutdown = False
        self.broken: str | None = None
        if cfg.backend is None:
            self.sup: Any = Supervisor(
                multiprocessing.get_context(cfg.worker_start_method), cfg.token, self.control.segment.name,
                bell_w, cfg.ring_capacity, initializer, initargs,
                cfg.max_tasks_per_child, cfg.max_memory_per_child, cfg.max_payload_bytes,
            )
            n_slots = cfg.workers
        else:  # backends/: its slots duck-type WorkerSlot (no sentinel; a stand-in process)
            self.sup = cfg.backend.make_supervisor(cfg, bell_w)
            n_slots = self.sup.slots
        self.max_prefetch: int = getattr(self.sup, "max_prefetch", MAX_PREFETCH)
        self.workers: list[WorkerSlot] = [self.sup.start(i) for i in range(n_slots)]
        parent = multiprocessing.parent_process()
        self.parent_sentinel = parent.sentinel if parent is not None else None
        self.poller = select.poll()
        self._poll_fds: set[int] = set()
        self._last_sentinel_check = 0.0
        self.stats_counts = {"completed": 0, "failed": 0, "retried": 0, "timeouts": 0, "crashes": 0,
                             "dead_lettered": 0, "recycled": 0}
        self.breakers = [
            CircuitBreaker(lane.config.circuit_breaker) if lane.config.circuit_breaker else None
            for lane in cfg.lanes
        ]
        self.breaker_timers: list[tuple[float, int]] = []
        self.last_gauges = 0.0
        self.gauges_dirty = True
        self.board = StatsBoard.create(cfg.token)  # unlinked by the exit sweep of lmp_<token>_*
        for slot in self.workers:
            self.event("worker.started", pid=slot.pid, index=slot.index)
        self.journal: Journal | None = None
        if cfg.storage is not None:
            self.journal = Journal(cfg.storage, cfg.lanes, durable=cfg.durable, token=cfg.token,
                                   notify_url=cfg.notify_url)
            self.journal.open()
            if cfg.recover:
                self.recover_journal(time.monotonic())

    def event(self, key: str, **payload: Any) -> None:
        self.pending_out.append(self.enc.encode(m.EventRecord(key, time.time(), payload)))

    # ---- intake ------------------------------------------------------------------------------
    def handle_intake(self, now: float) -> bool:
        records = self.intake.read_all()
        if records:
            self.gauges_dirty = True
        for _tag, data in records:
            msg = self.dec_in.decode(data)
            tp = type(msg)
            if tp is m.Submit:
                self.accept(msg, now)
            elif tp is m.Cancel:
                self.cancel(msg, now)
            elif tp is m.Release:
                self.release_blocks(msg.blocks)
            else:
                self.control_request(msg, now)
        return bool(records)

    def accept(self, sub: m.Submit, now: float) -> None:
        part = None
        if sub.key is not None and self.cfg.partition.mode in ("auto", "hash"):
            part = partition_for(sub.key, len(self.workers))
        item = SchedItem(sub.id, sub.lane, sub.priority, now, sub.deadline, sub.cost, sub.tenant, part)
        cmd = Command(sub, item)
        item.ref = cmd
        self.commands[sub.id] = cmd
        if self.shutting_down and self.cancel_on_shutdown:
            self.finish_error(cmd, "CancelledError", "pool shut down with cancel_futures=True")
            return
        if self.journal is not None:
            self.journal.accepted(sub)
        try:
            self.sched.enqueue(item, now)
        except Exception as exc:  # CostTooLarge etc.: the caller checks first, this is a backstop
            self.finish_error(cmd, type(exc).__name__, str(exc))

    def cancel(self, msg: m.Cancel, now: float) -> None:
        for cid in msg.ids:
            cmd = self.commands.get(cid)
            if cmd is None:
                continue
            cmd.cancelled = True
            if cmd.state == PENDING and self.sched.remove(cid) is not None:
                self.finish_error(cmd, "CancelledError", "cancelled before it started")
            elif cmd.state == BACKOFF:
                self.finish_error(cmd, "CancelledError", "cancelled while waiting to retry")
            elif cmd.state == ASSIGNED and msg.kill:
                slot = self.workers[cmd.worker]
                if slot.running()[0] == cid:
                    slot.kill_reason = ("cancel", cid)
                    slot.kill_tree()

    def release_blocks(self, names: list[str]) -> None:
        by_pid: dict[int, list[str]] = {}
        prefix = f"lmp_{self.cfg.token}_b"
        for name in names:
            pid_hex = name[len(prefix):].split("_", 1)[0]
            by_pid.setdefault(int(pid_hex, 16), []).append(name)
        for pid, group in by_pid.items():
            slot = next((w for w in self.workers if w.pid == pid and not w.dead), None)
            if slot is None:
                from ..ipc.segments import unlink_name

                for name in group:
                    unlink_name(name)
            else:
                self.send_worker(slot, self.enc.encode(m.Release(group)))

    def control_request(self, msg: m.Control, now: float) -> None:
        op = msg.op
        if op == "stats":
            self.reply(msg.req, self.snapshot())
        elif op == "pause":
            self.sched.pause(msg.arg)
            self.reply(msg.req, True)
        elif op == "resume":
            self.sched.resume(msg.arg)
            self.reply(msg.req, True)
        elif op == "shutdown":
            self.shutting_down = True
            self.control.words[STATE] = 1
            if msg.arg:
                self.cancel_on_shutdown = True
                self.cancel_all("pool shut down with cancel_futures=True")
        elif op == "terminate":
            self.shutting_down = True
            self.cancel_on_shutdown = True
            for slot in self.workers:
                slot.kill_reason = ("terminate", 0)
                slot.kill_tree()
            self.cancel_all("pool terminated")
        elif op.startswith("journal.") and self.journal is not None:
            self.journal_request(msg, now)
        else:
            logger.warning("unknown control op {}", op)

    def cancel_all(self, why: str) -> None:
        for cmd in list(self.commands.values()):
            if cmd.state == PENDING:
                if self.sched.remove(cmd.sub.id) is not None:
                    self.finish_error(cmd, "CancelledError", why)
            elif cmd.state == BACKOFF:
                self.finish_error(cmd, "CancelledError", why)

    def send_gauges(self, now: float) -> None:
        """Per-lane depth and active counts, at most every gauges_interval while they change."""
        self.last_gauges = now
        self.gauges_dirty = False
        lanes = self.cfg.lanes
        self.event("lane.gauges", lanes={
            lanes[i].name: [self.sched.pending(i), self.sched.active(i)] for i in range(len(lanes))
        })

    def reply(self, req: int, data: Any) -> None:
        self.pending_out.append(self.enc.encode(m.Reply(req, data)))

    def snapshot(self) -> dict[str, Any]:
        return {
            "lanes": [msgspec.structs.asdict(s) for s in self.sched.stats()],
            "workers": [
                {"index": w.index, "pid": w.pid, "assigned": len(w.assigned), "generation": w.generation}
                for w in self.workers
            ],
            "commands": len(self.commands),
            "backoff": len(self.timers),
            **self.stats_counts,
        }

    # ---- outcomes ----------------------------------------------------------------------------
    def handle_results(self, now: float) -> bool:
        progressed = False
        for slot in self.workers:
            if slot.dead:
                continue
            records = slot.reader.read_all()
            if records:
                progressed = True
                self.process_worker_records(slot, records, now)
        return progressed

    def process_worker_records(self, slot: WorkerSlot, records: list[tuple[int, bytes]], now: float) -> None:
        dec = self.dec_w.decode
        for _tag, data in records:
            msg = dec(data)
            if type(msg) is m.Done:
                cmd = slot.assigned.pop(msg.id, None)
                if cmd is None:
                    continue
                self.ewma += 0.05 * (msg.elapsed - self.ewma)
                if msg.status == m.OK or cmd.cancelled:
                    self.sched.finished(cmd.item, now, True)
                    self.finish(cmd, msg.status, msg.payload, msg.elapsed)
                elif msg.status == m.RAISED:
                    info = FailureInfo("raised", tuple(msg.exc_types), msg.message)
                    self.failed(cmd, info, msg.status, msg.payload, now, msg.elapsed)
                else:
                    self.failed(cmd, FailureInfo("error"), msg.status, msg.payload, now, msg.elapsed)
            elif type(msg) is m.Retiring:
                slot.retiring = True
                logger.debug("worker {} retiring: {}", slot.index, msg.reason)
            elif type(msg) is m.InitFailed:
                self.broken = msg.message
                logger.error("worker initializer failed: {}", msg.message)

    def finish(self, cmd: Command, status: int, payload: bytes, run_s: float = 0.0) -> None:
        del self.commands[cmd.sub.id]
        if self.journal is not None:
            self.journal.finished(cmd.sub, cmd.attempts, status, payload)
        self.gauges_dirty = True
        ok = status == m.OK
        self.stats_counts["completed" if ok else "failed"] += 1
        wait_s = max(0.0, cmd.dispatched_at - cmd.item.submitted_at) if cmd.dispatched_at else 0.0
        self.pending_out.append(self.enc.encode(m.Outcome(cmd.sub.id, status, payload, cmd.attempts, wait_s, run_s)))
        breaker = self.breakers[cmd.sub.lane]
        if breaker is not None and not cmd.cancelled and cmd.attempts:
            self.record_breaker(cmd.sub.lane, breaker, ok)

    def record_breaker(self, lane: int, breaker: CircuitBreaker, ok: bool) -> None:
        now = time.monotonic()
        if not breaker.record(ok, now):
            return
        until = breaker.open_until()
        if until is not None and not breaker.allows(now):
            # Open: stop dispatching the lane until the cool-down ends, then let work probe it.
            self.control.set_breaker(lane, int(until * 1e9))
            self.sched.pause(lane)
            heapq.heappush(self.breaker_timers, (until, lane))
            self.event("queue.lane.circuit_open", lane=self.cfg.lanes[lane].name, until=until)
        else:
            self.control.set_breaker(lane, 0)
            self.sched.resume(lane)
            self.event("queue.lane.circuit_closed", lane=self.cfg.lanes[lane].name)

    def dead_letter(self, cmd: Command, error_type: str, message: str, tb: str) -> None:
        if self.journal is not None and not cmd.cancelled:
            self.journal.dead_letter(cmd.sub, cmd.attempts, error_type, message, tb, self.cfg.dead_letters)
        if not self.cfg.dead_letters or cmd.cancelled:
            return
        self.stats_counts["dead_lettered"] += 1
        sub = cmd.sub
        self.event(
            "queue.command.dead_lettered", id=sub.id, lane=self.cfg.lanes[sub.lane].name, fn=sub.fn,
            attempts=cmd.attempts, error_type=error_type, error=message, traceback=tb,
            correlation_id=sub.correlation_id, metadata=sub.metadata, tenant=sub.tenant,
            payload=sub.payload, priority=sub.priority, chunk=sub.chunk,
        )

    def finish_error(self, cmd: Command, error: str, message: str, **fields: Any) -> None:
        self.finish(cmd, m.ERROR, self.enc.encode(m.ErrorInfo(error, message, fields)))

    # ---- journal (persistence/journal.py) ----------------------------------------------------
    def recover_journal(self, now: float) -> None:
        """Re-enqueue what the last pool left live (same ids, attempts kept); no caller future
        waits for them, so their outcomes go to the mailbox."""
        assert self.journal is not None
        for sub, attempts in self.journal.recover():
            self.accept(sub, now)
            cmd = self.commands.get(sub.id)
            if cmd is not None:
                cmd.attempts = attempts
        rep = self.journal.report
        self.event("journal.recovered", recovered=len(rep.recovered), quarantined=len(rep.quarantined),
                   dead_lettered=len(rep.dead_lettered), seconds=rep.seconds)

    def journal_commit(self) -> None:
        """The turn's one group commit; acknowledge durable submits, fail what did not land."""
        assert self.journal is not None
        report = self.journal.commit()
        if report is None or not report.ack:
            return
        self.pending_out.append(self.enc.encode(m.Committed(report.upto, report.failed, report.error)))
        for cid in report.failed:
            cmd = self.commands.get(cid)
            if cmd is not None and cmd.state == PENDING and self.sched.remove(cid) is not None:
                self.finish_error(cmd, "StorageError", report.error)

    def journal_request(self, msg: m.Control, now: float) -> None:
        assert self.journal is not None
        data, subs = self.journal.request(msg.op, msg.arg)
        for sub in subs:  # replayed dead letters
            self.accept(sub, now)
        self.reply(msg.req, data)

    def failed(
        self, cmd: Command, info: FailureInfo, status: int, payload: bytes, now: float, run_s: float = 0.0
    ) -> None:
        """One attempt failed: retry after the policy's delay, or report the final failure."""
        self.sched.finished(cmd.item, now, False)
        policy = self.lane_retry[cmd.sub.lane]
        if cmd.sub.max_retries is not None:
            policy = msgspec.structs.replace(
                policy if policy.kind != "none" else RetryPolicy.fixed(0, 0.0), max_retries=cmd.sub.max_retries
            )
        delay = None if (cmd.cancelled or self.cancel_on_shutdown) else policy.decide(cmd.attempts, info, self.rng)
        if delay is None:
            if not cmd.cancelled:
                error_type, message, tb = self.describe_failure(info, status, payload)
                self.dead_letter(cmd, error_type, message, tb)
            self.finish(cmd, status, payload, run_s)
            return
        self.stats_counts["retried"] += 1
        self.event("queue.command.retry", id=cmd.sub.id, lane=self.cfg.lanes[cmd.sub.lane].name,
                   attempt=cmd.attempts, delay=delay, kind=info.kind, error=info.message[:200])
        cmd.state = BACKOFF
        cmd.worker = -1
        heapq.heappush(self.timers, (now + delay, cmd.sub.id))

    def describe_failure(self, info: FailureInfo, status: int, payload: bytes) -> tuple[str, str, str]:
        """(error type, message, traceback text) of a failed attempt, for dead letters."""
        if status == m.ERROR:
            err = msgspec.msgpack.decode(payload, type=m.ErrorInfo)
            return err.error, err.message, ""
        import pickle

        try:
            _exc, tb = pickle.loads(payload)
        except Exception:
            tb = ""
        return (info.exc_types[0] if info.exc_types else "Exception"), info.message, tb

    def run_timers(self, now: float) -> None:
        while self.breaker_timers and self.breaker_timers[0][0] <= now:
            _, lane = heapq.heappop(self.breaker_timers)
            breaker = self.breakers[lane]
            if breaker is not None and breaker.allows(now):  # half-open: let work probe the lane
                self.sched.resume(lane)
        while self.timers and self.timers[0][0] <= now:
            _, cid = heapq.heappop(self.timers)
            cmd = self.commands.get(cid)
            if cmd is None or cmd.state != BACKOFF:
                continue
            sub = cmd.sub
            item = SchedItem(sub.id, sub.lane, sub.priority, now, sub.deadline, sub.cost, sub.tenant, cmd.item.partition)
            item.ref = cmd
            cmd.item = item
            cmd.state = PENDING
            try:
                self.sched.enqueue(item, now)
            except Exception as exc:
                self.finish_error(cmd, type(exc).__name__, str(exc))
        for item in self.sched.expire(now):
            cmd = item.ref
            self.finish_error(cmd, "DeadlineExceeded", f"command {cmd.sub.id} was not started before its deadline")

    # ---- dispatch ----------------------------------------------------------------------------
    def dispatch(self, now: float) -> bool:
        depth = max(1, min(self.max_prefetch, int(PREFETCH_BUDGET_S / max(self.ewma, 1e-7))))
        free = [0 if (w.dead or w.retiring) else max(0, depth - len(w.assigned)) for w in self.workers]
        if not any(free) or not self.sched.pending():
            return False
        picked = self.sched.pick(now, free)
        if not picked:
            return False
        touched: set[int] = set()
        started: list[tuple[Any, ...]] | None = [] if self.cfg.emit_started else None
        for item, widx in picked:
            cmd: Command = item.ref
            slot = self.workers[widx]
            cmd.state = ASSIGNED
            cmd.worker = widx
            cmd.attempts += 1
            if self.journal is not None:
                self.journal.dispatched(cmd.sub.id, cmd.attempts)
            cmd.dispatched_at = now
            sub = cmd.sub
            data = self.enc.encode(m.Run(sub.id, sub.fn, sub.payload, sub.chunk, cmd.attempts))
            slot.assigned[sub.id] = cmd
            self.put_worker(slot, data)
            touched.add(widx)
            if started is not None:
                started.append(
                    (sub.id, self.cfg.lanes[sub.lane].name, slot.pid, cmd.attempts, sub.correlation_id)
                )
        if started:  # one record per dispatch turn; the caller's hub expands it into one event each
            self.event("queue.command.started", batch=started)
        self.gauges_dirty = True
        for widx in touched:
            slot = self.workers[widx]
            slot.writer.publish()
            fence()
            slot.wake()
        return True

    def put_worker(self, slot: WorkerSlot, data: bytes) -> None:
        while not slot.writer.put(0, data):
            # The ring holds far more than MAX_PREFETCH commands; only giant payloads get here.
            slot.writer.publish()
            fence()
            slot.wake()
            time.sleep(0.0001)
            if not slot.process.is_alive():
                raise _WorkerGone(slot)

    def send_worker(self, slot: WorkerSlot, data: bytes) -> None:
        try:
            self.put_worker(slot, data)
        except _WorkerGone:
            return
        slot.writer.publish()
        fence()
        slot.wake()

    def flush_outbox(self) -> bool:
        if not self.pending_out:
            return False
        out = self.outbox
        pending = self.pending_out
        i = 0
        while i < len(pending):
            if out.put(0, pending[i]):
                i += 1
                continue
            out.publish()
            self.wake_caller()
            time.sleep(0.0001)  # the caller's result thread is behind
            if self.parent_dead():
                break
        out.publish()
        self.pending_out = []
        self.wake_caller()
        return True

    def wake_caller(self) -> None:
        fence()
        if self.outbox.consumer_waiting:
            self.outbox.clear_waiting()
            ring_fd(self.caller_bell_w)

    # ---- workers -----------------------------------------------------------------------------
    def check_timeouts(self, now: float) -> float | None:
        """Kill workers whose running command is over time; the next time to look again."""
        nxt = None
        now_ns = time.monotonic_ns()
        for slot in self.workers:
            if slot.dead or not slot.assigned or slot.kill_reason:
                continue
            cid, start_ns = slot.running()
            cmd = slot.assigned.get(cid) if cid else None
            if cmd is not None and start_ns:
                limit = cmd.sub.timeout or self.lane_timeout[cmd.sub.lane]
                if limit is not None:
                    due = start_ns / 1e9 + limit
                    if now_ns / 1e9 >= due:
                        slot.kill_reason = ("timeout", cid)
                        logger.debug("command {} timed out after {}s on worker {}", cid, limit, slot.pid)
                        slot.kill_tree()
                        continue
                    nxt = due if nxt is None else min(nxt, due)
            if any((c.sub.timeout or self.lane_timeout[c.sub.lane]) for c in slot.assigned.values()):
                poll = now + TIMEOUT_POLL_S
                nxt = poll if nxt is None else min(nxt, poll)
        return nxt

    def reap(self, now: float, dead_fds: set[int] | None = None) -> None:
        for i, slot in enumerate(self.workers):
            if slot.dead:
                continue
            if dead_fds is not None and slot.sentinel not in dead_fds:
                continue
            if slot.process.exitcode is None and not (dead_fds and slot.sentinel in dead_fds):
                continue
            slot.process.join(1.0)
            if slot.process.exitcode is None:
                continue
            self.worker_exited(slot, now)
            if not (self.shutting_down and not self.commands) and self.broken is None:
                self.workers[i] = self.sup.start(i)
                self.event("worker.started", pid=self.workers[i].pid, index=i)

    def worker_exited(self, slot: WorkerSlot, now: float) -> None:
        """The one crash transition: blame the running command, re-queue the unstarted ones."""
        records = slot.reader.read_all()  # outcomes written before it died are real
        if records:
            self.process_worker_records(slot, records, now)
        cid, _ = slot.running()
        exitcode, signame = describe_exit(slot.process.exitcode)
        planned = slot.retiring and slot.kill_reason is None
        if slot.kill_reason is not None:
            kind, cid = slot.kill_reason
        else:
            kind = "retired" if planned else "crashed"
        if kind == "crashed":
            self.stats_counts["crashes"] += 1
            self.event("worker.crashed", pid=slot.pid, index=slot.index, exitcode=exitcode,
                       signal=signame, command_id=cid or None)
        elif kind == "retired":
            self.stats_counts["recycled"] += 1
            self.event("worker.recycled", pid=slot.pid, index=slot.index)
        else:
            self.event("worker.exited", pid=slot.pid, index=slot.index, reason=kind)
        logger.debug("worker {} pid={} exited ({}) code={} signal={}", slot.index, slot.pid, kind, exitcode, signame)
        for cmd in list(slot.assigned.values()):
            if cmd.sub.id == cid and kind != "retired" and kind != "terminate":
                if kind == "timeout":
                    self.stats_counts["timeouts"] += 1
                    self.event("queue.command.timeout", id=cid, lane=self.cfg.lanes[cmd.sub.lane].name,
                               pid=slot.pid, attempt=cmd.attempts)
                    limit = cmd.sub.timeout or self.lane_timeout[cmd.sub.lane]
                    payload = self.enc.encode(m.ErrorInfo(
                        "TaskTimeout", f"command {cid} ({cmd.sub.fn}) exceeded its timeout of {limit}s; "
                        f"worker pid {slot.pid} was killed", {"timeout": limit, "command_id": cid, "pid": slot.pid},
                    ))
                    self.failed(cmd, FailureInfo("timeout"), m.ERROR, payload, now)
                elif kind == "cancel":
                    self.sched.finished(cmd.item, now, False)
                    self.finish_error(cmd, "CancelledError", "cancelled while running; its worker was killed")
                else:
                    what = f"signal {signame}" if signame else f"exit code {exitcode}"
                    payload = self.enc.encode(m.ErrorInfo(
                        "WorkerCrashed",
                        f"worker pid {slot.pid} died ({what}) while running command {cid} ({cmd.sub.fn})",
                        {"pid": slot.pid, "exitcode": exitcode, "signal_name": signame, "command_id": cid},
                    ))
                    self.failed(cmd, FailureInfo("crashed", (), what), m.ERROR, payload, now)
            elif kind == "terminate":
                self.sched.finished(cmd.item, now, False)
                self.finish_error(cmd, "CancelledError", "pool terminated")
            else:
                # Never started: back to the queue, not a failed attempt.
                cmd.attempts -= 1
                cmd.state = PENDING
                cmd.worker = -1
                self.sched.requeue(cmd.item, now)
        slot.assigned.clear()
        self.sup.discard(slot)

    def parent_dead(self) -> bool:
        fd = self.parent_sentinel
        return fd is not None and bool(select.select([fd], [], [], 0)[0])

    # ---- the loop ----------------------------------------------------------------------------
    def refresh_poller(self) -> None:
        want = {self.bell_r} | {w.sentinel for w in self.workers if not w.dead and w.sentinel is not None}
        if self.parent_sentinel is not None:
            want.add(self.parent_sentinel)
        for fd in self._poll_fds - want:
            self.poller.unregister(fd)
        for fd in want - self._poll_fds:
            self.poller.register(fd, select.POLLIN)
        self._poll_fds = want

    def inputs_ready(self) -> bool:
        return self.intake.has_data() or any(w.reader.has_data() for w in self.workers if not w.dead)

    def run(self, startup: Connection) -> None:
        hello = m.Hello(m.PROTOCOL_VERSION, self.submit_ring.segment.name, self.result_ring.segment.name,
                        [w.pid for w in self.workers], *(self.journal.hello_fields() if self.journal else ()))
        startup.send_bytes(self.enc.encode(hello))
        startup.close()
        words = self.control.words
        last_busy = 0.0
        while True:
            now = time.monotonic()
            busy = self.handle_intake(now)
            busy |= self.handle_results(now)
            if self.timers or self.breaker_timers or busy:
                self.run_timers(now)
            if self.journal is not None:  # before dispatch: journaled before any worker runs it
                self.journal_commit()
            busy |= self.dispatch(now)
            if self.gauges_dirty and now - self.last_gauges >= self.cfg.gauges_interval:
                self.send_gauges(now)
            if now >= self.board.due:  # one comparison per turn; publishes ~2/s
                self.board.publish_snapshot(self.snapshot(), now)
            self.flush_outbox()
            if now - self._last_sentinel_check > SENTINEL_CHECK_S:
                self._last_sentinel_check = now
                if any(w.process.exitcode is not None for w in self.workers if not w.dead):
                    self.reap(now)
                if self.parent_dead():
                    return self.exit("caller process died")
            if self.broken is not None:
                return self.exit(self.broken, broken=True)
            if self.shutting_down and not self.commands:
                return self.exit("shutdown")
            if busy:
                last_busy = now
                continue
            if now - last_busy < SPIN_S:
                os.sched_yield()
                continue
            # Nothing moved: go to sleep (the handshake is in ipc/doorbell.py).
            wake_at = self.sched.next_wakeup(now)
            if self.timers:
                t = self.timers[0][0]
                wake_at = t if wake_at is None else min(wake_at, t)
            if self.gauges_dirty:
                t = self.last_gauges + self.cfg.gauges_interval
                wake_at = t if wake_at is None else min(wake_at, t)
            if self.breaker_timers:
                t = self.breaker_timers[0][0]
                wake_at = t if wake_at is None else min(wake_at, t)
            t_to = self.check_timeouts(now)
            if t_to is not None:
                wake_at = t_to if wake_at is None else min(wake_at, t_to)
            timeout = BACKSTOP_S if wake_at is None else max(0.0, min(BACKSTOP_S, wake_at - now))
            words[COORD_WAITING] = 1
            fence()
            if not self.inputs_ready():
                self.refresh_poller()
                events = self.poller.poll(timeout * 1000)
                dead = {fd for fd, _ in events if fd != self.bell_r}
                drain_fd(self.bell_r)
                words[COORD_WAITING] = 0
                if dead:
                    if self.parent_sentinel in dead:
                        return self.exit("caller process died")
                    self.reap(time.monotonic(), dead)
                self.run_timers(time.monotonic())
            words[COORD_WAITING] = 0

    def exit(self, reason: str, broken: bool = False) -> None:
        logger.debug("coordinator exiting: {}", reason)
        self.control.words[STATE] = 2 if broken else 1
        if broken:
            for cmd in list(self.commands.values()):
                self.finish_error(cmd, "BrokenPool", f"pool is broken: {reason}")
        for slot in self.workers:
            if not slot.dead:
                self.send_worker(slot, self.enc.encode(m.Stop(reason)))
        deadline = time.monotonic() + STOP_GRACE_S
        for slot in self.workers:
            if slot.dead:
                continue
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.exitcode is None:
                slot.kill_tree()
                slot.process.join(1.0)
            self.sup.discard(slot)
        if self.journal is not None:
            self.journal_commit()
            self.journal.close()
        self.pending_out.append(self.enc.encode(m.Bye(reason)))
        if not self.parent_dead():
            self.flush_outbox()


class _WorkerGone(Exception):
    def __init__(self, slot: WorkerSlot) -> None:
        self.slot = slot


def coordinator_main(
    cfg: CoordinatorConfig,
    startup: Connection,
    bell_r: Connection,
    bell_w: Connection,
    caller_bell_w: Connection,
    initializer: Any,
    initargs: tuple,
) -> None:
    """Process entry point. Whatever happens, every segment of the pool is gone at the end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the caller
    rfd, wfd, cfd = bell_r.fileno(), bell_w.fileno(), caller_bell_w.fileno()
    for fd in (rfd, wfd, cfd):
        os.set_blocking(fd, False)
    coord = None
    code = 0
    try:
        coord = Coordinator(cfg, rfd, wfd, cfd, initializer, initargs)
        coord.run(startup)
    except BaseException as exc:  # report, then fall through to cleanup: nothing may leak
        code = 1
        logger.exception("coordinator failed: {!r}", exc)
        import traceback

        # A dying coordinator always says why on stderr, even with library logging disabled.
        sys.stderr.write(f"lane_mp coordinator failed:\n{traceback.format_exc()}")
        try:
            startup.send_bytes(msgspec.msgpack.encode(m.Bye(f"coordinator failed: {exc!r}")))
        except (OSError, ValueError):
            pass
        if coord is not None:
            for slot in coord.workers:
                slot.kill_tree()
    finally:
        if coord is not None:
            for slot in coord.workers:
                if not slot.dead:
                    slot.kill_tree()
            close = getattr(coord.sup, "close", None)  # a backend's client (and cluster, if it made one)
            if close is not None:
                close()
        # Blocks in the caller's hands stay mapped there; unlinking only removes the names.
        sweep(f"lmp_{cfg.token}_")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
