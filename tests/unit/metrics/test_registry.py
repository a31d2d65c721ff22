"""Contract tests over every metric of the registry: one declaration reaches rules, reports, /metrics and the docs."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from prometheus_client import generate_latest

from driftwatch.config import load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import build_profile, prediction_columns
from driftwatch.daemon.metrics import SLICE_FAMILIES, registry_for
from driftwatch.metrics import registry as R
from driftwatch.simulate import generate

INTERVAL_RATES = {"selection_rate", "complaint_rate", "escalation_rate", "tpr", "fpr"}
DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def test_docs_metric_list_is_generated_from_the_registry() -> None:
    """docs/metrics.md is exactly what the registry generates (DRIFTWATCH_REGENERATE_GOLDEN=1 rewrites it)."""
    if os.environ.get("DRIFTWATCH_REGENERATE_GOLDEN") == "1":
        DOC.write_text(R.markdown())
    assert DOC.read_text() == R.markdown(), "docs/metrics.md is stale: regenerate it (see this test's docstring)"
    for m in R.REGISTRY:
        assert f"`{m.name}`" in DOC.read_text()


@pytest.mark.parametrize("metric", R.REGISTRY, ids=lambda m: m.name)
def test_declaration_is_complete(metric: R.MetricSpec) -> None:
    """Each declaration names a Prometheus family with help ending in its unit, and what its kind needs."""
    assert metric.name in R.METRICS
    assert metric.family.startswith("driftwatch_")
    assert not metric.family.endswith("_total")
    assert metric.help.endswith(").")
    assert SLICE_FAMILIES[metric.name][0] == metric.family
    if metric.kind == "proportion":
        assert metric.numerator
        assert metric.denominator
    if metric.kind == "comparison":
        assert metric.compares
        assert all(R.spec(c).kind == "proportion" for c in metric.compares)
        assert metric.comparison in ("ratio", "difference")
    if metric.kind == "quantile":
        assert metric.quantile is not None
    # Proportions and comparisons carry their interval and n on /metrics, in the value's unit.
    # Intervals where on-call compares groups: every comparison, and the rates the fairness dashboard draws.
    assert metric.interval_on_metrics == (metric.kind == "comparison" or metric.name in INTERVAL_RATES)
    if metric.interval_on_metrics:
        lower, upper, samples = metric.interval_families
        assert (lower, upper, samples) == (
            f"{metric.family}_lower",
            f"{metric.family}_upper",
            f"{metric.family}_samples",
        )
        lo_help, hi_help, n_help = metric.interval_help()
        unit = metric.help[metric.help.rindex("(") :]
        assert lo_help.endswith(unit)
        assert hi_help.endswith(unit)
        assert n_help.endswith("(count).")


def test_interval_only_for_proportions_and_comparisons() -> None:
    """A mean, quantile or drift metric cannot declare intervals on /metrics."""
    with pytest.raises(ValueError, match="only proportions and comparisons"):
        R.MetricSpec("x", "drift", "driftwatch_x", "X (unitless).", interval_on_metrics=True)


def test_unknown_metric_names_the_known_ones() -> None:
    """Asking for a metric that is not declared says which ones are."""
    with pytest.raises(KeyError, match="resolved_rate"):
        R.spec("no_such_metric")


@pytest.fixture(scope="module")
def bias_pipeline() -> Pipeline:
    """The bias scenario (labels, drift and every interaction kind) through the pure pipeline, flushed, with
    profiles built from a labelled baseline stream (so that performance is estimated too)."""
    key = b"test-only-pseudonym-key-0123456789"
    cfg = load_config(Path(__file__).resolve().parents[3] / "config" / "driftwatch.example.yaml")
    stream, _ = generate("baseline", events=20_000, seed=4)
    reference = list(stream)
    profiles = {m: build_profile(m, mc, prediction_columns(reference, m)) for m, mc in cfg.models.items()}
    assert profiles["refund-approval"].cbpe is not None  # the simulator labels refunds only
    events, _ = generate("bias", events=30_000, seed=3)
    enc = msgspec.json.Encoder()
    pipeline = Pipeline(cfg, key, profiles=profiles)
    pipeline.process([enc.encode(e) for e in events])
    pipeline.flush()
    return pipeline


class _Scrape:
    """One scrape of the bias pipeline's registry: the exposition text and every sample by name and labels."""

    def __init__(self, pipeline: Pipeline) -> None:
        registry = registry_for(pipeline, window=0.0, max_series=100_000)
        self.text = generate_latest(registry).decode()
        self.samples = {
            (s.name, frozenset(s.labels.items())): s.value for fam in registry.collect() for s in fam.samples
        }

    def get(self, name: str, labels: dict[str, str]) -> float | None:
        """What ``registry.get_sample_value`` answers, from the one scrape."""
        return self.samples.get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def bias_scrape(bias_pipeline: Pipeline) -> _Scrape:
    return _Scrape(bias_pipeline)


@pytest.mark.xdist_group("registry-bias-pipeline")  # one test process replays the stream, not each
@pytest.mark.parametrize("metric", R.REGISTRY, ids=lambda m: m.name)
def test_every_metric_reaches_reports_and_metrics(
    bias_pipeline: Pipeline, bias_scrape: _Scrape, metric: R.MetricSpec
) -> None:
    """Each registered metric has a sufficient value in the replay rows and the same value on /metrics."""
    rows = [r for r in bias_pipeline.metric_rows(0.0) if r.name == metric.name and r.status == "ok"]
    assert rows, f"{metric.name} never had a sufficient value over the bias scenario"
    scrape = bias_scrape
    assert f"# HELP {metric.family} {metric.help}" in scrape.text
    for row in rows[:20]:
        labels = {
            k: v for k, v in row.labels.items() if k in ("model", "version", "attribute", "slice", "window", "feature")
        }
        if metric.quantile is not None:
            labels["quantile"] = f"{metric.quantile:g}"
        assert scrape.get(metric.family, labels) == pytest.approx(row.value), (metric.name, labels)
        if metric.interval_on_metrics:
            lower, upper, samples = metric.interval_families
            assert scrape.get(lower, labels) == pytest.approx(row.lo)
            assert scrape.get(upper, labels) == pytest.approx(row.hi)
            assert scrape.get(samples, labels) == row.n
        if metric.kind == "drift":
            assert scrape.get(R.FEATURE_SAMPLES, labels) == row.n
