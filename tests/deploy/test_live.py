"""The commands the containers run, run for real against a real broker with the configs the deployments mount:
the worker answers its probes' paths on the config's ports, and the sidecar answers its probes and takes events
with the token the Secret holds."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

# The integration tests' own conftest (pytest imports it as a package module; there is no other import path).
from ..integration.conftest import chosen_broker, free_port, wait_for  # noqa: TID252
from .conftest import BIN, ROOT, render


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """A real broker for this module (the integration tests' choice: DRIFTWATCH_BOOTSTRAP, Docker, Tansu)."""
    with chosen_broker() as address:
        yield address


def _status(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of a GET (or a POST of ``data``); 0 when nothing answers."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def _localise(text: str, tmp_path: Path, name: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A deployment config made runnable here: its secret files and its data dir moved under ``tmp_path`` (each
    secret a fresh random value), its topics and group unique, its listeners on free loopback ports."""
    data = yaml.safe_load(text)
    secret_dirs = {"/etc/driftwatch/secrets", "/run/secrets"}
    found: dict[str, bytes] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            head, _, base = node.rpartition("/")
            if head in secret_dirs:
                found[base] = secrets.token_hex(16).encode()
                (tmp_path / "secrets").mkdir(exist_ok=True)
                (tmp_path / "secrets" / base).write_bytes(found[base])
                return str(tmp_path / "secrets" / base)
            if head == "/var/lib/driftwatch":
                return str(tmp_path / "data" / base)
        return node

    data = walk(data)
    kafka = data["kafka"]
    kafka["app_id"] = f"dw-{name}"
    for topic in ("predictions", "interactions", "dead_letter", "summaries", "alerts"):
        kafka[topic]["name"] = f"{name}-{kafka[topic]['name']}"
    alerting = data["alerting"]
    alerting["audit"]["topic"]["name"] = f"{name}-audit"
    alerting["control_topic"]["name"] = f"{name}-control"
    data["metrics"].update(host="127.0.0.1", port=free_port())
    alerting["api"].update(host="127.0.0.1", port=free_port())
    if "sidecar" in data:
        data["sidecar"].update(host="127.0.0.1", port=free_port())
    return data, found


@contextlib.contextmanager
def _process(args: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``driftwatch <args>`` in ``cwd`` (its working directory, as in the image), stopped with SIGTERM after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWATCH_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "driftwatch"), *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _container(overlay: str, deployment: str, container: str) -> dict[str, Any]:
    docs = render(overlay)
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == deployment]
    spec = dep["spec"]["template"]["spec"]
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == container]
    return found


def _kubernetes_config() -> str:
    docs = render("overlays/sidecar")
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return str(cm["data"]["driftwatch.yaml"])


def _simulator_args(bootstrap: str, config: Path) -> list[str]:
    """The compose simulator's exact command, its broker and config path replaced by this test's."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    args = [str(a) for a in compose["services"]["simulator"]["command"]]
    args[args.index("--bootstrap") + 1] = bootstrap
    args[args.index("--config") + 1] = str(config)
    return args


def _run_worker(bootstrap: str, text: str, tmp_path: Path, name: str, probes: list[tuple[str, str]]) -> None:
    """Run the worker with a localised ``text`` config and the compose simulator's traffic; every probe
    ``(named port, path)`` must answer 200 (``/readyz`` once the worker has recovered its partitions, which
    takes event time: the traffic), /metrics must answer, and the worker must stop with 0 on SIGTERM."""
    data, _ = _localise(text, tmp_path, name)
    (tmp_path / "data").mkdir()
    config = tmp_path / "driftwatch.yaml"
    config.write_text(json.dumps(data))
    ports = {"api": data["alerting"]["api"]["port"], "metrics": data["metrics"]["port"]}
    log = tmp_path / "worker.log"
    with _process(["run", "-c", str(config), "--bootstrap", bootstrap], tmp_path / "data", log) as proc:
        healthz = f"http://127.0.0.1:{ports['metrics']}/healthz"
        wait_for(lambda: _status(healthz) == 200 or proc.poll() is not None, 90, healthz)
        assert proc.poll() is None, log.read_text()[-3000:]
        sim_log = tmp_path / "simulator.log"
        with _process(_simulator_args(bootstrap, config), tmp_path, sim_log) as simulator:
            for port, path in probes:
                url = f"http://127.0.0.1:{ports[port]}{path}"
                wait_for(lambda u=url: _status(u) == 200 or proc.poll() is not None, 90, url)
                assert proc.poll() is None, log.read_text()[-3000:]
            assert simulator.poll() is None, sim_log.read_text()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5) as response:
            assert b"driftwatch_events_total" in response.read()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert any((tmp_path / "data").iterdir()), "the worker wrote nothing to its data dir (its working directory)"


def test_worker_answers_the_kubernetes_probes(bootstrap: str, tmp_path: Path) -> None:
    """`driftwatch run` with the base's config answers 200 on each probe's path and named port, and stops cleanly."""
    container = _container("base", "driftwatch-worker", "worker")
    assert container["args"][0] == "run"
    probes = [
        (container[p]["httpGet"]["port"], container[p]["httpGet"]["path"])
        for p in ("startupProbe", "livenessProbe", "readinessProbe")
    ]
    _run_worker(bootstrap, _kubernetes_config(), tmp_path, "dplk8s", probes)


def test_worker_answers_the_compose_healthcheck(bootstrap: str, tmp_path: Path) -> None:
    """`driftwatch run` with the compose config answers the path its healthcheck asks (/readyz on the metrics
    port), and the API's probes too."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert ":9464/readyz'" in compose["services"]["driftwatch"]["healthcheck"]["test"][3]
    text = (ROOT / "deploy" / "compose" / "driftwatch.yaml").read_text()
    probes = [("metrics", "/healthz"), ("metrics", "/readyz"), ("api", "/healthz"), ("api", "/readyz")]
    _run_worker(bootstrap, text, tmp_path, "dplcompose", probes)


def test_sidecar_answers_its_probes_and_takes_events_with_the_token(bootstrap: str, tmp_path: Path) -> None:
    """`driftwatch sidecar` with the overlay's config answers its probes' paths, refuses a POST without the
    token and accepts one with it."""
    container = _container("overlays/sidecar", "model-server", "driftwatch-sidecar")
    assert container["args"][0] == "sidecar"
    data, found = _localise(_kubernetes_config(), tmp_path, "dplside")
    (tmp_path / "data").mkdir()
    config = tmp_path / "driftwatch.yaml"
    config.write_text(json.dumps(data))
    topics = tmp_path / "topics.log"
    # The worker creates the topics (the sidecar never does); it exits on SIGTERM once they exist.
    with _process(["run", "-c", str(config), "--bootstrap", bootstrap], tmp_path / "data", topics) as worker:
        api = f"http://127.0.0.1:{data['alerting']['api']['port']}/healthz"
        wait_for(lambda: _status(api) == 200 or worker.poll() is not None, 90, "the worker")
    port = data["sidecar"]["port"]
    log = tmp_path / "sidecar.log"
    with _process(["sidecar", "-c", str(config), "--bootstrap", bootstrap], tmp_path / "data", log) as proc:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            url = f"http://127.0.0.1:{port}{container[probe]['httpGet']['path']}"
            wait_for(lambda u=url: _status(u) == 200 or proc.poll() is not None, 60, url)
            assert proc.poll() is None, log.read_text()[-3000:]
        event = {
            "type": "interaction",
            "schema_version": 1,
            "event_id": "i-1",
            "ts": 1795000000000,
            "request_id": "req-1",
            "kind": "complaint",
        }
        body = json.dumps([event]).encode()
        url = f"http://127.0.0.1:{port}/v1/events"
        headers = {"Content-Type": "application/json"}
        assert _status(url, body, headers) == 401
        token = found[Path(data["sidecar"]["token"]["file"]).name].decode()
        assert _status(url, body, {**headers, "Authorization": f"Bearer {token}"}) == 202
    assert proc.returncode == 0, log.read_text()[-3000:]
