"""Storage layer: the protocol's promises on both backends, then SQLite's file-level guarantees.

Real SQLite files in ``tmp_path``; corruption is done the way a disk or a person would do it,
through a separate sqlite3 connection.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lane_mp.errors import ConfigError, CorruptRecord, EncodeError, StorageError, WrongKey
from lane_mp.persistence import inspect as insp
from lane_mp.persistence import schema
from lane_mp.persistence.memory import MemoryStorage
from lane_mp.persistence.records import DeadLetter, MailboxEntry, StoredCommand
from lane_mp.persistence.sealing import FLAG_AESGCM, FLAG_ZLIB, checksum
from lane_mp.persistence.storage import SQLiteStorage, Storage

KEY = bytes(range(32))


def cmd(i: int, **kw: Any) -> StoredCommand:
    base: dict[str, Any] = {
        "id": i,
        "lane": "query",
        "fn": "tests.jobs:work",
        "payload": b"args-%d" % i,
        "created_at": 1000.0 + i,
        "updated_at": 1000.0 + i,
    }
    base.update(kw)
    return StoredCommand(**base)


def letter(i: int, failed_at: float | None = None) -> DeadLetter:
    return DeadLetter.from_command(
        cmd(i, attempts=3),
        error_type="ValueError",
        error_message=f"bad {i}",
        traceback="Traceback...\nValueError",
        failed_at=2000.0 + i if failed_at is None else failed_at,
    )


def entry(i: int, tenant: str | None = "acme", **kw: Any) -> MailboxEntry:
    base: dict[str, Any] = {
        "command_id": i,
        "tenant": tenant,
        "status": "ok",
        "result": b"r%d" % i,
        "finished_at": 3000.0 + i,
    }
    base.update(kw)
    return MailboxEntry(**base)


class Backend:
    """Opens, reopens and "crashes" a store of one kind, so protocol tests run on both."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "journal.db"
        self.opened: list[Any] = []

    def new(self) -> Any:
        store = MemoryStorage() if self.kind == "memory" else SQLiteStorage(self.path)
        store.open()
        self.opened.append(store)
        return store

    def reopen(self, old: Any) -> Any:
        old.close()
        return self._again(old)

    def crash_and_reopen(self, old: Any) -> Any:
        if self.kind == "memory":
            old.crash()
        else:
            # Closing the raw connection with a transaction open rolls it back, as a kill would.
            old._conn.close()
            old._conn = None
        return self._again(old)

    def _again(self, old: Any) -> Any:
        store = MemoryStorage(old.store) if self.kind == "memory" else SQLiteStorage(self.path)
        store.open()
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    b = Backend(request.param, tmp_path)
    yield b
    b.close_all()


@pytest.fixture
def db(tmp_path: Path):
    store = SQLiteStorage(tmp_path / "j.db")
    store.open()
    yield store
    store.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# ---- protocol, both backends ---------------------------------------------------------------------


def test_backends_satisfy_protocol(backend: Backend) -> None:
    assert isinstance(backend.new(), Storage)


def test_round_trip_and_reopen(backend: Backend) -> None:
    store = backend.new()
    cmds = [
        cmd(1),
        cmd(
            2,
            payload=b"",
            tenant="t",
            deadline=5.5,
            max_attempts=4,
            correlation_id="c-2",
            metadata={"k": [1, 2], "s": "x"},
            mailbox=True,
            priority=0,
            cost=7,
        ),
        cmd(3, status="running", attempts=2),
    ]
    store.save_batch(cmds)
    store.commit()
    assert store.load_pending().commands == cmds
    store = backend.reopen(store)
    result = store.load_pending()
    assert result.commands == cmds
    assert result.quarantined == [] and result.max_command_id == 3


def test_uncommitted_writes_are_lost_on_crash(backend: Backend) -> None:
    store = backend.new()
    store.save_batch([cmd(1), cmd(2)])
    store.commit()
    store.save_batch([cmd(3)])
    store.mark_batch([(1, "done", 1)])
    store = backend.crash_and_reopen(store)
    assert [c.id for c in store.load_pending().commands] == [1, 2]


def test_mark_batch_live_and_final(backend: Backend) -> None:
    store = backend.new()
    store.save_batch([cmd(i) for i in range(1, 6)])
    store.mark_batch(
        [
            (1, "running", 1),
            (2, "done", 1),
            (3, "dead", 3),
            (4, "running", 1),
            (4, "done", 1),
            (99, "done", 1),
        ]
    )
    store.commit()
    store = backend.reopen(store)
    pending = store.load_pending().commands
    assert [(c.id, c.status, c.attempts) for c in pending] == [(1, "running", 1), (5, "pending", 0)]
    assert pending[0].updated_at > 1001.0  # marking stamps the change
    stats = store.stats()
    assert stats["commands"] == {"pending": 1, "running": 1}
    assert stats["finished"] == {"done": 2, "failed": 0, "dead": 1, "cancelled": 0}
    assert stats["max_command_id"] == 5  # finished rows are gone, their ids are not reusable


def test_save_is_upsert_and_retry_back_to_pending(backend: Backend) -> None:
    store = backend.new()
    store.save_batch([cmd(1)])
    store.save_batch([cmd(1, lane="prompt")])
    store.mark_batch([(1, "running", 1), (1, "pending", 1)])
    store.commit()
    (only,) = store.load_pending().commands
    assert (only.lane, only.status, only.attempts) == ("prompt", "pending", 1)


def test_bad_status_is_refused(backend: Backend) -> None:
    store = backend.new()
    with pytest.raises(ConfigError):
        store.mark_batch([(1, "finished", 1)])
    with pytest.raises(ConfigError):
        store.save_batch([cmd(1, status="done")])  # a final command has no business in the journal
    with pytest.raises(ConfigError):
        store.put_mailbox([entry(1, status="maybe")])


def test_dead_letters_persist_list_pop_clear(backend: Backend) -> None:
    store = backend.new()
    store.add_dead_letters([letter(3), letter(1), letter(2)])
    store.commit()
    store = backend.reopen(store)
    assert [d.id for d in store.list_dead_letters()] == [1, 2, 3]  # oldest first
    assert [d.id for d in store.list_dead_letters(limit=1, offset=1)] == [2]
    popped = store.pop_dead_letter(2)
    assert popped == letter(2) and store.pop_dead_letter(2) is None
    replay = popped.to_command(now=5.0)
    assert (replay.status, replay.attempts, replay.payload) == ("pending", 0, popped.payload)
    store.commit()
    store = backend.reopen(store)
    assert [d.id for d in store.list_dead_letters()] == [1, 3]
    assert store.clear_dead_letters() == 2
    store.commit()
    store = backend.reopen(store)
    assert store.list_dead_letters() == [] and store.stats()["dead_letters"] == 0


def test_mailbox_fetch_list_cleanup(backend: Backend) -> None:
    store = backend.new()
    store.put_mailbox(
        [
            entry(1),
            entry(2, tenant="other"),
            entry(3, status="error", result=None, error="boom", finished_at=100.0),
        ]
    )
    store.commit()
    assert store.fetch_mailbox(42) is None
    got = store.fetch_mailbox(1)
    assert got is not None and got.result == b"r1" and got.fetched
    assert store.fetch_mailbox(2, mark_fetched=False).fetched is False  # type: ignore[union-attr]
    store.commit()
    store = backend.reopen(store)
    assert [e.command_id for e in store.list_mailbox()] == [3, 1, 2]
    assert [e.command_id for e in store.list_mailbox(tenant="acme")] == [3, 1]
    assert store.list_mailbox(tenant="acme")[1].fetched is True
    assert store.list_mailbox(tenant="acme")[0].result is None
    assert store.stats()["mailbox_unfetched"] == 2
    assert store.cleanup_mailbox(older_than=3001.5) == 2
    store.commit()
    store = backend.reopen(store)
    assert [e.command_id for e in store.list_mailbox()] == [2]


def test_mailbox_ids_are_never_reused(backend: Backend) -> None:
    # A mailbox entry can belong to a command that was never journaled (not durable); its id must
    # still raise max_command_id, or the next pool could reuse the id and overwrite the outcome.
    store = backend.new()
    store.put_mailbox([entry(77)])
    store.commit()
    store = backend.reopen(store)
    assert store.load_pending().max_command_id == 77


def test_sqlite_storage_pickles_as_its_settings(tmp_path: Path) -> None:
    import pickle

    store = SQLiteStorage(tmp_path / "p.db", compression=True, synchronous="full")
    store.open()
    copy = pickle.loads(pickle.dumps(store))
    store.close()
    assert copy.path == store.path and copy.synchronous == "FULL" and copy._conn is None
    assert copy._sealer.compression is True
    copy.open()
    copy.close()


def test_one_commit_per_turn(backend: Backend) -> None:
    store = backend.new()
    before = store.stats()["commits"]
    for turn in range(3):
        store.save_batch([cmd(turn * 10 + i) for i in range(5)])
        store.mark_batch([(turn * 10, "running", 1)])
        store.put_mailbox([entry(turn)])
        store.commit()
        store.commit()  # nothing staged: no transaction
    assert store.stats()["commits"] - before == 3


def test_closed_store_raises(backend: Backend) -> None:
    store = backend.new()
    store.close()
    with pytest.raises(StorageError):
        store.save_batch([cmd(1)])
    store.close()  # idempotent


# ---- SQLite: group commit, WAL, errors ----------------------------------------------------------


def test_group_commit_is_one_transaction(db: SQLiteStorage) -> None:
    seen: list[str] = []
    db._conn.set_trace_callback(seen.append)  # type: ignore[union-attr]  # white-box on purpose
    db.save_batch([cmd(i) for i in range(100)])
    db.save_batch([cmd(i) for i in range(100, 200)])
    db.mark_batch([(i, "done", 1) for i in range(50)])
    db.add_dead_letters([letter(500)])
    db.put_mailbox([entry(1)])
    db.commit()
    verbs = [s.split()[0].upper() for s in seen]
    assert verbs.count("BEGIN") == 1 and verbs.count("COMMIT") == 1
    assert verbs[0] == "BEGIN" and verbs[-1] == "COMMIT"


def test_wal_mode_and_readers_see_only_commits(db: SQLiteStorage) -> None:
    reader = raw(db.path)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.save_batch([cmd(i) for i in range(1000)])
    assert reader.execute("SELECT count(*) FROM commands").fetchone()[0] == 0
    db.commit()
    assert reader.execute("SELECT count(*) FROM commands").fetchone()[0] == 1000
    reader.close()


def test_failed_write_rolls_back_the_turn(db: SQLiteStorage) -> None:
    side = raw(db.path)
    side.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON commands WHEN NEW.lane = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    side.close()
    db.save_batch([cmd(1)])
    with pytest.raises(StorageError) as info:
        db.save_batch([cmd(2), cmd(3, lane="boom")])
    assert isinstance(info.value.__cause__, sqlite3.Error)
    db.commit()
    assert db.load_pending().commands == []  # cmd(1) went with the failed turn: no half turns


def test_wrong_thread_and_not_a_database(tmp_path: Path, db: SQLiteStorage) -> None:
    errors: list[BaseException] = []

    def other() -> None:
        try:
            db.save_batch([cmd(1)])
        except StorageError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert isinstance(errors[0], StorageError) and isinstance(errors[0].__cause__, sqlite3.Error)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError) as info:
        SQLiteStorage(junk).open()
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        SQLiteStorage(tmp_path / "a.db", synchronous="SOMETIMES")
    with pytest.raises(ConfigError):
        SQLiteStorage(tmp_path / "a.db", encryption_key=b"short")
    store = SQLiteStorage(tmp_path / "a.db", synchronous="full")
    store.open()
    with pytest.raises(EncodeError):
        store.save_batch([cmd(1, metadata={"f": object()})])
    store.close()


# ---- schema ----------------------------------------------------------------------------------------


def test_new_and_empty_files_migrate_to_current(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()  # version 0: a file with no tables at all
    for path in (tmp_path / "new.db", empty):
        store = SQLiteStorage(path)
        store.open()
        assert store.schema_found == 0 and store.stats()["schema_version"] == schema.CURRENT_VERSION
        store.close()
        store.open()
        assert store.schema_found == schema.CURRENT_VERSION
        store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    SQLiteStorage(path).open()
    side = raw(path)
    side.execute("UPDATE schema_version SET version = 99")
    side.close()
    with pytest.raises(StorageError, match="99"):
        SQLiteStorage(path).open()


def test_migration_path_upgrades_and_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.db"
    store = SQLiteStorage(path)
    store.open()
    store.save_batch([cmd(1)])
    store.close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    monkeypatch.setitem(schema.MIGRATIONS, 1, broken)
    conn = raw(path)
    with pytest.raises(RuntimeError):
        schema.migrate(conn, target=2)
    assert schema.read_version(conn) == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchone() is None

    monkeypatch.setitem(schema.MIGRATIONS, 1, lambda c: c.execute("ALTER TABLE commands ADD COLUMN v2 TEXT"))
    assert schema.migrate(conn, target=2) == (1, 2)
    assert schema.read_version(conn) == 2
    assert conn.execute("SELECT id, v2 FROM commands").fetchall() == [(1, None)]
    conn.close()


# ---- integrity -------------------------------------------------------------------------------------


def _filled(path: Path, n: int = 10, **opts: Any) -> None:
    store = SQLiteStorage(path, **opts)
    store.open()
    store.save_batch([cmd(i, payload=bytes([i]) * 400, metadata={"i": i}) for i in range(1, n + 1)])
    store.close()


def _tamper(path: Path, sql: str, *params: Any) -> None:
    side = raw(path)
    side.execute(sql, params)
    side.close()


def test_flipped_and_truncated_payloads_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    _filled(path)
    side = raw(path)
    (payload,) = side.execute("SELECT payload FROM commands WHERE id = 3").fetchone()
    flipped = bytes([payload[0] ^ 0xFF]) + payload[1:]
    side.execute("UPDATE commands SET payload = ? WHERE id = 3", (flipped,))
    side.execute("UPDATE commands SET payload = substr(payload, 1, 10) WHERE id = 5")
    side.execute("UPDATE commands SET payload = NULL WHERE id = 6")
    side.execute("UPDATE commands SET metadata = x'c1' WHERE id = 7")  # bytes changed: checksum
    side.execute("UPDATE commands SET priority = 'high' WHERE id = 8")  # checksum fine, type not
    side.close()
    store = SQLiteStorage(path)
    store.open()
    result = store.load_pending()
    assert [c.id for c in result.commands] == [1, 2, 4, 9, 10]
    assert {(q.row_id, q.reason) for q in result.quarantined} == {
        (3, "checksum mismatch"),
        (5, "checksum mismatch"),
        (6, "payload missing"),
        (7, "checksum mismatch"),
        (8, "bad field"),
    }
    assert result.quarantined_count == 5 and store.stats()["quarantined"] == 5
    store.close()
    store.open()  # quarantine is durable and reported once
    again = store.load_pending()
    assert again.quarantined == [] and len(again.commands) == 5
    rows = store.read_rows("SELECT source, row_id, reason, row FROM quarantine ORDER BY row_id")
    assert rows[0]["source"] == "commands" and msgspec.msgpack.decode(rows[0]["row"])[0] == 3
    store.close()


@pytest.mark.parametrize("opts", [{"compression": True}, {"encryption_key": KEY}], ids=["zlib", "aes"])
def test_tampering_behind_a_valid_checksum_is_caught(tmp_path: Path, opts: dict[str, Any]) -> None:
    path = tmp_path / "j.db"
    _filled(path, **opts)
    side = raw(path)
    (payload,) = side.execute("SELECT payload FROM commands WHERE id = 2").fetchone()
    middle = len(payload) // 2
    forged = payload[:middle] + bytes([payload[middle] ^ 0x55]) + payload[middle + 1 :]
    meta = side.execute("SELECT metadata FROM commands WHERE id = 2").fetchone()[0]
    side.execute(
        "UPDATE commands SET payload = ?, checksum = ? WHERE id = 2", (forged, checksum(forged, meta))
    )
    side.close()
    store = SQLiteStorage(path, **opts)
    store.open()
    result = store.load_pending()
    assert [q.reason for q in result.quarantined] == ["decompress" if "compression" in opts else "decrypt"]
    assert len(result.commands) == 9
    store.close()


def test_corrupt_dead_letter_and_mailbox_rows(db: SQLiteStorage) -> None:
    db.add_dead_letters([letter(1), letter(2)])
    db.put_mailbox([entry(1), entry(2)])
    db.commit()
    _tamper(db.path, "UPDATE dead_letters SET payload = x'00' WHERE id = 1")
    _tamper(db.path, "UPDATE mailbox SET result = x'00' WHERE command_id = 2")
    assert [d.id for d in db.list_dead_letters()] == [2]
    with pytest.raises(CorruptRecord):
        db.fetch_mailbox(2)
    assert [e.command_id for e in db.list_mailbox()] == [1]
    db.commit()
    assert db.stats()["quarantined"] == 2


# ---- encryption and compression ---------------------------------------------------------------


def test_encryption_round_trip_and_wrong_key(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    secret = b"TOP-SECRET-ARGUMENT" * 10
    store = SQLiteStorage(path, encryption_key=KEY, compression=True)
    store.open()
    store.save_batch([cmd(1, payload=secret)])
    store.put_mailbox([entry(1, result=secret)])
    store.add_dead_letters([letter(2)])
    store.close()
    side = raw(path)
    side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    side.close()
    assert b"TOP-SECRET" not in path.read_bytes()
    store = SQLiteStorage(path, encryption_key=KEY)
    store.open()
    assert store.load_pending().commands[0].payload == secret
    assert store.fetch_mailbox(1).result == secret  # type: ignore[union-attr]
    assert store.list_dead_letters()[0] == letter(2)
    assert store.stats()["encrypted"] is True
    store.close()
    with pytest.raises(WrongKey):
        SQLiteStorage(path, encryption_key=bytes(32)).open()
    with pytest.raises(WrongKey):
        SQLiteStorage(path).open()
    locked = SQLiteStorage(path, metadata_only=True)
    locked.open()
    with pytest.raises(WrongKey):
        locked.load_pending()
    with pytest.raises(WrongKey):
        locked.save_batch([cmd(9)])
    locked.close()


def test_missing_cryptography_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ConfigError, match="cryptography"):
        SQLiteStorage(tmp_path / "j.db", encryption_key=KEY)


def test_compression_round_trip_and_per_row_flags(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    big = b"abcdefgh" * 1000
    store = SQLiteStorage(path, compression=True)
    store.open()
    store.save_batch([cmd(1, payload=big), cmd(2, payload=b"tiny")])
    store.close()
    side = raw(path)
    rows = dict(side.execute("SELECT id, codec FROM commands").fetchall())
    stored_len = side.execute("SELECT length(payload) FROM commands WHERE id = 1").fetchone()[0]
    side.close()
    assert rows == {1: FLAG_ZLIB, 2: 0} and stored_len < len(big) // 10
    plain = SQLiteStorage(path)  # reading needs no option: each row says how it was stored
    plain.open()
    assert [c.payload for c in plain.load_pending().commands] == [big, b"tiny"]
    plain.close()
    assert FLAG_AESGCM not in rows.values()


# ---- inspect (CLI data) -------------------------------------------------------------------------


def test_inspect_functions(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = SQLiteStorage(path, encryption_key=KEY)
    store.open()
    store.save_batch([cmd(1, metadata={"a": 1}), cmd(2)])
    store.add_dead_letters([letter(5), letter(6)])
    store.put_mailbox([entry(7), entry(8, tenant="x")])
    store.close()
    _tamper(path, "UPDATE commands SET payload = x'00' WHERE id = 2")

    rows = insp.pending(path)  # no key needed to list
    assert [(r["id"], r["integrity"]) for r in rows] == [(1, "ok"), (2, "checksum mismatch")]
    assert rows[0]["metadata"] == {"a": 1} and "payload" not in rows[0]
    assert [r["id"] for r in insp.dlq_list(path)] == [5, 6]
    assert [r["command_id"] for r in insp.mailbox_list(path, "x")] == [8]
    with pytest.raises(WrongKey):
        insp.mailbox_fetch(path, 7)
    fetched = insp.mailbox_fetch(path, 7, encryption_key=KEY)
    assert fetched is not None and fetched["result"] == b"r7" and fetched["fetched"] is False
    assert insp.mailbox_fetch(path, 99, encryption_key=KEY) is None
    assert insp.dlq_replay(path, [5, 42], encryption_key=KEY) == [5]
    assert [r["id"] for r in insp.pending(path)] == [1, 2, 5]
    stats = insp.storage_stats(path)
    assert stats["dead_letters"] == 1 and stats["quarantined"] == 0  # listing never quarantines
    assert insp.dlq_clear(path) == 1
    assert insp.dlq_list(path) == []
    assert '"result":"cjc="' in insp.to_json(fetched)  # bytes as base64
    with pytest.raises(StorageError):
        insp.pending(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()


def test_format_table() -> None:
    stamp = time.mktime((2024, 5, 17, 12, 30, 0, 0, 0, -1))
    rows = [
        {"id": 7, "fn": "m:f", "created_at": stamp, "payload": b"xyz", "tenant": None, "ok": True},
        {"id": 123, "fn": "x" * 100, "created_at": stamp, "payload": b"", "tenant": "t", "ok": False},
    ]
    text = insp.format_table(rows, ["id", "fn", "created_at", "payload", "tenant", "ok"])
    lines = text.splitlines()
    assert lines[0].split() == ["id", "fn", "created_at", "payload", "tenant", "ok"]
    assert lines[2].startswith("  7  m:f") and "2024-05-17 12:30:00" in lines[2]
    assert "<3 bytes>" in lines[2] and " - " in lines[2] and lines[2].endswith("yes")
    assert "…" in lines[3] and len(lines[3]) < 130
    assert insp.format_table([], ["id"]).splitlines()[-1] == "(no rows)"
