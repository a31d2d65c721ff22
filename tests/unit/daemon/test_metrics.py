"""The Prometheus collector exposes exactly the pipeline's metric rows, counters and alerts, within the budget."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from driftwatch.config import Config, load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.report import MetricRow
from driftwatch.daemon.metrics import INTERVAL_FAMILIES, SLICE_FAMILIES, DriftwatchCollector, registry_for
from driftwatch.events import REASONS
from driftwatch.metrics.registry import (
    ATTRIBUTE_METRICS,
    DRIFT_METRICS,
    FEATURE_SAMPLES,
    PROPORTION_METRICS,
    REGISTRY,
    REPORTED_SLICE_METRICS,
)
from driftwatch.simulate import generate

# The replayed pipelines are cached per process: one process builds each once.
pytestmark = pytest.mark.xdist_group("metrics-pipelines")

# Independent of the exporter's own constant on purpose.
LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:+*-]{1,64}$")
RAW_AGE_BANDS = ("18-24", "25-34", "35-49", "50-64", "65+")
SCENARIOS = ("bias", "complaint-spike")
EVENTS = 40_000
SEED = 11
WINDOW = 300.0
FULL = 100_000
"""A budget nothing in these scenarios reaches (the example config's 2000 drops attribute pairs)."""
HEALTH = (
    "driftwatch_events_total",
    "driftwatch_events_rejected_total",
    "driftwatch_join_total",
    "driftwatch_events_late_total",
    "driftwatch_labels_duplicate_total",
    "driftwatch_reference_learning_events_total",
    "driftwatch_evaluations_total",
    "driftwatch_attribute_values_folded_total",
    "driftwatch_slices_retired_total",
    "driftwatch_join_waiting",
    "driftwatch_exported_series",
    "driftwatch_series_dropped",
    "driftwatch_build_info",
    "driftwatch_alerts",
    "driftwatch_rule_statistic",
)
"""Sample names outside the series budget."""

_BUILT: dict[tuple[str, float | None], Pipeline] = {}


def _raws(scenario: str) -> list[bytes]:
    enc = msgspec.json.Encoder()
    return [enc.encode(e) for e in generate(scenario, events=EVENTS, seed=SEED)[0]]


def _build(scenario: str, key: bytes, config: Config) -> Pipeline:
    p = Pipeline(config, key)
    raws = _raws(scenario)
    for i in range(0, len(raws), 2_000):
        p.process(raws[i : i + 2_000])
    p.flush()
    return p


def _config(path: Path, coverage_min: float | None = None) -> Config:
    cfg = load_config(path)
    if coverage_min is None:
        return cfg
    models = {m: mc.model_copy(update={"label_coverage_min": coverage_min}) for m, mc in cfg.models.items()}
    return cfg.model_copy(update={"models": models})


@pytest.fixture(params=SCENARIOS)
def pipeline(request: pytest.FixtureRequest, pseudonym_key: bytes, example_config: Path) -> Pipeline:
    """A pipeline after ~40k simulated events of one scenario, flushed (built once per module and scenario)."""
    scenario: str = request.param
    if (scenario, None) not in _BUILT:
        _BUILT[(scenario, None)] = _build(scenario, pseudonym_key, _config(example_config))
    return _BUILT[(scenario, None)]


@pytest.fixture
def strict_labels(pseudonym_key: bytes, example_config: Path) -> Pipeline:
    """The bias scenario under a config that needs 99% label coverage: label metrics are provisional."""
    if ("bias", 0.99) not in _BUILT:
        _BUILT[("bias", 0.99)] = _build("bias", pseudonym_key, _config(example_config, 0.99))
    return _BUILT[("bias", 0.99)]


def _key(name: str, labels: dict[str, str]) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def _samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of one scrape by (name, labels)."""
    out = {}
    for fam in registry.collect():
        for s in fam.samples:
            k = _key(s.name, s.labels)
            assert k not in out, f"duplicate series {k}"
            out[k] = s.value
    return out


def _getter(registry: CollectorRegistry) -> Callable[..., float | None]:
    """``registry.get_sample_value`` over one scrape (it collects the whole registry on every call: with thousands
    of series, a test's loop of calls cost seconds)."""
    scraped = _samples(registry)

    def get(name: str, labels: dict[str, str] | None = None) -> float | None:
        return scraped.get(_key(name, labels or {}))

    return get


def _expected(row: MetricRow) -> tuple[str, dict[str, str]]:
    """The sample name and labels a metric row should be exported under."""
    family, quantile = SLICE_FAMILIES[row.name]
    keys = ("model", "version", "attribute", "slice", "window", "feature")
    labels = {k: row.labels[k] for k in keys if k in row.labels}
    if quantile is not None:
        labels["quantile"] = quantile
    return family, labels


def _interval_series(row: MetricRow) -> list[tuple[str, float]]:
    """The interval and sample-count series exported with a sufficient metric row, by family."""
    if row.name in INTERVAL_FAMILIES:
        lower, upper, samples = INTERVAL_FAMILIES[row.name]
        assert row.lo is not None
        assert row.hi is not None
        return [(lower, row.lo), (upper, row.hi), (samples, float(row.n))]
    if row.name in DRIFT_METRICS:
        return [(FEATURE_SAMPLES, float(row.n))]
    return []


def _slice(row: MetricRow) -> dict[str, str]:
    return {k: row.labels[k] for k in ("model", "version", "attribute", "slice", "window")}


def test_every_metric_row_has_a_family() -> None:
    """Each slice and attribute metric the evaluator reports maps to a family; nothing falls through."""
    assert set(SLICE_FAMILIES) == set(REPORTED_SLICE_METRICS) | DRIFT_METRICS | ATTRIBUTE_METRICS


def test_gauges_equal_metric_rows(pipeline: Pipeline) -> None:
    """Every sufficient value is exported exactly (with its interval and n), insufficient ones are absent, nothing else."""
    registry = registry_for(pipeline, max_series=FULL)
    samples = _samples(registry)
    rows = list(pipeline.metric_rows(WINDOW))
    assert rows, "the scenario produced no metric rows"
    expected_keys = set()
    insufficient = 0
    for row in rows:
        name, labels = _expected(row)
        k = _key(name, labels)
        if row.status == "insufficient":
            insufficient += 1
            assert k not in samples, f"insufficient value exported: {row}"
            continue
        assert samples.get(k) == row.value, row
        expected_keys.add(k)
        for extra, value in _interval_series(row):
            ke = _key(extra, labels)
            assert samples.get(ke) == value, (extra, row)
            expected_keys.add(ke)
        if row.status == "provisional":
            expected_keys.add(_key("driftwatch_label_metrics_provisional", _slice(row)))
    assert insufficient > 0, "the scenario should leave some values insufficient"
    for row in rows:
        if "slice" in row.labels and row.name == "selection_rate":
            pred = _key("driftwatch_predictions", _slice(row))
            assert samples[pred] == row.n
            expected_keys.add(pred)
    budgeted = {k for k in samples if not k[0].startswith(HEALTH)}
    assert budgeted == expected_keys
    assert registry.get_sample_value("driftwatch_exported_series") == len(budgeted)
    assert registry.get_sample_value("driftwatch_series_dropped", {"reason": "budget"}) == 0
    assert registry.get_sample_value("driftwatch_series_dropped", {"reason": "unmapped_metric"}) == 0


@pytest.mark.parametrize(
    ("metric", "attribute", "slice_"),
    [
        ("selection_rate", "*", "*"),
        ("complaint_rate", "*", "*"),
        ("mean_score", "*", "*"),
        ("complaint_rate", "region", None),
        ("label_coverage", "channel", None),
        ("escalation_rate", "age_band", None),
        ("selection_rate", "age_band:language", None),
        ("label_delay_p90_seconds", "*", "*"),
    ],
)
def test_named_slices_via_get_sample_value(pipeline: Pipeline, metric: str, attribute: str, slice_: str | None) -> None:
    """Spot checks through the public registry API: a slice's gauge is the metric row's value."""
    registry = registry_for(pipeline, window=0, max_series=FULL)
    row = next(
        r
        for r in pipeline.metric_rows(0)
        if r.name == metric
        and r.status != "insufficient"
        and r.labels["attribute"] == attribute
        and (slice_ is None or r.labels["slice"] == slice_)
    )
    assert row.labels["window"] == "since_start"
    name, labels = _expected(row)
    assert registry.get_sample_value(name, labels) == row.value


@pytest.mark.parametrize("metric", ["disparate_impact_ratio", "complaint_parity_difference"])
def test_fairness_gauges(pipeline: Pipeline, metric: str) -> None:
    """Per protected attribute, the fairness gauges equal the metric rows; insufficient comparisons are absent."""
    get = _getter(registry_for(pipeline))
    rows = [r for r in pipeline.metric_rows(WINDOW) if r.name == metric]
    assert {r.labels["attribute"] for r in rows} == {"age_band", "language"}
    assert any(r.status == "ok" for r in rows)
    family = SLICE_FAMILIES[metric][0]
    for row in rows:
        labels = {k: row.labels[k] for k in ("model", "version", "attribute", "window")}
        got = get(family, labels)
        if row.status == "insufficient":
            assert got is None
        else:
            assert got == row.value


def test_insufficient_value_is_absent_not_zero(pipeline: Pipeline) -> None:
    """A value without enough samples has no series at all, while its slice's prediction count is shown."""
    registry = registry_for(pipeline, max_series=FULL)
    row = next(r for r in pipeline.metric_rows(WINDOW) if r.status == "insufficient" and "slice" in r.labels)
    name, labels = _expected(row)
    assert registry.get_sample_value(name, labels) is None
    assert registry.get_sample_value("driftwatch_predictions", _slice(row)) is not None
    # Nor are its interval and n: they belong to a value.
    for extra in INTERVAL_FAMILIES.get(row.name, ()):
        assert registry.get_sample_value(extra, labels) is None


def test_counters_equal_pipeline_counters(pipeline: Pipeline) -> None:
    """Health counters are the pipeline's counters, with every known rejection reason present."""
    get = _getter(registry_for(pipeline))
    c = pipeline.counters
    assert get("driftwatch_events_total", {"kind": "prediction"}) == c.predictions > 0
    assert get("driftwatch_events_total", {"kind": "interaction"}) == c.interactions > 0
    assert c.predictions + c.interactions == EVENTS
    for reason in (*REASONS, "unknown_model"):
        assert get("driftwatch_events_rejected_total", {"reason": reason}) == c.rejected.get(reason, 0)
    assert get("driftwatch_join_total", {"outcome": "hit"}) == c.join_hits > 0
    assert get("driftwatch_join_total", {"outcome": "miss"}) == c.join_misses
    assert get("driftwatch_events_late_total") == c.late_dropped
    assert get("driftwatch_labels_duplicate_total") == c.duplicate_labels
    assert get("driftwatch_reference_learning_events_total") == c.reference_learning > 0
    assert get("driftwatch_evaluations_total") == c.evaluations > 0
    for attribute, coder in pipeline.coders.items():
        assert get("driftwatch_attribute_values_folded_total", {"attribute": attribute}) == coder.folded
    assert get("driftwatch_slices_retired_total") == c.slices_retired
    assert get("driftwatch_join_waiting") == pipeline.ingestor.waiting()
    assert get("driftwatch_build_info", {"version": "0.1.0"}) == 1


def test_interactions_waiting_for_their_prediction_are_a_gauge(pseudonym_key: bytes, example_config: Path) -> None:
    """Interactions that came before their prediction show as waiting (not only later, as join misses); a scrape
    asking for the gauge alone gets it."""
    p = Pipeline(_config(example_config), pseudonym_key)
    start = 1_795_000_000_000
    inter = [
        msgspec.json.encode(
            {
                "type": "interaction",
                "schema_version": 1,
                "event_id": f"i{k}",
                "ts": start + k,
                "request_id": f"r{k}",
                "kind": "complaint",
            }
        )
        for k in range(7)
    ]
    p.process(inter)
    registry = registry_for(p)
    assert registry.get_sample_value("driftwatch_join_waiting") == p.ingestor.waiting() == 7
    only = registry.restricted_registry(["driftwatch_join_waiting"])
    assert [m.name for m in only.collect()] == ["driftwatch_join_waiting"]


def test_label_values_match_the_label_grammar(pipeline: Pipeline) -> None:
    """Every label value of every sample is a short token of the allowed characters."""
    samples = _samples(registry_for(pipeline, window=0))
    assert samples
    for name, labels in samples:
        for label, value in labels:
            assert LABEL_VALUE.fullmatch(value), f"{name}{{{label}={value!r}}}"


def test_no_raw_sensitive_value_is_exposed(pseudonym_key: bytes, example_config: Path) -> None:
    """age_band is sensitive: a band not in display_values appears only as its keyed token, never raw."""
    cfg = _config(example_config)
    attrs = {**cfg.attributes, "age_band": cfg.attributes["age_band"].model_copy(update={"display_values": ("65+",)})}
    p = _build("bias", pseudonym_key, cfg.model_copy(update={"attributes": attrs}))
    text = generate_latest(registry_for(p, window=0, max_series=FULL)).decode()
    for raw in RAW_AGE_BANDS:
        if raw != "65+":
            assert raw not in text
    assert re.search(r'attribute="age_band",.*slice="h:[0-9a-f]{16}"', text)
    assert re.search(r'attribute="age_band",.*slice="65\+"', text)


def test_display_values_are_label_values(pipeline: Pipeline) -> None:
    """The example config lists every band in display_values: age_band slices and pairs are named by band."""
    text = generate_latest(registry_for(pipeline, window=0, max_series=FULL)).decode()
    shown = set(re.findall(r'attribute="age_band",model="[^"]+",slice="([^"]+)"', text))
    assert shown == set(RAW_AGE_BANDS)
    assert re.search(r'attribute="age_band:language",model="[^"]+",slice="65\+:en"', text)
    assert not re.search(r"h:[0-9a-f]{16}", text)


def test_intervals_bracket_values_and_samples_count(pipeline: Pipeline) -> None:
    """Each proportion and comparison has lower <= value <= upper and its n; drift has its feature's n; the budget counts them."""
    samples = _samples(registry_for(pipeline, max_series=FULL))
    rates = {"selection_rate", "complaint_rate", "escalation_rate", "tpr", "fpr"}
    assert {m.name for m in REGISTRY if m.interval_on_metrics} == rates | ATTRIBUTE_METRICS
    assert rates <= PROPORTION_METRICS
    seen: set[str] = set()
    for (name, labels), value in samples.items():
        for metric, (lower, upper, count) in INTERVAL_FAMILIES.items():
            family = SLICE_FAMILIES[metric][0]
            if name != family:
                continue
            seen.add(metric)
            lo, hi, n = samples[(lower, labels)], samples[(upper, labels)], samples[(count, labels)]
            assert lo <= value <= hi, (name, labels)
            assert n >= pipeline.config.min_samples
            assert n == int(n)
        if name == "driftwatch_predictions":
            sel = samples.get(("driftwatch_selection_rate_samples", labels))
            assert sel is None or sel == value  # a proportion over predictions is over the slice's predictions
        if name == "driftwatch_feature_psi":
            assert samples[(FEATURE_SAMPLES, labels)] >= pipeline.config.min_samples
    assert {"selection_rate", "complaint_rate", "disparate_impact_ratio"} <= seen
    # An interval or n never appears without its value.
    value_of = {f: SLICE_FAMILIES[m][0] for m, fams in INTERVAL_FAMILIES.items() for f in fams}
    for name, labels in samples:
        if name in value_of:
            assert (value_of[name], labels) in samples, (name, labels)
        if name == FEATURE_SAMPLES:
            assert ("driftwatch_feature_psi", labels) in samples or (
                "driftwatch_feature_js_distance",
                labels,
            ) in samples


def test_budget_keeps_whole_model_slices_first(pipeline: Pipeline) -> None:
    """With a small budget: at most that many slice series, whole-model slices first, health intact, drops counted."""
    full = _samples(registry_for(pipeline, max_series=FULL))
    registry = registry_for(pipeline, max_series=100)
    samples = _samples(registry)
    budgeted = [k for k in samples if not k[0].startswith(HEALTH)]
    assert 0 < len(budgeted) <= 100
    assert registry.get_sample_value("driftwatch_exported_series") == len(budgeted)
    dropped = registry.get_sample_value("driftwatch_series_dropped", {"reason": "budget"})
    assert dropped is not None
    assert dropped > 0
    assert len(budgeted) + dropped == len([k for k in full if not k[0].startswith(HEALTH)])
    # What is kept is a subset of the full scrape, and only whole-model slices made it.
    for k in budgeted:
        assert samples[k] == full[k]
        assert {("attribute", "*"), ("slice", "*")} <= k[1]
    assert {k for k in samples if k[0].startswith(HEALTH)} == {k for k in full if k[0].startswith(HEALTH)}
    assert registry.get_sample_value("driftwatch_events_total", {"kind": "prediction"}) == pipeline.counters.predictions


def test_budget_order_is_tiered_and_stable(pipeline: Pipeline) -> None:
    """A larger budget only adds series, and a tier is exported only once every tier above it is complete."""
    full = set(_budgeted_keys(registry_for(pipeline, max_series=FULL)))
    tiers = [{k for k in full if _tier(k) == t} for t in range(4)]
    assert all(tiers), "every tier should have series in this scenario"
    previous: set[Key] = set()
    for budget in (0, 30, 100, 300, 600, 1000, len(full)):
        kept = set(_budgeted_keys(registry_for(pipeline, max_series=budget)))
        assert previous <= kept
        assert len(kept) <= budget
        for t in range(1, 4):
            if kept & tiers[t]:
                assert all(tier <= kept for tier in tiers[:t]), f"budget {budget}: tier {t} before the ones above"
        previous = kept
    assert previous == full


Key = tuple[str, frozenset[tuple[str, str]]]


def _budgeted_keys(registry: CollectorRegistry) -> Iterator[Key]:
    return (k for k in _samples(registry) if not k[0].startswith(HEALTH))


def _tier(k: Key) -> int:
    """0 whole model, 1 attribute comparisons, 2 single-attribute slices, 3 attribute pairs."""
    labels = dict(k[1])
    if "slice" not in labels:
        return 1
    if labels["attribute"] == "*":
        return 0
    return 3 if ":" in labels["attribute"] else 2


def test_firing_alerts_are_counted_per_rule(pipeline: Pipeline) -> None:
    """driftwatch_alerts counts the engine's alerts per rule, state and model version, zero-filled where a rule applies."""
    registry = registry_for(pipeline)
    scraped = _samples(registry)  # one scrape: get_sample_value collects the whole registry on every call
    active = pipeline.engine.active()
    owner = {t.fingerprint: (t.rule, t.labels["model"], t.labels["version"]) for t in pipeline.transitions}
    firing: dict[tuple[str, str, str], int] = {}
    for fp, state in active.items():
        if state == "firing":
            firing[owner[fp]] = firing.get(owner[fp], 0) + 1
    assert firing, "the scenario should leave an alert firing"
    expected_rule = {"bias": "selection_rate_disparity", "complaint-spike": "complaint_rate_high"}
    assert any(r in {k[0] for k in firing} for r in expected_rule.values())
    exported = {labels for name, labels in scraped if name == "driftwatch_alerts"}
    expected = set()
    for rule in pipeline.config.rules:
        for model, version in pipeline.evaluator.streams:
            if rule.model not in ("*", model) or rule.version not in ("*", version):
                continue
            where = {"alertname": rule.name, "model": model, "version": version}
            for state in ("firing", "pending"):
                expected.add(frozenset({**where, "state": state}.items()))
            got = scraped.get(_key("driftwatch_alerts", {**where, "state": "firing"}))
            assert got == firing.get((rule.name, model, version), 0)
            pending = sum(
                1 for fp, st in active.items() if st == "pending" and owner[fp] == (rule.name, model, version)
            )
            assert scraped.get(_key("driftwatch_alerts", {**where, "state": "pending"})) == pending
    assert exported == expected


def test_alerts_restored_from_a_checkpoint_are_still_counted(
    pipeline: Pipeline, pseudonym_key: bytes, example_config: Path
) -> None:
    """A worker that restored its evaluator from a checkpoint (no transition in memory) counts the same alerts."""
    before = _samples(registry_for(pipeline))  # one scrape each: get_sample_value collects on every call
    restored = Pipeline(_config(example_config), pseudonym_key)
    restored.ingestor.layouts.update(pipeline.ingestor.layouts)
    restored.evaluator.restore(pipeline.evaluator.snapshot(pipeline.config.models))
    assert not restored.transitions
    after = _samples(registry_for(restored))
    counts = {key: value for key, value in before.items() if key[0] == "driftwatch_alerts"}
    assert any(v for v in counts.values()), "the scenario should leave an alert open"
    for key, value in counts.items():
        assert after.get(key) == value, dict(key[1])


def test_provisional_label_metrics_are_flagged(strict_labels: Pipeline) -> None:
    """Below the label coverage minimum, TPR etc. are still exported and exactly those slices are flagged provisional."""
    samples = _samples(registry_for(strict_labels, window=0, max_series=FULL))
    rows = list(strict_labels.metric_rows(0))
    provisional = [r for r in rows if r.status == "provisional"]
    assert provisional
    for row in provisional:
        name, labels = _expected(row)
        assert samples[_key(name, labels)] == row.value
    flagged = {k for k in samples if k[0] == "driftwatch_label_metrics_provisional"}
    # The flag is per slice; provisional group comparisons are exported but carry no slice to flag.
    per_slice = [r for r in provisional if "slice" in r.labels]
    assert flagged == {_key("driftwatch_label_metrics_provisional", _slice(r)) for r in per_slice}
    assert all(samples[k] == 1 for k in flagged)
    # Slices whose label metrics are all insufficient are not flagged: there is nothing provisional to hide.
    label_slices = {_key("driftwatch_label_metrics_provisional", _slice(r)) for r in rows if r.name == "tpr"}
    assert flagged < label_slices


def test_invalid_label_values_are_skipped_and_counted(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row whose label value breaks the grammar is not exported; it is counted as dropped."""
    real = pipeline.evaluator.metric_rows
    base = {"model": "support-router", "version": "v7", "window": "300s", "attribute": "region"}
    bad = [
        MetricRow("complaint_rate", {**base, "slice": "has space"}, 0.5, 500, 0.4, 0.6, "ok"),
        MetricRow("complaint_rate", {**base, "slice": "x" * 65}, 0.5, 500, 0.4, 0.6, "ok"),
        MetricRow("complaint_rate", {**base, "slice": ""}, 0.5, 500, 0.4, 0.6, "ok"),
        MetricRow("no_such_metric", {**base, "slice": "EU"}, 0.5, 500, 0.4, 0.6, "ok"),
    ]

    def rows(window: float = 0.0) -> Iterator[MetricRow]:
        yield from real(window)
        yield from bad

    monkeypatch.setattr(pipeline.evaluator, "metric_rows", rows)
    registry = registry_for(pipeline)
    # Each bad complaint_rate row: its value, lower, upper and samples series.
    assert registry.get_sample_value("driftwatch_series_dropped", {"reason": "invalid_label"}) == 3 * 4
    assert registry.get_sample_value("driftwatch_series_dropped", {"reason": "unmapped_metric"}) == 1
    for _name, labels in _samples(registry):
        for _, value in labels:
            assert LABEL_VALUE.fullmatch(value)


def test_one_metric_rows_pass_per_scrape(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape reads the metric rows exactly once, and only at scrape time (never at registration)."""
    real = pipeline.evaluator.metric_rows
    calls: list[float] = []

    def counting(window: float = 0.0) -> Iterator[MetricRow]:
        calls.append(window)
        return real(window)

    monkeypatch.setattr(pipeline.evaluator, "metric_rows", counting)
    registry = registry_for(pipeline)
    assert calls == []
    generate_latest(registry)
    assert calls == [WINDOW]


def test_scrapes_read_live_state(pseudonym_key: bytes, example_config: Path) -> None:
    """Nothing is cached across scrapes: a later scrape shows the events processed since."""
    p = Pipeline(load_config(example_config), pseudonym_key)
    registry = registry_for(p)
    assert registry.get_sample_value("driftwatch_events_total", {"kind": "prediction"}) == 0
    assert registry.get_sample_value("driftwatch_exported_series") == 0
    raws = _raws("complaint-spike")[:20_000]
    p.process(raws)
    p.flush()
    assert registry.get_sample_value("driftwatch_events_total", {"kind": "prediction"}) == p.counters.predictions > 0
    assert registry.get_sample_value("driftwatch_evaluations_total") == p.counters.evaluations > 0
    exported = registry.get_sample_value("driftwatch_exported_series")
    assert exported is not None
    assert exported > 0


def test_window_must_be_configured(pseudonym_key: bytes, example_config: Path) -> None:
    """An unconfigured window is refused up front; the default is the first configured window."""
    p = Pipeline(load_config(example_config), pseudonym_key)
    with pytest.raises(ValueError, match="not a configured window"):
        registry_for(p, window=120)
    with pytest.raises(ValueError):
        DriftwatchCollector(p.evaluator, window=300, max_series=-1)
    collector = DriftwatchCollector(p.evaluator, window=3600)
    assert collector.window == 3600
    assert registry_for(p).get_sample_value("driftwatch_exported_series") == 0


def test_every_family_has_help(pipeline: Pipeline) -> None:
    """Each family carries help text, describe() names them without reading state, and the names are unique."""
    collector = DriftwatchCollector(pipeline.evaluator, window=WINDOW)
    described = list(collector.describe())
    assert all(not m.samples for m in described)
    collected = list(collector.collect())
    assert [m.name for m in described] == [m.name for m in collected]
    assert len({m.name for m in collected}) == len(collected)
    for m in collected:
        assert m.name.startswith("driftwatch_")
        assert len(m.documentation) > 20, m.name
        assert re.search(r"\(.+\)\.$", m.documentation), f"{m.name}: help should end with its unit in parentheses"
    assert not any(math.isnan(s.value) for m in collected for s in m.samples)


def test_personal_looking_values_never_reach_metrics(pseudonym_key: bytes, example_config: Path) -> None:
    """Phone numbers sent as a non-sensitive attribute fold into __other__ (counted) and appear nowhere on /metrics."""
    phones = [f"+1555{i:07d}" for i in range(3)]  # few, so each group is large enough to be shown by name
    enc = msgspec.json.Encoder()
    raws = []
    for i, (e, phone) in enumerate(zip(generate("baseline", events=20_000, seed=2)[0], phones * 7000, strict=False)):
        if e["type"] == "prediction" and i % 2 == 0:
            e = {**e, "attributes": {**e["attributes"], "region": phone}}
        raws.append(enc.encode(e))
    p = Pipeline(load_config(example_config), pseudonym_key)
    p.process(raws)
    p.flush()
    text = generate_latest(registry_for(p, window=0.0, max_series=100_000)).decode()
    assert not any(phone in text for phone in phones)
    assert not re.search(r"\+1555\d+", text)
    assert p.coders["region"].folded > 0
    assert 'slice="__other__"' in text
