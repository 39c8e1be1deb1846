"""The worker process: read commands from its ring, run them, write outcomes to its ring.

It imports only ``protocol/`` and ``ipc/`` (and the user's modules, by import path). It owns
nothing but the result blocks it writes (named with its pid, swept by the coordinator if it
dies). It tells the coordinator which command it is running through two words of its command
ring (id, start time), so a crash or timeout blames exactly that command and commands queued
behind it are re-queued, not failed.

Life cycle: start -> initializer (failure: ``InitFailed`` and exit 3) -> loop -> ``Retiring``
(planned exit: stop requested, max_tasks_per_child, max_memory_per_child) -> exit 0. If the
coordinator dies, the kernel kills the worker (PR_SET_PDEATHSIG) even inside a hung task.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..ipc.blocks import BlockCache, BlockPool
from ..ipc.control import COORD_WAITING, Control
from ..ipc.doorbell import BACKSTOP_S, drain_fd, fence, ring_if_waiting
from ..ipc.ring import Ring, RingReader, RingWriter
from ..protocol import messages as m
from ..protocol.codec import PayloadCodec
from .execute import CommandRunner

# A worker that just finished work polls its ring this long before sleeping: the next command
# usually arrives within a few µs while work flows, and a sleep/wake costs ~30 µs each way.
SPIN_S = float(os.environ.get("LANE_MP_WORKER_SPIN_US", "50")) / 1e6
MEMORY_CHECK_EVERY = 16  # tasks between RSS checks when max_memory_per_child is set

__all__ = ["WorkerSpec", "worker_main"]


class WorkerSpec(msgspec.Struct, frozen=True):
    index: int
    control: str
    cmd_ring: str
    result_ring: str
    block_prefix: str  # lmp_<token>_b ; the worker appends its pid
    bell_fd: int  # read end of this worker's doorbell
    coord_bell_fd: int  # write end of the coordinator's doorbell
    max_tasks: int | None = None
    max_memory: int | None = None  # bytes of RSS
    max_payload: int | None = None  # bytes; larger results fail with PayloadTooLarge


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.control = Control.attach(spec.control)
        self.cmd_ring = Ring.attach(spec.cmd_ring)
        self.reader = RingReader(self.cmd_ring)
        self.writer = RingWriter(Ring.attach(spec.result_ring))
        self.codec = PayloadCodec(
            BlockPool(f"{spec.block_prefix}{os.getpid():x}_"), BlockCache(readonly=True),
            max_payload=spec.max_payload,
        )
        self.enc = msgspec.msgpack.Encoder()
        self.dec = msgspec.msgpack.Decoder(m.CoordToWorker)
        self.runner = CommandRunner(self.codec)
        self.tasks = 0
        self.parent_fd = _parent_sentinel()

    # ---- output ------------------------------------------------------------------------------
    def send(self, msg: Any) -> None:
        data = self.enc.encode(msg)
        while not self.writer.put(0, data):
            self.writer.publish()
            self.wake_coordinator()
            time.sleep(0.0002)  # the coordinator is behind; it drains this ring every turn
            self.check_parent()
        self.writer.publish()
        self.wake_coordinator()

    def wake_coordinator(self) -> None:
        ring_if_waiting(self.control.words, COORD_WAITING, self.spec.coord_bell_fd)

    def check_parent(self) -> None:
        if self.parent_fd is not None and select.select([self.parent_fd], [], [], 0)[0]:
            os._exit(0)

    def retire(self, reason: str) -> None:
        self.send(m.Retiring(reason, self.tasks))
        self.codec.blocks.close() if self.codec.blocks else None
        os._exit(0)

    def loop(self) -> None:
        reader, ring, dec = self.reader, self.cmd_ring, self.dec
        poller = select.poll()
        poller.register(self.spec.bell_fd, select.POLLIN)
        if self.parent_fd is not None:
            poller.register(self.parent_fd, select.POLLIN)
        spin_until = 0.0
        while True:
            records = reader.read_all()
            if not records:
                now = time.monotonic()
                if now < spin_until:
                    os.sched_yield()
                    continue
                reader.set_waiting(True)
                fence()
                if not reader.has_data():
                    events = poller.poll(BACKSTOP_S * 1000)
                    for fd, _ in events:
                        if fd == self.parent_fd:
                            os._exit(0)
                    drain_fd(self.spec.bell_fd)
                reader.set_waiting(False)
                continue
            for _tag, data in records:
                msg = dec.decode(data)
                if type(msg) is m.Run:
                    ring.set_words(msg.id, time.monotonic_ns())
                    done = self.runner.run(msg)
                    ring.set_words(0, 0)
                    self.send(done)
                    self.tasks += 1
                    if self.spec.max_tasks and self.tasks >= self.spec.max_tasks:
                        self.retire("max_tasks_per_child")
                    if (
                        self.spec.max_memory
                        and self.tasks % MEMORY_CHECK_EVERY == 0
                        and _rss() > self.spec.max_memory
                    ):
                        self.retire("max_memory_per_child")
                elif type(msg) is m.Release:
                    if self.codec.blocks is not None:
                        for name in msg.blocks:
                            self.codec.blocks.give_back(name)
                elif type(msg) is m.Stop:
                    self.retire(msg.reason)
            spin_until = time.monotonic() + SPIN_S


def _parent_sentinel() -> int | None:
    import multiprocessing

    parent = multiprocessing.parent_process()
    return parent.sentinel if parent is not None else None


def worker_main(
    spec: WorkerSpec,
    bell: Any,
    coord_bell: Any,
    initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
) -> None:
    """Process entry point. ``bell``/``coord_bell`` are Connections carrying the doorbell fds
    (so they survive spawn/forkserver); the spec's fd fields are filled from them here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    _die_with_parent()
    spec = msgspec.structs.replace(spec, bell_fd=bell.fileno(), coord_bell_fd=coord_bell.fileno())
    os.set_blocking(spec.bell_fd, False)
    os.set_blocking(spec.coord_bell_fd, False)
    worker = _Worker(spec)
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            worker.send(m.InitFailed(f"initializer {initializer!r} raised {exc!r}"))
            os._exit(3)
    worker.loop()
