"""Attribute values that cannot be squatted: a value gets a slice row of its own by recent volume, not arrival order.

A flood of made-up attribute values (an attacker, or a client that puts free text there) must neither keep the real
new value that comes next out of monitoring nor push out a value that carries traffic, and must cost bounded memory.
Ingest admits ``4 x max_values`` values per dimension and stream (pairs too), decided event by event in event time;
the evaluation keeps twice that and folds the least recent into ``__other__`` when a newer value needs a row.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from functools import cache

import msgspec
import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from driftwatch.alerts.engine import AlertTransition
from driftwatch.config import Config
from driftwatch.core import summary as S
from driftwatch.core.ingest import CANDIDATES_PER_VERSION, PROBATION, slice_limits, value_caps
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import build_profile
from driftwatch.core.slicing import OTHER

from .test_pipeline import pred as _pred

T0 = 1_800_000_000_000  # ms; a multiple of the 1 m window (an epoch of admission starts here)
FLOOR = 5  # privacy.min_group_size: the recent events a new value needs to take a place
PAIR = "language:region"

Event = tuple[int, bytes]


def make() -> Pipeline:
    """Model ``m``: ``language`` and ``region`` with top-2 (ingest keeps 8 values each), their pair, a 1 m window,
    and a disparate-impact rule on ``language``."""
    cfg = Config.model_validate(
        {
            "attributes": {"language": {"max_values": 2}, "region": {"max_values": 2}},
            "intersections": [["language", "region"]],
            "protected": ["language"],
            "privacy": {"min_group_size": FLOOR},
            "models": {"m": {"favorable": ["yes"], "reference": {"learn_events": 100}}},
            "windows": {"tick": "10s", "lateness": "0s", "windows": ["1m"]},
            "rules": [
                {
                    "name": "di",
                    "metric": "disparate_impact_ratio",
                    "attribute": "language",
                    "op": "<",
                    "threshold": 0.8,
                    "window": "1m",
                    "for": "0s",
                    "min_samples": FLOOR,
                }
            ],
        }
    )
    assert cfg.problems() == []
    prof = build_profile("m", cfg.models["m"], {"prediction": ["yes", "no"] * 50})
    return Pipeline(cfg, profiles={"m": prof})


def pred(rid: str, ts: int, language: str, prediction: str = "yes") -> Event:
    """A prediction of model ``m`` at ``ts`` (ms) for a request in ``language``, region EU."""
    return ts, _pred(rid, ts, prediction, language=language, region="EU")


def steady(language: str, start: float, end: float, per_second: int, prediction: str = "yes") -> list[Event]:
    """Traffic in ``language`` from ``start`` to ``end`` seconds after T0."""
    step = 1000 // per_second
    return [
        pred(f"{language}-{k}", ts, language, prediction)
        for k, ts in enumerate(range(T0 + int(start * 1000), T0 + int(end * 1000), step))
    ]


def junk(i: int) -> str:
    """A made-up value that passes every check of a label value (letters only: nothing looks personal)."""
    letters = string.ascii_lowercase
    out = "zz"
    while True:
        i, r = divmod(i, 26)
        out += letters[r]
        if not i:
            return out


def flood(n: int, start: float, per_second: int, repeat: int = 1) -> list[Event]:
    """``n`` made-up values from ``start`` seconds after T0, ``repeat`` events each in a row."""
    return [
        pred(f"junk-{i}-{r}", T0 + int(start * 1000) + (i * repeat + r) * 1000 // per_second, junk(i))
        for i in range(n)
        for r in range(repeat)
    ]


def ordered(*parts: Iterable[Event]) -> list[bytes]:
    """The events of all parts in event-time order (equal times keep the order of the parts)."""
    return [raw for _, raw in sorted((e for part in parts for e in part), key=lambda e: e[0])]


def run(p: Pipeline, events: Sequence[bytes], size: int) -> list[AlertTransition]:
    """Feed ``events`` in batches of ``size``, then close every tick; return the alert transitions."""
    out: list[AlertTransition] = []
    for i in range(0, len(events), size):
        out.extend(p.process(events[i : i + size])[1])
    out.extend(p.flush())
    return out


def since(p: Pipeline, dim: str, value: str) -> int:
    """Predictions of slice ``dim=value`` since start in the evaluation (0 without a row)."""
    s = p.evaluator.streams[("m", "v1")]
    row = s.space.find((dim, value))
    if row is None:
        return 0
    return int(s.store.window(0, len(s.space), s.layout.width)[row, S.N_PRED])


def test_real_language_after_a_flood_gets_its_row_and_its_alert() -> None:
    """After 10,000 one-event made-up languages, a real new language gets its row at its 5th event (its pair slice at its pair's 5th), its counts are exact from there, it is shown in the window's top-k and its disparate-impact alert fires naming it."""
    p = make()
    fr = steady("fr", 75, 180, 10, prediction="no")
    transitions = run(p, ordered(steady("en", 0, 180, 5), steady("de", 0, 180, 2), flood(10_000, 60, 1000), fr), 1000)
    assert since(p, "language", "fr") == len(fr) - (FLOOR - 1)
    # Its pair value exists only once "fr" has a row, then waits for its own 5 events in the pair dimension.
    assert since(p, PAIR, "fr:EU") == len(fr) - (FLOOR - 1) - (FLOOR - 1)
    s = p.evaluator.streams[("m", "v1")]
    dim = p.evaluator.dimensions.index("language")
    shown = p.evaluator.exposure.exposed(s, 6, dim)[0]
    assert shown[:2] == ["fr", "en"], shown
    fired = [t for t in transitions if t.state == "firing" and t.labels["alertname"] == "di"]
    assert fired, "the real language's disparate impact never fired"
    assert "fr" in msgspec.json.encode(fired[0].evidence).decode()


def test_values_with_traffic_are_never_replaced_by_a_flood() -> None:
    """Eight languages with traffic keep their rows, counted exactly, through a flood of values sending one event each and values sending fewer than the floor."""
    p = make()
    real = [steady(f"l{c}", 0, 120, 1) for c in "abcdefgh"]
    run(p, ordered(*real, flood(20_000, 30, 2000), flood(2_000, 50, 2000, repeat=FLOOR - 1)), 997)
    for c, events in zip("abcdefgh", real, strict=True):
        assert since(p, "language", f"l{c}") == len(events)
    stream = p.ingestor.streams[("m", "v1")]
    assert list(stream.admission[0].admitted) == [f"l{c}" for c in "abcdefgh"]
    assert since(p, "language", OTHER) == 20_000 + 2_000 * (FLOOR - 1)
    assert p.evaluator.counters.slices_retired == 0


def test_a_flood_of_20k_values_keeps_memory_bounded() -> None:
    """20,000 distinct made-up values, two events each: rows, probation, candidates, caches and the coder's memo all stay bounded."""
    p = make()
    caps = value_caps(p.config)
    run(p, ordered(steady("en", 0, 100, 5), flood(20_000, 0, 400, repeat=2)), 5000)
    stream = p.ingestor.streams[("m", "v1")]
    for d, cap in enumerate(caps):
        assert len(stream.space.rows_by_dim[d]) <= cap + 1  # __other__ too: no row beyond those admitted
        assert len(stream.admission[d].probation) <= PROBATION
        assert len(stream.admission[d].candidates) <= CANDIDATES_PER_VERSION * cap
    assert all(len(c) <= caps[0] + 1 for c in stream.caches)
    assert len(p.ingestor.coders["language"]._cache) <= p.ingestor.coders["language"].limit
    assert since(p, "language", "en") == 500


def test_the_evaluation_folds_the_least_recent_values_when_values_keep_changing() -> None:
    """Five waves of eight languages, each wave two minutes long: ingest admits each wave in its second minute, the evaluation keeps at most 2 x 8 + 1 rows and gives the oldest waves' rows to the newest, folding their counts into __other__ (nothing is lost), and the last wave is counted exactly."""
    p = make()
    waves = [[steady(f"w{w}{c}", 120 * k, 120 * (k + 1), 2) for c in "abcdefgh"] for k, w in enumerate("abcde")]
    run(p, ordered(*(e for wave in waves for e in wave)), 1000)
    s = p.evaluator.streams[("m", "v1")]
    dim = p.evaluator.dimensions.index("language")
    assert len(s.space.rows_by_dim[dim]) <= slice_limits(p.config)[dim]
    assert p.evaluator.counters.slices_retired > 0
    total = s.store.window(0, len(s.space), s.layout.width)
    on_dim = sum(int(total[r, S.N_PRED]) for r in s.space.rows_by_dim[dim])
    assert on_dim == int(total[0, S.N_PRED]) == sum(len(e) for wave in waves for e in wave)
    for c in "abcdefgh":  # admitted at the first event of the wave's second minute
        assert since(p, "language", f"we{c}") == 120
        assert since(p, "language", f"wa{c}") == 0  # folded into __other__ long ago


def _admission_stream() -> list[bytes]:
    return ordered(
        steady("en", 0, 150, 5), flood(3_000, 40, 1000), flood(300, 45, 1000, repeat=FLOOR), steady("fr", 50, 150, 8)
    )


def _admission_result(sizes: Sequence[int]) -> dict[tuple[str, str], list[int]]:
    """Every slice's since-start counts after feeding the stream in batches of ``sizes`` (cycled)."""
    events = _admission_stream()
    p = make()
    i = k = 0
    while i < len(events):
        n = sizes[k % len(sizes)]
        p.process(events[i : i + n])
        i, k = i + n, k + 1
    p.flush()
    s = p.evaluator.streams[("m", "v1")]
    m = s.store.window(0, len(s.space), s.layout.width)
    return {key: m[r].tolist() for r, key in enumerate(s.space.keys) if np.any(m[r])}


@cache
def _admission_reference() -> dict[tuple[str, str], list[int]]:
    return _admission_result([len(_admission_stream())])  # one batch


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 3_000), min_size=1, max_size=5))
@example([41])
@example([1, 2_999, 7])
def test_value_admission_is_the_same_for_any_batching(sizes: list[int]) -> None:
    """The same events (a flood of one-event values, one of values sending exactly the floor, a real new language) in batches of any sizes give the same rows and the same counts in every slice."""
    reference = _admission_reference()
    assert ("language", "fr") in reference
    assert _admission_result(sizes) == reference
