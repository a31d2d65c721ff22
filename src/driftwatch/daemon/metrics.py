"""Prometheus exposition of driftwatch's live state: a custom collector read at scrape time.

:class:`DriftwatchCollector` implements prometheus_client's ``collect()``
protocol. Nothing is set per event: each scrape makes one
:meth:`~driftwatch.core.evaluate.Evaluator.metric_rows` pass over one window and
reads the counters, coders and alert engine as they are then. Nothing is
cached across scrapes. :func:`registry_for` wires one into a fresh registry.

Slice families (gauges unless noted; labels ``model, version, attribute,
slice, window``; ``attribute="*", slice="*"`` is the whole model; label
values are exactly those of the metric rows: top-k values with at least
``privacy.min_group_size`` members, a sensitive value as its pseudonymous
token or, where the config lists its raw value in ``display_values``, as that
display name, never any other raw sensitive value):

- ``driftwatch_predictions``: predictions in the slice and window (count).
- one family per metric of :data:`driftwatch.metrics.registry.REGISTRY`
  (``docs/metrics.md`` lists them): proportions are ratios (complaint-like
  rates count events per prediction and may exceed 1); drift families add
  the label ``feature`` (a monitored feature, ``score`` or ``prediction``);
  quantile metrics share one family of type *summary* with the label
  ``quantile`` (quantiles only, no ``_sum``/``_count``: the delays are kept
  as log buckets, so there is no exact sum, and a windowed count would not
  be a counter; a summary because promtool rejects a ``quantile`` label on
  anything else).
- for every proportion and comparison (``interval_on_metrics`` in the
  registry): ``<family>_lower`` and ``<family>_upper``, the 95% interval's
  bounds in the value's unit, and ``<family>_samples``, the n the value is
  computed over (a proportion's denominator in the slice; for a comparison,
  the smallest compared group's), with the value's labels.
- ``driftwatch_feature_samples`` (labels of the drift families): the n of
  the feature's values in the slice and window, shared by PSI and JS distance.
- ``driftwatch_label_metrics_provisional``: ``1`` where the slice's label
  coverage is below the model's ``label_coverage_min``, so its true/false
  positive and error rates are provisional (still exported, but never
  alerted on); absent otherwise. Join with ``unless on(model, version,
  attribute, slice, window)`` to hide provisional values.

Attribute families (gauges; labels ``model, version, attribute, window``,
the attribute a protected one): one per comparison metric of the registry,
each with its ``_lower``, ``_upper`` and ``_samples``.

A value whose status is ``insufficient`` is not exported at all (the series
is absent, never 0), nor are its interval and samples.

Sequential rules: ``driftwatch_rule_statistic{alertname, model, version,
attribute, slice}`` (gauge): each slice's CUSUM statistic in nats (the rule
fires at its ``sequential.h``), for the slices the rule watches.

Alerts: ``driftwatch_alerts{alertname, state, model, version}`` (gauge):
pending / firing alerts per configured rule and model version, from the
engine's active set (a pending alert that lapses leaves no transition, so the
latest transition alone would go stale); zero for each model version the rule
applies to that has data. (It was ``{alertname, state}``: ``sum by
(alertname, state)`` gives the old series.)

Health (never counted against the budget): ``driftwatch_events_total{kind}``,
``driftwatch_events_rejected_total{reason}``, ``driftwatch_join_total{outcome}``,
``driftwatch_events_late_total``, ``driftwatch_labels_duplicate_total``,
``driftwatch_reference_learning_events_total``, ``driftwatch_evaluations_total``,
``driftwatch_attribute_values_folded_total{attribute}``,
``driftwatch_slices_retired_total`` (counters);
``driftwatch_exported_series``, ``driftwatch_series_dropped{reason}`` and
``driftwatch_build_info{version}`` (gauges).

Series budget. At most ``max_series`` slice and attribute series are
exported per scrape. Series go in whole groups (every series of one slice,
or every comparison of one protected attribute) in this order: whole-model
slices, attribute comparisons, single-attribute slices, attribute-pair
slices; within a tier by model x version as first seen, then dimension
order, then slice rank (largest first, ``__other__`` last). The first group
that does not fit and every group after it are dropped, so a slice is
exported only when every slice ranked above it is. What one group costs at
most: a slice ``45 + 3 x (F + 2)`` series for a model with F monitored
features (the prediction count; 10 proportions, each with lower, upper and
samples; the mean score; 2 label-delay quantiles; the provisional flag; PSI,
JS distance and samples per feature, ``score`` and ``prediction``), i.e. 63
for the example config's models; a protected attribute 32 (8 comparisons,
each with lower, upper and samples). Insufficient values cost nothing; the
figures are in ``docs/metrics.md`` too. ``driftwatch_series_dropped``
reports the last scrape (a gauge, not a cumulative counter: a count of
scrapes would depend on how many servers scrape) by ``reason``: ``budget``,
``invalid_label`` (a label value not matching :data:`LABEL_VALUE`, skipped),
``unmapped_metric`` (a metric row this exporter has no family for).

Concurrency. ``collect()`` reads state the pipeline mutates. When scrapes run
on another thread (e.g. ``prometheus_client.start_http_server``), pass a
``lock`` that the pipeline's driver also holds around ``process``/``flush``;
the collector holds it only while reading, not while formatting.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from driftwatch import __version__
from driftwatch.core.counters import Counters
from driftwatch.core.evaluate import Evaluator, MetricRow
from driftwatch.core.slicing import OVERALL, AttributeCoder
from driftwatch.events import REASONS
from driftwatch.metrics.registry import FEATURE_SAMPLES, FEATURE_SAMPLES_HELP, REGISTRY

if TYPE_CHECKING:
    from driftwatch.core.pipeline import Pipeline
    from driftwatch.daemon.alerting import AlertingService
    from driftwatch.daemon.reports import ReportService

__all__ = [
    "INTERVAL_FAMILIES",
    "LABEL_VALUE",
    "SLICE_FAMILIES",
    "AlertingCollector",
    "DriftwatchCollector",
    "HealthCollector",
    "ReportsCollector",
    "WorkerCollector",
    "consumer_lag",
    "counter_family",
    "registry_for",
]

LABEL_VALUE: Final = re.compile(r"^[A-Za-z0-9_.:+*-]{1,64}$")
"""Every exported label value matches this (``*`` is the whole-model marker); anything else is skipped and counted."""

_SLICE_LABELS: Final = ("model", "version", "attribute", "slice", "window")
_ATTRIBUTE_LABELS: Final = ("model", "version", "attribute", "window")

_HELP: Final[dict[str, str]] = {
    "driftwatch_predictions": "Predictions of the slice in the window (count).",
    "driftwatch_label_metrics_provisional": "Set where the slice's label coverage in the window is below the model's minimum, so its TPR, FPR and error rate are provisional (1, absent otherwise).",
    "driftwatch_alerts": "Alerts of a rule for one model version in a state, pending or firing (count).",
    "driftwatch_events": "Events decoded, by kind (count).",
    "driftwatch_events_rejected": "Events rejected at decode or ingest, by reason (count).",
    "driftwatch_join": "Interactions joined to their prediction (hit) or given up on after the grace period (miss) (count).",
    "driftwatch_events_late": "Events dropped because their tick had already closed (count).",
    "driftwatch_labels_duplicate": "Ground-truth labels ignored because the prediction already had one (count).",
    "driftwatch_reference_learning_events": "Predictions used to learn a reference distribution instead of metrics (count).",
    "driftwatch_evaluations": "Rule evaluations, one per closed tick (count).",
    "driftwatch_attribute_values_folded": "Attribute values folded into __other__ at ingest (outside the vocabulary, invalid, or without a place among the values kept by recent volume) (count).",
    "driftwatch_slices_retired": "Slices whose row went to a newer value of their dimension, their counts folded into __other__ (count).",
    "driftwatch_join_waiting": "Interactions waiting for their prediction, within join.grace (a stalled predictions topic shows here before it shows as join misses) (count).",
    "driftwatch_exported_series": "Slice and attribute series exported in this scrape, within the series budget (count).",
    "driftwatch_series_dropped": "Series withheld from this scrape, by reason: budget (slice and attribute series past max_series), invalid_label, unmapped_metric (count).",
    "driftwatch_build_info": "The running driftwatch version, in the version label (always 1).",
    "driftwatch_rule_statistic": "Statistic of a sequential rule's test per slice (CUSUM log-likelihood ratio; the rule fires at its h) (nats).",
    **{m.family: m.help for m in REGISTRY},
    **{
        f: h
        for m in REGISTRY
        if m.interval_on_metrics
        for f, h in zip(m.interval_families, m.interval_help(), strict=True)
    },
    FEATURE_SAMPLES: FEATURE_SAMPLES_HELP,
}

SLICE_FAMILIES: Final[Mapping[str, tuple[str, str | None]]] = {
    m.name: (m.family, None if m.quantile is None else f"{m.quantile:g}") for m in REGISTRY
}
"""Metric row name -> (family, ``quantile`` label value or None) for every slice and attribute metric."""

INTERVAL_FAMILIES: Final[Mapping[str, tuple[str, str, str]]] = {
    m.name: m.interval_families for m in REGISTRY if m.interval_on_metrics
}
"""Metric row name -> (lower, upper, samples) families, for every proportion and comparison."""

_DRIFT: Final = frozenset(m.name for m in REGISTRY if m.kind == "drift")
_SUMMARY_FAMILIES: Final = frozenset(m.family for m in REGISTRY if m.quantile is not None)
_DROP_REASONS: Final = ("budget", "invalid_label", "unmapped_metric")
_ALERT_STATES: Final = ("pending", "firing")
_TEST_LABELS: Final = ("alertname", "model", "version", "attribute", "slice")
"""The labels of ``driftwatch_rule_statistic``: the alert's, without severity and the rule's own labels."""
_WHOLE_MODEL, _ATTRIBUTE, _SINGLE, _PAIR = range(4)  # budget tiers, kept first to last


@dataclass(slots=True)
class _Group:
    """The series of one slice or one protected attribute, kept or dropped together."""

    tier: int
    first: int
    series: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    provisional: bool = False
    features: set[str] = field(default_factory=set)
    """Features whose ``driftwatch_feature_samples`` is already in the group."""


@functools.lru_cache(maxsize=8192)
def _valid_value(value: str) -> bool:
    return LABEL_VALUE.fullmatch(value) is not None


def _valid(labels: Mapping[str, str]) -> bool:
    return all(_valid_value(v) for v in labels.values())


class DriftwatchCollector:
    """A prometheus_client collector exposing driftwatch's slice metrics, alerts and sequential tests at scrape time
    (what happened to every event: :class:`HealthCollector`)."""

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        window: float,
        max_series: int = 2000,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        windows = evaluator.config.windows.windows
        if window != 0 and window not in windows:
            raise ValueError(
                f"window {window}s is not a configured window ({', '.join(f'{w:g}s' for w in windows)}) or 0"
            )
        if max_series < 0:
            raise ValueError("max_series must be >= 0")
        self.evaluator = evaluator
        self.window = window
        self.max_series = max_series
        self._lock: AbstractContextManager[object] = lock if lock is not None else nullcontext()

    def describe(self) -> Iterator[Metric]:
        """Every family this collector exposes, without samples (lets a registry detect name clashes cheaply)."""
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """Read the live state once and yield every family."""
        with self._lock:
            rows = list(self.evaluator.metric_rows(self.window))
            alerts = self._alert_counts()
            tests = [
                ({str(k): labels[k] for k in _TEST_LABELS if k in labels}, t.statistic)
                for _, labels, t in self.evaluator.rules.sequential.items()
            ]
        fams = self._families()
        dropped = dict.fromkeys(_DROP_REASONS, 0)
        exported = 0
        for group in self._groups(rows, dropped):
            if exported + len(group.series) > self.max_series or dropped["budget"]:
                dropped["budget"] += len(group.series)
                continue
            exported += len(group.series)
            for name, labels, value in group.series:
                _add(fams[name], labels, value)
        for (rule, state, model, version), count in alerts.items():
            labels = {"alertname": rule, "state": state, "model": model, "version": version}
            if _valid(labels):
                _add(fams["driftwatch_alerts"], labels, count)
            else:
                dropped["invalid_label"] += 1
        for test_labels, statistic in tests:
            if _valid(test_labels):
                _add(fams["driftwatch_rule_statistic"], test_labels, statistic)
            else:
                dropped["invalid_label"] += 1
        _add(fams["driftwatch_exported_series"], {}, exported)
        for reason, count in dropped.items():
            _add(fams["driftwatch_series_dropped"], {"reason": reason}, count)
        _add(fams["driftwatch_build_info"], {"version": __version__}, 1)
        return iter(fams.values())

    def _alert_counts(self) -> dict[tuple[str, str, str, str], int]:
        """(rule, state, model, version) -> pending / firing alerts.

        Zero-filled for every configured rule and every model version it applies to that has data.
        """
        streams = sorted(self.evaluator.streams)
        out = {
            (r.name, s, m, v): 0
            for r in self.evaluator.config.rules
            for m, v in streams
            if r.model in ("*", m) and r.version in ("*", v)
            for s in _ALERT_STATES
        }
        for rule, state, labels in self.evaluator.engine.open_alerts():
            if state in _ALERT_STATES:
                key = (rule, state, labels.get("model", ""), labels.get("version", ""))
                out[key] = out.get(key, 0) + 1
        return out

    def _groups(self, rows: list[MetricRow], dropped: dict[str, int]) -> list[_Group]:
        """Turn metric rows into budget groups in priority order, leaving out insufficient values and bad labels."""
        groups: dict[tuple[bool, tuple[str, ...]], _Group] = {}
        for i, row in enumerate(rows):
            lb = row.labels
            is_slice = "slice" in lb
            base = {k: lb.get(k, "") for k in (_SLICE_LABELS if is_slice else _ATTRIBUTE_LABELS)}
            key = (is_slice, tuple(base.values()))
            group = groups.get(key)
            if group is None:
                attr = base["attribute"]
                if not is_slice:
                    tier = _ATTRIBUTE
                elif attr == OVERALL:
                    tier = _WHOLE_MODEL
                else:
                    tier = _PAIR if ":" in attr else _SINGLE
                group = groups[key] = _Group(tier, i)
            if is_slice and row.name == "selection_rate":
                # Its denominator is the slice's prediction count, given even when the rate is insufficient.
                _append(group, "driftwatch_predictions", base, float(row.n), dropped)
            if row.status not in ("ok", "provisional") or row.value is None:
                continue
            spec = SLICE_FAMILIES.get(row.name)
            if spec is None:
                dropped["unmapped_metric"] += 1
                continue
            family, quantile = spec
            labels = dict(base)
            if "feature" in lb:
                labels["feature"] = lb["feature"]
            if quantile is not None:
                labels["quantile"] = quantile
            if row.status == "provisional" and "slice" in row.labels and not group.provisional:
                group.provisional = True
                _append(group, "driftwatch_label_metrics_provisional", base, 1.0, dropped)
            _append(group, family, labels, row.value, dropped)
            bounds = INTERVAL_FAMILIES.get(row.name)
            if bounds is not None:
                lower, upper, samples = bounds
                for fam, bound in ((lower, row.lo), (upper, row.hi)):
                    if bound is not None and not math.isnan(bound):
                        _append(group, fam, labels, bound, dropped)
                _append(group, samples, labels, float(row.n), dropped)
            elif row.name in _DRIFT and labels.get("feature") not in group.features:
                # PSI and JS distance of a feature share their n: one series for both.
                group.features.add(labels.get("feature", ""))
                _append(group, FEATURE_SAMPLES, labels, float(row.n), dropped)
        return sorted(groups.values(), key=lambda g: (g.tier, g.first))

    @staticmethod
    def _families() -> dict[str, Metric]:
        """One empty family per exposed name, in exposition order."""
        fams: dict[str, Metric] = {
            "driftwatch_predictions": GaugeMetricFamily("driftwatch_predictions", _HELP["driftwatch_predictions"])
        }
        for name, (family, _) in SLICE_FAMILIES.items():
            if family not in fams:
                kind = "summary" if family in _SUMMARY_FAMILIES else "gauge"
                fams[family] = Metric(family, _HELP[family], kind)
            for extra in INTERVAL_FAMILIES.get(name, ()):
                fams[extra] = Metric(extra, _HELP[extra], "gauge")
            if name in _DRIFT and FEATURE_SAMPLES not in fams:
                fams[FEATURE_SAMPLES] = Metric(FEATURE_SAMPLES, _HELP[FEATURE_SAMPLES], "gauge")
        for name in ("driftwatch_label_metrics_provisional", "driftwatch_alerts", "driftwatch_rule_statistic"):
            fams[name] = GaugeMetricFamily(name, _HELP[name])
        for name in ("driftwatch_exported_series", "driftwatch_series_dropped", "driftwatch_build_info"):
            fams[name] = GaugeMetricFamily(name, _HELP[name])
        return fams


_HEALTH_COUNTERS: Final = (
    "events",
    "events_rejected",
    "join",
    "events_late",
    "labels_duplicate",
    "reference_learning_events",
    "evaluations",
    "attribute_values_folded",
    "slices_retired",
)


class HealthCollector:
    """What happened to every event (counters), apart from the slice metrics: a scrape that asks only for these
    (``/metrics?name[]=driftwatch_events_total``) never computes a slice."""

    def __init__(
        self,
        counters: Counters,
        coders: Mapping[str, AttributeCoder],
        waiting: Callable[[], int],
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.counters = counters
        self.coders = coders
        self.waiting = waiting  # interactions waiting for their prediction now (the ingestor's)
        self._lock: AbstractContextManager[object] = lock if lock is not None else nullcontext()

    def describe(self) -> Iterator[Metric]:
        """Every family, without samples."""
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """The counters as they are now."""
        with self._lock:
            c = self.counters
            health_counts: dict[str, list[tuple[dict[str, str], int]]] = {
                "events": [({"kind": "prediction"}, c.predictions), ({"kind": "interaction"}, c.interactions)],
                "events_rejected": [
                    ({"reason": r}, c.rejected.get(r, 0)) for r in sorted({*REASONS, "unknown_model", *c.rejected})
                ],
                "join": [({"outcome": "hit"}, c.join_hits), ({"outcome": "miss"}, c.join_misses)],
                "events_late": [({}, c.late_dropped)],
                "labels_duplicate": [({}, c.duplicate_labels)],
                "reference_learning_events": [({}, c.reference_learning)],
                "evaluations": [({}, c.evaluations)],
                "attribute_values_folded": [({"attribute": a}, coder.folded) for a, coder in self.coders.items()],
                "slices_retired": [({}, c.slices_retired)],
            }
            waiting = self.waiting()
        fams = self._families()
        for base, samples in health_counts.items():
            for labels, value in samples:
                _add(fams[f"driftwatch_{base}"], labels, value)  # label values from the config and fixed reasons
        _add(fams["driftwatch_join_waiting"], {}, waiting)
        return iter(fams.values())

    def _families(self) -> dict[str, Metric]:
        fams: dict[str, Metric] = {
            f"driftwatch_{base}": CounterMetricFamily(f"driftwatch_{base}", _HELP[f"driftwatch_{base}"])
            for base in _HEALTH_COUNTERS
        }
        fams["driftwatch_join_waiting"] = GaugeMetricFamily("driftwatch_join_waiting", _HELP["driftwatch_join_waiting"])
        return fams


def _append(group: _Group, family: str, labels: dict[str, str], value: float, dropped: dict[str, int]) -> None:
    if _valid(labels):
        group.series.append((family, labels, value))
    else:
        dropped["invalid_label"] += 1


def _add(metric: Metric, labels: dict[str, str], value: float) -> None:
    """Add one sample; a counter's sample name carries ``_total``."""
    name = metric.name + "_total" if metric.type == "counter" else metric.name
    # The family classes' add_metric fixes label names up front and has no quantile-only summary; these families
    # mix label sets (``feature``, ``quantile``), so samples are added directly, as custom collectors commonly do.
    metric.add_sample(name, labels, value)


def registry_for(
    pipeline: Pipeline,
    *,
    window: float | None = None,
    max_series: int = 2000,
    lock: AbstractContextManager[object] | None = None,
) -> CollectorRegistry:
    """A fresh registry with a :class:`DriftwatchCollector` and a :class:`HealthCollector` over ``pipeline`` (window
    default: the first configured)."""
    if window is None:
        windows = pipeline.config.windows.windows
        window = windows[0] if windows else 0.0
    registry = CollectorRegistry()
    registry.register(DriftwatchCollector(pipeline.evaluator, window=window, max_series=max_series, lock=lock))
    registry.register(HealthCollector(pipeline.counters, pipeline.coders, pipeline.ingestor.waiting, lock))
    return registry


# ------------------------------------------------------------------------------------------- the alerting side


def counter_family(
    name: str, documentation: str, values: float | Mapping[str, float], *, label: str = ""
) -> CounterMetricFamily:
    """A counter family: one sample for a number, or one sample per ``label`` value of a mapping (in its order).

    >>> [(s.name, s.labels, s.value) for s in counter_family("x", "X.", {"a": 1, "b": 2}, label="k").samples]
    [('x_total', {'k': 'a'}, 1), ('x_total', {'k': 'b'}, 2)]
    """
    if not isinstance(values, Mapping):
        return CounterMetricFamily(name, documentation, value=values)
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in values.items():
        family.add_metric([value], count)
    return family


def _described(families: Iterable[tuple[str, str]]) -> Iterator[Metric]:
    """Empty families by (name, type): what a collector's ``describe`` gives a registry, so that a scrape asking for
    some names (``?name[]=``) collects only the collectors that have them."""
    return (Metric(name, name, kind) for name, kind in families)


class AlertingCollector:
    """The alerting side's counters at scrape time: notifications, runbook actions, the audit copy."""

    def __init__(self, service: AlertingService) -> None:
        self.service = service

    def describe(self) -> Iterator[Metric]:
        """Every family :meth:`collect` may yield, without samples."""
        counters = ("notifications_sent", "notifications_retried", "notifications_dead_lettered")
        return _described(
            [
                *((f"driftwatch_{c}", "counter") for c in counters),
                ("driftwatch_notifications_suppressed", "counter"),
                ("driftwatch_actions", "counter"),
                ("driftwatch_actions_suppressed", "counter"),
                ("driftwatch_actions_awaiting_approval", "gauge"),
                ("driftwatch_audit_mirror_failed", "counter"),
            ]
        )

    def collect(self) -> Iterator[Metric]:
        """Read the notifier's and the action runner's counters as they are now."""
        s = self.service
        if s.notifier is not None:
            n = s.notifier.counters
            yield counter_family("driftwatch_notifications_sent", "Notifications delivered.", n.sent)
            yield counter_family(
                "driftwatch_notifications_retried", "Delivery attempts that will be retried.", n.retried
            )
            yield counter_family(
                "driftwatch_notifications_dead_lettered",
                "Notifications given up on (sent to the notifier's dead-letter topic).",
                n.dead_lettered,
            )
            yield counter_family(
                "driftwatch_notifications_suppressed",
                "Notifications not sent, by reason.",
                dict(sorted(n.suppressed.items())),
                label="reason",
            )
        if s.runner is not None:
            a = s.runner.counters
            yield counter_family(
                "driftwatch_actions", "Runbook action steps, by outcome.", a.by_outcome(), label="outcome"
            )
            yield counter_family(
                "driftwatch_actions_suppressed",
                "Actions a guardrail held back, by reason.",
                dict(sorted(a.suppressed.items())),
                label="reason",
            )
            yield GaugeMetricFamily(
                "driftwatch_actions_awaiting_approval",
                "Proposed actions waiting for approval.",
                value=sum(1 for x in s.runner.actions() if x.get("state") == "proposed"),
            )
        yield counter_family(
            "driftwatch_audit_mirror_failed",
            "Audit records not copied to the audit topic (the file still has them).",
            s.audit_mirror_failed,
        )


# ------------------------------------------------------------------------------------------------- the worker

EVALUATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Bucket bounds (seconds) of ``driftwatch_evaluation_duration_seconds``."""


class WorkerState(Protocol):
    """What :class:`WorkerCollector` reads of a worker (:class:`~driftwatch.daemon.worker.Worker`) at scrape time."""

    core: Pipeline
    assignment: frozenset[tuple[str, int]]
    highwater: dict[str, int]
    position: dict[str, int]
    committed: dict[str, int]
    log_start: dict[str, int]
    progress_wall: dict[str, float]
    dead_lettered: int
    duplicates_skipped: int
    summaries_rejected: int
    evaluation_seconds: list[int]
    evaluation_seconds_sum: float
    last_evaluation_wall: float | None

    @property
    def checkpoints_written(self) -> int: ...

    @property
    def input_refetched(self) -> int: ...

    @property
    def input_skipped(self) -> int: ...

    @property
    def recovery(self) -> dict[str, float]: ...


class WorkerCollector:
    """The worker's own health: partitions owned, dead-lettered events, skipped redeliveries, watermark lag."""

    def __init__(self, worker: WorkerState) -> None:
        self.worker = worker

    def describe(self) -> Iterator[Metric]:
        """Every family :meth:`collect` may yield, without samples."""
        counters = ("dead_lettered", "summaries_skipped_duplicate", "summaries_rejected", "input_refetched")
        return _described(
            [
                ("driftwatch_input_partitions_assigned", "gauge"),
                *((f"driftwatch_{c}", "counter") for c in (*counters, "input_skipped", "checkpoints_written")),
                ("driftwatch_last_evaluation_age_seconds", "gauge"),
                ("driftwatch_last_tick_age_seconds", "gauge"),
                ("driftwatch_consumer_lag", "gauge"),
                ("driftwatch_consumer_stalled_seconds", "gauge"),
                ("driftwatch_evaluation_duration_seconds", "histogram"),
                ("driftwatch_recovery_seconds", "gauge"),
            ]
        )

    def collect(self) -> Iterator[Metric]:
        """Read the worker's state at scrape time."""
        w = self.worker
        config = w.core.config
        names = {config.kafka.predictions.name, config.kafka.interactions.name}
        assigned = sum(1 for topic, _ in w.assignment if topic in names)
        yield GaugeMetricFamily(
            "driftwatch_input_partitions_assigned",
            "Input partitions (both topics) this worker consumes.",
            value=assigned,
        )
        yield counter_family(
            "driftwatch_dead_lettered", "Events this worker sent to the dead-letter topic.", w.dead_lettered
        )
        yield counter_family(
            "driftwatch_summaries_skipped_duplicate",
            "Summary messages skipped because their source offsets were already applied (redelivery).",
            w.duplicates_skipped,
        )
        yield counter_family(
            "driftwatch_summaries_rejected", "Summary messages that could not be decoded.", w.summaries_rejected
        )
        yield counter_family(
            "driftwatch_input_refetched",
            "Input records read again because the consumer skipped them (fetched before a rebalance).",
            w.input_refetched,
        )
        yield counter_family(
            "driftwatch_input_skipped",
            "Input offsets skipped because the group's offsets were reset past them (an operator skipping a backlog).",
            w.input_skipped,
        )
        if w.last_evaluation_wall is not None:
            yield GaugeMetricFamily(
                "driftwatch_last_evaluation_age_seconds",
                "Wall time since the evaluation stage last advanced.",
                value=max(time.time() - w.last_evaluation_wall, 0.0),
            )
        closed = w.core.evaluator.closed_before
        if closed is not None:
            yield GaugeMetricFamily(
                "driftwatch_last_tick_age_seconds",
                "Wall time minus the end of the last closed tick: how far evaluation lags behind the clock.",
                value=max(time.time() - closed * config.windows.tick, 0.0),
            )
        yield from self._lag(names)
        buckets, acc = [], 0
        for bound, n in zip((*map(str, EVALUATION_BUCKETS), "+Inf"), w.evaluation_seconds, strict=True):
            acc += n
            buckets.append((bound, acc))
        yield HistogramMetricFamily(
            "driftwatch_evaluation_duration_seconds",
            "Time the evaluation stage took to close ticks and evaluate the rules, per batch of summaries.",
            buckets=buckets,
            sum_value=w.evaluation_seconds_sum,
        )
        yield counter_family("driftwatch_checkpoints_written", "Evaluation checkpoints written.", w.checkpoints_written)
        recovery = GaugeMetricFamily(
            "driftwatch_recovery_seconds",
            "How long the last recovery of a partition's state took (stage: input or summaries).",
            labels=["stage", "partition"],
        )
        for name, secs in sorted(w.recovery.items()):
            stage, _, part = name.partition(" ")
            recovery.add_metric([stage, part], secs)
        yield recovery

    def _lag(self, names: set[str]) -> Iterator[Metric]:
        w = self.worker
        lag = GaugeMetricFamily(
            "driftwatch_consumer_lag",
            "Messages in an input partition not yet processed: high watermark minus the next offset to process (this "
            "worker's position, else the group's committed offset, else the log start).",
            labels=["topic", "partition"],
        )
        stalled = GaugeMetricFamily(
            "driftwatch_consumer_stalled_seconds",
            "Wall time an input partition with lag has not advanced (0 when caught up); alert above ~60 s.",
            labels=["topic", "partition"],
        )
        now = time.time()
        for topic, part in sorted(tp for tp in w.assignment if tp[0] in names):
            key = f"{topic}:{part}"
            behind = consumer_lag(w.highwater.get(key), w.position.get(key), w.committed.get(key), w.log_start.get(key))
            if behind is None:
                continue  # no fetch answered for it yet, or its start is still being read: unknown, not 0
            labels = [topic, str(part)]
            lag.add_metric(labels, behind)
            stalled.add_metric(labels, now - w.progress_wall.get(key, now) if behind else 0.0)
        yield lag
        yield stalled


def consumer_lag(
    highwater: int | None, position: int | None, committed: int | None, log_start: int | None
) -> int | None:
    """Messages of a partition not processed yet, or None when unknown.

    Measured from the next offset to process: the worker's own position once it has processed a batch of the
    partition; the group's committed offset where that is further on (another worker's progress on a partition
    this one had before) or where there is no position yet (a restart: the backlog counts before the first batch);
    the log start when nothing is committed either (the group reads the partition from its beginning).

    >>> consumer_lag(28_000, None, 100, None), consumer_lag(500, None, None, 20), consumer_lag(500, 480, 450, 0)
    (27900, 480, 20)
    >>> consumer_lag(500, 300, 450, None), consumer_lag(None, 3, 3, 0), consumer_lag(500, None, None, None)
    (50, None, None)
    """
    if highwater is None:
        return None
    known = [o for o in (position, committed) if o is not None]
    start = max(known) if known else log_start
    if start is None:
        return None
    return max(highwater - start, 0)


class ReportsCollector:
    """The worker's reports of alerts (docs/reports.md): built, failed, dropped, expired, and held now."""

    def __init__(self, reports: ReportService) -> None:
        self.reports = reports

    def describe(self) -> Iterator[Metric]:
        """Every family :meth:`collect` may yield, without samples."""
        return _described([("driftwatch_reports", "counter"), ("driftwatch_reports_stored", "gauge")])

    def collect(self) -> Iterator[Metric]:
        """Read the service's counts at scrape time."""
        r = self.reports
        yield counter_family(
            "driftwatch_reports",
            "Reports of firing alerts by outcome: built, failed (error or timeout: the alert went out without the "
            "link), dropped (queue full), expired (retention or max_reports).",
            {"built": r.built, "failed": r.failed, "dropped": r.dropped, "expired": r.expired},
            label="outcome",
        )
        yield GaugeMetricFamily(
            "driftwatch_reports_stored", "Reports this worker holds and serves now.", value=r.stored
        )
