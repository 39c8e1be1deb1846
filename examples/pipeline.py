"""A data pipeline: stream a large generator through ``imap_unordered`` with bounded memory.

    python examples/pipeline.py [N]        # N records (default 1,000,000)

The generator is consumed lazily: the pool pulls a bounded window of chunks ahead of what the
consumer has taken, so memory stays flat however long the input is. The line on stderr shows
progress; the summary shows how far ahead of the consumer the producer ever got.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator

import psutil

from lane_mp import LanePool


def parse(record: bytes) -> int:
    """The per-record work: parse and hash a line; returns a small result."""
    user, _, amount = record.partition(b",")
    return int(amount) + hashlib.blake2b(user, digest_size=4).digest()[0]


class Source:
    """A generator of records that counts how many were produced (so we can show the window)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.produced = 0

    def __iter__(self) -> Iterator[bytes]:
        for i in range(self.n):
            self.produced += 1
            yield b"user%d,%d" % (i % 1000, i % 97)


def main(n: int) -> None:
    me = psutil.Process()
    source = Source(n)
    consumed = total = 0
    max_ahead = 0
    rss_start = me.memory_info().rss
    rss_peak = rss_start
    t0 = time.monotonic()
    with LanePool(2) as pool:
        for value in pool.imap_unordered(parse, source):  # chunk size adapts to the task cost
            consumed += 1
            total += value
            max_ahead = max(max_ahead, source.produced - consumed)
            if consumed % 25_000 == 0 or consumed == n:
                rss_peak = max(rss_peak, me.memory_info().rss)
                rate = consumed / (time.monotonic() - t0)
                print(f"\r  {consumed:>9,}/{n:,} records  {rate:>10,.0f}/s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    dt = time.monotonic() - t0
    print(f"{consumed:,} records in {dt:.2f} s ({consumed / dt:,.0f}/s), checksum {total}")
    print(f"producer ran at most {max_ahead:,} records ahead of the consumer "
          f"({max_ahead / n:.1%} of the input); caller RSS grew {(rss_peak - rss_start) / 2**20:.1f} MiB")


if __name__ == "__main__":
    # LANE_MP_EXAMPLE_QUICK: the test of every example asks for a smaller default input
    default = 100_000 if os.environ.get("LANE_MP_EXAMPLE_QUICK") else 1_000_000
    main(int(sys.argv[1]) if len(sys.argv) > 1 else default)
