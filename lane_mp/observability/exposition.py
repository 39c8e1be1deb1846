"""Render a :class:`~lane_mp.observability.metrics.MetricsSnapshot` as Prometheus text (0.0.4).

Kept apart from ``metrics.py`` so the hot-path module stays small and from ``prometheus.py`` so
rendering never drags in ``http.server``.

Mapping (with the default ``lane_mp_`` prefix):

- names are sanitised (anything outside ``[a-zA-Z0-9_:]``, dots included, becomes ``_``);
- a name ``<family>.<lane>`` whose family is in ``snapshot.lane_families`` becomes the family's
  metric with a ``lane="<lane>"`` label; the bare family name is the unlabelled pool total, so
  ``sum(...)`` over a family counts twice: select ``{lane!=""}`` or the unlabelled sample;
- counters get the ``_total`` suffix; histograms are exposed as summaries (``quantile`` 0.5, 0.9,
  0.95, 0.99 plus ``_sum`` and ``_count``); min and max are left to ``to_dict()``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .histogram import HistogramSummary
    from .metrics import MetricsSnapshot

__all__ = ["render_prometheus", "sanitize_name"]

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_QUANTILES: tuple[tuple[str, str], ...] = (("0.5", "p50"), ("0.9", "p90"), ("0.95", "p95"), ("0.99", "p99"))


def sanitize_name(name: str, prefix: str = "lane_mp_") -> str:
    """A valid Prometheus metric name for a dotted lane_mp name."""
    out = prefix + _INVALID.sub("_", name)
    if not out or out[0].isdigit():
        out = "_" + out
    return out


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _fmt(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _labels(lane: str | None, extra: str = "") -> str:
    parts = []
    if lane is not None:
        parts.append(f'lane="{_escape_label(lane)}"')
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _split(name: str, families: tuple[str, ...]) -> tuple[str, str | None]:
    """``lane.queue.depth.query`` -> (``lane.queue.depth``, ``query``); others -> (name, None)."""
    for family in families:
        if len(name) > len(family) + 1 and name.startswith(family) and name[len(family)] == ".":
            return family, name[len(family) + 1 :]
    return name, None


def _group(
    values: dict[str, object], families: tuple[str, ...]
) -> dict[str, list[tuple[str | None, object]]]:
    grouped: dict[str, list[tuple[str | None, object]]] = {}
    for name, value in values.items():
        family, lane = _split(name, families)
        grouped.setdefault(family, []).append((lane, value))
    for samples in grouped.values():
        # Unlabelled total first, then lanes by name: stable output for diffs and tests.
        samples.sort(key=lambda s: (s[0] is not None, s[0] or ""))
    return grouped


def render_prometheus(
    snapshot: MetricsSnapshot, prefix: str = "lane_mp_", help_text: dict[str, str] | None = None
) -> str:
    """The snapshot in Prometheus text exposition format, ending with a newline."""
    help_text = help_text or {}
    # Longest family first so a family that prefixes another never steals its samples.
    families = tuple(sorted(snapshot.lane_families, key=len, reverse=True))
    blocks: list[tuple[str, list[str]]] = []

    def header(metric: str, family: str, kind: str) -> list[str]:
        doc = _escape_help(help_text.get(family, f"lane_mp {kind} {family}"))
        return [f"# HELP {metric} {doc}", f"# TYPE {metric} {kind}"]

    for family, samples in _group(dict(snapshot.counters), families).items():
        metric = sanitize_name(family, prefix)
        if not metric.endswith("_total"):
            metric += "_total"
        lines = header(metric, family, "counter")
        lines += [f"{metric}{_labels(lane)} {_fmt(v)}" for lane, v in samples]  # type: ignore[arg-type]
        blocks.append((metric, lines))

    for family, samples in _group(dict(snapshot.gauges), families).items():
        metric = sanitize_name(family, prefix)
        lines = header(metric, family, "gauge")
        lines += [f"{metric}{_labels(lane)} {_fmt(v)}" for lane, v in samples]  # type: ignore[arg-type]
        blocks.append((metric, lines))

    for family, samples in _group(dict(snapshot.histograms), families).items():
        metric = sanitize_name(family, prefix)
        lines = header(metric, family, "summary")
        for lane, summary in samples:
            s: HistogramSummary = summary  # type: ignore[assignment]
            for q, field in _QUANTILES:
                labels = _labels(lane, 'quantile="' + q + '"')
                lines.append(f"{metric}{labels} {_fmt(getattr(s, field))}")
            lines.append(f"{metric}_sum{_labels(lane)} {_fmt(s.sum)}")
            lines.append(f"{metric}_count{_labels(lane)} {_fmt(s.count)}")
        blocks.append((metric, lines))

    blocks.sort(key=lambda b: b[0])
    return "".join(line + "\n" for _, lines in blocks for line in lines)
