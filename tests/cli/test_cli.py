"""The driftwatch command line, run as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftwatch.cli import app

runner = CliRunner()


def _env(key: bytes) -> dict[str, str]:
    return {**os.environ, "DRIFTWATCH_PSEUDONYM_KEY": key.decode()}


@pytest.fixture
def bias_file(tmp_path: Path) -> Path:
    """A small simulated file with an injected fairness problem."""
    out = tmp_path / "bias.jsonl"
    res = runner.invoke(app, ["simulate", "--scenario", "bias", "--events", "60000", "--seed", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_simulate_writes_events_and_truth(bias_file: Path) -> None:
    """simulate writes the event file and FILE.truth.json naming the expected rule."""
    truth = json.loads(Path(f"{bias_file}.truth.json").read_text())
    assert truth["injections"][0]["expected_rule"] == "selection_rate_disparity"
    assert len(bias_file.read_bytes().splitlines()) == 60000


def test_replay_json_lines(bias_file: Path, example_config: Path, pseudonym_key: bytes) -> None:
    """replay --json prints alert transitions, then final metrics, then a summary, one JSON object per line."""
    proc = subprocess.run(
        [sys.executable, "-m", "driftwatch.cli", "replay", str(bias_file), "--config", str(example_config), "--json"],
        capture_output=True,
        env=_env(pseudonym_key),
        check=True,
        timeout=120,
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    alerts = [x for x in lines if x["type"] == "alert"]
    metrics = [x for x in lines if x["type"] == "metric"]
    assert lines[-1]["type"] == "summary"
    assert lines[-1]["rejected"] == {}
    firing = [a for a in alerts if a["state"] == "firing" and a["rule"] == "selection_rate_disparity"]
    assert firing
    assert set(firing[0]) >= {"rule", "state", "labels", "value", "event_time", "n", "interval", "evidence"}
    assert firing[0]["event_time"].endswith("Z")
    sel = [m for m in metrics if m["name"] == "selection_rate" and m["labels"]["attribute"] == "*"]
    assert {m["labels"]["window"] for m in sel} == {"since_start", "300s", "3600s"}
    assert all(0 <= m["value"] <= 1 for m in sel if m["value"] is not None)
    # Sensitive values appear raw only where the config lists them in display_values (every band in the example).
    age = {
        m["labels"]["slice"] for m in metrics if m["labels"].get("attribute") == "age_band" and "slice" in m["labels"]
    }
    assert age
    assert age <= {"18-24", "25-34", "35-49", "50-64", "65+", "__other__"}
    assert b"h:" not in proc.stdout
    assert {a["evidence"].get("low_group") for a in firing} == {"65+"}


def test_replay_stdin_and_table(bias_file: Path, example_config: Path, pseudonym_key: bytes) -> None:
    """replay - reads stdin and prints the per-slice table with display names the operator allowed."""
    proc = subprocess.run(
        [sys.executable, "-m", "driftwatch.cli", "replay", "-", "--config", str(example_config)],
        input=bias_file.read_bytes(),
        capture_output=True,
        env=_env(pseudonym_key),
        check=True,
        timeout=120,
    )
    out = proc.stdout.decode()
    assert "firing" in out
    assert "selection_rate_disparity" in out
    assert "lowest group=65+" in out  # 65+ is in display_values
    assert "Per-slice metrics" in out


def test_replay_counts_bad_lines(tmp_path: Path, example_config: Path, pseudonym_key: bytes) -> None:
    """Malformed lines are counted by reason and never stop a replay."""
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b'{"type": "prediction"\n[1,2]\n{"type":"interaction","schema_version":2}\n\n')
    res = runner.invoke(app, ["replay", str(f), "--config", str(example_config), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["rejected"] == {"invalid_json": 1, "not_an_object": 1, "unsupported_schema_version": 1}


def test_replay_reports_interactions_still_waiting_for_their_prediction(
    tmp_path: Path, example_config: Path, pseudonym_key: bytes
) -> None:
    """Interactions whose prediction is not in the file are neither joined nor lost from the account: those whose
    grace ran out are join misses, the rest (the last ``join.grace`` of the file) are reported as waiting."""
    start = 1_795_000_000_000
    events = [
        {
            "type": "interaction",
            "schema_version": 1,
            "event_id": f"i{k}",
            "ts": start + k * 10_000,
            "request_id": f"r{k}",
            "kind": "complaint",
        }
        for k in range(200)
    ]
    f = tmp_path / "interactions-only.jsonl"
    f.write_text("".join(json.dumps(e) + "\n" for e in events))
    res = runner.invoke(app, ["replay", str(f), "--config", str(example_config), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["join_hits"] == 0
    assert summary["join_waiting"] > 0
    assert summary["join_misses"] > 0
    assert summary["join_misses"] + summary["join_waiting"] == 200
    table = runner.invoke(app, ["replay", str(f), "--config", str(example_config)])
    assert f"join_waiting={summary['join_waiting']} " in table.stdout.replace("\n", "")


def test_replay_names_rejected_lines_and_writes_them(
    tmp_path: Path, example_config: Path, pseudonym_key: bytes
) -> None:
    """Replay says which lines were rejected, with reason and field path but never the value, and --rejects keeps all."""
    secret = "555-0100-private"
    good = '{"type":"interaction","schema_version":1,"event_id":"e","ts":1795000000000,"request_id":"r","kind":"complaint"}'
    f = tmp_path / "mixed.jsonl"
    f.write_text(
        "\n".join(
            [
                good,
                "",
                '{"type": "prediction"',
                good.replace('"kind":"complaint"', f'"kind":"{secret}"'),
                '{"a":' * 1000 + "1" + "}" * 1000,
            ]
        )
        + "\n"
    )
    out = tmp_path / "rejects.jsonl"
    res = runner.invoke(app, ["replay", str(f), "-c", str(example_config), "--json", "--rejects", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {"line": 3, "reason": "invalid_json", "field": None},
        {"line": 4, "reason": "invalid_field", "field": "kind"},
        {"line": 5, "reason": "too_deep", "field": None},
    ]
    assert "rejected 3 events: line 3 (invalid_json), line 4 (invalid_field at kind)" in res.stderr
    assert secret not in res.stderr
    assert secret not in out.read_text()


def test_replay_rejects_event_times_that_would_hijack_the_clock(
    bias_file: Path, tmp_path: Path, example_config: Path, pseudonym_key: bytes
) -> None:
    """A year-9999, a 1970 and a +2 h event (two hours ahead of its neighbours) mid-stream are rejected by reason;
    every alert and metric equals the clean replay."""
    lines = bias_file.read_bytes().splitlines()
    first = json.loads(lines[0])
    middle = len(lines) // 2
    neighbour = json.loads(lines[middle])
    ts = neighbour["ts"]
    ts_ms = ts if isinstance(ts, int) else round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
    ahead_ms = ts_ms + 7_200_000
    bad = [
        json.dumps({**first, "event_id": "future", "ts": "9999-12-31T23:59:59Z"}).encode(),
        json.dumps({**first, "event_id": "past", "ts": 0}).encode(),
        json.dumps({**first, "event_id": "ahead", "ts": ahead_ms}).encode(),
    ]
    dirty = tmp_path / "dirty.jsonl"
    dirty.write_bytes(b"\n".join([*lines[:middle], *bad, *lines[middle:]]) + b"\n")
    runs = {}
    stderr = ""
    for name, path in (("clean", bias_file), ("dirty", dirty)):
        # A subprocess with a deadline: unbounded event time used to make this replay run for CPU-hours.
        cmd = [sys.executable, "-m", "driftwatch", "replay", str(path), "-c", str(example_config), "--json"]
        res = subprocess.run([*cmd, "--batch", "5000"], capture_output=True, env=_env(pseudonym_key), timeout=180)
        assert res.returncode == 0, res.stderr.decode()
        runs[name] = [json.loads(line) for line in res.stdout.splitlines()]
        stderr = res.stderr.decode()
    clean, dirty_out = runs["clean"], runs["dirty"]
    assert [r for r in dirty_out if r["type"] != "summary"] == [r for r in clean if r["type"] != "summary"]
    assert any(r["type"] == "alert" and r["state"] == "firing" for r in clean)
    assert dirty_out[-1]["rejected"] == {"timestamp_out_of_range": 3}
    assert f"line {middle + 1} (timestamp_out_of_range at ts)" in stderr


def test_replay_missing_key_is_a_startup_error(
    tmp_path: Path, example_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the pseudonymisation key, replay refuses to start and says how to fix it."""
    monkeypatch.delenv("DRIFTWATCH_PSEUDONYM_KEY", raising=False)
    f = tmp_path / "e.jsonl"
    f.write_text("")
    res = runner.invoke(app, ["replay", str(f), "--config", str(example_config)])
    assert res.exit_code == 2
    assert "DRIFTWATCH_PSEUDONYM_KEY" in res.output


def test_replay_missing_file(example_config: Path, pseudonym_key: bytes) -> None:
    """A missing input file exits 1 with the path in the message."""
    res = runner.invoke(app, ["replay", "/nonexistent/e.jsonl", "--config", str(example_config)])
    assert res.exit_code == 1
    assert "/nonexistent/e.jsonl" in res.output


def test_replay_reads_gzip_and_a_byte_order_mark_as_the_plain_file(
    bias_file: Path, tmp_path: Path, example_config: Path, pseudonym_key: bytes
) -> None:
    """A gzip-compressed file (told by its first bytes, whatever its name) and a file that starts with a UTF-8 byte
    order mark replay exactly as the plain file; a truncated compressed file exits 1 and says so."""
    import gzip

    data = bias_file.read_bytes()
    packed = tmp_path / "events.data"  # no .gz: the content decides
    packed.write_bytes(gzip.compress(data))
    marked = tmp_path / "bom.jsonl"
    marked.write_bytes(b"\xef\xbb\xbf" + data)

    def replay(path: Path) -> list[str]:
        res = runner.invoke(app, ["replay", str(path), "--config", str(example_config), "--json", "--no-progress"])
        assert res.exit_code == 0, res.output
        return res.stdout.splitlines()

    plain = replay(bias_file)
    assert json.loads(plain[-1])["rejected"] == {}
    assert replay(packed) == plain
    assert replay(marked) == plain

    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    res = runner.invoke(app, ["replay", str(truncated), "--config", str(example_config), "--no-progress"])
    assert res.exit_code == 1
    assert "cut.jsonl.gz: the compressed file ends early" in res.output


def test_check_config_ok(example_config: Path) -> None:
    """check-config accepts the example config (secrets skipped for CI)."""
    res = runner.invoke(app, ["check-config", str(example_config), "--skip-secrets"])
    assert res.exit_code == 0, res.output
    assert "ok (2 models, 11 rules)" in res.output


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    """check-config names the file and key path of every problem at once, and exits 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
attributes: {region: {}}
protected: [age_band]
models:
  m: {favorable: [approve], reference: {learn_events: 500}}
rules:
  - {name: r1, metric: complaint_rate, threshold: 0.1, window: 7m}
  - {name: r1, metric: nonsense, threshold: 1}
"""
    )
    res = runner.invoke(app, ["check-config", str(bad)])
    assert res.exit_code == 2
    out = res.output
    assert str(bad) in out
    assert "protected[0]" in out
    assert "rules[0] (r1).window" in out
    assert "duplicate rule name" in out
    assert "unknown metric 'nonsense'" in out


def test_check_config_unknown_key(tmp_path: Path) -> None:
    """An unknown key is an error with its key path (typos are never silently ignored)."""
    bad = tmp_path / "typo.yaml"
    bad.write_text("attributes: {region: {max_value: 3}}\nmodels: {}\n")
    res = runner.invoke(app, ["check-config", str(bad)])
    assert res.exit_code == 2
    assert "attributes.region.max_value" in res.output


def test_check_config_catches_missing_and_foreign_profiles(tmp_path: Path) -> None:
    """A profile file that is missing, or was built for another model, fails check-config naming key, file and fix."""
    csv = tmp_path / "ref.csv"
    csv.write_text("x,score,prediction\n" + "".join(f"{i},{(i % 10) / 10},approve\n" for i in range(200)))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        """
attributes: {region: {}}
models:
  a: {favorable: [approve], features: {x: {kind: numeric}}, reference: {profile: a.json}}
  b: {favorable: [approve], features: {x: {kind: numeric}}, reference: {profile: missing.json}}
"""
    )
    built = runner.invoke(
        app, ["baseline", "build", str(csv), "--model", "b", "-c", str(cfg), "-o", str(tmp_path / "a.json")]
    )
    assert built.exit_code == 0, built.output
    res = runner.invoke(app, ["check-config", str(cfg), "--skip-secrets"])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "models.a.reference.profile:" in out
    assert "built for model 'b', not 'a'" in out
    assert "driftwatch baseline build --model a" in out
    assert "models.b.reference.profile:" in out
    assert "missing.json" in out


def test_check_config_catches_bad_action_templates(tmp_path: Path) -> None:
    """An action body naming a field no alert has fails check-config, not the first firing in production."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        """
attributes: {region: {}}
models:
  m: {favorable: [approve], reference: {learn_events: 1000}}
alerting:
  actions:
    page: {kind: http, url: "https://hooks.example.test/x", body: {text: "{labels.model} {no_such_field}"}}
"""
    )
    res = runner.invoke(app, ["check-config", str(cfg), "--skip-secrets"])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "alerting.actions.page.body" in out
    assert "no_such_field" in out


def test_baseline_build_from_csv(tmp_path: Path, example_config: Path) -> None:
    """baseline build writes a profile with quantile bins for every feature, score and prediction."""
    csv = tmp_path / "ref.csv"
    rows = ["message_length,sentiment,account_age_days,topic,score,prediction"]
    rows += [
        f"{100 + i},{(i % 20) / 10 - 1},{i * 3},{['billing', 'shipping'][i % 2]},{(i % 100) / 100},{'human' if i % 3 == 0 else 'ai'}"
        for i in range(1000)
    ]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "p.json"
    res = runner.invoke(
        app,
        ["baseline", "build", str(csv), "--model", "support-router", "--config", str(example_config), "-o", str(out)],
    )
    assert res.exit_code == 0, res.output
    prof = json.loads(out.read_text())
    dists = prof["distributions"]
    assert set(dists) == {"message_length", "sentiment", "account_age_days", "topic", "score", "prediction"}
    assert len(dists["message_length"]["edges"]) == 9
    assert abs(sum(dists["message_length"]["proportions"]) - 1) < 1e-9
    assert dists["topic"]["categories"] == ["billing", "shipping"]
    assert abs(prof["selection_rate"] - 334 / 1000) < 1e-9


def test_baseline_build_unknown_model(tmp_path: Path, example_config: Path) -> None:
    """Naming a model the config does not know is a usage error that lists the configured ones."""
    res = runner.invoke(app, ["baseline", "build", "x.csv", "--model", "nope", "--config", str(example_config)])
    assert res.exit_code == 2
    assert "support-router" in res.output


def test_schema_files_are_current(tmp_path: Path) -> None:
    """The JSON Schema files shipped in schemas/ equal what the code generates."""
    res = runner.invoke(app, ["schema", "--out-dir", str(tmp_path)])
    assert res.exit_code == 0
    shipped = Path(__file__).resolve().parents[2] / "schemas"
    for name in ("prediction", "interaction"):
        assert json.loads((tmp_path / f"{name}.schema.json").read_text()) == json.loads(
            (shipped / f"{name}.schema.json").read_text()
        )


def test_help_lists_commands() -> None:
    """--help names every command with a one-line purpose."""
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("replay", "check-config", "simulate", "baseline", "schema"):
        assert cmd in res.output
