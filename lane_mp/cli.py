"""The ``python -m lane_mp`` / ``lane-mp`` command line.

Commands are thin: each parses options and hands off to a module that does the work, so the
same work is reachable from Python and from tests without click. Heavy imports stay inside the
commands: ``--help`` must not start pools or import numpy.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Turn on lane_mp's debug log lines (stderr).")
@click.version_option(version=__version__, prog_name="lane_mp")
def main(verbose: bool) -> None:
    """lane_mp: a process pool with priority lanes."""
    if verbose:
        import lane_mp

        lane_mp.enable_logging("DEBUG")


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@main.command()
@click.option("--workers", "-w", type=click.IntRange(1), default=2, show_default=True,
              help="Workers in every pool.")
@click.option("--quick", is_flag=True, help="Smaller workloads and 2 repetitions (under 2 minutes).")
@click.option("--only", metavar="W1,W3", help="Run only these workloads.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write every run and the summary to this JSON file.")
@click.option("--against", metavar="ppe,mp_pool,loky,pebble,mpire",
              help="Peers to compare with (default: every one installed).")
@click.option("--reps", type=click.IntRange(1), default=None,
              help="Repetitions per workload and library (default: 3, or 2 with --quick).")
def bench(workers: int, quick: bool, only: str | None, json_path: str | None, against: str | None,
          reps: int | None) -> None:
    """Run workloads W1..W8 on lane_mp and its peers, interleaved, and print one table.

    \b
    W1 tiny tasks    W2 map         W3 payload   W4 latency
    W5 priority      W6 timeout     W7 crash     W8 CPU scaling
    """
    from .benchmark import report
    from .benchmark.adapters import ADAPTERS, ALWAYS, PEERS, available
    from .benchmark.runner import plan, run_bench
    from .benchmark.workloads import WORKLOADS, sizes_for

    workloads = [w.upper() for w in _split(only) or list(WORKLOADS)]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise click.BadParameter(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}", param_hint="--only")
    wanted = _split(against) or list(PEERS)
    bad = [p for p in wanted if p not in PEERS]
    if bad:
        raise click.BadParameter(f"unknown peer(s) {bad}; choose from {list(PEERS)}", param_hint="--against")
    missing = [p for p in wanted if p not in ALWAYS and not available(p)]
    libraries = ["lane_mp"] + [p for p in wanted if p not in missing]
    sizes = sizes_for(quick, reps)

    info = report.machine_info(libraries)
    click.echo(report.machine_line(info))
    for p in missing:
        click.echo(f"{ADAPTERS[p].label}: not installed, skipped (pip install 'lane_mp[bench]')")

    steps = plan(workloads, libraries, sizes.reps)
    with click.progressbar(length=len(steps), label="bench", file=sys.stderr, show_pos=True,
                           item_show_func=lambda s: s) as bar:
        runs = run_bench(
            workloads, libraries, workers, sizes,
            on_step=lambda label: bar.update(0, label),
            on_done=lambda _run: bar.update(1),
        )
    rows = report.summarize(runs, libraries)
    click.echo(report.render_table(rows))
    click.echo()
    click.echo(report.legend(sizes, workers, workloads))
    found = report.problems(runs)
    if found:
        click.echo("\nlane_mp problems seen during this run:")
        for line in found:
            click.echo(f"  - {line}")
    if json_path:
        config: dict[str, Any] = {
            "workers": workers, "quick": quick, "workloads": workloads, "libraries": libraries,
            "sizes": vars(sizes) if hasattr(sizes, "__dict__") else {},
            "command": " ".join(["python -m lane_mp", *sys.argv[1:]]),
        }
        report.write_json(json_path, info, config, runs, rows)
        click.echo(f"\nwrote {json_path}")


# ---- more commands -------------------------------------------------------------------------
# Other engineers register their commands here, each in its own module with a click command
# and imported lazily by name (so `python -m lane_mp --help` stays fast), e.g.:
#
#     from .observability.top import top          # python -m lane_mp top
#     main.add_command(top)
#     from .persistence.cli import storage        # python -m lane_mp storage ...
#     main.add_command(storage)
# --------------------------------------------------------------------------------------------
from .observability.top import top as _top  # noqa: E402 - python -m lane_mp top

main.add_command(_top)
from .persistence.cli import register as _register_storage  # noqa: E402 - pending, dlq, mailbox, stats

_register_storage(main)
