"""``python -m lane_mp top``: a live terminal view of running pools, from another process.

Read-only by construction: every number comes from a pool's stats board (``board.py``), which
the coordinator refreshes about twice a second, plus psutil for CPU and memory of the pool's
processes. Nothing here sends a request to the pool, so watching cannot slow it down.

- Finding pools: every ``/dev/shm/lmp_<token>_stats`` whose coordinator is alive. ``TARGET`` is a
  token (or a unique prefix of one) or a pid (the pool owner's or the coordinator's).
- On a terminal: the view redraws in place every ``--interval`` s; ``q`` (or Ctrl-C) quits. stdin
  is put in cbreak mode and read without blocking (``termios``/``select``), and restored on exit.
- Not on a terminal (a pipe, a test): frames are printed one after another; ``--once`` prints one
  frame and exits, ``-n N`` prints N.

``render()`` is a pure function of the board documents and the process samples, so the layout is
tested without a terminal.
"""

from __future__ import annotations

import math
import os
import select
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

from .board import CALLER, COORDINATOR, BoardBusy, StatsBoard, list_boards

__all__ = ["top", "find_pools", "select_pool", "PoolRef", "Sampler", "render"]

# psutil's cpu_percent compares against the previous call: one frame needs two samples this far
# apart (shorter is noisier; longer delays `--once`).
CPU_SAMPLE_S = 0.2
DEFAULT_INTERVAL_S = 1.0
_MIB = 1024 * 1024


@dataclass(frozen=True)
class PoolRef:
    token: str
    coordinator_pid: int
    caller_pid: int
    workers: int


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find_pools() -> list[PoolRef]:
    """Running pools on this machine (boards whose coordinator is alive), oldest token first."""
    out = []
    for token in list_boards():
        try:
            board = StatsBoard.attach(token)
        except (FileNotFoundError, PermissionError, ValueError):
            continue
        try:
            doc = board.read(COORDINATOR)
        except BoardBusy:
            doc = None
        finally:
            board.close()
        if not doc or "coordinator_pid" not in doc or not _alive(doc["coordinator_pid"]):
            continue  # not published yet, or left behind by a killed pool
        out.append(PoolRef(token, doc["coordinator_pid"], doc["caller_pid"], len(doc.get("workers", []))))
    return out


def select_pool(target: str | None, pools: list[PoolRef] | None = None) -> PoolRef:
    """The pool ``target`` names (token, token prefix, or pid); the only pool if None.

    Raises click.ClickException with the list of candidates when it is missing or ambiguous.
    """
    pools = find_pools() if pools is None else pools
    if target is None:
        matches = pools
    elif target.isdigit():
        pid = int(target)
        matches = [p for p in pools if pid in (p.caller_pid, p.coordinator_pid)]
    else:
        matches = [p for p in pools if p.token == target] or [p for p in pools if p.token.startswith(target)]
    if len(matches) == 1:
        return matches[0]
    listing = "\n".join(_describe(p) for p in pools) or "  (none)"
    if not matches:
        what = "no running lane_mp pool" if target is None else f"no running lane_mp pool matches {target!r}"
        raise click.ClickException(f"{what}; running pools:\n{listing}")
    raise click.ClickException(f"{len(matches)} pools match; name one (token or pid):\n{listing}")


def _describe(p: PoolRef) -> str:
    return f"  {p.token}  owner pid {p.caller_pid}  coordinator pid {p.coordinator_pid}  workers {p.workers}"


@dataclass
class ProcSample:
    role: str  # "coord" or the worker index
    pid: int
    cpu: float  # percent of one core since the previous sample
    rss: int  # bytes; -1 when the process is gone
    assigned: int | None = None
    generation: int | None = None


@dataclass
class Sampler:
    """Reads one pool's board and samples its processes; keeps psutil handles between frames."""

    token: str
    board: StatsBoard = field(init=False)
    _procs: dict[int, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.board = StatsBoard.attach(self.token)

    def _proc(self, pid: int) -> Any:
        import psutil

        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
            proc.cpu_percent(None)  # prime: the next call reports usage since now
        return proc

    def prime(self) -> None:
        """Start CPU accounting for every process of the pool (the next sample is meaningful)."""
        doc = self.board.read(COORDINATOR) or {}
        for pid in [doc.get("coordinator_pid"), *(w["pid"] for w in doc.get("workers", []))]:
            if pid:
                self._sample_one("", pid)

    def _sample_one(self, role: str, pid: int) -> ProcSample:
        import psutil

        try:
            proc = self._proc(pid)
            with proc.oneshot():
                return ProcSample(role, pid, proc.cpu_percent(None), proc.memory_info().rss)
        except psutil.Error:
            self._procs.pop(pid, None)
            return ProcSample(role, pid, math.nan, -1)

    def sample(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[ProcSample]]:
        """(coordinator document, caller document, process samples)."""
        doc = self.board.read(COORDINATOR)
        try:
            caller = self.board.read(CALLER)
        except BoardBusy:
            caller = None
        procs: list[ProcSample] = []
        if doc:
            procs.append(self._sample_one("coord", doc["coordinator_pid"]))
            live = {doc["coordinator_pid"]}
            for w in doc.get("workers", []):
                s = self._sample_one(str(w["index"]), w["pid"])
                s.assigned, s.generation = w.get("assigned"), w.get("generation")
                procs.append(s)
                live.add(w["pid"])
            for pid in set(self._procs) - live:  # replaced workers
                del self._procs[pid]
        return doc, caller, procs

    def alive(self) -> bool:
        doc = self.board.read(COORDINATOR)
        return doc is not None and "coordinator_pid" in doc and _alive(doc["coordinator_pid"])

    def close(self) -> None:
        self.board.close()


def _ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def render(
    doc: dict[str, Any] | None, caller: dict[str, Any] | None, procs: list[ProcSample], now: float | None = None
) -> str:
    """One frame of text (no terminal control codes)."""
    if not doc:
        return "lane_mp top: waiting for the pool's first snapshot...\n"
    now = time.time() if now is None else now
    age = max(0.0, now - doc.get("published_at", now))
    title = (
        f"lane_mp top - pool {doc.get('token', '?')}  owner pid {doc.get('caller_pid', '?')}  "
        f"coordinator pid {doc.get('coordinator_pid', '?')}  updated {age:.1f}s ago"
    )
    totals = "  ".join(
        f"{label} {doc.get(key, 0)}"
        for label, key in (
            ("in flight", "commands"), ("backoff", "backoff"), ("completed", "completed"),
            ("failed", "failed"), ("retried", "retried"), ("timeouts", "timeouts"),
            ("crashes", "crashes"), ("dead letters", "dead_lettered"),
        )
    )
    lines = [title, totals, ""]
    lat = (caller or {}).get("lanes", {})
    head = (f"{'LANE':<14}{'PRI':>4}{'PENDING':>9}{'ACTIVE':>8}{'COMPLETED':>11}{'FAILED':>8}"
            f"{'RATE/s':>10}{'P50 ms':>9}{'P99 ms':>9}")
    lines.append(head)
    for lane in doc.get("lanes", []):
        p = lat.get(lane["name"])
        name = lane["name"] + (" (paused)" if lane.get("paused") else "")
        lines.append(
            f"{name[:14]:<14}{lane['priority']:>4}{lane['pending']:>9}{lane['active']:>8}"
            f"{lane['completed']:>11}{lane['failed']:>8}{lane.get('rate', 0.0):>10.1f}"
            f"{_ms(p[0] if p else None):>9}{_ms(p[1] if p else None):>9}"
        )
    if caller is None:
        lines.append("(latency percentiles need LanePool(metrics=QueueMetrics.local()))")
    lines += ["", f"{'PROCESS':<9}{'PID':>8}{'CPU%':>8}{'RSS MiB':>10}{'ASSIGNED':>10}{'GEN':>6}"]
    for s in procs:
        role = "coord" if s.role == "coord" else f"worker {s.role}"
        cpu = "-" if math.isnan(s.cpu) else f"{s.cpu:.1f}"
        rss = "gone" if s.rss < 0 else f"{s.rss / _MIB:.1f}"
        assigned = "" if s.assigned is None else str(s.assigned)
        gen = "" if s.generation is None else str(s.generation)
        lines.append(f"{role:<9}{s.pid:>8}{cpu:>8}{rss:>10}{assigned:>10}{gen:>6}")
    if "error" in doc:
        lines.append(f"board error: {doc['error']}")
    return "\n".join(lines) + "\n"


def _live(sampler: Sampler, interval: float, out: TextIO, fd: int) -> None:
    """Redraw in place until q, Ctrl-C or the pool exits (stdin must be a terminal)."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    out.write("\x1b[?1049h\x1b[?25l")  # alternate screen, hide the cursor
    try:
        tty.setcbreak(fd)
        while True:
            frame = render(*sampler.sample())
            footer = "q quits" if sampler.alive() else "the pool has exited; q quits"
            # Home, each line cleared to its end, then the rest of the screen cleared.
            out.write("\x1b[H" + frame.replace("\n", "\x1b[K\n") + "\n" + footer + "\x1b[K\x1b[J")
            out.flush()
            ready, _, _ = select.select([fd], [], [], interval)
            if ready and b"q" in os.read(fd, 64).lower():
                return
    except KeyboardInterrupt:
        return
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()


@click.command()
@click.argument("target", required=False)
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("-n", "--iterations", type=click.IntRange(1), default=None,
              help="Print this many frames, then exit (default: until q, Ctrl-C or the pool exits).")
@click.option("-i", "--interval", type=click.FloatRange(0.1), default=DEFAULT_INTERVAL_S, show_default=True,
              help="Seconds between frames.")
@click.option("--list", "list_only", is_flag=True, help="List the running pools and exit.")
def top(target: str | None, once: bool, iterations: int | None, interval: float, list_only: bool) -> None:
    """Watch a running pool: lanes, rates, latency, workers' CPU and memory.

    TARGET is a pool token (or a prefix of one) or a pid (the pool owner's or the coordinator's);
    it may be left out when only one pool runs. Press q to quit.
    """
    if list_only:
        pools = find_pools()
        click.echo("\n".join(_describe(p) for p in pools) if pools else "no running lane_mp pool")
        return
    ref = select_pool(target)
    try:
        sampler = Sampler(ref.token)
    except FileNotFoundError:
        raise click.ClickException(f"pool {ref.token} has just exited") from None
    try:
        sampler.prime()
        if once:
            iterations = 1
        interactive = iterations is None and sys.stdin.isatty() and sys.stdout.isatty()
        if interactive:
            _live(sampler, interval, sys.stdout, sys.stdin.fileno())
            return
        time.sleep(CPU_SAMPLE_S)  # so the first frame's CPU% means something
        shown = 0
        while True:
            click.echo(render(*sampler.sample()), nl=False)
            shown += 1
            if (iterations is not None and shown >= iterations) or not sampler.alive():
                return
            click.echo()
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        sampler.close()
