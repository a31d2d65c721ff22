"""``driftwatch replay`` prints exactly what it printed when the golden digests were recorded.

A refactor must not change a single byte of what users see. For each scenario
the test replays a seeded stream through the real command (``--json`` and the
table) and compares a digest per output family (the alert lines, each metric's
lines, the table) with ``golden/replay.json``. A family that is new (a metric
added on purpose) shows up as a key the golden file lacks: record it with

    DRIFTWATCH_REGENERATE_GOLDEN=1 pytest tests/scenarios/test_replay_golden.py

and review the golden file's diff: only the new keys may change.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from driftwatch.simulate import SCENARIOS, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "config" / "driftwatch.example.yaml"
GOLDEN = Path(__file__).with_name("golden") / "replay.json"
EVENTS = 30_000
SEED = 5
REGENERATE = os.environ.get("DRIFTWATCH_REGENERATE_GOLDEN") == "1"


def _replay(events: Path, *flags: str, key: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES", "TERM", "NO_COLOR", "FORCE_COLOR"}}
    env["DRIFTWATCH_PSEUDONYM_KEY"] = key
    cmd = [sys.executable, "-m", "driftwatch", "replay", str(events), "-c", str(EXAMPLE_CONFIG), "--no-progress"]
    done = subprocess.run([*cmd, *flags], capture_output=True, env=env, check=False, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def _digests(json_out: str, table_out: str) -> dict[str, list[object]]:
    families: dict[str, list[str]] = defaultdict(list)
    for line in json_out.splitlines():
        record = json.loads(line)
        name = record["type"] if record["type"] != "metric" else f"metric:{record['name']}"
        families[name].append(line)
    families["table"] = table_out.splitlines()
    return {
        name: [len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()]
        for name, lines in sorted(families.items())
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_replay_output_is_unchanged(scenario: str, tmp_path: Path, pseudonym_key: bytes) -> None:
    """Every output family of a scenario's replay has the recorded line count and digest."""
    events = tmp_path / "events.jsonl"
    write_jsonl(scenario, events, events=EVENTS, seed=SEED)
    key = pseudonym_key.decode()
    got = _digests(_replay(events, "--json", key=key), _replay(events, key=key))
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if REGENERATE:
        golden[scenario] = got
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    want = golden[scenario]
    changed = sorted(k for k in want if got.get(k) != want[k])
    new = sorted(set(got) - set(want))
    assert not changed, f"{scenario}: replay output changed in {changed}"
    assert not new, f"{scenario}: new output families {new}; record them if intended (see this module's docstring)"
    assert got["table"][0] > 10
    assert any(k.startswith("metric:") for k in got)
