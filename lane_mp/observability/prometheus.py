"""A tiny ``/metrics`` endpoint for Prometheus scrapes, stdlib only.

Why not ``prometheus_client``: it would become a runtime dependency and keep its own registry
in parallel with ours; rendering our snapshot and serving it with ``http.server`` is a few lines.
The server runs in a daemon thread so a forgotten ``close()`` never keeps the interpreter alive,
and it binds to 127.0.0.1 by default so metrics are not exposed to the network by accident.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol, Self

from loguru import logger

__all__ = ["serve_metrics", "MetricsServer", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# serve_forever() checks for shutdown this often: close() waits up to this long.
_POLL_INTERVAL_S = 0.05
_JOIN_TIMEOUT_S = 5.0


class _Renderable(Protocol):
    def to_prometheus(self) -> str: ...


SnapshotFn = Callable[[], "_Renderable | str"]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # http.server dispatches on this name
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/metrics", "/metrics/"):
            self.send_error(404, "only /metrics is served here")
            return
        try:
            snap = self.server.snapshot_fn()
            text = snap if isinstance(snap, str) else snap.to_prometheus()
            payload = text.encode("utf-8")
        except Exception:  # noqa: BLE001 - any failure becomes a 500, logged
            logger.opt(exception=True).error("metrics snapshot failed")
            self.send_error(500, "metrics snapshot failed")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        # Route access logs to loguru (disabled by default) instead of stderr.
        logger.debug("metrics http: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    snapshot_fn: SnapshotFn


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running ``/metrics`` endpoint; ``close()`` (or ``with``) stops it and frees the port."""

    def __init__(self, snapshot_fn: SnapshotFn, port: int = 0, host: str = "127.0.0.1") -> None:
        server_cls = _Server6 if ":" in host else _Server
        self._server = server_cls((host, port), _Handler)
        self._server.snapshot_fn = snapshot_fn
        self.host = host
        self.port: int = self._server.server_address[1]
        self._closed = False
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name=f"lane_mp-metrics-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("metrics server listening on {}", self.url)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(_JOIN_TIMEOUT_S)
        logger.debug("metrics server on port {} closed", self.port)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer(url={self.url!r}, closed={self._closed})"


def serve_metrics(snapshot_fn: SnapshotFn, port: int = 0, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``snapshot_fn().to_prometheus()`` at ``/metrics`` (port 0 picks a free port)."""
    return MetricsServer(snapshot_fn, port=port, host=host)
