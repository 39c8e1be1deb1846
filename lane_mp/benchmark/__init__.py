"""``python -m lane_mp bench``: lane_mp side by side with the pools people use today.

Layout, in the order a run flows:

- ``workloads.py``  what W1..W8 are, their metrics, sizes (full / ``--quick``) and time bounds
- ``adapters.py``   one small adapter per library (lane_mp, ProcessPoolExecutor,
                    multiprocessing.Pool, and loky / pebble / mpire when installed)
- ``tasks.py``      the task functions the workers run (importable, never lambdas)
- ``throughput.py`` W1 tiny tasks, W2 map, W3 payload, W4 latency, W8 CPU scaling
- ``behaviour.py``  W5 priority under load, W6 timeout, W7 crash
- ``server.py``     a subprocess per library that runs workloads, so a hang can be killed
- ``runner.py``     interleaved schedule (A B A B), hard time bound per run
- ``report.py``     machine line, the table, the JSON file

The public entry point is :func:`lane_mp.benchmark.runner.run_bench`; the CLI in
``lane_mp/cli.py`` wraps it with a progress bar.
"""

from __future__ import annotations

from .adapters import ADAPTERS, PEERS, available
from .runner import Run, run_bench
from .workloads import FULL, QUICK, WORKLOADS, Sizes, sizes_for

__all__ = ["ADAPTERS", "FULL", "PEERS", "QUICK", "WORKLOADS", "Run", "Sizes", "available", "run_bench", "sizes_for"]
