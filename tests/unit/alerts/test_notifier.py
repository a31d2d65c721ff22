"""Tests for the notifier core in `driftwatch.alerts.notifier`: grouping, routing, silencing, payload, ids, retries."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from driftwatch.actions.planner import action_id
from driftwatch.alerts.engine import AlertTransition, fingerprint
from driftwatch.alerts.notifier import DeliveryOutcome, Notification, Notifier, group_hash, retry_delay
from driftwatch.alerts.records import AlertRecord, AlertRecordError
from driftwatch.config import NotifyConfig

GOLDEN = Path(__file__).parents[1] / "data" / "notify_webhook_v4.json"
T0 = 1_795_000_000.0


def labels(
    model: str = "support-router", version: str = "v8", severity: str = "critical", **extra: str
) -> dict[str, str]:
    return {"alertname": "complaint_rate_high", "model": model, "version": version, "severity": severity, **extra}


def rec(
    state: str,
    at: float,
    lab: dict[str, str] | None = None,
    *,
    since: float | None = None,
    rule: str = "complaint_rate_high",
) -> AlertRecord:
    """An alert record exactly as the engine writes it to the alerts topic."""
    lab = dict(lab or labels())
    lab["alertname"] = rule
    return AlertTransition(
        rule=rule,
        state=state,
        labels=lab,
        annotations={
            "summary": "Complaint rate above 8% for a model version",
            "runbook_url": "https://runbooks.example.internal/driftwatch/complaints",
        },
        fingerprint=fingerprint(lab),
        value=0.12903225806451613,
        n=1488,
        lo=0.11294941543409054,
        hi=0.14702556818600815,
        window=300.0,
        event_time=at,
        active_since=at if since is None else since,
        severity=lab.get("severity", "warning"),
        actions=("rollback_model",),
        evidence={
            "window_seconds": 300.0,
            "contributors": [{"attribute": "region", "slice": "EU", "value": 0.14, "n": 360}],
        },
    ).to_record()


def notifier(
    receivers: list[dict[str, object]] | None = None, audit: list[dict[str, object]] | None = None, **kw: object
) -> Notifier:
    cfg: dict[str, object] = {
        "receivers": receivers or [{"name": "oncall", "url": "https://hooks.example.internal/dw"}],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "15m",
        "resend_interval": "1m",
        "external_url": "https://driftwatch.example.internal",
    }
    silenced = kw.pop("is_silenced", None)
    cfg.update(kw)
    return Notifier(
        NotifyConfig.model_validate(cfg),
        audit=None if audit is None else audit.append,
        is_silenced=silenced,  # type: ignore[arg-type]
        rng=random.Random(7),
    )


def payload(n: Notification) -> dict[str, object]:
    body = json.loads(n.body)
    assert isinstance(body, dict)
    return body


def deliver_all(nt: Notifier, now: float) -> list[Notification]:
    """Everything due at ``now``, each acknowledged as delivered."""
    out = nt.due(now)
    for n in out:
        nt.result(n.id, DeliveryOutcome.DELIVERED, now)
    return out


# ------------------------------------------------------------------ grouping


def test_first_notification_waits_for_group_wait() -> None:
    """A new group's first notification goes out at group_wait, not before."""
    nt = notifier()
    nt.update(rec("firing", T0), T0)
    assert nt.next_due() == T0 + 30
    assert nt.due(T0 + 29.9) == []
    [n] = nt.due(T0 + 30)
    assert payload(n)["status"] == "firing"
    assert n.receiver == "oncall"


def test_pending_records_are_ignored() -> None:
    """A pending transition never starts a group."""
    nt = notifier()
    nt.update(rec("pending", T0), T0)
    assert nt.next_due() is None


def test_changes_wait_for_the_group_interval_tick() -> None:
    """A second alert joining a notified group goes out at the next group_interval tick, both in one message."""
    nt = notifier()
    nt.update(rec("firing", T0, labels(version="v7")), T0)
    assert len(deliver_all(nt, T0 + 30)) == 1
    nt.update(rec("firing", T0 + 40, labels(version="v8")), T0 + 40)
    assert nt.due(T0 + 329) == []
    [n] = nt.due(T0 + 330)
    body = payload(n)
    assert len(body["alerts"]) == 2  # type: ignore[arg-type]
    assert body["groupLabels"] == {"model": "support-router", "rule": "complaint_rate_high"}
    assert body["commonLabels"] == {
        "alertname": "complaint_rate_high",
        "model": "support-router",
        "severity": "critical",
    }


def test_alerts_of_other_groups_are_separate() -> None:
    """group_by puts alerts of different models in different groups, each with its own notification."""
    nt = notifier()
    nt.update(rec("firing", T0, labels(model="support-router")), T0)
    nt.update(rec("firing", T0, labels(model="claims-triage")), T0)
    got = nt.due(T0 + 30)
    assert sorted(payload(n)["groupLabels"]["model"] for n in got) == ["claims-triage", "support-router"]  # type: ignore[index]


def test_unchanged_group_repeats_after_repeat_interval() -> None:
    """An unchanged firing group is silent at group_interval ticks and re-notified once repeat_interval passed."""
    nt = notifier()
    nt.update(rec("firing", T0), T0)
    [first] = deliver_all(nt, T0 + 30)
    assert deliver_all(nt, T0 + 330) == []
    assert deliver_all(nt, T0 + 630) == []
    [again] = deliver_all(nt, T0 + 930)  # 900 s after the first
    assert again.id != first.id
    assert payload(again)["alerts"] == payload(first)["alerts"]


def test_alert_resolved_before_first_notification_is_never_sent() -> None:
    """An alert that resolves within group_wait is never sent, and the audit hook says why."""
    audit: list[dict[str, object]] = []
    nt = notifier(audit=audit)
    nt.update(rec("firing", T0), T0)
    nt.update(rec("resolved", T0 + 10, since=T0), T0 + 10)
    assert nt.due(T0 + 30) == []
    assert nt.next_due() is None  # the group is gone
    assert [a["reason"] for a in audit] == ["resolved_before_notification"]


def test_one_resolved_notification_ends_the_group() -> None:
    """When every alert of a group resolves, one resolved notification goes out and the group is dropped."""
    nt = notifier()
    nt.update(rec("firing", T0), T0)
    deliver_all(nt, T0 + 30)
    nt.update(rec("resolved", T0 + 100, since=T0), T0 + 100)
    [n] = deliver_all(nt, T0 + 330)
    body = payload(n)
    assert body["status"] == "resolved"
    [alert] = body["alerts"]  # type: ignore[misc]
    assert alert["status"] == "resolved"
    assert alert["endsAt"] == "2026-11-18T11:08:20.000Z"
    assert nt.next_due() is None
    assert deliver_all(nt, T0 + 10_000) == []


def test_partial_resolve_is_sent_with_the_firing_rest() -> None:
    """One alert of two resolving is announced at the next tick, with the still-firing one; the group lives on."""
    nt = notifier()
    nt.update(rec("firing", T0, labels(version="v7")), T0)
    nt.update(rec("firing", T0, labels(version="v8")), T0)
    deliver_all(nt, T0 + 30)
    nt.update(rec("resolved", T0 + 60, labels(version="v7"), since=T0), T0 + 60)
    [n] = deliver_all(nt, T0 + 330)
    assert payload(n)["status"] == "firing"
    assert sorted(a["status"] for a in payload(n)["alerts"]) == ["firing", "resolved"]  # type: ignore[attr-defined]
    assert nt.next_due() == T0 + 630


def test_send_resolved_false_sends_no_resolved_notification() -> None:
    """A receiver with send_resolved false never hears of resolutions; the skipped message is audited."""
    audit: list[dict[str, object]] = []
    nt = notifier([{"name": "oncall", "url": "https://hooks.example.internal/dw", "send_resolved": False}], audit)
    nt.update(rec("firing", T0), T0)
    deliver_all(nt, T0 + 30)
    nt.update(rec("resolved", T0 + 100, since=T0), T0 + 100)
    assert deliver_all(nt, T0 + 330) == []
    assert nt.next_due() is None
    assert [a["reason"] for a in audit if a["type"] == "notification_suppressed"] == ["send_resolved_disabled"]


def test_redelivered_record_is_deduplicated_and_audited() -> None:
    """The same firing record again adds nothing: no notification within repeat_interval, audited as dedup."""
    audit: list[dict[str, object]] = []
    nt = notifier(audit=audit)
    r = rec("firing", T0)
    nt.update(r, T0)
    deliver_all(nt, T0 + 30)
    nt.update(r, T0 + 100)
    assert deliver_all(nt, T0 + 330) == []
    assert [a["reason"] for a in audit if a["type"] == "notification_suppressed"] == ["dedup"]


# ------------------------------------------------------------ routing, silence


def test_routing_by_rule_and_min_severity() -> None:
    """A receiver gets a rule's alerts only if it names the rule (or none) and the severity is high enough."""
    nt = notifier(
        [
            {"name": "all", "url": "https://hooks.example.internal/a"},
            {"name": "pager", "url": "https://hooks.example.internal/p", "min_severity": "critical"},
            {"name": "fairness", "url": "https://hooks.example.internal/f", "rules": ["selection_rate_gap"]},
        ]
    )
    nt.update(rec("firing", T0, labels(severity="warning")), T0)
    nt.update(rec("firing", T0, labels(severity="critical", version="v7")), T0)
    nt.update(rec("firing", T0, labels(severity="warning"), rule="selection_rate_gap"), T0)
    got = {
        (
            n.receiver,
            tuple(sorted(a["labels"]["alertname"] + "/" + a["labels"]["severity"] for a in payload(n)["alerts"])),
        )
        for n in nt.due(T0 + 30)
    }  # type: ignore[attr-defined]
    assert got == {
        ("all", ("complaint_rate_high/critical", "complaint_rate_high/warning")),
        ("all", ("selection_rate_gap/warning",)),
        ("pager", ("complaint_rate_high/critical",)),
        ("fairness", ("selection_rate_gap/warning",)),
    }


def test_silenced_alert_is_not_sent_and_is_audited_once() -> None:
    """A silenced alert is left out of notifications, and the audit hook hears of it once per status."""
    audit: list[dict[str, object]] = []

    def silenced(lab: Mapping[str, str], now: float) -> bool:
        return lab.get("version") == "v7"

    nt = notifier(audit=audit, is_silenced=silenced)
    nt.update(rec("firing", T0, labels(version="v7")), T0)
    nt.update(rec("firing", T0, labels(version="v8")), T0)
    [n] = deliver_all(nt, T0 + 30)
    assert [a["labels"]["version"] for a in payload(n)["alerts"]] == ["v8"]  # type: ignore[attr-defined]
    deliver_all(nt, T0 + 330)
    sil = [a for a in audit if a.get("reason") == "silenced"]
    assert len(sil) == 1
    assert sil[0]["fingerprint"] == fingerprint(labels(version="v7"))


def test_group_of_only_silenced_alerts_sends_nothing() -> None:
    """A group whose every alert is silenced produces no notification."""
    nt = notifier(is_silenced=lambda lab, now: True)
    nt.update(rec("firing", T0), T0)
    assert nt.due(T0 + 30) == []


def test_malformed_record_raises_input_error_and_is_counted() -> None:
    """A record missing fields raises AlertRecordError (a DriftwatchError) and counts as rejected."""
    nt = notifier()
    with pytest.raises(AlertRecordError):
        nt.update({"state": "firing", "labels": {"a": 1}}, T0)
    assert nt.counters.rejected_records == 1


# --------------------------------------------------------------------- payload


def test_webhook_payload_matches_golden_file() -> None:
    """The webhook body is Alertmanager's v4 message plus the driftwatch object, exactly as in the golden file."""
    nt = notifier(report_url="https://driftwatch.example.internal/reports/{model}/{version}?rule={rule}&slice={value}")
    nt.update(rec("firing", T0, labels(attribute="region", slice="EU")), T0)
    [n] = nt.due(T0 + 30)
    assert payload(n) == json.loads(GOLDEN.read_text())


def test_report_url_template_errors_do_not_break_payload() -> None:
    """A report_url template that cannot be filled leaves the link out instead of failing the notification."""
    nt = notifier(report_url="https://x.example.internal/{0}")
    nt.update(rec("firing", T0), T0)
    [n] = nt.due(T0 + 30)
    extra = payload(n)["driftwatch"]["alerts"]  # type: ignore[index]
    assert next(iter(extra.values()))["report_url"] is None


# ------------------------------------------------------------------------- ids


def test_ids_are_deterministic_and_change_with_content() -> None:
    """Two notifiers fed the same records give the same ids; a repeat and a resolve get new ids."""
    ids = []
    for _ in range(2):
        nt = notifier()
        nt.update(rec("firing", T0), T0)
        seen = [n.id for n in deliver_all(nt, T0 + 30)]
        seen += [n.id for n in deliver_all(nt, T0 + 930)]
        nt.update(rec("resolved", T0 + 1000, since=T0), T0 + 1000)
        seen += [n.id for n in deliver_all(nt, T0 + 1230)]
        ids.append(seen)
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == 3


def test_id_is_kept_across_retries_and_restore() -> None:
    """A failed notification is retried under the same id, also by a new notifier restored from the state."""
    nt = notifier()
    nt.update(rec("firing", T0), T0)
    [n] = nt.due(T0 + 30)
    nt.result(n.id, DeliveryOutcome.RETRY, T0 + 31, reason="http_503")
    state = {k: v for k, v in nt.changes().items() if v is not None}
    later = nt.next_due()
    assert later is not None
    [again] = nt.due(later)
    assert again == n
    other = notifier()
    other.restore(state)
    [restored] = other.due(T0 + 40)
    assert restored == n


def test_restart_does_not_repeat_within_repeat_interval() -> None:
    """A notifier restored from the written state neither re-sends a delivered notification nor loses the group."""
    nt = notifier()
    nt.update(rec("firing", T0), T0)
    deliver_all(nt, T0 + 30)
    state = {k: v for k, v in nt.changes().items() if v is not None}
    assert not any(k.startswith("p:") for k in state)
    other = notifier()
    other.restore(state)
    other.update(rec("firing", T0), T0 + 60)  # the alerts topic redelivered after the restart
    assert deliver_all(other, T0 + 330) == []
    assert deliver_all(other, T0 + 630) == []
    assert len(deliver_all(other, T0 + 930)) == 1


def test_changes_tombstone_finished_entries() -> None:
    """A delivered notification and a dropped group are written as deletions (None) for the compacted topic."""
    nt = notifier()
    nt.update(rec("firing", T0), T0)
    deliver_all(nt, T0 + 30)
    nt.update(rec("resolved", T0 + 60, since=T0), T0 + 60)
    nt.changes()
    [n] = deliver_all(nt, T0 + 330)
    ch = nt.changes()
    assert ch[f"p:{n.id}"] is None
    assert [v for k, v in ch.items() if k.startswith("g:")] == [None]


# --------------------------------------------------------------------- retries


def test_retry_delay_is_full_jitter_within_bounds() -> None:
    """Backoff after k failures lies in [0, min(cap, base·2^(k-1))], and spreads over that range."""
    rng = random.Random(3)
    for k in range(1, 12):
        bound = min(60.0, 2.0 ** (k - 1))
        xs = [retry_delay(k, rng) for _ in range(200)]
        assert all(0 <= x <= bound for x in xs)
        assert max(xs) > 0.8 * bound
        assert min(xs) < 0.2 * bound
    assert retry_delay(1, rng, retry_after=42.0) == 42.0


def test_retry_is_scheduled_with_backoff_and_not_returned_while_in_flight() -> None:
    """A notification in flight is not handed out twice; after a retryable failure it is due within the backoff."""
    nt = notifier(group_interval="1d", repeat_interval="2d")  # so the next due time is the retry's
    nt.update(rec("firing", T0), T0)
    [n] = nt.due(T0 + 30)
    assert nt.due(T0 + 31) == []
    now = T0 + 31
    for k in range(1, 9):
        assert nt.result(n.id, DeliveryOutcome.RETRY, now, reason="connection") is None
        nxt = nt.next_due()
        assert nxt is not None
        assert now <= nxt <= now + min(60, 2 ** (k - 1))
        now = nxt
        assert nt.due(now) == [n]
    assert nt.counters.retried == 8


def test_retry_after_is_honoured() -> None:
    """A 429/503 with Retry-After is retried exactly that much later."""
    nt = notifier()
    nt.update(rec("firing", T0), T0)
    [n] = nt.due(T0 + 30)
    nt.result(n.id, DeliveryOutcome.RETRY, T0 + 31, retry_after=120.0, reason="http_429")
    assert nt.next_due() == T0 + 151
    assert nt.due(T0 + 150) == []
    assert nt.due(T0 + 151) == [n]


def test_max_age_dead_letters() -> None:
    """A notification still failing after the receiver's max_age is dead-lettered with reason max_age."""
    audit: list[dict[str, object]] = []
    nt = notifier(
        [{"name": "oncall", "url": "https://hooks.example.internal/dw", "max_age": "10m"}],
        audit,
        group_interval="1d",  # so the next due time is the retry's
        repeat_interval="2d",
    )
    nt.update(rec("firing", T0), T0)
    [n] = nt.due(T0 + 30)
    dead = None
    now = T0 + 30
    while dead is None:
        dead = nt.result(n.id, DeliveryOutcome.RETRY, now, reason="timeout")
        if dead is None:
            nxt = nt.next_due()
            assert nxt is not None
            assert nxt <= T0 + 30 + 600
            now = nxt
            assert nt.due(now) == [n]
    assert dead.reason == "max_age"
    assert dead.last_error == "timeout"
    assert dead.notification == n
    assert now >= T0 + 30 + 600
    assert nt.counters.dead_lettered == 1
    assert nt.pending() == 0
    assert [a["type"] for a in audit] == ["notification_dead_lettered"]


def test_retry_after_beyond_max_age_dead_letters_at_once() -> None:
    """A Retry-After pointing past max_age gives up now instead of waiting in vain."""
    nt = notifier([{"name": "oncall", "url": "https://hooks.example.internal/dw", "max_age": "10m"}])
    nt.update(rec("firing", T0), T0)
    [n] = nt.due(T0 + 30)
    dead = nt.result(n.id, DeliveryOutcome.RETRY, T0 + 31, retry_after=3600.0, reason="http_503")
    assert dead is not None
    assert dead.reason == "max_age"


def test_client_error_is_not_retried() -> None:
    """A 4xx other than 408/429 is dead-lettered at once with its reason."""
    nt = notifier()
    nt.update(rec("firing", T0), T0)
    [n] = nt.due(T0 + 30)
    dead = nt.result(n.id, DeliveryOutcome.FAIL, T0 + 31, reason="http_404")
    assert dead is not None
    assert dead.reason == "http_404"
    assert nt.counters.retried == 0
    assert nt.pending() == 0


def test_attempts_are_logged_with_receiver_group_hash_and_attempt() -> None:
    """Each outcome is one log line naming the receiver, a hash of the group key and the attempt, never the body."""
    nt = notifier([{"name": "oncall", "url": "https://hooks.example.internal/dw", "max_age": "10m"}])
    nt.update(rec("firing", T0, labels(attribute="region", slice="EU")), T0)
    [n] = nt.due(T0 + 30)
    with capture_logs() as logs:
        nt.result(n.id, DeliveryOutcome.RETRY, T0 + 31, retry_after=5.0, reason="http_503")
        nt.due(T0 + 36)
        nt.result(n.id, DeliveryOutcome.FAIL, T0 + 37, reason="http_404")
    assert [(e["event"], e["receiver"], e["group"], e["attempt"]) for e in logs] == [
        ("notification_retry", "oncall", group_hash(n.group_key), 1),
        ("notification_dead_lettered", "oncall", group_hash(n.group_key), 2),
    ]
    assert (logs[0]["reason"], logs[1]["reason"]) == ("http_503", "http_404")
    assert "EU" not in repr(logs)
    assert "support-router" not in repr(logs)
    nt.update(rec("firing", T0 + 40, labels(model="claims-triage")), T0 + 40)
    [m] = nt.due(T0 + 70)
    with capture_logs() as logs:
        nt.result(m.id, DeliveryOutcome.DELIVERED, T0 + 71)
    assert [(e["event"], e["attempt"], e["status"]) for e in logs] == [("notification_sent", 1, "firing")]


def test_group_notifications_are_delivered_in_order() -> None:
    """While a group's older notification is retried, its newer one waits behind it."""
    nt = notifier()
    nt.update(rec("firing", T0), T0)
    [first] = nt.due(T0 + 30)
    nt.result(first.id, DeliveryOutcome.RETRY, T0 + 31, retry_after=400.0)
    nt.update(rec("resolved", T0 + 100, since=T0), T0 + 100)
    assert nt.due(T0 + 330) == []  # the resolved notification exists but waits
    assert nt.pending() == 2
    [again] = nt.due(T0 + 431)
    assert again == first
    nt.result(first.id, DeliveryOutcome.DELIVERED, T0 + 431)
    [second] = nt.due(T0 + 431)
    assert payload(second)["status"] == "resolved"


# ---------------------------------------------------------------- alertmanager


def am_notifier() -> Notifier:
    return notifier([{"name": "am", "kind": "alertmanager", "url": "http://alertmanager.example.internal:9093/"}])


def test_alertmanager_push_like_prometheus() -> None:
    """Firing alerts are pushed at once and every resend_interval (endsAt 4 resends ahead); a resolve once, with endsAt."""
    nt = am_notifier()
    nt.update(rec("firing", T0), T0)
    [n] = deliver_all(nt, T0)
    assert n.url == "http://alertmanager.example.internal:9093/api/v2/alerts"
    [alert] = json.loads(n.body)
    assert alert["endsAt"] == "2026-11-18T11:10:40.000Z"  # T0 + 4 min
    assert alert["startsAt"] == "2026-11-18T11:06:40.000Z"
    assert set(alert) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert deliver_all(nt, T0 + 59) == []
    [resend] = deliver_all(nt, T0 + 60)
    assert resend.id != n.id
    nt.update(rec("resolved", T0 + 70, since=T0), T0 + 75)
    [res] = deliver_all(nt, T0 + 75)
    assert json.loads(res.body)[0]["endsAt"] == "2026-11-18T11:07:50.000Z"
    assert nt.next_due() is None


def test_alertmanager_stale_push_is_superseded() -> None:
    """A push not yet delivered is replaced by a newer push of the same alert (a stale firing never follows a resolve)."""
    nt = am_notifier()
    nt.update(rec("firing", T0), T0)
    [n] = nt.due(T0)
    nt.result(n.id, DeliveryOutcome.RETRY, T0 + 1, retry_after=100.0)
    nt.update(rec("resolved", T0 + 10, since=T0), T0 + 10)
    [res] = nt.due(T0 + 10)  # not held back by the stale push, which it replaced
    assert nt.pending() == 1
    assert nt.counters.superseded == 1
    assert json.loads(res.body)[0]["endsAt"] == "2026-11-18T11:06:50.000Z"


def test_firing_webhook_carries_approval_links_with_the_runners_action_id() -> None:
    """An action that needs approval is listed with the id the action runner gives it and the API's approve/deny links."""
    nt = Notifier(
        NotifyConfig.model_validate(
            {"receivers": [{"name": "oncall", "url": "https://hooks.example.internal/dw"}], "group_wait": "30s"}
        ),
        approvals={"rollback_model": True},
        api_url="https://driftwatch.example.internal:9465/",
    )
    record = rec("firing", T0)
    nt.update(record, T0)
    [n] = nt.due(T0 + 30)
    [entry] = payload(n)["driftwatch"]["alerts"][record.fingerprint]["actions"]
    aid = action_id("rollback_model", record.fingerprint, record.active_since)
    assert entry == {
        "name": "rollback_model",
        "id": aid,
        "requires_approval": True,
        "approve_url": f"https://driftwatch.example.internal:9465/api/actions/{aid}/approve",
        "deny_url": f"https://driftwatch.example.internal:9465/api/actions/{aid}/deny",
    }
