"""Elementwise ``log`` and ``exp`` that give the same bits on every machine.

numpy chooses its float64 ``log`` and ``exp`` kernels by CPU when it loads: where
the CPU has AVX-512 it runs SIMD kernels whose results differ from the C
library's in the last bit for some inputs (on one Sapphire Rapids host, 0.26%
of a million logs and 4.6% of a million exps). PSI, Jensen-Shannon distances,
interval bounds and detector statistics computed with them then differ in their
last digit between two machines that replay the same events, and so do the
outputs that print them. numpy never vectorises long double: these compute in
long double (the C library's ``logl`` and ``expl``) and round to float64, so a
given input has one result wherever driftwatch runs.

They cost ~40 ns per element (numpy's SIMD float64 log ~1 ns): a 200,000-event
replay of the example config takes ~250,000 logs, ~10 ms.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["exp", "log"]


def log(x: ArrayLike) -> NDArray[np.float64]:
    """Natural logarithm of each element, as float64 (same conventions as ``np.log``: 0 gives -inf, < 0 NaN)."""
    out: NDArray[np.float64] = np.log(np.asarray(x, np.longdouble)).astype(np.float64)
    return out


def exp(x: ArrayLike) -> NDArray[np.float64]:
    """``e`` to the power of each element, as float64 (beyond float64's range: inf, without a warning)."""
    with np.errstate(over="ignore"):
        out: NDArray[np.float64] = np.exp(np.asarray(x, np.longdouble)).astype(np.float64)
    return out
