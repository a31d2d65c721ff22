"""An evaluator that closes ticks a few at a time (``advance(..., budget=)``, as a worker does to let its event loop
run in between) evaluates the same ticks, with the same results, as one that closes them all at once."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from driftwatch._time import epoch, rfc3339
from driftwatch.alerts.engine import AlertTransition
from driftwatch.config import load_config
from driftwatch.core.evaluate import Evaluator
from driftwatch.core.ingest import Ingestor
from driftwatch.simulate import generate

from .test_snapshot import _profiles, _rows

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "driftwatch.example.yaml"


def _seen(transitions: list[AlertTransition]) -> list[tuple[object, ...]]:
    """What a transition says, comparable (a stale one's value is NaN, never equal to itself)."""
    return [(t.rule, t.state, t.fingerprint, t.event_time, repr(t.value), t.n, repr(t.evidence)) for t in transitions]


def _with_a_quiet_hour(events: list[dict[str, object]]) -> list[dict[str, object]]:
    """The events, the second half an hour later (a gap in the data)."""
    half = len(events) // 2
    later = []
    for e in events[half:]:
        ts = e["ts"]  # RFC 3339, or epoch milliseconds
        t = ts / 1000 if isinstance(ts, int) else epoch(ts)
        assert t is not None
        later.append({**e, "ts": rfc3339(t + 3600)})
    return [*events[:half], *later]


@pytest.mark.parametrize("budget", [1, 3])
def test_closing_ticks_a_few_at_a_time_gives_what_closing_them_at_once_gives(budget: int, pseudonym_key: bytes) -> None:
    cfg = load_config(EXAMPLE)
    events = _with_a_quiet_hour(list(generate("complaint-spike", events=30_000, seed=7)[0]))
    enc = msgspec.json.Encoder()
    ing = Ingestor(cfg, pseudonym_key, _profiles(events))
    at_once = Evaluator(cfg, ing.layouts, ing.limits, ing.coders)
    stepwise = Evaluator(cfg, ing.layouts, ing.limits, ing.coders)
    cut_short = 0
    for i in range(0, len(events), 5_000):  # large batches: each advance closes many ticks
        partials = ing.process([enc.encode(e) for e in events[i : i + 5_000]]).partials
        wm = ing.watermark
        at_once.apply(partials)
        expected = at_once.advance(wm)
        assert not at_once.behind(wm)
        stepwise.apply(partials)
        got = stepwise.advance(wm, budget=budget)
        while stepwise.behind(wm):
            cut_short += 1
            got += stepwise.advance(wm, budget=budget)
        assert _seen(got) == _seen(expected)
    # Then time moves on with no data (heartbeats through a quiet hour): the idle ticks are skipped over alike.
    quiet = ing.watermark + 3600
    expected = at_once.advance(quiet)
    got = stepwise.advance(quiet, budget=budget)
    while stepwise.behind(quiet):
        got += stepwise.advance(quiet, budget=budget)
    assert _seen(got) == _seen(expected)
    assert cut_short > 0  # the budget did split the work
    assert stepwise.counters.evaluations == at_once.counters.evaluations
    assert stepwise.closed_before == at_once.closed_before
    assert any(t.state == "firing" for t in at_once.transitions)
    assert _seen(stepwise.transitions) == _seen(at_once.transitions)
    assert any(t.state == "resolved" for t in at_once.transitions)
    for window in (0.0, 300.0, 3600.0):
        assert _rows(stepwise.metric_rows(window)) == _rows(at_once.metric_rows(window))
