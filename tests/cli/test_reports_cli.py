"""`driftwatch report` and `replay --reports`, run as users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftwatch.cli import app

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "driftwatch.example.yaml"

pytestmark = pytest.mark.xdist_group("reports")
runner = CliRunner()


def _run(args: list[str], key: bytes, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DRIFTWATCH_PSEUDONYM_KEY": key.decode()}
    return subprocess.run(
        [sys.executable, "-m", "driftwatch.cli", *args], capture_output=True, text=True, env=env, timeout=300, **kw
    )  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def cheap_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example config asking for more sampled rows than any slice has: reports are complete but for the drift
    table, so the report process never imports Evidently (the wiring is tested here; Evidently's part is tested in
    tests/scenarios/test_reports.py and tests/unit/reports, on one shared report process)."""
    text = EXAMPLE.read_text().replace("  min_rows: 30 ", "  min_rows: 1000000 ")
    assert "min_rows: 1000000" in text
    out = tmp_path_factory.mktemp("cfg") / "driftwatch.yaml"
    out.write_text(text)
    return out


@pytest.fixture(scope="module")
def spike_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated file where a new version draws complaints (two complaint rules fire)."""
    out = tmp_path_factory.mktemp("reports") / "spike.jsonl"
    res = runner.invoke(
        app, ["simulate", "--scenario", "complaint-spike", "--events", "30000", "--seed", "3", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    return out


def test_replay_writes_a_report_per_firing_alert(
    spike_file: Path, cheap_config: Path, pseudonym_key: bytes, tmp_path: Path
) -> None:
    """replay --reports DIR writes one HTML file per firing complaint alert; each --json firing line names its file."""
    out = tmp_path / "reports"
    proc = _run(["replay", str(spike_file), "-c", str(cheap_config), "--json", "--reports", str(out)], pseudonym_key)
    assert proc.returncode == 0, proc.stderr
    firing = [a for a in map(json.loads, proc.stdout.splitlines()) if a["type"] == "alert" and a["state"] == "firing"]
    reported = [a for a in firing if a["rule"].startswith("complaint_rate")]
    assert reported
    for a in reported:
        page = Path(a["report"])
        assert page.parent == out
        assert page.is_file()
        text = page.read_text(encoding="utf-8")
        assert a["rule"] in text
        assert 'id="fairness"' in text
        assert 'id="drift-too-few"' in text  # the cheap config: no Evidently here
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(a["report"]).name for a in reported)
    assert f"report {len(reported)}/{len(reported)}" in proc.stderr


def test_report_of_a_slice_at_a_time(
    spike_file: Path, cheap_config: Path, pseudonym_key: bytes, tmp_path: Path
) -> None:
    """report --model --version --attribute --slice --window --at writes the report of that window and slice."""
    target = tmp_path / "r.html"
    # The file starts at 2026-11-18T11:06:40Z (the generator's epoch); 10 minutes later the spike is on.
    args = ["report", str(spike_file), "-c", str(cheap_config), "--model", "support-router", "--version", "v8"]
    args += ["--attribute", "channel", "--slice", "chat", "--window", "5m", "--at", "2026-11-18T11:16:40Z"]
    proc = _run([*args, "-o", str(target)], pseudonym_key)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(target)
    page = target.read_text(encoding="utf-8")
    assert "support-router" in page
    assert "channel=chat" in page
    assert "2026-11-18T11:16:40" in page  # the window's end
    assert "window of 300 s to 2026-11-18T11:16:40.000Z" in proc.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "nope"], "--model 'nope' is not in"),
        (["--model", "support-router", "--attribute", "channel"], "--attribute and --slice go together"),
        (["--model", "support-router", "--attribute", "colour", "--slice", "x"], "is not a slice dimension"),
        (["--model", "support-router", "--at", "yesterday"], "is not an RFC 3339 time"),
        (["--model", "support-router", "--window", "5 parsecs"], "--window"),
        (["--model", "support-router", "--at", "2030-01-01T00:00:00Z"], "no window of support-router ends at"),
    ],
)
def test_report_says_what_to_fix(
    spike_file: Path, example_config: Path, pseudonym_key: bytes, extra: list[str], message: str
) -> None:
    """Bad options exit non-zero with one line naming the option (and never start the report process)."""
    res = runner.invoke(
        app,
        ["report", str(spike_file), "-c", str(example_config), *extra],
        env={"DRIFTWATCH_PSEUDONYM_KEY": pseudonym_key.decode()},
    )
    assert res.exit_code in (1, 2), res.output
    assert message in res.output
    assert "Traceback" not in res.output
