"""The public surface is declared once and the README shows it (httpx's exported-members idea)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lane_mp

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_public_name_is_importable_and_documented():
    missing = [name for name in lane_mp.__all__ if not re.search(rf"\b{re.escape(name)}\b", README)]
    assert not missing, f"in lane_mp.__all__ but not in the README: {missing}"
    for name in lane_mp.__all__:
        assert getattr(lane_mp, name) is not None


def test_readme_quickstart_is_the_example_file():
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", README, re.S)
    assert block, "README has no quick start code block"
    assert block.group(1) == (ROOT / "examples" / "quickstart.py").read_text()


def test_importing_lane_mp_stays_light():
    # workers import the package: the pool, numpy and sqlite must not load with it
    code = "import sys, lane_mp; print(sorted(m for m in ('lane_mp.pool', 'numpy', 'sqlite3') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_py_typed_is_shipped():
    assert (Path(lane_mp.__file__).parent / "py.typed").exists()
