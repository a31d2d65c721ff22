"""``driftwatch._fmath``: log and exp with one result per input, whatever kernels numpy picked for this CPU."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from driftwatch import _fmath

# Printed by a child process: digests of numpy's and driftwatch's log and exp of the same seeded inputs.
_DIGESTS = """
import hashlib, numpy as np
from driftwatch import _fmath
rng = np.random.default_rng(3)
x, y = rng.random(200_000) * 5 + 1e-12, rng.standard_normal(200_000) * 20
for f in (np.log(x), _fmath.log(x), np.exp(y), _fmath.exp(y)):
    print(hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest())
"""


def _dispatched() -> list[str]:
    """The SIMD targets numpy picked kernels from on this CPU (beyond its compiled baseline)."""
    try:
        from numpy._core import _multiarray_umath as umath  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.26
        from numpy.core import _multiarray_umath as umath  # type: ignore[no-redef]
    found = umath.__cpu_features__
    return [name for name in umath.__cpu_dispatch__ if found.get(name)]


def _digests(env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _DIGESTS], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_results_do_not_depend_on_the_simd_kernels_numpy_picked() -> None:
    """With every SIMD target numpy found on this CPU disabled, _fmath gives the same bits as with them."""
    targets = _dispatched()
    if not targets:
        pytest.skip("numpy uses no SIMD kernels beyond its baseline on this CPU: nothing to compare")
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    np_log, our_log, np_exp, our_exp = _digests(env)
    plain = _digests({**env, "NPY_DISABLE_CPU_FEATURES": " ".join(targets)})
    assert [our_log, our_exp] == [plain[1], plain[3]]
    if any(t.startswith(("AVX512", "X86_V4")) for t in targets):
        # The control: on an AVX-512 CPU numpy's own float64 kernels change with the targets (the reason for _fmath).
        assert [np_log, np_exp] != [plain[0], plain[2]]


@pytest.mark.parametrize("seed", [0, 1])
def test_log_and_exp_are_within_one_ulp_of_the_c_library(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.random(5_000) * 10, rng.random(1_000) * 1e-6 + 1e-300, 1 + rng.random(1_000) * 1e-9])
    y = rng.standard_normal(5_000) * 50
    ours_log, ours_exp = _fmath.log(x), _fmath.exp(y)
    want_log = np.array([math.log(v) for v in x.tolist()])
    want_exp = np.array([math.exp(v) for v in y.tolist()])
    assert np.all(np.abs(ours_log - want_log) <= np.spacing(np.abs(want_log)))
    assert np.all(np.abs(ours_exp - want_exp) <= np.spacing(want_exp))
    assert ours_log.dtype == ours_exp.dtype == np.float64


def test_edge_values_follow_numpy() -> None:
    with np.errstate(divide="ignore", invalid="ignore"):
        got = _fmath.log(np.array([0.0, -1.0, np.inf, 1.0]))
    np.testing.assert_array_equal(got, [-np.inf, np.nan, np.inf, 0.0])  # NaN equals NaN here
    assert _fmath.exp(np.array([1000.0, -np.inf, 0.0])).tolist() == [np.inf, 0.0, 1.0]
    assert _fmath.log(np.ones((2, 3))).shape == (2, 3)
