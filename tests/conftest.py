"""Invariants every test must leave behind (loky's _executor_mixin idea).

After each test: no child process of this test process is alive (after a grace period) and no
``/dev/shm/lmp_<this pid>*`` segment exists. A test that leaks either fails here, loudly.
"""

from __future__ import annotations

import os
import time

import psutil
import pytest

from lane_mp.ipc.segments import list_segments

GRACE_S = 5.0


def _own_prefix() -> str:
    return f"lmp_{os.getpid():x}"


def _children() -> list[psutil.Process]:
    me = psutil.Process()
    out = []
    for child in me.children(recursive=True):
        try:
            # The multiprocessing resource tracker / forkserver helpers live for the whole session.
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" in cmd or "forkserver" in cmd:
            continue
        out.append(child)
    return out


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    yield
    deadline = time.monotonic() + GRACE_S
    while True:
        kids = [c for c in _children() if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        segs = list_segments(_own_prefix())
        if not kids and not segs:
            return
        if time.monotonic() > deadline:
            for c in kids:
                c.kill()
            for name in segs:
                from lane_mp.ipc.segments import unlink_name

                unlink_name(name)
            pytest.fail(f"leaked after test: processes={[c.pid for c in kids]} segments={segs}")
        time.sleep(0.05)
