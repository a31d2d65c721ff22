"""Replay without a wall clock: one event stamped far ahead of its neighbours cannot move event time."""

from __future__ import annotations

from driftwatch.core.ingest import LEAP_CONFIRM
from driftwatch.core.pipeline import Pipeline

from .test_pipeline import T0, inter, make, pred

SECOND = 1_000
HOURS_2 = 2 * 3_600 * SECOND


def _stream(n: int, start: int = T0, step: int = 500) -> list[bytes]:
    """``n`` predictions (and a complaint for every fourth) half a second apart, over both regions."""
    out = []
    for i in range(n):
        ts = start + i * step
        out.append(pred(f"r{start}-{i}", ts, "yes" if i % 3 else "no", region=("north", "south")[i % 2]))
        if i % 4 == 0:
            out.append(inter(f"r{start}-{i}", ts + 200, "complaint"))
    return out


def _run(lines: list[bytes], batch: int) -> Pipeline:
    p = make()
    for i in range(0, len(lines), batch):
        p.process(lines[i : i + batch])
    p.flush()
    return p


def _rows(p: Pipeline) -> list[tuple[object, ...]]:
    return [(r.name, sorted(r.labels.items()), r.value, r.n) for r in p.metric_rows(0.0)]


def test_one_event_two_hours_ahead_is_rejected_and_moves_nothing() -> None:
    """A prediction stamped 2 h ahead mid-stream is rejected as timestamp_out_of_range; no event after it is late
    and every metric equals the replay without it."""
    clean = _stream(400)
    ahead = pred("ahead", T0 + 100 * 500 + HOURS_2, region="north")
    dirty = [*clean[:150], ahead, *clean[150:]]
    for batch in (1, 37, len(dirty)):
        p, q = _run(dirty, batch), _run(clean, batch)
        assert p.counters.rejected == {"timestamp_out_of_range": 1}
        assert p.counters.late_dropped == 0
        assert p.counters.predictions == q.counters.predictions == 400
        assert _rows(p) == _rows(q)
        assert p.counters.evaluations == q.counters.evaluations


def test_traffic_resuming_after_a_quiet_night_moves_time_on() -> None:
    """After a 3 h gap, the first events of the new run are rejected until LEAP_CONFIRM come in a row; the rest
    count, ticks after the gap close without a flush, and any batching gives the same result."""
    night = _stream(200) + _stream(200, start=T0 + 200 * 500 + 3 * 3_600 * SECOND)
    results = []
    for batch in (1, 50, len(night)):
        p = make()
        for i in range(0, len(night), batch):
            p.process(night[i : i + batch])
        assert p.closed_before is not None
        assert p.closed_before * 10 * SECOND > T0 + 3 * 3_600 * SECOND  # evaluation went on after the gap
        assert p.counters.rejected == {"timestamp_out_of_range": LEAP_CONFIRM - 1}
        assert p.counters.late_dropped == 0
        p.flush()
        results.append((_rows(p), p.counters))
    assert results[0] == results[1] == results[2]


def test_live_ingest_leaves_far_ahead_events_to_the_wall_clock() -> None:
    """Live (the wall clock bounds event time), the replay's leap rule is off: the event counts."""
    p = make()
    lines = [*_stream(10), pred("ahead", T0 + HOURS_2, region="north")]
    p.ingestor.process(lines, live=True)
    assert p.counters.rejected == {}
    assert p.counters.predictions == 11
