"""Tests for `driftwatch.exports.alertmanager`: the route matches driftwatch's rules and groups like its notifier."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from driftwatch.config import Config, load_config
from driftwatch.exports.alertmanager import route, route_yaml

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = load_config(ROOT / "config" / "driftwatch.example.yaml")
COMMITTED = ROOT / "deploy" / "alertmanager" / "driftwatch-route.yaml"


def test_committed_route_is_generated() -> None:
    """deploy/alertmanager/driftwatch-route.yaml equals a fresh export of the example config."""
    assert COMMITTED.read_text() == route_yaml(EXAMPLE), "run `driftwatch export alertmanager`"


def test_route_matches_exactly_the_rules() -> None:
    """The matcher's regex (anchored, as Alertmanager anchors it) accepts every rule name and nothing else."""
    [child] = route(EXAMPLE)["route"]["routes"]  # type: ignore[index]
    [matcher] = child["matchers"]
    m = re.fullmatch(r'alertname=~"(.*)"', matcher)
    assert m is not None
    names = {r.name for r in EXAMPLE.rules}
    assert all(re.fullmatch(m.group(1), n) for n in names)
    assert not re.fullmatch(m.group(1), "complaint_rate_high_other")
    assert not re.fullmatch(m.group(1), "Watchdog")


def test_grouping_and_timers_follow_notify() -> None:
    """group_by maps `rule` to alertname; the timers are notify's, in Alertmanager's duration syntax."""
    data = EXAMPLE.model_dump(mode="json", by_alias=True)
    data["alerting"]["notify"].update(group_by=["rule", "model", "version"], group_wait="45s", repeat_interval="90m")
    [child] = route(Config.model_validate(data))["route"]["routes"]  # type: ignore[index]
    assert child["group_by"] == ["alertname", "model", "version"]
    assert (child["group_wait"], child["group_interval"], child["repeat_interval"]) == ("45s", "5m", "90m")


def test_receiver_with_and_without_webhook() -> None:
    """Without a URL the receiver is a named stub; with one it gets a webhook_config that sends resolved alerts."""
    assert route(EXAMPLE)["receivers"] == [{"name": "driftwatch"}]
    doc = yaml.safe_load(route_yaml(EXAMPLE, receiver="ml-oncall", webhook_url="https://hooks.example.internal/am"))
    assert doc["receivers"] == [
        {"name": "ml-oncall", "webhook_configs": [{"url": "https://hooks.example.internal/am", "send_resolved": True}]}
    ]
    assert doc["route"]["routes"][0]["receiver"] == "ml-oncall"
