"""Prometheus recording and alerting rules for the workers' own health, from a config.

:func:`rule_groups` returns the groups; :func:`rules_yaml` a rule file for
Prometheus's ``rule_files``; :func:`prometheus_rule` the same groups as a
``monitoring.coreos.com/v1`` PrometheusRule for the Prometheus Operator.
The metrics are those of :class:`~driftwatch.daemon.metrics.WorkerCollector`,
:class:`~driftwatch.daemon.metrics.DriftwatchCollector` and
:class:`~driftwatch.daemon.metrics.AlertingCollector`. Thresholds that
depend on the config (tick, lateness, idle timeout, checkpoint interval)
are computed from it; the unit tests next to the rule file
(``deploy/prometheus/driftwatch-rules.test.yaml``) run with ``promtool test rules``.
"""

from __future__ import annotations

from typing import Final

import yaml

from driftwatch.config import Config

__all__ = [
    "ALERTS",
    "checkpoint_window",
    "duration",
    "evaluation_age_limit",
    "prometheus_rule",
    "rule_groups",
    "rules_yaml",
]

ALERTS: Final = (
    "DriftwatchConsumerStalled",
    "DriftwatchConsumerLagGrowing",
    "DriftwatchEvaluationBehind",
    "DriftwatchDeadLetterRate",
    "DriftwatchNotificationsDeadLettered",
    "DriftwatchInputSkipped",
    "DriftwatchCheckpointsNotWritten",
)
"""The health alerts, in file order."""

_BY: Final = "job, instance"

STALL_SECONDS: Final = 60
"""An input partition with lag that has not advanced for this long is stalled."""
LAG_MESSAGES: Final = 1000
"""Lag below this is never worth a page, however it trends."""
DEAD_LETTER_RATIO: Final = 0.01
"""Share of incoming events rejected to the dead-letter topic that is more than noise."""


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (whole seconds, the largest exact unit).

    >>> duration(900), duration(90), duration(7200)
    ('15m', '90s', '2h')
    """
    s = max(round(seconds), 1)
    for unit, size in (("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, object]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "service": "driftwatch"},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook": f"docs/operating.md, health alert {name}",
        },
    }


def evaluation_age_limit(config: Config) -> float:
    """Seconds the last closed tick may lag the wall clock before the evaluation counts as behind.

    A tick closes once event time passes its end plus the lateness; a silent partition holds event time back for
    up to the idle timeout; a few ticks on top absorb batching. Never below five minutes.
    """
    w = config.windows
    return max(300.0, w.lateness + config.kafka.idle_timeout + 5 * w.tick)


def checkpoint_window(config: Config) -> float:
    """Seconds over which evaluations without a single checkpoint mean checkpoints fail (at least 15 minutes)."""
    return max(900.0, 10 * config.kafka.checkpoint_interval)


def rule_groups(config: Config) -> list[dict[str, object]]:
    """One group, recording rules first: rules of a group are evaluated in order, so each alert reads the records of
    the same evaluation (groups run concurrently: an alert in another group could read the previous step's value,
    and its description would vary)."""
    age = evaluation_age_limit(config)
    ckpt = duration(checkpoint_window(config))
    recording: list[dict[str, object]] = [
        {"record": "driftwatch:consumer_lag:sum", "expr": f"sum by ({_BY}) (driftwatch_consumer_lag)"},
        {
            "record": "driftwatch:events:rate5m",
            "expr": f"sum by ({_BY}) (rate(driftwatch_events_total[5m]))",
        },
        {
            "record": "driftwatch:events_rejected:rate5m",
            "expr": f"sum by ({_BY}, reason) (rate(driftwatch_events_rejected_total[5m]))",
        },
        {
            "record": "driftwatch:dead_lettered:rate5m",
            "expr": f"sum by ({_BY}) (rate(driftwatch_dead_lettered_total[5m]))",
        },
    ]
    alerts: list[dict[str, object]] = [
        _alert(
            "DriftwatchConsumerStalled",
            f"max by ({_BY}, topic, partition) (driftwatch_consumer_stalled_seconds) > {STALL_SECONDS}",
            "1m",
            "critical",
            "A driftwatch worker stopped consuming a partition that has lag",
            "{{ $labels.instance }} has not advanced {{ $labels.topic }}[{{ $labels.partition }}] for "
            "{{ $value | humanizeDuration }} although messages are waiting.",
        ),
        _alert(
            "DriftwatchConsumerLagGrowing",
            f"driftwatch:consumer_lag:sum > {LAG_MESSAGES} and deriv(driftwatch:consumer_lag:sum[10m]) > 0",
            "15m",
            "warning",
            "driftwatch is falling behind its input topics",
            "{{ $labels.instance }} is {{ $value | humanize }} messages behind and the lag has grown for 15 "
            "minutes: add workers (up to the partition count) or find the slow stage.",
        ),
        _alert(
            "DriftwatchEvaluationBehind",
            f"driftwatch_last_tick_age_seconds > {age:g}",
            "5m",
            "critical",
            "driftwatch has not closed a tick recently: metrics and alerts are stale",
            "The last closed tick on {{ $labels.instance }} ended {{ $value | humanizeDuration }} ago (limit "
            f"{duration(age)}: lateness + idle timeout + 5 ticks).",
        ),
        _alert(
            "DriftwatchDeadLetterRate",
            f"driftwatch:dead_lettered:rate5m / (driftwatch:events:rate5m + driftwatch:dead_lettered:rate5m) > "
            f"{DEAD_LETTER_RATIO:g}",
            "10m",
            "warning",
            "Many events go to driftwatch's dead-letter topic",
            "{{ $value | humanizePercentage }} of the events reaching {{ $labels.instance }} are rejected; "
            "driftwatch_events_rejected_total{reason} says why.",
        ),
        _alert(
            "DriftwatchNotificationsDeadLettered",
            f"sum by ({_BY}) (increase(driftwatch_notifications_dead_lettered_total[15m])) > 0",
            "0s",
            "critical",
            "driftwatch gave up delivering alert notifications",
            "{{ $value | humanize }} notifications from {{ $labels.instance }} were dead-lettered in 15 minutes: "
            "their receiver is failing or refusing them.",
        ),
        _alert(
            "DriftwatchInputSkipped",
            f"sum by ({_BY}) (increase(driftwatch_input_skipped_total[15m])) > 0",
            "0s",
            "warning",
            "driftwatch skipped input after an offset reset of its consumer group",
            "{{ $labels.instance }} skipped {{ $value | humanize }} input messages in 15 minutes because the group's "
            "offsets were moved past them: fine when an operator skipped a backlog on purpose, data loss if not.",
        ),
        _alert(
            "DriftwatchCheckpointsNotWritten",
            f"sum by ({_BY}) (increase(driftwatch_checkpoints_written_total[{ckpt}])) == 0 "
            f"and sum by ({_BY}) (increase(driftwatch_evaluations_total[{ckpt}])) > 0",
            "5m",
            "warning",
            "driftwatch evaluates but writes no checkpoints",
            f"{{{{ $labels.instance }}}} closed ticks but wrote no checkpoint in {ckpt}: a restart would replay "
            "much more than the checkpoint interval.",
        ),
    ]
    return [{"name": "driftwatch-health", "rules": [*recording, *alerts]}]


_HEADER: Final = "# Generated by `driftwatch export prometheus-rules`; do not edit. See docs/operating.md.\n"


def rules_yaml(config: Config) -> str:
    """A Prometheus rule file (``rule_files``) with the health groups."""
    return _HEADER + yaml.safe_dump({"groups": rule_groups(config)}, sort_keys=False, width=120)


def prometheus_rule(config: Config, *, name: str = "driftwatch") -> str:
    """The same groups as a Prometheus Operator ``PrometheusRule`` manifest."""
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "driftwatch", "prometheus": "driftwatch"}},
        "spec": {"groups": rule_groups(config)},
    }
    return _HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)
