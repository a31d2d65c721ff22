"""Benjamini–Hochberg control in slice rules (`fdr_q`): many slices, one threshold at the base rate."""

from __future__ import annotations

import functools

import msgspec
import numpy as np
import pytest
from scipy.stats import binom

from driftwatch.alerts.engine import AlertTransition
from driftwatch.config import Config
from driftwatch.core import summary as S
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import build_profile
from driftwatch.core.values import p_values
from driftwatch.metrics.stats import benjamini_hochberg

T0 = 1_700_000_000_000  # ms; a multiple of the 10 s tick
SEGMENTS = 200
PER_MINUTE = 150  # predictions per segment per minute
MINUTES = 5
BASE_RATE = 0.05  # every segment's complaint probability under the null
HOT_RATE = 0.2
HOT = (17, 101, 188)  # segments with a real problem in the injected run
Q = 0.05
RULE = {
    "metric": "complaint_rate",
    "attribute": "segment",
    "op": ">",
    "threshold": BASE_RATE,
    "for": 0,
    "min_samples": 100,
    "window": "1m",
}


def make() -> Pipeline:
    """One pipeline with the same rule twice: ``plain`` without FDR control and ``fdr`` with ``fdr_q``."""
    cfg = Config.model_validate(
        {
            "attributes": {"segment": {"max_values": 400}},
            "models": {"m": {"favorable": ["yes"], "reference": {"learn_events": 100}}},
            "windows": {"tick": "10s", "lateness": "0s", "windows": ["1m"]},
            "privacy": {"min_group_size": 1},
            "rules": [{**RULE, "name": "plain"}, {**RULE, "name": "fdr", "fdr_q": Q}],
        }
    )
    assert cfg.problems() == []
    prof = build_profile("m", cfg.models["m"], {"prediction": ["yes", "no"] * 50})
    return Pipeline(cfg, profiles={"m": prof})


def segment(s: int) -> str:
    return f"seg{s:03d}"


def traffic(seed: int, rates: np.ndarray) -> list[bytes]:
    """Predictions spread uniformly over the run; each gets a complaint 1–5 s later with its segment's rate."""
    rng = np.random.default_rng(seed)
    seg = np.repeat(np.arange(SEGMENTS), PER_MINUTE * MINUTES)
    ts = rng.integers(0, MINUTES * 60_000, seg.size)
    complained = np.flatnonzero(rng.random(seg.size) < rates[seg])
    complaint_ts = ts[complained] + rng.integers(1_000, 5_000, complained.size)
    # Time order (a prediction before a complaint at the same ms): ids < size are predictions.
    ids = np.concatenate([np.arange(seg.size), seg.size + np.arange(complained.size)])
    order = ids[np.lexsort((ids, np.concatenate([ts, complaint_ts])))]
    names = [segment(s) for s in range(SEGMENTS)]
    seg_l, ts_l, who, cts = seg.tolist(), ts.tolist(), complained.tolist(), complaint_ts.tolist()
    enc = msgspec.json.encode
    out = []
    for j in order.tolist():
        if j < seg.size:
            ev = {
                "type": "prediction",
                "schema_version": 1,
                "event_id": f"p{j}",
                "ts": T0 + ts_l[j],
                "model_id": "m",
                "model_version": "v1",
                "request_id": f"r{j}",
                "prediction": "yes",
                "attributes": {"segment": names[seg_l[j]]},
            }
        else:
            i = j - seg.size
            ev = {
                "type": "interaction",
                "schema_version": 1,
                "event_id": f"c{who[i]}",
                "ts": T0 + cts[i],
                "request_id": f"r{who[i]}",
                "kind": "complaint",
            }
        out.append(enc(ev))
    return out


@functools.cache
def run(seed: int, hot: tuple[int, ...] = ()) -> Pipeline:
    """Feed one run of traffic in time order, in batches of encoded JSON, and close every tick."""
    rates = np.full(SEGMENTS, BASE_RATE)
    rates[list(hot)] = HOT_RATE
    raws = traffic(seed, rates)
    p = make()
    for i in range(0, len(raws), 4096):
        p.process(raws[i : i + 4096])
    p.flush()
    assert p.counters.join_hits > 0
    assert p.counters.join_misses == 0
    assert p.counters.late_dropped == 0
    return p


def raised(p: Pipeline, rule: str) -> list[AlertTransition]:
    """Transitions that open an alert (pending or firing) for ``rule``."""
    return [t for t in p.transitions if t.rule == rule and t.state in ("pending", "firing")]


def fired_slices(p: Pipeline, rule: str) -> set[str]:
    return {t.labels["slice"] for t in p.transitions if t.rule == rule and t.state == "firing"}


def alerting_fraction(p: Pipeline, rule: str) -> float:
    """Fraction of evaluations at which at least one new alert opened."""
    return len({t.event_time for t in raised(p, rule)}) / p.counters.evaluations


# The bound for FDR control under the complete null (no segment differs). There BH's guarantee
# FDR <= q is P(any discovery in one evaluation) <= q, and a new alert needs a discovery, so the
# expected number of evaluations with a new alert is at most q x evaluations (0.05 x 31 ~ 1.6).
# One evaluation rarely has two null discoveries (E[V | V > 0] ~ 1 / (1 - q)), so the expected
# number of distinct slices that ever fire is about the same. We allow a factor 2 for the noise
# of one run: at most 2 q of the evaluations and 2 q x evaluations distinct slices (3 here),
# against ~200 slices firing without FDR control.
SLACK = 2.0


def test_without_fdr_a_threshold_at_the_base_rate_fires_most_slices() -> None:
    """Without FDR control a threshold at the base rate fires most slices under pure noise (about half are above it at any time)."""
    p = run(0)
    assert p.counters.evaluations >= MINUTES * 6
    assert len(fired_slices(p, "plain")) >= SEGMENTS // 2
    assert alerting_fraction(p, "plain") >= 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_with_fdr_few_slices_fire_under_the_complete_null(seed: int) -> None:
    """With fdr_q, when no segment differs, the slices that fire and the evaluations that open alerts stay within what q allows."""
    p = run(seed)
    evaluations = p.counters.evaluations
    bound = int(SLACK * Q * evaluations)
    assert len(fired_slices(p, "plain")) >= SEGMENTS // 2  # the same traffic is noisy enough to fire without FDR
    assert len(fired_slices(p, "fdr")) <= bound
    assert alerting_fraction(p, "fdr") <= SLACK * Q


def test_with_fdr_injected_segments_fire_and_few_others() -> None:
    """With fdr_q, the three segments with a four-fold complaint rate all fire, and at most a few null segments do."""
    p = run(0, HOT)
    fired = fired_slices(p, "fdr")
    hot = {segment(s) for s in HOT}
    assert hot <= fired
    # Same null bound as above: with three true discoveries BH's threshold loosens only slightly.
    assert len(fired - hot) <= int(SLACK * Q * p.counters.evaluations)
    first = {t.labels["slice"]: t.event_time for t in raised(p, "fdr") if t.labels["slice"] in hot}
    assert max(first.values()) - T0 / 1000 <= 60  # found by the end of the first full window


def layout() -> S.Layout:
    cfg = Config.model_validate({"attributes": {}, "models": {"m": {"favorable": ["yes"]}}})
    return S.Layout(cfg.models["m"], build_profile("m", cfg.models["m"], {"prediction": ["yes", "no"] * 50}))


def summary_rows(lay: S.Layout, k: np.ndarray, n: np.ndarray) -> np.ndarray:
    m = np.zeros((len(n), lay.width), np.int64)
    m[:, S.N_PRED] = n
    m[:, S.KIND_COLUMN["complaint"]] = k
    return m


def test_proportion_p_values_equal_scipy_exact_binomial_test_against_the_pooled_rate() -> None:
    """The p-value of a slice's complaint rate is scipy's exact binomial test at the pooled rate (two-sided by doubling the smaller tail)."""
    rng = np.random.default_rng(3)
    lay = layout()
    n = rng.integers(50, 2_000, 40)
    k = rng.binomial(n, rng.uniform(0.01, 0.4, 40))
    m = summary_rows(lay, k, n)
    overall = m.sum(axis=0, keepdims=True)
    got = p_values("complaint_rate", m, lay, None, overall)
    k2, n2 = k.sum() - k, n.sum() - n
    want = [
        min(1.0, 2 * min(binom.cdf(a, b, (a + c) / (b + d)), binom.sf(a - 1, b, (a + c) / (b + d))))
        for a, b, c, d in zip(k.tolist(), n.tolist(), k2.tolist(), n2.tolist(), strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)


def test_bh_over_rule_p_values_keeps_the_family_wise_rate_at_q_under_the_complete_null() -> None:
    """Under the complete null at the rule's scale (200 slices, ~150 predictions, 5% rate), BH on the rule's p-values discovers something in at most q of windows."""
    # BH looks far into the tail here (p <= q / m = 2.5e-4 at k ~ 7 of 150), where a normal
    # approximation is not a valid p-value; an exact conditional test keeps this near 0.01.
    rng = np.random.default_rng(5)
    lay = layout()
    windows = 2_000
    anything = 0
    for _ in range(windows):
        n = rng.poisson(PER_MINUTE, SEGMENTS)
        k = rng.binomial(n, BASE_RATE)
        m = summary_rows(lay, k, n)
        p = p_values("complaint_rate", m, lay, None, m.sum(axis=0, keepdims=True))
        anything += bool(benjamini_hochberg(p, Q).any())
    rate = anything / windows
    se = (Q * (1 - Q) / windows) ** 0.5
    assert rate <= Q + 3 * se, f"P(any discovery | complete null) = {rate:.3f} > q = {Q}"
