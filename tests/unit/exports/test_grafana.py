"""Tests for `driftwatch.exports.grafana`: the committed dashboards are what the code generates, and well-formed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from driftwatch.config import Config, load_config
from driftwatch.daemon.metrics import INTERVAL_FAMILIES, SLICE_FAMILIES
from driftwatch.exports.grafana import dashboards, provisioning, to_json
from driftwatch.exports.links import DASHBOARDS, UIDS
from driftwatch.metrics.registry import spec

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "config" / "driftwatch.example.yaml"
GRAFANA = ROOT / "grafana"

# Families the worker exposes outside the metric registry (daemon/metrics.py's collectors).
HEALTH_FAMILIES = {
    "driftwatch_predictions",
    "driftwatch_alerts",
    "driftwatch_rule_statistic",
    "driftwatch_feature_samples",
    "driftwatch_consumer_lag",
    "driftwatch_consumer_stalled_seconds",
    "driftwatch_last_tick_age_seconds",
    "driftwatch_events_rejected_total",
    "driftwatch_dead_lettered_total",
    "driftwatch_evaluation_duration_seconds_bucket",
    "driftwatch_checkpoints_written_total",
    "driftwatch_notifications_sent_total",
    "driftwatch_notifications_retried_total",
    "driftwatch_notifications_dead_lettered_total",
    "driftwatch_actions_total",
    "driftwatch_actions_awaiting_approval",
}
METRIC = re.compile(r"\b(driftwatch_[a-z_]+)\b")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(EXAMPLE)


@pytest.fixture(scope="module")
def boards(config: Config) -> dict[str, dict[str, object]]:
    return dashboards(config)


def _targets(board: dict[str, object]) -> list[dict[str, object]]:
    panels = board["panels"]
    assert isinstance(panels, list)
    return [t for p in panels for t in p["targets"]]


def test_committed_files_are_generated(config: Config, boards: dict[str, dict[str, object]]) -> None:
    """grafana/dashboards/*.json and the provisioning files equal a fresh `driftwatch export grafana` of the example config."""
    for name, doc in boards.items():
        path = GRAFANA / "dashboards" / f"{name}.json"
        assert path.read_text() == to_json(doc), f"{path} is stale: run `driftwatch export grafana`"
    for rel, text in provisioning().items():
        assert (GRAFANA / rel).read_text() == text, f"grafana/{rel} is stale: run `driftwatch export grafana`"
    assert sorted(p.stem for p in (GRAFANA / "dashboards").glob("*.json")) == sorted(DASHBOARDS)


def test_uids_and_titles_are_stable(boards: dict[str, dict[str, object]]) -> None:
    """Each dashboard has its fixed uid (deep links use it) and unique panel ids."""
    assert list(boards) == list(DASHBOARDS)
    for name, board in boards.items():
        assert board["uid"] == UIDS[name] == f"driftwatch-{name}"
        panels = board["panels"]
        assert isinstance(panels, list)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)) >= 5


def test_datasource_is_a_variable_never_an_input(boards: dict[str, dict[str, object]]) -> None:
    """No dashboard uses __inputs; every panel and target reads the ${datasource} variable."""
    for board in boards.values():
        assert "__inputs" not in to_json(board)
        templating = board["templating"]
        assert isinstance(templating, dict)
        first = templating["list"][0]
        assert (first["type"], first["name"], first["query"]) == ("datasource", "datasource", "prometheus")
        for panel in board["panels"]:  # type: ignore[attr-defined]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in _targets(board):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_variables_are_chained(boards: dict[str, dict[str, object]]) -> None:
    """model → version → attribute → slice: each label_values query filters on the variables before it."""
    for board in boards.values():
        variables = board["templating"]["list"][1:]  # type: ignore[index]
        assert [v["name"] for v in variables] == ["model", "version", "attribute", "slice"]
        for i, var in enumerate(variables):
            query = var["query"]["query"]
            assert query.startswith("label_values(")
            assert query.endswith(f", {var['name']})")
            for before in variables[:i]:
                assert (
                    f'{before["name"]}=~"${before["name"]}"' in query
                    or f'{before["name"]}="${before["name"]}"' in query
                )


def test_queries_name_exported_families(boards: dict[str, dict[str, object]]) -> None:
    """Every metric a query names is one the worker exports (registry families, their intervals, health)."""
    exported = {family for family, _ in SLICE_FAMILIES.values()} | HEALTH_FAMILIES
    exported |= {f for fams in INTERVAL_FAMILIES.values() for f in fams}
    for board in boards.values():
        for target in _targets(board):
            expr = target["expr"]
            assert isinstance(expr, str)
            named = set(METRIC.findall(expr))
            assert named, expr
            assert named <= exported, f"{named - exported} in {expr}"


def test_panels_cover_the_brief(boards: dict[str, dict[str, object]]) -> None:
    """Fairness draws interval bands and the 0.8 line; health shows lag, stalls, tick age, dead letters, checkpoints."""
    fairness = " ".join(str(t["expr"]) for t in _targets(boards["fairness"]))
    for family in ("driftwatch_selection_rate_lower", "driftwatch_selection_rate_upper"):
        assert family in fairness
    di = next(p for p in boards["fairness"]["panels"] if "Disparate impact" in p["title"])  # type: ignore[attr-defined]
    assert [s["value"] for s in di["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 0.8]
    health = " ".join(str(t["expr"]) for t in _targets(boards["health"]))
    for name in (
        "driftwatch_consumer_lag",
        "driftwatch_consumer_stalled_seconds",
        "driftwatch_last_tick_age_seconds",
        "driftwatch_events_rejected_total",
        "driftwatch_evaluation_duration_seconds_bucket",
        "driftwatch_checkpoints_written_total",
        "driftwatch_notifications_dead_lettered_total",
        "driftwatch_actions_total",
    ):
        assert name in health


def test_one_drift_panel_per_drift_rule_at_its_threshold(config: Config, boards: dict[str, dict[str, object]]) -> None:
    """The drift dashboard has a panel per configured drift rule, its threshold as the dashed line."""
    rules = [r for r in config.rules if spec(r.metric).kind == "drift"]
    assert rules
    panels = boards["drift"]["panels"]
    for rule in rules:
        [panel] = [p for p in panels if p["title"].startswith(f"Rule {rule.name}:")]  # type: ignore[attr-defined]
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[-1]["value"] == rule.threshold
        assert f'feature="{rule.feature}"' in panel["targets"][0]["expr"]


def test_drift_panels_follow_the_config(config: Config) -> None:
    """A config without drift rules gets no rule panels; a new rule gets one."""
    data = config.model_dump(mode="json", by_alias=True)
    base = len(dashboards(Config.model_validate({**data, "rules": []}))["drift"]["panels"])  # type: ignore[arg-type]
    extra = {"name": "js_any", "metric": "js_distance", "attribute": "*", "feature": "score", "threshold": 0.2}
    more = dashboards(Config.model_validate({**data, "rules": [extra]}))["drift"]["panels"]
    assert len(more) == base + 1  # type: ignore[arg-type]
    assert more[-1]["title"] == "Rule js_any: js_distance > 0.2"  # type: ignore[index]
