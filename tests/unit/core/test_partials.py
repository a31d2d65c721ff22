"""Partial summaries merge across processes: ingest split over workers equals ingest in one."""

from __future__ import annotations

import zlib
from pathlib import Path

import msgspec
import numpy as np
import pytest

from driftwatch.config import load_config
from driftwatch.core import summary as S
from driftwatch.core.evaluate import Evaluator
from driftwatch.core.ingest import Ingestor
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import Profile, build_profile, prediction_columns
from driftwatch.simulate import generate

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "driftwatch.example.yaml"


def _events(scenario: str, n: int, seed: int) -> list[dict[str, object]]:
    return list(generate(scenario, events=n, seed=seed)[0])


def _profiles(events: list[dict[str, object]]) -> dict[str, Profile]:
    cfg = load_config(EXAMPLE)
    out = {}
    for mid, mc in cfg.models.items():
        cols = prediction_columns(events, mid, limit=3000)
        out[mid] = build_profile(mid, mc, cols)
    return out


def _rows(rows: object) -> list[tuple[object, ...]]:
    return sorted((r.name, tuple(sorted(r.labels.items())), r.value, r.n, r.status) for r in rows)  # type: ignore[attr-defined]


def test_partial_merge_is_the_summary_of_both() -> None:
    """Merging two partials with different slice orders sums counts per slice key."""
    a = S.Partial("m", "v", 3, (("*", "*"), ("region", "EU")), np.array([[2, 1], [1, 1]], np.int64))
    b = S.Partial(
        "m", "v", 3, (("*", "*"), ("region", "NA"), ("region", "EU")), np.array([[3, 0], [2, 0], [1, 0]], np.int64)
    )
    merged = a.merge(b)
    assert merged.as_dict() == {("*", "*"): [5, 1], ("region", "EU"): [2, 1], ("region", "NA"): [2, 0]}
    assert b.merge(a).as_dict() == merged.as_dict()


def test_partials_of_different_ticks_do_not_merge() -> None:
    """Merging partials of different ticks is refused rather than silently mixing time."""
    a = S.Partial("m", "v", 3, (("*", "*"),), np.ones((1, 2), np.int64))
    with pytest.raises(ValueError):
        a.merge(S.Partial("m", "v", 4, (("*", "*"),), np.ones((1, 2), np.int64)))


@pytest.mark.parametrize("scenario", ["bias", "complaint-spike"])
def test_two_ingestors_equal_one_pipeline(scenario: str, pseudonym_key: bytes) -> None:
    """Events split by request id over two ingestors, merged by one evaluator, give exactly the single-process metrics and alerts."""
    cfg = load_config(EXAMPLE)
    events = _events(scenario, 40_000, seed=4)
    profiles = _profiles(events)
    enc = msgspec.json.Encoder()
    lines = [(enc.encode(e), str(e["request_id"])) for e in events]

    single = Pipeline(cfg, pseudonym_key, profiles)
    for i in range(0, len(lines), 2_000):
        single.process([raw for raw, _ in lines[i : i + 2_000]])
    single.flush()

    counters_workers = [Ingestor(cfg, pseudonym_key, profiles) for _ in range(2)]
    ev = Evaluator(cfg, counters_workers[0].layouts, counters_workers[0].limits, counters_workers[0].coders)
    for i in range(0, len(lines), 2_000):
        chunk = lines[i : i + 2_000]
        for w, ing in enumerate(counters_workers):
            # Partitioned by request id, as Kafka does: a request's events meet on one worker.
            mine = [raw for raw, rid in chunk if zlib.crc32(rid.encode()) % 2 == w]
            ev.apply(ing.process(mine).partials)
        ev.advance(min(ing.watermark for ing in counters_workers))
    ev.flush()

    assert [(t.rule, t.state, t.event_time) for t in ev.transitions] == [
        (t.rule, t.state, t.event_time) for t in single.transitions
    ]
    assert any(t.state == "firing" for t in single.transitions)
    for window in (0.0, 300.0):
        assert _rows(ev.metric_rows(window)) == _rows(single.metric_rows(window))


@pytest.mark.parametrize("seed", [1, 2])
def test_kept_rows_of_other_slice_orders_change_nothing(
    seed: int, pseudonym_key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An evaluator that keeps the rows it found for other ingest processes' slice orders ends exactly as one that
    looks every key up again, also when rows go to new values (a full dimension: few values allowed, three
    ingest processes admitting them in different orders)."""
    from driftwatch.core import evaluate

    base = load_config(EXAMPLE)
    cfg = base.model_copy(
        update={"attributes": {n: ac.model_copy(update={"max_values": 2}) for n, ac in base.attributes.items()}}
    )
    events = _events("bias", 12_000, seed=seed)
    enc = msgspec.json.Encoder()
    lines = [(enc.encode(e), str(e["request_id"])) for e in events]
    workers = [Ingestor(cfg, pseudonym_key, _profiles(events)) for _ in range(3)]
    settings = (evaluate._REMAPS, 0)  # 0: nothing kept, every key looked up for every partial
    runs = [Evaluator(cfg, workers[0].layouts, workers[0].limits, workers[0].coders) for _ in settings]
    for i in range(0, len(lines), 500):
        chunk = lines[i : i + 500]
        for w, ing in enumerate(workers):
            partials = ing.process([raw for raw, rid in chunk if zlib.crc32(rid.encode()) % 3 == w]).partials
            for remaps, ev in zip(settings, runs, strict=True):
                monkeypatch.setattr(evaluate, "_REMAPS", remaps)
                ev.apply(partials)
        for ev in runs:
            ev.advance(min(ing.watermark for ing in workers))
    kept, fresh = runs
    assert fresh.counters.slices_retired > 0  # rows did go to other values
    assert kept.counters.slices_retired == fresh.counters.slices_retired
    assert any(s.remaps for s in kept.streams.values())
    for key, s in kept.streams.items():
        assert s.space.keys == fresh.streams[key].space.keys
    for window in (0.0, 300.0):
        assert _rows(kept.metric_rows(window)) == _rows(fresh.metric_rows(window))
    assert [(t.rule, t.state, t.event_time) for t in kept.transitions] == [
        (t.rule, t.state, t.event_time) for t in fresh.transitions
    ]


def test_a_key_folded_for_want_of_a_free_row_is_asked_again(pseudonym_key: bytes) -> None:
    """A new value of a full dimension whose every row is taken by the partial itself goes to ``__other__`` for that
    partial only: the next partial of the same slice order that brings it gives it the least recent value's row, as
    looking every key up again does (the evaluator must not keep that answer)."""
    from driftwatch.core import evaluate

    cfg = load_config(EXAMPLE)
    events = _events("bias", 4_000, seed=1)
    ing = Ingestor(cfg, pseudonym_key, _profiles(events))
    dims = cfg.dimensions()
    limits = tuple(3 if d == "region" else 1_000 for d in dims)  # region: a, b and __other__
    model = next(iter(cfg.models))
    version = "v1"
    width = ing.layouts[model].width

    def partial(keys: list[tuple[str, str]], counted: list[int]) -> S.Partial:
        m = np.zeros((len(keys), width), np.int64)
        m[counted, S.N_PRED] = 1
        return S.Partial(model, version, 5, tuple(keys), m)

    whole = ("*", "*")
    first = [whole, ("region", "a"), ("region", "b"), ("region", "__other__")]
    other_order = [whole, ("region", "b"), ("region", "a"), ("region", "c")]
    spaces = []
    for remaps in (evaluate._REMAPS, 0):
        evaluator = Evaluator(cfg, ing.layouts, limits, ing.coders)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(evaluate, "_REMAPS", remaps)
            evaluator.apply([partial(first, [0, 1, 2, 3])])
            evaluator.apply([partial(other_order, [0, 1, 2, 3])])  # c: every region row is this partial's
            evaluator.apply([partial(list(other_order), [0, 3])])  # c again: now a row can go to it
        spaces.append(list(evaluator.streams[(model, version)].space.keys))
    kept, fresh = spaces
    assert ("region", "c") in fresh
    assert kept == fresh
