"""Every metric driftwatch computes, declared once.

A :class:`MetricSpec` says what a metric is (a proportion of two summary
columns, a drift distance, a comparison of a rate across groups, ...), what it
needs, and how it is shown: its Prometheus family and help, whether it is a
row in reports, whether a change detector may watch it, and its column in
``driftwatch replay``'s table. The config's rule validation, the metric
tables, the report rows, the Prometheus families and their help, the replay
table and ``docs/metrics.md`` all derive from :data:`REGISTRY`.

Adding a rate is one entry here plus a formula test. For example, the share
of predictions whose customer said the issue was resolved:

>>> spec("resolved_rate").numerator, spec("resolved_rate").denominator
(('resolved',), ('n_pred',))

Kept free of numpy so that config validation can import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ATTRIBUTE_METRICS",
    "DETECTOR_SERIES",
    "DRIFT_METRICS",
    "ESTIMATE_METRICS",
    "FEATURE_SAMPLES",
    "FEATURE_SAMPLES_HELP",
    "LABEL_METRICS",
    "METRICS",
    "PROPORTION_METRICS",
    "REGISTRY",
    "REPORTED_SLICE_METRICS",
    "SLICE_METRICS",
    "TABLE_COLUMNS",
    "MetricSpec",
    "markdown",
    "spec",
]

Kind = Literal["proportion", "mean", "quantile", "drift", "comparison", "estimate"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: its definition, what it needs, and how it is exposed."""

    name: str
    """The name rules, metric rows and ``replay --json`` use."""
    kind: Kind
    """``proportion`` (numerator / denominator columns, Wilson interval), ``mean``, ``quantile``, ``drift``
    (a distance from the reference profile, per feature), ``comparison`` (a rate compared across the groups of a
    protected attribute) or ``estimate`` (performance estimated from calibrated scores before labels arrive)."""
    family: str
    """Prometheus family (a ``quantile`` metric shares its family with the other quantiles)."""
    help: str
    """Prometheus help: what the value is, with its unit in parentheses."""
    numerator: tuple[str, ...] = ()
    """Summary columns summed for a proportion's numerator (names from ``core.summary.BASE_COLUMNS``)."""
    denominator: tuple[str, ...] = ()
    """Summary columns summed for a proportion's denominator."""
    compares: tuple[str, ...] = ()
    """For a comparison: the rate(s) compared; with two, the larger gap counts (equalized odds)."""
    comparison: Literal["ratio", "difference"] | None = None
    """For a comparison: lowest over highest rate, or highest minus lowest."""
    quantile: float | None = None
    """For a quantile metric: which one (also the ``quantile`` label on /metrics)."""
    needs_labels: bool = False
    """Needs ground-truth labels: provisional until label coverage passes the model's level."""
    detectable: bool = False
    """A River change detector may watch its per-tick series."""
    column: str | None = None
    """Its column in ``driftwatch replay``'s table (None: only in ``--json`` and on /metrics)."""
    column_order: int = 0
    """Table columns sort by this, then by declaration order."""
    interval_on_metrics: bool = False
    """Set for the rates on-call compares across groups (selection, complaint, escalation, TPR, FPR) and every
    comparison; the others would cost three series per slice that no dashboard draws. /metrics also exports ``<family>_lower``, ``<family>_upper`` (the 95% interval, same unit) and
    ``<family>_samples`` (n: a proportion's denominator, a comparison's smallest compared group), same labels."""

    def __post_init__(self) -> None:
        if self.interval_on_metrics and self.kind not in ("proportion", "comparison"):
            raise ValueError(f"{self.name}: only proportions and comparisons export intervals on /metrics")

    @property
    def unit(self) -> str:
        """The unit ending the help text, without its parentheses."""
        return self.help[self.help.rindex("(") + 1 : self.help.rindex(")")]

    @property
    def share(self) -> bool:
        """A proportion of at most one event per trial (its unit is ``ratio 0-1``), unlike a count per prediction
        such as complaints."""
        return self.kind == "proportion" and self.unit.startswith("ratio 0-1")

    @property
    def interval_families(self) -> tuple[str, str, str]:
        """(lower, upper, samples) families on /metrics; empty names unless :attr:`interval_on_metrics`."""
        if not self.interval_on_metrics:
            return ("", "", "")
        return (f"{self.family}_lower", f"{self.family}_upper", f"{self.family}_samples")

    def interval_help(self) -> tuple[str, str, str]:
        """Help texts of :attr:`interval_families`, each ending with its unit in parentheses."""
        if self.kind == "proportion":
            what = f"the slice's {_COUNTED.get(self.denominator, ' + '.join(self.denominator))} in the window"
        else:
            rates = " or ".join(self.compares)
            what = f"the smallest compared group's denominator of {rates} in the window"
        return (
            f"Lower bound of the 95% interval of {self.family} ({self.unit}).",
            f"Upper bound of the 95% interval of {self.family} ({self.unit}).",
            f"Samples behind {self.family} with the same labels: {what} (count).",
        )


_COUNTED: Final[dict[tuple[str, ...], str]] = {
    ("n_pred",): "predictions",
    ("n_label",): "labelled predictions",
    ("tp", "fn"): "labelled positives (TP + FN)",
    ("fp", "tn"): "labelled negatives (FP + TN)",
}
"""What a proportion's denominator counts, for help texts."""

FEATURE_SAMPLES: Final = "driftwatch_feature_samples"
"""/metrics family of the n of the drift metrics (PSI and JS distance share it)."""
FEATURE_SAMPLES_HELP: Final = (
    "Values of the feature (or score, or prediction) in the slice and window that PSI and JS distance are "
    "computed over (count)."
)

_PER_PREDICTION = "per prediction of the slice in the window (ratio; several per request can exceed 1)"
_ACROSS = "across the groups of a protected attribute in the window"

REGISTRY: Final[tuple[MetricSpec, ...]] = (
    MetricSpec(
        "selection_rate",
        "proportion",
        "driftwatch_selection_rate",
        "Share of the slice's predictions in the window with a favourable outcome (ratio 0-1).",
        numerator=("n_fav",),
        denominator=("n_pred",),
        detectable=True,
        column="selection",
        interval_on_metrics=True,
    ),
    MetricSpec(
        "mean_score",
        "mean",
        "driftwatch_mean_score",
        "Mean model score of the slice's predictions in the window (the model's score scale).",
        detectable=True,
    ),
    MetricSpec(
        "complaint_rate",
        "proportion",
        "driftwatch_complaint_rate",
        f"Complaints {_PER_PREDICTION}.",
        numerator=("complaint",),
        denominator=("n_pred",),
        detectable=True,
        column="complaint",
        interval_on_metrics=True,
    ),
    MetricSpec(
        "escalation_rate",
        "proportion",
        "driftwatch_escalation_rate",
        f"Escalations to a human {_PER_PREDICTION}.",
        numerator=("escalation",),
        denominator=("n_pred",),
        detectable=True,
        column="escalation",
        interval_on_metrics=True,
    ),
    MetricSpec(
        "thumbs_down_rate",
        "proportion",
        "driftwatch_thumbs_down_rate",
        f"Thumbs-down reactions {_PER_PREDICTION}.",
        numerator=("thumbs_down",),
        denominator=("n_pred",),
        detectable=True,
        column="thumbs_down",
    ),
    MetricSpec(
        "override_rate",
        "proportion",
        "driftwatch_override_rate",
        f"Human overrides of the decision {_PER_PREDICTION}.",
        numerator=("override",),
        denominator=("n_pred",),
        detectable=True,
        column="override",
    ),
    MetricSpec(
        "label_coverage",
        "proportion",
        "driftwatch_label_coverage_ratio",
        "Share of the slice's predictions in the window that have a ground-truth label (ratio 0-1).",
        numerator=("n_label",),
        denominator=("n_pred",),
        column="label cov.",
        column_order=1,
    ),
    MetricSpec(
        "tpr",
        "proportion",
        "driftwatch_true_positive_rate",
        "True-positive rate TP/(TP+FN) of the slice's labelled predictions in the window (ratio 0-1).",
        numerator=("tp",),
        denominator=("tp", "fn"),
        needs_labels=True,
        column="tpr",
        interval_on_metrics=True,
    ),
    MetricSpec(
        "fpr",
        "proportion",
        "driftwatch_false_positive_rate",
        "False-positive rate FP/(FP+TN) of the slice's labelled predictions in the window (ratio 0-1).",
        numerator=("fp",),
        denominator=("fp", "tn"),
        needs_labels=True,
        interval_on_metrics=True,
    ),
    MetricSpec(
        "error_rate",
        "proportion",
        "driftwatch_error_rate",
        "Share of the slice's labelled predictions in the window that were wrong (ratio 0-1).",
        numerator=("fp", "fn"),
        denominator=("n_label",),
        needs_labels=True,
    ),
    MetricSpec(
        "label_delay_p50_seconds",
        "quantile",
        "driftwatch_label_delay_seconds",
        "Delay from a prediction to its ground-truth label in the slice and window, quantile estimates within one "
        "log bucket (seconds).",
        quantile=0.5,
    ),
    MetricSpec(
        "label_delay_p90_seconds",
        "quantile",
        "driftwatch_label_delay_seconds",
        "Delay from a prediction to its ground-truth label in the slice and window, quantile estimates within one "
        "log bucket (seconds).",
        quantile=0.9,
    ),
    MetricSpec(
        "resolved_rate",
        "proportion",
        "driftwatch_resolved_rate",
        f"Interactions marking the customer's issue resolved {_PER_PREDICTION}.",
        numerator=("resolved",),
        denominator=("n_pred",),
        detectable=True,
    ),
    *(
        MetricSpec(
            f"estimated_{name}",
            "estimate",
            f"driftwatch_estimated_{family}",
            f"{what} of the slice's scored predictions in the window, estimated before labels arrive from the "
            f"score's calibration on labelled reference data (confidence-based performance estimation) ({unit}).",
        )
        for name, family, what, unit in (
            ("accuracy", "accuracy", "Expected accuracy", "ratio 0-1"),
            ("tpr", "true_positive_rate", "Expected true-positive rate", "ratio 0-1"),
            ("fpr", "false_positive_rate", "Expected false-positive rate", "ratio 0-1"),
            ("precision", "precision", "Expected precision", "ratio 0-1"),
            ("roc_auc", "roc_auc", "Expected ROC AUC", "ratio 0-1"),
        )
    ),
    MetricSpec(
        "psi",
        "drift",
        "driftwatch_feature_psi",
        "Population stability index of a feature, the score or the prediction in the slice and window against the "
        "reference profile (unitless).",
    ),
    MetricSpec(
        "js_distance",
        "drift",
        "driftwatch_feature_js_distance",
        "Jensen-Shannon distance of a feature, the score or the prediction in the slice and window from the "
        "reference profile (unitless 0-1).",
    ),
    MetricSpec(
        "disparate_impact_ratio",
        "comparison",
        "driftwatch_fairness_disparate_impact_ratio",
        f"Lowest over highest selection rate {_ACROSS} (ratio).",
        compares=("selection_rate",),
        comparison="ratio",
        interval_on_metrics=True,
    ),
    MetricSpec(
        "statistical_parity_difference",
        "comparison",
        "driftwatch_fairness_statistical_parity_difference",
        f"Highest minus lowest selection rate {_ACROSS} (ratio difference).",
        compares=("selection_rate",),
        comparison="difference",
        interval_on_metrics=True,
    ),
    MetricSpec(
        "equalized_odds_difference",
        "comparison",
        "driftwatch_fairness_equalized_odds_difference",
        f"Larger of the TPR gap and the FPR gap {_ACROSS} (ratio difference).",
        compares=("tpr", "fpr"),
        comparison="difference",
        needs_labels=True,
        interval_on_metrics=True,
    ),
    MetricSpec(
        "equal_opportunity_difference",
        "comparison",
        "driftwatch_fairness_equal_opportunity_difference",
        f"Highest minus lowest true-positive rate {_ACROSS} (ratio difference).",
        compares=("tpr",),
        comparison="difference",
        needs_labels=True,
        interval_on_metrics=True,
    ),
    MetricSpec(
        "complaint_parity_ratio",
        "comparison",
        "driftwatch_complaint_parity_ratio",
        f"Lowest over highest complaint rate {_ACROSS} (ratio).",
        compares=("complaint_rate",),
        comparison="ratio",
        interval_on_metrics=True,
    ),
    MetricSpec(
        "complaint_parity_difference",
        "comparison",
        "driftwatch_complaint_parity_difference",
        f"Highest minus lowest complaint rate {_ACROSS} (ratio difference).",
        compares=("complaint_rate",),
        comparison="difference",
        interval_on_metrics=True,
    ),
    MetricSpec(
        "escalation_parity_ratio",
        "comparison",
        "driftwatch_escalation_parity_ratio",
        f"Lowest over highest escalation rate {_ACROSS} (ratio).",
        compares=("escalation_rate",),
        comparison="ratio",
        interval_on_metrics=True,
    ),
    MetricSpec(
        "escalation_parity_difference",
        "comparison",
        "driftwatch_escalation_parity_difference",
        f"Highest minus lowest escalation rate {_ACROSS} (ratio difference).",
        compares=("escalation_rate",),
        comparison="difference",
        interval_on_metrics=True,
    ),
)
"""Every metric, in the order metric rows are reported (slice metrics, drift per feature, comparisons)."""

_BY_NAME: Final = {s.name: s for s in REGISTRY}


def spec(name: str) -> MetricSpec:
    """The declaration of metric ``name`` (KeyError naming the known metrics otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(_BY_NAME))}") from None


def _names(*kinds: Kind) -> frozenset[str]:
    return frozenset(s.name for s in REGISTRY if s.kind in kinds)


PROPORTION_METRICS: Final = _names("proportion")
"""Per-slice proportions: value, Wilson 95% interval, and the denominator as n."""

LABEL_METRICS: Final = frozenset(s.name for s in REGISTRY if s.needs_labels)
"""Metrics that need ground-truth labels; provisional until label coverage passes the model's level."""

DRIFT_METRICS: Final = _names("drift")
"""Distribution distances against the reference profile; need ``feature`` (a feature, ``score`` or ``prediction``)."""

ESTIMATE_METRICS: Final = _names("estimate")
"""Performance estimated from calibrated scores (CBPE); only for models whose profile holds a calibration."""

SLICE_METRICS: Final = _names("proportion", "mean", "quantile", "drift", "estimate")
"""Metrics with one value per slice (model x version x attribute value)."""

ATTRIBUTE_METRICS: Final = _names("comparison")
"""Metrics comparing the groups of one protected attribute; one value per attribute."""

DETECTOR_SERIES: Final = frozenset(s.name for s in REGISTRY if s.detectable)
"""Per-tick series a River change detector can watch."""

METRICS: Final = SLICE_METRICS | ATTRIBUTE_METRICS
"""Every metric name a rule may use."""

TABLE_COLUMNS: Final = tuple(sorted((s for s in REGISTRY if s.column is not None), key=lambda s: s.column_order))
"""The metrics shown as columns of ``driftwatch replay``'s table, in order."""

REPORTED_SLICE_METRICS: Final = tuple(
    s.name for s in REGISTRY if s.kind in ("proportion", "mean", "quantile", "estimate")
)
"""Slice metrics reported for every slice, in report order (drift is reported per feature after them)."""


def _sum(columns: tuple[str, ...]) -> str:
    return columns[0] if len(columns) == 1 else f"({' + '.join(columns)})"


def markdown() -> str:
    """The metric list of ``docs/metrics.md``, generated from :data:`REGISTRY`."""
    lines = [
        "# Metrics",
        "",
        "Generated from `src/driftwatch/metrics/registry.py` (a test regenerates it and fails on any difference).",
        "Every metric here can be named by a rule, is a row of `driftwatch replay --json`, and is a Prometheus",
        "family on `/metrics` (slice metrics carry `model, version, attribute, slice, window`; drift metrics add",
        "`feature`; comparisons carry `model, version, attribute, window`).",
        "",
        "Proportions and comparisons also export their 95% interval and sample count, with the labels of the",
        "value: `<family>_lower`, `<family>_upper` (same unit as the value) and `<family>_samples` (n: a",
        "proportion's denominator in the slice; for a comparison, the smallest compared group's denominator).",
        "Drift metrics share `driftwatch_feature_samples` (labels of the value, `feature` included): the n of",
        "the feature's values in the slice and window. These series appear only with the value (an insufficient",
        "value exports none of them).",
        "",
        "| metric | kind | definition | Prometheus family | needs labels | detector | interval and n on /metrics |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in REGISTRY:
        if s.kind == "proportion":
            definition = f"{_sum(s.numerator)} / {_sum(s.denominator)}, Wilson 95% interval"
        elif s.kind == "comparison":
            op = "lowest / highest" if s.comparison == "ratio" else "highest - lowest"
            definition = f"{op} {' or '.join(s.compares)} across groups" + (
                ", the larger gap" if len(s.compares) > 1 else ""
            )
        elif s.kind == "quantile":
            definition = f"quantile {s.quantile} of label delays (log buckets)"
        elif s.kind == "drift":
            definition = "distance of a feature's bins from the reference profile"
        elif s.kind == "estimate":
            definition = "from per-bin sums of calibrated scores (CBPE); needs a calibrated profile"
        else:
            definition = "mean score, normal 95% interval"
        family = s.family + (f'{{quantile="{s.quantile}"}}' if s.quantile is not None else "")
        if s.interval_on_metrics:
            extra = ", ".join(f"`{f}`" for f in s.interval_families)
        elif s.kind == "drift":
            extra = f"`{FEATURE_SAMPLES}` (n)"
        else:
            extra = ""
        lines.append(
            f"| `{s.name}` | {s.kind} | {definition} | `{family}` | {'yes' if s.needs_labels else ''} | "
            f"{'yes' if s.detectable else ''} | {extra} |"
        )
    lines += _OTHER_FAMILIES
    lines += ["", "## Help texts", ""]
    seen: set[str] = set()
    for s in REGISTRY:
        if s.family not in seen:
            seen.add(s.family)
            lines.append(f"- `{s.family}`: {s.help}")
        for name, text in zip(s.interval_families, s.interval_help(), strict=True):
            if s.interval_on_metrics:
                lines.append(f"- `{name}`: {text}")
        if s.kind == "drift" and FEATURE_SAMPLES not in seen:
            seen.add(FEATURE_SAMPLES)
            lines.append(f"- `{FEATURE_SAMPLES}`: {FEATURE_SAMPLES_HELP}")
    return "\n".join(lines) + "\n"


_N_PROPORTIONS = sum(1 for s in REGISTRY if s.kind == "proportion")
_N_INTERVALS = sum(1 for s in REGISTRY if s.kind == "proportion" and s.interval_on_metrics)
_N_OTHER_SLICE = sum(1 for s in REGISTRY if s.kind in ("mean", "quantile", "estimate"))
_N_COMPARISONS = sum(1 for s in REGISTRY if s.kind == "comparison")
_N_CMP_INTERVALS = sum(1 for s in REGISTRY if s.kind == "comparison" and s.interval_on_metrics)
_SLICE_SERIES = 1 + _N_PROPORTIONS + 3 * _N_INTERVALS + _N_OTHER_SLICE + 1
"""Most series of one slice besides drift: predictions, proportions with interval and n, mean and quantiles,
the provisional flag."""

_OTHER_FAMILIES = [
    "",
    "## Other families",
    "",
    "- `driftwatch_predictions{model, version, attribute, slice, window}`: predictions in the slice and window "
    "(count), exported even when the slice's values are insufficient.",
    "- `driftwatch_label_metrics_provisional{model, version, attribute, slice, window}`: 1 where the slice's label "
    "coverage is below the model's `label_coverage_min`.",
    "- `driftwatch_alerts{alertname, state, model, version}`: pending and firing alerts of a rule for one model "
    "version (count), zero-filled for every model and version the rule applies to that has data. Before, the "
    "family was `driftwatch_alerts{alertname, state}`: sum by (alertname, state) for the old series.",
    "",
    "## Series per slice (the `metrics.max_series` budget)",
    "",
    "A slice's series are kept or dropped together. At most, one slice (model x version x attribute value, the",
    f"whole model, or an attribute pair) costs {_SLICE_SERIES} + 3 x (F + 2) series, where F is the number of",
    "the model's monitored features (drift is also computed for `score` and `prediction`): the prediction count,",
    f"{_N_PROPORTIONS} proportions each with lower, upper and samples, the mean score, the label delay quantiles,",
    "the performance estimates (models with a calibrated profile),",
    "the provisional flag, and PSI, JS distance and `driftwatch_feature_samples` per feature. One protected",
    f"attribute of a model version costs at most {_N_COMPARISONS + 3 * _N_CMP_INTERVALS} series ({_N_COMPARISONS} "
    "comparisons, each with lower, upper and samples). Insufficient values cost nothing. Health families and",
    "`driftwatch_alerts` are outside the budget.",
]
"""The parts of ``docs/metrics.md`` about families that are not one metric each, and what a slice costs."""
