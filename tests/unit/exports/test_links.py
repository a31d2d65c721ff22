"""Tests for `driftwatch.exports.links` and the notifier's dashboard_url annotation."""

from __future__ import annotations

import json
import random
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from driftwatch.alerts.engine import AlertTransition, fingerprint
from driftwatch.alerts.notifier import Notifier
from driftwatch.alerts.records import AlertRecord
from driftwatch.config import Config, NotifyConfig, load_config
from driftwatch.exports.links import DashboardLinks, dashboard_for_rule

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "unit" / "data" / "notify_webhook_v4.json"
T0 = 1_795_000_000.0


def _config(**extra: object) -> Config:
    data = load_config(ROOT / "config" / "driftwatch.example.yaml").model_dump(mode="json", by_alias=True)
    data.update(extra)
    return Config.model_validate(data)


def test_dashboard_by_metric_kind() -> None:
    """Drift rules link to the drift dashboard, comparisons to fairness, every other metric to the overview."""
    rules = {r.name: dashboard_for_rule(r) for r in _config().rules}
    assert rules["feature_drift_psi"] == rules["score_drift_any_slice"] == "drift"
    assert rules["selection_rate_disparity"] == rules["tpr_gap"] == rules["complaint_parity_gap"] == "fairness"
    assert rules["complaint_rate_high"] == rules["score_mean_change"] == "overview"


def test_no_links_without_grafana_url() -> None:
    """Without grafana.url there are no links; with it, one dashboard per rule."""
    assert DashboardLinks.from_config(_config()) is None
    links = DashboardLinks.from_config(_config(grafana={"url": "https://grafana.example.internal"}))
    assert links is not None
    assert links.dashboards["tpr_gap"] == "fairness"


def test_grafana_url_must_be_http() -> None:
    """grafana.url is validated like the other URLs of the config."""
    with pytest.raises(ValueError, match="http"):
        _config(grafana={"url": "ftp://grafana.example.internal"})


def test_url_fills_the_variables() -> None:
    """The link names the dashboard by uid and fills model, version, attribute and slice, leaving out `*`."""
    links = DashboardLinks("https://grafana.example.internal/sub/", {"r": "fairness"})
    url = links.url("r", {"model": "support-router", "version": "v 8", "attribute": "age_band", "slice": "*", "x": "y"})
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("grafana.example.internal", "/sub/d/driftwatch-fairness")
    assert parse_qs(parts.query) == {
        "var-model": ["support-router"],
        "var-version": ["v 8"],
        "var-attribute": ["age_band"],
    }
    assert links.url("unknown", {}) == "https://grafana.example.internal/sub/d/driftwatch-overview"


def _record() -> AlertRecord:
    """The firing record the notifier's golden webhook test feeds (tests/unit/alerts/test_notifier.py)."""
    lab = {
        "alertname": "complaint_rate_high",
        "model": "support-router",
        "version": "v8",
        "severity": "critical",
        "attribute": "region",
        "slice": "EU",
    }
    return AlertTransition(
        rule="complaint_rate_high",
        state="firing",
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
        event_time=T0,
        active_since=T0,
        severity="critical",
        actions=("rollback_model",),
        evidence={
            "window_seconds": 300.0,
            "contributors": [{"attribute": "region", "slice": "EU", "value": 0.14, "n": 360}],
        },
    ).to_record()


def _notifier(dashboards: DashboardLinks | None) -> Notifier:
    return Notifier(
        NotifyConfig.model_validate(
            {
                "receivers": [{"name": "oncall", "url": "https://hooks.example.internal/dw"}],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "15m",
                "resend_interval": "1m",
                "external_url": "https://driftwatch.example.internal",
                "report_url": "https://driftwatch.example.internal/reports/{model}/{version}?rule={rule}&slice={value}",
            }
        ),
        rng=random.Random(7),
        dashboards=dashboards,
    )


def test_webhook_carries_dashboard_url() -> None:
    """With grafana.url the webhook equals the golden payload plus a dashboard_url annotation; without, the golden."""
    golden = json.loads(GOLDEN.read_text())
    plain = _notifier(None)
    plain.update(_record(), T0)
    [n] = plain.due(T0 + 30)
    assert json.loads(n.body) == golden

    links = DashboardLinks.from_config(_config(grafana={"url": "https://grafana.example.internal"}))
    linked = _notifier(links)
    linked.update(_record(), T0)
    [n] = linked.due(T0 + 30)
    body = json.loads(n.body)
    url = (
        "https://grafana.example.internal/d/driftwatch-overview"
        "?var-model=support-router&var-version=v8&var-attribute=region&var-slice=EU"
    )
    assert body["alerts"][0]["annotations"]["dashboard_url"] == url
    assert body["commonAnnotations"]["dashboard_url"] == url
    for doc in (body, golden):
        for alert in doc["alerts"]:
            alert["annotations"].pop("dashboard_url", None)
        doc["commonAnnotations"].pop("dashboard_url", None)
    assert body == golden
