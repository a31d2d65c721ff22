"""Evaluator checkpoints: stop mid-stream, restore into a fresh evaluator, and nothing differs."""

from __future__ import annotations

import zlib
from pathlib import Path

import msgspec
import pytest

from driftwatch.config import load_config
from driftwatch.core.evaluate import Evaluator
from driftwatch.core.ingest import Ingestor
from driftwatch.core.profile import Profile, build_profile, prediction_columns
from driftwatch.core.snapshot import (
    ModelsState,
    StreamState,
    decode_checkpoint,
    decode_state,
    encode_checkpoint,
    encode_state,
)
from driftwatch.simulate import generate

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "driftwatch.example.yaml"


def _profiles(events: list[dict[str, object]]) -> dict[str, Profile]:
    cfg = load_config(EXAMPLE)
    return {mid: build_profile(mid, mc, prediction_columns(events, mid, limit=3000)) for mid, mc in cfg.models.items()}


def _fed(events: list[dict[str, object]], key: bytes) -> tuple[Ingestor, Evaluator]:
    """The example config's ingest and an evaluator fed ``events`` in batches of 2,000, time advanced after each."""
    cfg = load_config(EXAMPLE)
    enc = msgspec.json.Encoder()
    ing = Ingestor(cfg, key, _profiles(events))
    ev = Evaluator(cfg, ing.layouts, ing.limits, ing.coders)
    for i in range(0, len(events), 2_000):
        ev.apply(ing.process([enc.encode(e) for e in events[i : i + 2_000]]).partials)
        ev.advance(ing.watermark)
    return ing, ev


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
    if compressed:  # as a worker writes it
        models = set(cfg.models)
        shell, count = first.snapshot_shell(models), first.stream_count(models)
        blob, size = encode_checkpoint(shell, count, first.stream_states(models))
        assert len(blob) < size / 2
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


def test_a_checkpoint_encoded_stream_by_stream_is_the_whole_states_msgpack(pseudonym_key: bytes) -> None:
    """Workers encode and compress a checkpoint one stream at a time (the plain bytes never whole); decompressed,
    those bytes are exactly the msgpack of the whole snapshot, for all models and for each one alone."""
    cfg = load_config(EXAMPLE)
    _, ev = _fed(list(generate("bias", events=20_000, seed=7)[0]), pseudonym_key)
    assert ev.engine.active()  # open alerts and detectors go into the shell
    for models in [set(cfg.models), *({m} for m in cfg.models), set()]:
        blob, size = encode_checkpoint(ev.snapshot_shell(models), ev.stream_count(models), ev.stream_states(models))
        plain = encode_state(ev.snapshot(models))
        assert zlib.decompress(blob) == plain
        assert size == len(plain)
        assert decode_checkpoint(blob) == decode_state(plain)


def test_a_checkpoint_of_many_streams_has_msgpacks_longer_array_header() -> None:
    """16 streams or more need msgpack's array16 header (15 fit in the one-byte form)."""
    for count in (15, 16, 300):
        streams = [StreamState("m", f"v{i}", [], [], [], None) for i in range(count)]
        shell = ModelsState(3, [], [{"a": 1}], [])
        blob, size = encode_checkpoint(shell, count, iter(streams))
        whole = ModelsState(3, streams, [{"a": 1}], [])
        assert zlib.decompress(blob) == encode_state(whole)
        assert size == len(encode_state(whole))
    with pytest.raises(ValueError, match="2 streams given, 3 announced"):
        encode_checkpoint(ModelsState(3, [], [], []), 3, iter(streams[:2]))


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
    ing, first = _fed(list(generate("bias", events=30_000, seed=5)[0]), pseudonym_key)
    want = sorted(first.open_records(), key=lambda r: r.fingerprint)
    assert any(r.state == "firing" for r in want)

    second = Evaluator(cfg, ing.layouts, ing.limits, ing.coders)
    second.restore(decode_state(encode_state(first.snapshot(cfg.models))))
    assert not second.transitions  # nothing evaluated here yet
    assert sorted(second.open_records(), key=lambda r: r.fingerprint) == want
    second.drop(cfg.models)  # its partition moved to another worker: nothing of it is shown here any more
    assert second.open_records() == []
