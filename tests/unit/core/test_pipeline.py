"""Tests of the pure pipeline `driftwatch.core.pipeline` on small hand-made event streams."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from driftwatch.config import Config, load_key
from driftwatch.core import summary as S
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import build_profile
from driftwatch.core.slicing import Pseudonymizer

T0 = 1_700_000_000_000  # ms; a multiple of the 10 s tick (2023-11-14T22:13:20Z)
KEY_ENV = "DRIFTWATCH_TEST_PIPELINE_KEY"


def make(extra: dict[str, object] | None = None, key: bytes | None = None) -> Pipeline:
    raw: dict[str, object] = {
        "attributes": {"region": {"max_values": 5}, "channel": {"max_values": 5}},
        "models": {"m": {"favorable": ["yes"], "reference": {"learn_events": 100}}},
        "windows": {"tick": "10s", "lateness": "0s", "windows": ["1m"]},
        "min_samples": 5,
        "privacy": {"min_group_size": 5},
    }
    raw.update(extra or {})
    cfg = Config.model_validate(raw)
    assert cfg.problems() == []
    prof = build_profile("m", cfg.models["m"], {"prediction": ["yes", "no"] * 50})
    return Pipeline(cfg, key=key, profiles={"m": prof})


def pred(rid: str, ts: object, prediction: str = "yes", **attrs: str) -> bytes:
    return msgspec.json.encode(
        {
            "type": "prediction",
            "schema_version": 1,
            "event_id": f"p-{rid}",
            "ts": ts,
            "model_id": "m",
            "model_version": "v1",
            "request_id": rid,
            "prediction": prediction,
            "attributes": attrs,
        }
    )


def inter(rid: str, ts: object, kind: str, value: object = None) -> bytes:
    ev: dict[str, object] = {
        "type": "interaction",
        "schema_version": 1,
        "event_id": f"{kind}-{rid}",
        "ts": ts,
        "request_id": rid,
        "kind": kind,
    }
    if value is not None:
        ev["value"] = value
    return msgspec.json.encode(ev)


def test_intersection_with_second_attribute_missing_does_not_crash() -> None:
    """An event with the first attribute of a configured pair but not the second is counted, not a crash."""
    p = make({"intersections": [["region", "channel"]]})
    p.process([pred("a", T0, region="EU", channel="web"), pred("b", T0 + 1, region="EU")])
    p.flush()
    s = p.streams[("m", "v1")]
    total = s.store.window(0, len(s.space), s.layout.width)
    assert total[0, S.N_PRED] == 2
    assert total[s.space.find(("region", "EU")), S.N_PRED] == 2
    assert total[s.space.find(("region:channel", "EU:web")), S.N_PRED] == 1


def test_intersection_with_first_attribute_missing_joins_no_pair_slice() -> None:
    """An event without the first attribute of a pair joins no slice of the pair dimension."""
    p = make({"intersections": [["region", "channel"]]})
    p.process([pred("a", T0, channel="web"), pred("b", T0 + 1)])
    p.flush()
    s = p.streams[("m", "v1")]
    assert [k for k in s.space.keys if k[0] == "region:channel"] == []
    assert s.store.window(0, 1, s.layout.width)[0, S.N_PRED] == 2


def test_label_counts_in_the_window_of_its_prediction() -> None:
    """A label for a prediction in the window counts in the window, even for a sub-millisecond timestamp just before a tick boundary."""
    p = make()
    # 22:13:29.9996Z lies in the tick [20 s, 30 s); rounded to ms it would be 30.000 s.
    p.process([pred("a", "2023-11-14T22:13:29.9996Z"), pred("b", "2023-11-14T22:13:20Z")])
    p.process([pred("c", T0 + 55_000)])  # both the prediction's tick and the next one close
    p.process([inter("a", T0 + 56_000, "label", "yes"), inter("b", T0 + 56_000, "label", "yes")])
    s = p.streams[("m", "v1")]
    assert s.store.window(0, 1, s.layout.width)[0, S.N_LABEL] == 0  # seen when the labels' own tick closes
    p.flush()
    since = s.store.window(0, 1, s.layout.width)[0]
    window = s.store.window(6, 1, s.layout.width)[0]
    assert since[S.N_LABEL] == 2
    assert window[S.N_PRED] == 3  # the labels' tick closed too, and with it the tick of c
    assert window[S.N_LABEL] == 2


def test_firing_slice_alert_resolves_as_stale_when_the_slice_goes_quiet() -> None:
    """A slice alert whose slice gets no more traffic resolves as stale after one window length."""
    p = make(
        {
            "rules": [
                {
                    "name": "complaints",
                    "metric": "complaint_rate",
                    "attribute": "region",
                    "window": "1m",
                    "threshold": 0.5,
                }
            ]
        }
    )
    batch = []
    for i in range(10):
        batch += [pred(f"eu{i}", T0 + i, region="EU"), inter(f"eu{i}", T0 + 100 + i, "complaint")]
    p.process(batch)
    for k in range(1, 30):  # 5 minutes of healthy US traffic only
        p.process([pred(f"us{k}-{j}", T0 + k * 10_000 + j, region="US") for j in range(3)])
    p.flush()
    states = [(t.state, t.labels.get("slice")) for t in p.transitions]
    assert states[0] == ("firing", "EU")
    assert ("resolved", "EU") in states
    resolved = next(t for t in p.transitions if t.state == "resolved")
    # Data leaves the 1 m window at ~70 s; stale means one further window without sufficient data.
    assert resolved.event_time - T0 / 1000 <= 10 + 60 + 60 + 10
    assert p.engine.active() == {}


def test_complaint_rule_fires_and_resolves_with_traffic() -> None:
    """A model-level complaint rule fires when complaints exceed the threshold and resolves when the window recovers."""
    p = make({"rules": [{"name": "complaints", "metric": "complaint_rate", "window": "1m", "threshold": 0.3}]})
    batch = []
    for i in range(10):
        batch += [pred(f"a{i}", T0 + i, region="EU"), inter(f"a{i}", T0 + 100 + i, "complaint")]
    p.process(batch)
    for k in range(1, 12):
        p.process([pred(f"b{k}-{j}", T0 + k * 10_000 + j, region="EU") for j in range(10)])
    p.flush()
    got = [(t.state, t.event_time - T0 / 1000) for t in p.transitions]
    assert got[0] == ("firing", 10.0)
    assert got[1][0] == "resolved"
    assert got[1][1] <= 70.0


def test_late_events_are_dropped_and_counted() -> None:
    """An event whose tick has already closed is dropped as late and counted."""
    p = make()
    p.process([pred("a", T0 + 35_000)])
    p.process([pred("late", T0 + 1_000), pred("ok", T0 + 35_500)])
    assert p.counters.late_dropped == 1
    p.flush()
    s = p.streams[("m", "v1")]
    assert s.store.window(0, 1, s.layout.width)[0, S.N_PRED] == 2


def test_unknown_model_and_bad_events_are_counted() -> None:
    """Predictions of an unconfigured model and undecodable events are counted by reason."""
    p = make()
    other = msgspec.json.encode({**msgspec.json.decode(pred("x", T0)), "model_id": "other"})
    p.process([other, b"{bad", pred("a", T0)])
    assert p.counters.rejected == {"unknown_model": 1, "invalid_json": 1}
    assert list(p.streams) == [("m", "v1")]


def test_interaction_before_its_prediction_waits_for_grace() -> None:
    """An interaction that arrives before its prediction is joined when the prediction comes within grace, else a miss."""
    p = make({"join": {"grace": "30s"}})
    p.process([inter("a", T0, "complaint"), inter("never", T0, "complaint")])
    p.process([pred("a", T0 + 1_000)])
    assert p.counters.join_hits == 1
    p.process([pred("z", T0 + 40_000)])
    assert p.counters.join_misses == 1
    p.flush()
    s = p.streams[("m", "v1")]
    assert s.store.window(0, 1, s.layout.width)[0, S.KIND_COLUMN["complaint"]] == 1


def test_labels_fill_the_confusion_counts_once() -> None:
    """Labels set TP/FP/TN/FN by favourable prediction and truth; a second label for a request is ignored."""
    p = make()
    p.process([pred("tp", T0, "yes"), pred("fp", T0, "yes"), pred("tn", T0, "no"), pred("fn", T0, "no")])
    p.process(
        [
            inter("tp", T0 + 5, "label", True),
            inter("fp", T0 + 5, "label", "no"),
            inter("tn", T0 + 5, "label", False),
            inter("fn", T0 + 5, "label", "yes"),
            inter("tp", T0 + 6, "label", False),
        ]
    )
    assert p.counters.duplicate_labels == 1
    p.flush()
    s = p.streams[("m", "v1")]
    row = s.store.window(0, 1, s.layout.width)[0]
    assert [int(row[c]) for c in (S.N_LABEL, S.TP, S.FP, S.TN, S.FN)] == [4, 1, 1, 1, 1]


def test_sensitive_attribute_is_pseudonymised_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values of a sensitive attribute reach slices only as keyed tokens."""
    monkeypatch.setenv(KEY_ENV, "k" * 32)
    cfg_extra = {"attributes": {"age_band": {"sensitive": True}}, "privacy": {"key_env": KEY_ENV, "min_group_size": 1}}
    key = load_key(
        Config.model_validate({**cfg_extra, "models": {"m": {"favorable": ["yes"]}}}).privacy
    ).get_secret_value()
    p = make(cfg_extra, key=key)
    p.process([pred("a", T0, age_band="65+")])
    p.flush()
    keys = p.streams[("m", "v1")].space.keys
    tok = Pseudonymizer(b"k" * 32).token("age_band", "65+")
    assert ("age_band", tok) in keys
    assert all("65+" not in v for _, v in keys)
    with pytest.raises(ValueError):
        make(cfg_extra, key=None)


def _learning_pipeline(reference: dict[str, object]) -> Pipeline:
    cfg = Config.model_validate(
        {
            "attributes": {},
            "models": {"m": {"favorable": ["yes"], "features": {"x": {"kind": "numeric"}}, "reference": reference}},
            "windows": {"tick": "10s", "lateness": "0s", "windows": ["1m"]},
        }
    )
    return Pipeline(cfg)


def _learn_event(i: int, score: float | None = 0.5) -> bytes:
    ev: dict[str, object] = {
        "type": "prediction", "schema_version": 1, "event_id": f"e{i}", "ts": T0 + i, "model_id": "m",
        "model_version": "v1", "request_id": f"r{i}", "prediction": "yes", "features": {"x": float(i)},
    }  # fmt: skip
    if score is not None:
        ev["score"] = score
    return msgspec.json.encode(ev)


def test_events_learnt_into_the_reference_are_not_in_metrics() -> None:
    """With learn_events: 100, the first 100 predictions build the reference only; metrics count the other 50."""
    p = _learning_pipeline({"learn_events": 100})
    p.process([_learn_event(i) for i in range(150)])
    p.flush()
    s = p.streams[("m", "v1")]
    assert p.layouts["m"].blocks["x"].ref_count == 100
    assert p.counters.reference_learning == 100
    assert s.store.window(0, 1, s.layout.width)[0, S.N_PRED] == 50


def test_learning_a_reference_without_scores_does_not_crash() -> None:
    """A model whose predictions carry no score (score is optional) can still learn its reference from traffic."""
    p = _learning_pipeline({"learn_events": 100})
    p.process([_learn_event(i, score=None) for i in range(150)])
    assert "m" in p.layouts
    assert "score" not in p.layouts["m"].blocks
    assert "x" in p.layouts["m"].blocks


def test_numeric_string_feature_counts_the_same_in_split_and_whole_batches() -> None:
    """fold(a) + fold(b) == fold(a + b) also when a numeric feature arrives as a numeric string."""
    model = {
        "favorable": ["yes"],
        "features": {"x": {"kind": "numeric", "bins": 4}},
        "reference": {"learn_events": 100},
    }
    cfg = Config.model_validate({"attributes": {}, "models": {"m": model}, "windows": {"lateness": "1h"}})
    prof = build_profile("m", cfg.models["m"], {"x": [float(i) for i in range(100)]})

    def ev(rid: str, x: object) -> bytes:
        return msgspec.json.encode(
            {"type": "prediction", "schema_version": 1, "event_id": rid, "ts": T0, "model_id": "m",
             "model_version": "v1", "request_id": rid, "prediction": "yes", "features": {"x": x}}
        )  # fmt: skip

    a, b = [ev("a", "42")], [ev("b", "n/a")]
    split, whole = Pipeline(cfg, profiles={"m": prof}), Pipeline(cfg, profiles={"m": prof})
    split.process(a)
    split.process(b)
    whole.process(a + b)
    (m_split,) = split.streams[("m", "v1")].store.open.values()
    (m_whole,) = whole.streams[("m", "v1")].store.open.values()
    assert np.array_equal(m_split, m_whole)
