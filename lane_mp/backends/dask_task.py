"""The task a Dask worker runs for one lane_mp command (worker side of the Dask backend).

It imports only ``protocol/``, ``ipc/`` and ``worker/`` (never the coordinator): the Dask worker
needs lane_mp installed, and the user's functions importable by name, exactly like a local
worker. The command runs through the same :class:`~lane_mp.worker.execute.CommandRunner` as on a
local worker, so a function, its arguments, its result and its exceptions behave the same
everywhere. There are no shared-memory blocks on a remote machine: payloads travel inline, and a
result larger than ``max_payload`` fails with ``PayloadTooLarge`` (as data, not as a crash).
"""

from __future__ import annotations

import threading
from typing import Any

import msgspec

from ..ipc.blocks import BlockCache
from ..protocol import messages as m
from ..protocol.codec import PayloadCodec
from ..worker.execute import CommandRunner

__all__ = ["run_encoded", "processing_on", "kill_worker_process"]

_run_dec = msgspec.msgpack.Decoder(m.Run)
_local = threading.local()  # a Dask worker may run several tasks at once, one per thread


def _runner(max_payload: int | None) -> tuple[CommandRunner, msgspec.msgpack.Encoder]:
    """One runner (codec, function cache) and encoder per worker thread and payload limit."""
    cache: dict[int | None, tuple[CommandRunner, msgspec.msgpack.Encoder]] | None
    cache = getattr(_local, "runners", None)
    if cache is None:
        cache = _local.runners = {}
    found = cache.get(max_payload)
    if found is None:
        codec = PayloadCodec(None, BlockCache(readonly=True), max_payload=max_payload)
        found = cache[max_payload] = (CommandRunner(codec), msgspec.msgpack.Encoder())
    return found


def run_encoded(run_bytes: bytes, max_payload: int | None = None) -> bytes:
    """Run one encoded ``m.Run``; return the encoded ``m.Done``.

    Never raises for anything the command does (CommandRunner turns every failure into a
    ``Done``); it raises only if ``run_bytes`` is not a Run of this protocol version, which the
    coordinator reports as a failed command.
    """
    runner, enc = _runner(max_payload)
    done = runner.run(_run_dec.decode(run_bytes))
    return enc.encode(done)


# ---- run inside the cluster by the coordinator's ops thread (backends/dask.py) ---------------
def processing_on(key: str, dask_scheduler: Any = None) -> tuple[str, int] | None:
    """On the scheduler: (address, pid) of the worker running task ``key``, None if none is."""
    ts = dask_scheduler.tasks.get(key) if dask_scheduler is not None else None
    ws = getattr(ts, "processing_on", None)
    return None if ws is None else (ws.address, ws.pid)


def kill_worker_process(dask_worker: Any = None) -> int:
    """On a nanny: SIGKILL its worker process and everything it started (like a local timeout
    kills a worker's tree); the nanny notices and starts a fresh worker. Returns the pid."""
    import psutil

    pid = dask_worker.process.process.pid  # Nanny -> WorkerProcess -> AsyncProcess
    try:
        victims = [*psutil.Process(pid).children(recursive=True), psutil.Process(pid)]
    except psutil.Error:
        return pid
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return pid
