"""River change detectors in rules behave like River itself on the same per-tick series."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np
import pytest
from river import drift

from driftwatch.alerts.engine import AlertTransition
from driftwatch.config import Config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import build_profile

T0 = 1_700_000_000_000  # ms; a multiple of the 10 s tick
START = T0 / 1000
TICK = 10.0
PER_TICK = 8
HOLD = 60.0
PAGE_HINKLEY = {"kind": "page_hinkley", "threshold": 2.0, "delta": 0.01, "hold": "1m"}
ADWIN = {"kind": "adwin", "delta": 0.002, "hold": "1m"}


def make(detector: dict[str, object]) -> Pipeline:
    cfg = Config.model_validate(
        {
            "attributes": {},
            "models": {"m": {"favorable": ["yes"], "reference": {"learn_events": 100}}},
            "windows": {"tick": "10s", "lateness": "0s", "windows": ["1m"]},
            "rules": [
                {"name": "shift", "metric": "mean_score", "detector": detector, "min_samples": 20, "window": "1m"}
            ],
        }
    )
    assert cfg.problems() == []
    ref = {"prediction": ["yes", "no"] * 50, "score": [i / 99 for i in range(100)]}
    return Pipeline(cfg, profiles={"m": build_profile("m", cfg.models["m"], ref)})


def pred(rid: str, ts: int, score: float) -> bytes:
    return msgspec.json.encode(
        {
            "type": "prediction",
            "schema_version": 1,
            "event_id": f"p-{rid}",
            "ts": ts,
            "model_id": "m",
            "model_version": "v1",
            "request_id": rid,
            "prediction": "yes",
            "score": score,
        }
    )


def feed(p: Pipeline, means: list[float], seed: int = 0) -> list[float]:
    """Feed PER_TICK scored predictions per 10 s tick (one batch per tick); return each tick's mean score."""
    rng = np.random.default_rng(seed)
    series = []
    for i, mu in enumerate(means):
        # Three decimals: the pipeline's fixed-point score sums are then exact.
        scores = np.round(np.clip(rng.normal(mu, 0.1, PER_TICK), 0.0, 1.0), 3)
        offsets = np.sort(rng.integers(0, 10_000, PER_TICK))
        p.process([pred(f"{i}-{j}", T0 + i * 10_000 + int(offsets[j]), float(scores[j])) for j in range(PER_TICK)])
        series.append(float(scores.mean()))
    p.flush()
    return series


def river_detections(detector: object, series: list[float]) -> list[int]:
    """Indexes of the ticks at which River's detector reports drift on ``series``."""
    out = []
    for i, x in enumerate(series):
        detector.update(x)  # type: ignore[attr-defined]
        if detector.drift_detected:  # type: ignore[attr-defined]
            out.append(i)
    return out


def shift_transitions(p: Pipeline) -> list[AlertTransition]:
    return [t for t in p.transitions if t.rule == "shift"]


def expected_states(detections: list[int], n_ticks: int) -> list[tuple[str, float]]:
    """Transitions implied by the detections: firing at a detecting tick's end, resolved once ``hold`` has passed."""
    out: list[tuple[str, float]] = []
    last: float | None = None
    firing = False
    for i in range(n_ticks):
        now = START + (i + 1) * TICK
        if i in detections:
            last = now
        active = last is not None and now - last < HOLD
        if active and not firing:
            out.append(("firing", now))
        elif firing and not active:
            out.append(("resolved", now))
        firing = active
    return out


CASES: list[tuple[dict[str, object], Callable[[], object], int]] = [
    (PAGE_HINKLEY, lambda: drift.PageHinkley(delta=0.01, threshold=2.0), 30),
    # River's ADWIN checks for a cut only every 32 updates, and needs a longer history before the shift.
    (ADWIN, lambda: drift.ADWIN(delta=0.002), 60),
]


@pytest.mark.parametrize(("detector", "oracle", "before"), CASES, ids=["page_hinkley", "adwin"])
def test_rule_fires_at_the_end_of_the_tick_river_detects(
    detector: dict[str, object], oracle: Callable[[], object], before: int
) -> None:
    """A mean-score shift fires the rule at the end of the very tick where River's own detector first reports drift."""
    p = make(detector)
    means = [0.3] * before + [0.6] * 140
    series = feed(p, means)
    detections = river_detections(oracle(), series)
    assert detections, "River itself must detect the shift for this comparison to mean anything"
    first = detections[0]
    assert first >= before
    firing = [t for t in shift_transitions(p) if t.state == "firing"]
    assert firing
    assert firing[0].event_time == START + (first + 1) * TICK
    assert firing[0].value == pytest.approx(series[first], abs=1e-9)
    assert firing[0].labels["model"] == "m"
    assert "slice" not in firing[0].labels


@pytest.mark.parametrize(("detector", "oracle", "before"), CASES, ids=["page_hinkley", "adwin"])
def test_alert_resolves_once_hold_has_passed_without_detections(
    detector: dict[str, object], oracle: Callable[[], object], before: int
) -> None:
    """After the last detection the alert stays firing for ``hold`` and then resolves, exactly as River's detections imply."""
    p = make(detector)
    means = [0.3] * before + [0.6] * 140
    series = feed(p, means)
    detections = river_detections(oracle(), series)
    got = [(t.state, t.event_time) for t in shift_transitions(p)]
    assert got == expected_states(detections, len(series))
    resolved = [t for t in got if t[0] == "resolved"]
    assert resolved
    first_detection = START + (detections[0] + 1) * TICK
    assert resolved[0][1] >= first_detection + HOLD
    assert p.engine.active() == {}


@pytest.mark.parametrize(("detector", "oracle", "before"), CASES, ids=["page_hinkley", "adwin"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_healthy_constant_series_never_fires(
    detector: dict[str, object], oracle: Callable[[], object], before: int, seed: int
) -> None:
    """A series whose mean never changes gives no transitions, and River agrees there is nothing to detect."""
    p = make(detector)
    series = feed(p, [0.3] * (before + 140), seed=seed)
    assert river_detections(oracle(), series) == []
    assert shift_transitions(p) == []
    assert p.counters.evaluations == len(series)
