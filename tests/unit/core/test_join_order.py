"""Joins are decided by event time alone: the order in which Kafka delivers predictions and interactions from their
two topics, and when waiting entries are forgotten, never change what joins (guarantee 3 in docs/guarantees.md).

This is what lets a worker that takes a partition over rebuild its join state in any order and end with exactly
the values of one never stopped.
"""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftwatch.config import load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import build_profile, prediction_columns
from driftwatch.simulate import generate

from .test_pipeline import T0, inter, make, pred

EXAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "config" / "driftwatch.example.yaml"
SOURCES = ("predictions:0", "interactions:0")
WINDOWS = {
    "windows": {"tick": "10s", "lateness": "30s", "windows": ["1m"]},
    "join": {"ttl": "1h", "grace": "60s", "max_entries": 1000},
}


@cache
def _stream() -> tuple[tuple[str, bytes], ...]:
    """A scenario's events in event order, each with the topic that holds it."""
    return tuple((SOURCES[e["type"] == "interaction"], msgspec.json.encode(e)) for e in _events())


@cache
def _events() -> tuple[dict[str, object], ...]:
    return tuple(generate("complaint-spike", events=6_000, seed=5)[0])


def _pipeline(key: bytes) -> Pipeline:
    """The example config, with references built from the stream (so every prediction counts from the start)."""
    cfg = load_config(EXAMPLE_CONFIG)
    events = list(_events())
    profiles = {m: build_profile(m, mc, prediction_columns(events, m, limit=2_000)) for m, mc in cfg.models.items()}
    return Pipeline(cfg, key, profiles)


def _run(seed: int | None, key: bytes) -> tuple[object, ...]:
    """Feed both topics to one pipeline: in event order (``seed`` None: chunks of 200 events, each chunk's
    predictions first), or as batches of random sizes from a randomly chosen topic each time, so interactions
    often come long before their predictions, or long after."""
    p = _pipeline(key)
    p.ingestor.set_sources(SOURCES)
    stream = _stream()
    if seed is None:
        for i in range(0, len(stream), 200):
            for src in SOURCES:
                p.process([raw for s, raw in stream[i : i + 200] if s == src], source=src)
    else:
        queues = [[raw for s, raw in stream if s == src] for src in SOURCES]
        rng = random.Random(seed)
        while any(queues):
            side = rng.choice([s for s in (0, 1) if queues[s]])
            n = rng.randint(1, 400)
            batch, queues[side] = queues[side][:n], queues[side][n:]
            p.process(batch, source=SOURCES[side])
    p.flush()
    since = [(r.name, sorted(r.labels.items()), r.value, r.n) for r in p.metric_rows(0.0)]
    c = p.counters
    return since, c.join_hits, c.duplicate_labels, c.predictions, c.interactions


@cache
def _in_order(key: bytes) -> tuple[object, ...]:
    return _run(None, key)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_delivery_order_of_the_two_topics_never_changes_the_joins(seed: int, pseudonym_key: bytes) -> None:
    """Any interleaving of the prediction and interaction topics gives the metrics of the in-order replay."""
    want = _in_order(pseudonym_key)
    assert want[1] > 1_000  # joins happened
    assert _run(seed, pseudonym_key) == want


def test_an_interaction_far_ahead_of_its_prediction_misses_it_whichever_comes_first() -> None:
    """An interaction stamped more than ``join.grace`` (60 s) before its prediction is a join miss, whether the
    prediction was already there or came later; within the grace it joins either way."""
    late_ok = {**WINDOWS, "windows": {"tick": "10s", "lateness": "5m", "windows": ["1m"]}}  # nothing here is late
    for first in ("prediction", "interaction"):
        p = make(late_ok)
        preds = [pred("near", T0 + 30_000), pred("far", T0 + 90_000)]
        inters = [inter("near", T0, "complaint"), inter("far", T0, "complaint")]
        for batch in [preds, inters] if first == "prediction" else [inters, preds]:
            p.process(batch)
        p.process([pred("clock", T0 + 3_600_000)])  # event time moves on: nothing waits any more
        assert (p.counters.join_hits, p.counters.join_misses) == (1, 1), first


def test_a_waiting_interaction_is_kept_until_its_prediction_could_only_be_late() -> None:
    """An interaction waits for its prediction until the prediction's latest possible tick has closed: a prediction
    that still counts (not late) finds it, however far event time moved meanwhile."""
    p = make(WINDOWS)
    p.process([inter("r", T0, "complaint")])
    # Event time moves to 80 s after the interaction: the watermark (minus 30 s of lateness) is at 50 s, so a
    # prediction stamped at 55 s (within the 60 s grace) is not late, and joins.
    p.process([pred("other", T0 + 80_000)])
    p.process([pred("r", T0 + 55_000)])
    assert (p.counters.join_hits, p.counters.late_dropped) == (1, 0)
    p.process([pred("clock", T0 + 3_600_000)])
    assert p.counters.join_misses == 0
