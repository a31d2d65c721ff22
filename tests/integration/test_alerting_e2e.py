"""The whole loop on a real broker: events -> alert -> signed webhook, rollback on the control topic, audit, API."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer
from standardwebhooks.webhooks import Webhook

from driftwatch.client import Client
from driftwatch.config import load_config
from driftwatch.core.profile import build_profile, prediction_columns
from driftwatch.daemon.topics import alerting_topics, ensure_topics
from driftwatch.simulate import generate

from .conftest import WorkerProcess, free_port, http_on_loopback, samples, unique_config, wait_for

SECRET = "whsec_" + base64.b64encode(b"e2e-test-signing-secret-32-bytes").decode()
TOKEN = "e2e-api-token-0123456789abcdef"


class _Receiver(BaseHTTPRequestHandler):
    """Accepts only requests whose Standard Webhooks signature verifies with the reference library."""

    verified: list[dict[str, object]]
    rejected: list[str]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            payload = Webhook(SECRET).verify(body, {k.lower(): v for k, v in self.headers.items()})
        except Exception as e:  # the library raises its own and other errors
            type(self).rejected.append(type(e).__name__)
            self.send_response(401)
        else:
            type(self).verified.append({"id": self.headers["webhook-id"], **payload})
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    """A signature-verifying webhook receiver on loopback."""
    handler = type("Receiver", (_Receiver,), {"verified": [], "rejected": []})
    with http_on_loopback(handler) as url:
        yield url, handler


def test_alert_to_webhook_rollback_audit_and_api(
    tmp_path: Path,
    example_config: Path,
    kafka_bootstrap: str,
    worker_env: dict[str, str],
    pseudonym_key: bytes,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    """A complaint spike fires its rule: on-call gets a signed Alertmanager-v4 webhook, a rollback goes to the control topic, every step is in a verifiable audit file and the log, and the API shows the alert only with the token."""
    url, handler = receiver
    events = list(generate("complaint-spike", events=40_000, seed=31)[0])
    cfg_path = unique_config(tmp_path, example_config, "e2e")
    data = yaml.safe_load(cfg_path.read_text())
    base = load_config(example_config)
    for mid, mc in base.models.items():
        prof = tmp_path / f"{mid}.json"
        prof.write_text(json.dumps(build_profile(mid, mc, prediction_columns(events, mid, limit=2000)).to_json()))
        data["models"][mid]["reference"] = {"profile": str(prof)}
    api_port = free_port()
    audit = tmp_path / "audit.jsonl"
    data["alerting"] = {
        "dry_run": False,
        "notify": {
            "group_wait": "1s",
            "group_interval": "2s",
            "receivers": [{"name": "oncall", "kind": "webhook", "url": url, "secret": {"env": "E2E_SECRET"}}],
        },
        "egress": {"allow": ["127.0.0.1/32"]},  # the receiver listens on loopback
        "actions": {
            "rollback_model": {"kind": "rollback_model", "transport": "kafka"},
            "route_to_human": {"kind": "route_to_human", "transport": "kafka", "requires_approval": True},
        },
        "api": {"enabled": True, "port": api_port, "token": {"env": "E2E_TOKEN"}},
        "audit": {"path": str(audit), "topic": {"name": "e2e-audit", "partitions": 1}},
        "control_topic": {"name": "e2e-control", "partitions": 1},
    }
    # Reports on, without Evidently's drift table (min_rows above any slice): the link, the API and the counts are
    # what this test is about; Evidently's part is tested on the shared report process (tests/scenarios).
    data["reports"] = {"enabled": True, "min_rows": 1_000_000, "directory": str(tmp_path / "reports")}
    cfg_path.write_text(json.dumps(data))
    cfg = load_config(cfg_path)
    asyncio.run(ensure_topics(kafka_bootstrap, cfg.kafka, alerting_topics(cfg)))
    client = Client(cfg, key=pseudonym_key, bootstrap=kafka_bootstrap, envelope_size=100)
    client.start()
    for e in events:
        client.emit_event(e)
    client.close()
    assert client.sent == len(events)

    env = {**worker_env, "E2E_SECRET": SECRET, "E2E_TOKEN": TOKEN}
    worker = WorkerProcess(cfg_path, kafka_bootstrap, env, tmp_path / "worker.log")
    try:

        def firing_webhook() -> dict[str, object] | None:
            for p in handler.verified:
                if p["status"] == "firing" and p["commonLabels"].get("alertname") == "complaint_rate_high":  # type: ignore[attr-defined]
                    return p
            return None

        payload = wait_for(firing_webhook, 120, "a signed complaint_rate_high webhook", interval=0.5)
        assert payload["version"] == "4"
        alert = payload["alerts"][0]  # type: ignore[index]
        assert alert["labels"]["model"] == "support-router"
        assert {"startsAt", "endsAt", "fingerprint", "generatorURL"} <= set(alert)
        assert "driftwatch" in payload
        assert handler.rejected == []

        api = f"http://127.0.0.1:{api_port}"
        wait_for(lambda: _status(f"{api}/readyz") == 200, 30, "/readyz to answer 200")
        assert _status(f"{api}/api/alerts") == 401
        alerts = json.loads(_get(f"{api}/api/alerts", TOKEN))
        assert any(a["rule"] == "complaint_rate_high" for a in _items(alerts))

        # The firing links its report, built by the worker off the stream and served by the API with the token.
        extra = payload["driftwatch"]["alerts"][alert["fingerprint"]]  # type: ignore[index]
        link = extra["report_url"]
        assert link.startswith(f"{api}/api/reports/"), extra
        assert alert["annotations"]["report_url"] == link  # the alert record carries it too
        assert alert["generatorURL"] == link
        assert _status(link) == 401
        page = wait_for(lambda: _get_or_none(link, TOKEN), 60, "the linked report to be served")
        assert "complaint_rate_high" in page
        assert 'id="fairness"' in page
        assert "support-router" in page
        rid = link.rsplit("/", 1)[-1]
        assert (tmp_path / "reports" / f"{rid}.html").read_text(encoding="utf-8") == page
        assert _status_with(f"{api}/api/reports/0123456789abcdef0123", TOKEN) == 404
        assert _status_with(f"{api}/api/reports/..%2Fetc", TOKEN) == 404
        scraped = samples(worker.scrape("driftwatch_reports_total", "driftwatch_reports_stored"))
        assert scraped[("driftwatch_reports_total", (("outcome", "built"),))] >= 1
        assert scraped[("driftwatch_reports_total", (("outcome", "failed"),))] == 0
        assert scraped[("driftwatch_reports_stored", ())] >= 1
    finally:
        assert worker.stop() == 0, worker.log.read_text()[-3000:]

    log = worker.log.read_text()
    for event in (
        "alerting_started",
        "api_listening",
        "notification_sent",
        "action_planned",
        "action_started",
        "action_finished",
        "alerting_stopped",
    ):
        assert event in log, f"no {event} in the worker's log"
    assert TOKEN not in log
    assert SECRET not in log

    control = asyncio.run(_read_all(kafka_bootstrap, "e2e-control"))
    rollbacks = [m for m in control if m.get("action") == "rollback"]
    assert rollbacks, control
    assert rollbacks[0]["model_id"] == "support-router"
    assert rollbacks[0]["from_version"] == "v8"
    assert rollbacks[0]["to_version"] == "v7"
    kinds = [json.loads(line)["kind"] for line in audit.read_text().splitlines()]
    assert "alert.firing" in kinds
    assert kinds.index("action.started") < kinds.index("action.succeeded")
    verify = subprocess.run(
        [sys.executable, "-m", "driftwatch.cli", "audit", "verify", str(audit)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert TOKEN not in audit.read_text()
    assert SECRET not in audit.read_text()


def _items(doc: object) -> list[dict[str, object]]:
    if isinstance(doc, dict):
        for key in ("alerts", "items", "data"):
            if isinstance(doc.get(key), list):
                return doc[key]  # type: ignore[no-any-return]
    return doc  # type: ignore[return-value]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def _get_or_none(url: str, token: str) -> str | None:
    try:
        return _get(url, token)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def _status_with(url: str, token: str) -> int:
    try:
        _get(url, token)
    except urllib.error.HTTPError as e:
        return int(e.code)
    return 200


def _get(url: str, token: str) -> str:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()  # type: ignore[no-any-return]


async def _read_all(bootstrap: str, topic: str) -> list[dict[str, object]]:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await c.start()
    try:
        out = []
        batch = await c.getmany(timeout_ms=3000)
        for msgs in batch.values():
            out.extend(json.loads(m.value) for m in msgs)
        return out
    finally:
        await c.stop()
