"""`driftwatch run` with stderr piped: one JSON object per line, its life as events, and nothing it must not say."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftwatch.config import load_config
from driftwatch.daemon.topics import alerting_topics, ensure_topics
from driftwatch.simulate import generate

from .conftest import WorkerProcess, free_port, produce, reference_profiles, unique_config, wait_for

DISPLAY_AGE_BANDS = ["18-24", "25-34"]
"""The test config's ``display_values`` of the sensitive ``age_band``: only these raw values may be shown."""


class _Inbox(BaseHTTPRequestHandler):
    """An on-call webhook receiver that keeps the signature header of every request."""

    signatures: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).signatures.append(self.headers.get("webhook-signature", ""))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def inbox() -> Iterator[tuple[str, type[_Inbox]]]:
    """A webhook receiver on loopback."""
    handler = type("Inbox", (_Inbox,), {"signatures": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()


def _events(path: Path) -> list[dict[str, Any]]:
    """Every stderr line as a JSON object (a line that is not one fails the test)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError(f"stderr line {n} is not JSON: {line[:300]!r}") from None
        assert isinstance(doc, dict), f"stderr line {n} is not a JSON object: {line[:300]!r}"
        assert "event" in doc, f"stderr line {n} is not a log event: {line[:300]!r}"
        out.append(doc)
    return out


def test_piped_worker_logs_its_life_as_json_lines_and_no_secret_or_identifier(
    tmp_path: Path,
    example_config: Path,
    kafka_bootstrap: str,
    worker_env: dict[str, str],
    pseudonym_key: bytes,
    inbox: tuple[str, type[_Inbox]],
) -> None:
    """A worker with stderr piped writes only JSON lines: started, connected, partitions assigned, recovered and ready, alert transitions, checkpoints, stopping and stopped after SIGTERM; no line holds the pseudonymisation key, the API token, the webhook secret, a request or event id of the traffic, or a raw age band that is not a display value."""
    url, handler = inbox
    # Ids with a marker of this run: a line holding any id of the traffic holds the marker.
    req_mark, evt_mark = f"rq{secrets.token_hex(6)}", f"ev{secrets.token_hex(6)}"
    events = list(generate("bias", events=20_000, seed=31)[0])
    for e in events:
        e["request_id"] = f"{req_mark}-{e['request_id']}"
        e["event_id"] = f"{evt_mark}-{e['event_id']}"
    raw_bands = {str(e["attributes"]["age_band"]) for e in events if "attributes" in e}  # type: ignore[index]
    hidden_bands = raw_bands - set(DISPLAY_AGE_BANDS)
    assert hidden_bands, "the traffic should hold age bands that may not be shown"

    token = secrets.token_urlsafe(24)
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    cfg_path = unique_config(tmp_path, example_config, "logs", checkpoint_interval="1s")
    data = yaml.safe_load(cfg_path.read_text())
    reference_profiles(data, example_config, events, tmp_path)
    data["attributes"]["age_band"]["display_values"] = DISPLAY_AGE_BANDS
    data["alerting"].update(
        notify={
            "group_wait": "1s",
            "receivers": [{"name": "oncall", "kind": "webhook", "url": url, "secret": {"env": "LOGS_WEBHOOK_SECRET"}}],
        },
        egress={"allow": ["127.0.0.1/32"]},  # the inbox listens on loopback
        api={"enabled": True, "port": free_port(), "token": {"env": "LOGS_API_TOKEN"}},
    )
    cfg_path.write_text(json.dumps(data))
    cfg = load_config(cfg_path)
    asyncio.run(ensure_topics(kafka_bootstrap, cfg.kafka, alerting_topics(cfg)))
    produce(cfg, pseudonym_key, kafka_bootstrap, events)

    env = {**worker_env, "LOGS_WEBHOOK_SECRET": webhook_secret, "LOGS_API_TOKEN": token}
    err = tmp_path / "worker.err"
    worker = WorkerProcess(cfg_path, kafka_bootstrap, env, tmp_path / "worker.out", stderr=err)
    try:

        def fired_and_paged() -> bool:
            text = err.read_text()
            return '"alert_transition"' in text and '"firing"' in text and bool(handler.signatures)

        wait_for(
            lambda: fired_and_paged() or worker.proc.poll() is not None,
            120,
            "an alert to fire and its signed webhook to arrive",
            interval=0.5,
        )
        assert worker.proc.poll() is None, f"the worker exited: {err.read_text()[-2000:]}"
        wait_for(lambda: '"checkpoint_written"' in err.read_text(), 30, "a checkpoint", interval=0.2)
    finally:
        code = worker.stop()
    assert code == 0, err.read_text()[-3000:]
    assert all(handler.signatures), "webhooks are signed (the secret was in use)"

    logged = _events(err)
    names = [e["event"] for e in logged]
    for event in (
        "worker_started",
        "metrics_listening",
        "broker_connected",
        "partitions_assigned",
        "ready",
        "alert_transition",
        "checkpoint_written",
        "stopping",
        "stopped",
    ):
        assert event in names, f"{event} not logged: {names}"
    assert names.index("stopping") < names.index("stopped")
    started = logged[names.index("worker_started")]
    assert started["bootstrap"] == [kafka_bootstrap]
    assert cfg.kafka.predictions.name in started["topics"]
    worker_id = started["worker"]
    ours = [e for e in logged if e.get("logger", "").startswith("driftwatch.daemon.worker")]
    assert all(e.get("worker") == worker_id for e in ours), "every worker event names its worker"
    assigned = {e["topic"]: e["partitions"] for e in logged if e["event"] == "partitions_assigned"}
    assert assigned[cfg.kafka.predictions.name] == [0, 1, 2, 3]
    transitions = [e for e in logged if e["event"] == "alert_transition"]
    assert {"firing"} <= {t["state"] for t in transitions}
    for t in transitions:
        assert {"rule", "state", "model", "version", "fingerprint"} <= set(t), t
    assert all(isinstance(e["partition"], int) for e in logged if e["event"] == "checkpoint_written")

    text = err.read_text() + (tmp_path / "worker.out").read_text()
    for what, value in (
        ("the pseudonymisation key", pseudonym_key.decode()),
        ("the API token", token),
        ("the webhook secret", webhook_secret),
        ("the webhook secret's key", webhook_secret.removeprefix("whsec_")),
        ("a request id", req_mark),
        ("an event id", evt_mark),
        *(("a raw age band that is not a display value", band) for band in sorted(hidden_bands)),
    ):
        assert value not in text, f"{what} is in the worker's output"
