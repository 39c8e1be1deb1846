"""The bench server: one subprocess per library, running workloads on request.

Why a subprocess: a peer that hangs (a lost task in multiprocessing.Pool, a worker stuck in a
task with no timeout) must never hang the bench. The runner talks to this process over a pipe
and, past a workload's time bound, kills its whole process tree and starts a fresh one. The same
isolation keeps one library's leftovers (threads, forkservers, signal handlers) out of the next.

Protocol: one JSON request per line on stdin (``{"workload": "W1", "sizes": {...}}``), one JSON
reply per line on the original stdout. File descriptor 1 is pointed at stderr at start-up so a
library or task that prints cannot corrupt the replies.

    python -m lane_mp.benchmark.server LIBRARY WORKERS
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

import psutil

from .adapters import make_adapter
from .workloads import WORKLOADS, Outcome, Sizes

__all__ = ["leftovers", "serve"]

LEAK_GRACE_S = 5.0
# multiprocessing helpers that legitimately outlive a pool (restarted on demand)
_HELPERS = ("resource_tracker", "forkserver", "semaphore_tracker")


def leftovers(grace_s: float = LEAK_GRACE_S) -> tuple[list[int], list[str]]:
    """Child processes (helpers excluded) and this process's ``lmp_`` segments that are still
    there ``grace_s`` after a pool was closed: what a clean shutdown must not leave behind."""
    from .runner import segments_of

    end = time.monotonic() + grace_s
    while True:
        kids = []
        for p in psutil.Process().children(recursive=True):
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                if any(h in " ".join(p.cmdline()) for h in _HELPERS):
                    continue
            except psutil.Error:
                continue
            kids.append(p.pid)
        segs = segments_of(os.getpid())
        if (not kids and not segs) or time.monotonic() > end:
            return kids, segs
        time.sleep(0.05)


def _run(library: str, workers: int, request: dict[str, Any]) -> dict[str, Any]:
    wl = WORKLOADS[request["workload"]]
    sizes = Sizes(**request["sizes"])
    ad = make_adapter(library, workers)
    t0 = time.perf_counter()
    try:
        out = wl.load()(ad, sizes)
    except Exception as exc:  # noqa: BLE001 - a workload's failure is a result, not a crash of the bench
        out = Outcome(status="error", notes=[f"{type(exc).__name__}: {exc}"])
        out.dirty = True
        traceback.print_exc()
    reply = out.to_json()
    reply["elapsed_s"] = time.perf_counter() - t0
    if library == "lane_mp" and not out.dirty:
        kids, segs = leftovers()
        if kids or segs:
            reply.setdefault("problems", []).append(
                f"after shutdown: processes {kids} and segments {segs} were still there"
            )
    # a dirty run may have left processes behind: the runner restarts this server to be sure
    reply["restart"] = out.dirty
    return reply


def serve(library: str, workers: int) -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to the log, not into the replies
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = _run(library, workers, json.loads(line))
        # after a "restart" reply the runner kills this whole process tree while it still
        # stands (so nothing is orphaned) and starts a fresh server
        replies.write(json.dumps(reply, default=str) + "\n")


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
