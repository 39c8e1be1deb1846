"""The command line: help texts, argument errors, a tiny real bench run, and the bench's
bookkeeping (table, ratios, JSON, killing a run that overstays its bound)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from lane_mp.benchmark.report import render_table, summarize
from lane_mp.benchmark.runner import Run, ServerProcess, plan, segments_of
from lane_mp.benchmark.workloads import sizes_for
from lane_mp.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "lane_mp", *args],
        check=False, capture_output=True, text=True, timeout=timeout, env=full_env,
    )


def test_main_help() -> None:
    res = _run("--help")
    assert res.returncode == 0, res.stderr
    assert "bench" in res.stdout and "--verbose" in res.stdout


def test_bench_help() -> None:
    res = _run("-v", "bench", "--help")
    assert res.returncode == 0, res.stderr
    for opt in ("--workers", "--quick", "--only", "--json", "--against"):
        assert opt in res.stdout


@pytest.mark.parametrize("args", [["--only", "W9"], ["--against", "nope"]])
def test_bench_rejects_bad_names(args: list[str]) -> None:
    res = CliRunner().invoke(main, ["bench", *args])
    assert res.exit_code == 2
    assert "unknown" in res.output


@pytest.mark.timeout(120)
def test_tiny_bench_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = _run(
        "bench", "--only", "W1,W4", "--quick", "--workers", "1", "--reps", "1", "--against", "ppe",
        "--json", str(out), env={"LANE_MP_BENCH_SCALE": "0.02"}, timeout=110,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert "cores" in lines[0] and "Python 3." in lines[0] and "lane_mp" in lines[0]  # the machine line
    assert any("lane_mp/peer" in line for line in lines)
    assert any(line.startswith("W1") and "lane_mp" in line for line in lines)
    assert "ProcessPoolExecutor" in res.stdout
    doc = json.loads(out.read_text())
    assert {"machine", "config", "summary", "runs", "problems"} <= set(doc)
    assert {(r["workload"], r["library"]) for r in doc["runs"]} == {
        ("W1", "lane_mp"), ("W1", "ppe"), ("W4", "lane_mp"), ("W4", "ppe"),
    }
    assert all(r["status"] == "ok" for r in doc["runs"]), doc["runs"]
    w1 = [r for r in doc["summary"] if r["workload"] == "W1"]
    assert w1[0]["library"] == "lane_mp" and w1[0]["median"] > 0
    assert w1[1]["ratio"] > 0
    assert doc["problems"] == []


def test_plan_interleaves_and_alternates() -> None:
    assert plan(["W1"], ["lane_mp", "ppe", "mp_pool"], 2) == [
        ("W1", "lane_mp", 0), ("W1", "ppe", 0), ("W1", "mp_pool", 0),
        ("W1", "mp_pool", 1), ("W1", "ppe", 1), ("W1", "lane_mp", 1),
    ]
    assert plan(["L1"], ["lane_mp", "ppe"], 3) == [("L1", "lane_mp", 0)]  # lane_mp-only: once


def test_summary_medians_ratios_and_failures() -> None:
    runs = [
        Run("W1", "lane_mp", 0, metrics={"tasks_per_s": 100.0}),
        Run("W1", "lane_mp", 1, metrics={"tasks_per_s": 300.0}),
        Run("W1", "lane_mp", 2, metrics={"tasks_per_s": 200.0}),
        Run("W1", "ppe", 0, metrics={"tasks_per_s": 20.0}),
        Run("W1", "ppe", 1, status="hung", notes=["hung: killed after 45 s"]),
        Run("W1", "mp_pool", 0, status="hung", notes=["hung: killed after 45 s"]),
    ]
    rows = summarize(runs, ["lane_mp", "ppe", "mp_pool"])
    lane, ppe, mp = rows
    assert (lane.median, lane.low, lane.high) == (200.0, 100.0, 300.0)
    assert ppe.median == 20.0 and ppe.ratio == pytest.approx(10.0)
    assert "1/2 reps hung" in ppe.note
    assert mp.median == "hung" and "killed" in mp.note
    table = render_table(rows)
    assert "10.00x" in table and "hung" in table


@pytest.mark.timeout(60)
def test_a_run_past_its_bound_is_killed_with_its_process_tree(tmp_path: Path) -> None:
    server = ServerProcess("lane_mp", 1, str(tmp_path))
    reply = server.request("W1", sizes_for(True), bound_s=0.01)  # cannot even start in time
    assert reply["status"] == "hung" and "killed" in reply["notes"][0]
    assert server.proc is None
    server.close()


@pytest.mark.timeout(60)
def test_server_survives_a_normal_run_and_closes(tmp_path: Path) -> None:
    sizes = sizes_for(True).scaled(0.01)
    server = ServerProcess("lane_mp", 1, str(tmp_path))
    try:
        reply = server.request("W4", sizes, bound_s=50)
        assert reply["status"] == "ok", reply
        assert reply["metrics"]["p50_us"] > 0
        assert not reply.get("problems"), reply["problems"]
        assert server.proc is not None
        pid = server.proc.pid
    finally:
        server.close()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert segments_of(pid) == []
