"""Performance estimated before labels arrive, through the streaming core: the pipeline's per-slice estimates equal
confidence-based performance estimation over the same rows (the estimator itself is tested against nannyml in
tests/unit/metrics/test_cbpe.py), a profile built from labelled reference events carries the calibration, and under
concept drift the estimate stays put while the realised label metrics and their rules catch the change."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import msgspec
import numpy as np
import pytest
from typer.testing import CliRunner

from driftwatch.alerts.engine import AlertTransition
from driftwatch.cli import app
from driftwatch.config import Config, load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import Profile, build_profile, prediction_columns
from driftwatch.core.slicing import OVERALL
from driftwatch.metrics.cbpe import bin_sums, estimate
from driftwatch.profiles import profile_problems
from driftwatch.simulate import generate

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "config" / "driftwatch.example.yaml"
KEY = b"test-only-pseudonym-key-0123456789"
MODEL = "refund-approval"  # the simulator labels refunds only


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(EXAMPLE)


@pytest.fixture(scope="module")
def profile(config: Config) -> Profile:
    """A refund-approval profile built from a labelled baseline stream (labels joined from its interactions)."""
    stream, _ = generate("baseline", events=20_000, seed=21)
    prof = build_profile(MODEL, config.models[MODEL], prediction_columns(list(stream), MODEL))
    assert prof.cbpe is not None
    return prof


def _replay(
    config: Config, profile: Profile, scenario: str, events: int, seed: int
) -> tuple[Pipeline, list[dict[str, object]], list[AlertTransition]]:
    stream, _ = generate(scenario, events=events, seed=seed)
    evs = list(stream)
    enc = msgspec.json.Encoder()
    p = Pipeline(config, KEY, profiles={MODEL: profile})
    lines = [enc.encode(e) for e in evs]
    transitions: list[AlertTransition] = []
    for i in range(0, len(lines), 5_000):
        transitions.extend(p.process(lines[i : i + 5_000])[1])
    transitions.extend(p.flush())
    return p, evs, transitions


def test_pipeline_estimates_equal_row_level_cbpe_on_the_same_rows(config: Config, profile: Profile) -> None:
    """For every version of refund-approval, overall and per language, the since-start estimates on /metrics' rows
    equal CBPE computed from the rows themselves with the profile's calibration and bins (calibrated sums are kept in
    millionths: 1e-6 relative)."""
    p, evs, _ = _replay(config, profile, "bias", 20_000, 5)
    assert profile.cbpe is not None
    favorable = set(config.models[MODEL].favorable)
    rows: dict[tuple[str, str], list[tuple[float, bool]]] = defaultdict(list)
    for e in evs:
        if e.get("type") == "prediction" and e["model_id"] == MODEL and e.get("score") is not None:
            decided = (float(e["score"]), e["prediction"] in favorable)
            rows[(e["model_version"], OVERALL)].append(decided)
            rows[(e["model_version"], e["attributes"]["language"])].append(decided)
    got = {
        (r.labels["version"], r.labels["slice"], r.name): r.value
        for r in p.metric_rows(0.0)
        if r.labels["model"] == MODEL
        and "slice" in r.labels
        and r.labels["attribute"] in (OVERALL, "language")
        and r.status == "ok"
    }
    checked = 0
    for (version, value), decided in rows.items():
        scores = np.array([s for s, _ in decided])
        est = estimate(
            *bin_sums(scores, np.array([d for _, d in decided]), profile.cbpe.calibration, profile.cbpe.edges)
        )
        for name in ("accuracy", "tpr", "fpr", "precision", "roc_auc"):
            key = (version, value, f"estimated_{name}")
            if key in got:
                assert got[key] == pytest.approx(getattr(est, name), rel=1e-6), key
                checked += 1
    assert checked >= 5 * 6  # overall and five languages of at least one version


def test_under_concept_drift_the_estimate_stays_and_the_label_rules_fire(config: Config, profile: Profile) -> None:
    """The label-shift scenario changes who deserves a refund in one language, not the scores or decisions: the
    estimated TPR of that language stays at the reference's (~0.9) while the realised TPR falls below 0.7, and the
    realised-label rules (tpr_drop, tpr_gap) fire for it. CBPE's documented blind spot, caught by the labels."""
    p, _, transitions = _replay(config, profile, "label-shift", 36_000, 2)
    window = {
        (r.labels["slice"], r.name): r
        for r in p.metric_rows(300.0)
        if r.labels["model"] == MODEL and r.labels["attribute"] == "language" and "slice" in r.labels
    }
    est, real = window[("ja", "estimated_tpr")], window[("ja", "tpr")]
    assert est.value is not None
    assert real.value is not None
    assert est.value == pytest.approx(0.9, abs=0.05)
    assert real.value < 0.7
    assert est.value - real.value > 0.2
    fired = {
        t.rule
        for t in transitions
        if t.state == "firing" and t.labels.get("model") == MODEL and t.rule in ("tpr_drop", "tpr_gap")
    }
    assert fired == {"tpr_drop", "tpr_gap"}


def test_no_calibration_no_estimates(config: Config) -> None:
    """A profile without labels has no calibration, and its model reports no estimate rows (never a NaN series)."""
    stream, _ = generate("bias", events=5_000, seed=1)
    evs = [e for e in stream if e.get("type") == "prediction"]  # predictions only: no labels
    prof = build_profile(MODEL, config.models[MODEL], prediction_columns(evs, MODEL))
    assert prof.cbpe is None
    p = Pipeline(config, KEY, profiles={MODEL: prof})
    p.process([msgspec.json.encode(e) for e in evs])
    p.flush()
    names = {r.name for r in p.metric_rows(0.0) if r.labels["model"] == MODEL}
    assert "selection_rate" in names
    assert not {n for n in names if n.startswith("estimated_")}


def test_profile_round_trips_its_calibration(profile: Profile) -> None:
    """The calibration and bins survive the profile's JSON."""
    again = Profile.from_json(json.loads(json.dumps(profile.to_json())))
    assert again.cbpe == profile.cbpe


def test_baseline_build_says_whether_it_calibrated(tmp_path: Path) -> None:
    """`baseline build` from recorded events joins their labels and says it fitted a calibration; from a CSV
    without a label column it says there is none and why."""
    stream, _ = generate("baseline", events=8_000, seed=3)
    events = tmp_path / "ref.jsonl"
    events.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in stream))
    out = tmp_path / "p.json"
    runner = CliRunner()
    res = runner.invoke(app, ["baseline", "build", str(events), "--model", MODEL, "-c", str(EXAMPLE), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "calibration from" in res.output
    assert json.loads(out.read_text())["cbpe"]["labelled"] >= 100
    csv = tmp_path / "ref.csv"
    header = "amount,prior_refunds,reason,account_age_days,score,prediction\n"
    body = "".join(f"{10 + i},{i % 3},damaged,{i},{i / 200},{'approve' if i > 100 else 'deny'}\n" for i in range(200))
    csv.write_text(header + body)
    res = runner.invoke(app, ["baseline", "build", str(csv), "--model", MODEL, "-c", str(EXAMPLE), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "no calibration" in " ".join(res.output.split())
    assert json.loads(out.read_text())["cbpe"] is None


def test_a_rule_on_an_estimate_fires_from_predictions_alone(config: Config, profile: Profile) -> None:
    """In the bias scenario one age band's deserving customers are refused: the decisions move, so the estimated
    TPR of that band falls from ~0.9 to ~0.6 from the predictions alone (the realised one to 0.35, once labels
    come), and a window rule on the estimate fires for that band after the injection, never before it."""
    rule = {
        "name": "estimated_tpr_low",
        "metric": "estimated_tpr",
        "model": MODEL,
        "attribute": "age_band",
        "window": "5m",
        "op": "<",
        "threshold": 0.7,
        "resolve_threshold": 0.8,
        "for": "30s",
        "min_samples": 100,
    }
    raw = config.model_dump(by_alias=True)
    cfg = Config.model_validate({**raw, "rules": [*raw["rules"], rule]})
    stream, truth = generate("bias", events=40_000, seed=6)
    at = truth.injections[0].at_ms / 1000
    p = Pipeline(cfg, KEY, profiles={MODEL: profile})
    lines = [msgspec.json.encode(e) for e in stream]
    transitions: list[AlertTransition] = []
    for i in range(0, len(lines), 5_000):
        transitions.extend(p.process(lines[i : i + 5_000])[1])
    fired = [t for t in transitions if t.rule == "estimated_tpr_low" and t.state == "firing"]
    assert fired
    assert all(t.labels["attribute"] == "age_band" and t.labels["model"] == MODEL for t in fired)
    assert 0 < fired[0].event_time - at <= 600
    assert fired[0].value < 0.7


def test_check_config_says_an_estimate_rule_needs_a_calibrated_profile(config: Config, tmp_path: Path) -> None:
    """A rule on an estimate for a model that learns its reference (no labels), or whose profile has no calibration,
    is a config problem naming the fix."""
    rule = {"name": "acc", "metric": "estimated_accuracy", "model": MODEL, "op": "<", "threshold": 0.8}
    raw = config.model_dump(by_alias=True)
    learnt = Config.model_validate({**raw, "rules": [rule]})
    [problem] = profile_problems(learnt)
    assert "needs a calibrated profile" in problem
    assert "baseline build" in problem
    stream, _ = generate("baseline", events=3_000, seed=2)
    plain = build_profile(
        MODEL, config.models[MODEL], prediction_columns([e for e in stream if e["type"] == "prediction"], MODEL)
    )
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(plain.to_json()))
    models = {**raw["models"], MODEL: {**raw["models"][MODEL], "reference": {"profile": str(path)}}}
    with_file = Config.model_validate({**raw, "models": models, "rules": [rule]})
    [problem] = profile_problems(with_file)
    assert "has none" in problem


def test_a_checkpoint_counted_under_another_profile_is_skipped_not_misread(config: Config, profile: Profile) -> None:
    """A checkpoint taken while a model had a profile without calibration has other columns than the calibrated
    profile it was rebuilt with: restoring it skips the model (named) instead of mixing the two layouts."""
    from driftwatch.core.snapshot import decode_state, encode_state

    stream, _ = generate("bias", events=3_000, seed=8)
    evs = list(stream)
    plain = build_profile(
        MODEL, config.models[MODEL], prediction_columns([e for e in evs if e["type"] == "prediction"], MODEL)
    )
    before = Pipeline(config, KEY, profiles={MODEL: plain})
    before.process([msgspec.json.encode(e) for e in evs])
    state = decode_state(encode_state(before.evaluator.snapshot([MODEL])))
    after = Pipeline(config, KEY, profiles={MODEL: profile})
    assert after.evaluator.restore(state) == [MODEL]  # type: ignore[arg-type]
    after.process([msgspec.json.encode(e) for e in evs[:100]])
