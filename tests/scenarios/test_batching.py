"""Determinism: how a stream is cut into batches never changes what driftwatch says about it.

The same events, delivered in the same order but in batches of any sizes, give the same alert transitions (every
field, in order), the same metric rows in every window and since start, and the same counters. The stream is a
simulated scenario that fires alerts, made harder: some events are late (beyond ``windows.lateness``), some
interactions arrive before their predictions, and labels arrive minutes after their prediction's tick closed.
"""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from driftwatch.config import load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.simulate import generate

# The one-batch reference replay is cached per process: one process computes it once.
pytestmark = pytest.mark.xdist_group("batching-reference")

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "driftwatch.example.yaml"
EVENTS = 24_000


@cache
def _stream() -> tuple[bytes, ...]:
    events, _ = generate("bias", events=EVENTS, seed=11)
    lines = [msgspec.json.encode(e) for e in events]
    rng = random.Random(11)
    for i in range(0, len(lines) - 50, 97):
        j = i + rng.randrange(1, 40)  # a little disorder, mostly within lateness
        lines[i], lines[j] = lines[j], lines[i]
    for i in range(500, len(lines) - 3000, 1_511):
        lines.insert(i + 2_500, lines.pop(i))  # an event delivered ~60 s of traffic later: often late
    return tuple(lines)


def _run(sizes: list[int], key: bytes) -> tuple[object, ...]:
    lines = _stream()
    p = Pipeline(load_config(EXAMPLE_CONFIG), key)
    records: list[bytes] = []
    i = k = 0
    while i < len(lines):
        n = sizes[k % len(sizes)]
        records.extend(msgspec.json.encode(t.to_record()) for t in p.process(list(lines[i : i + n]))[1])
        i, k = i + n, k + 1
    records.extend(msgspec.json.encode(t.to_record()) for t in p.flush())
    rows = [(r.name, sorted(r.labels.items()), r.value, r.n, r.lo, r.hi) for r in p.metric_rows(300.0)]
    since = [(r.name, sorted(r.labels.items()), r.value, r.n) for r in p.metric_rows(0.0)]
    return records, rows, since, p.counters


@cache
def _reference(key: bytes) -> tuple[object, ...]:
    return _run([len(_stream())], key)  # one batch


def test_the_stream_is_a_hard_one(pseudonym_key: bytes) -> None:
    """The reference run fires alerts, drops late events and joins labels after their prediction's tick closed."""
    records, _, _, counters = _reference(pseudonym_key)
    states = [msgspec.json.decode(r)["state"] for r in records]  # type: ignore[union-attr]
    assert "firing" in states
    assert counters.late_dropped > 0  # type: ignore[attr-defined]
    assert counters.join_hits > 1000  # type: ignore[attr-defined]


@pytest.mark.slow
@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(20, 3_000), min_size=1, max_size=8))  # batches of 1: the explicit example
@example(sizes=[500]).via("replay --batch 500")
@example(sizes=[50_000]).via("replay --batch 50000")
@example(sizes=[1] * 50 + [1_000]).via("one event per message, stretch after stretch")
def test_any_batching_gives_the_same_output(sizes: list[int], pseudonym_key: bytes) -> None:
    records, rows, since, counters = _run(sizes, pseudonym_key)
    ref_records, ref_rows, ref_since, ref_counters = _reference(pseudonym_key)
    assert counters == ref_counters
    assert records == ref_records
    assert rows == ref_rows
    assert since == ref_since
