"""Delivering alerts to receivers: a pure grouping/retry core and the async service around it.

:class:`Notifier` is the core. It is fed alert transition records (the
alerts topic, :meth:`~driftwatch.alerts.engine.AlertTransition.to_record`)
and the time, and answers which :class:`Notification` must be sent now.

- ``webhook`` receivers get Alertmanager's webhook v4 JSON plus a
  ``driftwatch`` object, grouped like Alertmanager groups (PROMISES 10–13):
  a new group is first notified after ``group_wait``; later changes go out
  at ``group_interval`` ticks; an unchanged firing group is repeated after
  ``repeat_interval``; an alert resolved before its group's first
  notification is never sent; one ``resolved`` notification ends a group.
- ``alertmanager`` receivers get the body of ``POST /api/v2/alerts``, pushed
  the way Prometheus pushes: at once when an alert fires, again every
  ``resend_interval`` (``endsAt`` four resends ahead, so Alertmanager
  resolves an alert whose sender died), and once with ``endsAt`` = the
  resolve time. Alertmanager does the grouping.
- Every notification has a deterministic ``id`` (the ``webhook-id``), kept
  across retries and restarts (PROMISES 16). Failed attempts are retried with
  full-jitter exponential backoff (base 1 s, cap 60 s) or after the
  receiver's ``Retry-After``; a notification older than the receiver's
  ``max_age``, or one failing with a non-retryable answer, is dead-lettered
  (PROMISES 14, 15). Notifications of one group are delivered in order.
- Silenced alerts and deduplicated notifications are reported to the
  ``audit`` hook with their reason (PROMISES 17).

The core's state is a set of keyed JSON entries (:meth:`Notifier.changes`,
:meth:`Notifier.restore`). :class:`NotifierService` keeps them in a
compacted Kafka topic and commits the alerts topic only after they are
written, so a restart neither loses nor repeats a notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import random
import string
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from driftwatch._time import rfc3339
from driftwatch.config import Config, NotifyConfig, ReceiverConfig
from driftwatch.daemon.http import DeliveryOutcome, HttpResult, post_json
from driftwatch.daemon.signing import load_secrets, signature_headers
from driftwatch.daemon.topics import StreamingError
from driftwatch.errors import DriftwatchError

__all__ = [
    "AuditHook",
    "DeadLetter",
    "Notification",
    "Notifier",
    "NotifierService",
    "NotifyCounters",
    "NotifyInputError",
    "SilenceCheck",
    "retry_delay",
]

log = logging.getLogger(__name__)

AuditHook = Callable[[dict[str, object]], None]
"""Receives one JSON-able record per suppression, delivery and dead letter."""

SilenceCheck = Callable[[Mapping[str, str], float], bool]
"""Whether an alert with these labels is silenced at this time."""

_SEVERITY = {"info": 0, "warning": 1, "critical": 2}
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert (Go's zero time)
_AM_VALID_RESENDS = 4  # Prometheus: a pushed alert stays valid for 4 resend intervals


class NotifyInputError(DriftwatchError, ValueError):
    """An alert record cannot be read (it is counted and skipped, never fatal)."""


def _api_url(config: Config) -> str | None:
    """Where people reach the HTTP API (approval links), if it is on."""
    api = config.alerting.api
    if not api.enabled:
        return None
    if api.external_url:
        return api.external_url
    host = f"[{api.host}]" if ":" in api.host else api.host
    return f"http://{host}:{api.port}"


def retry_delay(
    attempts: int, rng: random.Random, *, base: float = 1.0, cap: float = 60.0, retry_after: float | None = None
) -> float:
    """Seconds before the next attempt after ``attempts`` failures: full jitter, or the server's ``Retry-After``.

    >>> r = random.Random(1)
    >>> all(0 <= retry_delay(a, r) <= min(60, 2 ** (a - 1)) for a in range(1, 20))
    True
    >>> retry_delay(3, r, retry_after=120.0)
    120.0
    """
    if retry_after is not None:
        return max(0.0, retry_after)
    return rng.uniform(0.0, min(cap, base * 2.0 ** min(max(attempts - 1, 0), 62)))


# ----------------------------------------------------------------------- state


class _Record(msgspec.Struct):
    """The fields of an alert record the notifier reads (others are ignored)."""

    rule: str
    state: str
    labels: dict[str, str]
    fingerprint: str
    event_time: dt.datetime
    active_since: dt.datetime
    annotations: dict[str, str] = {}
    severity: str | None = None
    value: float | None = None
    n: int = 0
    interval: list[float | None] = []
    window_seconds: float = 0.0
    evidence: dict[str, object] = {}
    actions: list[str] = []


class _Alert(msgspec.Struct):
    """One alert as the notifier remembers it."""

    fingerprint: str
    rule: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    severity: str
    starts_at: float
    event_time: float
    value: float | None = None
    n: int = 0
    interval: list[float | None] = []
    window_seconds: float = 0.0
    evidence: dict[str, object] = {}
    actions: list[str] = []
    active_since: str = ""  # the record's own text: action ids are derived from it


class _Sent(msgspec.Struct):
    """What a group's last notification said (Alertmanager's notification log entry)."""

    id: str
    seq: int
    firing: list[str]
    resolved: list[str]
    at: float


class _Group(msgspec.Struct):
    """An aggregation group of one webhook receiver."""

    receiver: str
    key: str
    labels: dict[str, str]
    alerts: dict[str, _Alert]
    next_flush: float
    last: _Sent | None = None
    dirty: bool = False  # a record arrived since the last flush
    reported: list[str] = []  # "fingerprint:status" already audited as silenced


class _Pushed(msgspec.Struct):
    """An alert of one alertmanager receiver, re-pushed while it fires."""

    receiver: str
    alert: _Alert
    next_push: float
    seq: int = 0
    reported: list[str] = []


class Notification(msgspec.Struct, frozen=True):
    """One message to deliver: its stable id (``webhook-id``), target and JSON body."""

    id: str
    receiver: str
    kind: str
    url: str
    group_key: str
    seq: int
    status: str
    first_due: float
    body: bytes


class _Pending(msgspec.Struct):
    """A notification not yet delivered: its retry schedule and delivery queue (one per group)."""

    notification: Notification
    queue: str
    next_attempt: float
    attempts: int = 0
    in_flight: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A notification given up on, and why (a bounded reason; ``last_error`` is the last attempt's)."""

    notification: Notification
    reason: str
    last_error: str
    attempts: int
    at: float


@dataclass(slots=True)
class NotifyCounters:
    """What happened to notifications; the service exports these as Prometheus counters."""

    notifications: int = 0
    sent: int = 0
    retried: int = 0
    dead_lettered: int = 0
    superseded: int = 0
    rejected_records: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    out = dict(maps[0])
    for m in maps[1:]:
        out = {k: v for k, v in out.items() if m.get(k) == v}
    return dict(sorted(out.items()))


class _Fill(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


# ------------------------------------------------------------------------ core


class Notifier:
    """The pure notification core: grouping, routing, silencing, ids, retry schedule; time is passed in."""

    def __init__(
        self,
        notify: NotifyConfig,
        *,
        is_silenced: SilenceCheck | None = None,
        audit: AuditHook | None = None,
        rng: random.Random | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        counters: NotifyCounters | None = None,
        approvals: Mapping[str, bool] | None = None,
        api_url: str | None = None,
    ) -> None:
        """``approvals``: action name -> requires approval; with ``api_url`` a firing alert's webhook carries
        each of its actions' id and, for those awaiting approval, the API's approve and deny links."""
        self.config = notify
        self._approvals = dict(approvals or {})
        self._api_url = api_url.rstrip("/") if api_url else None
        self.receivers = {r.name: r for r in notify.receivers}
        self.counters = counters or NotifyCounters()
        self._silenced = is_silenced or (lambda labels, now: False)
        self._audit = audit
        self._rng = rng or random.Random()
        self._base = backoff_base
        self._cap = backoff_cap
        self._groups: dict[str, _Group] = {}
        self._pushed: dict[str, _Pushed] = {}
        self._pending: dict[str, _Pending] = {}
        self._dirty: set[str] = set()

    # ------------------------------------------------------------ input

    def update(self, record: Mapping[str, object], now: float) -> None:
        """Take one alert record; ``firing`` and ``resolved`` are routed and grouped, anything else ignored."""
        try:
            rec = msgspec.convert(record, _Record)
        except (msgspec.ValidationError, TypeError) as e:
            self.counters.rejected_records += 1
            raise NotifyInputError(f"unreadable alert record: {e}") from None
        if rec.state not in ("firing", "resolved"):
            return
        severity = rec.severity or rec.labels.get("severity", "info")
        alert = _Alert(
            fingerprint=rec.fingerprint,
            rule=rec.rule,
            status=rec.state,
            labels=dict(sorted(rec.labels.items())),
            annotations=dict(sorted(rec.annotations.items())),
            severity=severity,
            starts_at=rec.active_since.timestamp(),
            event_time=rec.event_time.timestamp(),
            value=rec.value if rec.value is None or math.isfinite(rec.value) else None,
            n=rec.n,
            interval=rec.interval,
            window_seconds=rec.window_seconds,
            evidence=rec.evidence,
            actions=list(rec.actions),
            active_since=str(record.get("active_since", "")),
        )
        for rc in self.config.receivers:
            if rc.rules and alert.rule not in rc.rules:
                continue
            if _SEVERITY.get(severity, 0) < _SEVERITY[rc.min_severity]:
                continue
            if rc.kind == "webhook":
                self._update_group(rc, alert, now)
            else:
                self._update_pushed(rc, alert, now)

    def _group_labels(self, alert: _Alert) -> dict[str, str]:
        if "..." in self.config.group_by:
            return dict(alert.labels)
        out: dict[str, str] = {}
        for name in self.config.group_by:
            if name in alert.labels:
                out[name] = alert.labels[name]
            elif name == "rule":
                out[name] = alert.rule
        return dict(sorted(out.items()))

    def _update_group(self, rc: ReceiverConfig, alert: _Alert, now: float) -> None:
        labels = self._group_labels(alert)
        inner = ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
        gkey = f"{{}}/{{receiver={json.dumps(rc.name)}}}:{{{inner}}}"
        skey = f"g:{rc.name}:{gkey}"
        g = self._groups.get(skey)
        if g is None:
            if alert.status != "firing":
                return  # its group is gone: already resolved and notified (or never notified)
            g = self._groups[skey] = _Group(rc.name, gkey, labels, {}, next_flush=now + self.config.group_wait)
        elif alert.status == "resolved" and alert.fingerprint not in g.alerts:
            return
        g.alerts[alert.fingerprint] = alert
        g.dirty = True
        self._dirty.add(skey)

    def _update_pushed(self, rc: ReceiverConfig, alert: _Alert, now: float) -> None:
        skey = f"a:{rc.name}:{alert.fingerprint}"
        p = self._pushed.get(skey)
        if p is None:
            if alert.status != "firing":
                return
            self._pushed[skey] = _Pushed(rc.name, alert, next_push=now)
        else:
            if alert.status == "resolved" or p.alert.status == "resolved":
                p.next_push = now  # a resolve, or a re-fire before the resolve went out: push at once
            p.alert = alert
        self._dirty.add(skey)

    # ------------------------------------------------------------ output

    def due(self, now: float) -> list[Notification]:
        """Everything to attempt now (each returned once until :meth:`result` reports on it)."""
        for skey in [k for k, g in self._groups.items() if g.next_flush <= now]:
            self._flush(skey, now)
        for skey in [k for k, p in self._pushed.items() if p.next_push <= now]:
            self._push(skey, now)
        out: list[Notification] = []
        for p in self._heads():
            if not p.in_flight and p.next_attempt <= now:
                p.in_flight = True
                out.append(p.notification)
        return out

    def next_due(self) -> float | None:
        """When :meth:`due` next has something to do (None: nothing scheduled)."""
        times = [g.next_flush for g in self._groups.values()]
        times += [p.next_push for p in self._pushed.values()]
        times += [p.next_attempt for p in self._heads() if not p.in_flight]
        return min(times) if times else None

    def pending(self) -> int:
        """How many notifications wait for delivery (in flight included)."""
        return len(self._pending)

    def _heads(self) -> Iterator[_Pending]:
        """The oldest pending notification of each queue: a group's notifications go out in order."""
        seen: set[str] = set()
        for p in self._pending.values():
            if p.queue not in seen:
                seen.add(p.queue)
                yield p

    def _report(self, reason: str, now: float, **detail: object) -> None:
        self.counters.suppressed[reason] += 1
        if self._audit is not None:
            self._audit({"type": "notification_suppressed", "reason": reason, "at": rfc3339(now), **detail})

    def _flush(self, skey: str, now: float) -> None:
        """Alertmanager's flush of one aggregation group, with its notification-log dedup (``needsUpdate``)."""
        g = self._groups[skey]
        rc = self.receivers[g.receiver]
        silenced = set()
        for fp, a in g.alerts.items():
            if self._silenced(a.labels, now):
                silenced.add(fp)
                mark = f"{fp}:{a.status}"
                if mark not in g.reported:
                    g.reported.append(mark)
                    self._report("silenced", now, receiver=g.receiver, group_key=g.key, fingerprint=fp, status=a.status)
        live = {fp: a for fp, a in g.alerts.items() if fp not in silenced}
        firing = sorted(fp for fp, a in live.items() if a.status == "firing")
        resolved = sorted(fp for fp, a in live.items() if a.status == "resolved")
        last = g.last
        if last is None:
            need = bool(firing)
            for fp in resolved:
                self._report("resolved_before_notification", now, receiver=g.receiver, group_key=g.key, fingerprint=fp)
        elif not set(firing) <= set(last.firing):
            need = True
        elif not firing:
            need = bool(last.firing)  # the all-resolved notification (a receiver never told of them hears nothing)
        elif rc.send_resolved and not set(resolved) <= set(last.resolved):
            need = True
        else:
            need = last.at <= now - self.config.repeat_interval
        if need:
            seq = 0 if last is None else last.seq + 1
            chosen = [live[fp] for fp in firing] + ([live[fp] for fp in resolved] if rc.send_resolved else [])
            nid = ""
            if chosen:
                n = self._webhook(rc, g, chosen, seq, now)
                self._enqueue(n, f"g:{g.receiver}:{g.key}", now, supersede=False)
                nid = n.id
            else:
                self._report("send_resolved_disabled", now, receiver=g.receiver, group_key=g.key)
            g.last = _Sent(nid, seq, firing, resolved, now)
        elif g.dirty and last is not None:
            self._report("dedup", now, receiver=g.receiver, group_key=g.key, firing=firing, resolved=resolved)
        g.dirty = False
        for fp in [fp for fp, a in g.alerts.items() if a.status == "resolved"]:
            del g.alerts[fp]
        g.reported = [m for m in g.reported if m.split(":", 1)[0] in g.alerts]
        if g.alerts:
            g.next_flush = now + self.config.group_interval
        else:
            del self._groups[skey]
        self._dirty.add(skey)

    def _push(self, skey: str, now: float) -> None:
        """One Prometheus-style push of an alert to an Alertmanager."""
        p = self._pushed[skey]
        rc = self.receivers[p.receiver]
        a = p.alert
        done = a.status == "resolved"
        if self._silenced(a.labels, now):
            mark = f"{a.fingerprint}:{a.status}"
            if mark not in p.reported:
                p.reported.append(mark)
                self._report("silenced", now, receiver=p.receiver, fingerprint=a.fingerprint, status=a.status)
        else:
            ends = rfc3339(a.event_time) if done else rfc3339(now + _AM_VALID_RESENDS * self.config.resend_interval)
            payload = [
                {
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": ends,
                    "generatorURL": self._generator_url(a),
                }
            ]
            nid = _notification_id(p.receiver, a.fingerprint, p.seq, [a])
            n = Notification(
                id=nid,
                receiver=p.receiver,
                kind="alertmanager",
                url=rc.url.rstrip("/") + "/api/v2/alerts",
                group_key=a.fingerprint,
                seq=p.seq,
                status=a.status,
                first_due=now,
                body=msgspec.json.encode(payload),
            )
            # an older, not yet delivered push of the same alert only carries a stale state
            self._enqueue(n, skey, now, supersede=True)
            p.seq += 1
        if done:
            del self._pushed[skey]
        else:
            p.next_push = now + self.config.resend_interval
        self._dirty.add(skey)

    def _enqueue(self, n: Notification, queue: str, now: float, *, supersede: bool) -> None:
        if supersede:
            for old in [k for k, p in self._pending.items() if p.queue == queue and not p.in_flight]:
                del self._pending[old]
                self._dirty.add(f"p:{old}")
                self.counters.superseded += 1
        self.counters.notifications += 1
        self._pending[n.id] = _Pending(n, queue, next_attempt=now)
        self._dirty.add(f"p:{n.id}")

    def _report_url(self, a: _Alert) -> str | None:
        template = self.config.report_url
        if template is None:
            return None
        values = {
            "model": a.labels.get("model", ""),
            "version": a.labels.get("version", ""),
            "rule": a.rule,
            "attribute": a.labels.get("attribute", ""),
            "value": a.labels.get("slice", ""),
        }
        try:
            return string.Formatter().vformat(template, (), _Fill({k: quote(v, safe="") for k, v in values.items()}))
        except (ValueError, IndexError, KeyError, AttributeError):
            return None  # a malformed template must not stop notifications; check-config is the place to catch it

    def _generator_url(self, a: _Alert) -> str:
        return self._report_url(a) or self.config.external_url

    def _actions(self, a: _Alert) -> list[dict[str, object]]:
        """The runbook actions of a firing alert: id, and approve/deny links for those awaiting approval."""
        from driftwatch.actions.runner import action_id

        out: list[dict[str, object]] = []
        if a.status != "firing":
            return out
        for name in a.actions:
            aid = action_id(name, a.fingerprint, a.active_since)
            entry: dict[str, object] = {"name": name, "id": aid, "requires_approval": self._approvals.get(name, False)}
            if entry["requires_approval"] and self._api_url:
                entry["approve_url"] = f"{self._api_url}/api/actions/{aid}/approve"
                entry["deny_url"] = f"{self._api_url}/api/actions/{aid}/deny"
            out.append(entry)
        return out

    def _webhook(self, rc: ReceiverConfig, g: _Group, alerts: list[_Alert], seq: int, now: float) -> Notification:
        """Alertmanager's webhook v4 message, plus what driftwatch knows about each alert."""
        alerts = sorted(alerts, key=lambda a: (a.status != "firing", sorted(a.labels.items()), a.fingerprint))
        status = "firing" if any(a.status == "firing" for a in alerts) else "resolved"
        extra: dict[str, object] = {}
        for a in alerts:
            extra[a.fingerprint] = {
                "rule": a.rule,
                "severity": a.severity,
                "value": a.value,
                "n": a.n,
                "interval": a.interval,
                "window_seconds": a.window_seconds,
                "model": a.labels.get("model"),
                "version": a.labels.get("version"),
                "event_time": rfc3339(a.event_time),
                "runbook_url": a.annotations.get("runbook_url"),
                "report_url": self._report_url(a),
                "evidence": a.evidence,
                "actions": self._actions(a),
            }
        payload = {
            "receiver": rc.name,
            "status": status,
            "alerts": [
                {
                    "status": a.status,
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": rfc3339(a.event_time) if a.status == "resolved" else _ZERO_TIME,
                    "generatorURL": self._generator_url(a),
                    "fingerprint": a.fingerprint,
                }
                for a in alerts
            ],
            "groupLabels": g.labels,
            "commonLabels": _common([a.labels for a in alerts]),
            "commonAnnotations": _common([a.annotations for a in alerts]),
            "externalURL": self.config.external_url,
            "version": "4",
            "groupKey": g.key,
            "truncatedAlerts": 0,
            "driftwatch": {"alerts": extra},
        }
        return Notification(
            id=_notification_id(rc.name, g.key, seq, alerts),
            receiver=rc.name,
            kind="webhook",
            url=rc.url,
            group_key=g.key,
            seq=seq,
            status=status,
            first_due=now,
            body=msgspec.json.encode(payload),
        )

    # ----------------------------------------------------------- results

    def result(
        self,
        notification_id: str,
        outcome: DeliveryOutcome,
        now: float,
        *,
        retry_after: float | None = None,
        reason: str = "",
    ) -> DeadLetter | None:
        """Record an attempt's outcome; schedule the retry, or return the :class:`DeadLetter` to write."""
        p = self._pending.get(notification_id)
        if p is None:
            return None
        p.in_flight = False
        p.attempts += 1
        n = p.notification
        key = f"p:{n.id}"
        self._dirty.add(key)
        if outcome is DeliveryOutcome.DELIVERED:
            del self._pending[n.id]
            self.counters.sent += 1
            if self._audit is not None:
                self._audit(
                    {
                        "type": "notification_delivered",
                        "at": rfc3339(now),
                        "receiver": n.receiver,
                        "webhook_id": n.id,
                        "group_key": n.group_key,
                        "status": n.status,
                        "attempts": p.attempts,
                    }
                )
            return None
        rc = self.receivers.get(n.receiver)
        deadline = n.first_due + (rc.max_age if rc is not None else 0.0)
        dead_reason = None
        if outcome is DeliveryOutcome.FAIL:
            dead_reason = reason or "fail"
        elif now >= deadline:
            dead_reason = "max_age"
        else:
            delay = retry_delay(p.attempts, self._rng, base=self._base, cap=self._cap, retry_after=retry_after)
            if retry_after is not None and now + delay > deadline:
                dead_reason = "max_age"  # the receiver asks us to wait past the point we give up
            else:
                p.next_attempt = min(now + delay, deadline)
                self.counters.retried += 1
                return None
        del self._pending[n.id]
        self.counters.dead_lettered += 1
        dead = DeadLetter(n, dead_reason, reason, p.attempts, now)
        if self._audit is not None:
            self._audit(
                {
                    "type": "notification_dead_lettered",
                    "at": rfc3339(now),
                    "receiver": n.receiver,
                    "webhook_id": n.id,
                    "group_key": n.group_key,
                    "reason": dead_reason,
                    "last_error": reason,
                    "attempts": p.attempts,
                }
            )
        return dead

    # ------------------------------------------------------------- state

    def changes(self) -> dict[str, bytes | None]:
        """State entries changed since the last call: key -> JSON, or None for a deleted entry."""
        out: dict[str, bytes | None] = {}
        for key in sorted(self._dirty):
            kind, _, rest = key.partition(":")
            obj: msgspec.Struct | None
            if kind == "g":
                obj = self._groups.get(key)
            elif kind == "a":
                obj = self._pushed.get(key)
            else:
                obj = self._pending.get(rest)
            out[key] = None if obj is None else msgspec.json.encode(obj)
        self._dirty.clear()
        return out

    def unwritten(self, keys: Iterable[str]) -> None:
        """Mark state entries as changed again because writing them failed."""
        self._dirty.update(keys)

    def restore(self, entries: Mapping[str, bytes]) -> None:
        """Replace the state with entries written by :meth:`changes` (unreadable ones are skipped and logged)."""
        self._groups.clear()
        self._pushed.clear()
        self._pending.clear()
        self._dirty.clear()
        pending: list[_Pending] = []
        for key, value in entries.items():
            try:
                if key.startswith("g:"):
                    g = msgspec.json.decode(value, type=_Group)
                    if g.receiver in self.receivers:
                        self._groups[key] = g
                elif key.startswith("a:"):
                    a = msgspec.json.decode(value, type=_Pushed)
                    if a.receiver in self.receivers:
                        self._pushed[key] = a
                elif key.startswith("p:"):
                    p = msgspec.json.decode(value, type=_Pending)
                    p.in_flight = False
                    if p.notification.receiver in self.receivers:
                        pending.append(p)
                    else:
                        log.warning(
                            "notification %s dropped: receiver %r is no longer configured", key, p.notification.receiver
                        )
            except msgspec.DecodeError as e:
                log.warning("notifier state entry %r skipped: %s", key, e)
        pending.sort(key=lambda p: (p.notification.first_due, p.notification.seq, p.notification.id))
        for p in pending:
            self._pending[p.notification.id] = p


def _notification_id(receiver: str, group_key: str, seq: int, alerts: list[_Alert]) -> str:
    """``msg_`` + a hash of receiver, group, sequence and the (fingerprint, status, startsAt) set."""
    items = sorted(f"{a.fingerprint}\x1e{a.status}\x1e{rfc3339(a.starts_at)}" for a in alerts)
    text = "\x1f".join([receiver, group_key, str(seq), *items])
    return "msg_" + hashlib.sha256(text.encode()).hexdigest()[:32]


# --------------------------------------------------------------------- service


class NotifierService:
    """Consumes the alerts topic, feeds a :class:`Notifier`, delivers, and keeps its state in Kafka.

    One active instance per ``notify.group_id``: the alerts topic is read in
    that consumer group, and the state is (re)loaded from the compacted
    ``<alerts topic>-notify-state`` topic whenever partitions are assigned.
    """

    def __init__(
        self,
        config: Config,
        bootstrap: str,
        *,
        audit: AuditHook | None = None,
        is_silenced: SilenceCheck | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        max_concurrency: int = 8,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.notify = config.alerting.notify
        self._config = config
        self.alerts_topic = config.kafka.alerts.name
        self.state_topic = f"{self.alerts_topic}-notify-state"
        self._clock = clock
        self._silence_check = is_silenced
        self._audit = audit
        self._rng = rng
        self._backoff = (backoff_base, backoff_cap)
        self.counters = NotifyCounters()
        self.notifier = self._new_core()
        self.state_loaded = asyncio.Event()
        self._assigned = 0  # assignments seen (counted by the rebalance listener) ...
        self._loaded = 0  # ... and the one the loaded state belongs to
        self._sem = asyncio.Semaphore(max_concurrency)
        self._secrets: dict[str, list[bytes]] = {}
        self._bearer: dict[str, str] = {}
        self._consumer: Any = None
        self._producer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._dead: list[DeadLetter] = []
        self._positions: dict[Any, int] = {}
        self._committed: dict[Any, int] = {}

    def _new_core(self) -> Notifier:
        return Notifier(
            self.notify,
            is_silenced=self._silence_check,
            audit=self._audit,
            rng=self._rng,
            backoff_base=self._backoff[0],
            backoff_cap=self._backoff[1],
            counters=self.counters,  # one set of counters across state reloads
            approvals={name: ac.requires_approval for name, ac in self._config.alerting.actions.items()},
            api_url=_api_url(self._config),
        )

    # Counters as plain attributes, for the exporter.
    @property
    def sent(self) -> int:
        """Notifications delivered (2xx)."""
        return self.counters.sent

    @property
    def retried(self) -> int:
        """Failed attempts scheduled for a retry."""
        return self.counters.retried

    @property
    def dead_lettered(self) -> int:
        """Notifications given up on and written to the dead-letter topic."""
        return self.counters.dead_lettered

    @property
    def suppressed(self) -> Counter[str]:
        """Notifications not sent, by reason (silenced, dedup, resolved_before_notification, …)."""
        return self.counters.suppressed

    async def start(self) -> None:
        """Read secrets, create missing topics, start the clients and the delivery loop."""
        for rc in self.notify.receivers:
            if rc.secret is not None and rc.kind == "webhook":
                self._secrets[rc.name] = load_secrets(rc.secret.read())
            if rc.bearer_token is not None:
                self._bearer[rc.name] = rc.bearer_token.read().decode()
        await self._ensure_topics()
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await self._producer.start()
        session = max(1.0, self.config.kafka.session_timeout)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.notify.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(session * 1000),
            heartbeat_interval_ms=int(max(session / 6, 0.2) * 1000),
        )
        self._consumer.subscribe([self.alerts_topic], listener=_Rebalance(self))
        await self._consumer.start()
        self._running = True
        self._task = asyncio.create_task(self._run(), name="driftwatch-notifier")

    async def stop(self) -> None:
        """Finish in-flight attempts (briefly), write the state, commit, and close the clients."""
        self._running = False
        if self._task is not None:
            await self._task
            self._task = None
        await self._drain()
        if self._consumer is not None:
            with contextlib.suppress(Exception):  # the broker may be gone; the state topic has what was written
                await self._persist()
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _ensure_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
        except Exception as e:  # aiokafka raises several unrelated types for an unreachable broker
            raise StreamingError(f"notifier: cannot reach the Kafka broker at {self.bootstrap}: {e}") from e
        try:
            existing = set(await admin.list_topics())
            a, d = self.config.kafka.alerts, self.notify.dead_letter
            wanted = [
                NewTopic(a.name, num_partitions=a.partitions, replication_factor=a.replication),
                NewTopic(d.name, num_partitions=d.partitions, replication_factor=d.replication),
                NewTopic(
                    self.state_topic,
                    num_partitions=1,
                    replication_factor=a.replication,
                    topic_configs={"cleanup.policy": "compact"},
                ),
            ]
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)
        finally:
            await admin.close()

    async def _load_state(self) -> None:
        """Read the state topic to its end and rebuild the core from it."""
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await reader.start()
        entries: dict[str, bytes] = {}
        try:
            await reader.topics()
            tps = [
                TopicPartition(self.state_topic, p)
                for p in sorted(reader.partitions_for_topic(self.state_topic) or {0})
            ]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            end = await reader.end_offsets(tps)
            while [tp for tp in tps if await reader.position(tp) < end[tp]]:
                batch = await reader.getmany(*tps, timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        key = m.key.decode()
                        if m.value is None:
                            entries.pop(key, None)
                        else:
                            entries[key] = m.value
        finally:
            await reader.stop()
        self.notifier = self._new_core()
        self.notifier.restore(entries)

    async def _run(self) -> None:
        while self._running:
            try:
                await self._step()
            except Exception:  # the loop must outlive any one failure (a broker hiccup while loading, a bug)
                log.exception("notifier step failed; trying again")
                await asyncio.sleep(1.0)  # error backoff

    async def _step(self) -> None:
        """Read a batch of alert records, start due deliveries, write the state, commit."""
        wait = 0.2
        nxt = self.notifier.next_due()
        if nxt is not None:
            wait = min(wait, max(0.0, nxt - self._clock()))
        try:
            batch = await self._consumer.getmany(timeout_ms=int(wait * 1000), max_records=500)
        except KafkaError as e:  # e.g. the broker is away: deliveries go on, reading resumes later
            log.warning("reading %s failed: %s", self.alerts_topic, e)
            batch = {}
        if self._assigned != self._loaded:
            await self._reload()  # the batch is dropped: it is fetched again from the committed offsets
            return
        now = self._clock()
        for tp, msgs in batch.items():
            for m in msgs:
                self._positions[tp] = m.offset + 1
                try:
                    record = msgspec.json.decode(m.value or b"")
                except msgspec.DecodeError:
                    record = None
                if not isinstance(record, dict):
                    self.counters.rejected_records += 1
                    log.warning("alert record %s:%s:%s skipped: not a JSON object", tp.topic, tp.partition, m.offset)
                    continue
                try:
                    self.notifier.update(record, now)
                except NotifyInputError as e:  # counted by the core
                    log.warning("alert record %s:%s:%s skipped: %s", tp.topic, tp.partition, m.offset, e)
        for n in self.notifier.due(now):
            task = asyncio.create_task(self._deliver(n))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        await self._persist()

    async def _reload(self) -> None:
        """After an assignment: load the state, then read the alerts topic again from the committed offsets.

        aiokafka may fetch records while an assignment callback still runs, so
        the callback only raises a flag and the load happens here, in the one
        task that feeds the core; whatever was fetched meanwhile is re-read.
        """
        generation = self._assigned
        await self._load_state()
        self._positions.clear()
        self._committed.clear()
        for tp in self._consumer.assignment():
            offset = await self._consumer.committed(tp)
            if offset is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)
        self._loaded = generation
        self.state_loaded.set()

    async def _persist(self) -> None:
        """Write dead letters and state changes, then commit the alerts offsets they cover."""
        dead, self._dead = self._dead, []
        changes = self.notifier.changes()
        try:
            futures = [
                await self._producer.send(
                    self.notify.dead_letter.name,
                    key=d.notification.receiver.encode(),
                    value=d.notification.body,
                    headers=[
                        ("reason", d.reason.encode()),
                        ("receiver", d.notification.receiver.encode()),
                        ("webhook-id", d.notification.id.encode()),
                        ("last-error", d.last_error.encode()),
                    ],
                )
                for d in dead
            ]
            futures += [
                await self._producer.send(self.state_topic, key=k.encode(), value=v) for k, v in changes.items()
            ]
            await asyncio.gather(*futures)
        except BaseException:
            self._dead[:0] = dead  # the next persist writes them again
            self.notifier.unwritten(changes)
            raise
        todo = {tp: off for tp, off in self._positions.items() if self._committed.get(tp) != off}
        if todo and self._consumer is not None:
            await self._consumer.commit(todo)
            self._committed.update(todo)

    async def _deliver(self, n: Notification) -> None:
        rc = self.notifier.receivers.get(n.receiver)
        if rc is None:
            return
        async with self._sem:
            headers: dict[str, str] = {}
            secrets = self._secrets.get(rc.name)
            if secrets:
                headers.update(signature_headers(secrets, n.id, n.body, self._clock()))
            else:  # unsigned, but receivers can still dedupe on the id
                headers.update({"webhook-id": n.id, "webhook-timestamp": str(math.floor(self._clock()))})
            token = self._bearer.get(rc.name)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                res = await post_json(
                    n.url, n.body, headers, timeout=rc.timeout, deny_private=self.notify.deny_private_targets
                )
            except Exception:  # a bug here must not leave the notification in flight for ever
                log.exception("delivery attempt of %s to %s failed unexpectedly", n.id, n.receiver)
                res = HttpResult(DeliveryOutcome.RETRY, "internal_error")
        dead = self.notifier.result(n.id, res.outcome, self._clock(), retry_after=res.retry_after, reason=res.reason)
        if dead is not None:
            self._dead.append(dead)  # written with the state change that drops it (_persist)

    async def _drain(self) -> None:
        """Let in-flight attempts finish within the longest receiver timeout, then cancel the rest."""
        if not self._inflight:
            return
        grace = max((rc.timeout for rc in self.notify.receivers), default=1.0) + 0.5
        _, late = await asyncio.wait(set(self._inflight), timeout=grace)
        for t in late:
            t.cancel()
        if late:
            await asyncio.wait(late)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Asks for a state load when partitions are assigned; writes the state and commits when they are revoked."""

    def __init__(self, service: NotifierService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        s = self.service
        if not revoked:
            return
        await s._drain()
        with contextlib.suppress(Exception):
            await s._persist()
        s._positions.clear()
        s._committed.clear()
        s.state_loaded.clear()
        s.notifier = s._new_core()  # not ours any more: whoever is assigned the partitions delivers

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self.service.state_loaded.clear()
            self.service._assigned += 1
