"""Worker processes: spawn, watch, kill (whole process tree), respawn.

Each worker gets a fresh pair of rings (generation-numbered names) every time it is started:
a crash may leave a ring half-written, so a dead worker's rings are unlinked, never reused.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

import psutil
from loguru import logger

from ..ipc.doorbell import make_pipe, ring_fd
from ..ipc.ring import Ring, RingReader, RingWriter
from ..ipc.segments import sweep
from ..worker.main import WorkerSpec, worker_main

__all__ = ["WorkerSlot", "Supervisor", "describe_exit"]


def describe_exit(exitcode: int | None) -> tuple[int | None, str | None]:
    """(exit code, signal name) from multiprocessing's exitcode (negative = killed by signal)."""
    if exitcode is not None and exitcode < 0:
        try:
            return None, signal.Signals(-exitcode).name
        except ValueError:
            return None, f"signal {-exitcode}"
    return exitcode, None


class WorkerSlot:
    """The coordinator's view of one live worker process and its rings."""

    def __init__(self, index: int, generation: int, process: Any, cmd: Ring, result: Ring, bell_w: int) -> None:
        self.index = index
        self.generation = generation
        self.process = process
        self.pid: int = process.pid
        self.sentinel: int = process.sentinel
        self.cmd_ring = cmd
        self.writer = RingWriter(cmd)
        self.reader = RingReader(result)
        self.bell_w = bell_w
        self.assigned: dict[int, Any] = {}  # command id -> command, in dispatch order
        self.retiring = False  # said Retiring: its exit is planned
        self.kill_reason: tuple[str, int] | None = None  # ("timeout"|"cancel", command id)
        self.dead = False

    def running(self) -> tuple[int, int]:
        """(command id, start monotonic_ns) the worker reports, (0, 0) between commands."""
        return self.cmd_ring.get_words()

    def wake(self) -> None:
        if self.writer.consumer_waiting:
            self.writer.clear_waiting()
            ring_fd(self.bell_w)

    def kill_tree(self) -> None:
        """SIGKILL the worker and everything it started (a task may have forked helpers)."""
        try:
            proc = psutil.Process(self.pid)
            children = proc.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Supervisor:
    def __init__(
        self,
        ctx: BaseContext,
        token: str,
        control_name: str,
        coord_bell_w: int,
        ring_capacity: int,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        max_tasks: int | None,
        max_memory: int | None,
        max_payload: int | None = None,
    ) -> None:
        self.max_payload = max_payload
        self.ctx = ctx
        self.token = token
        self.control_name = control_name
        self.coord_bell_w = coord_bell_w
        self.ring_capacity = ring_capacity
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self._generation = 0

    def start(self, index: int) -> WorkerSlot:
        self._generation += 1
        gen = self._generation
        base = f"lmp_{self.token}_w{index}g{gen}"
        cmd = Ring.create(base + "c", self.ring_capacity)
        result = Ring.create(base + "r", self.ring_capacity)
        bell_r, bell_w = make_pipe()
        spec = WorkerSpec(
            index, self.control_name, cmd.segment.name, result.segment.name,
            f"lmp_{self.token}_b", -1, -1, self.max_tasks, self.max_memory, self.max_payload,
        )
        # Connections carry the fds across every start method (dup'd for spawn/forkserver).
        bell_conn = Connection(bell_r, writable=False)
        coord_conn = Connection(os.dup(self.coord_bell_w), readable=False)
        proc = self.ctx.Process(
            target=worker_main,
            args=(spec, bell_conn, coord_conn, self.initializer, self.initargs),
            name=f"lane_mp-worker-{index}",
            daemon=False,
        )
        try:
            proc.start()
        finally:
            bell_conn.close()  # the child has its own copy now
            coord_conn.close()
        slot = WorkerSlot(index, gen, proc, cmd, result, bell_w)
        logger.debug("worker {} started pid={} gen={}", index, slot.pid, gen)
        return slot

    def discard(self, slot: WorkerSlot) -> None:
        """After the process is gone: close and unlink its rings, sweep its result blocks."""
        slot.dead = True
        for ring in (slot.cmd_ring, slot.reader.ring):
            name = ring.segment.name
            ring.release()
            from ..ipc.segments import unlink_name

            unlink_name(name)
        os.close(slot.bell_w)
        sweep(f"lmp_{self.token}_b{slot.pid:x}_")
        try:
            slot.process.join(0)
            slot.process.close()
        except (ValueError, AssertionError):
            pass
