"""The ingest's cell counting (`_count_cells`): dense or sorted, in one pass or many, the same counts."""

from __future__ import annotations

import numpy as np
import pytest

from driftwatch.core import ingest


def _naive(cpos: np.ndarray, row_ok: np.ndarray, cols: np.ndarray, width: int, cells: int) -> np.ndarray:
    out = np.zeros(cells, np.int64)
    for i in range(len(cpos)):
        for s in range(cpos.shape[1]):
            for c in cols[i]:
                if row_ok[i, s] and c >= 0:
                    out[cpos[i, s] * width + c] += 1
    return out


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("dense_cells", "chunk_cells"), [(1 << 19, 1 << 20), (1 << 19, 7), (0, 1 << 20), (0, 7)])
def test_cell_counts_do_not_depend_on_passes_or_method(
    seed: int, dense_cells: int, chunk_cells: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    n, slices, per, width, pairs = 300, 4, 5, 11, 40
    cpos = rng.integers(0, pairs, (n, slices))
    row_ok = rng.random((n, slices)) > 0.2
    cols = np.where(rng.random((n, per)) > 0.3, rng.integers(0, width, (n, per)), -1)
    want = _naive(cpos, row_ok, cols, width, pairs * width)
    monkeypatch.setattr(ingest, "_DENSE_CELLS", dense_cells)
    monkeypatch.setattr(ingest, "_CHUNK_CELLS", chunk_cells)
    keys, counts = ingest._count_cells(cpos, row_ok, cols, width, pairs * width)
    assert np.all(np.diff(keys) > 0)
    got = np.zeros(pairs * width, np.int64)
    got[keys] = counts
    assert np.array_equal(got, want)
    assert counts.dtype == np.int64
    assert np.all(counts > 0)


@pytest.mark.parametrize("dense_cells", [1 << 19, 0])
def test_no_events_count_nothing(dense_cells: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "_DENSE_CELLS", dense_cells)
    keys, counts = ingest._count_cells(
        np.zeros((0, 3), np.int64), np.zeros((0, 3), bool), np.zeros((0, 2), np.int64), 5, 0
    )
    assert len(keys) == len(counts) == 0
    assert counts.dtype == np.int64


@pytest.mark.parametrize("n", [0, 1, 2, 17, 64, 65, 300])
def test_small_and_large_uniques_equal_numpy_unique(n: int) -> None:
    """The ingest's unique helpers give numpy.unique's values, inverse and first indices, on either side of the size
    where they switch from a set and a dict to numpy."""
    rng = np.random.default_rng(n)
    for spread in (3, 1000):
        a = rng.integers(-spread, spread, n).astype(np.int64)
        uniq, inv = np.unique(a, return_inverse=True)
        got_u, got_inv = ingest._unique_inverse(a)
        assert got_u.dtype == a.dtype
        assert got_u.tolist() == uniq.tolist()
        assert got_inv.tolist() == inv.reshape(-1).tolist()
        assert np.array_equal(got_u[got_inv], a)
        uniq, first = np.unique(a, return_index=True)
        got_u, got_first = ingest._unique_first(a)
        assert got_u.tolist() == uniq.tolist()
        assert got_first.tolist() == first.tolist()
        b = rng.integers(-spread, spread, n).astype(np.int64)
        pairs, inv = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
        got_a, got_b, got_inv = ingest._unique_pairs(a, b)
        assert got_a.tolist() == pairs[:, 0].tolist()
        assert got_b.tolist() == pairs[:, 1].tolist()
        assert got_inv.tolist() == inv.reshape(-1).tolist()
        keys = [bytes([x % 256, y % 256]) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
        distinct, first, where = ingest._unique_bytes(keys)
        assert len(distinct) == len(set(keys))
        assert [keys[i] for i in first.tolist()] == distinct
        assert [distinct[i] for i in where.tolist()] == keys


@pytest.mark.parametrize("n", [1, 5, 64, 65, 200])
def test_admission_counts_the_same_for_few_events_and_many(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Routing admitted names counts each name's recent events the same whether a batch takes the loop for a few
    events or numpy's bincounts: the same batches both ways give the same routes, recent counts and totals."""
    names = ["a", "b", "c"]
    results = []
    for small in (10**9, -1):  # every batch through the loop, then every batch through numpy
        monkeypatch.setattr(ingest, "_SMALL", small)
        rng = np.random.default_rng(n)  # the same batches both ways
        adm = ingest._Admission(cap=5, floor=3, span=60.0)
        routes = []
        for k in range(6):
            group = rng.integers(0, len(names), n)
            ts = 50.0 * k + np.sort(rng.uniform(0, 100, n))
            routes.append(adm.route(names, group, ts).tolist())
        recent = {v: (r.epoch, r.now, r.before) for v, r in adm.admitted.items()}
        results.append((routes, adm.clock, dict(adm.carried), recent, list(adm.seen)))
    assert results[0] == results[1]
    assert sum(results[0][2].values()) == 6 * n
