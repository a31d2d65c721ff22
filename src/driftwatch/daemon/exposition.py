"""The worker's own HTTP endpoint: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for probes.

One small threaded WSGI server, the way prometheus_client serves metrics,
plus the two probe paths, so a worker can be probed whether or not its API
(``alerting.api``) is enabled:

- ``/healthz``: 200 while the process serves requests;
- ``/readyz``: 200 once the worker's state is recovered (and the alerting
  side's, when it runs), 503 before;
- every other path: the metrics of ``registry`` (as ``start_http_server``).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["serve_http"]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the base class's name
        """Scrapes and probes are not worth a log line each."""


def _reply(start_response: Callable[..., object], status: str, body: dict[str, str]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def serve_http(host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool]) -> int:
    """Serve metrics and probes on ``host:port`` (0: any free port) in a daemon thread; return the bound port."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., object]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _reply(start_response, "200 OK", {"status": "ok"})
        if path == "/readyz":
            try:
                ok = ready()
            except Exception:  # a probe must answer, never fail with a 500
                ok = False
            if ok:
                return _reply(start_response, "200 OK", {"status": "ready"})
            return _reply(start_response, "503 Service Unavailable", {"status": "starting"})
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    server_class = _Server6 if ":" in host else _Server
    server = make_server(host, port, app, server_class=server_class, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True, name="driftwatch-metrics").start()
    return int(server.server_port)
