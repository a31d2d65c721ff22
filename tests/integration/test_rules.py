"""The exported Prometheus rules and Alertmanager route pass Debian's promtool and amtool (real binaries)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from driftwatch.config import load_config
from driftwatch.exports.alertmanager import route
from driftwatch.exports.prometheus_rules import ALERTS, prometheus_rule

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "driftwatch-rules.yaml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "driftwatch-rules.test.yaml"
ROUTE = ROOT / "deploy" / "alertmanager" / "driftwatch-route.yaml"
RECORDS = 4
"""Recording rules in the health group (consumer lag, events, rejected events, dead letters)."""


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        pytest.fail(
            f"{name} not found: install Debian's `{package}` package (`make system-deps`); this check is required"
        )
    return found


def _run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def test_promtool_checks_the_rule_file() -> None:
    """`promtool check rules` accepts the committed rule file and counts every recording and alerting rule."""
    out = _run(_tool("promtool", "prometheus"), "check", "rules", str(RULES))
    assert f"SUCCESS: {RECORDS + len(ALERTS)} rules found" in out


def test_promtool_rule_unit_tests_pass() -> None:
    """`promtool test rules`: every health alert fires when it should and stays quiet when healthy."""
    out = _run(_tool("promtool", "prometheus"), "test", "rules", str(RULES_TEST))
    assert "SUCCESS" in out


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check bites: a rule file with a syntax error in an expression fails promtool (so the passes mean something)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULES.read_text().replace("> 60", "> > 60", 1))
    proc = subprocess.run(
        [_tool("promtool", "prometheus"), "check", "rules", str(bad)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0


def test_promtool_checks_the_kubernetes_groups(tmp_path: Path) -> None:
    """The PrometheusRule manifest's spec.groups are a valid rule file too."""
    spec = yaml.safe_load(prometheus_rule(load_config(ROOT / "config" / "driftwatch.example.yaml")))["spec"]
    path = tmp_path / "operator-groups.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = _run(_tool("promtool", "prometheus"), "check", "rules", str(path))
    assert f"SUCCESS: {RECORDS + len(ALERTS)} rules found" in out


def test_amtool_accepts_the_route_in_a_full_config(tmp_path: Path) -> None:
    """The committed route and receiver, merged into a minimal Alertmanager config, pass `amtool check-config`."""
    stanza = yaml.safe_load(ROUTE.read_text())
    config = {
        "route": {"receiver": "default", "group_by": ["alertname"], "routes": stanza["route"]["routes"]},
        "receivers": [{"name": "default"}, *stanza["receivers"]],
    }
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    out = _run(_tool("amtool", "prometheus-alertmanager"), "check-config", str(path))
    assert "SUCCESS" in out
    assert "2 receivers" in out


def test_amtool_accepts_a_webhook_receiver(tmp_path: Path) -> None:
    """With --webhook-url the receiver's webhook_config is valid Alertmanager configuration as well."""
    stanza = route(
        load_config(ROOT / "config" / "driftwatch.example.yaml"),
        receiver="ml-oncall",
        webhook_url="https://hooks.example.internal/am",
    )
    config = {
        "route": {"receiver": "ml-oncall", "routes": stanza["route"]["routes"]},  # type: ignore[index]
        "receivers": stanza["receivers"],
    }
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    assert "SUCCESS" in _run(_tool("amtool", "prometheus-alertmanager"), "check-config", str(path))
