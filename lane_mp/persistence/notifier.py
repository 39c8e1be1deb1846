"""Optional outcome notifier: POST each kept outcome as JSON to a URL, off the coordinator's loop.

Why a thread in the coordinator: the outcome is known there first (recovered commands have no
caller at all), and an HTTP call can take seconds; the loop only does a ``put_nowait`` on a
bounded queue and never waits. The thread owns the network; nothing else in the coordinator
touches it.

Trade-offs, stated plainly:

* **Best effort.** Deliveries are retried with exponential backoff and jitter (``MAX_ATTEMPTS``),
  then dropped with an error log. The mailbox in storage stays the source of truth; the POST is a
  nudge to go and fetch. A full queue (a dead endpoint and a flood of outcomes) drops new
  notifications, counted in ``dropped``. Pending notifications die with the coordinator.
* **Fork.** The coordinator forks its workers; with this thread running, a fork may copy a lock
  the thread holds (urllib, ssl). Workers never use those, so the copy is inert; the notifier is
  off unless ``notify_url`` is given.

Body: ``{"command_id", "tenant", "status", "error", "finished_at", "value", "result_b64"}``.
``value`` is the result when it is plain data (msgpack-encoded, no numpy, no pickle); otherwise
null and ``result_b64`` carries the stored bytes (``persistence.payloads.decode_stored`` reads them).
"""

from __future__ import annotations

import base64
import json
import queue
import random
import threading
import urllib.error
import urllib.request
from typing import Any, Final

import msgspec
from loguru import logger

from .records import MailboxEntry

__all__ = ["Notifier"]

QUEUE_SIZE: Final = 10_000  # notifications waiting for the network; beyond it new ones are dropped
MAX_ATTEMPTS: Final = 5
INITIAL_BACKOFF_S: Final = 0.2
MAX_BACKOFF_S: Final = 10.0
HTTP_TIMEOUT_S: Final = 5.0
_PLAIN = msgspec.msgpack.Decoder()


def body_of(entry: MailboxEntry) -> bytes:
    """The JSON document for one outcome (see the module docstring)."""
    value: Any = None
    raw = entry.result
    if entry.status == "ok" and raw is not None and raw[:1] == b"M":
        try:
            value = _PLAIN.decode(raw[1:])  # ext types (numpy) raise: they stay in result_b64
            json.dumps(value)
        except (msgspec.DecodeError, TypeError, ValueError):
            value = None
    doc = {
        "command_id": entry.command_id,
        "tenant": entry.tenant,
        "status": entry.status,
        "error": entry.error,
        "finished_at": entry.finished_at,
        "value": value,
        "result_b64": None if raw is None or entry.status != "ok" else base64.b64encode(raw).decode(),
    }
    return json.dumps(doc).encode()


class Notifier:
    """One daemon thread posting queued outcomes to ``url``; ``submit`` never blocks."""

    def __init__(
        self,
        url: str,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        initial_backoff: float = INITIAL_BACKOFF_S,
        timeout: float = HTTP_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_SIZE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lane_mp-notifier", daemon=True)
        self._thread.start()

    def submit(self, entry: MailboxEntry) -> None:
        try:
            self._queue.put_nowait(body_of(entry))
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued within ``timeout`` seconds, then stop (retries are cut short)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(0.5)

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        delay = self.initial_backoff
        for attempt in range(1, self.max_attempts + 1):
            req = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    if 200 <= resp.status < 300:
                        self.sent += 1
                        return
            except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError is a URLError
                logger.debug("notifier: attempt {} to {} failed: {!r}", attempt, self.url, exc)
            if attempt < self.max_attempts and self._stop.wait(delay * random.uniform(0.5, 1.5)):
                break  # closing: give up the retries
            delay = min(MAX_BACKOFF_S, delay * 2)
        self.failed += 1
        logger.error(
            "notifier: giving up on an outcome for {} after {} attempts", self.url, self.max_attempts
        )
