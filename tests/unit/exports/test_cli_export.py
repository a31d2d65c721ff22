"""`driftwatch export ...` writes the generated files where it is told, options also from DRIFTWATCH_ env vars."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from driftwatch.cli import app

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = str(ROOT / "config" / "driftwatch.example.yaml")


def test_export_grafana_writes_dashboards_and_provisioning(tmp_path: Path) -> None:
    """export grafana writes the four dashboards and both provisioning files, equal to the committed ones."""
    result = CliRunner().invoke(app, ["export", "grafana", "-c", EXAMPLE, "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "dashboards/drift.json",
        "dashboards/fairness.json",
        "dashboards/health.json",
        "dashboards/overview.json",
        "provisioning/dashboards/driftwatch.yaml",
        "provisioning/datasources/prometheus.yaml",
    ]
    for rel in written:
        assert (tmp_path / rel).read_text() == (ROOT / "grafana" / rel).read_text()


def test_export_options_from_environment(tmp_path: Path) -> None:
    """DRIFTWATCH_CONFIG, DRIFTWATCH_RULES_OUT and DRIFTWATCH_RULES_KUBERNETES stand in for the options."""
    out = tmp_path / "rule.yaml"
    env = {"DRIFTWATCH_CONFIG": EXAMPLE, "DRIFTWATCH_RULES_OUT": str(out), "DRIFTWATCH_RULES_KUBERNETES": "1"}
    result = CliRunner().invoke(app, ["export", "prometheus-rules"], env=env)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text())["kind"] == "PrometheusRule"


@pytest.mark.parametrize(
    ("command", "committed"),
    [
        (["prometheus-rules"], "deploy/prometheus/driftwatch-rules.yaml"),
        (["prometheus-rules", "--kubernetes"], "deploy/overlays/consumer-group/prometheusrule.yaml"),
        (["alertmanager"], "deploy/alertmanager/driftwatch-route.yaml"),
    ],
)
def test_export_writes_the_committed_file(tmp_path: Path, command: list[str], committed: str) -> None:
    """Each rule and route export of the example config writes exactly the committed file."""
    out = tmp_path / "out.yaml"
    result = CliRunner().invoke(app, ["export", *command, "-c", EXAMPLE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == (ROOT / committed).read_text()


def test_export_rejects_a_bad_config(tmp_path: Path) -> None:
    """An invalid config exits 2 with the problem, writing nothing."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {}\n")
    result = CliRunner().invoke(app, ["export", "alertmanager", "-c", str(bad), "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 2
    assert not (tmp_path / "x.yaml").exists()
