"""Bench: lane_mp.topic against multiprocessing.Queue, in one run (not a timed test).

    python bench/bench_topic.py [--n 300000] [--big 1500] [--repeat 3]

Every case runs publisher and consumers in separate processes (fork); the clock starts when the
publisher starts and stops when the last consumer has the last message (CLOCK_MONOTONIC is
system-wide on Linux, so times compare across processes).

Cases:
* 64 B, 1 -> 1: ``mp.Queue`` put/get; topic ``publish`` one at a time; topic ``publish_many``
  (batches of 256). Consumers use ``read_batch`` (``mp.Queue`` has only ``get``).
* 64 B, 1 -> 3 fan-out: every consumer reads every message (a Queue cannot fan out; n/a).
* 1 MiB messages, 1 -> 1: GB/s with copying reads and with ``copy=False`` views.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import lane_mp  # noqa: F401
except ImportError:  # not installed: benchmark the checkout this file lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lane_mp.topic import Topic

CTX = mp.get_context("fork")
SMALL = b"x" * 64
BATCH = 256


def _topic_name(tag: str) -> str:
    return f"{os.getpid():x}bench{tag}"


# -- mp.Queue -------------------------------------------------------------------------------


def _q_pub(q: Any, n: int, go: Any, out: Any) -> None:
    go.wait()
    out.put(("start", time.monotonic()))
    for _ in range(n):
        q.put(SMALL)


def _q_con(q: Any, n: int, ready: Any, out: Any) -> None:
    ready.set()
    for _ in range(n):
        q.get()
    out.put(("end", time.monotonic()))


def bench_queue(n: int) -> float:
    q, out, go, ready = CTX.Queue(), CTX.Queue(), CTX.Event(), CTX.Event()
    procs = [
        CTX.Process(target=_q_con, args=(q, n, ready, out)),
        CTX.Process(target=_q_pub, args=(q, n, go, out)),
    ]
    return _run(procs, ready_events=[ready], go=go, out=out, consumers=1, n=n)


# -- topic ----------------------------------------------------------------------------------


def _t_pub(name: str, n: int, size: int, batched: bool, go: Any, out: Any) -> None:
    topic = Topic.attach(name)
    pub = topic.publisher("bench")
    payload = b"x" * size
    go.wait()
    out.put(("start", time.monotonic()))
    if batched:
        chunk = [payload] * BATCH
        for i in range(0, n, BATCH):
            pub.publish_many(chunk if n - i >= BATCH else chunk[: n - i])
    else:
        publish = pub.publish
        for _ in range(n):
            publish(payload)
    topic.close()


def _t_con(name: str, cid: str, n: int, copy: bool, ready: Any, out: Any) -> None:
    topic = Topic.attach(name)
    con = topic.consumer(cid, start="earliest")
    ready.set()
    got = 0
    total = 0
    while got < n:
        batch = con.read_batch(BATCH, timeout=10.0, copy=copy)
        if not batch:
            raise SystemExit(f"consumer {cid} timed out at {got}/{n}")
        for m in batch:
            total += len(m.data)
        got += len(batch)
    out.put(("end", time.monotonic()))
    del batch
    con.close()
    topic.close()


def bench_topic(n: int, *, size: int = 64, consumers: int = 1, batched: bool, copy: bool = True) -> float:
    name = _topic_name(f"{size}{consumers}{int(batched)}{int(copy)}")
    capacity = 8 << 20 if size < 4096 else 64 << 20
    topic = Topic.create(name, capacity_bytes=capacity, max_message_bytes=max(size, 1024), policy="block")
    try:
        out, go = CTX.Queue(), CTX.Event()
        readies = [CTX.Event() for _ in range(consumers)]
        procs = [
            CTX.Process(target=_t_con, args=(name, f"c{i}", n, copy, readies[i], out))
            for i in range(consumers)
        ]
        procs.append(CTX.Process(target=_t_pub, args=(name, n, size, batched, go, out)))
        return _run(procs, ready_events=readies, go=go, out=out, consumers=consumers, n=n)
    finally:
        topic.close()


def _run(procs: list[Any], *, ready_events: list[Any], go: Any, out: Any, consumers: int, n: int) -> float:
    for p in procs:
        p.start()
    try:
        for ev in ready_events:
            if not ev.wait(30):
                raise RuntimeError("consumer did not start")
        go.set()
        start, ends = 0.0, []
        deadline = time.monotonic() + 300
        while len(ends) < consumers or not start:
            try:
                kind, t = out.get(timeout=1.0)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                    raise RuntimeError("a bench process failed") from None
                continue
            if kind == "start":
                start = t
            else:
                ends.append(t)
        for p in procs:
            p.join(30)
        return n / (max(ends) - start)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300_000, help="64-byte messages per case")
    parser.add_argument("--big", type=int, default=1500, help="1 MiB messages per case")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best is shown")
    args = parser.parse_args(argv)
    n, big = args.n, args.big
    rows: list[tuple[str, str, str]] = []

    def row(label: str, fn: Callable[[], float], unit: str, base: float | None = None) -> float:
        # Best of several: the machine is shared, and the least disturbed run is the closest to
        # what the code can do. Every case gets the same treatment, so ratios stay fair.
        v = max(fn() for _ in range(args.repeat))
        shown = f"{v / 1e6:.2f} M msg/s" if unit == "msg" else f"{v * (1 << 20) / 1e9:.2f} GB/s"
        rows.append((label, shown, f"{v / base:.1f}x" if base else ""))
        return v

    q = row("64 B 1->1  multiprocessing.Queue put/get", lambda: bench_queue(n), "msg")
    row("64 B 1->1  topic publish (one by one) + read_batch", lambda: bench_topic(n, batched=False), "msg", q)
    row("64 B 1->1  topic publish_many(256) + read_batch", lambda: bench_topic(n, batched=True), "msg", q)
    row(
        "64 B 1->3  topic publish_many(256), per consumer",
        lambda: bench_topic(n, consumers=3, batched=True),
        "msg",
        q,
    )
    row(
        "1 MiB 1->1 topic publish + read_batch (copy)",
        lambda: bench_topic(big, size=1 << 20, batched=False),
        "gb",
    )
    row(
        "1 MiB 1->1 topic publish + read_batch(copy=False)",
        lambda: bench_topic(big, size=1 << 20, batched=False, copy=False),
        "gb",
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'throughput':>14}  vs Queue")
    for label, shown, ratio in rows:
        print(f"{label:<{width}}  {shown:>14}  {ratio}")
    print(f"(n={n} small, {big} x 1 MiB, best of {args.repeat}, {os.cpu_count()} CPUs, fork)")


if __name__ == "__main__":
    main()
