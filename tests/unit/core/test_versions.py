"""Version caps that cannot be squatted: versions get a stream of their own by recent volume, not arrival order.

A flood of made-up ``model_version`` values (an attacker, or a client that puts a build id there) must neither keep
the real new version that ships next out of monitoring nor push out a version that carries traffic, and must cost
bounded memory. Decisions are made event by event in event time, so batching never changes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec

from driftwatch.actions.planner import ActionPlanner
from driftwatch.config import Config
from driftwatch.core import summary as S
from driftwatch.core.counters import Counters
from driftwatch.core.ingest import CANDIDATES_PER_VERSION, PROBATION
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import build_profile
from driftwatch.core.slicing import OTHER

T0 = 1_800_000_000_000  # ms; a multiple of the 1 m window (an epoch of version admission starts here)
COMPLAINT = S.KIND_COLUMN["complaint"]

Event = tuple[int, bytes]


def make(**model: object) -> Pipeline:
    """A pipeline for model ``m`` (1 m window, so an admission epoch is 1 m) with a complaint rule and a rollback."""
    raw: dict[str, object] = {
        "attributes": {"region": {"max_values": 5}},
        "models": {"m": {"favorable": ["yes"], "reference": {"learn_events": 100}, **model}},
        "windows": {"tick": "10s", "lateness": "0s", "windows": ["1m"]},
        "rules": [
            {
                "name": "complaints",
                "metric": "complaint_rate",
                "model": "m",
                "window": "1m",
                "threshold": 0.5,
                "min_samples": 20,
                "actions": ["rollback_model"],
            }
        ],
        "alerting": {"actions": {"rollback_model": {"kind": "rollback_model", "transport": "kafka", "cooldown": "0s"}}},
    }
    cfg = Config.model_validate(raw)
    assert cfg.problems() == []
    prof = build_profile("m", cfg.models["m"], {"prediction": ["yes", "no"] * 50})
    return Pipeline(cfg, profiles={"m": prof})


def pred(rid: str, version: str, ts: int, region: str = "EU") -> Event:
    """A prediction of model ``m`` at ``ts`` (ms)."""
    return ts, msgspec.json.encode(
        {
            "type": "prediction",
            "schema_version": 1,
            "event_id": f"p-{rid}",
            "ts": ts,
            "model_id": "m",
            "model_version": version,
            "request_id": rid,
            "prediction": "yes",
            "attributes": {"region": region},
        }
    )


def complaint(rid: str, ts: int) -> Event:
    """A complaint about request ``rid`` at ``ts`` (ms)."""
    return ts, msgspec.json.encode(
        {
            "type": "interaction",
            "schema_version": 1,
            "event_id": f"c-{rid}",
            "ts": ts,
            "request_id": rid,
            "kind": "complaint",
        }
    )


def steady(version: str, start: float, end: float, per_second: int, *, complaints: bool = False) -> list[Event]:
    """Real traffic of ``version`` from ``start`` to ``end`` seconds after T0 (each complained about 1 s later)."""
    out = []
    step = 1000 // per_second
    for k, ts in enumerate(range(T0 + int(start * 1000), T0 + int(end * 1000), step)):
        rid = f"{version}-{k}"
        out.append(pred(rid, version, ts, region=("EU", "US")[k % 2]))
        if complaints:
            out.append(complaint(rid, ts + 1000))
    return out


def flood(n: int, start: float, per_second: int, *, prefix: str = "fake", repeat: int = 1) -> list[Event]:
    """``n`` made-up versions from ``start`` seconds after T0, ``repeat`` events each in a row."""
    out = []
    for i in range(n):
        for r in range(repeat):
            ts = T0 + int(start * 1000) + (i * repeat + r) * 1000 // per_second
            out.append(pred(f"{prefix}{i}-{r}", f"{prefix}{i}", ts))
    return out


def ordered(*parts: Iterable[Event]) -> list[bytes]:
    """The events of all parts in event-time order (equal times keep the order of the parts)."""
    return [raw for _, raw in sorted((e for part in parts for e in part), key=lambda e: e[0])]


def run(p: Pipeline, events: Sequence[bytes], size: int) -> None:
    """Feed ``events`` in batches of ``size``, then close every tick."""
    for i in range(0, len(events), size):
        p.process(events[i : i + size])
    p.flush()


def since(p: Pipeline, version: str, column: int = S.N_PRED) -> int:
    """A since-start count of ``version``'s stream (0 without a stream)."""
    s = p.evaluator.streams.get(("m", version))
    if s is None:
        return 0
    return int(s.store.window(0, 1, s.layout.width)[0, column])


def test_real_version_after_a_flood_gets_its_stream_alerts_and_rolls_back() -> None:
    """After 1,000 one-event fake versions, a real new version gets its stream at its 20th event, its counts are exact from there, its complaint alert fires with its version label and the planner rolls it back to the version before it."""
    p = make()
    floor = p.config.models["m"].version_min_events
    v1 = steady("v1", 0, 300, 2)
    v2 = steady("v2", 80, 300, 2, complaints=True)
    run(p, ordered(v1, flood(1_000, 60, 100), v2), 500)

    sent_v2 = len(v2) // 2
    assert since(p, "v1") == len(v1)  # never replaced
    # Its first floor - 1 events went to __other__ (counted there), every later one to its own stream.
    assert since(p, "v2") == sent_v2 - (floor - 1)
    assert since(p, "v2", COMPLAINT) == sent_v2 - (floor - 1)
    assert since(p, OTHER) == 1_000 - 9 + (floor - 1)  # 9 fakes took the free slots of 10
    assert since(p, OTHER, COMPLAINT) == floor - 1
    assert p.ingestor.versions["m"] == ["v1", "v2"]  # rollback targets: one-event versions never carried traffic

    firing = [t for t in p.transitions if t.state == "firing"]
    assert [(t.labels["model"], t.labels["version"]) for t in firing] == [("m", "v2")]
    alert = firing[0]
    # At 100 s its window holds its 21 predictions from its 20th event (89.5 s) on, and the complaints (1 s after
    # each) of those up to 98.5 s: 19. Those of its first 19 events were joined to them, in __other__.
    assert (alert.n, alert.value) == (21, 19 / 21)

    recs: list[dict[str, object]] = []
    planner = ActionPlanner(p.config.alerting, recs.append, versions_seen=lambda m: p.ingestor.versions[m])
    (run_now,) = planner.on_alert(alert.to_record(), alert.event_time)
    assert run_now.request.body["action"] == "rollback"
    assert run_now.request.body["from_version"] == "v2"
    assert run_now.request.body["to_version"] == "v1"
    assert [r["kind"] for r in recs] == ["action.started"]


def test_versions_with_traffic_are_never_replaced_by_a_flood() -> None:
    """Ten versions with steady traffic keep their streams through 9,000 one-event versions, 500 that send 19 events each (one short of the floor) and 200 that send 30 (past the floor, short of twice the real ones' recent events)."""
    p = make()
    real = [steady(f"r{k}", 0, 600, 1) for k in range(10)]
    fakes = [
        *flood(9_000, 30, 20),
        *flood(500, 40, 40, prefix="short", repeat=19),
        *flood(200, 300, 40, prefix="burst", repeat=30),
    ]
    events = ordered(*real, fakes)
    for i in range(0, len(events), 700):
        p.process(events[i : i + 700])
        assert list(p.ingestor.admission["m"].admitted) == [f"r{k}" for k in range(10)]
    p.flush()
    for k in range(10):
        assert since(p, f"r{k}") == len(real[k])
    assert since(p, OTHER) == len(fakes)
    assert sorted(v for m, v in p.evaluator.streams if m == "m") == sorted([OTHER, *(f"r{k}" for k in range(10))])
    assert p.ingestor.versions["m"] == [f"r{k}" for k in range(10)]


def test_a_flood_of_100k_versions_keeps_memory_bounded() -> None:
    """During 100,000 one-event fake versions, the versions remembered, the streams and the join cells stay bounded."""
    p = make()
    cap = p.config.models["m"].max_versions
    events = ordered(steady("v1", 0, 1_000, 1), flood(100_000, 20, 100))
    admission = p.ingestor.admission["m"]
    cells = []
    for i in range(0, len(events), 5_000):
        p.process(events[i : i + 5_000])
        assert len(admission.probation) <= PROBATION
        assert len(admission.candidates) <= CANDIDATES_PER_VERSION * cap
        assert len(admission.carried) <= 2 * cap
        assert len(admission.admitted) == cap
        assert len(p.ingestor.streams) <= cap + 1
        assert len(p.evaluator.streams) <= cap + 1
        cells.append(len(p.ingestor._cell_rows))
    assert len(admission.probation) == PROBATION  # full, and never more
    assert cells[len(cells) // 2] == cells[-1]  # no new join cells however many versions come
    assert since(p, "v1") == 1_000


def _flood_stream() -> list[bytes]:
    """Replacements in both directions: v0 goes quiet and loses its slot to v2 (after a flood), then comes back."""
    return ordered(
        steady("v0", 0, 60, 2),
        steady("v1", 0, 400, 1),
        flood(1_000, 60, 50),
        flood(300, 70, 50, prefix="pair", repeat=2),
        steady("v2", 130, 400, 2, complaints=True),
        steady("v0", 300, 400, 3),
    )


Row = tuple[str, list[tuple[str, str]], float | None, int]


class Outcome(NamedTuple):
    """Everything a run says: alert records, metric rows (1 m window and since start), counters, versions."""

    records: list[bytes]
    rows: list[Row]
    total: list[Row]
    counters: Counters
    versions: list[str]
    admitted: list[str]


def _outcome(size: int) -> Outcome:
    """Run the flood stream in batches of ``size`` (at most three versions with a stream)."""
    p = make(max_versions=3)
    events = _flood_stream()
    records = []
    for i in range(0, len(events), size):
        records += [msgspec.json.encode(t.to_record()) for t in p.process(events[i : i + size])[1]]
    records += [msgspec.json.encode(t.to_record()) for t in p.flush()]
    rows = [(r.name, sorted(r.labels.items()), r.value, r.n) for r in p.metric_rows(60.0)]
    total = [(r.name, sorted(r.labels.items()), r.value, r.n) for r in p.metric_rows(0.0)]
    admitted = list(p.ingestor.admission["m"].admitted)
    return Outcome(records, rows, total, p.counters, list(p.ingestor.versions["m"]), admitted)


def test_version_admission_is_the_same_for_any_batching() -> None:
    """The flood stream in batches of 1, 37 and all at once gives the same alerts, metrics, counters and versions."""
    whole = _outcome(len(_flood_stream()))
    assert any(b'"firing"' in r and b'"v2"' in r for r in whole.records)
    assert whole.versions == ["v0", "v1", "v2"]
    assert sorted(whole.admitted) == ["v0", "v1", "v2"]  # v0 lost its place while quiet and took another back
    assert any(("version", OTHER) in labels for _, labels, _, _ in whole.total)
    assert _outcome(37) == whole
    assert _outcome(1) == whole


def test_the_version_before_follows_event_time_not_which_partition_was_read_first() -> None:
    """A worker may read a newer version's partition first (both versions live from the start): the rollback target is still the version whose traffic began earlier in event time."""
    old = steady("v1", 0, 120, 2)
    new = steady("v2", 5, 120, 2)
    # v2's first events (within the first, still open tick) arrive before any of v1's, as when its partition is
    # fetched first.
    arrival = [raw for _, raw in new[:4]] + ordered(old, new[4:])
    p = make()
    run(p, arrival, 500)
    assert p.ingestor.versions["m"] == ["v1", "v2"]
    again = make()
    run(again, ordered(old, new), 500)  # the same events in event-time order agree
    assert again.ingestor.versions["m"] == ["v1", "v2"]
