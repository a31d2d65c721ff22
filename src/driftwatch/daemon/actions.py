"""The runbook actions' shell: consumes the alerts topic, runs what the pure planner decides, audits outcomes.

:class:`ActionRunner` feeds alert records to
:class:`~driftwatch.actions.planner.ActionPlanner`, calls the executions it
returns — HTTP through the one egress (:mod:`driftwatch.daemon.http`, under
``alerting.egress``), Kafka through a :class:`Publisher` — and hands each
outcome back to be audited. It uses its own consumer, never a Faust agent
(guarantee 6 in docs/guarantees.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from driftwatch._log import get_logger
from driftwatch._time import rfc3339
from driftwatch.actions.audit import AuditLog, read_records
from driftwatch.actions.planner import SYSTEM_ACTOR, ActionCounters, ActionPlanner, Execution, Outcome
from driftwatch.alerts.records import AlertRecord, decode_record
from driftwatch.config import AlertingConfig, Config
from driftwatch.daemon.http import EgressPolicy, post_json
from driftwatch.daemon.signing import load_secrets, signature_headers
from driftwatch.daemon.stopping import start_consumer, stop_consumer
from driftwatch.errors import ConfigError

__all__ = ["ActionRunner", "KafkaPublisher", "Publisher"]

log = get_logger(__name__)


class Publisher(Protocol):
    """How kafka actions are published to the control topic."""

    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        """Publish one message and wait for the broker's acknowledgement."""
        ...


class KafkaPublisher:
    """aiokafka producer for control messages, started on first use."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Any = None

    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        """Send one message and wait for the acknowledgement."""
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            self._producer = producer
        await self._producer.send_and_wait(topic, value, key=key, headers=list(headers))

    async def close(self) -> None:
        """Flush and stop the producer."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class ActionRunner:
    """The shell: consumes alert records, runs the planner's executions, audits outcomes, commits after them.

    It uses its own aiokafka consumer (group ``<app_id>-actions``), never a
    Faust agent. HTTP calls go through the one egress under
    ``alerting.egress`` (a refused target is a failed, audited and counted
    action). Secrets are read once at construction and only ever put into
    request headers, never into records or logs. With ``audit_alerts``
    each firing/resolved transition it receives is also audited
    (``alert.firing`` / ``alert.resolved``), for a deployment where no other
    component records them.
    """

    def __init__(
        self,
        alerting: AlertingConfig,
        audit: AuditLog,
        *,
        versions_seen: Callable[[str], Sequence[str]] | None = None,
        bootstrap: str | None = None,
        alerts_topic: str | None = None,
        group_id: str | None = None,
        publisher: Publisher | None = None,
        clock: Callable[[], float] = time.time,
        audit_alerts: bool = False,
    ) -> None:
        self.config = alerting
        self.audit = audit
        self.audit_alerts = audit_alerts
        self.planner = ActionPlanner(alerting, audit.append, versions_seen=versions_seen)
        self.bootstrap = bootstrap
        self.alerts_topic = alerts_topic
        self.group_id = group_id
        self._clock = clock
        self._egress = EgressPolicy.from_allow(alerting.egress.allow)
        self._publisher = publisher
        self._own_publisher = publisher is None
        self._tokens: dict[str, bytes] = {}
        self._secrets: dict[str, list[bytes]] = {}
        for name, ac in alerting.actions.items():
            if ac.bearer_token is not None:
                self._tokens[name] = ac.bearer_token.read()
            if ac.secret is not None:
                # whsec_<base64> (several during a rotation) or raw bytes, as for webhook receivers.
                self._secrets[name] = load_secrets(ac.secret.read())
        self.ready = asyncio.Event()
        self.planner.restore(read_records(audit.path))

    @classmethod
    def from_config(cls, cfg: Config, audit: AuditLog, *, bootstrap: str | None = None, **kw: Any) -> ActionRunner:
        """A runner for a whole config: the alerts topic and group ``<app_id>-actions``."""
        return cls(
            cfg.alerting,
            audit,
            bootstrap=bootstrap or cfg.kafka.bootstrap,
            alerts_topic=cfg.kafka.alerts.name,
            group_id=f"{cfg.kafka.app_id}-actions",
            **kw,
        )

    @property
    def counters(self) -> ActionCounters:
        """What the actions did since start."""
        return self.planner.counters

    def actions(self) -> list[dict[str, object]]:
        """Every known action for the API (newest first)."""
        return self.planner.actions()

    async def handle(self, value: AlertRecord | bytes | Mapping[str, object]) -> int:
        """Decide on one alert record and run what it calls for; return how many calls were made."""
        try:
            alert = decode_record(value)
        except ValueError as e:
            self.planner.counters.rejected += 1
            log.warning("alert_record_rejected", consumer="actions", error=str(e))
            return 0
        now = self._clock()
        if self.audit_alerts and alert.state in ("firing", "resolved"):
            self.audit.append(
                {
                    "kind": f"alert.{alert.state}",
                    "time": rfc3339(now),
                    "actor": SYSTEM_ACTOR,
                    "rule": alert.rule,
                    "labels": alert.labels,
                    "evidence": alert.evidence,
                    "inputs": {
                        "fingerprint": alert.fingerprint,
                        "active_since": alert.active_since,
                        "value": alert.value,
                    },
                    "outcome": None,
                }
            )
        executions = self.planner.on_alert(alert, now)
        for ex in executions:
            await self._execute(ex)
        return len(executions)

    async def approve(self, action_id: str, actor: str) -> dict[str, object]:
        """Approve (audited before anything runs), run it, and return the action's state."""
        for ex in self.planner.approve(action_id, actor, self._clock()):
            await self._execute(ex)
        return self.planner.get(action_id)

    async def deny(self, action_id: str, actor: str) -> dict[str, object]:
        """Deny a proposed action and return its state."""
        self.planner.deny(action_id, actor, self._clock())
        return self.planner.get(action_id)

    def expire(self) -> None:
        """Expire proposals whose approval_ttl passed."""
        self.planner.expire(self._clock())

    async def _execute(self, ex: Execution) -> None:
        ac = self.config.actions[ex.name]
        req = ex.request
        body = req.encoded()
        try:
            if req.transport == "http":
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "driftwatch-actions",
                    "Idempotency-Key": f"{ex.action_id}-{ex.phase}",
                    "X-Driftwatch-Phase": ex.phase,
                }
                token = self._tokens.get(ex.name)
                if token is not None:
                    headers["Authorization"] = "Bearer " + token.decode("utf-8", "replace")
                secrets = self._secrets.get(ex.name)
                if secrets:
                    headers.update(signature_headers(secrets, f"{ex.action_id}-{ex.phase}", body, self._clock()))
                res = await post_json(req.target, body, headers, timeout=ac.timeout, policy=self._egress)
                if res.status is None:  # no answer: refused target, connection error, timeout, bad URL
                    outcome = Outcome(False, None, res.reason)
                    if res.reason == "refused_target":
                        self.planner.counters.egress_refused += 1
                else:
                    ok = 200 <= res.status < 300
                    outcome = Outcome(ok, res.status, None if ok else f"HTTP {res.status}")
            else:
                if self._publisher is None:
                    if self.bootstrap is None:
                        raise ConnectionError("no Kafka bootstrap for the control topic")
                    self._publisher = KafkaPublisher(self.bootstrap)
                key = None if req.key is None else req.key.encode()
                hdrs = [("driftwatch-action-id", ex.action_id.encode()), ("driftwatch-phase", ex.phase.encode())]
                await asyncio.wait_for(self._publisher.publish(req.target, key, body, hdrs), ac.timeout)
                outcome = Outcome(True)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # every failure of the call is an audited outcome, never a crash
            outcome = Outcome(False, None, type(e).__name__)
        self.planner.finish(ex, outcome, self._clock())

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume the alerts topic until ``stop`` is set; commit each record after its outcome is audited.

        An :class:`~driftwatch.actions.audit.AuditError` ends the loop without
        committing, so the record is decided again after a restart.
        """
        if not (self.bootstrap and self.alerts_topic and self.group_id):
            raise ConfigError(["ActionRunner.run needs bootstrap, alerts_topic and group_id (use from_config)"])
        stop = stop or asyncio.Event()
        consumer = AIOKafkaConsumer(
            self.alerts_topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        if not await start_consumer(consumer, stop, "actions"):
            return  # stopped while it joined its group: nothing was read, nothing to commit
        try:
            self.ready.set()
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=100)
                self.expire()
                for tp, messages in batches.items():
                    for msg in messages:
                        await self.handle(msg.value)
                        await consumer.commit({tp: msg.offset + 1})
        finally:
            self.ready.clear()
            with contextlib.suppress(Exception):
                await stop_consumer(consumer, "actions")

    async def close(self) -> None:
        """Stop the Kafka publisher this runner created."""
        if self._own_publisher and isinstance(self._publisher, KafkaPublisher):
            await self._publisher.close()
