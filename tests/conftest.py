"""Invariants every test must leave behind (loky's _executor_mixin idea).

After each test: every process started during the test (children, grandchildren through the
forkserver) is gone after a grace period, and so is every ``/dev/shm/lmp_<this pid>*`` segment
created during it. Things that already existed before the test (a module-scoped pool) are
checked when the session ends instead. A test that leaks fails here, loudly.
"""

from __future__ import annotations

import os
import time

import psutil
import pytest

from lane_mp.ipc.segments import list_segments, unlink_name

GRACE_S = 5.0


def _own_prefix() -> str:
    return f"lmp_{os.getpid():x}"


def _helpers() -> set[int]:
    """The multiprocessing resource tracker and forkserver processes live for the session."""
    out = set()
    for child in psutil.Process().children(recursive=False):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" in cmd or "forkserver import main" in cmd:
            out.add(child.pid)
    return out


def _live_descendants() -> set[int]:
    helpers = _helpers()
    out = set()
    for p in psutil.Process().children(recursive=True):
        if p.pid in helpers:
            continue
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


def _check(before_pids: set[int], before_segs: set[str], what: str) -> None:
    deadline = time.monotonic() + GRACE_S
    while True:
        kids = _live_descendants() - before_pids
        segs = set(list_segments(_own_prefix())) - before_segs
        if not kids and not segs:
            return
        if time.monotonic() > deadline:
            for pid in kids:
                try:
                    psutil.Process(pid).kill()
                except psutil.Error:
                    pass
            for name in segs:
                unlink_name(name)
            pytest.fail(f"leaked after {what}: processes={sorted(kids)} segments={sorted(segs)}")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def no_leaks():
    before_pids = _live_descendants()
    before_segs = set(list_segments(_own_prefix()))
    yield
    _check(before_pids, before_segs, "test")


@pytest.fixture(autouse=True, scope="session")
def no_leaks_at_session_end():
    yield
    _check(set(), set(), "session")
