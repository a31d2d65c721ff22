"""Runbook actions bound to rules: the pure planner that decides, audits first, and says what to call.

:class:`ActionPlanner` takes alert records and operator decisions with the
time passed in, applies the guardrails, and writes every decision to the
audit hook *before* it takes effect. What must be called comes back as
:class:`Execution` values; the shell
(:class:`~driftwatch.daemon.actions.ActionRunner`) calls them and hands the
:class:`Outcome` back.

Guardrails, in the order they apply to a firing alert:

1. ``kill_switch``: nothing runs (``action.suppressed``, reason ``kill_switch``).
2. Planning: the request is rendered from the template; a rollback with no
   known previous version fails here (``action.failed``).
3. ``cooldown`` per (action, target) and ``max_per_hour`` per action
   (``action.suppressed``, reasons ``cooldown`` / ``max_per_hour``).
4. ``dry_run`` (global or per action): ``action.dry_run`` with the exact
   request; nothing is called.
5. ``requires_approval``: ``action.proposed``; runs only after
   :meth:`ActionPlanner.approve`; ``deny`` and expiry after ``approval_ttl``.
6. ``action.started`` is written (write-ahead, guarantee 21 in
   docs/guarantees.md), then the call, then ``action.succeeded`` /
   ``action.failed``.

An action id is a hash of (action name, alert fingerprint, alert
``active_since``) (:func:`~driftwatch.alerts.records.action_id`), so a firing
delivered twice decides once; the planner rebuilds what it knows from the
audit file at start.
"""

from __future__ import annotations

import json
import string
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from driftwatch._log import get_logger
from driftwatch._time import epoch, rfc3339
from driftwatch.alerts.records import AlertRecord, AlertRecordError, action_id, decode_record
from driftwatch.config import ActionConfig, AlertingConfig
from driftwatch.errors import ConfigError, DriftwatchError

__all__ = [
    "SYSTEM_ACTOR",
    "TEMPLATE_KEYS",
    "ActionConflictError",
    "ActionCounters",
    "ActionError",
    "ActionNotFoundError",
    "ActionPlanner",
    "AlertRecordError",
    "Execution",
    "Outcome",
    "PlanError",
    "Request",
    "action_id",
    "config_problems",
    "render",
    "template_problems",
]

log = get_logger(__name__)

SYSTEM_ACTOR = "driftwatch"
_LABEL_KEYS = ("alertname", "attribute", "feature", "model", "severity", "slice", "version")
TEMPLATE_KEYS: tuple[str, ...] = (
    "action_id",
    "fingerprint",
    *(f"labels.{k}" for k in _LABEL_KEYS),
    "phase",
    "rule",
    "value",
)
"""Placeholders a body template may use, besides ``{params.<name>}`` for the action's own params."""

_UNDO_STATE = {"strict": "normal", "normal": "strict"}
# Forget decided actions this long after they were created; redeliveries come far sooner.
_RETAIN_SECONDS = 7 * 86400.0
_HOUR = 3600.0

Phase = Literal["do", "undo"]


class ActionError(DriftwatchError):
    """Root of the errors of runbook actions."""


class ActionNotFoundError(ActionError, LookupError):
    """No action has this id."""


class ActionConflictError(ActionError, ValueError):
    """The action is not awaiting a decision (already decided, expired, or running)."""


class PlanError(ActionError, ValueError):
    """The request of an action cannot be built for this alert (e.g. no previous version to roll back to)."""


@dataclass(frozen=True, slots=True)
class Request:
    """Exactly what an action sends: an HTTP POST (``target`` = URL) or a Kafka message (``target`` = topic)."""

    transport: Literal["http", "kafka"]
    target: str
    body: dict[str, object]
    key: str | None
    phase: Phase

    def to_json(self) -> dict[str, object]:
        """The audit form (no headers, so no token or signature)."""
        return {
            "transport": self.transport,
            "target": self.target,
            "key": self.key,
            "body": self.body,
            "phase": self.phase,
        }

    @classmethod
    def from_json(cls, data: object) -> Request | None:
        """Read :meth:`to_json` back (from the audit file); None if it does not fit."""
        if not isinstance(data, Mapping):
            return None
        transport, target, body, key, phase = (data.get(k) for k in ("transport", "target", "body", "key", "phase"))
        if transport not in ("http", "kafka") or not isinstance(target, str) or not isinstance(body, dict):
            return None
        if phase not in ("do", "undo") or not isinstance(key, str | None):
            return None
        return cls(transport, target, dict(body), key, phase)

    def encoded(self) -> bytes:
        """The body as sent: compact JSON, UTF-8."""
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class Execution:
    """A call the shell must make now; ``action.started`` is already in the audit trail."""

    action_id: str
    name: str
    request: Request

    @property
    def phase(self) -> Phase:
        """``do`` or ``undo``."""
        return self.request.phase


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call ended: ``ok``, the HTTP status if any, and the error class (never a message or a secret)."""

    ok: bool
    status: int | None = None
    error: str | None = None


@dataclass(slots=True)
class ActionCounters:
    """What the actions did since start (for metrics)."""

    received: int = 0
    rejected: int = 0
    duplicates: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    undone: int = 0
    proposed: int = 0
    approved: int = 0
    denied: int = 0
    expired: int = 0
    dry_run: int = 0
    egress_refused: int = 0  # http calls the egress policy refused (also counted as failed)
    suppressed: Counter[str] = field(default_factory=Counter)

    def by_outcome(self) -> dict[str, int]:
        """Every step count by name, in declaration order (``suppressed`` is by reason, apart)."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}


@dataclass(slots=True)
class _Entry:
    """What the planner knows about one action id."""

    action_id: str
    name: str
    rule: str
    labels: dict[str, str]
    target: str
    created: float
    state: str = "new"
    actor: str = SYSTEM_ACTOR
    expires: float | None = None
    reason: str | None = None
    request: Request | None = None
    evidence: dict[str, object] = field(default_factory=dict)
    updated: float = 0.0


_FMT = string.Formatter()


def _parse(text: str) -> list[tuple[str, str | None, str | None, str | None]]:
    return list(_FMT.parse(text))


def template_problems(where: str, template: object, known: Iterable[str]) -> list[str]:
    """Every problem of a body template: unknown placeholders, format specs, unbalanced braces."""
    names = set(known)
    out: list[str] = []
    if isinstance(template, str):
        try:
            parts = _parse(template)
        except ValueError as e:
            return [f"{where}: {e} in {template!r} (write {{{{ and }}}} for literal braces)"]
        for _, fname, spec, conv in parts:
            if fname is None:
                continue
            if fname not in names:
                out.append(f"{where}: unknown placeholder {{{fname}}}; known: {', '.join(sorted(names))}")
            elif spec or conv:
                out.append(f"{where}: {{{fname}}} takes no format spec or conversion")
    elif isinstance(template, Mapping):
        for k, v in template.items():
            out += template_problems(f"{where}.{k}", v, names)
    elif isinstance(template, list | tuple):
        for i, v in enumerate(template):
            out += template_problems(f"{where}[{i}]", v, names)
    return out


def render(template: object, context: Mapping[str, object]) -> object:
    """Fill a JSON template: a string that is exactly one placeholder takes the value's JSON type.

    No code runs: placeholders are looked up in ``context`` as whole names.

    >>> render({"m": "{labels.model}", "why": "{rule} at {value}", "v": "{value}"},
    ...        {"labels.model": "support-router", "rule": "r", "value": 0.12})
    {'m': 'support-router', 'why': 'r at 0.12', 'v': 0.12}
    """
    if isinstance(template, str):
        try:
            parts = _parse(template)
        except ValueError as e:
            raise PlanError(f"template {template!r}: {e}") from None
        if len(parts) == 1 and not parts[0][0] and parts[0][1] is not None:
            return _lookup(context, parts[0][1])
        out: list[str] = []
        for literal, fname, _, _ in parts:
            out.append(literal)
            if fname is not None:
                v = _lookup(context, fname)
                out.append("" if v is None else str(v))
        return "".join(out)
    if isinstance(template, Mapping):
        return {str(k): render(v, context) for k, v in template.items()}
    if isinstance(template, list | tuple):
        return [render(v, context) for v in template]
    return template


def _lookup(context: Mapping[str, object], name: str) -> object:
    if name not in context:
        raise PlanError(f"unknown placeholder {{{name}}}")
    return context[name]


def _target(labels: Mapping[str, str]) -> str:
    """What cooldowns are per: the model, plus the slice if the alert has one."""
    model = labels.get("model", "*")
    attr, value = labels.get("attribute"), labels.get("slice")
    if attr and attr != "*" and value is not None:
        return f"{model}/{attr}={value}"
    return model


def _slice(labels: Mapping[str, str]) -> dict[str, str] | None:
    attr, value = labels.get("attribute"), labels.get("slice")
    if attr and attr != "*" and value is not None:
        return {attr: value}
    return None


def _transport(ac: ActionConfig) -> Literal["http", "kafka"]:
    if ac.transport is not None:
        return ac.transport
    return "kafka" if ac.kind == "kafka" else "http"


def config_problems(alerting: AlertingConfig) -> list[str]:
    """Problems of the actions config that only the action side checks (templates, params, undo)."""
    out: list[str] = []
    for name, ac in alerting.actions.items():
        where = f"alerting.actions.{name}"
        known = (*TEMPLATE_KEYS, *(f"params.{k}" for k in ac.params))
        out += template_problems(f"{where}.body", ac.body, known)
        if ac.kind == "rollback_model" and ac.undo_on_resolve:
            out.append(
                f"{where}.undo_on_resolve: a rollback is not undone automatically (it would redeploy the version that alerted)"
            )
        if ac.kind == "toggle_safety_filter" and ac.params.get("state", "strict") not in _UNDO_STATE:
            out.append(f"{where}.params.state: must be strict or normal")
        if _transport(ac) == "http" and ac.url is None:
            out.append(f"{where}.url: the http transport needs a url")
    return out


class ActionPlanner:
    """The pure decision core: alerts and decisions in (time passed in), audited decisions and executions out.

    ``audit`` is called with each record before the decision takes effect; if
    it raises (:class:`~driftwatch.actions.audit.AuditError`), the planner's
    state is unchanged and nothing is returned to run.
    """

    def __init__(
        self,
        alerting: AlertingConfig,
        audit: Callable[[dict[str, object]], object],
        *,
        versions_seen: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        problems = config_problems(alerting)
        if problems:
            raise ConfigError(problems)
        self.config = alerting
        self._audit = audit
        self._versions = versions_seen or (lambda _model: ())
        self._entries: dict[str, _Entry] = {}
        self._last_run: dict[tuple[str, str], float] = {}
        self._runs: dict[str, deque[float]] = {}
        self.counters = ActionCounters()

    # -- inputs -----------------------------------------------------------------------------------

    def on_alert(self, record: AlertRecord | bytes | Mapping[str, object], now: float) -> list[Execution]:
        """Decide on one alert transition: firing runs the rule's actions, resolved undoes, pending is ignored."""
        alert = decode_record(record)
        self.counters.received += 1
        self.expire(now)
        out: list[Execution] = []
        for name in alert.actions:
            ex = (
                self._fire(name, alert, now)
                if alert.state == "firing"
                else self._resolve(name, alert, now)
                if alert.state == "resolved"
                else None
            )
            if ex is not None:
                out.append(ex)
        return out

    def approve(self, action_id: str, actor: str, now: float) -> list[Execution]:
        """Approve a proposed action (audited with ``actor`` first); return what to run now."""
        e = self._pending(action_id, now)
        self._record("action.approved", e, now, "approved", actor=actor)
        self.counters.approved += 1
        ac = self.config.actions.get(e.name)
        if ac is None or e.request is None:
            self._record(
                "action.failed",
                e,
                now,
                "failed",
                outcome={"error": "NotConfigured", "reason": f"action {e.name!r} is no longer configured"},
            )
            return []
        blocked = self._blocked(e.name, ac, e.target, now)
        if blocked is not None:
            self._suppress(e, blocked, now, "do")
            return []
        if self.config.dry_run or ac.dry_run:
            self._dry_run(e, e.request, now)
            return []
        return [self._start(e, e.request, now)]

    def deny(self, action_id: str, actor: str, now: float) -> None:
        """Deny a proposed action (audited with ``actor``); it never runs."""
        e = self._pending(action_id, now)
        self._record("action.denied", e, now, "denied", actor=actor)
        self.counters.denied += 1

    def expire(self, now: float) -> None:
        """Expire proposals whose ``approval_ttl`` passed unanswered; forget old decided actions."""
        for e in list(self._entries.values()):
            if e.state == "proposed" and e.expires is not None and e.expires <= now:
                self._expire(e, now, "approval_ttl passed without a decision")
            elif now - e.created > _RETAIN_SECONDS and not self._may_act(e):
                del self._entries[e.action_id]

    def _may_act(self, e: _Entry) -> bool:
        """Whether an entry can still lead to a call or a decision (so it must be remembered)."""
        if e.state in ("proposed", "approved", "started", "undoing"):
            return True
        ac = self.config.actions.get(e.name)
        return e.state in ("succeeded", "dry_run") and ac is not None and ac.undo_on_resolve

    def finish(self, ex: Execution, outcome: Outcome, now: float) -> None:
        """Audit how a call ended (``succeeded`` / ``undone`` / ``failed``)."""
        e = self._entries[ex.action_id]
        result: dict[str, object] = {"ok": outcome.ok, "status": outcome.status, "error": outcome.error}
        if ex.phase == "do":
            kind, state = ("action.succeeded", "succeeded") if outcome.ok else ("action.failed", "failed")
        else:
            kind, state = ("action.undone", "undone") if outcome.ok else ("action.failed", "undo_failed")
        self._record(kind, e, now, state, phase=ex.phase, outcome=result)
        if not outcome.ok:
            self.counters.failed += 1
        elif ex.phase == "do":
            self.counters.succeeded += 1
        else:
            self.counters.undone += 1

    def restore(self, records: Iterable[Mapping[str, object]]) -> int:
        """Rebuild ids, states, proposals and run history from audit records; return how many actions are known."""
        for rec in records:
            kind = rec.get("kind")
            aid, name = rec.get("action_id"), rec.get("action")
            if (
                not isinstance(kind, str)
                or not kind.startswith("action.")
                or not isinstance(aid, str)
                or not isinstance(name, str)
            ):
                continue
            at = epoch(rec.get("time")) or 0.0
            labels = rec.get("labels")
            e = self._entries.get(aid)
            if e is None:
                e = self._entries[aid] = _Entry(
                    action_id=aid,
                    name=name,
                    rule=str(rec.get("rule") or ""),
                    labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
                    target=str(rec.get("target") or ""),
                    created=at,
                )
            phase = rec.get("phase", "do")
            state = _RESTORED_STATE.get((kind, phase))
            if state is None:
                continue
            e.state, e.updated = state, at
            e.actor = str(rec.get("actor") or SYSTEM_ACTOR)
            reason = rec.get("reason")
            e.reason = reason if isinstance(reason, str) else None
            if kind == "action.proposed":
                inputs = rec.get("inputs")
                e.request = Request.from_json(inputs.get("request")) if isinstance(inputs, Mapping) else None
                e.expires = epoch(rec.get("expires"))
            if state in ("dry_run", "started"):
                self._note_run(name, e.target, at)
        return len(self._entries)

    # -- outputs ----------------------------------------------------------------------------------

    def actions(self) -> list[dict[str, object]]:
        """Every known action, newest first: id, name, state, rule, labels, target, created, expires, actor, reason."""
        return [
            {
                "id": e.action_id,
                "name": e.name,
                "state": e.state,
                "rule": e.rule,
                "labels": dict(e.labels),
                "target": e.target,
                "created": rfc3339(e.created),
                "expires": None if e.expires is None else rfc3339(e.expires),
                "actor": e.actor,
                "reason": e.reason,
            }
            for e in sorted(self._entries.values(), key=lambda x: (-x.created, x.action_id))
        ]

    def get(self, action_id: str) -> dict[str, object]:
        """One action as in :meth:`actions`; :class:`ActionNotFoundError` if unknown."""
        for a in self.actions():
            if a["id"] == action_id:
                return a
        raise ActionNotFoundError(f"no action {action_id!r}")

    # -- decisions --------------------------------------------------------------------------------

    def _fire(self, name: str, alert: AlertRecord, now: float) -> Execution | None:
        aid = action_id(name, alert.fingerprint, alert.active_since)
        if aid in self._entries:
            self.counters.duplicates += 1
            return None
        e = _Entry(aid, name, alert.rule, dict(alert.labels), _target(alert.labels), now, evidence=alert.evidence)
        ac = self.config.actions.get(name)
        if ac is None:
            self._record(
                "action.failed",
                e,
                now,
                "failed",
                outcome={"error": "NotConfigured", "reason": f"action {name!r} is not in alerting.actions"},
            )
            self.counters.failed += 1
            return None
        if self.config.kill_switch:
            self._suppress(e, ("kill_switch", "alerting.kill_switch is on"), now, "do")
            return None
        try:
            req = self._request(name, ac, alert, aid, "do")
        except PlanError as err:
            self._record(
                "action.failed", e, now, "failed", reason="plan", outcome={"error": "PlanError", "reason": str(err)}
            )
            self.counters.failed += 1
            return None
        blocked = self._blocked(name, ac, e.target, now)
        if blocked is not None:
            self._suppress(e, blocked, now, "do", request=req)
            return None
        if self.config.dry_run or ac.dry_run:
            self._dry_run(e, req, now)
            return None
        if ac.requires_approval:
            e.request, e.expires = req, now + ac.approval_ttl
            self._record(
                "action.proposed",
                e,
                now,
                "proposed",
                inputs={"request": req.to_json()},
                expires=rfc3339(e.expires),
            )
            self.counters.proposed += 1
            return None
        return self._start(e, req, now)

    def _resolve(self, name: str, alert: AlertRecord, now: float) -> Execution | None:
        aid = action_id(name, alert.fingerprint, alert.active_since)
        e = self._entries.get(aid)
        if e is None:
            return None
        if e.state == "proposed":
            self._expire(e, now, "the alert resolved before a decision")
            return None
        ac = self.config.actions.get(name)
        if ac is None or not ac.undo_on_resolve or e.state not in ("succeeded", "dry_run"):
            return None
        if self.config.kill_switch:
            self._suppress(e, ("kill_switch", "alerting.kill_switch is on"), now, "undo")
            return None
        try:
            req = self._request(name, ac, alert, aid, "undo")
        except PlanError as err:
            self._record(
                "action.failed",
                e,
                now,
                "undo_failed",
                phase="undo",
                reason="plan",
                outcome={"error": "PlanError", "reason": str(err)},
            )
            self.counters.failed += 1
            return None
        if e.state == "dry_run" or self.config.dry_run or ac.dry_run:
            self._dry_run(e, req, now)
            return None
        return self._start(e, req, now)

    def _start(self, e: _Entry, req: Request, now: float) -> Execution:
        self._record(
            "action.started",
            e,
            now,
            "started" if req.phase == "do" else "undoing",
            phase=req.phase,
            inputs={"request": req.to_json()},
            evidence=True,
        )
        if req.phase == "do":
            self._note_run(e.name, e.target, now)
        self.counters.started += 1
        return Execution(e.action_id, e.name, req)

    def _dry_run(self, e: _Entry, req: Request, now: float) -> None:
        state = "dry_run" if req.phase == "do" else "undo_dry_run"
        self._record(
            "action.dry_run",
            e,
            now,
            state,
            phase=req.phase,
            inputs={"request": req.to_json()},
            outcome={"would": "send the request"},
            evidence=True,
        )
        if req.phase == "do":
            # A dry run previews the guardrails too, so it counts like a run.
            self._note_run(e.name, e.target, now)
        self.counters.dry_run += 1

    def _suppress(
        self, e: _Entry, why: tuple[str, str], now: float, phase: Phase, request: Request | None = None
    ) -> None:
        reason, detail = why
        self._record(
            "action.suppressed",
            e,
            now,
            "suppressed" if phase == "do" else "undo_suppressed",
            phase=phase,
            reason=reason,
            inputs=None if request is None else {"request": request.to_json()},
            outcome={"suppressed": reason, "detail": detail},
            evidence=True,
        )
        self.counters.suppressed[reason] += 1

    def _expire(self, e: _Entry, now: float, detail: str) -> None:
        self._record("action.expired", e, now, "expired", reason="expired", outcome={"detail": detail})
        self.counters.expired += 1

    def _pending(self, action_id: str, now: float) -> _Entry:
        e = self._entries.get(action_id)
        if e is None:
            raise ActionNotFoundError(f"no action {action_id!r}")
        if e.state == "proposed" and e.expires is not None and e.expires <= now:
            self._expire(e, now, "approval_ttl passed without a decision")
        if e.state != "proposed":
            raise ActionConflictError(f"action {action_id} is {e.state}, not awaiting approval")
        return e

    def _blocked(self, name: str, ac: ActionConfig, target: str, now: float) -> tuple[str, str] | None:
        if self.config.kill_switch:
            return "kill_switch", "alerting.kill_switch is on"
        last = self._last_run.get((name, target))
        if last is not None and now - last < ac.cooldown:
            return "cooldown", f"{name} ran for {target} {now - last:.0f}s ago; cooldown is {ac.cooldown:g}s"
        runs = self._runs.get(name)
        if runs is not None:
            while runs and now - runs[0] >= _HOUR:
                runs.popleft()
            if len(runs) >= ac.max_per_hour:
                return (
                    "max_per_hour",
                    f"{name} ran {len(runs)} times in the last hour; max_per_hour is {ac.max_per_hour}",
                )
        return None

    def _note_run(self, name: str, target: str, at: float) -> None:
        self._last_run[(name, target)] = max(at, self._last_run.get((name, target), at))
        self._runs.setdefault(name, deque()).append(at)

    def _record(
        self,
        kind: str,
        e: _Entry,
        now: float,
        state: str,
        *,
        actor: str = SYSTEM_ACTOR,
        phase: Phase = "do",
        reason: str | None = None,
        inputs: dict[str, object] | None = None,
        outcome: object = None,
        expires: str | None = None,
        evidence: bool = False,
    ) -> None:
        """Audit first; only when that succeeded does the entry change (write-ahead)."""
        rec: dict[str, object] = {
            "kind": kind,
            "time": rfc3339(now),
            "actor": actor,
            "rule": e.rule,
            "labels": e.labels,
            "evidence": e.evidence if evidence or kind == "action.proposed" else None,
            "inputs": inputs,
            "outcome": outcome,
            "action_id": e.action_id,
            "action": e.name,
            "target": e.target,
            "phase": phase,
        }
        if reason is not None:
            rec["reason"] = reason
        if expires is not None:
            rec["expires"] = expires
        self._audit(rec)
        e.state, e.actor, e.reason, e.updated = state, actor, reason, now
        self._entries.setdefault(e.action_id, e)
        _log_decision(kind, e, phase, outcome)

    # -- requests ---------------------------------------------------------------------------------

    def _request(self, name: str, ac: ActionConfig, alert: AlertRecord, aid: str, phase: Phase) -> Request:
        ctx: dict[str, object] = {
            "action_id": aid,
            "fingerprint": alert.fingerprint,
            "phase": phase,
            "rule": alert.rule,
            "value": alert.value,
        }
        for k in _LABEL_KEYS:
            ctx[f"labels.{k}"] = alert.labels.get(k)
        for k, v in ac.params.items():
            ctx[f"params.{k}"] = v
        rendered = render(ac.body, ctx)
        extra: dict[str, object] = dict(rendered) if isinstance(rendered, dict) else {}
        model = alert.labels.get("model")
        transport = _transport(ac)
        if ac.kind in ("http", "kafka"):
            body = extra
        else:
            if not model:
                raise PlanError(f"{ac.kind} needs the alert's model label")
            common: dict[str, object] = {
                "action_id": aid,
                "rule": alert.rule,
                "fingerprint": alert.fingerprint,
                "phase": phase,
            }
            if ac.kind == "toggle_safety_filter":
                state = ac.params.get("state", "strict")
                body = {
                    **extra,
                    "action": "toggle_safety_filter",
                    "model_id": model,
                    "slice": _slice(alert.labels),
                    "state": state if phase == "do" else _UNDO_STATE[state],
                    **common,
                }
            elif ac.kind == "route_to_human":
                body = {
                    **extra,
                    "action": "route_to_human",
                    "model_id": model,
                    "slice": _slice(alert.labels),
                    "state": "on" if phase == "do" else "off",
                    **common,
                }
            else:
                body = {**extra, "action": "rollback", "model_id": model, **self._rollback(model, alert, ac), **common}
        target = (ac.url or "") if transport == "http" else (ac.topic or self.config.control_topic.name)
        key = (model or alert.fingerprint) if transport == "kafka" else None
        log.info("action_planned", action_id=aid, name=name, phase=phase, transport=transport)
        return Request(transport, target, body, key, phase)

    def _rollback(self, model: str, alert: AlertRecord, ac: ActionConfig) -> dict[str, object]:
        current = alert.labels.get("version")
        if not current:
            raise PlanError("rollback_model needs the alert's version label (a rule per model version)")
        to = ac.params.get("to_version")
        if to is None:
            seen = list(self._versions(model))
            if current in seen and seen.index(current) > 0:
                to = seen[seen.index(current) - 1]
            else:
                raise PlanError(
                    f"no version of {model} was seen before {current}; set params.to_version for this action"
                )
        if to == current:
            raise PlanError(f"to_version {to} is the version that alerted")
        return {"from_version": current, "to_version": to}


_FINISHED = frozenset({"action.succeeded", "action.failed", "action.undone"})


def _log_decision(kind: str, e: _Entry, phase: Phase, outcome: object) -> None:
    """One log line per audited decision: ``action_started``, ``action_finished``, ``action_suppressed``, ….

    Ids, names and bounded words only: never the request, the labels or the evidence.
    """
    fields: dict[str, object] = {"action_id": e.action_id, "name": e.name, "phase": phase}
    if e.reason is not None:
        fields["reason"] = e.reason
    if kind in _FINISHED:
        fields["outcome"] = e.state
        if isinstance(outcome, Mapping) and outcome.get("error") is not None:
            fields["error"] = outcome["error"]
        log.info("action_finished", **fields)
    else:
        log.info(kind.replace(".", "_"), **fields)


_RESTORED_STATE: dict[tuple[str, object], str] = {
    ("action.proposed", "do"): "proposed",
    ("action.approved", "do"): "approved",
    ("action.denied", "do"): "denied",
    ("action.expired", "do"): "expired",
    ("action.suppressed", "do"): "suppressed",
    ("action.suppressed", "undo"): "undo_suppressed",
    ("action.dry_run", "do"): "dry_run",
    ("action.dry_run", "undo"): "undo_dry_run",
    ("action.started", "do"): "started",
    ("action.started", "undo"): "undoing",
    ("action.succeeded", "do"): "succeeded",
    ("action.failed", "do"): "failed",
    ("action.failed", "undo"): "undo_failed",
    ("action.undone", "undo"): "undone",
}
