"""The pure notification core: grouping, routing, silencing, payloads, ids and the retry schedule.

:class:`Notifier` is fed alert records (:class:`~driftwatch.alerts.records.AlertRecord`,
as the engine writes them to the alerts topic) and the time, and answers
which :class:`Notification` must be sent now. It opens no socket and reads
no clock; :class:`~driftwatch.daemon.notifier.NotifierService` is the shell
that reads the topic, delivers and keeps the state (see guarantees 10–17 in
docs/guarantees.md).

- ``webhook`` receivers get Alertmanager's webhook v4 JSON plus a
  ``driftwatch`` object, grouped like Alertmanager groups: a new group is
  first notified after ``group_wait``; later changes go out at
  ``group_interval`` ticks; an unchanged firing group is repeated after
  ``repeat_interval``; an alert resolved before its group's first
  notification is never sent; one ``resolved`` notification ends a group.
- ``alertmanager`` receivers get the body of ``POST /api/v2/alerts``, pushed
  the way Prometheus pushes: at once when an alert fires, again every
  ``resend_interval`` (``endsAt`` four resends ahead, so Alertmanager
  resolves an alert whose sender died), and once with ``endsAt`` = the
  resolve time. Alertmanager does the grouping.
- Every notification has a deterministic ``id`` (the ``webhook-id``), kept
  across retries and restarts. Failed attempts are retried with full-jitter
  exponential backoff (base 1 s, cap 60 s) or after the receiver's
  ``Retry-After``; a notification older than the receiver's ``max_age``, or
  one failing with a non-retryable answer, is dead-lettered. Notifications
  of one group are delivered in order.
- Silenced alerts and deduplicated notifications are reported to the
  ``audit`` hook with their reason.

The core's state is a set of keyed JSON entries (:meth:`Notifier.changes`,
:meth:`Notifier.restore`), which the shell keeps in a compacted topic.
"""

from __future__ import annotations

import enum
import hashlib
import json
import random
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import msgspec

from driftwatch._log import get_logger
from driftwatch._time import rfc3339
from driftwatch.alerts.records import AlertRecord, action_id, decode_record
from driftwatch.config import NotifyConfig, ReceiverConfig
from driftwatch.exports.links import DashboardLinks

__all__ = [
    "AuditHook",
    "DeadLetter",
    "DeliveryOutcome",
    "Notification",
    "Notifier",
    "NotifyCounters",
    "SilenceCheck",
    "group_hash",
    "retry_delay",
]

log = get_logger(__name__)

AuditHook = Callable[[dict[str, object]], None]
"""Receives one JSON-able record per suppression, delivery and dead letter."""

SilenceCheck = Callable[[Mapping[str, str], float], bool]
"""Whether an alert with these labels is silenced at this time."""

_SEVERITY = {"info": 0, "warning": 1, "critical": 2}
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert (Go's zero time)
_AM_VALID_RESENDS = 4  # Prometheus: a pushed alert stays valid for 4 resend intervals


class DeliveryOutcome(enum.StrEnum):
    """What an attempt means: delivered, worth a retry, or a failure no retry can fix."""

    DELIVERED = "delivered"
    RETRY = "retry"
    FAIL = "fail"


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


def group_hash(group_key: str) -> str:
    """A short, stable stand-in for a group key in logs (the key holds label values).

    >>> group_hash('{}/{receiver="oncall"}:{model="m"}')
    '7f7c1f0ce249'
    """
    return hashlib.sha256(group_key.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------- state


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
    alerts: dict[str, AlertRecord]  # as the notifier remembers them (see Notifier.update)
    next_flush: float
    last: _Sent | None = None
    dirty: bool = False  # a record arrived since the last flush
    reported: list[str] = []  # "fingerprint:status" already audited as silenced


class _Pushed(msgspec.Struct):
    """An alert of one alertmanager receiver, re-pushed while it fires."""

    receiver: str
    alert: AlertRecord
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
        dashboards: DashboardLinks | None = None,
        report_status: Callable[[str], str | None] | None = None,
    ) -> None:
        """``approvals``: action name -> requires approval; with ``api_url`` a firing alert's webhook carries
        each of its actions' id and, for those awaiting approval, the API's approve and deny links. With
        ``dashboards`` (:meth:`DashboardLinks.from_config`, set when the config has ``grafana.url``) every alert
        gets a ``dashboard_url`` annotation: its rule's Grafana dashboard with the alert's labels filled in."""
        self.config = notify
        self._report_status = report_status  # report id -> "pending" | "ready" | "failed" | None
        self._approvals = dict(approvals or {})
        self._api_url = api_url.rstrip("/") if api_url else None
        self._dashboards = dashboards
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

    def update(self, record: AlertRecord | bytes | Mapping[str, object], now: float) -> None:
        """Take one alert record; ``firing`` and ``resolved`` are routed and grouped, anything else ignored.

        :class:`~driftwatch.alerts.records.AlertRecordError` if it cannot be read (counted as rejected).
        """
        try:
            rec = decode_record(record)
        except ValueError:
            self.counters.rejected_records += 1
            raise
        if rec.state not in ("firing", "resolved"):
            return
        severity = rec.severity or rec.labels.get("severity", "info")
        annotations = dict(rec.annotations)
        if self._dashboards is not None:
            # A rule's own dashboard_url annotation wins.
            annotations.setdefault("dashboard_url", self._dashboards.url(rec.rule, rec.labels))
        # Remembered with sorted labels and the severity resolved, as the payloads show them.
        alert = msgspec.structs.replace(
            rec,
            labels=dict(sorted(rec.labels.items())),
            annotations=dict(sorted(annotations.items())),
            severity=severity,
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

    def _group_labels(self, alert: AlertRecord) -> dict[str, str]:
        if "..." in self.config.group_by:
            return dict(alert.labels)
        out: dict[str, str] = {}
        for name in self.config.group_by:
            if name in alert.labels:
                out[name] = alert.labels[name]
            elif name == "rule":
                out[name] = alert.rule
        return dict(sorted(out.items()))

    def _update_group(self, rc: ReceiverConfig, alert: AlertRecord, now: float) -> None:
        labels = self._group_labels(alert)
        inner = ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
        gkey = f"{{}}/{{receiver={json.dumps(rc.name)}}}:{{{inner}}}"
        skey = f"g:{rc.name}:{gkey}"
        g = self._groups.get(skey)
        if g is None:
            if alert.state != "firing":
                return  # its group is gone: already resolved and notified (or never notified)
            g = self._groups[skey] = _Group(rc.name, gkey, labels, {}, next_flush=now + self.config.group_wait)
        elif alert.state == "resolved" and alert.fingerprint not in g.alerts:
            return
        g.alerts[alert.fingerprint] = alert
        g.dirty = True
        self._dirty.add(skey)

    def _update_pushed(self, rc: ReceiverConfig, alert: AlertRecord, now: float) -> None:
        skey = f"a:{rc.name}:{alert.fingerprint}"
        p = self._pushed.get(skey)
        if p is None:
            if alert.state != "firing":
                return
            self._pushed[skey] = _Pushed(rc.name, alert, next_push=now)
        else:
            if alert.state == "resolved" or p.alert.state == "resolved":
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
                mark = f"{fp}:{a.state}"
                if mark not in g.reported:
                    g.reported.append(mark)
                    self._report("silenced", now, receiver=g.receiver, group_key=g.key, fingerprint=fp, status=a.state)
        live = {fp: a for fp, a in g.alerts.items() if fp not in silenced}
        firing = sorted(fp for fp, a in live.items() if a.state == "firing")
        resolved = sorted(fp for fp, a in live.items() if a.state == "resolved")
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
        for fp in [fp for fp, a in g.alerts.items() if a.state == "resolved"]:
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
        done = a.state == "resolved"
        if self._silenced(a.labels, now):
            mark = f"{a.fingerprint}:{a.state}"
            if mark not in p.reported:
                p.reported.append(mark)
                self._report("silenced", now, receiver=p.receiver, fingerprint=a.fingerprint, status=a.state)
        else:
            ends = rfc3339(a.event_seconds) if done else rfc3339(now + _AM_VALID_RESENDS * self.config.resend_interval)
            payload = [
                {
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.since_seconds),
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
                status=a.state,
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

    def _report_url(self, a: AlertRecord) -> str | None:
        built = a.annotations.get("report_url")
        if built:  # the worker's own report of this firing (docs/reports.md); none if building it failed here
            status = self._report_status(built.rsplit("/", 1)[-1]) if self._report_status is not None else None
            if status != "failed":
                return built
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

    def _generator_url(self, a: AlertRecord) -> str:
        return self._report_url(a) or self.config.external_url

    def _actions(self, a: AlertRecord) -> list[dict[str, object]]:
        """The runbook actions of a firing alert: id, and approve/deny links for those awaiting approval."""
        out: list[dict[str, object]] = []
        if a.state != "firing":
            return out
        for name in a.actions:
            aid = action_id(name, a.fingerprint, a.active_since)
            entry: dict[str, object] = {"name": name, "id": aid, "requires_approval": self._approvals.get(name, False)}
            if entry["requires_approval"] and self._api_url:
                entry["approve_url"] = f"{self._api_url}/api/actions/{aid}/approve"
                entry["deny_url"] = f"{self._api_url}/api/actions/{aid}/deny"
            out.append(entry)
        return out

    def _webhook(self, rc: ReceiverConfig, g: _Group, alerts: list[AlertRecord], seq: int, now: float) -> Notification:
        """Alertmanager's webhook v4 message, plus what driftwatch knows about each alert."""
        alerts = sorted(alerts, key=lambda a: (a.state != "firing", sorted(a.labels.items()), a.fingerprint))
        status = "firing" if any(a.state == "firing" for a in alerts) else "resolved"
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
                "event_time": rfc3339(a.event_seconds),
                "runbook_url": a.annotations.get("runbook_url"),
                "report_url": self._report_url(a),
                "evidence": a.evidence,
                "resolved_reason": a.resolved_reason,
                "actions": self._actions(a),
            }
        payload = {
            "receiver": rc.name,
            "status": status,
            "alerts": [
                {
                    "status": a.state,
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.since_seconds),
                    "endsAt": rfc3339(a.event_seconds) if a.state == "resolved" else _ZERO_TIME,
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
        where = {"receiver": n.receiver, "group": group_hash(n.group_key), "attempt": p.attempts}
        if outcome is DeliveryOutcome.DELIVERED:
            del self._pending[n.id]
            self.counters.sent += 1
            log.info("notification_sent", **where, status=n.status)
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
                log.info(
                    "notification_retry", **where, reason=reason or outcome.value, wait=round(p.next_attempt - now, 3)
                )
                return None
        del self._pending[n.id]
        self.counters.dead_lettered += 1
        log.warning("notification_dead_lettered", **where, reason=dead_reason, last_error=reason)
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
                            "notification_dropped", receiver=p.notification.receiver, why="receiver not configured"
                        )
            except msgspec.DecodeError as e:
                log.warning("notifier_state_skipped", entry=group_hash(key), error=str(e))
        pending.sort(key=lambda p: (p.notification.first_due, p.notification.seq, p.notification.id))
        for p in pending:
            self._pending[p.notification.id] = p


def _notification_id(receiver: str, group_key: str, seq: int, alerts: list[AlertRecord]) -> str:
    """``msg_`` + a hash of receiver, group, sequence and the (fingerprint, status, startsAt) set."""
    items = sorted(f"{a.fingerprint}\x1e{a.state}\x1e{rfc3339(a.since_seconds)}" for a in alerts)
    text = "\x1f".join([receiver, group_key, str(seq), *items])
    return "msg_" + hashlib.sha256(text.encode()).hexdigest()[:32]
