"""Tests for `driftwatch.exports.prometheus_rules`: committed files are generated, thresholds follow the config."""

from __future__ import annotations

from pathlib import Path

import yaml

from driftwatch.config import Config, load_config
from driftwatch.exports.prometheus_rules import (
    ALERTS,
    checkpoint_window,
    evaluation_age_limit,
    prometheus_rule,
    rule_groups,
    rules_yaml,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = load_config(ROOT / "config" / "driftwatch.example.yaml")
RULES = ROOT / "deploy" / "prometheus" / "driftwatch-rules.yaml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "driftwatch-rules.test.yaml"
OPERATOR = ROOT / "deploy" / "overlays" / "consumer-group" / "prometheusrule.yaml"


def _with(**kafka_or_windows: dict[str, object]) -> Config:
    data = EXAMPLE.model_dump(mode="json", by_alias=True)
    for section, values in kafka_or_windows.items():
        data[section] = {**data[section], **values}
    return Config.model_validate(data)


def test_committed_rule_files_are_generated() -> None:
    """The rule file and the PrometheusRule manifest equal a fresh export of the example config."""
    assert RULES.read_text() == rules_yaml(EXAMPLE), "run `driftwatch export prometheus-rules`"
    assert OPERATOR.read_text() == prometheus_rule(EXAMPLE), (
        "run `driftwatch export prometheus-rules --kubernetes --out deploy/overlays/consumer-group/prometheusrule.yaml`"
    )


def test_every_health_alert_is_defined_and_unit_tested() -> None:
    """The alert group holds exactly ALERTS, each with severity and summary, and the promtool tests exercise each."""
    (group,) = rule_groups(EXAMPLE)  # one group: records first, so alerts read the same evaluation's records
    alerts = [r for r in group["rules"] if "alert" in r]  # type: ignore[union-attr]
    records = [r for r in group["rules"] if "record" in r]  # type: ignore[union-attr]
    assert group["rules"][: len(records)] == records  # type: ignore[index]
    assert isinstance(alerts, list)
    assert [a["alert"] for a in alerts] == list(ALERTS)
    for a in alerts:
        assert a["labels"]["severity"] in ("warning", "critical")
        assert a["annotations"]["summary"]
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == ["driftwatch-rules.yaml"]
    tested = {c["alertname"] for t in tests["tests"] for c in t.get("alert_rule_test", [])}
    assert tested == set(ALERTS)


def test_kubernetes_manifest_wraps_the_same_groups() -> None:
    """--kubernetes gives a monitoring.coreos.com/v1 PrometheusRule with the rule file's groups."""
    doc = yaml.safe_load(prometheus_rule(EXAMPLE))
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == (
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        "driftwatch",
    )
    assert doc["spec"]["groups"] == yaml.safe_load(rules_yaml(EXAMPLE))["groups"]


def test_thresholds_follow_the_config() -> None:
    """The tick-age limit grows with lateness and idle timeout; the checkpoint window with the checkpoint interval."""
    assert evaluation_age_limit(EXAMPLE) == 300
    slow = _with(windows={"lateness": "10m"}, kafka={"idle_timeout": "5m"})
    assert evaluation_age_limit(slow) == 600 + 300 + 50
    assert "driftwatch_last_tick_age_seconds > 950" in rules_yaml(slow)
    assert checkpoint_window(EXAMPLE) == 900
    rare = _with(kafka={"checkpoint_interval": "5m"})
    [ckpt] = [a for a in rule_groups(rare)[0]["rules"] if a.get("alert") == "DriftwatchCheckpointsNotWritten"]  # type: ignore[union-attr]
    assert "increase(driftwatch_checkpoints_written_total[50m])" in ckpt["expr"]
