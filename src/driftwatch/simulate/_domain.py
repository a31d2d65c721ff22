"""Distributions and constants of the synthetic two-model demo domain."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SCHEMA_VERSION = 1

SUPPORT_MODEL = "support-router"
SUPPORT_VERSION = "v7"
SUPPORT_SPIKE_VERSION = "v8"
REFUND_MODEL = "refund-approval"
REFUND_VERSION = "v3"

# Probability that a prediction belongs to support-router (the rest are refund-approval).
SUPPORT_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Categorical:
    """A categorical distribution sampled by inverting its CDF on uniform draws."""

    values: tuple[str, ...]
    probs: tuple[float, ...]

    def sample(self, u: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        """Map uniform draws in [0, 1) to indices into `values`."""
        cdf = np.cumsum(np.asarray(self.probs, dtype=np.float64))
        # Guard against the cumulative sum landing a hair below 1.0, which
        # would let a draw near 1 fall off the end of `values`.
        cdf[-1] = 1.0
        idx: npt.NDArray[np.intp] = np.searchsorted(cdf, u, side="right")
        return idx


REGION = Categorical(("EU", "NA", "APAC", "LATAM"), (0.35, 0.35, 0.2, 0.1))
LANGUAGE = Categorical(("en", "de", "fr", "es", "ja"), (0.45, 0.2, 0.15, 0.1, 0.1))
CHANNEL = Categorical(("chat", "email", "voice"), (0.5, 0.3, 0.2))
AGE_BAND = Categorical(("18-24", "25-34", "35-49", "50-64", "65+"), (0.15, 0.25, 0.3, 0.18, 0.12))
TOPIC = Categorical(
    ("billing", "shipping", "technical", "account", "other"),
    (0.35, 0.25, 0.2, 0.15, 0.05),
)
REASON = Categorical(("damaged", "late", "wrong_item", "not_needed"), (0.4, 0.3, 0.2, 0.1))

# support-router features.
MESSAGE_LENGTH_LOG_MEDIAN = math.log(150.0)
MESSAGE_LENGTH_LOG_SD = 0.6
SENTIMENT_MEAN = -0.1
SENTIMENT_SD = 0.35
ACCOUNT_AGE_MEAN_DAYS = 700.0
# Beta(2, 3.0825) puts exactly 30% of its mass at >= 0.5, so thresholding the
# score at 0.5 routes ~30% of traffic to a human, independent of any group.
SUPPORT_SCORE_BETA = (2.0, 3.0825)

# refund-approval features and ground truth.
AMOUNT_LOG_MEDIAN = math.log(60.0)
AMOUNT_LOG_SD = 0.8
PRIOR_REFUNDS_MEAN = 0.6
P_DESERVING = 0.7
BASE_TPR = 0.9
BASE_FPR = 0.2
# Score shape for refunds: approve -> 0.5 + 0.5*b, deny -> 0.5*(1 - b), so the
# score is a P(approve) that always agrees with the decision.
REFUND_SCORE_BETA = (2.5, 1.5)

# Scenario overrides of the refund model's (TPR, FPR) in the affected group.
BIAS_TPR = 0.35
BIAS_FPR = 0.1
# 0.7 * 0.55 + 0.3 * 1.0 = 0.685 ~= 0.69, so only accuracy moves, not selection.
LABEL_SHIFT_TPR = 0.55
LABEL_SHIFT_FPR = 1.0

DRIFT_MESSAGE_LENGTH_FACTOR = 3.0
SPIKE_VERSION_SHARE = 0.5
SPIKE_COMPLAINT_P = 0.15

# Interaction kinds drawn independently per prediction, in column order.
# (kind, probability, min delay s, max delay s); labels are handled apart.
FEEDBACK_KINDS: tuple[tuple[str, float, float, float], ...] = (
    ("complaint", 0.02, 10.0, 120.0),
    ("escalation", 0.05, 5.0, 60.0),
    ("thumbs_down", 0.05, 5.0, 120.0),
    ("thumbs_up", 0.10, 5.0, 120.0),
    ("override", 0.02, 5.0, 60.0),
    ("resolved", 0.5, 30.0, 300.0),
)
COMPLAINT_COLUMN = 0
LABEL_KIND = "label"
P_LABEL = 0.9
LABEL_DELAY_LOG_MEDIAN = math.log(90_000.0)  # ms
# sd chosen so the 90th percentile is 5 minutes: ln(300/90) / z_0.9.
LABEL_DELAY_LOG_SD = math.log(300.0 / 90.0) / 1.2815515655446004
# Caps the lognormal tail so the pending-interaction heap stays bounded.
LABEL_DELAY_MAX_MS = 3_600_000
P_LABEL_AS_BOOL = 0.5

# Fraction of events whose ts is emitted as epoch milliseconds instead of RFC 3339.
P_TS_AS_INT = 0.1


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _uniform_lag_area(t: float, lo: float, hi: float) -> float:
    """Return E[(t - D)+] for D ~ Uniform(lo, hi)."""
    if t <= lo:
        return 0.0
    if t >= hi:
        return t - (lo + hi) / 2.0
    return (t - lo) ** 2 / (2.0 * (hi - lo))


def _label_lag_area(t_ms: float) -> float:
    """Return E[(t - min(D, cap))+] in ms for the capped lognormal label delay D."""
    mu, sigma, cap = (
        LABEL_DELAY_LOG_MEDIAN,
        LABEL_DELAY_LOG_SD,
        float(LABEL_DELAY_MAX_MS),
    )
    if t_ms <= 0.0:
        return 0.0
    mean = math.exp(mu + sigma * sigma / 2.0)
    if t_ms <= cap:
        z = (math.log(t_ms) - mu) / sigma
        return t_ms * _phi(z) - mean * _phi(z - sigma)
    zc = (math.log(cap) - mu) / sigma
    return t_ms - (mean * _phi(zc - sigma) + cap * (1.0 - _phi(zc)))


def expected_events_until(t_ms: float, rate: float) -> float:
    """Return the baseline expected number of events with event time in [0, t_ms].

    A prediction at time s contributes itself plus each interaction whose
    delay is at most t - s; integrating over s gives rate * E[(t - delay)+]
    per interaction kind. This captures the start-up ramp (no interactions
    are pending at t = 0), which matters for short streams.
    """
    per_ms = rate / 1000.0
    total = t_ms
    for _, p, lo_s, hi_s in FEEDBACK_KINDS:
        total += p * _uniform_lag_area(t_ms, lo_s * 1000.0, hi_s * 1000.0)
    total += (1.0 - SUPPORT_SHARE) * P_LABEL * _label_lag_area(t_ms)
    return per_ms * total
