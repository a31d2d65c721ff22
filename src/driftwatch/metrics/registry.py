"""Names of every metric driftwatch computes, and what each needs.

Kept free of numpy so that config validation can import it cheaply.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ATTRIBUTE_METRICS",
    "DETECTOR_SERIES",
    "DRIFT_METRICS",
    "LABEL_METRICS",
    "METRICS",
    "PROPORTION_METRICS",
    "SLICE_METRICS",
]

PROPORTION_METRICS: Final = frozenset(
    {
        "selection_rate",
        "complaint_rate",
        "escalation_rate",
        "thumbs_down_rate",
        "override_rate",
        "tpr",
        "fpr",
        "error_rate",
        "label_coverage",
    }
)
"""Per-slice proportions: value, Wilson 95% interval, and the denominator as n."""

LABEL_METRICS: Final = frozenset(
    {"tpr", "fpr", "error_rate", "equalized_odds_difference", "equal_opportunity_difference"}
)
"""Metrics that need ground-truth labels; provisional until label coverage passes the model's level."""

DRIFT_METRICS: Final = frozenset({"psi", "js_distance"})
"""Distribution distances against the reference profile; need ``feature`` (a feature, ``score`` or ``prediction``)."""

SLICE_METRICS: Final = (
    PROPORTION_METRICS | DRIFT_METRICS | {"mean_score", "label_delay_p50_seconds", "label_delay_p90_seconds"}
)
"""Metrics with one value per slice (model x version x attribute value)."""

ATTRIBUTE_METRICS: Final = frozenset(
    {
        "disparate_impact_ratio",
        "statistical_parity_difference",
        "equalized_odds_difference",
        "equal_opportunity_difference",
        "complaint_parity_ratio",
        "complaint_parity_difference",
        "escalation_parity_ratio",
        "escalation_parity_difference",
    }
)
"""Metrics comparing the groups of one protected attribute; one value per attribute."""

DETECTOR_SERIES: Final = frozenset(
    {"mean_score", "selection_rate", "complaint_rate", "escalation_rate", "thumbs_down_rate", "override_rate"}
)
"""Per-tick series a River change detector can watch."""

METRICS: Final = SLICE_METRICS | ATTRIBUTE_METRICS
"""Every metric name a rule may use."""
