"""The integration tests' broker choice: DRIFTWATCH_BOOTSTRAP, else Kafka in Docker, else Tansu."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftwatch.demo.broker import kafka_ready

# The integration tests' own conftest (pytest imports it as a package module; there is no other import path).
from ..integration.conftest import broker_choice, docker_answers, docker_kafka  # noqa: TID252


def _never() -> bool:
    raise AssertionError("the Docker engine must not be asked when DRIFTWATCH_BOOTSTRAP is set")


def test_bootstrap_env_wins_without_asking_docker() -> None:
    """A set DRIFTWATCH_BOOTSTRAP selects that cluster, and Docker is not even probed."""
    kind, reason = broker_choice({"DRIFTWATCH_BOOTSTRAP": "kafka.internal:9092"}, _never)
    assert kind == "bootstrap"
    assert "kafka.internal:9092" in reason


def test_docker_when_an_engine_answers() -> None:
    """Without DRIFTWATCH_BOOTSTRAP (unset or blank), an answering Docker engine selects Kafka in a container."""
    assert broker_choice({}, lambda: True)[0] == "docker"
    assert broker_choice({"DRIFTWATCH_BOOTSTRAP": "  "}, lambda: True)[0] == "docker"


def test_tansu_when_nothing_else() -> None:
    """Without DRIFTWATCH_BOOTSTRAP and without a Docker engine, the tests start Tansu."""
    kind, reason = broker_choice({}, lambda: False)
    assert kind == "tansu"
    assert "Tansu" in reason


@pytest.fixture
def ping_server(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A Unix-socket HTTP server that answers each connection with the next canned status line."""
    path = tmp_path / "docker.sock"
    answers: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(answers.pop(0) + b"\r\nContent-Length: 2\r\n\r\nOK")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, answers
    server.close()
    thread.join(5)


def test_docker_probe_reads_the_ping_status(ping_server: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    """The engine probe is true only for a 200 answer to GET /_ping on DOCKER_HOST; no socket or another
    scheme is false."""
    path, answers = ping_server
    answers += [b"HTTP/1.1 200 OK", b"HTTP/1.1 500 Internal Server Error"]
    assert docker_answers({"DOCKER_HOST": f"unix://{path}"}) is True
    assert docker_answers({"DOCKER_HOST": f"unix://{path}"}) is False
    assert docker_answers({"DOCKER_HOST": f"unix://{tmp_path / 'absent.sock'}"}) is False
    assert docker_answers({"DOCKER_HOST": "ssh://somewhere"}) is False


@pytest.mark.skipif(not docker_answers(), reason="no Docker engine answers on this machine (DOCKER_HOST / the socket)")
def test_docker_kafka_answers_kafka_requests() -> None:
    """The Docker path starts a Kafka that answers an ApiVersions request at the address it yields."""
    with docker_kafka() as bootstrap:
        host, _, port = bootstrap.rpartition(":")
        assert kafka_ready(int(port), host, timeout=5.0)
