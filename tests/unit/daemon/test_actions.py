"""Tests for the action runner in `driftwatch.daemon.actions`: real loopback targets through the one HTTP egress."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from driftwatch.actions.audit import AuditError, AuditLog, read_records
from driftwatch.actions.planner import action_id
from driftwatch.alerts.records import AlertRecord, decode_record, encode_record
from driftwatch.config import AlertingConfig
from driftwatch.daemon.actions import ActionRunner

FP = "a684325636c5e4aa"
SINCE = "2026-11-18T11:35:30.000Z"
T0 = 1_800_000_000.0
LOOPBACK = {"allow": ["127.0.0.1/32"]}
BASE = decode_record(
    b'{"rule":"complaint_rate_high","state":"firing","labels":{"alertname":"complaint_rate_high",'
    b'"model":"support-router","version":"v8","severity":"critical"},"annotations":{},"value":0.129,"n":1488,'
    b'"interval":[0.11,0.14],"window_seconds":300.0,"event_time":"2026-11-18T11:35:30.000Z",'
    b'"active_since":"2026-11-18T11:35:30.000Z","severity":"critical","fingerprint":"a684325636c5e4aa",'
    b'"actions":["act"],"evidence":{"window_seconds":300.0}}'
)


def record(state: str = "firing", actions: Sequence[str] = ("act",)) -> AlertRecord:
    """The alert record of one firing of complaint_rate_high on support-router v8."""
    return msgspec.structs.replace(BASE, state=state, actions=tuple(actions))


def kinds(path: Path) -> list[object]:
    """The kinds of the audit file's records, in order."""
    return [r["kind"] for r in read_records(path)]


@dataclass
class Clock:
    """A settable clock."""

    t: float = T0

    def __call__(self) -> float:
        return self.t


class Target:
    """What a loopback target received: each request, and the audit file's last record at that moment."""

    def __init__(self, audit: Path | None, status: int) -> None:
        self.audit = audit
        self.status = status
        self.url = ""
        self.calls: list[dict[str, object]] = []

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        last = json.loads(self.audit.read_bytes().splitlines()[-1]) if self.audit is not None else None
        self.calls.append(
            {"body": json.loads(raw), "raw": raw, "headers": dict(request.headers), "host": request.host, "last": last}
        )
        return web.json_response({"ok": self.status < 300}, status=self.status)


@asynccontextmanager
async def target(audit: Path | None = None, status: int = 200, host: str = "127.0.0.1") -> AsyncIterator[Target]:
    """A real HTTP server on a free loopback port answering ``status`` at ``/hook``."""
    t = Target(audit, status)
    app = web.Application()
    app.router.add_post("/hook", t.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    t.url = f"http://{host}:{runner.addresses[0][1]}/hook"
    try:
        yield t
    finally:
        await runner.cleanup()


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run one test's coroutine, target servers and runner in the same event loop."""
    asyncio.run(main())


def http(url: str, **extra: object) -> dict[str, object]:
    """An http action to ``url`` without cooldown."""
    return {"kind": "http", "url": url, "cooldown": "0s", **extra}


def alerting(actions: Mapping[str, Mapping[str, object]], egress: object = LOOPBACK, **kw: object) -> AlertingConfig:
    """An alerting config with these actions, allowed to reach loopback unless ``egress`` says otherwise."""
    return AlertingConfig.model_validate({"actions": actions, "egress": egress, **kw})


def test_started_is_on_disk_before_the_target_is_called(tmp_path: Path) -> None:
    """The target, reading the audit file when called, finds action.started for this action as the last record."""
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        async with target(path) as t:
            with AuditLog(path) as log:
                runner = ActionRunner(alerting({"act": http(t.url)}), log, clock=Clock())
                assert await runner.handle(encode_record(record())) == 1
            [call] = t.calls
            last = call["last"]
            assert isinstance(last, dict)
            assert last["kind"] == "action.started"
            assert last["action_id"] == action_id("act", FP, SINCE)
            assert call["headers"]["Idempotency-Key"] == f"{last['action_id']}-do"  # type: ignore[index]

    run(main)
    assert kinds(path) == ["action.started", "action.succeeded"]


def test_bearer_token_is_sent_but_never_audited_or_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A configured bearer token reaches the target's Authorization header and appears in no audit record or log."""
    token = "s3cr3t-action-token-0123456789"
    monkeypatch.setenv("DW_TEST_ACTION_TOKEN", token)
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        async with target(path) as t:
            cfg = alerting(
                {"act": http(t.url, bearer_token={"env": "DW_TEST_ACTION_TOKEN"}, body={"m": "{labels.model}"})}
            )
            with AuditLog(path) as log, capture_logs() as logs:
                runner = ActionRunner(cfg, log, clock=Clock())
                await runner.handle(record())
            assert t.calls[0]["headers"]["Authorization"] == f"Bearer {token}"  # type: ignore[index]
            events = [e["event"] for e in logs]
            assert [e for e in events if e.startswith("action")] == [
                "action_planned",
                "action_started",
                "action_finished",
            ]
            assert token not in repr(logs)
            assert "support-router" not in repr(logs)  # labels and bodies stay out of logs

    run(main)
    data = path.read_bytes()
    assert len(data.splitlines()) == 2
    assert token.encode() not in data
    assert b"Authorization" not in data


def test_http_action_is_signed_for_a_standard_webhooks_verifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a secret configured, the reference standardwebhooks verifier accepts the call; the secret is not audited."""
    from standardwebhooks import Webhook

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    monkeypatch.setenv("DW_TEST_ACTION_SECRET", secret)
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        async with target(path) as t:
            cfg = alerting({"act": http(t.url, secret={"env": "DW_TEST_ACTION_SECRET"}, body={"m": "{labels.model}"})})
            with AuditLog(path) as log:
                runner = ActionRunner(cfg, log)  # the real clock: the verifier checks the timestamp
                await runner.handle(record())
            [call] = t.calls
            headers = {k.lower(): v for k, v in call["headers"].items()}  # type: ignore[attr-defined]
            assert Webhook(secret).verify(call["raw"], headers) == {"m": "support-router"}  # type: ignore[arg-type]
            assert headers["webhook-id"] == f"{action_id('act', FP, SINCE)}-do"
            assert b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in path.read_bytes()
            assert headers["webhook-signature"].encode() not in path.read_bytes()

    run(main)


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_errors_and_connection_errors_become_failed_outcomes(tmp_path: Path) -> None:
    """A 500 or a connection error is audited as action.failed with the status or the egress reason, no message."""
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        async with target(status=500) as t:
            closed = f"http://127.0.0.1:{_closed_port()}/hook"
            with AuditLog(path) as log:
                runner = ActionRunner(alerting({"a": http(t.url), "b": http(closed)}), log, clock=Clock())
                await runner.handle(record(actions=("a",)))
                await runner.handle(record(actions=("b",)))
            assert runner.counters.failed == 2

    run(main)
    failed = [r for r in read_records(path) if r["kind"] == "action.failed"]
    assert [f["outcome"] for f in failed] == [
        {"ok": False, "status": 500, "error": "HTTP 500"},
        {"ok": False, "status": None, "error": "connection"},
    ]
    assert b"refused" not in path.read_bytes()


def test_closed_audit_log_means_the_target_is_never_called(tmp_path: Path) -> None:
    """When the audit trail cannot be written, handle() raises AuditError and nothing is called."""
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        async with target() as t:
            log = AuditLog(path)
            runner = ActionRunner(alerting({"act": http(t.url)}), log, clock=Clock())
            log.close()
            with pytest.raises(AuditError):
                await runner.handle(record())
            assert t.calls == []

    run(main)


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({**msgspec.to_builtins(BASE), "labels": {"model": 3}}).encode(),
        b"{" * 100000,
    ],
)
def test_malformed_alert_records_are_counted_not_raised(tmp_path: Path, value: bytes) -> None:
    """A record that is not a valid alert transition is counted as rejected and decides nothing."""
    with AuditLog(tmp_path / "a.jsonl") as log:
        runner = ActionRunner(alerting({"act": http("http://127.0.0.1:9/hook")}), log)
        assert asyncio.run(runner.handle(value)) == 0
        assert runner.counters.rejected == 1


def test_runner_approve_runs_and_reports_state(tmp_path: Path) -> None:
    """ActionRunner.approve audits, calls the target and returns the action's final state."""
    path = tmp_path / "audit.jsonl"
    clock = Clock()

    async def main() -> None:
        async with target(path) as t:
            with AuditLog(path) as log:
                runner = ActionRunner(alerting({"act": http(t.url, requires_approval=True)}), log, clock=clock)
                await runner.handle(record())
                assert t.calls == []
                [a] = runner.actions()
                clock.t += 30
                out = await runner.approve(str(a["id"]), "token:0123abcd/alice")
            assert out["state"] == "succeeded"
            assert len(t.calls) == 1

    run(main)
    assert kinds(path) == ["action.proposed", "action.approved", "action.started", "action.succeeded"]


def test_runner_can_audit_alert_transitions(tmp_path: Path) -> None:
    """With audit_alerts, firing and resolved transitions are audited before the action decisions they cause."""
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        async with target() as t:
            with AuditLog(path) as log:
                runner = ActionRunner(alerting({"act": http(t.url)}), log, clock=Clock(), audit_alerts=True)
                await runner.handle(record("pending"))
                await runner.handle(record())
                await runner.handle(record("resolved"))

    run(main)
    recs = list(read_records(path))
    assert [r["kind"] for r in recs] == ["alert.firing", "action.started", "action.succeeded", "alert.resolved"]
    assert recs[0]["inputs"] == {"fingerprint": FP, "active_since": SINCE, "value": 0.129}


# -- egress policy -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://169.254.169.254:8080/hook",
    ],
)
def test_metadata_address_is_refused_audited_and_counted(tmp_path: Path, url: str) -> None:
    """An action aimed at the cloud metadata address is refused before connecting, audited as failed and counted."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log, capture_logs() as logs:
        runner = ActionRunner(alerting({"act": http(url, timeout="2s")}), log, clock=Clock())
        assert asyncio.run(runner.handle(record())) == 1
    assert (runner.counters.egress_refused, runner.counters.failed, runner.counters.succeeded) == (1, 1, 0)
    failed = [r for r in read_records(path) if r["kind"] == "action.failed"]
    assert [f["outcome"] for f in failed] == [{"ok": False, "status": None, "error": "refused_target"}]
    [finished] = [e for e in logs if e["event"] == "action_finished"]
    assert (finished["outcome"], finished["error"]) == ("failed", "refused_target")


def test_allowlisted_loopback_gateway_is_reached(tmp_path: Path) -> None:
    """A loopback gateway allowed by CIDR, or by host name, receives the action with its Host header intact."""
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        async with target() as by_cidr, target(host="localhost") as by_name:
            with AuditLog(path) as log:
                cfg = alerting(
                    {"a": http(by_cidr.url), "b": http(by_name.url)}, egress={"allow": ["127.0.0.0/8", "localhost"]}
                )
                runner = ActionRunner(cfg, log, clock=Clock())
                assert await runner.handle(record(actions=("a", "b"))) == 2
            assert len(by_cidr.calls) == len(by_name.calls) == 1
            assert str(by_name.calls[0]["host"]).startswith("localhost:")
            assert runner.counters.succeeded == 2

    run(main)


@pytest.mark.parametrize("egress", [{}, {"allow": ["10.0.0.0/8", "gateway.internal"]}])
def test_loopback_target_not_allowlisted_is_refused(tmp_path: Path, egress: dict[str, object]) -> None:
    """A loopback target the allowlist does not name is refused: the server never sees a request."""
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        async with target() as t, target(host="localhost") as named:
            with AuditLog(path) as log:
                cfg = alerting({"a": http(t.url), "b": http(named.url)}, egress=egress)
                runner = ActionRunner(cfg, log, clock=Clock())
                await runner.handle(record(actions=("a", "b")))
            assert t.calls == named.calls == []
            assert runner.counters.egress_refused == 2

    run(main)
    failed = [r["outcome"] for r in read_records(path) if r["kind"] == "action.failed"]
    assert failed == [{"ok": False, "status": None, "error": "refused_target"}] * 2
