"""A worker whose alerting side cannot start says so in one line and exits non-zero, instead of running without it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from .conftest import unique_config

CASES = {
    "webhook secret env var unset": (
        {
            "notify": {
                "receivers": [
                    {"name": "oncall", "url": "https://hooks.example.test/x", "secret": {"env": "DW_UNSET_SECRET"}}
                ]
            }
        },
        "DW_UNSET_SECRET",
    ),
    "API on every interface without a token": (
        {"api": {"enabled": True, "host": "0.0.0.0", "port": 0, "token": None}},
        "alerting.api",
    ),
    "API token of 15 bytes": (
        {"api": {"enabled": True, "host": "127.0.0.1", "port": 0, "token": {"env": "DW_SHORT_TOKEN"}}},
        "alerting.api.token",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_alerting_that_cannot_start_stops_the_worker(
    case: str, tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str]
) -> None:
    """Each misconfiguration exits 2 with one `error:` line naming what to fix; no traceback."""
    patch, names = CASES[case]
    path = unique_config(tmp_path, example_config, f"start{abs(hash(case)) % 10_000}")
    data = yaml.safe_load(path.read_text())
    for section, value in patch.items():
        data["alerting"][section] = {**data["alerting"].get(section, {}), **value}
    path.write_text(yaml.safe_dump(data))
    env = {**worker_env, "DW_SHORT_TOKEN": "x" * 15}
    env.pop("DW_UNSET_SECRET", None)
    cmd = [sys.executable, "-m", "driftwatch", "run", "-c", str(path), "--bootstrap", kafka_bootstrap]
    done = subprocess.run([*cmd, "--metrics-port", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert names in errors[0]
    assert "Traceback" not in done.stderr
    assert "x" * 15 not in done.stderr  # the secret itself is never printed
    app_id = yaml.safe_load(path.read_text())["kafka"]["app_id"]
    assert not list(Path(tempfile.gettempdir()).glob(f"driftwatch-{app_id}-*")), "Faust's temp dir was left behind"
