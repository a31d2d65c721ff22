"""A worker folds the batches of several input partitions in one fold, yet each partition gets the partial
summaries that folding it alone would give: the evaluation stage applies or drops each partition's batch on its own."""

from __future__ import annotations

import dataclasses
import random
import zlib
from collections import Counter

import msgspec
import numpy as np
import pytest

from driftwatch.config import Config, load_config
from driftwatch.core import ingest
from driftwatch.core import summary as S
from driftwatch.core.ingest import Ingestor
from driftwatch.core.pipeline import Pipeline
from driftwatch.simulate import generate

from .test_partials import EXAMPLE, _profiles, _rows


def _config(reports: bool) -> Config:
    cfg = load_config(EXAMPLE)
    return cfg.model_copy(update={"reports": cfg.reports.model_copy(update={"enabled": reports, "sample_per_tick": 7})})


def _canon(partials: list[S.Partial]) -> tuple[dict[tuple[object, ...], int], list[tuple[object, ...]]]:
    """What partials count, by slice key and column (row numbers and how cells are split into partials are
    internal), and the samples they carry."""
    counts: Counter[tuple[object, ...]] = Counter()
    samples = []
    for p in partials:
        rows, cols = np.divmod(p.cells.index.astype(np.int64), p.cells.width)
        for r, c, v in zip(rows.tolist(), cols.tolist(), p.cells.values.tolist(), strict=True):
            counts[(p.model_id, p.version, p.tick, p.visible, p.keys[r], c)] += v
        if p.sample is not None:
            s = p.sample
            samples.append((p.model_id, p.version, p.tick, repr(s.priority), repr(s.rows), repr(s.joined)))
    return {k: v for k, v in counts.items() if v}, sorted(samples)


def _join_state(ing: Ingestor) -> dict[str, tuple[object, ...]]:
    """What each remembered request joins to: its stream, slices, time and outcome (cell and row numbers are
    internal: they follow the order values came in)."""
    low = (1 << ingest._CELL_SHIFT) - 1
    out: dict[str, tuple[object, ...]] = {}
    for rid, entry in ing._join.items():
        cell = entry >> ingest._CELL_SHIFT
        stream = ing._cell_stream[cell]
        keys = None if stream is None else [stream.space.keys[r] if r >= 0 else None for r in ing._cell_rows[cell]]
        where = None if stream is None else (stream.model_id, stream.version, tuple(keys or ()))
        out[rid] = (where, entry & low)
    return out


@pytest.mark.parametrize(
    ("scenario", "parts", "reports"), [("bias", 4, False), ("complaint-spike", 3, True), ("feature-drift", 5, True)]
)
def test_each_source_of_a_fold_gets_the_partials_of_folding_it_alone(
    scenario: str, parts: int, reports: bool, pseudonym_key: bytes
) -> None:
    """``Ingestor.process_sources`` gives each batch the partials that ``process`` of that batch alone gives (each
    judged by the clock read before the call): the same counts per slice and column, the same samples; and both end
    with the same counters, join state, metric rows and alert transitions. Events are shuffled a little across
    batches, so interactions also come before their prediction and wait for it, within a batch and across."""
    cfg = _config(reports)
    events = list(generate(scenario, events=24_000, seed=6)[0])
    rng = random.Random(3)
    shuffled = [
        e for _, e in sorted(((i + rng.uniform(0, 2_500), e) for i, e in enumerate(events)), key=lambda x: x[0])
    ]
    profiles = _profiles(events)
    enc = msgspec.json.Encoder()
    lines = [(enc.encode(e), str(e["request_id"])) for e in shuffled]
    sources = [f"in:{k}" for k in range(parts)]
    alone, together = Pipeline(cfg, pseudonym_key, profiles), Pipeline(cfg, pseudonym_key, profiles)
    for p in (alone, together):
        p.ingestor.set_sources(sources)
    waited = sampled = 0
    for i in range(0, len(lines), 1_500):
        chunk = lines[i : i + 1_500]
        batches = [[raw for raw, rid in chunk if zlib.crc32(rid.encode()) % parts == k] for k in range(parts)]
        clocks = [alone.ingestor.clock_of(s) for s in sources]
        assert [together.ingestor.clock_of(s) for s in sources] == clocks
        waited += len(together.ingestor._pending)
        each = [
            alone.ingestor.process(raws, s, live=True, clock=c).partials
            for raws, s, c in zip(batches, sources, clocks, strict=True)
        ]
        decoded, partials = together.ingestor.process_sources(
            [(raws, s, c, None) for raws, s, c in zip(batches, sources, clocks, strict=True)]
        )
        assert [len(d.predictions) + len(d.interactions) for d in decoded] == [len(b) for b in batches]
        assert len(partials) == parts
        for mine, theirs in zip(partials, each, strict=True):
            assert _canon(mine) == _canon(theirs)
            sampled += sum(p.sample is not None for p in mine)
        for p, got in ((alone, each), (together, partials)):
            p.evaluator.apply([x for ps in got for x in ps])
            p.evaluator.advance(p.ingestor.watermark)
    for p in (alone, together):
        p.flush()
    assert dataclasses.asdict(together.counters) == dataclasses.asdict(alone.counters)
    assert together.counters.join_hits > 0
    assert waited > 0  # interactions did wait for their prediction across batches
    assert (sampled > 0) == reports
    assert _join_state(together.ingestor) == _join_state(alone.ingestor)
    for window in (0.0, 300.0):
        assert _rows(together.metric_rows(window)) == _rows(alone.metric_rows(window))
    assert [(t.rule, t.state, t.event_time) for t in together.transitions] == [
        (t.rule, t.state, t.event_time) for t in alone.transitions
    ]
    assert together.transitions


def test_a_fold_of_one_source_is_the_fold_of_it(pseudonym_key: bytes) -> None:
    """One source through ``process_sources`` gives byte for byte what ``process`` gives (the replay's path)."""
    cfg = _config(True)
    events = list(generate("bias", events=6_000, seed=2)[0])
    profiles = _profiles(events)
    raws = [msgspec.json.encode(e) for e in events]
    a, b = Ingestor(cfg, pseudonym_key, profiles), Ingestor(cfg, pseudonym_key, profiles)
    for i in range(0, len(raws), 2_000):
        one = a.process(raws[i : i + 2_000], "in:0", live=True, clock=a.clock_of("in:0")).partials
        _, (two,) = b.process_sources([(raws[i : i + 2_000], "in:0", b.clock_of("in:0"), None)])
        assert [repr(p) for p in two] == [repr(p) for p in one]
        assert _canon(two) == _canon(one)


def test_a_fold_of_no_sources_does_nothing(pseudonym_key: bytes) -> None:
    """An ingest call whose messages were all seen before folds nothing (and must not fail)."""
    ing = Ingestor(load_config(EXAMPLE), pseudonym_key)
    assert ing.process_sources([]) == ([], [])
    assert ing.watermark == -np.inf
