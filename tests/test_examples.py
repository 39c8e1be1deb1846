"""Every ``examples/*.py`` runs to completion, prints something, and leaves nothing behind.

New example files are picked up automatically. Each runs in its own interpreter (as a user
would run it: the example's functions live in ``__main__``), with ``LANE_MP_EXAMPLE_QUICK=1``
set so an example with a large default input may shrink it, and with a timeout. An example that
needs an optional extra which is not installed (``dask``) is skipped, not failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lane_mp.benchmark.runner import segments_of

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT_S = 60


def _is_script(path: Path) -> bool:
    text = path.read_text()
    return "__name__ == \"__main__\"" in text or "__name__ == '__main__'" in text


def test_there_are_examples() -> None:
    assert {"quickstart.py", "basic_usage.py"} <= {p.name for p in EXAMPLES}


@pytest.mark.timeout(TIMEOUT_S + 30)
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path, tmp_path: Path) -> None:
    env = dict(os.environ, LANE_MP_EXAMPLE_QUICK="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, str(path)], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{path.name} did not finish in {TIMEOUT_S} s\nstdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}")
    missing = re.search(r"ModuleNotFoundError: No module named '([^']+)'", err)
    if proc.returncode != 0 and missing and not missing.group(1).startswith("lane_mp"):
        pytest.skip(f"{path.name} needs {missing.group(1)} (an optional extra), not installed here")
    assert proc.returncode == 0, f"{path.name} exited {proc.returncode}\nstderr:\n{err[-3000:]}"
    if _is_script(path):  # a helper module next to the scripts (tasks for workers) may be silent
        assert out.strip(), f"{path.name} printed nothing"
    assert "Traceback" not in err, err[-3000:]
    assert segments_of(proc.pid) == [], f"{path.name} left shared-memory segments behind"
