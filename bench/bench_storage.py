"""Journal throughput and recovery time of ``SQLiteStorage`` (prints numbers; no assertions).

Run from the repository root: ``python bench/bench_storage.py [--quick]``. Measures, per option
set (plain, zlib, AES-GCM, both; synchronous NORMAL, plus FULL for plain):

* save+commit: one ``save_batch`` of BATCH small commands and one ``commit()`` — what one
  coordinator loop turn pays to journal a burst of submissions;
* lifecycle: save+commit, then mark all done+commit — the full journal cost of a durable command;
* recovery: ``open()`` + ``load_pending()`` of RECOVER pending commands in a closed file.

Best of several runs: the minimum is the least disturbed by whatever else shares the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import lane_mp  # noqa: F401
except ImportError:  # not installed: benchmark the checkout this file lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lane_mp.persistence.records import StoredCommand
from lane_mp.persistence.storage import SQLiteStorage

BATCH = 1_000
TURNS = 30
RECOVER = 100_000
KEY = bytes(range(32))
CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "plain, synchronous=FULL": {"synchronous": "FULL"},
    "zlib": {"compression": True},
    "aes-gcm": {"encryption_key": KEY},
    "zlib+aes-gcm": {"compression": True, "encryption_key": KEY},
}


def commands(first: int, n: int) -> list[StoredCommand]:
    now = time.time()
    return [
        StoredCommand(
            id=i,
            lane="query",
            fn="jobs.tasks:resize",
            payload=b"\x92\xa5hello\xcd\x04\xd2" * 4,
            created_at=now,
            updated_at=now,
        )
        for i in range(first, first + n)
    ]


def bench_turns(path: Path, opts: dict[str, Any], turns: int) -> tuple[float, float]:
    """(best seconds for save+commit, best seconds for save+commit+mark done+commit) per batch."""
    store = SQLiteStorage(path, **opts)
    store.open()
    best_save = best_cycle = float("inf")
    next_id = 0
    for _ in range(turns):
        batch = commands(next_id, BATCH)  # built outside the timing: the coordinator has them already
        next_id += BATCH
        start = time.perf_counter()
        store.save_batch(batch)
        store.commit()
        saved = time.perf_counter()
        store.mark_batch([(c.id, "done", 1) for c in batch])
        store.commit()
        end = time.perf_counter()
        best_save = min(best_save, saved - start)
        best_cycle = min(best_cycle, end - start)
    store.close()
    return best_save, best_cycle


def bench_recovery(path: Path, opts: dict[str, Any], n: int) -> tuple[float, int]:
    store = SQLiteStorage(path, **opts)
    store.open()
    for first in range(0, n, 10_000):
        store.save_batch(commands(first, min(10_000, n - first)))
        store.commit()
    store.close()
    best = float("inf")
    found = 0
    for _ in range(3):
        start = time.perf_counter()
        again = SQLiteStorage(path, **opts)
        again.open()
        found = len(again.load_pending().commands)
        best = min(best, time.perf_counter() - start)
        again.close()
    return best, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer turns, 20,000 recovered commands")
    args = parser.parse_args()
    turns, recover = (5, 20_000) if args.quick else (TURNS, RECOVER)
    print(f"batch = {BATCH} commands, best of {turns} turns; recovery of {recover:,} pending commands")
    header = f"{'options':<24} {'save+commit':>14} {'cmds/s':>12} {'save..done':>12} {'cmds/s':>12} {'recovery':>10}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="lmp_bench_") as tmp:
        for i, (name, opts) in enumerate(CONFIGS.items()):
            save, cycle = bench_turns(Path(tmp) / f"turns{i}.db", opts, turns)
            rec, found = bench_recovery(Path(tmp) / f"recover{i}.db", opts, recover)
            assert found == recover, (found, recover)  # a sanity check of the bench, not a timing test
            print(
                f"{name:<24} {save * 1e3:>11.2f} ms {BATCH / save:>12,.0f} {cycle * 1e3:>9.2f} ms "
                f"{BATCH / cycle:>12,.0f} {rec * 1e3:>7.0f} ms"
            )


if __name__ == "__main__":
    main()
