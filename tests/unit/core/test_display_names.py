"""Names on-call can read: a token whose raw value is in ``display_values`` is shown as that value everywhere.

Everywhere means the metric rows (``replay --json``), /metrics labels, alert
labels and evidence, and so what the notifier builds from an alert record.
Only groups the exposure layer names (top-k with at least ``min_group_size``
members) get a name; every other sensitive value stays a token.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import msgspec
import pytest
from prometheus_client import generate_latest

from driftwatch.alerts.notifier import Notifier
from driftwatch.alerts.records import encode_record
from driftwatch.config import Config, NotifyConfig, load_config
from driftwatch.core.exposure import Exposure
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import build_profile
from driftwatch.core.slicing import OTHER, Pseudonymizer, coders_from_config
from driftwatch.daemon.metrics import registry_for
from driftwatch.simulate import generate

KEY = b"test-only-pseudonym-key-0123456789"
BANDS = ("18-24", "25-34", "35-49", "50-64", "65+")
T0 = 1_700_000_000_000  # ms, a whole number of 10 s ticks
TOKEN = re.compile(r"h:[0-9a-f]{16}")

_BUILT: dict[tuple[str, ...], Pipeline] = {}


def _bias(display: tuple[str, ...]) -> Pipeline:
    """The bias scenario (40k events) under the example config with ``display`` as age_band's display values."""
    if display not in _BUILT:
        cfg = load_config(Path(__file__).resolve().parents[3] / "config" / "driftwatch.example.yaml")
        attrs = dict(cfg.attributes)
        attrs["age_band"] = attrs["age_band"].model_copy(update={"display_values": display})
        p = Pipeline(cfg.model_copy(update={"attributes": attrs}), KEY)
        enc = msgspec.json.Encoder()
        raws = [enc.encode(e) for e in generate("bias", events=40_000, seed=11)[0]]
        for i in range(0, len(raws), 4_000):
            p.process(raws[i : i + 4_000])
        p.flush()
        _BUILT[display] = p
    return _BUILT[display]


def _rows_text(p: Pipeline) -> str:
    enc = msgspec.json.Encoder()
    return "\n".join(
        enc.encode({"name": r.name, "labels": r.labels, "n": r.n}).decode()
        for w in (0.0, *p.config.windows.windows)
        for r in p.metric_rows(w)
    )


def _di_firing(p: Pipeline) -> list[dict[str, object]]:
    return [
        json.loads(encode_record(t.to_record()))
        for t in p.transitions
        if t.rule == "selection_rate_disparity" and t.state == "firing" and t.labels.get("attribute") == "age_band"
    ]


def test_display_values_name_rows_metrics_and_alerts(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every band listed, age_band slices are named by band in rows, on /metrics and in the alert's evidence."""
    monkeypatch.setenv("DRIFTWATCH_PSEUDONYM_KEY", KEY.decode())
    p = _bias(BANDS)
    age = {
        r.labels["slice"] for r in p.metric_rows(300) if r.labels.get("attribute") == "age_band" and "slice" in r.labels
    }
    assert age == set(BANDS)
    pairs = {r.labels["slice"] for r in p.metric_rows(300) if r.labels.get("attribute") == "age_band:language"}
    assert "65+:en" in pairs
    assert not any(TOKEN.search(v) for v in pairs)
    text = generate_latest(registry_for(p, window=300, max_series=100_000)).decode()
    assert re.search(r'attribute="age_band",model="[^"]+",slice="65\+"', text)
    assert 'slice="65+:en"' in text
    assert not TOKEN.search(text)
    [first, *_] = _di_firing(p)
    evidence = first["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["low_group"] == "65+"
    assert set(evidence["groups"]) <= set(BANDS)


def test_notifier_payload_carries_the_display_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook the notifier builds from the evaluator's alert record names the lowest group by its display name."""
    monkeypatch.setenv("DRIFTWATCH_PSEUDONYM_KEY", KEY.decode())
    p = _bias(BANDS)
    firing = [t for t in p.transitions if t.rule == "selection_rate_disparity" and t.state == "firing"]
    assert firing
    record = firing[0].to_record()
    nt = Notifier(
        NotifyConfig.model_validate(
            {"receivers": [{"name": "oncall", "url": "https://hooks.example.internal/dw"}], "group_wait": "30s"}
        ),
        rng=random.Random(7),
    )
    nt.update(record, record.event_seconds)
    [n] = nt.due(record.event_seconds + 30)
    body = json.loads(n.body)
    [alert] = body["driftwatch"]["alerts"].values()
    assert alert["evidence"]["low_group"] == "65+"
    assert body["alerts"][0]["labels"]["attribute"] == "age_band"
    assert not TOKEN.search(n.body.decode())


def test_audit_and_demo_line_carry_the_display_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An action on the alert is audited (hash-chained file) with the display name, and the demo's alert line shows it."""
    from driftwatch.actions.audit import AuditLog
    from driftwatch.actions.planner import ActionPlanner
    from driftwatch.config import AlertingConfig
    from driftwatch.demo.app import alert_line

    monkeypatch.setenv("DRIFTWATCH_PSEUDONYM_KEY", KEY.decode())
    p = _bias(BANDS)
    [t, *_] = [t for t in p.transitions if t.rule == "selection_rate_disparity" and t.state == "firing"]
    record = msgspec.structs.replace(t.to_record(), actions=("review",))
    alerting = AlertingConfig.model_validate({"actions": {"review": {"kind": "route_to_human", "transport": "kafka"}}})
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        planner = ActionPlanner(alerting, log.append, versions_seen=lambda _m: [])
        assert planner.on_alert(record, record.event_seconds)
    text = path.read_text()
    assert '"low_group": "65+"' in text or '"low_group":"65+"' in text
    assert not TOKEN.search(text)
    assert "lowest group=65+" in alert_line(t)


def test_values_not_listed_stay_tokens_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """With only 65+ listed, the other raw bands appear nowhere: not in rows, /metrics, alert records or webhooks."""
    monkeypatch.setenv("DRIFTWATCH_PSEUDONYM_KEY", KEY.decode())
    p = _bias(("65+",))
    hidden = [b for b in BANDS if b != "65+"]
    tokens = {Pseudonymizer(KEY).token("age_band", b) for b in hidden}
    rows = _rows_text(p)
    metrics = generate_latest(registry_for(p, window=300, max_series=100_000)).decode()
    records = "\n".join(encode_record(t.to_record()).decode() for t in p.transitions)
    assert records
    for text in (rows, metrics, records):
        for band in hidden:
            assert band not in text
    # The hidden bands are there, as tokens; the listed one by name.
    age = {
        r.labels["slice"] for r in p.metric_rows(300) if r.labels.get("attribute") == "age_band" and "slice" in r.labels
    }
    assert age == tokens | {"65+"}
    assert re.search(r'attribute="age_band",model="[^"]+",slice="65\+"', metrics)
    assert all(f'slice="{t}"' in metrics for t in tokens)
    [first, *_] = _di_firing(p)
    evidence = first["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["low_group"] == "65+"
    assert set(evidence["groups"]) == tokens | {"65+"}


def _small(min_group: int = 10) -> Pipeline:
    raw: dict[str, object] = {
        "attributes": {
            "region": {"max_values": 5},
            "age_band": {"sensitive": True, "max_values": 5, "display_values": ["18-24", "65+"]},
        },
        "intersections": [["age_band", "region"]],
        "models": {"m": {"favorable": ["yes"], "reference": {"learn_events": 100}}},
        "windows": {"tick": "10s", "lateness": "0s", "windows": ["1m"]},
        "min_samples": 5,
        "privacy": {"min_group_size": min_group},
        "rules": [
            {"name": "named", "metric": "selection_rate", "attribute": "age_band", "value": "18-24", "op": ">",
             "threshold": 0.5, "window": "1m"},
            {"name": "tokened", "metric": "selection_rate", "attribute": "age_band", "value": "35-49", "op": ">",
             "threshold": 0.5, "window": "1m"},
            {"name": "paired", "metric": "selection_rate", "attribute": "age_band:region", "value": "18-24:EU",
             "op": ">", "threshold": 0.5, "window": "1m"},
        ],
    }  # fmt: skip
    cfg = Config.model_validate(raw)
    assert cfg.problems() == []
    prof = build_profile("m", cfg.models["m"], {"prediction": ["yes", "no"] * 50})
    p = Pipeline(cfg, key=KEY, profiles={"m": prof})
    events = [("18-24", 30), ("35-49", 20), ("65+", 4)]
    enc = msgspec.json.Encoder()
    raws = [
        enc.encode(
            {
                "type": "prediction",
                "schema_version": 1,
                "event_id": f"p-{band}-{i}",
                "ts": T0 + i * 100,
                "model_id": "m",
                "model_version": "v1",
                "request_id": f"{band}-{i}",
                "prediction": "yes",
                "attributes": {"age_band": band, "region": "EU"},
            }
        )
        for band, count in events
        for i in range(count)
    ]
    p.process(raws)
    p.flush()
    return p


def test_group_below_min_group_size_is_not_named() -> None:
    """65+ is listed but has 4 members (< 10): no row, label or alert names it, by name or token."""
    p = _small()
    tok = Pseudonymizer(KEY).token("age_band", "35-49")
    age = {
        r.labels["slice"] for r in p.metric_rows(60) if r.labels.get("attribute") == "age_band" and "slice" in r.labels
    }
    assert age == {"18-24", tok}  # 65+ folded into __other__, itself withheld (4 < 10)
    pairs = {r.labels["slice"] for r in p.metric_rows(60) if r.labels.get("attribute") == "age_band:region"}
    assert pairs == {"18-24:EU", f"{tok}:EU"}
    text = _rows_text(p) + generate_latest(registry_for(p, window=60)).decode()
    text += "\n".join(encode_record(t.to_record()).decode() for t in p.transitions)
    assert "65+" not in text
    assert Pseudonymizer(KEY).token("age_band", "65+") not in text


def test_rule_value_matches_the_shown_name() -> None:
    """A rule's value is compared with the shown name: a listed band by name, an unlisted one by its token, a pair."""
    p = _small()
    tok = Pseudonymizer(KEY).token("age_band", "35-49")
    fired = {(t.rule, t.labels.get("slice")) for t in p.transitions if t.state == "firing"}
    assert fired == {("named", "18-24"), ("tokened", tok), ("paired", "18-24:EU")}


def test_shown_names_of_pairs_and_plain_values() -> None:
    """Each side of a pair shows its display name; unlisted tokens, __other__ and plain values are shown as they are."""
    cfg = Config.model_validate(
        {
            "attributes": {
                "region": {},
                "age_band": {"sensitive": True, "display_values": ["65+"]},
                "tier": {"sensitive": True, "display_values": ["gold"]},
            },
            "intersections": [["age_band", "region"], ["region", "age_band"], ["age_band", "tier"]],
            "models": {"m": {"favorable": ["yes"]}},
        }
    )
    ex = Exposure(cfg, coders_from_config(cfg, KEY))
    pz = Pseudonymizer(KEY)
    old, young, gold = pz.token("age_band", "65+"), pz.token("age_band", "18-24"), pz.token("tier", "gold")
    assert ex.shown("age_band", old) == "65+"
    assert ex.shown("age_band", young) == young
    assert ex.shown("age_band", OTHER) == OTHER
    assert ex.shown("region", "EU") == "EU"
    assert ex.shown("age_band:region", f"{old}:EU") == "65+:EU"
    assert ex.shown("age_band:region", f"{young}:EU") == f"{young}:EU"
    assert ex.shown("region:age_band", f"EU:{old}") == "EU:65+"
    assert ex.shown("age_band:tier", f"{old}:{gold}") == "65+:gold"
    assert ex.shown("age_band:tier", f"{young}:{gold}") == f"{young}:gold"
    assert ex.shown_value("age_band", "65+") == "65+"
    assert ex.shown_value("age_band", "18-24") == young
    assert ex.shown_value("region", "EU") == "EU"


@pytest.mark.parametrize("bad", ["18 24", "x" * 65, "", "__other__", "h:0123456789abcdef", "65+\n"])
def test_display_values_must_be_label_values(bad: str) -> None:
    """A display value that could not be a label value (or is reserved) is a config problem naming its key."""
    cfg = Config.model_validate(
        {
            "attributes": {"age_band": {"sensitive": True, "display_values": ["65+", bad]}},
            "models": {"m": {"favorable": ["yes"]}},
        }
    )
    problems = cfg.problems()
    assert len(problems) == 1
    assert problems[0].startswith("attributes.age_band.display_values[1]: ")
