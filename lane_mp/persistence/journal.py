"""The coordinator's journal: which commands are durable, what is staged, one commit per loop turn.

Data flow (all on the coordinator's one thread)::

    accept(Submit) ──durable lane?──▶ staged save ─┐
    dispatch       ──journaled?─────▶ staged mark "running" (+attempts)
    dead letter    ─────────────────▶ staged dead letter          ├──▶ commit(): ONE transaction
    finish(Outcome)──journaled?─────▶ staged mark done|failed|dead|cancelled
                   ──mailbox/tenant/recovered?──▶ staged mailbox entry ┘     └──▶ Committed(upto) to the caller

Why staged in lists, not in the store: every write of a turn goes down in one ``executemany`` per
table right before the commit, so the per-command cost is a list append on the hot path and the
per-turn cost is one transaction (the ``Storage`` group-commit contract).

Why the coordinator commits *before* it dispatches: a durable command is on disk before any worker
can run it, and its caller's ``submit`` returns only after the ``Committed`` record says so.

What travels where a ``StoredCommand`` has no field: ``timeout``, ``key`` (the partition hash) and
``chunk`` ride in ``metadata[INTERNAL_KEY]``; ``max_retries`` is ``max_attempts - 1``; a deadline is
stored as wall-clock time (monotonic time dies with the process).
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import msgspec
from loguru import logger

from lane_mp.config import Lane
from lane_mp.errors import StorageError
from lane_mp.ipc.blocks import BlockCache, BlockPool
from lane_mp.protocol import messages as m

from .notifier import Notifier
from .payloads import bundle, unbundle
from .records import DeadLetter, MailboxEntry, QuarantinedRow, StoredCommand
from .storage import Storage

__all__ = ["INTERNAL_KEY", "CommitReport", "Journal", "RecoveryReport", "storage_request"]

INTERNAL_KEY: Final = "__lane_mp__"
# After a failed commit, outcomes (marks, dead letters, mailbox entries) are retried on the next
# turn, up to this many; beyond it they are dropped with an error log rather than grow without end
# while the disk stays full. Dropped marks only mean a finished command may run again.
MAX_RETRY_BUFFER: Final = 100_000
_ERROR_INFO = msgspec.msgpack.Decoder(m.ErrorInfo)
# What bundling a payload can raise: a block gone (OSError), a malformed payload (ValueError/msgspec).
_BUNDLE_ERRORS: Final = (OSError, ValueError, msgspec.MsgspecError)
_RAW: Final = (bytes,)  # answers keep bytes as bytes: they travel as msgpack, never as JSON


class RecoveryReport(msgspec.Struct, frozen=True):
    """What start-up recovery found, sent to the caller in ``Hello`` (``pool.recovery``)."""

    recovered: list[int] = []  # ids re-enqueued (their outcomes go to the mailbox)
    quarantined: list[QuarantinedRow] = []  # corrupt rows, reported and never run
    dead_lettered: list[int] = []  # ids whose lane no longer exists: kept as dead letters
    id_floor: int = 0  # the highest id ever used in this store; new ids start above it
    seconds: float = 0.0  # time spent loading and re-enqueueing


class CommitReport(NamedTuple):
    """One turn's commit: ``ack`` says a ``Committed`` record is owed to the caller."""

    ack: bool
    upto: int
    failed: list[int]
    error: str


class Journal:
    """Owns one open :class:`Storage` inside the coordinator process; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        lanes: Sequence[Lane],
        *,
        durable: bool,
        token: str,
        notify_url: str | None = None,
    ) -> None:
        self.storage = storage
        self.lane_names = [lane.name for lane in lanes]
        self.lane_index = {lane.name: i for i, lane in enumerate(lanes)}
        self.durable_lane = [durable or lane.config.durable for lane in lanes]
        self.live: set[int] = set()  # journaled and not final yet
        self.background: set[int] = set()  # recovered or replayed: no caller future, outcome to mailbox
        self.report = RecoveryReport()
        self.commits = 0
        self.errors = 0
        self._token = token
        self._saves: list[StoredCommand] = []
        self._marks: list[tuple[int, str, int]] = []
        self._letters: list[DeadLetter] = []
        self._mail: list[MailboxEntry] = []
        self._rejected: list[int] = []
        self._reject_error = ""
        self._dead: set[int] = set()
        self._running: dict[int, int] = {}  # dispatched since the last commit: id -> attempts
        self._ripe: dict[int, int] = {}  # dispatched before the last commit: mark them now
        self._dirty = False  # a control request wrote to the store directly
        self._upto = 0
        self._cache = BlockCache(readonly=True)
        self._blocks: BlockPool | None = None  # leased lazily, only for recovered large payloads
        self._owned: dict[int, list[str]] = {}
        # Kept outcomes are POSTed after their commit, so a notified reader always finds them.
        self.notifier = Notifier(notify_url) if notify_url else None

    # ---- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        self.storage.open()

    def close(self) -> None:
        """Commit what is staged, then release the store. Never raises: it runs on the way out."""
        try:
            self.commit()
            self.storage.close()
            if self.notifier is not None:
                self.notifier.close()
        except Exception as exc:  # noqa: BLE001 - exiting: a log line is all that is left to do
            logger.error("journal close failed: {!r}", exc)

    # ---- recovery --------------------------------------------------------------------------
    def recover(self) -> list[tuple[m.Submit, int]]:
        """(Submit, attempts so far) for every live row, oldest first; corrupt rows quarantined.

        Commands keep their id and attempt count: a run cut short by the crash counts as an
        attempt (its ``running`` mark was committed), so a retry policy still bounds a command that
        keeps killing its pool. Rows whose lane is gone become dead letters instead of failing.
        """
        t0 = time.perf_counter()
        found = self.storage.load_pending()
        wall, mono = time.time(), time.monotonic()
        out: list[tuple[m.Submit, int]] = []
        orphans: list[DeadLetter] = []
        for cmd in found.commands:
            lane = self.lane_index.get(cmd.lane)
            if lane is None:
                orphans.append(
                    DeadLetter.from_command(
                        cmd,
                        error_type="UnknownLane",
                        error_message=f"lane {cmd.lane!r} is not a lane of this pool",
                    )
                )
                continue
            out.append((self._submit_of(cmd, lane, wall, mono), cmd.attempts))
            self.live.add(cmd.id)
            self.background.add(cmd.id)
        if orphans:
            self._letters.extend(orphans)
            self._marks.extend((d.id, "dead", d.attempts) for d in orphans)
            self.commit()
        self.report = RecoveryReport(
            [sub.id for sub, _ in out],
            found.quarantined,
            [d.id for d in orphans],
            found.max_command_id,
            time.perf_counter() - t0,
        )
        if found.quarantined:
            logger.warning("journal: {} corrupt row(s) quarantined at recovery", len(found.quarantined))
        return out

    def _submit_of(self, cmd: StoredCommand, lane: int, wall: float, mono: float) -> m.Submit:
        meta = cmd.metadata
        extra: dict[str, Any] = {}
        if meta and INTERNAL_KEY in meta:
            meta = dict(meta)
            extra = meta.pop(INTERNAL_KEY) or {}
            meta = meta or None
        payload, blocks = self._unbundle(cmd.payload)
        if blocks:
            self._owned[cmd.id] = blocks
        return m.Submit(
            id=cmd.id,
            fn=cmd.fn,
            payload=payload,
            lane=lane,
            priority=cmd.priority,
            deadline=None if cmd.deadline is None else cmd.deadline - wall + mono,
            timeout=extra.get("timeout"),
            cost=cmd.cost,
            key=extra.get("key"),
            tenant=cmd.tenant,
            correlation_id=cmd.correlation_id,
            metadata=meta,
            chunk=bool(extra.get("chunk", False)),
            max_retries=None if cmd.max_attempts is None else cmd.max_attempts - 1,
            submitted_at=cmd.created_at,
            mailbox=True,
        )

    def _unbundle(self, payload: bytes) -> tuple[bytes, list[str]]:
        if self._blocks is None:
            self._blocks = BlockPool(f"lmp_{self._token}_b{os.getpid():x}_")
        return unbundle(payload, self._blocks)

    def hello_fields(self) -> tuple[int, dict[str, Any]]:
        """(id floor, recovery report) for the caller's ``Hello``."""
        return self.report.id_floor, msgspec.to_builtins(self.report)

    # ---- hooks on the hot path -------------------------------------------------------------
    def accepted(self, sub: m.Submit) -> None:
        """Stage a durable command; recovered and replayed ones are in the store already."""
        cid = sub.id
        if cid in self.background or not self.durable_lane[sub.lane]:
            return
        try:
            payload = bundle(sub.payload, self._cache)
        except _BUNDLE_ERRORS as exc:  # a block vanished: it cannot be journaled, so it must not run
            self._rejected.append(cid)
            self._reject_error = f"cannot journal command {cid}: {exc!r}"
            return
        self._saves.append(self._stored(sub, payload))
        self.live.add(cid)
        self._upto = max(self._upto, cid)

    def _stored(self, sub: m.Submit, payload: bytes, attempts: int = 0) -> StoredCommand:
        extra: dict[str, Any] = {}
        if sub.timeout is not None:
            extra["timeout"] = sub.timeout
        if sub.key is not None:
            extra["key"] = sub.key
        if sub.chunk:
            extra["chunk"] = True
        meta = {**(sub.metadata or {}), INTERNAL_KEY: extra} if extra else sub.metadata
        now = time.time()
        return StoredCommand(
            id=sub.id,
            lane=self.lane_names[sub.lane],
            fn=sub.fn,
            payload=payload,
            priority=sub.priority,
            cost=sub.cost,
            tenant=sub.tenant,
            deadline=None if sub.deadline is None else sub.deadline - time.monotonic() + now,
            attempts=attempts,
            max_attempts=None if sub.max_retries is None else sub.max_retries + 1,
            created_at=sub.submitted_at or now,
            updated_at=now,
            correlation_id=sub.correlation_id,
            metadata=meta,
            mailbox=sub.mailbox,
        )

    def dispatched(self, cid: int, attempts: int) -> None:
        # Not written at once: most commands finish within a turn or two, and their "running" mark
        # would be an UPDATE followed by a DELETE. A mark is written at the first commit after the
        # one that saw the dispatch, if the command is still live (see commit()).
        if cid in self.live:
            self._running[cid] = attempts

    def dead_letter(
        self, sub: m.Submit, attempts: int, error_type: str, message: str, tb: str, keep_all: bool
    ) -> None:
        """A permanent failure: journaled commands always land in the stored dead-letter queue;
        others only when the pool keeps dead letters (``keep_all``)."""
        if sub.id not in self.live and not keep_all:
            return
        try:
            stored = self._stored(sub, bundle(sub.payload, self._cache), attempts)
        except _BUNDLE_ERRORS as exc:
            logger.error("journal: dead letter {} not stored: {!r}", sub.id, exc)
            return
        self._letters.append(
            DeadLetter.from_command(stored, error_type=error_type, error_message=message, traceback=tb)
        )
        self._dead.add(sub.id)

    def finished(self, sub: m.Submit, attempts: int, status: int, payload: bytes) -> None:
        """The final outcome: take it out of the journal, keep it in the mailbox if asked to."""
        cid = sub.id
        if self._running:
            self._running.pop(cid, None)
        if self._ripe:
            self._ripe.pop(cid, None)
        if status == m.ERROR and cid in self.live and _error_name(payload) == "BrokenPool":
            return  # the pool broke (e.g. its initializer fails): it never ran, keep it for the next pool
        dead = cid in self._dead
        if dead:
            self._dead.discard(cid)
        if cid in self.live:
            self.live.discard(cid)
            if status == m.OK:
                final = "done"
            elif dead:
                final = "dead"
            elif status == m.ERROR and _error_name(payload) == "CancelledError":
                final = "cancelled"
            else:
                final = "failed"
            self._marks.append((cid, final, attempts))
        background = cid in self.background
        if background or sub.mailbox or sub.tenant is not None:
            self.background.discard(cid)
            self._mail.append(self._entry(sub, status, payload))
        owned = self._owned.pop(cid, None)
        if owned and self._blocks is not None:
            for name in owned:
                self._blocks.give_back(name)

    def _entry(self, sub: m.Submit, status: int, payload: bytes) -> MailboxEntry:
        # Errors keep their encoded form too, tagged so the reader can rebuild the exception:
        # R = pickled (exception, traceback) from the worker, I = an ErrorInfo from the pool.
        if status == m.OK:
            try:
                return MailboxEntry(
                    command_id=sub.id, tenant=sub.tenant, status="ok", result=bundle(payload, self._cache)
                )
            except _BUNDLE_ERRORS as exc:
                return MailboxEntry(
                    command_id=sub.id, tenant=sub.tenant, status="error", error=f"result lost: {exc!r}"
                )
        if status == m.RAISED:
            try:
                exc_obj, _tb = pickle.loads(payload)
                text = f"{type(exc_obj).__name__}: {exc_obj}"
            except Exception:  # noqa: BLE001 - unpickling runs user code
                text = "remote exception (its class cannot be loaded here)"
            return MailboxEntry(
                command_id=sub.id, tenant=sub.tenant, status="error", result=b"R" + payload, error=text
            )
        info = _ERROR_INFO.decode(payload)
        return MailboxEntry(
            command_id=sub.id,
            tenant=sub.tenant,
            status="error",
            result=b"I" + payload,
            error=f"{info.error}: {info.message}",
        )

    # ---- the group commit ------------------------------------------------------------------
    def commit(self) -> CommitReport | None:
        """Write everything staged this turn in one transaction. None when there was nothing."""
        if self._ripe:
            self._marks.extend((cid, "running", attempts) for cid, attempts in self._ripe.items())
        self._ripe, self._running = self._running, {}
        if not (self._saves or self._marks or self._letters or self._mail or self._rejected or self._dirty):
            return None
        saves, marks, letters, mail = self._saves, self._marks, self._letters, self._mail
        self._saves, self._marks, self._letters, self._mail = [], [], [], []
        failed, self._rejected = self._rejected, []
        error, self._reject_error = self._reject_error, ""
        self._dirty = False
        store = self.storage
        try:
            # Order matters: a command saved and finished in the same turn is inserted, then deleted.
            store.save_batch(saves)
            store.mark_batch(marks)
            store.add_dead_letters(letters)
            store.put_mailbox(mail)
            store.commit()
            self.commits += 1
            if self.notifier is not None:
                for entry in mail:
                    self.notifier.submit(entry)
        except Exception as exc:  # noqa: BLE001 - disk full, locked, a bug: the loop must go on
            self.errors += 1
            error = f"journal commit failed: {exc}"
            logger.error("{}", error)
            failed.extend(cmd.id for cmd in saves)  # not on disk: they fail, their submit raises
            self.live.difference_update(cmd.id for cmd in saves)
            self._requeue(marks, letters, mail)
        return CommitReport(bool(saves or failed), self._upto, failed, error)

    def _requeue(self, marks: list[Any], letters: list[Any], mail: list[Any]) -> None:
        if len(self._marks) + len(marks) + len(letters) + len(mail) > MAX_RETRY_BUFFER:
            logger.error("journal: dropping {} staged outcome writes after repeated failures", len(marks))
            return
        self._marks[:0] = marks
        self._letters[:0] = letters
        self._mail[:0] = mail

    # ---- requests from the caller (mailbox, dead letters, stats) ---------------------------
    def request(self, op: str, arg: Any) -> tuple[Any, list[m.Submit]]:
        """Answer one ``journal.*`` control request; replays also return Submits to enqueue."""
        try:
            if op == "journal.dlq.replay":
                return self._replay(arg)
            if op == "journal.stats":
                stats = self.storage.stats()
                stats["journal"] = {
                    "live": len(self.live),
                    "background": len(self.background),
                    "commits": self.commits,
                    "errors": self.errors,
                }
                return stats, []
            if op == "journal.background":
                return len(self.background), []
            data, wrote = storage_request(self.storage, op, arg)
            self._dirty |= wrote
            return data, []
        except Exception as exc:  # noqa: BLE001 - answered as data, raised in the caller
            return {"__error__": type(exc).__name__, "message": str(exc)}, []

    def _replay(self, ids: list[int] | None) -> tuple[Any, list[m.Submit]]:
        if ids is None:
            ids = [d.id for d in self.storage.list_dead_letters(limit=1 << 62)]
        wall, mono = time.time(), time.monotonic()
        subs: list[m.Submit] = []
        for cid in ids:
            letter = self.storage.pop_dead_letter(cid)
            if letter is None:
                continue
            lane = self.lane_index.get(letter.lane)
            if lane is None:  # nowhere to run it: it stays a dead letter
                self.storage.add_dead_letters([letter])
                continue
            cmd = letter.to_command(now=wall)
            self._saves.append(cmd)
            self.live.add(cid)
            self.background.add(cid)
            subs.append(self._submit_of(cmd, lane, wall, mono))
        self._dirty = True
        return [sub.id for sub in subs], subs


def _error_name(payload: bytes) -> str:
    try:
        return _ERROR_INFO.decode(payload).error
    except msgspec.DecodeError:
        return ""


def storage_request(storage: Storage, op: str, arg: Any) -> tuple[Any, bool]:
    """Mailbox and dead-letter operations as plain data: (answer, whether it wrote).

    Shared by the coordinator (its open store, while the pool runs) and the caller (the file
    itself, once the pool is shut down), so both paths answer alike.
    """
    if op == "journal.mailbox.fetch":
        entry = storage.fetch_mailbox(arg["id"], mark_fetched=arg.get("mark", True))
        return (None if entry is None else msgspec.to_builtins(entry, builtin_types=_RAW)), bool(
            arg.get("mark", True)
        )
    if op == "journal.mailbox.list":
        rows = storage.list_mailbox(arg.get("tenant"), limit=arg.get("limit"))
        return [msgspec.to_builtins(e, builtin_types=_RAW) for e in rows], False
    if op == "journal.mailbox.cleanup":
        return storage.cleanup_mailbox(float(arg)), True
    if op == "journal.dlq.list":
        letters = storage.list_dead_letters(arg.get("limit", 100), arg.get("offset", 0))
        return [msgspec.to_builtins(d, builtin_types=_RAW) for d in letters], False
    if op == "journal.dlq.clear":
        return storage.clear_dead_letters(), True
    if op == "journal.dlq.requeue":  # offline replay: back to pending, the next pool runs them
        moved = []
        ids = arg if arg is not None else [d.id for d in storage.list_dead_letters(limit=1 << 62)]
        for cid in ids:
            letter = storage.pop_dead_letter(cid)
            if letter is not None:
                storage.save_batch([letter.to_command()])
                moved.append(cid)
        return moved, True
    raise StorageError(f"unknown journal request {op!r}", op=op)
