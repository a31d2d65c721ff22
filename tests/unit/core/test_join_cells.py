"""Join entries point at cells (a stream and one combination of slice rows). A cell lives while entries point at it,
so a long-running worker's cells are bounded by the requests it remembers, not by every combination it ever saw;
and when the cell table is full, the oldest requests are forgotten (as ``join.max_entries`` does), never the
worker stopped."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from driftwatch.core import ingest as I
from driftwatch.core.pipeline import Pipeline

from .test_pipeline import T0, inter, make, pred

REGIONS, CHANNELS = [f"r{i}" for i in range(6)], [f"c{i}" for i in range(6)]


def _wide(join: dict[str, object]) -> Pipeline:
    """Two attributes of 6 values each, all admitted (36 combinations, so many cells), one-second ticks."""
    return make(
        {
            "attributes": {"region": {"max_values": 10}, "channel": {"max_values": 10}},
            "windows": {"tick": "1s", "lateness": "0s", "windows": ["1m"]},
            "join": join,
            "privacy": {"min_group_size": 1},
        }
    )


def _check_cells(p: Pipeline) -> None:
    """Every cell is live exactly while join entries point at it, and is found under its own rows."""
    ing = p.ingestor
    pointed = Counter(entry >> I._CELL_SHIFT for entry in ing._join.values())
    pointed.pop(I._LEARNING, None)
    live = {c for c, s in enumerate(ing._cell_stream) if s is not None and c != I._LEARNING}
    assert live == set(pointed)
    assert all(ing._cell_refs[c] == n for c, n in pointed.items())
    assert set(ing._free_cells).isdisjoint(live)
    assert len(set(ing._free_cells)) == len(ing._free_cells)
    streams = {id(s): s for s in [*ing.streams.values(), *ing._cell_stream] if s is not None}
    for stream in streams.values():
        for key, cell in stream.cells.items():
            assert ing._cell_stream[cell] is stream
            assert ing._cell_rows[cell].tobytes() == key


def test_cells_are_freed_with_the_last_request_that_points_at_them() -> None:
    """Requests expire by `join.ttl`; their cells are freed and reused, and joins are unchanged."""
    p = _wide({"ttl": "5s", "grace": "0s"})
    hits = 0
    seen: set[tuple[str, str]] = set()
    freed = 0
    for second in range(40):
        t = T0 + second * 1000
        # Every 8 s the traffic moves to another region: the combinations of the last one stop being predicted.
        region = REGIONS[(second // 8) % 6]
        batch = [pred(f"{second}-{i}", t + i, region=region, channel=CHANNELS[i % 6]) for i in range(12)]
        batch[3] = pred(f"{second}-2", t + 3, region="r5", channel="c5")  # a request predicted twice: the last counts
        if second:  # and one of the previous second's requests predicted again, elsewhere
            batch.append(pred(f"{second - 1}-5", t + 5, region="r4", channel="c4"))
        seen |= {(region, c) for c in CHANNELS} | {("r5", "c5"), ("r4", "c4")}
        # Interactions for requests 3 s old (joined; one was predicted twice) and 8 s old (forgotten by the 5 s ttl).
        if second >= 3:
            batch += [inter(f"{second - 3}-{i}", t + 20 + i, "complaint") for i in (0, 1, 2, 4)]
            hits += 4
        if second >= 8:
            batch.append(inter(f"{second - 8}-0", t + 30, "complaint"))
        p.process(batch)
        _check_cells(p)
        freed = max(freed, len(p.ingestor._free_cells))
    ing = p.ingestor
    assert p.counters.join_hits == hits
    assert len(ing._join) <= 12 * 7  # about ttl / tick seconds of requests are remembered
    assert freed > 0
    assert len(ing._cell_stream) - 1 < len(seen)  # freed cells were reused: fewer cells than combinations seen


def test_a_full_cell_table_forgets_the_oldest_requests_and_keeps_joining(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every cell taken, a new combination makes room by forgetting the oldest requests: no error, recent
    requests still join, and the forgotten ones are join misses."""
    monkeypatch.setattr(I, "MAX_CELLS", 20)
    p = _wide({"ttl": "1h", "grace": "0s"})
    combos = [(r, c) for r in REGIONS for c in CHANNELS]
    for k, (region, channel) in enumerate(combos):  # 36 combinations, one request each: more than 20 cells
        p.process([pred(f"q{k}", T0 + k * 1000, region=region, channel=channel)])
        _check_cells(p)
        assert len(p.ingestor._cell_stream) <= 20
    p.process([inter(f"q{k}", T0 + 40_000 + k, "complaint") for k in range(len(combos))])
    _check_cells(p)
    c = p.counters
    assert c.join_hits + len(p.ingestor._pending) == len(combos)
    assert c.join_hits >= 10  # the newest requests were kept
    remembered = {int(rid[1:]) for rid in p.ingestor._join}
    assert min(remembered) > 0  # the oldest went first
    assert max(remembered) == len(combos) - 1


def test_one_batch_with_more_combinations_than_cells_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(I, "MAX_CELLS", 8)
    p = _wide({"ttl": "1h", "grace": "0s"})
    batch = [
        pred(f"q{k}", T0 + k, region=r, channel=c)
        for k, (r, c) in enumerate((r, c) for r in REGIONS[:3] for c in CHANNELS[:3])
    ]
    with pytest.raises(OverflowError, match="more than 8 combinations"):
        p.process(batch)


def test_cell_keys_are_the_rows_as_the_table_holds_them() -> None:
    p = _wide({"ttl": "1h"})
    p.process([pred("a", T0, region="r1", channel="c2"), pred("b", T0 + 1, region="r1")])
    ing = p.ingestor
    (stream,) = ing.streams.values()
    assert len(stream.cells) == 2
    for key, cell in stream.cells.items():
        assert np.frombuffer(key, np.int32).tolist() == ing._cell_rows[cell].tolist()
