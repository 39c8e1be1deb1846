"""Persistence through the running pool: real SQLite files, real processes, real SIGKILLs.

The headline proof (``test_sigkill_mid_batch_loses_nothing``): a separate program submits 10,000
durable commands and its whole process group (caller, coordinator, workers) is SIGKILLed mid-way;
a new pool on the same file must run every journaled-but-unfinished command exactly once more,
never re-run a finished one, and lose none whose ``submit`` returned. Runs are counted in a
side-effect log written by the task itself, outcomes in the mailbox.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import persist_tasks as pt
import pytest
import tasks

from lane_mp import LaneConfig, LanePool, RetryPolicy
from lane_mp.errors import ConfigError, StorageError
from lane_mp.ipc.segments import sweep
from lane_mp.persistence.payloads import decode_stored
from lane_mp.persistence.sqlite import SQLiteStorage

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def _paused_then_killed(db: Path, log: Path, n: int, **submit: object) -> list[int]:
    """Journal ``n`` durable commands that never start, then SIGKILL the pool: ids left pending."""
    pool = LanePool(2, storage=db, durable=True)
    pool.pause_lane("query")
    ids = [pool.submit(pt.log_run, str(log), i, **submit).command_id for i in range(n)]  # type: ignore[arg-type]
    pool.kill()
    return ids


def _store_view(db: Path) -> tuple[dict[int, int], dict[int, int]]:
    """({id: item} pending in the journal, {id: item} already in the mailbox), read offline."""
    store = SQLiteStorage(db)
    store.open()
    try:
        pending = {c.id: decode_stored(c.payload)[0][1] for c in store.load_pending().commands}
        done = {e.command_id: decode_stored(e.result) for e in store.list_mailbox() if e.status == "ok"}
    finally:
        store.close()
    return pending, done


# ---- recovery -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_durable_commands_survive_a_killed_pool(tmp_path: Path) -> None:
    db, log = tmp_path / "jobs.db", tmp_path / "runs.log"
    ids = _paused_then_killed(db, log, 20)
    assert pt.read_log(str(log)) == []  # journaled, never started

    with LanePool(2, storage=db) as pool:
        assert pool.recovered == ids
        assert pool.recovery is not None and pool.recovery.quarantined == []
        fresh = pool.submit(tasks.add, 1, 2)
        assert fresh.command_id > max(ids)  # ids are never reused in one file
        assert fresh.result(10) == 3
        assert pool.wait_recovered(30)
        got = {cid: pool.mailbox.fetch(cid) for cid in ids}
    assert all(r is not None and r.ok for r in got.values())
    assert sorted(r.result() for r in got.values() if r is not None) == list(range(20))
    assert sorted(pt.read_log(str(log))) == list(range(20))  # each ran exactly once

    with LanePool(1, storage=db) as pool:  # nothing left to recover
        assert pool.recovered == []
        assert pool.storage_stats()["commands"] == {"pending": 0, "running": 0}


@pytest.mark.timeout(60)
def test_recover_false_leaves_the_journal_alone(tmp_path: Path) -> None:
    db, log = tmp_path / "jobs.db", tmp_path / "runs.log"
    ids = _paused_then_killed(db, log, 3)
    with LanePool(1, storage=db, recover=False) as pool:
        assert pool.recovered == []
        assert pool.submit(tasks.add, 2).result(10) == 2
    pending, _ = _store_view(db)
    assert sorted(pending) == ids


@pytest.mark.timeout(60)
def test_recovered_command_keeps_options_and_attempts(tmp_path: Path) -> None:
    db, counter = tmp_path / "jobs.db", tmp_path / "count"
    retry = RetryPolicy.fixed(2, 0.01)
    lanes = {"query": LaneConfig(retry=retry, timeout=30.0)}
    pool = LanePool(1, storage=db, durable=True, lanes=lanes)
    pool.pause_lane("query")
    cid = pool.submit(pt.fail_first, str(counter), 2, tenant="acme", metadata={"k": 1}).command_id
    pool.kill()
    with LanePool(1, storage=db, lanes=lanes) as pool:
        assert pool.recovered == [cid]
        assert pool.wait_recovered(30)
        out = pool.mailbox.fetch(cid)
        assert out is not None and out.tenant == "acme" and out.result() == "ok"
    assert counter.read_text() == "3"  # two failures retried by the lane's policy, then success


@pytest.mark.timeout(60)
def test_large_arguments_and_results_are_journaled(tmp_path: Path) -> None:
    # Both cross the rings as shared-memory blocks; the journal must hold the bytes, not the names.
    db = tmp_path / "jobs.db"
    blob = os.urandom(300_000)
    pool = LanePool(1, storage=db, durable=True)
    pool.pause_lane("query")
    cid = pool.submit(pt.size_of, blob).command_id
    cid2 = pool.submit(pt.big, 200_000).command_id
    pool.kill()
    with LanePool(1, storage=db) as pool:
        assert pool.recovered == [cid, cid2]
        assert pool.wait_recovered(30)
        assert pool.mailbox.fetch(cid).result() == 300_000  # type: ignore[union-attr]
        assert pool.mailbox.fetch(cid2).result() == pt.big(200_000)  # type: ignore[union-attr]


@pytest.mark.timeout(60)
def test_corrupted_row_is_reported_and_the_rest_recovers(tmp_path: Path) -> None:
    db, log = tmp_path / "jobs.db", tmp_path / "runs.log"
    ids = _paused_then_killed(db, log, 10)
    bad_payload, bad_meta = ids[3], ids[7]
    with sqlite3.connect(db) as conn:  # tamper as a disk or a person would, behind the store's back
        conn.execute("UPDATE commands SET payload = X'00ff' WHERE id = ?", (bad_payload,))
        conn.execute("UPDATE commands SET metadata = X'c1' WHERE id = ?", (bad_meta,))
    with LanePool(2, storage=db) as pool:
        rep = pool.recovery
        assert rep is not None
        assert sorted(q.row_id for q in rep.quarantined) == [bad_payload, bad_meta]
        assert all(q.reason for q in rep.quarantined)
        assert pool.recovered == [i for i in ids if i not in (bad_payload, bad_meta)]
        assert pool.wait_recovered(30)
        assert pool.storage_stats()["quarantined"] == 2
    assert sorted(pt.read_log(str(log))) == [i for i in range(10) if i not in (3, 7)]  # never ran
    with LanePool(1, storage=db) as pool:  # reported once, then out of the way
        assert pool.recovered == [] and pool.recovery.quarantined == []  # type: ignore[union-attr]


# ---- the headline proof -------------------------------------------------------------------------

CHILD = """
import sys
from lane_mp import LanePool
import persist_tasks

if __name__ == "__main__":
    db, log, acked, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    pool = LanePool(2, storage=db, durable=True)
    with open(acked, "w", buffering=1) as out:
        for i in range(n):
            pool.submit(persist_tasks.log_run, log, i, 0.0004, mailbox=True)
            out.write(f"{i}\\n")  # after submit returned: this one was promised to be journaled
    pool.shutdown()
"""

N = 10_000


@pytest.mark.crash
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_mid_batch_loses_nothing(tmp_path: Path) -> None:
    db, log, acked = tmp_path / "jobs.db", tmp_path / "runs.log", tmp_path / "acked"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    child = subprocess.Popen(
        [sys.executable, str(script), str(db), str(log), str(acked), str(N)], env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not acked.exists() or len(acked.read_text().splitlines()) < N // 2:
            assert child.poll() is None, f"child exited early with {child.returncode}"
            assert time.monotonic() < deadline, "child made no progress"
            time.sleep(0.01)
        os.killpg(child.pid, signal.SIGKILL)  # caller, forkserver, coordinator and workers at once
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
        time.sleep(0.2)
        sweep(f"lmp_{child.pid:x}")  # a SIGKILLed pool cannot clean its shared memory

    promised = {int(x) for x in acked.read_text().split()}
    ran_before = Counter(pt.read_log(str(log)))
    pending, done = _store_view(db)
    pending_items, done_items = set(pending.values()), set(done.values())
    assert promised and len(promised) < N, "the kill did not land mid-batch"
    assert pending, "nothing was pending at the kill: the proof would be empty"
    assert not pending_items & done_items  # never both finished and pending
    assert promised <= pending_items | done_items  # nothing promised is lost
    assert set(ran_before) <= pending_items | done_items  # nothing ran without being journaled
    assert done_items <= set(ran_before)  # what is finished really ran
    assert max(ran_before.values()) == 1  # the first pool ran each command at most once

    size_before = log.stat().st_size
    with LanePool(2, storage=db) as pool:
        assert sorted(pool.recovered) == sorted(pending)
        assert pool.wait_recovered(120)
        outcomes = {cid: pool.mailbox.fetch(cid, mark_fetched=False) for cid in pending}
    with open(log) as f:
        f.seek(size_before)
        ran_after = Counter(int(line) for line in f if line.strip())

    assert ran_after == Counter(pending_items)  # every pending command ran exactly once more
    assert all(o is not None and o.ok and o.result() == pending[cid] for cid, o in outcomes.items())
    assert promised <= set(ran_before) | set(ran_after)
    total = len(done_items) + len(pending_items)
    print(
        f"\nkilled after {len(promised)} acknowledged submits: {len(done_items)} already done, "
        f"{len(pending_items)} recovered and run once more, {total} journaled in all, 0 lost; "
        f"recovered in {pool.recovery.seconds * 1e3:.1f} ms"  # type: ignore[union-attr]
    )


# ---- dead letters and mailbox -------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_dead_letters_persist_across_pools_and_replay(tmp_path: Path) -> None:
    db, counter = tmp_path / "jobs.db", tmp_path / "count"
    with LanePool(1, storage=db, durable=True) as pool:
        fut = pool.submit(pt.fail_first, str(counter), 1)
        with pytest.raises(ValueError, match="failure 1"):
            fut.result(10)
        with pytest.raises(ValueError):
            pool.submit(tasks.boom, "always").result(10)
        cid = fut.command_id
    with LanePool(1, storage=db) as pool:
        letters = pool.stored_dead_letters.list()
        assert [d.error_type for d in letters] == ["builtins.ValueError", "builtins.ValueError"]
        assert letters[0].id == cid and letters[0].attempts == 1 and "failure 1" in letters[0].error_message
        assert "Traceback" in letters[0].traceback
        assert pool.stored_dead_letters.replay([cid]) == [cid]
        assert pool.wait_recovered(30)
        out = pool.mailbox.fetch(cid)
        assert out is not None and out.result() == "ok"  # same id, attempts reset, ran again
        assert [d.fn for d in pool.stored_dead_letters.list()] == ["tasks:boom"]
        assert pool.stored_dead_letters.clear() == 1
    with LanePool(1, storage=db) as pool:
        assert pool.stored_dead_letters.list() == []


@pytest.mark.timeout(60)
def test_replay_after_shutdown_goes_to_the_next_pool(tmp_path: Path) -> None:
    db, counter = tmp_path / "jobs.db", tmp_path / "count"
    pool = LanePool(1, storage=db, durable=True)
    cid = pool.submit(pt.fail_first, str(counter), 1).command_id
    pool.shutdown()
    assert pool.stored_dead_letters.replay() == [cid]  # offline: moved back to pending
    with LanePool(1, storage=db) as pool:
        assert pool.recovered == [cid]
        assert pool.wait_recovered(30)
        assert pool.mailbox.fetch(cid).result() == "ok"  # type: ignore[union-attr]


@pytest.mark.timeout(60)
def test_mailbox_fetch_list_and_cleanup(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with LanePool(2, storage=db) as pool:  # not durable: the mailbox works without the journal
        a = pool.submit(tasks.add, 1, 2, mailbox=True)
        b = pool.submit(tasks.add, 5, tenant="acme")
        c = pool.submit(tasks.boom, "kept", tenant="acme")
        plain = pool.submit(tasks.add, 7)
        assert (a.result(10), b.result(10), plain.result(10)) == (3, 5, 7)
        with pytest.raises(ValueError):
            c.result(10)
        time.sleep(0.05)  # outcomes are committed in the coordinator's next turn
        assert pool.mailbox.fetch(plain.command_id) is None  # nobody asked to keep it
        acme = pool.mailbox.list(tenant="acme")  # oldest first: by finish time, any order here
        assert sorted(r.command_id for r in acme) == [b.command_id, c.command_id]
        assert len(pool.mailbox.list()) == 3
        got = pool.mailbox.fetch(a.command_id)
        assert got is not None and got.result() == 3 and got.fetched
        err = pool.mailbox.fetch(c.command_id)
        assert err is not None and not err.ok and "kept" in (err.error or "")
        with pytest.raises(ValueError, match="kept"):
            err.result()
        assert pool.mailbox.cleanup(older_than=3600) == 0
    # After shutdown the caller reads the file itself.
    assert pool.mailbox.fetch(b.command_id).result() == 5  # type: ignore[union-attr]
    assert pool.mailbox.cleanup(older_than=0) == 3
    assert pool.mailbox.list() == []


@pytest.mark.timeout(60)
def test_mailbox_needs_storage() -> None:
    with LanePool(1) as pool, pytest.raises(ConfigError):
        pool.submit(tasks.add, 1, mailbox=True)
    with pytest.raises(ConfigError):
        LanePool(1, durable=True)


@pytest.mark.timeout(60)
def test_only_durable_lanes_are_journaled(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    lanes = {"jobs": LaneConfig(durable=True), "chat": LaneConfig()}
    with LanePool(1, storage=db, lanes=lanes) as pool:
        pool.pause_lane("jobs")
        pool.pause_lane("chat")
        kept = pool.submit(pt.log_run, "unused", 1, lane="jobs").command_id
        pool.submit(pt.log_run, "unused", 2, lane="chat")
        pool.kill()
    pending, _ = _store_view(db)
    assert list(pending) == [kept]


@pytest.mark.timeout(60)
def test_durable_submit_from_a_done_callback_does_not_deadlock(tmp_path: Path) -> None:
    import threading

    chained: list[object] = []
    ready = threading.Event()
    with LanePool(1, storage=tmp_path / "jobs.db", durable=True) as pool:

        def again(fut: object) -> None:  # runs on the pool's result thread
            chained.append(pool.submit(tasks.add, fut.result(), 1))  # type: ignore[attr-defined]
            ready.set()

        pool.submit(tasks.add, 1).add_done_callback(again)
        assert ready.wait(10)
        assert chained[0].result(10) == 2  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_durable_submit_raises_when_the_journal_cannot_be_written(tmp_path: Path) -> None:
    db, log = tmp_path / "jobs.db", tmp_path / "runs.log"
    with LanePool(1, storage=db, durable=True) as pool:
        assert pool.submit(tasks.add, 1).result(10) == 1
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the file: commits time out
        try:
            with pytest.raises(StorageError, match="not journaled"):
                pool.submit(pt.log_run, str(log), 1)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert pool.submit(tasks.add, 2).result(10) == 2  # the pool carries on
    assert pt.read_log(str(log)) == []  # the command that could not be journaled never ran


@pytest.mark.timeout(60)
def test_notifier_posts_kept_outcomes_and_retries(tmp_path: Path) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got: list[dict[str, object]] = []
    hits: list[int] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hits.append(1)
            if len(hits) == 1:  # the first delivery fails: the notifier must retry it
                self.send_response(500)
            else:
                got.append(json.loads(body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        with LanePool(1, storage=tmp_path / "jobs.db", notify_url=url) as pool:
            ok = pool.submit(tasks.add, 2, 3, mailbox=True)
            bad = pool.submit(tasks.boom, "nope", tenant="acme")
            pool.submit(tasks.add, 1).result(10)  # not kept: no notification
            assert ok.result(10) == 5
            deadline = time.monotonic() + 20
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        server.shutdown()
        server.server_close()
    by_id = {doc["command_id"]: doc for doc in got}
    assert set(by_id) == {ok.command_id, bad.command_id} and len(hits) == 3
    assert by_id[ok.command_id]["value"] == 5 and by_id[ok.command_id]["status"] == "ok"
    assert by_id[bad.command_id]["status"] == "error" and by_id[bad.command_id]["tenant"] == "acme"
    assert "nope" in str(by_id[bad.command_id]["error"])


# ---- the CLI on a real file ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_cli_commands_on_a_real_file(tmp_path: Path) -> None:
    import json

    import click
    from click.testing import CliRunner

    from lane_mp.persistence.cli import register

    @click.group()
    def main() -> None:
        pass

    register(main)
    db, counter, log = tmp_path / "jobs.db", tmp_path / "count", tmp_path / "runs.log"
    with LanePool(1, storage=db, durable=True) as pool:
        dead = pool.submit(pt.fail_first, str(counter), 1)
        with pytest.raises(ValueError):
            dead.result(10)
        kept = pool.submit(tasks.add, 40, 2, tenant="acme")
        assert kept.result(10) == 42
        pool.pause_lane("query")
        waiting = pool.submit(pt.log_run, str(log), 9).command_id
        pool.kill()
    run = CliRunner().invoke

    out = run(main, ["pending", str(db)])
    assert out.exit_code == 0 and "persist_tasks:log_run" in out.output and "pending" in out.output
    rows = json.loads(run(main, ["pending", str(db), "--json"]).output)
    assert [(r["id"], r["integrity"]) for r in rows] == [(waiting, "ok")]

    rows = json.loads(run(main, ["dlq", "list", str(db), "--json"]).output)
    assert [r["id"] for r in rows] == [dead.command_id] and rows[0]["error_type"] == "builtins.ValueError"
    assert "failure 1" in run(main, ["dlq", "list", str(db)]).output

    rows = json.loads(run(main, ["mailbox", "list", str(db), "--tenant", "acme", "--json"]).output)
    assert [r["command_id"] for r in rows] == [kept.command_id]
    one = json.loads(run(main, ["mailbox", "fetch", str(db), str(kept.command_id), "--json"]).output)
    assert one["value"] == 42 and one["fetched"] is False  # looking is not taking
    assert run(main, ["mailbox", "fetch", str(db), "999999"]).exit_code == 1

    stats = json.loads(run(main, ["stats", str(db), "--json"]).output)
    assert stats["commands"]["pending"] == 1 and stats["dead_letters"] == 1 and stats["mailbox"] == 1
    assert "dead_letters" in run(main, ["stats", str(db)]).output

    assert run(main, ["dlq", "replay", str(db)]).exit_code == 2  # ids or --all, never by accident
    assert f"replayed 1: {dead.command_id}" in run(main, ["dlq", "replay", str(db), "--all"]).output
    assert "removed 0" in run(main, ["dlq", "clear", str(db), "--yes"]).output
    with LanePool(1, storage=db) as pool:  # the replayed letter and the waiting command both run
        assert sorted(pool.recovered) == sorted([dead.command_id, waiting])
        assert pool.wait_recovered(30)
        assert pool.mailbox.fetch(dead.command_id).result() == "ok"  # type: ignore[union-attr]
    assert run(main, ["stats", str(tmp_path / "missing.db")]).exit_code == 2
