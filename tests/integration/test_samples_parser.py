"""The tests' exposition parser (conftest.samples) reads what prometheus_client's parser reads."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftwatch.config import load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import build_profile, prediction_columns
from driftwatch.daemon.metrics import registry_for
from driftwatch.simulate import generate

from .conftest import samples

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "driftwatch.example.yaml"


def _reference(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _same(a: dict[tuple[str, tuple[tuple[str, str], ...]], float], b: dict[object, float]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)  # NaN == NaN


def test_a_workers_exposition_parses_the_same(pseudonym_key: bytes) -> None:
    cfg = load_config(EXAMPLE)
    events = list(generate("bias", events=6_000, seed=2)[0])
    profiles = {m: build_profile(m, mc, prediction_columns(events, m, limit=2_000)) for m, mc in cfg.models.items()}
    p = Pipeline(cfg, pseudonym_key, profiles)
    p.process([msgspec.json.encode(e) for e in events])
    p.flush()
    text = generate_latest(registry_for(p, window=0, max_series=100_000, lock=threading.Lock())).decode()
    got = samples(text)
    assert len(got) > 500
    assert _same(got, _reference(text))


def test_escapes_special_values_and_every_metric_type_parse_the_same() -> None:
    reg = CollectorRegistry()
    g = Gauge("g", "a gauge", ["a", "b"], registry=reg)
    for value in ["plain", 'quote " in it', "back\\slash", "new\nline", "brace } and { and = ,", " spaces  "]:
        g.labels(value, "x").set(1.5)
    Gauge("nan", "not a number", registry=reg).set(float("nan"))
    Gauge("inf", "infinite", registry=reg).set(float("-inf"))
    Counter("c", "a counter", ["k"], registry=reg).labels("v").inc(3)
    Histogram("h", "a histogram", buckets=(0.1, 1.0), registry=reg).observe(0.5)
    text = generate_latest(reg).decode()
    assert _same(samples(text), _reference(text))
