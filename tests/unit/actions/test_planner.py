"""Tests for the runbook action planner and its guardrails in `driftwatch.actions.planner` (time passed in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from driftwatch.actions.audit import AuditError, AuditLog, read_records, verify
from driftwatch.actions.planner import (
    ActionConflictError,
    ActionNotFoundError,
    ActionPlanner,
    Execution,
    Outcome,
    action_id,
)
from driftwatch.alerts.records import AlertRecord
from driftwatch.config import AlertingConfig
from driftwatch.errors import ConfigError

FP = "a684325636c5e4aa"
SINCE = "2026-11-18T11:35:30.000Z"
LATER = "2026-11-18T11:36:30.000Z"
T0 = 1_800_000_000.0
URL = "http://127.0.0.1:9/hook"


def alerting(actions: Mapping[str, Mapping[str, object]], **kw: object) -> AlertingConfig:
    """An alerting config with these actions."""
    return AlertingConfig.model_validate({"actions": actions, **kw})


def record(
    state: str = "firing",
    *,
    actions: Sequence[str] = ("act",),
    since: str = SINCE,
    fp: str = FP,
    **labels: str,
) -> AlertRecord:
    """The record of one transition of complaint_rate_high on support-router v8, as the engine builds it."""
    lab = {"alertname": "complaint_rate_high", "model": "support-router", "version": "v8", "severity": "critical"}
    lab.update(labels)
    return AlertRecord(
        rule="complaint_rate_high",
        state=state,
        labels=lab,
        annotations={"summary": "Complaint rate above 8%"},
        value=0.129,
        n=1488,
        interval=(0.11, 0.14),
        window_seconds=300.0,
        event_time=since,
        active_since=since,
        severity="critical",
        fingerprint=fp,
        actions=tuple(actions),
        evidence={"window_seconds": 300.0},
    )


def planner(
    actions: Mapping[str, Mapping[str, object]],
    audit: list[dict[str, object]] | None = None,
    versions: Sequence[str] = (),
    **kw: object,
) -> tuple[ActionPlanner, list[dict[str, object]]]:
    """A planner writing its audit records to a list."""
    recs: list[dict[str, object]] = [] if audit is None else audit
    return ActionPlanner(alerting(actions, **kw), recs.append, versions_seen=lambda _m: versions), recs


HTTP = {"kind": "http", "url": URL, "cooldown": "0s"}


def kinds(recs: list[dict[str, object]]) -> list[object]:
    """The kinds of audit records, in order."""
    return [r["kind"] for r in recs]


def test_firing_starts_the_action_after_auditing_it() -> None:
    """A firing alert yields one execution, and action.started with the exact request is already audited."""
    p, recs = planner({"act": {**HTTP, "body": {"model": "{labels.model}", "v": "{value}", "id": "{action_id}"}}})
    [ex] = p.on_alert(record(), T0)
    assert kinds(recs) == ["action.started"]
    started = recs[0]
    assert started["action_id"] == ex.action_id == action_id("act", FP, SINCE)
    assert started["actor"] == "driftwatch"
    assert started["inputs"] == {"request": ex.request.to_json()}
    assert ex.request.body == {"model": "support-router", "v": 0.129, "id": ex.action_id}
    assert ex.request.target == URL
    p.finish(ex, Outcome(True, 200), T0 + 1)
    assert kinds(recs) == ["action.started", "action.succeeded"]
    assert recs[1]["outcome"] == {"ok": True, "status": 200, "error": None}
    assert p.actions()[0]["state"] == "succeeded"


def test_pending_is_ignored() -> None:
    """A pending alert decides nothing and audits nothing."""
    p, recs = planner({"act": HTTP})
    assert p.on_alert(record("pending"), T0) == []
    assert recs == []


def test_template_fills_labels_params_and_text() -> None:
    """Placeholders fill from labels, params, rule and fingerprint; embedded ones become text, missing labels null."""
    body = {
        "where": "{labels.model}/{labels.version} {labels.attribute}={labels.slice}",
        "slice": "{labels.slice}",
        "team": "{params.team}",
        "nested": [{"rule": "{rule}", "fp": "{fingerprint}"}],
        "literal": "{{not a placeholder}}",
        "n": 3,
    }
    p, _ = planner({"act": {**HTTP, "body": body, "params": {"team": "care"}}})
    [ex] = p.on_alert(record(), T0)
    assert ex.request.body == {
        "where": "support-router/v8 =",
        "slice": None,
        "team": "care",
        "nested": [{"rule": "complaint_rate_high", "fp": FP}],
        "literal": "{not a placeholder}",
        "n": 3,
    }


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ({"x": "{labels.region}"}, "unknown placeholder {labels.region}"),
        ({"x": "{params.nope}"}, "unknown placeholder {params.nope}"),
        ({"x": ["{__class__}"]}, "unknown placeholder {__class__}"),
        ({"x": "{value:.2f}"}, "no format spec"),
        ({"x": "{value!r}"}, "no format spec"),
        ({"x": "{labels.model"}, "literal braces"),
    ],
)
def test_template_errors_are_config_errors(body: dict[str, object], expect: str) -> None:
    """Unknown placeholders, format specs and unbalanced braces fail at config time with the key path."""
    with pytest.raises(ConfigError, match=r"alerting\.actions\.act\.body\.x") as err:
        planner({"act": {**HTTP, "body": body}})
    assert expect in str(err.value)


def test_rollback_cannot_be_undone_on_resolve() -> None:
    """undo_on_resolve on a rollback is refused at config time (it would redeploy the alerting version)."""
    with pytest.raises(ConfigError, match="undo_on_resolve"):
        planner({"act": {"kind": "rollback_model", "transport": "kafka", "undo_on_resolve": True}})


def test_global_dry_run_audits_the_exact_request_and_calls_nothing() -> None:
    """With alerting.dry_run, a firing alert yields no execution and audits the exact request it would send."""
    p, recs = planner({"act": {**HTTP, "body": {"m": "{labels.model}"}}}, dry_run=True)
    assert p.on_alert(record(), T0) == []
    assert kinds(recs) == ["action.dry_run"]
    assert recs[0]["inputs"] == {
        "request": {"transport": "http", "target": URL, "key": None, "body": {"m": "support-router"}, "phase": "do"}
    }
    assert p.actions()[0]["state"] == "dry_run"


def test_per_action_dry_run_leaves_other_actions_live() -> None:
    """A per-action dry_run only affects that action."""
    p, recs = planner({"act": {**HTTP, "dry_run": True}, "live": HTTP})
    exs = p.on_alert(record(actions=("act", "live")), T0)
    assert [e.name for e in exs] == ["live"]
    assert kinds(recs) == ["action.dry_run", "action.started"]


def test_kill_switch_suppresses_everything() -> None:
    """With the kill switch on, nothing runs and each action is audited as suppressed with the reason."""
    p, recs = planner({"act": HTTP, "other": {**HTTP, "requires_approval": True}}, kill_switch=True)
    assert p.on_alert(record(actions=("act", "other")), T0) == []
    assert kinds(recs) == ["action.suppressed", "action.suppressed"]
    assert {r["reason"] for r in recs} == {"kill_switch"}
    assert p.counters.suppressed["kill_switch"] == 2


def test_each_decision_is_one_log_line_without_labels_or_request() -> None:
    """Suppressions, proposals, starts and ends are logged by action id, name and reason; labels and bodies are not."""
    acts = {
        "act": {**HTTP, "cooldown": "10m", "body": {"slice": "{labels.slice}"}},
        "ask": {**HTTP, "requires_approval": True},
    }
    p, _ = planner(acts)
    with capture_logs() as logs:
        [ex] = p.on_alert(record(actions=("act", "ask"), attribute="region", slice="EU"), T0)
        p.finish(ex, Outcome(False, 503, "HTTP 503"), T0 + 1)
        p.on_alert(record(actions=("act",), since=LATER, attribute="region", slice="EU"), T0 + 2)
    assert [(e["event"], e["name"]) for e in logs] == [
        ("action_planned", "act"),
        ("action_started", "act"),
        ("action_planned", "ask"),
        ("action_proposed", "ask"),
        ("action_finished", "act"),
        ("action_planned", "act"),
        ("action_suppressed", "act"),
    ]
    assert (logs[4]["outcome"], logs[4]["error"]) == ("failed", "HTTP 503")
    assert logs[6]["reason"] == "cooldown"
    assert logs[1]["action_id"] == action_id("act", FP, SINCE)
    assert "EU" not in repr(logs)


def test_cooldown_is_per_action_and_target() -> None:
    """A second run for the same model and slice within the cooldown is suppressed; another slice runs."""
    p, recs = planner({"act": {**HTTP, "cooldown": "10m"}})
    assert p.on_alert(record(since="2026-11-18T12:01:00.000Z", attribute="region", slice="EU"), T0)
    assert p.on_alert(record(since="2026-11-18T12:02:00.000Z", attribute="region", slice="EU"), T0 + 60) == []
    assert recs[-1]["kind"] == "action.suppressed"
    assert recs[-1]["reason"] == "cooldown"
    assert recs[-1]["target"] == "support-router/region=EU"
    assert p.on_alert(record(since="2026-11-18T12:03:00.000Z", fp="b" * 16, attribute="region", slice="US"), T0 + 60)
    assert p.on_alert(record(since="2026-11-18T12:04:00.000Z", attribute="region", slice="EU"), T0 + 600)


def test_max_per_hour_limits_runs_of_one_action() -> None:
    """At most max_per_hour runs of an action in any hour; the next is suppressed until the hour has passed."""
    p, recs = planner({"act": {**HTTP, "max_per_hour": 2}})
    assert p.on_alert(record(since="2026-11-18T12:11:00.000Z", model="m1"), T0)
    assert p.on_alert(record(since="2026-11-18T12:12:00.000Z", model="m2"), T0 + 10)
    assert p.on_alert(record(since="2026-11-18T12:13:00.000Z", model="m3"), T0 + 20) == []
    assert recs[-1]["reason"] == "max_per_hour"
    assert p.on_alert(record(since="2026-11-18T12:14:00.000Z", model="m4"), T0 + 3600)


def test_approval_then_run() -> None:
    """An action needing approval is proposed; approve() audits the approver, then starts it."""
    p, recs = planner({"act": {**HTTP, "requires_approval": True, "approval_ttl": "30m"}})
    assert p.on_alert(record(), T0) == []
    assert kinds(recs) == ["action.proposed"]
    [a] = p.actions()
    assert a["state"] == "proposed"
    assert a["expires"] == "2027-01-15T08:30:00.000Z"
    [ex] = p.approve(str(a["id"]), "token:0123abcd/alice", T0 + 60)
    assert kinds(recs) == ["action.proposed", "action.approved", "action.started"]
    assert recs[1]["actor"] == "token:0123abcd/alice"
    assert ex.request.to_json() == recs[0]["inputs"]["request"]  # type: ignore[index]
    with pytest.raises(ActionConflictError):
        p.approve(str(a["id"]), "token:0123abcd/bob", T0 + 61)


def test_deny_and_unknown_ids() -> None:
    """A denied action never runs; deciding it again is a conflict; an unknown id is not found."""
    p, recs = planner({"act": {**HTTP, "requires_approval": True}})
    p.on_alert(record(), T0)
    aid = action_id("act", FP, SINCE)
    p.deny(aid, "token:0123abcd/alice", T0 + 5)
    assert recs[-1]["kind"] == "action.denied"
    assert recs[-1]["actor"] == "token:0123abcd/alice"
    with pytest.raises(ActionConflictError):
        p.approve(aid, "token:0123abcd/bob", T0 + 6)
    with pytest.raises(ActionNotFoundError):
        p.approve("nope", "token:0123abcd/bob", T0 + 6)


def test_unanswered_proposal_expires() -> None:
    """A proposal expires after approval_ttl (audited), and approving it afterwards is a conflict."""
    p, recs = planner({"act": {**HTTP, "requires_approval": True, "approval_ttl": "5m"}})
    p.on_alert(record(), T0)
    p.expire(T0 + 299)
    assert kinds(recs) == ["action.proposed"]
    p.expire(T0 + 300)
    assert kinds(recs) == ["action.proposed", "action.expired"]
    with pytest.raises(ActionConflictError, match="expired"):
        p.approve(action_id("act", FP, SINCE), "token:0123abcd/alice", T0 + 301)


def test_late_approval_expires_even_without_a_tick() -> None:
    """Approving after the ttl fails with a conflict even if expire() never ran."""
    p, recs = planner({"act": {**HTTP, "requires_approval": True, "approval_ttl": "5m"}})
    p.on_alert(record(), T0)
    with pytest.raises(ActionConflictError):
        p.approve(action_id("act", FP, SINCE), "token:0123abcd/alice", T0 + 400)
    assert kinds(recs) == ["action.proposed", "action.expired"]


def test_resolve_before_approval_expires_the_proposal() -> None:
    """If the alert resolves while a proposal waits, the proposal expires."""
    p, recs = planner({"act": {**HTTP, "requires_approval": True}})
    p.on_alert(record(), T0)
    assert p.on_alert(record("resolved"), T0 + 60) == []
    assert kinds(recs) == ["action.proposed", "action.expired"]


def test_undo_on_resolve_toggles_the_filter_back() -> None:
    """toggle_safety_filter sets strict for the slice when firing and normal when the alert resolves, once."""
    p, recs = planner(
        {"act": {"kind": "toggle_safety_filter", "transport": "kafka", "undo_on_resolve": True}},
    )
    [do] = p.on_alert(record(attribute="region", slice="EU"), T0)
    assert do.request.transport == "kafka"
    assert do.request.target == "driftwatch-control"
    assert do.request.key == "support-router"
    assert do.request.body == {
        "action": "toggle_safety_filter",
        "model_id": "support-router",
        "slice": {"region": "EU"},
        "state": "strict",
        "action_id": do.action_id,
        "rule": "complaint_rate_high",
        "fingerprint": FP,
        "phase": "do",
    }
    p.finish(do, Outcome(True), T0 + 1)
    [undo] = p.on_alert(record("resolved", attribute="region", slice="EU"), T0 + 900)
    assert undo.action_id == do.action_id
    assert undo.phase == "undo"
    assert undo.request.body["state"] == "normal"
    p.finish(undo, Outcome(True), T0 + 901)
    assert p.on_alert(record("resolved", attribute="region", slice="EU"), T0 + 902) == []
    assert kinds(recs) == ["action.started", "action.succeeded", "action.started", "action.undone"]
    assert recs[2]["phase"] == "undo"


def test_route_to_human_on_and_off() -> None:
    """route_to_human turns human review on for the slice and off on resolve."""
    p, _ = planner({"act": {"kind": "route_to_human", "transport": "http", "url": URL, "undo_on_resolve": True}})
    [do] = p.on_alert(record(attribute="channel", slice="chat"), T0)
    assert (do.request.body["action"], do.request.body["state"]) == ("route_to_human", "on")
    assert do.request.body["slice"] == {"channel": "chat"}
    p.finish(do, Outcome(True, 204), T0)
    [undo] = p.on_alert(record("resolved", attribute="channel", slice="chat"), T0 + 60)
    assert undo.request.body["state"] == "off"


def test_failed_action_is_not_undone() -> None:
    """An action whose call failed is not undone on resolve (its failure is audited for on-call)."""
    p, recs = planner({"act": {**HTTP, "undo_on_resolve": True}})
    [do] = p.on_alert(record(), T0)
    p.finish(do, Outcome(False, 503, "HTTP 503"), T0 + 1)
    assert recs[-1]["kind"] == "action.failed"
    assert recs[-1]["outcome"] == {"ok": False, "status": 503, "error": "HTTP 503"}
    assert p.on_alert(record("resolved"), T0 + 60) == []


def test_rollback_to_the_version_seen_before() -> None:
    """Without params.to_version, a rollback targets the version first seen before the alerting one."""
    p, _ = planner({"act": {"kind": "rollback_model", "transport": "kafka"}}, versions=["v6", "v7", "v8"])
    [ex] = p.on_alert(record(), T0)
    assert ex.request.body["action"] == "rollback"
    assert (ex.request.body["from_version"], ex.request.body["to_version"]) == ("v8", "v7")
    assert ex.request.body["model_id"] == "support-router"


def test_rollback_to_the_configured_version() -> None:
    """params.to_version wins over the versions seen."""
    p, _ = planner(
        {"act": {"kind": "rollback_model", "transport": "kafka", "params": {"to_version": "v5"}}},
        versions=["v7", "v8"],
    )
    [ex] = p.on_alert(record(), T0)
    assert ex.request.body["to_version"] == "v5"


def test_rollback_without_a_known_previous_version_fails_audited() -> None:
    """With no version known before the alerting one, the rollback fails with a clear, audited reason."""
    p, recs = planner({"act": {"kind": "rollback_model", "transport": "kafka"}}, versions=["v8"])
    assert p.on_alert(record(), T0) == []
    assert kinds(recs) == ["action.failed"]
    reason = recs[0]["outcome"]["reason"]  # type: ignore[index]
    assert "no version of support-router was seen before v8" in reason
    assert "params.to_version" in reason
    assert p.actions()[0]["state"] == "failed"


def test_unknown_action_name_is_audited_as_failed() -> None:
    """A record naming an action that is not configured is audited as failed, not a crash."""
    p, recs = planner({"act": HTTP})
    assert p.on_alert(record(actions=("ghost",)), T0) == []
    assert recs[0]["kind"] == "action.failed"
    assert recs[0]["outcome"]["error"] == "NotConfigured"  # type: ignore[index]


def test_same_firing_twice_runs_once() -> None:
    """The same firing record delivered twice decides once."""
    p, recs = planner({"act": HTTP})
    assert len(p.on_alert(record(), T0)) == 1
    assert p.on_alert(record(), T0 + 1) == []
    assert p.counters.duplicates == 1
    assert kinds(recs) == ["action.started"]


def test_idempotency_and_guardrails_survive_a_restart(tmp_path: Path) -> None:
    """A planner rebuilt from the audit file knows executed ids, cooldowns and open proposals."""
    path = tmp_path / "audit.jsonl"
    acts = {"act": {**HTTP, "cooldown": "10m"}, "ask": {**HTTP, "requires_approval": True}}
    with AuditLog(path) as log:
        p1 = ActionPlanner(alerting(acts), log.append)
        exs = p1.on_alert(record(actions=("act", "ask")), T0)
        p1.finish(exs[0], Outcome(True, 200), T0 + 1)
    with AuditLog(path) as log:
        p2 = ActionPlanner(alerting(acts), log.append)
        assert p2.restore(read_records(path)) == 2
        assert p2.on_alert(record(actions=("act", "ask")), T0 + 2) == []
        assert p2.counters.duplicates == 2
        # A new firing of the same target within the cooldown is still held back.
        assert p2.on_alert(record(actions=("act",), since=LATER), T0 + 60) == []
        # The open proposal can be approved after the restart and sends the proposed request.
        [ex] = p2.approve(action_id("ask", FP, SINCE), "token:0123abcd/alice", T0 + 70)
        assert ex.request.target == URL
    states = {a["name"]: a["state"] for a in p2.actions() if a["id"] != action_id("act", FP, LATER)}
    assert states == {"act": "succeeded", "ask": "started"}
    assert verify(path).ok


def test_failed_audit_write_means_nothing_runs() -> None:
    """If the audit write raises, no execution is returned and the planner decides again next time."""
    calls = {"n": 0}

    def audit(rec: dict[str, object]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise AuditError("disk full")

    p = ActionPlanner(alerting({"act": HTTP}), audit)
    with pytest.raises(AuditError):
        p.on_alert(record(), T0)
    assert p.actions() == []
    assert len(p.on_alert(record(), T0 + 1)) == 1


def test_execution_phase_follows_request() -> None:
    """An Execution's phase is its request's phase."""
    p, _ = planner({"act": HTTP})
    [ex] = p.on_alert(record(), T0)
    assert isinstance(ex, Execution)
    assert ex.phase == "do"


def test_undo_still_happens_after_a_long_incident() -> None:
    """An action awaiting undo_on_resolve is remembered past the retention of decided actions."""
    p, _ = planner({"act": {**HTTP, "undo_on_resolve": True}, "plain": HTTP})
    exs = p.on_alert(record(actions=("act", "plain")), T0)
    for ex in exs:
        p.finish(ex, Outcome(True, 200), T0)
    p.expire(T0 + 8 * 86400)
    assert [a["name"] for a in p.actions()] == ["act"]
    [undo] = p.on_alert(record("resolved", actions=("act", "plain")), T0 + 8 * 86400)
    assert undo.phase == "undo"
