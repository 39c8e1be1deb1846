"""SIGKILL a process in the middle of writing the journal; the file must hold whole commits only.

The writer (a spawned child, so nothing is inherited from pytest) loops: save a batch of commands,
mark the batch from two turns ago done, commit, then report how many batches it committed. After
the kill, a new ``SQLiteStorage`` on the file must find exactly the last two batches, each complete,
every earlier one finished and counted, no quarantined row, and an intact database. A second round
resumes from what was recovered and is killed again: recovery of a recovered file.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lane_mp.persistence.records import StoredCommand
from lane_mp.persistence.storage import SQLiteStorage

BATCH = 250
WAIT_S = 30.0
OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "zlib+aes": {"compression": True, "encryption_key": bytes(range(32))},
}

pytestmark = [pytest.mark.crash]


def _payload(command_id: int) -> bytes:
    return (b"%d|" % command_id) * 100  # compressible, and checkable after recovery


def _writer(path: str, opts: dict[str, Any], start: int, progress: Any) -> None:
    store = SQLiteStorage(path, **opts)
    store.open()
    batch = start
    while batch < start + 100_000:  # a bound so a lost child ends by itself
        first = batch * BATCH
        store.save_batch(
            [
                StoredCommand(
                    id=first + i,
                    lane="bulk",
                    fn="jobs:work",
                    payload=_payload(first + i),
                    correlation_id=f"b{batch}",
                    metadata={"batch": batch},
                )
                for i in range(BATCH)
            ]
        )
        if batch >= 2:
            store.mark_batch([((batch - 2) * BATCH + i, "done", 1) for i in range(BATCH)])
        store.commit()
        progress.value = batch + 1  # after the commit: the parent may see one batch fewer, never more
        batch += 1


def _kill_during_writes(path: Path, opts: dict[str, Any], start: int, at_least: int) -> int:
    ctx = mp.get_context("spawn")
    progress = ctx.RawValue("q", start)
    proc = ctx.Process(target=_writer, args=(str(path), opts, start, progress), daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while progress.value < start + at_least:
            assert proc.is_alive(), f"writer died early with exit code {proc.exitcode}"
            assert time.monotonic() < deadline, "writer made no progress"
            time.sleep(0.005)
        time.sleep(random.uniform(0, 0.01))  # land anywhere in the save/mark/commit cycle
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    return int(progress.value)


def _check_recovered(path: Path, opts: dict[str, Any], reported: int) -> int:
    side = sqlite3.connect(path)
    assert side.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    side.close()
    store = SQLiteStorage(path, **opts)
    store.open()
    try:
        result = store.load_pending()
        stats = store.stats()
    finally:
        store.close()
    assert result.quarantined == []
    per_batch = Counter(c.metadata["batch"] for c in result.commands if c.metadata)
    committed = max(per_batch) + 1
    # The kill may fall between a commit and the progress report: at most one batch more.
    assert reported <= committed <= reported + 1
    assert per_batch == {b: BATCH for b in range(max(0, committed - 2), committed)}, "partial batch"
    for c in result.commands:
        assert c.payload == _payload(c.id) and c.correlation_id == f"b{c.metadata['batch']}"  # type: ignore[index]
    assert stats["finished"]["done"] == max(0, committed - 2) * BATCH
    assert result.max_command_id == committed * BATCH - 1
    return committed


@pytest.mark.parametrize("name", list(OPTIONS))
def test_sigkill_mid_write_leaves_whole_commits(tmp_path: Path, name: str) -> None:
    opts = OPTIONS[name]
    path = tmp_path / "journal.db"
    reported = _kill_during_writes(path, opts, start=0, at_least=20)
    committed = _check_recovered(path, opts, reported)
    # Round two: a writer resumes on the recovered file and is killed again.
    reported = _kill_during_writes(path, opts, start=committed, at_least=10)
    _check_recovered(path, opts, reported)
