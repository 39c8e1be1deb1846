"""Turn runs into what people read: the machine line, one table, and the JSON file.

Numbers: median over the repetitions that succeeded, with min-max; the ratio is lane_mp's
median over the peer's, for every numeric metric (for "lower is better" metrics a ratio under 1
favours lane_mp; the metric label starts with "+" or "-" to say which way is better).
Text observations (what the caller saw on a crash) show the most frequent value.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .adapters import ADAPTERS, library_version, version_of
from .runner import Run
from .workloads import WORKLOADS, Metric, Sizes

__all__ = ["Row", "machine_info", "machine_line", "problems", "render_table", "summarize", "write_json"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(libraries: Sequence[str]) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "load_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "versions": {lib: library_version(lib) for lib in libraries} | {"numpy": version_of("numpy")},
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def machine_line(info: dict[str, Any]) -> str:
    versions = " ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    return (
        f"{info['cpu']} | {info['cores']} cores ({info['usable_cores']} usable, load {info['load_1min']}) | "
        f"Python {info['python']} {info['platform']} | {versions} | {info['date']}"
    )


@dataclass
class Row:
    workload: str
    metric: str
    library: str
    median: Any = None
    low: float | None = None
    high: float | None = None
    ratio: float | None = None  # lane_mp median / this library's median
    ok_reps: int = 0
    note: str = ""


def _text_value(values: list[Any]) -> str:
    counts = Counter(str(v) for v in values)
    top, n = counts.most_common(1)[0]
    return top if len(counts) == 1 else f"{top} ({n}/{len(values)})"


def _note(runs: list[Run]) -> str:
    notes: list[str] = []
    for r in runs:
        for n in r.notes:
            if n not in notes:
                notes.append(n)
    bad = [r for r in runs if r.status != "ok"]
    if bad and len(bad) < len(runs):
        notes.append(f"{len(bad)}/{len(runs)} reps {bad[0].status}")
    return "; ".join(notes)


def summarize(runs: Sequence[Run], libraries: Sequence[str]) -> list[Row]:
    rows: list[Row] = []
    by: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        by.setdefault((r.workload, r.library), []).append(r)
    for wid in dict.fromkeys(r.workload for r in runs):
        wl = WORKLOADS[wid]
        for i, metric in enumerate(wl.metrics):
            base = None
            for lib in libraries:
                lib_runs = by.get((wid, lib), [])
                if not lib_runs:
                    continue  # lane_mp-only workloads have no peer rows
                row = Row(wid, metric.label, lib, note=_note(lib_runs) if i == 0 else "")
                rows.append(row)
                ok = [r for r in lib_runs if r.status == "ok"]
                values = [r.metrics[metric.key] for r in ok if r.metrics.get(metric.key) is not None]
                row.ok_reps = len(values)
                if not values:
                    if i == 0 and not ok and lib_runs:
                        row.median = lib_runs[0].status
                    continue
                if not metric.numeric:
                    row.median = _text_value(values)
                    continue
                row.median = statistics.median(values)
                row.low, row.high = min(values), max(values)
                if lib == "lane_mp":
                    base = row.median
                elif metric.ratio and base and row.median:
                    row.ratio = base / row.median
    return rows


def fmt_num(x: float | None) -> str:
    if x is None:
        return ""
    if float(x).is_integer() and abs(x) < 1e4:
        return str(int(x))
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.2f}M"
    if ax >= 1e4:
        return f"{x / 1e3:.1f}k"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if ax >= 0.1 else f"{x:.3f}"


def _cells(row: Row) -> list[str]:
    if isinstance(row.median, (int, float)) and not isinstance(row.median, bool):
        med = fmt_num(row.median)
        rng = f"{fmt_num(row.low)}-{fmt_num(row.high)}" if row.ok_reps > 1 else ""
    else:
        med, rng = ("" if row.median is None else str(row.median)), ""
    ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
    return [row.workload, row.metric, ADAPTERS[row.library].label, med, rng, ratio, row.note]


HEADER = ["", "metric", "library", "median", "min-max", "lane_mp/peer", "note"]


def render_table(rows: Sequence[Row]) -> str:
    """A plain-text table (copy-pasteable into the README), one block per workload."""
    body: list[list[str]] = []
    last_w = last_m = None
    for row in rows:
        cells = _cells(row)
        if row.workload != last_w and body:
            body.append([""] * len(HEADER))
        if row.workload == last_w:
            cells[0] = ""
        if (row.workload, row.metric) == (last_w, last_m):
            cells[1] = ""
        last_w, last_m = row.workload, row.metric
        body.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(HEADER)]
    widths[-1] = 0  # the note runs free at the end of the line
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths)).rstrip()]
    lines.append("  ".join("-" * max(w, len(h)) for h, w in zip(HEADER, widths)))
    for cells in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(lines)


def legend(sizes: Sizes, workers: int, workloads: Sequence[str]) -> str:
    parts = [f"{w.id} {w.title}: {w.description(sizes)}" for w in WORKLOADS.values() if w.id in workloads]
    return (
        f"{workers} workers; W*: {sizes.reps} repetitions interleaved (A B .. B A), median and min-max; "
        "L*: lane_mp only, one run; '+' higher is better, '-' lower is better; "
        "lane_mp/peer = lane_mp median / peer median.\n"
        + "\n".join(parts)
    )


def problems(runs: Sequence[Run]) -> list[str]:
    """lane_mp misbehaviour worth a bug report: failed runs, leaks, wrong results."""
    out = []
    for r in runs:
        if r.library != "lane_mp":
            continue
        if r.status not in ("ok", "n/a", "skipped"):
            out.append(f"{r.workload} rep {r.rep + 1}: {r.status}: {'; '.join(r.notes)}")
        out += [f"{r.workload} rep {r.rep + 1}: {p}" for p in r.problems]
    return out


def write_json(path: str, info: dict[str, Any], config: dict[str, Any], runs: Sequence[Run], rows: Sequence[Row]) -> None:
    doc = {
        "machine": info,
        "config": config,
        "summary": [asdict(r) for r in rows],
        "runs": [asdict(r) for r in runs],
        "problems": problems(runs),
        "metrics": {w.id: [asdict(m) for m in w.metrics] for w in WORKLOADS.values()},
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, default=str)
        f.write("\n")


def metric_of(workload: str, key: str) -> Metric:
    return next(m for m in WORKLOADS[workload].metrics if m.key == key)
