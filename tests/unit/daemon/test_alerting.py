"""Tests for the alerting side's /metrics families (`AlertingCollector` in `driftwatch.daemon.metrics`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from driftwatch.actions.audit import AuditLog
from driftwatch.alerts.records import decode_record
from driftwatch.config import Config
from driftwatch.daemon.actions import ActionRunner
from driftwatch.daemon.alerting import AlertingService
from driftwatch.daemon.metrics import AlertingCollector
from driftwatch.daemon.notifier import NotifierService

CONFIG = Config.model_validate(
    {
        "attributes": {"region": {}},
        "models": {"m": {"favorable": ["human"], "reference": {"learn_events": 100}}},
        "alerting": {
            "notify": {"receivers": [{"name": "r", "url": "https://hooks.example.internal/x"}]},
            "actions": {"act": {"kind": "http", "url": "https://x.example.internal/a", "requires_approval": True}},
        },
    }
)
FIRING = decode_record(
    b'{"rule":"r","state":"firing","labels":{"model":"m"},"fingerprint":"abc","actions":["act"],'
    b'"event_time":"2026-01-01T00:00:00.000Z","active_since":"2026-01-01T00:00:00.000Z"}'
)

HEAD = """# HELP driftwatch_audit_mirror_failed_total Audit records not copied to the audit topic (the file still has them).
# TYPE driftwatch_audit_mirror_failed_total counter
"""

EXPOSITION = """# HELP driftwatch_notifications_sent_total Notifications delivered.
# TYPE driftwatch_notifications_sent_total counter
driftwatch_notifications_sent_total 3.0
# HELP driftwatch_notifications_retried_total Delivery attempts that will be retried.
# TYPE driftwatch_notifications_retried_total counter
driftwatch_notifications_retried_total 2.0
# HELP driftwatch_notifications_dead_lettered_total Notifications given up on (sent to the notifier's dead-letter topic).
# TYPE driftwatch_notifications_dead_lettered_total counter
driftwatch_notifications_dead_lettered_total 1.0
# HELP driftwatch_notifications_suppressed_total Notifications not sent, by reason.
# TYPE driftwatch_notifications_suppressed_total counter
driftwatch_notifications_suppressed_total{reason="dedup"} 4.0
driftwatch_notifications_suppressed_total{reason="silenced"} 1.0
# HELP driftwatch_actions_total Runbook action steps, by outcome.
# TYPE driftwatch_actions_total counter
driftwatch_actions_total{outcome="received"} 1.0
driftwatch_actions_total{outcome="rejected"} 0.0
driftwatch_actions_total{outcome="duplicates"} 0.0
driftwatch_actions_total{outcome="started"} 0.0
driftwatch_actions_total{outcome="succeeded"} 0.0
driftwatch_actions_total{outcome="failed"} 0.0
driftwatch_actions_total{outcome="undone"} 0.0
driftwatch_actions_total{outcome="proposed"} 1.0
driftwatch_actions_total{outcome="approved"} 0.0
driftwatch_actions_total{outcome="denied"} 0.0
driftwatch_actions_total{outcome="expired"} 0.0
driftwatch_actions_total{outcome="dry_run"} 0.0
driftwatch_actions_total{outcome="egress_refused"} 0.0
# HELP driftwatch_actions_suppressed_total Actions a guardrail held back, by reason.
# TYPE driftwatch_actions_suppressed_total counter
driftwatch_actions_suppressed_total{reason="cooldown"} 2.0
# HELP driftwatch_actions_awaiting_approval Proposed actions waiting for approval.
# TYPE driftwatch_actions_awaiting_approval gauge
driftwatch_actions_awaiting_approval 1.0
"""


def service() -> AlertingService:
    """An alerting side that is built but not started (no broker needed)."""
    return AlertingService(CONFIG, "127.0.0.1:1", versions_seen=lambda m: [], alerts=list, pipeline_ready=lambda: True)


def scrape(svc: AlertingService) -> str:
    """The text exposition of the alerting side's collector alone."""
    registry = CollectorRegistry()
    registry.register(AlertingCollector(svc))
    return generate_latest(registry).decode()


def test_before_start_only_the_audit_copy_counter_is_exported() -> None:
    """An alerting side that has not started its notifier and runner exports just the audit-copy counter."""
    assert scrape(service()) == HEAD + "driftwatch_audit_mirror_failed_total 0.0\n"


def test_counters_map_to_the_documented_families(tmp_path: Path) -> None:
    """Notifier and runner counters appear under their family names, labels and help texts, in this order."""
    svc = service()

    async def build() -> None:
        svc.notifier = NotifierService(CONFIG, "127.0.0.1:1")
        c = svc.notifier.counters
        c.sent, c.retried, c.dead_lettered = 3, 2, 1
        c.suppressed.update({"silenced": 1, "dedup": 4})
        with AuditLog(tmp_path / "audit.jsonl") as log:
            svc.runner = ActionRunner(CONFIG.alerting, log)
            await svc.runner.handle(FIRING)
        svc.runner.counters.suppressed["cooldown"] += 2

    asyncio.run(build())
    svc.audit_mirror_failed = 5
    assert scrape(svc) == EXPOSITION + HEAD + "driftwatch_audit_mirror_failed_total 5.0\n"
    collector = AlertingCollector(svc)
    described = {(m.name, m.type) for m in collector.describe()}
    assert {(m.name, m.type) for m in collector.collect()} <= described  # what ?name[]= scrapes find
