"""How fast: W1 tiny tasks, W2 map, W3 payload, W4 latency, W8 CPU scaling.

Each function runs its workload once on one library's pool and checks the results it got back
(a fast wrong answer must not look like a win).
"""

from __future__ import annotations

from . import tasks
from .adapters import Adapter
from .measure import median, now, percentile, running, wait_all
from .workloads import Outcome, Sizes

__all__ = ["w1_tiny", "w2_map", "w3_payload", "w4_latency", "w8_scaling"]

MIB = 1 << 20
BOUND_S = 120.0  # a wait inside a workload; the runner's hard bound is the real backstop


def w1_tiny(ad: Adapter, s: Sizes) -> Outcome:
    """W1: N no-op tasks submitted one by one, then awaited: the per-task cost of the pool."""
    out = Outcome()
    with running(ad, out):
        t0 = now()
        hs = [ad.submit(tasks.noop, i) for i in range(s.w1_tasks)]
        done = wait_all(hs, BOUND_S)
        dt = now() - t0
        bad = sum(1 for i, h in enumerate(hs) if h.result() != i) if done == len(hs) else -1
    if done < len(hs) or bad:
        out.status = "error"
        out.notes.append(f"{done}/{len(hs)} finished, {bad} wrong results")
        return out
    out.metrics["tasks_per_s"] = s.w1_tasks / dt
    return out


def w2_map(ad: Adapter, s: Sizes) -> Outcome:
    """W2: tiny items through the library's best chunked map; every candidate chunksize is
    tried and the best kept (the spec's "for mp.Pool try a few chunksizes", applied to all)."""
    out = Outcome()
    n = s.w2_items
    expected = n * (n + 1) // 2
    best: tuple[float, int | None] | None = None
    with running(ad, out):
        for cs in ad.chunksizes:
            t0 = now()
            total = sum(ad.map(tasks.inc, range(n), cs))
            dt = now() - t0
            if total != expected:
                out.status = "error"
                out.notes.append(f"chunksize {cs}: wrong sum {total} != {expected}")
                return out
            out.metrics[f"items_per_s@{cs or 'auto'}"] = n / dt
            if best is None or dt < best[0]:
                best = (dt, cs)
    assert best is not None
    out.metrics["items_per_s"] = n / best[0]
    out.notes.append(f"{ad.map_api}, chunksize {best[1] or 'auto'}")
    return out


def w3_payload(ad: Adapter, s: Sizes) -> Outcome:
    """W3: echo a float64 array (argument in, same array back); MB/s = array bytes / round trip."""
    out = Outcome()
    try:
        import numpy as np
    except ImportError:
        out.status = "n/a"
        out.notes.append("numpy is not installed")
        return out
    with running(ad, out):
        for key, size, trips in (("mbps_1mib", MIB, s.w3_small_trips), ("mbps_64mib", 64 * MIB, s.w3_large_trips)):
            arr = np.arange(size // 8, dtype=np.float64)
            times = []
            for i in range(trips + 1):  # +1: the first trip warms the data path for this size
                t0 = now()
                h = ad.submit(tasks.echo, arr)
                if not h.wait(BOUND_S):
                    raise TimeoutError(f"{size} byte echo did not return in {BOUND_S} s")
                back = h.result()
                dt = now() - t0
                if back.shape != arr.shape or back[-1] != arr[-1] or back[size // 16] != arr[size // 16]:
                    out.status = "error"
                    out.notes.append(f"{size} byte echo came back different")
                    return out
                del back  # lane_mp hands back a view of a shared block: let it go before the next trip
                if i:
                    times.append(dt)
            out.metrics[key] = size / 1e6 / median(times)
    return out


def w4_latency(ad: Adapter, s: Sizes) -> Outcome:
    """W4: one task at a time on an idle pool: the round trip a lone request pays."""
    out = Outcome()
    lat: list[float] = []
    with running(ad, out):
        for i in range(s.w4_tasks):
            t0 = now()
            h = ad.submit(tasks.noop, i)
            if not h.wait(BOUND_S) or h.result() != i:
                out.status = "error"
                out.notes.append(f"task {i} did not come back right")
                return out
            lat.append(now() - t0)
    lat.sort()
    out.metrics["p50_us"] = percentile(lat, 50) * 1e6
    out.metrics["p99_us"] = percentile(lat, 99) * 1e6
    return out


def w8_scaling(ad: Adapter, s: Sizes) -> Outcome:
    """W8: a pure-Python CPU kernel split into equal tasks; makespan against running the same
    tasks serially in this process just before (same minute, same noise)."""
    out = Outcome()
    base = 1_000_000  # far from 0 so every span costs about the same
    spans = [(base + i * s.w8_span, base + (i + 1) * s.w8_span) for i in range(s.w8_tasks)]
    t0 = now()
    expected = sum(tasks.count_primes(lo, hi) for lo, hi in spans)
    serial = now() - t0
    with running(ad, out):
        t0 = now()
        hs = [ad.submit(tasks.count_primes, lo, hi) for lo, hi in spans]
        done = wait_all(hs, BOUND_S)
        makespan = now() - t0
        total = sum(h.result() for h in hs) if done == len(hs) else -1
    if total != expected:
        out.status = "error"
        out.notes.append(f"{done}/{len(hs)} finished; prime count {total} != {expected}")
        return out
    out.metrics.update(serial_s=serial, makespan_s=makespan, speedup=serial / makespan)
    out.notes.append(f"ideal {ad.workers}x")
    return out
