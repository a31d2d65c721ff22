"""Typed, validated configuration: one model tree, loaded from YAML.

Every model is frozen and forbids unknown keys; cross-object checks run at
load and every problem is reported at once with its file and key path
(:class:`~driftwatch.errors.ConfigError`). Secrets never live in the file:
the pseudonymisation key comes from the environment variable or file the
config names.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretBytes, ValidationError, field_validator

from driftwatch._duration import Duration
from driftwatch.errors import ConfigError, SecretMissingError
from driftwatch.metrics.registry import ATTRIBUTE_METRICS, DETECTOR_SERIES, DRIFT_METRICS, METRICS, spec

__all__ = [
    "MIN_EVENT_TIME",
    "ActionConfig",
    "AlertingConfig",
    "ApiConfig",
    "AttributeConfig",
    "AuditConfig",
    "Config",
    "DetectorConfig",
    "EgressConfig",
    "FeatureConfig",
    "GrafanaConfig",
    "JoinConfig",
    "KafkaConfig",
    "MetricsConfig",
    "ModelConfig",
    "NotifyConfig",
    "PrivacyConfig",
    "ReceiverConfig",
    "ReferenceConfig",
    "Rule",
    "SecretRef",
    "SequentialConfig",
    "SidecarConfig",
    "TopicConfig",
    "WindowConfig",
    "egress_entry",
    "is_loopback",
    "load_config",
    "load_key",
]

_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
_ATTR = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_LABEL = r"^[A-Za-z0-9_.:+-]{1,64}$"
"""A metric label value (a display value is shown as one); the grammar of ``core.slicing.LABEL_VALUE``."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class AttributeConfig(_Model):
    """A segment attribute kept from events (all others are dropped at decode)."""

    sensitive: bool = Field(False, description="Pseudonymise values with keyed HMAC-SHA256 at ingest.")
    max_values: int = Field(
        20, ge=1, le=1000, description="Top-k values exposed by name; the rest fold into __other__."
    )
    values: tuple[str, ...] | None = Field(None, description="Optional vocabulary; other values fold into __other__.")
    display_values: tuple[str, ...] = Field(
        (), description="Raw values of a sensitive attribute the operator allows dashboards to show by name."
    )


class FeatureConfig(_Model):
    """A monitored model input."""

    kind: Literal["numeric", "categorical"]
    bins: int = Field(10, ge=2, le=100, description="Quantile bins of the reference (numeric only).")


class ReferenceConfig(_Model):
    """Where the reference distribution comes from: a profile file, or the model's first traffic."""

    profile: Path | None = None
    learn_events: int | None = Field(None, ge=100)
    learn_seconds: Duration | None = None


class ModelConfig(_Model):
    """One monitored model."""

    favorable: tuple[str, ...] = Field(min_length=1, description="Predictions that are the favourable outcome.")
    features: dict[str, FeatureConfig] = Field(default_factory=dict)
    monitor_score: bool = True
    reference: ReferenceConfig = ReferenceConfig(learn_events=2000)
    label_coverage_min: float = Field(0.3, ge=0, le=1, description="Label metrics are provisional below this.")
    max_versions: int = Field(10, ge=1, le=100)
    version_min_events: int = Field(
        20,
        ge=2,
        description="Recent events (the longest window's epoch and the one before) a version needs to take the place "
        "of another once max_versions have a stream; a version with this many is only replaced by one with twice "
        "as many. Also what a version must carry to be a rollback target.",
    )


MIN_EVENT_TIME = 946_684_800.0
"""2000-01-01T00:00:00Z: no event of a model in production is older (a 1970 or 0 stamp is a bug upstream)."""


class WindowConfig(_Model):
    """Event-time ticks and the sliding windows merged from them."""

    tick: Duration = 10.0
    lateness: Duration = 30.0
    windows: tuple[Duration, ...] = (300.0, 3600.0)
    max_future_skew: Duration = Field(
        300.0,
        description="An event stamped further than this past the wall clock is rejected as timestamp_out_of_range "
        "(live and in replay: a recorded event cannot come from the future); it never moves the watermark.",
    )
    max_past_age: Duration | None = Field(
        None,
        description="Live only: an event older than this (wall clock) is rejected as timestamp_out_of_range. "
        "Off by default: old events are dropped as late anyway once event time has moved on.",
    )

    def event_time_range(self, now: float, *, live: bool) -> tuple[float, float]:
        """The event times accepted at wall-clock ``now``: never before 2000-01-01, never beyond the skew."""
        floor = MIN_EVENT_TIME
        if live and self.max_past_age is not None:
            floor = max(floor, now - self.max_past_age)
        return floor, now + self.max_future_skew

    @field_validator("tick")
    @classmethod
    def _tick_positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("tick must be > 0")
        return v


class JoinConfig(_Model):
    """How interactions find the prediction they belong to."""

    ttl: Duration = Field(
        86400.0, description="An interaction joins a prediction stamped at most this long before it (event time)."
    )
    max_entries: int = Field(1_000_000, ge=1, description="Bound on remembered requests; the oldest go first.")
    grace: Duration = Field(
        60.0, description="An interaction joins a prediction stamped at most this long after it (event time)."
    )


class PrivacyConfig(_Model):
    """Pseudonymisation key source and small-group suppression."""

    key_env: str = "DRIFTWATCH_PSEUDONYM_KEY"
    key_file: Path | None = None
    min_group_size: int = Field(
        20,
        ge=1,
        description="A group smaller than this in a window is never shown by name; also the recent events a new "
        "attribute value needs to take the slice of a quieter one once 4 x max_values have one.",
    )


class DetectorConfig(_Model):
    """A River change detector watching a per-tick series of each selected slice."""

    kind: Literal["adwin", "page_hinkley"]
    delta: float | None = Field(None, gt=0, description="ADWIN confidence or PageHinkley magnitude.")
    threshold: float | None = Field(None, gt=0, description="PageHinkley threshold (lambda).")
    hold: Duration = Field(300.0, description="How long a detection keeps the condition true.")


class SequentialConfig(_Model):
    """A sequential test per slice instead of waiting for a window: a CUSUM over the window's buckets by prediction
    time, of a rate's evidence or of a feature distribution's."""

    kind: Literal["cusum"] = "cusum"
    baseline: float | None = Field(
        None,
        gt=0,
        description="Rates: the healthy rate the test tells the threshold apart from. Drift (psi, js_distance): the "
        "divergence a healthy slice may show, given up per event (default: resolve_threshold).",
    )
    h: float = Field(
        18.0,
        gt=0,
        description="Decision bound in nats: while the slice stays at its baseline, its test crosses it at most "
        "once in e^h window buckets on average (e^18: once in 6.6e7 ticks, 21 years of 10 s ticks).",
    )


class Rule(_Model):
    """An alert rule: a condition on a metric, held for a duration, over selected slices."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    metric: str
    model: str = "*"
    version: str = "*"
    attribute: str | None = Field(
        None, description="Slice dimension: an attribute, 'a:b' for a configured pair, '*' for all; none = whole model."
    )
    value: str | None = None
    feature: str | None = None
    window: Duration = 300.0
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: float | None = None
    resolve_threshold: float | None = None
    for_: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    min_samples: int | None = Field(None, ge=1)
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    actions: tuple[str, ...] = ()
    detector: DetectorConfig | None = None
    sequential: SequentialConfig | None = Field(
        None,
        description="Fire as soon as a CUSUM test per slice is sure the rate crossed threshold (proportions only).",
    )
    fdr_q: float | None = Field(None, gt=0, lt=1, description="Benjamini-Hochberg q across the rule's slices.")
    confidence: Literal["value", "interval"] = Field(
        "value",
        description="'interval': fire only when the whole 95% interval is past the threshold, so noise in small groups does not page.",
    )


class TopicConfig(_Model):
    """A Kafka topic: created with ``partitions`` if missing; an existing topic is never altered."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")
    partitions: int = Field(4, ge=1, le=1024)
    replication: int = Field(1, ge=1, le=16)


class KafkaConfig(_Model):
    """The streaming daemon's Kafka side (``driftwatch run``); ``DRIFTWATCH_BOOTSTRAP`` overrides ``bootstrap``."""

    bootstrap: str = "127.0.0.1:9092"
    app_id: str = Field("driftwatch", pattern=r"^[A-Za-z0-9._-]{1,100}$", description="Consumer group and app id.")
    predictions: TopicConfig = TopicConfig(name="driftwatch-predictions")
    interactions: TopicConfig = TopicConfig(name="driftwatch-interactions")
    dead_letter: TopicConfig = TopicConfig(name="driftwatch-dead-letter", partitions=1)
    summaries: TopicConfig = TopicConfig(name="driftwatch-summaries", partitions=1)
    alerts: TopicConfig = TopicConfig(name="driftwatch-alerts", partitions=1)
    ingest_state: str = Field(
        "driftwatch-ingest-state",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Ingest progress per input partition (created with the input topics' partition count).",
    )
    eval_state: str = Field(
        "driftwatch-eval-state",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Evaluation checkpoints per summary partition (created with the summary topic's partition count).",
    )
    checkpoint_interval: Duration = Field(
        10.0, description="How often the evaluation state is checkpointed; a restart replays at most this much."
    )
    batch_size: int = Field(
        2000,
        ge=1,
        description="Most Kafka messages per ingest batch (a batch also ends at batch_bytes): a fold of a few dozen "
        "single events costs several times more per event than one of a few thousand.",
    )
    batch_wait: Duration = Field(
        0.2, gt=0, description="Longest wait to fill an ingest batch (above 0: a batch must end without filling up)."
    )
    batch_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1,
        description="Bytes of Kafka message values that end an ingest batch (bounds memory: with envelopes of 100 "
        "events, ~330 messages); a batch its last message took past this is folded in several calls, each of at "
        "most this many bytes (one message alone if larger), as if Kafka had delivered them one by one.",
    )
    session_timeout: Duration = Field(
        6.0, description="Consumer session timeout; the dev broker's first join waits about half of it."
    )
    heartbeat: Duration = Field(1.0, description="How often an ingest worker reports its watermark when idle.")
    idle_timeout: Duration = Field(
        30.0, description="An input partition without data this long stops holding event time back (wall time)."
    )


class MetricsConfig(_Model):
    """Where ``/metrics`` is served and how many series it may hold."""

    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    window: Duration | None = Field(None, description="Window exported as gauges (default: the first window).")
    max_series: int = Field(2000, ge=10)


class SecretRef(_Model):
    """Where a secret lives: an environment variable or a file, never the config text itself."""

    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    file: Path | None = None

    def read(self) -> bytes:
        """The secret's bytes (surrounding whitespace stripped); :class:`SecretMissingError` says what to set."""
        if self.file is not None:
            try:
                data = self.file.read_bytes().strip()
            except OSError as e:
                raise SecretMissingError([f"secret file {self.file}: cannot read: {e.strerror}"]) from e
            where = f"file {self.file}"
        else:
            data = os.environ.get(self.env or "", "").encode().strip()
            where = f"${self.env}"
        if not data:
            raise SecretMissingError([f"secret {where} is empty or missing"])
        return data

    def __repr__(self) -> str:
        return f"SecretRef(env={self.env!r}, file={str(self.file) if self.file else None!r})"


def _http_url(v: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if u.username or u.password:
        raise ValueError("must not carry credentials; use a secret (bearer_token) instead")
    return v


class ReceiverConfig(_Model):
    """Who hears about alerts: an Alertmanager-compatible webhook or an Alertmanager to push to."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    kind: Literal["webhook", "alertmanager"] = "webhook"
    url: str = Field(description="webhook: the POST target; alertmanager: its base URL (…/api/v2/alerts is added).")
    secret: SecretRef | None = Field(
        None, description="Standard Webhooks signing secret (whsec_<base64>, 24-64 bytes); webhook receivers only."
    )
    bearer_token: SecretRef | None = Field(None, description="Sent as Authorization: Bearer …")
    send_resolved: bool = True
    rules: tuple[str, ...] = Field((), description="Rules routed here; empty = every rule.")
    min_severity: Literal["info", "warning", "critical"] = "info"
    timeout: Duration = Field(10.0, description="Per attempt.")
    max_age: Duration = Field(3600.0, description="Give up (dead-letter) a notification this old.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)


class NotifyConfig(_Model):
    """Grouping and delivery, with Alertmanager's meaning for the timings."""

    receivers: tuple[ReceiverConfig, ...] = ()
    group_by: tuple[str, ...] = ("rule", "model")
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 14400.0
    resend_interval: Duration = Field(60.0, description="alertmanager receivers: re-push firing alerts this often.")
    external_url: str = Field("http://127.0.0.1:9464", description="Where people reach this driftwatch.")
    report_url: str | None = Field(
        None,
        description="Link to a slice's report; {model}, {version}, {rule}, {attribute}, {value} are filled in.",
    )
    dead_letter: TopicConfig = TopicConfig(name="driftwatch-notify-dead-letter", partitions=1)
    group_id: str = Field("driftwatch-notifier", pattern=r"^[A-Za-z0-9._-]{1,100}$")


class ActionConfig(_Model):
    """A runbook step bound to rules by name (``rules[].actions``)."""

    kind: Literal["http", "kafka", "toggle_safety_filter", "rollback_model", "route_to_human"]
    transport: Literal["http", "kafka"] | None = Field(
        None, description="For built-ins; http and kafka kinds imply it."
    )
    url: str | None = None
    topic: str | None = Field(None, description="Control topic for the kafka transport.")
    body: dict[str, object] = Field(default_factory=dict, description="JSON template; {labels.x}, {value}, … filled.")
    bearer_token: SecretRef | None = None
    secret: SecretRef | None = Field(None, description="Standard Webhooks secret to sign http calls.")
    params: dict[str, str] = Field(default_factory=dict, description="Built-in parameters, e.g. to_version, state.")
    dry_run: bool = False
    requires_approval: bool = False
    approval_ttl: Duration = 1800.0
    undo_on_resolve: bool = False
    cooldown: Duration = Field(600.0, description="At most one run per target (model, slice) in this long.")
    max_per_hour: int = Field(6, ge=1)
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)


class ApiConfig(_Model):
    """The HTTP API (alerts, actions, approvals, silences, health)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9465, ge=0, le=65535)
    token: SecretRef | None = Field(None, description="Bearer token; required unless bound to loopback explicitly.")
    allow_unauthenticated_loopback: bool = False
    max_body_bytes: int = Field(65536, ge=1024)
    external_url: str | None = Field(
        None, description="How people reach the API (approve/deny links in notifications); default http://host:port."
    )

    @field_validator("external_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)


class AuditConfig(_Model):
    """The append-only, hash-chained audit trail (file and topic)."""

    path: Path = Path("driftwatch-audit.jsonl")
    topic: TopicConfig = TopicConfig(name="driftwatch-audit", partitions=1)


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


def egress_entry(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | str | None:
    """An ``alerting.egress.allow`` entry as a network, or a lower-case host name; None if it is neither.

    >>> egress_entry("10.0.0.0/8"), egress_entry("127.0.0.1"), egress_entry("Gateway.Internal")
    (IPv4Network('10.0.0.0/8'), IPv4Network('127.0.0.1/32'), 'gateway.internal')
    >>> egress_entry("10.0.0.1/8") is None, egress_entry("127.1") is None, egress_entry("a b") is None
    (True, True, True)
    """
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    name = text.rstrip(".")
    return name.lower() if _HOST_NAME.match(name) else None


class EgressConfig(_Model):
    """Where webhooks and HTTP actions may connect: global addresses only, plus what ``allow`` names."""

    allow: tuple[str, ...] = Field(
        (),
        description="CIDRs (10.0.0.0/8, 127.0.0.1/32) or host names (gateway.internal) that may be loopback, "
        "private or link-local, e.g. a sidecar's model gateway.",
    )

    @field_validator("allow")
    @classmethod
    def _allow(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [f"[{i}] {e!r}" for i, e in enumerate(v) if egress_entry(e) is None]
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: give a CIDR such as 10.0.0.0/8 (host bits zero) or a host name such as "
                "gateway.internal"
            )
        return v


class AlertingConfig(_Model):
    """Notification, runbook actions, their guardrails, the API and the audit trail."""

    notify: NotifyConfig = NotifyConfig()
    egress: EgressConfig = EgressConfig()
    actions: dict[str, ActionConfig] = Field(default_factory=dict)
    dry_run: bool = Field(False, description="Every action only logs and audits what it would do.")
    kill_switch: bool = Field(False, description="No action runs at all (audited as suppressed).")
    api: ApiConfig = ApiConfig()
    audit: AuditConfig = AuditConfig()
    control_topic: TopicConfig = TopicConfig(name="driftwatch-control", partitions=1)


class SidecarConfig(_Model):
    """``driftwatch sidecar``: model servers in any language POST events over localhost HTTP; it produces them."""

    host: str = Field("127.0.0.1", description="Listen address; anything but loopback needs a token.")
    port: int = Field(9466, ge=0, le=65535, description="Listen port (0 = any free port, logged at start).")
    unix_socket: Path | None = Field(None, description="Listen on this Unix socket instead of host:port.")
    token: SecretRef | None = Field(None, description="Bearer token every POST /v1/events must carry.")
    buffer_events: int = Field(100_000, ge=1, description="Events held until Kafka acknowledges them.")
    buffer_bytes: int = Field(64 * 2**20, ge=65536, description="Bytes of events held until Kafka acknowledges them.")
    max_body_bytes: int = Field(4 * 2**20, ge=1024, description="Largest request body (413 above it).")
    on_full: Literal["reject", "drop"] = Field(
        "reject", description="A full buffer answers 429 with Retry-After (reject) or accepts, drops and counts (drop)."
    )
    drain_grace: Duration = Field(10.0, description="On SIGTERM: how long buffered events may take to reach Kafka.")
    envelope_size: int = Field(100, ge=1, le=10_000, description="Events per Kafka message (NDJSON envelope).")
    linger: Duration = Field(0.05, description="Longest wait to fill envelopes before producing.")
    produce_timeout: Duration = Field(
        10.0, description="A produce or metadata request slower than this fails: not ready, retried."
    )


class ReportsConfig(_Model):
    """Reports of alerts (docs/reports.md): what changed, for the human who is paged, built in a process of their own.

    The ingest keeps a bounded sample of recent predictions per model x version x tick for them (no ids, no free
    text): at most ``sample_per_tick`` rows per tick of the longest window.
    """

    enabled: bool = Field(
        False, description="Keep samples and build a report when a drift, fairness or complaint rule fires."
    )
    sample_per_tick: int = Field(
        50, ge=1, le=10_000, description="Predictions sampled per model x version x tick (a bottom-k sample)."
    )
    max_rows: int = Field(2_000, ge=10, le=1_000_000, description="Rows of the current window a report uses at most.")
    min_rows: int = Field(30, ge=1, description="Fewer rows than this in a slice: the report says so, no drift table.")
    directory: Path | None = Field(
        None, description="Also write each report here as <id>.html (for a static server or bucket)."
    )
    retention: Duration = Field(7 * 86_400.0, description="How long a report is kept and served.")
    max_reports: int = Field(500, ge=1, description="Reports kept at most (the oldest go first).")
    timeout: Duration = Field(
        120.0, description="A report slower than this to build fails (counted); the alert still goes out."
    )


class GrafanaConfig(_Model):
    """Where the dashboards of ``driftwatch export grafana`` live, for deep links in alert notifications."""

    url: str | None = Field(
        None, description="Grafana's base URL; when set, every alert notification carries a dashboard_url annotation."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)


class Config(_Model):
    """The whole driftwatch configuration."""

    attributes: dict[str, AttributeConfig]
    protected: tuple[str, ...] = ()
    intersections: tuple[tuple[str, str], ...] = ()
    models: dict[str, ModelConfig]
    windows: WindowConfig = WindowConfig()
    join: JoinConfig = JoinConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    min_samples: int = Field(100, ge=1)
    max_event_bytes: int = Field(65536, ge=256)
    kafka: KafkaConfig = KafkaConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerting: AlertingConfig = AlertingConfig()
    sidecar: SidecarConfig = SidecarConfig()
    grafana: GrafanaConfig = GrafanaConfig()
    reports: ReportsConfig = ReportsConfig()
    rules: tuple[Rule, ...] = ()

    def dimensions(self) -> tuple[str, ...]:
        """Slice dimensions: every attribute, then every configured pair as ``a:b``."""
        return tuple(self.attributes) + tuple(f"{a}:{b}" for a, b in self.intersections)

    def problems(self) -> list[str]:
        """Cross-object checks that single fields cannot make; empty when consistent."""
        out: list[str] = []
        names = set(self.attributes)
        for a in self.attributes:
            if not re.match(_ATTR, a):
                out.append(f"attributes.{a}: name must match {_ATTR}")
            # Display values become metric label values and alert labels: the label grammar, and no reserved name.
            for j, dv in enumerate(self.attributes[a].display_values):
                if not re.fullmatch(_LABEL, dv) or dv == "__other__" or re.fullmatch(r"h:[0-9a-f]{16}", dv):
                    out.append(
                        f"attributes.{a}.display_values[{j}]: {dv!r} must match {_LABEL} "
                        "and be neither __other__ nor a token"
                    )
        for i, p in enumerate(self.protected):
            if p not in names:
                out.append(f"protected[{i}]: {p!r} is not a configured attribute")
        for i, (a, b) in enumerate(self.intersections):
            for x in (a, b):
                if x not in names:
                    out.append(f"intersections[{i}]: {x!r} is not a configured attribute")
            if a == b:
                out.append(f"intersections[{i}]: a pair needs two different attributes")
        for m, mc in self.models.items():
            if not re.match(_NAME, m):
                out.append(f"models.{m}: name must match {_NAME}")
            ref = mc.reference
            given = [x for x in (ref.profile, ref.learn_events, ref.learn_seconds) if x is not None]
            if len(given) != 1:
                out.append(f"models.{m}.reference: give exactly one of profile, learn_events, learn_seconds")
            for f in mc.features:
                if f in ("score", "prediction") or not re.match(_NAME, f):
                    out.append(f"models.{m}.features.{f}: reserved or invalid feature name")
        windows = set(self.windows.windows)
        for w in self.windows.windows:
            if w < self.windows.tick or w % self.windows.tick:
                out.append(f"windows.windows: {w}s is not a whole number of ticks ({self.windows.tick}s)")
        seen: set[str] = set()
        dims = set(self.dimensions())
        for i, r in enumerate(self.rules):
            where = f"rules[{i}] ({r.name})"
            if r.name in seen:
                out.append(f"{where}.name: duplicate rule name")
            seen.add(r.name)
            if r.metric not in METRICS:
                out.append(f"{where}.metric: unknown metric {r.metric!r}; known: {', '.join(sorted(METRICS))}")
                continue
            if r.model != "*" and r.model not in self.models:
                out.append(f"{where}.model: {r.model!r} is not a configured model")
            if r.window not in windows and r.window != 0:
                out.append(f"{where}.window: {r.window}s is not a configured window (or 0 for since-start)")
            if r.metric in ATTRIBUTE_METRICS:
                if r.attribute != "*" and (r.attribute is None or r.attribute not in self.protected):
                    out.append(
                        f"{where}.attribute: {r.metric} compares groups of a protected attribute; name one or '*'"
                    )
            elif r.attribute not in (None, "*") and r.attribute not in dims:
                out.append(f"{where}.attribute: {r.attribute!r} is not an attribute or configured pair")
            if r.metric in DRIFT_METRICS:
                models = self.models.values() if r.model == "*" else [self.models.get(r.model)]
                for mc2 in models:
                    if mc2 is not None and r.feature not in ("score", "prediction", *mc2.features):
                        out.append(
                            f"{where}.feature: drift needs a monitored feature, 'score' or 'prediction' "
                            f"(not {r.feature!r})"
                        )
                        break
            elif r.feature is not None:
                out.append(f"{where}.feature: only drift metrics take a feature")
            if r.detector is not None:
                if r.metric not in DETECTOR_SERIES:
                    out.append(f"{where}.detector: detectors watch one of {', '.join(sorted(DETECTOR_SERIES))}")
            elif r.threshold is None:
                out.append(f"{where}.threshold: a rule without a detector needs a threshold")
            if r.resolve_threshold is not None and r.threshold is not None:
                wrong = r.resolve_threshold > r.threshold if r.op in (">", ">=") else r.resolve_threshold < r.threshold
                if wrong:
                    out.append(f"{where}.resolve_threshold: must lie on the healthy side of threshold")
            if r.sequential is not None:
                out += _sequential_problems(r, where)
        out += self._alerting_problems()
        out += self.sidecar_problems()
        return out

    def sidecar_problems(self) -> list[str]:
        """What is inconsistent in the ``sidecar`` section (also after command-line overrides)."""
        sc, out = self.sidecar, []
        if sc.max_body_bytes > sc.buffer_bytes:
            out.append(
                f"sidecar.max_body_bytes: {sc.max_body_bytes} exceeds sidecar.buffer_bytes ({sc.buffer_bytes}); "
                "a full request must fit in the buffer"
            )
        if sc.unix_socket is None and sc.token is None and not is_loopback(sc.host):
            out.append(
                f"sidecar.token: listening on {sc.host!r} (not loopback) needs a token "
                "(token: {env: DRIFTWATCH_SIDECAR_TOKEN}), or bind 127.0.0.1 / a unix_socket"
            )
        if sc.produce_timeout <= 0:
            out.append("sidecar.produce_timeout: must be > 0")
        if sc.linger <= 0:
            out.append("sidecar.linger: must be > 0")
        return out

    def _alerting_problems(self) -> list[str]:
        out: list[str] = []
        al = self.alerting
        rule_names = {r.name for r in self.rules}
        seen: set[str] = set()
        for i, rc in enumerate(al.notify.receivers):
            where = f"alerting.notify.receivers[{i}] ({rc.name})"
            if rc.name in seen:
                out.append(f"{where}.name: duplicate receiver name")
            seen.add(rc.name)
            for rn in rc.rules:
                if rn not in rule_names:
                    out.append(f"{where}.rules: {rn!r} is not a configured rule")
            if rc.kind == "alertmanager" and rc.secret is not None:
                out.append(f"{where}.secret: Alertmanager's API does not verify signatures; use bearer_token")
        for i, r in enumerate(self.rules):
            for a in r.actions:
                if a not in al.actions:
                    out.append(f"rules[{i}] ({r.name}).actions: {a!r} is not in alerting.actions")
        for name, ac in al.actions.items():
            where = f"alerting.actions.{name}"
            if not re.match(r"^[a-z][a-z0-9_-]{0,63}$", name):
                out.append(f"{where}: name must match ^[a-z][a-z0-9_-]{{0,63}}$")
            transport = ac.transport or ("kafka" if ac.kind == "kafka" else "http" if ac.kind == "http" else None)
            if transport is None:
                out.append(f"{where}.transport: built-in {ac.kind} needs transport http or kafka")
            elif transport == "http" and ac.url is None:
                out.append(f"{where}.url: the http transport needs a url")
            if ac.requires_approval and not al.api.enabled:
                out.append(
                    f"{where}.requires_approval: approvals go through the HTTP API, which is off; "
                    "set alerting.api.enabled: true (with a token) or drop requires_approval"
                )
        return out


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``).

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _key_paths(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        out.append(f"{path}: {e['msg']}")
    return out


_PRUNE_ROUNDS = 8


def _problems_besides(raw: dict[str, Any], err: ValidationError) -> list[str]:
    """The cross-object problems of ``raw`` (a config that failed field validation with ``err``), checked on what
    validates once the failing parts are set aside: a rule with any bad field is left out whole, and elsewhere the
    bad value (or, when its object then lacks a required field, that object). A problem that names (quotes) a part
    set aside, or concerns windows when the windows were set aside, is dropped: it could be their absence alone.
    Rules keep their own positions in what is said. Empty when what remains still does not validate."""
    data = copy.deepcopy(raw)
    rules = data.get("rules")
    if not isinstance(rules, list):
        return []
    kept = list(range(len(rules)))  # position in data["rules"] -> position in the config as written
    removed: set[str] = set()  # what was set aside: its last key, or a rule's name
    errors = err.errors()
    for _ in range(_PRUNE_ROUNDS):
        bad_rules: set[int] = set()
        targets: set[tuple[int | str, ...]] = set()
        for e in errors:
            loc = tuple(e["loc"])
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
                bad_rules.add(loc[1])
                continue
            target = _existing(data, loc[:-1] if e["type"] == "missing" else loc)
            if not target:
                return []  # a required top-level section is missing or wrong: nothing to check it against
            targets.add(target)
        # An object set aside takes its members with it; list members go from the last, so positions hold.
        targets = {t for t in targets if not any(u != t and t[: len(u)] == u for u in targets)}
        for t in sorted(targets, key=_path_order, reverse=True):
            parent: Any = data
            for key in t[:-1]:
                parent = parent[key]
            del parent[t[-1]]
            if isinstance(t[-1], str):
                removed.add(t[-1])
        for i in sorted(bad_rules, reverse=True):
            rule = rules[i]
            if isinstance(rule, dict) and isinstance(rule.get("name"), str):
                removed.add(rule["name"])
            del rules[i]
            del kept[i]
        try:
            cfg = Config.model_validate(data)
        except ValidationError as again:
            errors = again.errors()
            continue
        out = []
        for m in cfg.problems():
            if (
                any(f"'{name}'" in m for name in removed)
                or ("windows" in removed and ".window:" in m)
                or ("tick" in removed and "whole number of ticks" in m)
            ):
                continue
            out.append(re.sub(r"^rules\[(\d+)\]", lambda g: f"rules[{kept[int(g.group(1))]}]", m))
        return out
    return []


def _existing(data: dict[str, Any], path: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The longest start of ``path`` that exists in ``data`` (pydantic names a union's member after the keys)."""
    node: Any = data
    walked: list[int | str] = []
    for key in path:
        in_dict = isinstance(node, dict) and key in node
        if not in_dict and not (isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)):
            break
        node = node[key]
        walked.append(key)
    return tuple(walked)


def _path_order(path: tuple[int | str, ...]) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, k, "") if isinstance(k, int) else (1, 0, k) for k in path)


def load_config(path: Path | str) -> Config:
    """Read and validate a YAML config; raise :class:`ConfigError` listing every problem with its key path."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror}"]) from e
    except yaml.YAMLError as e:
        raise ConfigError([f"{p}: not valid YAML: {e}"]) from e
    if not isinstance(raw, dict):
        raise ConfigError([f"{p}: the top level must be a mapping"])
    rule_files = raw.pop("rule_files", []) or []
    problems: list[str] = []
    if not isinstance(rule_files, list) or not all(isinstance(rf, str) for rf in rule_files):
        problems.append("rule_files: expected a list of paths (relative to this file)")
        rule_files = []
    rules = raw.get("rules") or []
    if not isinstance(rules, list):  # said by validation below (rules: a list of rules); no rule files are added
        rule_files = []
    for rf in rule_files:
        rp = (p.parent / rf) if not Path(rf).is_absolute() else Path(rf)
        try:
            loaded = yaml.safe_load(rp.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            problems.append(f"{rp}: cannot read rules: {e}")
            continue
        if not isinstance(loaded, dict) or not isinstance(loaded.get("rules", []), list):
            problems.append(f"{rp}: expected a mapping with a 'rules' list")
            continue
        rules = [*rules, *loaded.get("rules", [])]
    raw["rules"] = rules
    # Relative profile paths are relative to the config file, like rule files.
    models = raw.get("models")
    for mc in models.values() if isinstance(models, dict) else ():
        ref = mc.get("reference") if isinstance(mc, dict) else None
        if isinstance(ref, dict) and ref.get("profile") and not Path(ref["profile"]).is_absolute():
            ref["profile"] = str(p.parent / ref["profile"])
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        # Every problem at once: the cross-object checks run too, on what remains once the parts that failed are
        # set aside (a rule with a bad field is left out whole), minus what only their absence would cause.
        problems += _key_paths(e) + _problems_besides(raw, e)
        raise ConfigError([f"{p}: {m}" for m in problems]) from None
    problems += cfg.problems()
    if problems:
        raise ConfigError([f"{p}: {m}" for m in problems])
    return cfg


def load_key(privacy: PrivacyConfig) -> SecretBytes:
    """Return the pseudonymisation key from the configured file or env var; never a default."""
    if privacy.key_file is not None:
        try:
            data = privacy.key_file.read_bytes().strip()
        except OSError as e:
            raise SecretMissingError([f"privacy.key_file: cannot read {privacy.key_file}: {e.strerror}"]) from e
    else:
        data = os.environ.get(privacy.key_env, "").encode()
    if len(data) < 16:
        raise SecretMissingError(
            [
                f"privacy: sensitive attributes need a pseudonymisation key of at least 16 bytes "
                f"in ${privacy.key_env} or privacy.key_file (e.g. `openssl rand -hex 32`)"
            ]
        )
    return SecretBytes(data)


def _sequential_problems(r: Rule, where: str) -> list[str]:
    """What makes a rule's ``sequential`` test unusable, each with the fix."""
    assert r.sequential is not None
    out = []
    kind = spec(r.metric).kind if r.metric in METRICS else None
    if kind is not None and kind not in ("proportion", "drift", "comparison"):
        out.append(
            f"{where}.sequential: a CUSUM tests a rate, a group comparison or a feature's distribution; {r.metric} "
            "is none of them (drop sequential)"
        )
    if kind == "drift" and r.op not in (">", ">="):
        out.append(f"{where}.op: a sequential drift test fires on a distribution that moved away: use '>'")
    if r.detector is not None or r.fdr_q is not None:
        out.append(f"{where}.sequential: cannot be combined with detector or fdr_q (its bound replaces them)")
    if r.threshold is None:
        return out
    baseline = r.sequential.baseline if r.sequential.baseline is not None else r.resolve_threshold
    if baseline is None:
        out.append(f"{where}.sequential.baseline: name the healthy rate or divergence (or set resolve_threshold)")
    elif baseline == r.threshold or (baseline > r.threshold) == (r.op in (">", ">=")):
        out.append(f"{where}.sequential.baseline: {baseline} must lie on the healthy side of threshold {r.threshold}")
    elif r.threshold >= 1 and r.metric in METRICS and spec(r.metric).share:
        out.append(f"{where}.threshold: a share's CUSUM needs a threshold below 1")
    return out
