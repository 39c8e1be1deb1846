"""Rerun one workload of ``python -m lane_mp bench`` alone: the script behind each README figure.

    python bench/run_workload.py W3                       # lane_mp and every installed peer, table
    python bench/run_workload.py W5 --quick --against ppe # the same options as `lane_mp bench`
    python bench/run_workload.py W1 --library lane_mp     # one library, in this process, raw JSON

The first form is exactly ``python -m lane_mp bench --only W3 ...`` (same servers, same time
bounds, same table). ``--library`` runs the workload once in this process instead, without the
subprocess isolation, so a profiler (``py-spy``, ``cProfile``) sees the pool directly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled


def _one_library(workload: str, library: str, argv: list[str]) -> None:
    from lane_mp.benchmark.adapters import make_adapter
    from lane_mp.benchmark.workloads import WORKLOADS, sizes_for

    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    sizes = sizes_for("--quick" in argv)
    out = WORKLOADS[workload].load()(make_adapter(library, workers), sizes)
    print(json.dumps({"workload": workload, "library": library, **out.to_json()}, indent=2, default=str))


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    workload, rest = argv[0].upper(), argv[1:]
    if "--library" in rest:
        i = rest.index("--library")
        _one_library(workload, rest[i + 1], rest[:i] + rest[i + 2:])
        return
    from lane_mp.cli import main as cli

    cli(["bench", "--only", workload, *rest])


if __name__ == "__main__":
    main(sys.argv[1:])
