"""The notifier against a real broker and real HTTP receivers (and a real Alertmanager)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from driftwatch._time import rfc3339
from driftwatch.alerts.engine import fingerprint
from driftwatch.alerts.notifier import Notifier
from driftwatch.alerts.records import AlertRecord, decode_record, encode_record
from driftwatch.config import Config
from driftwatch.daemon.notifier import NotifierService
from driftwatch.daemon.signing import sign

from .conftest import free_port

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
SECRET = os.urandom(32)


async def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Await ``condition`` becoming true (polled), failing with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def config(
    name: str, receivers: list[dict[str, object]], *, egress: tuple[str, ...] = ("127.0.0.1/32",), **notify: object
) -> Config:
    """A minimal config with topics and consumer group unique to one test, fast notify timings, loopback allowed."""
    return Config.model_validate(
        {
            "attributes": {"region": {}},
            "models": {"support-router": {"favorable": ["human"]}},
            "kafka": {"alerts": {"name": f"{name}-alerts", "partitions": 1}, "session_timeout": "2s"},
            "alerting": {
                "notify": {
                    "receivers": receivers,
                    "group_wait": "200ms",
                    "group_interval": "500ms",
                    "repeat_interval": "1h",
                    "dead_letter": {"name": f"{name}-notify-dead-letter", "partitions": 1},
                    "group_id": f"{name}-notifier",
                    **notify,
                },
                "egress": {"allow": list(egress)},
            },
        }
    )


# One firing of complaint_rate_high as the engine writes it; record() re-stamps it with the wall clock.
_FIRING = decode_record(
    b'{"rule":"complaint_rate_high","state":"firing","labels":{"alertname":"complaint_rate_high",'
    b'"model":"support-router","version":"v8","severity":"critical"},"annotations":{"summary":'
    b'"Complaint rate above 8%","runbook_url":"https://runbooks.example.internal/c"},"value":0.129,'
    b'"n":1488,"interval":[0.113,0.147],"window_seconds":300.0,"event_time":"2026-11-18T11:35:30.000Z",'
    b'"active_since":"2026-11-18T11:35:30.000Z","severity":"critical","fingerprint":"-","actions":[],'
    b'"evidence":{"window_seconds":300.0}}'
)


def record(state: str, model: str = "support-router", *, since: float | None = None) -> AlertRecord:
    """An alert record as the engine writes it, stamped with the wall clock."""
    labels = {**_FIRING.labels, "model": model}
    now = time.time()
    return msgspec.structs.replace(
        _FIRING,
        state=state,
        labels=labels,
        fingerprint=fingerprint(labels),
        event_time=rfc3339(now),
        active_since=rfc3339(now if since is None else since),
    )


async def produce(bootstrap: str, topic: str, *records: AlertRecord) -> None:
    """Write records to the alerts topic, keyed by fingerprint, as the worker does."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(topic, encode_record(r), key=r.fingerprint.encode())
    finally:
        await producer.stop()


class Receiver:
    """A loopback webhook receiver: verifies Standard Webhooks signatures, answers from a script, dedupes ids."""

    def __init__(self, secret: bytes | None = None, script: list[str] | None = None, port: int = 0) -> None:
        self.secret = secret
        self.script = list(script or [])
        self.port = port
        self.requests: list[tuple[float, dict[str, str], bytes, int]] = []
        self.delivered: Counter[str] = Counter()  # webhook-id -> times answered 2xx
        self.bodies: list[dict[str, object]] = []
        self._hang = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def duplicates(self) -> int:
        """Deliveries of an id already delivered."""
        return sum(c - 1 for c in self.delivered.values())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        status = 200
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
            except (WebhookVerificationError, ValueError):
                status = 401
        step = self.script.pop(0) if self.script and status == 200 else "200"
        if step == "hang":
            self.requests.append((time.monotonic(), headers, body, 0))
            await self._hang.wait()
            return web.Response(status=200)
        code, _, retry_after = step.partition(":")
        status = status if status != 200 else int(code)
        self.requests.append((time.monotonic(), headers, body, status))
        if 200 <= status < 300:
            self.delivered[headers.get("webhook-id", "")] += 1
            self.bodies.append(msgspec.json.decode(body))
        return web.Response(status=status, headers={"Retry-After": retry_after} if retry_after else {})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._hang.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_signed_webhooks_firing_then_resolved(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verifying receiver gets the firing then the resolved notification; tampered or stale copies are refused."""
    monkeypatch.setenv("DW_TEST_WEBHOOK_SECRET", "whsec_" + base64.b64encode(SECRET).decode())

    async def main() -> None:
        rx = Receiver(secret=SECRET)
        await rx.start()
        name = _unique("notify-signed")
        cfg = config(name, [{"name": "oncall", "url": rx.url, "secret": {"env": "DW_TEST_WEBHOOK_SECRET"}}])
        audit: list[dict[str, object]] = []
        svc = NotifierService(cfg, kafka_bootstrap, audit=audit.append)
        await svc.start()
        try:
            firing = record("firing")
            await produce(kafka_bootstrap, cfg.kafka.alerts.name, firing)
            await until(lambda: len(rx.bodies) == 1, 15, "the firing notification")
            await produce(kafka_bootstrap, cfg.kafka.alerts.name, record("resolved", since=time.time() - 1))
            await until(lambda: len(rx.bodies) == 2, 10, "the resolved notification")
        finally:
            await svc.stop()
        assert [b["status"] for b in rx.bodies] == ["firing", "resolved"]
        assert rx.bodies[0]["version"] == "4"
        assert all(status == 200 for *_, status in rx.requests)  # every request of ours verified
        assert rx.duplicates == 0
        assert svc.sent == 2
        assert [a["type"] for a in audit] == ["notification_delivered"] * 2
        # the receiver's check is real: a tampered body and a stale timestamp are both refused
        _, headers, body, _ = rx.requests[0]
        async with aiohttp.ClientSession() as http:
            async with http.post(rx.url, data=body.replace(b"firing", b"resolv"), headers=headers) as resp:
                assert resp.status == 401
            old = int(time.time()) - 600
            stale = {
                **headers,
                "webhook-timestamp": str(old),
                "webhook-signature": sign(SECRET, headers["webhook-id"], old, body),
            }
            async with http.post(rx.url, data=body, headers=stale) as resp:
                assert resp.status == 401
            async with http.post(rx.url, data=body, headers=headers) as resp:
                assert resp.status == 200  # the untouched request still verifies
        await rx.stop()

    asyncio.run(main())


def test_webhook_links_the_dashboard_when_grafana_is_configured(kafka_bootstrap: str) -> None:
    """With grafana.url set, the running notifier's webhook carries a dashboard_url with the alert's variables."""

    async def main() -> None:
        rx = Receiver()
        await rx.start()
        name = _unique("notify-dashboard")
        base = config(name, [{"name": "oncall", "url": rx.url}])
        cfg = base.model_copy(
            update={"grafana": base.grafana.model_copy(update={"url": "https://grafana.example.test"})}
        )
        svc = NotifierService(cfg, kafka_bootstrap)
        await svc.start()
        try:
            await produce(kafka_bootstrap, cfg.kafka.alerts.name, record("firing"))
            await until(lambda: len(rx.bodies) == 1, 15, "the firing notification")
        finally:
            await svc.stop()
            await rx.stop()
        (alert,) = rx.bodies[0]["alerts"]  # type: ignore[misc]
        url = alert["annotations"]["dashboard_url"]
        assert url.startswith("https://grafana.example.test/d/driftwatch-")
        assert "var-model=support-router" in url

    asyncio.run(main())


def test_retries_through_500_429_timeout_until_delivered(kafka_bootstrap: str) -> None:
    """A receiver answering 500, then 429 with Retry-After, then hanging, then 200 gets the notification once."""

    async def main() -> None:
        rx = Receiver(script=["500", "429:1", "hang", "200"])
        await rx.start()
        name = _unique("notify-retry")
        cfg = config(name, [{"name": "oncall", "url": rx.url, "timeout": "500ms"}])
        svc = NotifierService(cfg, kafka_bootstrap, backoff_base=0.05, backoff_cap=0.2)
        await svc.start()
        try:
            await produce(kafka_bootstrap, cfg.kafka.alerts.name, record("firing"))
            await until(lambda: len(rx.bodies) == 1, 20, "delivery after the receiver recovers")
        finally:
            await svc.stop()
            await rx.stop()
        assert [status for *_, status in rx.requests] == [500, 429, 0, 200]
        assert len({h["webhook-id"] for _, h, _, _ in rx.requests}) == 1  # one id across every retry
        t429, t_next = rx.requests[1][0], rx.requests[2][0]
        assert t_next - t429 >= 0.95  # Retry-After: 1 honoured
        assert (svc.sent, svc.retried, svc.dead_lettered) == (1, 3, 0)

    asyncio.run(main())


async def dead_letter_one(
    bootstrap: str, rx: Receiver, prefix: str, **kw: tuple[str, ...]
) -> tuple[Config, list[dict[str, object]]]:
    """Send one firing record to a notifier delivering to ``rx`` and wait until it is dead-lettered."""
    await rx.start()
    cfg = config(_unique(prefix), [{"name": "oncall", "url": rx.url}], **kw)
    audit: list[dict[str, object]] = []
    svc = NotifierService(cfg, bootstrap, audit=audit.append)
    await svc.start()
    try:
        await produce(bootstrap, cfg.kafka.alerts.name, record("firing"))
        await until(lambda: svc.dead_lettered == 1, 15, "the dead letter")
    finally:
        await svc.stop()
        await rx.stop()
    return cfg, audit


def test_client_error_is_dead_lettered(kafka_bootstrap: str) -> None:
    """A 404 is not retried: the notification goes to the dead-letter topic with reason, receiver and webhook-id."""

    async def main() -> None:
        rx = Receiver(script=["404"])
        cfg, _ = await dead_letter_one(kafka_bootstrap, rx, "notify-dlq")
        assert len(rx.requests) == 1
        consumer = AIOKafkaConsumer(
            cfg.alerting.notify.dead_letter.name, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), 10)
        finally:
            await consumer.stop()
        headers = {k: v.decode() for k, v in msg.headers}
        assert headers["reason"] == "http_404"
        assert headers["receiver"] == "oncall"
        assert headers["webhook-id"] == rx.requests[0][1]["webhook-id"]
        assert msg.value == rx.requests[0][2]

    asyncio.run(main())


def test_receiver_the_egress_policy_refuses_is_dead_lettered_unseen(kafka_bootstrap: str) -> None:
    """A loopback receiver the egress allowlist does not name never sees a request: dead-lettered, refused_target."""

    async def main() -> None:
        rx = Receiver()
        _, audit = await dead_letter_one(kafka_bootstrap, rx, "notify-egress", egress=("10.0.0.0/8",))
        assert rx.requests == []
        [dead] = [a for a in audit if a["type"] == "notification_dead_lettered"]
        assert (dead["reason"], dead["attempts"]) == ("refused_target", 1)

    asyncio.run(main())


def test_receiver_down_across_a_restart_gets_everything_once(kafka_bootstrap: str) -> None:
    """Notifications owed to a receiver that is down survive a notifier restart; nothing already delivered repeats."""

    async def main() -> None:
        rx = Receiver()
        await rx.start()
        port = rx.port
        name = _unique("notify-restart")
        cfg = config(name, [{"name": "oncall", "url": rx.url}])
        topic = cfg.kafka.alerts.name
        first = NotifierService(cfg, kafka_bootstrap, backoff_base=0.05, backoff_cap=0.3)
        await first.start()
        try:
            await produce(kafka_bootstrap, topic, record("firing", model="support-router"))
            await until(lambda: len(rx.bodies) == 1, 15, "the first group's notification")
            delivered_before = set(rx.delivered)
            await rx.stop()  # the receiver goes down
            t_a = time.time()
            await produce(kafka_bootstrap, topic, record("firing", model="claims-triage"))
            await produce(kafka_bootstrap, topic, record("resolved", model="support-router", since=t_a - 5))
            await until(lambda: first.notifier.pending() == 2 and first.retried >= 2, 15, "two notifications retried")
        finally:
            await first.stop()
        assert first.sent == 1
        second = NotifierService(cfg, kafka_bootstrap, backoff_base=0.05, backoff_cap=0.3)
        await second.start()
        try:
            await until(second.state_loaded.is_set, 20, "the second notifier to load its state")
            assert second.notifier.pending() == 2
            rx = Receiver(port=port)
            await rx.start()  # the receiver comes back
            await until(lambda: len(rx.bodies) == 2, 15, "the owed notifications")
            # two more group_interval ticks: the still-firing group must not be notified again
            after = time.time()
            await until(lambda: (second.notifier.next_due() or 0) > after + 1.0, 5, "two more group ticks")
        finally:
            await second.stop()
            await rx.stop()
        got = sorted((b["groupLabels"]["model"], b["status"]) for b in rx.bodies)  # type: ignore[index]
        assert got == [("claims-triage", "firing"), ("support-router", "resolved")]
        assert rx.duplicates == 0
        assert not delivered_before & set(rx.delivered)  # nothing delivered before the restart came again
        assert second.sent == 2

    asyncio.run(main())


class _AmAlertV4(msgspec.Struct):
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: dt.datetime
    endsAt: dt.datetime
    generatorURL: str
    fingerprint: str


class _AmWebhookV4(msgspec.Struct):
    """Alertmanager's webhook message, version 4, as its Go struct (notify/webhook.Message) defines it."""

    version: str
    groupKey: str
    truncatedAlerts: int
    status: str
    receiver: str
    groupLabels: dict[str, str]
    commonLabels: dict[str, str]
    commonAnnotations: dict[str, str]
    externalURL: str
    alerts: list[_AmAlertV4]


_LABEL_MAPS = {"labels", "annotations", "groupLabels", "commonLabels", "commonAnnotations"}


def _shape(value: object, key: str = "") -> object:
    """The JSON type tree of a value: keys of objects, element shape of lists; label maps as string maps."""
    if key in _LABEL_MAPS and isinstance(value, dict):
        return "map[string]string" if all(isinstance(v, str) for v in value.values()) else "mixed"
    if isinstance(value, dict):
        return {k: _shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, Receiver]]:
    """A real Alertmanager on loopback whose only receiver is a webhook to a loopback test receiver."""
    if not ALERTMANAGER.exists() or shutil.which(str(ALERTMANAGER)) is None:
        pytest.skip(f"{ALERTMANAGER} is not installed (apt-get install prometheus-alertmanager)")
    rx = Receiver(port=free_port())
    port = free_port()
    cfg = {
        "route": {
            "receiver": "test",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "test", "webhook_configs": [{"url": rx.url, "send_resolved": True}]}],
    }
    (tmp_path / "am.yml").write_text(yaml.safe_dump(cfg))
    log = (tmp_path / "am.log").open("wb")
    proc = subprocess.Popen(
        [
            str(ALERTMANAGER),
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}", rx
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_push_to_real_alertmanager(kafka_bootstrap: str, alertmanager: tuple[str, Receiver]) -> None:
    """Pushed alerts reach a real Alertmanager, which notifies firing then resolved; our webhook has its v4 shape."""
    am_url, rx = alertmanager

    async def ready(http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(f"{am_url}/-/ready") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    async def main() -> None:
        await rx.start()
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 15
            while not await ready(http):
                assert time.monotonic() < deadline, "Alertmanager did not become ready"
                await asyncio.sleep(0.05)
            name = _unique("notify-am")
            cfg = config(name, [{"name": "am", "kind": "alertmanager", "url": am_url}])
            svc = NotifierService(cfg, kafka_bootstrap)
            await svc.start()
            try:
                started = time.time()
                await produce(kafka_bootstrap, cfg.kafka.alerts.name, record("firing", since=started))
                await until(lambda: len(rx.bodies) == 1, 15, "Alertmanager's firing webhook")
                async with http.get(f"{am_url}/api/v2/alerts") as resp:
                    listed = await resp.json()
                assert [a["labels"]["model"] for a in listed] == ["support-router"]
                await produce(kafka_bootstrap, cfg.kafka.alerts.name, record("resolved", since=started))
                await until(lambda: len(rx.bodies) == 2, 15, "Alertmanager's resolved webhook")
            finally:
                await svc.stop()
        await rx.stop()
        firing, resolved = rx.bodies
        assert firing["version"] == "4"
        assert firing["status"] == "firing"
        [alert] = firing["alerts"]  # type: ignore[misc]
        assert alert["labels"] == {
            "alertname": "complaint_rate_high",
            "model": "support-router",
            "version": "v8",
            "severity": "critical",
        }
        assert resolved["status"] == "resolved"
        # our own webhook body parses with Alertmanager's v4 schema and has the shape Alertmanager sent
        ours = Notifier(config(name, [{"name": "test", "url": rx.url}]).alerting.notify)
        ours.update(record("firing"), 0.0)
        [n] = ours.due(1.0)
        parsed = msgspec.json.decode(n.body, type=_AmWebhookV4)
        assert parsed.version == "4"
        msgspec.json.decode(msgspec.json.encode(firing), type=_AmWebhookV4)
        mine = msgspec.json.decode(n.body)
        extra = mine.pop("driftwatch")
        assert isinstance(extra, dict)
        assert _shape(mine) == _shape(firing)

    asyncio.run(main())
