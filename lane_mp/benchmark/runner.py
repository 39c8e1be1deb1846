"""The runner: schedule workloads x libraries x repetitions, interleaved, each time-bounded.

Order: for each workload, repetition r runs every library once, lane_mp first on even r and
last on odd r (A B C, C B A, ...), so a slow drift of the shared machine's load does not favour
whoever always goes first. Each run happens in that library's bench server (``server.py``); a
run past its bound gets the server's whole process tree killed, is reported "hung: killed", and
the library's remaining repetitions of that workload are skipped (one hang is the finding).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from .workloads import WORKLOADS, Sizes

__all__ = ["Run", "ServerProcess", "plan", "run_bench", "segments_of"]

SERVER_START_BOUND_S = 60.0


@dataclass
class Run:
    """One workload, one library, one repetition: the raw material of the table."""

    workload: str
    library: str
    rep: int
    status: str = "ok"
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


def _package_root() -> str:
    import lane_mp

    return str(Path(lane_mp.__file__).resolve().parents[1])


def _kill_tree(pid: int) -> None:
    """SIGKILL a server and everything under it; the process group catches orphans whose
    parent died first (the server is started in its own session)."""
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        procs = []
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    psutil.wait_procs(procs, timeout=5)


def segments_of(pid: int) -> list[str]:
    """lane_mp segments created by pools whose caller was ``pid``.

    A pool's token is the caller's pid in hex followed by 6 random hex digits
    (``ipc.segments.new_token``), so a bare ``lmp_<pid hex>`` prefix would also match another
    process whose pid starts with the same digits (0x36 vs 0x369b): match the full shape.
    """
    from lane_mp.ipc.segments import list_segments

    shape = re.compile(rf"lmp_{pid:x}[0-9a-f]{{6}}_")
    return [n for n in list_segments(f"lmp_{pid:x}") if shape.match(n)]


def _sweep_segments(pid: int) -> list[str]:
    """Remove the lane_mp segments a killed server's pools left behind."""
    from lane_mp.ipc.segments import unlink_name

    left = segments_of(pid)
    for name in left:
        unlink_name(name)
    return left


class ServerProcess:
    """Parent-side handle of one library's bench server."""

    def __init__(self, library: str, workers: int, log_dir: str) -> None:
        self.library = library
        self.workers = workers
        self.log_path = os.path.join(log_dir, f"{library}.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._log: IO[bytes] | None = None

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc
        env = dict(os.environ)
        root = _package_root()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open as long as the server lives
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lane_mp.benchmark.server", self.library, str(self.workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            start_new_session=True,
        )
        self._buf = b""
        return self.proc

    def request(self, workload: str, sizes: Sizes, bound_s: float) -> dict[str, Any]:
        """Run one workload; on time-out or death, kill the tree and say what happened."""
        proc = self._ensure()
        assert proc.stdin is not None and proc.stdout is not None
        line = json.dumps({"workload": workload, "sizes": dataclasses.asdict(sizes)}) + "\n"
        try:
            proc.stdin.write(line.encode())
            proc.stdin.flush()
        except BrokenPipeError:
            return self._failed("crashed", f"server died at start: {self._tail()}")
        end = time.monotonic() + bound_s
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                return self._failed("hung", f"hung: killed after {bound_s:.0f} s")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return self._failed("crashed", f"bench server died: {self._tail()}")
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(raw)
        if reply.get("restart"):
            self.kill()
        return reply

    def _failed(self, status: str, note: str) -> dict[str, Any]:
        leaked = self.kill()
        problems = [f"segments left after kill (swept): {leaked}"] if leaked and self.library == "lane_mp" else []
        return {"status": status, "metrics": {}, "notes": [note], "problems": problems, "elapsed_s": 0.0}

    def _tail(self, n: int = 400) -> str:
        try:
            return Path(self.log_path).read_bytes()[-n:].decode(errors="replace").strip()
        except OSError:
            return ""

    def kill(self) -> list[str]:
        if self.proc is None:
            return []
        pid = self.proc.pid
        _kill_tree(pid)
        self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
        return _sweep_segments(pid)

    def close(self) -> None:
        """Polite end: EOF on stdin, then a bounded wait, then the kill."""
        if self.proc is None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(10)
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            pass
        self.kill()


def plan(workloads: Sequence[str], libraries: Sequence[str], reps: int) -> list[tuple[str, str, int]]:
    """(workload, library, rep) in run order: per workload, reps alternate library order;
    lane_mp-only workloads (L*) run once (they interleave their own A/B comparisons)."""
    order = []
    for w in workloads:
        if WORKLOADS[w].lane_mp_only:  # nothing to interleave with: one run
            order.append((w, "lane_mp", 0))
            continue
        for r in range(reps):
            libs = list(libraries) if r % 2 == 0 else list(reversed(libraries))
            order += [(w, lib, r) for lib in libs]
    return order


def run_bench(
    workloads: Sequence[str],
    libraries: Sequence[str],
    workers: int,
    sizes: Sizes,
    on_step: Callable[[str], None] | None = None,
    on_done: Callable[[Run], None] | None = None,
) -> list[Run]:
    """Run the plan; returns every Run (skipped ones included, with a note)."""
    runs: list[Run] = []
    hung: set[tuple[str, str]] = set()
    with tempfile.TemporaryDirectory(prefix="lane_mp_bench_") as log_dir:
        servers = {lib: ServerProcess(lib, workers, log_dir) for lib in libraries}
        try:
            for w, lib, rep in plan(workloads, libraries, sizes.reps):
                if on_step is not None:
                    on_step(f"{w} {lib} #{rep + 1}")
                run = Run(w, lib, rep)
                if (w, lib) in hung:
                    run.status = "skipped"
                    run.notes.append("skipped: hung in an earlier repetition")
                else:
                    reply = servers[lib].request(w, sizes, WORKLOADS[w].budget(sizes))
                    run.status = reply.get("status", "error")
                    run.metrics = reply.get("metrics", {})
                    run.notes = list(reply.get("notes", []))
                    run.problems = list(reply.get("problems", []))
                    run.elapsed_s = float(reply.get("elapsed_s", 0.0))
                    if run.status in ("hung", "crashed"):
                        hung.add((w, lib))
                runs.append(run)
                if on_done is not None:
                    on_done(run)
        except BaseException:  # Ctrl-C or a bug: stop now, never wait for running workloads
            for s in servers.values():
                s.kill()
            raise
        for s in servers.values():
            s.close()  # all idle now: they exit at EOF
    return runs
