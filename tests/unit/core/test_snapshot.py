"""Evaluator checkpoints: stop mid-stream, restore into a fresh evaluator, and nothing differs."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from driftwatch.config import load_config
from driftwatch.core.evaluate import Evaluator
from driftwatch.core.ingest import Ingestor
from driftwatch.core.profile import Profile, build_profile, prediction_columns
from driftwatch.core.snapshot import compress_state, decode_checkpoint, decode_state, encode_state
from driftwatch.simulate import generate

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "driftwatch.example.yaml"


def _profiles(events: list[dict[str, object]]) -> dict[str, Profile]:
    cfg = load_config(EXAMPLE)
    return {mid: build_profile(mid, mc, prediction_columns(events, mid, limit=3000)) for mid, mc in cfg.models.items()}


def _rows(rows: object) -> list[tuple[object, ...]]:
    return sorted((r.name, tuple(sorted(r.labels.items())), r.value, r.n, r.status) for r in rows)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("scenario", "compressed"), [("complaint-spike", False), ("feature-drift", True)])
def test_restored_evaluator_continues_exactly(scenario: str, compressed: bool, pseudonym_key: bytes) -> None:
    """An evaluator restored from a msgpack checkpoint mid-stream gives the same transitions and metrics as one never
    stopped, from a checkpoint as workers write it (compressed) or as earlier releases wrote it (plain msgpack)."""
    cfg = load_config(EXAMPLE)
    events = list(generate(scenario, events=40_000, seed=5)[0])
    profiles = _profiles(events)
    enc = msgspec.json.Encoder()
    raws = [enc.encode(e) for e in events]
    ing = Ingestor(cfg, pseudonym_key, profiles)
    batches = []
    for i in range(0, len(raws), 2_000):
        batches.append((ing.process(raws[i : i + 2_000]).partials, ing.watermark))

    def evaluator() -> Evaluator:
        return Evaluator(cfg, ing.layouts, ing.limits, ing.coders)

    whole = evaluator()
    first = evaluator()
    half = len(batches) // 2
    for k, (partials, wm) in enumerate(batches):
        whole.apply(partials)
        whole.advance(wm)
        if k < half:
            first.apply(partials)
            first.advance(wm)
    blob = encode_state(first.snapshot(cfg.models))
    if compressed:
        plain, blob = blob, compress_state(blob)
        assert len(blob) < len(plain) / 2
    second = evaluator()
    assert second.restore(decode_checkpoint(blob)) == []
    for partials, wm in batches[half:]:
        second.apply(partials)
        second.advance(wm)
    whole.flush()
    second.flush()

    transitions = [(t.rule, t.state, t.event_time, t.fingerprint) for t in whole.transitions]
    restored = [(t.rule, t.state, t.event_time, t.fingerprint) for t in first.transitions]
    restored += [(t.rule, t.state, t.event_time, t.fingerprint) for t in second.transitions]
    assert restored == transitions
    assert any(t[1] == "firing" for t in transitions)
    for window in (0.0, 300.0, 3600.0):
        assert _rows(second.metric_rows(window)) == _rows(whole.metric_rows(window))


def test_dropped_models_leave_no_state(pseudonym_key: bytes) -> None:
    """Dropping a model (its partition moved away) removes its streams, alerts and detectors, and keeps the others."""
    cfg = load_config(EXAMPLE)
    events = list(generate("complaint-spike", events=30_000, seed=6)[0])
    profiles = _profiles(events)
    enc = msgspec.json.Encoder()
    ing = Ingestor(cfg, pseudonym_key, profiles)
    ev = Evaluator(cfg, ing.layouts, ing.limits, ing.coders)
    ev.apply(ing.process([enc.encode(e) for e in events]).partials)
    ev.advance(ing.watermark)
    ev.flush()
    models = {m for m, _ in ev.streams}
    assert models == set(cfg.models)
    gone = sorted(models)[0]
    ev.drop([gone])
    assert {m for m, _ in ev.streams} == models - {gone}
    assert all(r.labels["model"] != gone for r in ev.metric_rows(0.0))
    assert ev.snapshot([gone]).streams == []


def test_open_alerts_are_shown_right_after_a_restore(pseudonym_key: bytes) -> None:
    """The API's open alerts come from the checkpoint until an alert has a transition of its own again: a worker
    restarted while an alert fires shows it at once, with the record it had (value, evidence, since)."""
    cfg = load_config(EXAMPLE)
    events = list(generate("bias", events=30_000, seed=5)[0])
    enc = msgspec.json.Encoder()
    ing = Ingestor(cfg, pseudonym_key, _profiles(events))
    first = Evaluator(cfg, ing.layouts, ing.limits, ing.coders)
    for i in range(0, len(events), 2_000):
        first.apply(ing.process([enc.encode(e) for e in events[i : i + 2_000]]).partials)
        first.advance(ing.watermark)
    want = sorted(first.open_records(), key=lambda r: r.fingerprint)
    assert any(r.state == "firing" for r in want)

    second = Evaluator(cfg, ing.layouts, ing.limits, ing.coders)
    second.restore(decode_state(encode_state(first.snapshot(cfg.models))))
    assert not second.transitions  # nothing evaluated here yet
    assert sorted(second.open_records(), key=lambda r: r.fingerprint) == want
    second.drop(cfg.models)  # its partition moved to another worker: nothing of it is shown here any more
    assert second.open_records() == []
