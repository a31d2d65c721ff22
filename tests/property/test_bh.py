"""Properties of Benjamini-Hochberg selection in `driftwatch.metrics.stats`."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwatch.metrics.stats import benjamini_hochberg

p_values = st.lists(st.one_of(st.floats(0.0, 1.0), st.just(float("nan"))), min_size=0, max_size=40).map(np.array)
qs = st.lists(st.floats(1e-4, 0.9999), min_size=2, max_size=6).map(sorted)


@settings(max_examples=100, deadline=None)
@given(p_values, qs)
def test_discoveries_are_monotone_in_q(p: np.ndarray, q_sorted: list[float]) -> None:
    """Raising q never removes a discovery: the discovery sets are nested and their sizes non-decreasing."""
    results = [benjamini_hochberg(p, q) for q in q_sorted]
    for smaller, larger in itertools.pairwise(results):
        assert smaller.sum() <= larger.sum()
        assert not np.any(smaller & ~larger)


@settings(max_examples=100, deadline=None)
@given(p_values, st.floats(1e-4, 0.9999))
def test_discoveries_are_the_smallest_p_values(p: np.ndarray, q: float) -> None:
    """Discoveries are never NaN, and every p-value below a discovery's is also a discovery."""
    out = benjamini_hochberg(p, q)
    assert out.shape == p.shape
    assert not np.any(out & np.isnan(p))
    if out.any():
        cutoff = p[out].max()
        assert np.all(out[~np.isnan(p) & (p < cutoff)])
        assert cutoff <= q
