"""Samples for reports: bounded, mergeable bottom-k samples of predictions, with nothing that identifies a person."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import msgspec
import numpy as np
import pytest

from driftwatch.config import Config, load_config
from driftwatch.core.evaluate import Evaluator
from driftwatch.core.ingest import Ingestor
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import REFERENCE_SAMPLE_ROWS, Profile, build_profile, prediction_columns
from driftwatch.core.sample import TickSample, bottom_k, merge_all, priorities
from driftwatch.core.slicing import OTHER
from driftwatch.daemon.wire import from_msg, to_msg
from driftwatch.reports.assemble import spec_for
from driftwatch.simulate import generate

EVENTS = 12_000
RAW_AGE_BANDS = ("18-24", "25-34", "35-49", "50-64", "65+")


def _config(example_config: Path, **reports: object) -> Config:
    cfg = load_config(example_config)
    return cfg.model_copy(update={"reports": cfg.reports.model_copy(update={"enabled": True, **reports})})


def _events(scenario: str = "bias", seed: int = 5, n: int = EVENTS) -> tuple[list[bytes], list[dict[str, object]]]:
    evs = list(generate(scenario, events=n, seed=seed)[0])
    enc = msgspec.json.Encoder()
    return [enc.encode(e) for e in evs], evs


def _run(cfg: Config, key: bytes, raws: list[bytes], batch: int) -> Pipeline:
    p = Pipeline(cfg, key)
    for i in range(0, len(raws), batch):
        p.process(raws[i : i + batch])
    return p


def test_bottom_k_is_the_k_smallest_in_order() -> None:
    """bottom_k picks the k smallest priorities in ascending order; merging samples equals sampling the union."""
    rng = np.random.default_rng(3)
    prio = rng.integers(0, 2**48, 1000, dtype=np.uint64)
    got = bottom_k(prio, 50)
    assert prio[got].tolist() == sorted(prio.tolist())[:50]
    a = TickSample(50, sorted(prio[:600].tolist())[:50], [(x,) for x in sorted(prio[:600].tolist())[:50]])
    b = TickSample(50, sorted(prio[600:].tolist())[:50], [(x,) for x in sorted(prio[600:].tolist())[:50]])
    whole = sorted(prio.tolist())[:50]
    assert a.merge(b).priority == whole
    assert merge_all([a, b, a], 50).priority == whole  # a re-delivered part counts once


def test_priorities_are_keyed_and_uniform() -> None:
    """The same id gets the same priority under one key and another under another key; priorities spread evenly."""
    ids = [f"req-{i}" for i in range(20_000)]
    p1, p2 = priorities(ids, b"k" * 32), priorities(ids, b"j" * 32)
    assert (p1 == priorities(ids, b"k" * 32)).all()
    assert (p1 != p2).mean() > 0.99
    hist = np.histogram(p1.astype(np.float64) / 2**48, bins=10, range=(0, 1))[0]
    assert hist.min() > 1_700
    assert hist.max() < 2_300


def test_samples_do_not_depend_on_batching(pseudonym_key: bytes, example_config: Path) -> None:
    """The same events in batches of 5,000 or 613 give the same sample of every tick of every stream."""
    cfg = _config(example_config)
    raws, _ = _events()
    a, b = _run(cfg, pseudonym_key, raws, 5_000), _run(cfg, pseudonym_key, raws, 613)
    assert a.evaluator.streams.keys() == b.evaluator.streams.keys()
    for key, s in a.evaluator.streams.items():
        assert s.samples, key
        assert s.samples == b.evaluator.streams[key].samples, key  # rows and what joined them
    joins = [j for s in a.evaluator.streams.values() for x in s.samples.values() for j in x.joined]
    assert "label" in {kind for _, kind, _ in joins}
    assert len({kind for _, kind, _ in joins}) >= 3
    assert all(v is not None for _, kind, v in joins if kind == "label")
    held = {p for s in a.evaluator.streams.values() for x in s.samples.values() for p in x.priority}
    assert {p for p, _, _ in joins} <= held  # a join is kept only with its row


def test_two_ingestors_and_the_wire_give_the_same_samples(pseudonym_key: bytes, example_config: Path) -> None:
    """Events split by request id over two ingestors, their partials through the wire format, merge into exactly the
    samples one process keeps (and a partial merged with itself keeps each row once)."""
    cfg = _config(example_config)
    raws, evs = _events()
    profiles = {mid: build_profile(mid, mc, prediction_columns(evs, mid, limit=3000)) for mid, mc in cfg.models.items()}
    single = Pipeline(cfg, pseudonym_key, profiles)
    workers = [Ingestor(cfg, pseudonym_key, profiles) for _ in range(2)]
    ev = Evaluator(cfg, workers[0].layouts, workers[0].limits, workers[0].coders)
    for i in range(0, len(raws), 2_000):
        single.process(raws[i : i + 2_000])
        for w, ing in enumerate(workers):
            mine = [r for r, e in zip(raws[i : i + 2_000], evs[i : i + 2_000], strict=True)
                    if zlib.crc32(str(e["request_id"]).encode()) % 2 == w]  # fmt: skip
            parts = [from_msg(to_msg(p)) for p in ing.process(mine).partials]
            ev.apply(parts + [p for p in parts if p.sample is not None][:3])  # a re-delivery changes nothing
        ev.advance(min(ing.watermark for ing in workers))
    for key, s in single.evaluator.streams.items():
        assert s.samples, key
        assert ev.streams[key].samples == s.samples, key


def test_samples_are_bounded_and_hold_no_ids_or_raw_sensitive_values(
    pseudonym_key: bytes, example_config: Path
) -> None:
    """At most k rows per tick, only ticks of the longest window, no request or event id, no raw age band."""
    cfg = _config(example_config, sample_per_tick=7)
    raws, evs = _events()
    p = _run(cfg, pseudonym_key, raws, 3_000)
    p.flush()
    longest = round(max(cfg.windows.windows) / cfg.windows.tick)
    ids = {str(e[k]) for e in evs for k in ("request_id", "event_id") if k in e}
    closed = p.evaluator.closed_before
    assert closed is not None
    age = list(cfg.attributes).index("age_band")
    for key, s in p.evaluator.streams.items():
        assert all(len(x) <= 7 for x in s.samples.values()), key
        assert min(s.samples) >= closed - longest, key
        for sample in s.samples.values():
            for row in sample.rows:
                assert not ids & {str(v) for v in row}
                token = row[len(row) - len(cfg.attributes) + age]
                assert token is None or token == OTHER or (str(token).startswith("h:") and token not in RAW_AGE_BANDS)


def test_reports_off_keeps_no_samples(pseudonym_key: bytes, example_config: Path) -> None:
    """Without reports enabled nothing is sampled (the hot path pays nothing)."""
    raws, _ = _events()
    p = _run(load_config(example_config), pseudonym_key, raws, 5_000)
    assert all(not s.samples for s in p.evaluator.streams.values())


def test_a_slice_spec_holds_only_that_slice(pseudonym_key: bytes, example_config: Path) -> None:
    """A report restricted to age_band=65+ samples only rows of that group (named as /metrics names it)."""
    cfg = _config(example_config)
    raws, _ = _events(n=30_000)
    p = _run(cfg, pseudonym_key, raws, 4_000)
    end = p.evaluator.closed_before * cfg.windows.tick
    spec = spec_for(
        p.evaluator, model="refund-approval", version="v3", window=300, end=end, attribute="age_band", value="65+"
    )
    assert spec.current.rows > 0
    assert set(spec.current.columns["age_band"]) == {"65+"}
    whole = spec_for(p.evaluator, model="refund-approval", version="v3", window=300, end=end)
    assert whole.current.rows > spec.current.rows
    assert set(whole.current.columns) >= {"amount", "score", "prediction", "age_band", "region"}
    assert set(whole.current.columns["label"]) - {None}  # labels of sampled predictions, once joined
    assert any(k and "resolved" in k for k in whole.current.columns["interactions"])
    assert spec.reference.rows == min(REFERENCE_SAMPLE_ROWS, cfg.models["refund-approval"].reference.learn_events or 0)
    assert set(spec.columns.numerical) | set(spec.columns.categorical) <= set(spec.reference.columns)
    assert {m.name for m in spec.metrics} >= {"selection_rate", "disparate_impact_ratio"}


def test_profiles_keep_a_reference_sample(example_config: Path) -> None:
    """baseline build keeps at most REFERENCE_SAMPLE_ROWS evenly spaced reference rows; a profile without one loads."""
    cfg = load_config(example_config)
    mc = cfg.models["support-router"]
    n = 5_000
    cols: dict[str, list[object]] = {name: [float(i) for i in range(n)] for name in mc.features}
    cols.update({"topic": ["billing", "shipping"] * (n // 2), "score": [i / n for i in range(n)]})
    cols["prediction"] = ["ai", "human"] * (n // 2)
    prof = build_profile("support-router", mc, cols)
    assert len(prof.sample["score"]) == REFERENCE_SAMPLE_ROWS
    assert prof.sample["score"][0] == 0.0
    assert prof.sample["score"][-1] == (n - 1) / n
    again = Profile.from_json(json.loads(json.dumps(prof.to_json())))
    assert again == prof
    old = prof.to_json()
    del old["sample"]
    assert Profile.from_json(old).sample == {}
    with pytest.raises(Exception, match="sample"):
        Profile.from_json({**prof.to_json(), "sample": {"score": 3}})
