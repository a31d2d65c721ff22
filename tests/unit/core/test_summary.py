"""Tests for tick summaries, layouts and sliding windows in `driftwatch.core.summary`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftwatch.config import ModelConfig
from driftwatch.core import summary as S
from driftwatch.core.profile import build_profile

WIDTH = 7


def brute_window(ticks: dict[int, np.ndarray], now_tick: int, length: int, rows: int) -> np.ndarray:
    """Sum of the retained ticks of a window after closing ``now_tick``: whole buckets inside the last ``length`` ticks."""
    step = max(1, length // 60)
    end = now_tick + 1
    first_bucket = math.ceil((end - length) / step)
    out = np.zeros((rows, WIDTH), np.int64)
    for t, m in ticks.items():
        if t <= now_tick and t // step >= first_bucket:
            out[: m.shape[0]] += m
    return out


def random_ticks(seed: int, count: int) -> dict[int, np.ndarray]:
    """Random tick matrices whose row count grows over time; about one tick in five is empty."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in range(count):
        if rng.uniform() < 0.2:
            continue
        rows = 1 + t // 7 + int(rng.integers(0, 3))
        out[t] = rng.integers(0, 1000, size=(rows, WIDTH)).astype(np.int64)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_window_totals_equal_brute_force_sums(seed: int) -> None:
    """After each tick closes, every window total equals the brute-force sum of its ticks, as rows grow over time."""
    lengths = (1, 3, 30, 60, 130)
    ticks = random_ticks(seed, 400)
    store = S.WindowStore(lengths)
    since = np.zeros((0, WIDTH), np.int64)
    max_rows = max(m.shape[0] for m in ticks.values())
    for t in range(400):
        if t in ticks:
            store.add(t, ticks[t].copy(), closed_before=t)
        got = store.close(t)
        assert (got is None) == (t not in ticks)
        if t in ticks:
            assert got is not None
            assert np.array_equal(got.dense(), ticks[t])
            since = S.accumulate(since, ticks[t])
        for length in lengths:
            assert np.array_equal(store.window(length, max_rows, WIDTH), brute_window(ticks, t, length, max_rows)), (
                t,
                length,
            )
        assert np.array_equal(store.window(0, max_rows, WIDTH), brute_window(ticks, t, 10**9, max_rows))
    assert store.open == {}


def test_short_windows_are_exactly_the_last_l_ticks() -> None:
    """For windows up to 60 ticks the total is exactly the sum of the last L closed ticks."""
    ticks = random_ticks(9, 200)
    store = S.WindowStore((5, 60))
    for t in range(200):
        if t in ticks:
            store.add(t, ticks[t].copy(), closed_before=t)
        store.close(t)
        for length in (5, 60):
            expected = np.zeros((40, WIDTH), np.int64)
            for u in range(max(0, t - length + 1), t + 1):
                if u in ticks:
                    expected[: ticks[u].shape[0]] += ticks[u]
            assert np.array_equal(store.window(length, 40, WIDTH), expected)


def test_long_window_is_exact_at_bucket_boundaries() -> None:
    """A 120-tick window (2-tick buckets) equals the last 120 ticks exactly whenever its start is bucket-aligned."""
    ticks = random_ticks(3, 300)
    store = S.WindowStore((120,))
    for t in range(300):
        if t in ticks:
            store.add(t, ticks[t].copy(), closed_before=t)
        store.close(t)
        if (t + 1) % 2 == 0:
            expected = np.zeros((60, WIDTH), np.int64)
            for u in range(max(0, t - 119), t + 1):
                if u in ticks:
                    expected[: ticks[u].shape[0]] += ticks[u]
            assert np.array_equal(store.window(120, 60, WIDTH), expected)


def test_open_ticks_accumulate_additions() -> None:
    """Several additions to the same open tick are summed, growing rows as needed, and nothing reaches a window."""
    store = S.WindowStore((3,))
    a = np.ones((2, WIDTH), np.int64)
    b = np.full((4, WIDTH), 2, np.int64)
    store.add(5, a, closed_before=0)
    store.add(5, b, closed_before=0)
    expected = np.full((4, WIDTH), 2, np.int64)
    expected[:2] += 1
    assert np.array_equal(store.open[5], expected)
    assert not store.window(3, 4, WIDTH).any()
    closed = store.close(5)
    assert closed is not None
    assert np.array_equal(closed.dense(), expected)
    assert np.array_equal(store.window(3, 4, WIDTH), expected)


@pytest.mark.parametrize("seed", range(3))
def test_late_add_to_retained_tick_updates_window_and_since(seed: int) -> None:
    """A late addition to a closed tick still inside a window updates that window's total and the since-start total."""
    rng = np.random.default_rng(seed)
    lengths = (4, 20, 130)
    ticks = random_ticks(seed + 100, 300)
    store = S.WindowStore(lengths)
    truth = {t: m.copy() for t, m in ticks.items()}
    for t in range(300):
        if t in ticks:
            store.add(t, ticks[t].copy(), closed_before=t)
        store.close(t)
        # a late label for a prediction of a recent closed tick that has data
        candidates = [u for u in truth if t - 25 <= u <= t]
        if candidates:
            u = int(rng.choice(candidates))
            delta = rng.integers(0, 5, size=(int(truth[u].shape[0]) + int(rng.integers(0, 2)), WIDTH)).astype(np.int64)
            store.add(u, delta, closed_before=t + 1)
            truth[u] = S.accumulate(truth[u], delta)
        rows = max(m.shape[0] for m in truth.values()) if truth else 1
        for length in lengths:
            assert np.array_equal(store.window(length, rows, WIDTH), brute_window(truth, t, length, rows)), (t, length)
        assert np.array_equal(store.window(0, rows, WIDTH), brute_window(truth, t, 10**9, rows))


def test_late_add_to_evicted_tick_counts_only_since_start() -> None:
    """A late addition to a tick that has left a window changes since-start only."""
    store = S.WindowStore((2,))
    m = np.ones((1, WIDTH), np.int64)
    for t in range(5):
        store.add(t, m.copy(), closed_before=t)
        store.close(t)
    before = store.window(2, 1, WIDTH).copy()
    store.add(0, np.full((1, WIDTH), 10, np.int64), closed_before=5)
    assert np.array_equal(store.window(2, 1, WIDTH), before)
    assert store.window(0, 1, WIDTH)[0, 0] == 5 + 10


def test_late_add_to_retained_tick_without_data_reaches_the_window() -> None:
    """A late addition to a closed tick inside the window counts there even if that tick had no data when it closed."""
    store = S.WindowStore((5,))
    m = np.ones((1, WIDTH), np.int64)
    for t in range(6):
        if t != 4:
            store.add(t, m.copy(), closed_before=t)
        store.close(t)
    # window of 5 ticks after closing tick 5 = ticks 1..5 (tick 4 empty) = 4
    assert store.window(5, 1, WIDTH)[0, 0] == 4
    store.add(4, np.full((1, WIDTH), 10, np.int64), closed_before=6)
    assert store.window(0, 1, WIDTH)[0, 0] == 5 + 10
    assert store.window(5, 1, WIDTH)[0, 0] == 4 + 10


def test_eviction_empties_windows_after_idle_time() -> None:
    """Closing a tick far past the data evicts every bucket: windows become zero, since-start keeps everything."""
    store = S.WindowStore((3, 120))
    for t in range(10):
        store.add(t, np.full((2, WIDTH), t + 1, np.int64), closed_before=t)
        store.close(t)
    assert store.window(3, 2, WIDTH)[0, 0] == 8 + 9 + 10
    store.close(1000)
    assert not store.window(3, 2, WIDTH).any()
    assert not store.window(120, 2, WIDTH).any()
    assert all(not w.buckets for w in store.windows.values())
    assert store.window(0, 2, WIDTH)[0, 0] == sum(range(1, 11))


def test_window_is_padded_and_truncated_to_requested_rows() -> None:
    """window() pads with zero rows or keeps only the first rows requested."""
    store = S.WindowStore((3,))
    store.add(0, np.arange(3 * WIDTH, dtype=np.int64).reshape(3, WIDTH), closed_before=0)
    store.close(0)
    assert store.window(3, 5, WIDTH)[3:].sum() == 0
    assert np.array_equal(store.window(3, 2, WIDTH), np.arange(2 * WIDTH).reshape(2, WIDTH))
    assert not S.WindowStore((3,)).window(3, 2, WIDTH).any()


def test_accumulate_grows_rows_and_copies_first_delta() -> None:
    """accumulate copies the first delta and grows the target when the delta has more rows."""
    d = np.ones((1, 3), np.int64)
    t = S.accumulate(None, d)
    d[0, 0] = 99
    assert t.tolist() == [[1, 1, 1]]
    t = S.accumulate(t, np.full((3, 3), 2, np.int64))
    assert t.tolist() == [[3, 3, 3], [2, 2, 2], [2, 2, 2]]
    t = S.accumulate(t, np.ones((1, 3), np.int64))
    assert t.tolist() == [[4, 4, 4], [2, 2, 2], [2, 2, 2]]


def test_delay_buckets_are_log_spaced() -> None:
    """Delays up to 1 s share bucket 0; bucket i holds (1.15**(i-1), 1.15**i] seconds; huge delays share the last bucket."""
    assert S.delay_bucket(np.array([0.0, 0.5, 1.0])).tolist() == [0, 0, 0]
    for i in (1, 5, 30, 100):
        inside = np.array([S.DELAY_GAMMA ** (i - 1) * 1.0001, S.DELAY_GAMMA**i * 0.9999])
        assert S.delay_bucket(inside).tolist() == [i, i]
    assert S.delay_bucket(np.array([1e12])).tolist() == [S.DELAY_BUCKETS - 1]
    assert math.isnan(S.delay_quantile(np.zeros(S.DELAY_BUCKETS, np.int64), 0.5))


def test_layout_blocks_and_columns() -> None:
    """A layout places base columns, one block per drift subject with its missing column, then delay buckets."""
    model = ModelConfig.model_validate(
        {"favorable": ["yes"], "features": {"amount": {"kind": "numeric", "bins": 4}, "topic": {"kind": "categorical"}}}
    )
    profile = build_profile(
        "m",
        model,
        {
            "amount": [float(i) for i in range(100)],
            "topic": ["a", "b", "b", "c"] * 25,
            "score": [i / 100 for i in range(100)],
            "prediction": ["yes", "no"] * 50,
        },
    )
    layout = S.Layout(model, profile)
    assert list(layout.blocks) == ["amount", "topic", "score", "prediction"]
    amount, topic = layout.blocks["amount"], layout.blocks["topic"]
    assert amount.start == len(S.BASE_COLUMNS)
    assert amount.bins == 4
    assert topic.start == amount.missing + 1
    assert topic.bins == 4  # a, b, c + __unseen__
    assert [b.name for b in layout.features] == ["amount", "topic"]
    assert layout.width == layout.delay_start + S.DELAY_BUCKETS
    assert layout.favorable == frozenset({"yes"})
    s = amount.start
    assert amount.columns([-5.0, 30.0, 99.0, None, "x", 1e9]).tolist() == [s, s + 1, s + 3, s + 4, s + 4, s + 3]
    t = topic.start
    assert topic.columns(["a", "c", "zzz", None, 3]).tolist() == [t, t + 2, t + 3, t + 4, t + 3]


def test_numeric_block_treats_numeric_strings_the_same_in_every_batch() -> None:
    """A numeric feature sent as a string lands in the same column whatever else is in its batch."""
    model = ModelConfig.model_validate({"favorable": ["yes"], "features": {"amount": {"kind": "numeric", "bins": 4}}})
    block = S.Layout(model, build_profile("m", model, {"amount": [float(i) for i in range(100)]})).blocks["amount"]
    alone = block.columns(["42", 10.0]).tolist()
    with_text = block.columns(["42", 10.0, "n/a"]).tolist()
    assert with_text[:2] == alone
    assert with_text[2] == block.missing


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bucket_reads_in_passes_equal_one_pass(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading many buckets' parts in several bounded passes gives the single pass's counts."""
    rng = np.random.default_rng(seed)
    jobs = [
        tuple(
            S.Sparse.from_dense(rng.integers(0, 3, (int(rng.integers(1, 9)), WIDTH))) for _ in range(rng.integers(1, 4))
        )
        for _ in range(12)
    ]
    rows = np.array([0, 3, 5, 9], np.int64)  # row 9 is past every part: zeros
    cols = (1, 4, 6)
    whole = S._cells_of(jobs, rows, cols)
    monkeypatch.setattr(S, "_READ_CELLS", 10)
    assert np.array_equal(S._read_cells(jobs, rows, cols), whole)
    for j, parts in enumerate(jobs):
        dense = sum(np.pad(p.dense(), ((0, 10 - p.rows), (0, 0))) for p in parts)
        assert np.array_equal(whole[j], dense[rows][:, cols])


def test_a_sparse_row_is_the_dense_row() -> None:
    m = np.zeros((4, WIDTH), np.int64)
    m[1, [0, 6]] = [3, 2]
    m[2, 3] = 5
    sp = S.Sparse.from_dense(m)
    for r in range(4):
        assert np.array_equal(sp.row(r), m[r : r + 1])


@pytest.mark.parametrize("seed", range(3))
def test_bucket_reads_equal_their_parts_whatever_rows_rules_ask_for(seed: int) -> None:
    """Bucket counts read tick after tick (kept between reads) equal a fresh sum of each bucket's parts, while rules
    ask for changing slice rows and columns, some buckets only, late additions arrive and buckets are settled."""
    rng = np.random.default_rng(seed)
    lengths = (6, 130)
    ticks = random_ticks(seed + 200, 150)
    store = S.WindowStore(lengths)
    for t in range(150):
        if t in ticks:
            store.add(t, ticks[t].copy(), closed_before=t)
        store.close(t)
        for u in rng.integers(max(0, t - 8), t + 1, size=int(rng.integers(0, 4))):
            rows = 1 + int(u) // 7
            store.add(int(u), rng.integers(0, 3, size=(rows, WIDTH)).astype(np.int64), closed_before=t + 1)
        if rng.uniform() < 0.05:
            store.settle()  # bucket parts are replaced by their sums
        height = 1 + t // 7 + 3
        for length in lengths:
            parts = store.bucket_parts(length)
            if not parts:
                continue
            for _ in range(3):  # several rules: each its own rows and columns
                rows = sorted(rng.choice(height, size=int(rng.integers(1, height + 1)), replace=False).tolist())
                rng.shuffle(rows)
                cols = sorted(rng.choice(WIDTH, size=int(rng.integers(1, WIDTH + 1)), replace=False).tolist())
                only = None
                if rng.uniform() < 0.5:
                    only = sorted(rng.choice(len(parts), size=int(rng.integers(1, len(parts) + 1)), replace=False))
                starts, got = store.bucket_counts(length, rows, cols, only=only)
                picked = parts if only is None else [parts[i] for i in only]
                want = np.zeros((len(picked), len(rows), len(cols)), np.int64)
                for i, (_, ps) in enumerate(picked):
                    whole = np.zeros((height, WIDTH), np.int64)
                    for p in ps:
                        p.add_to(whole)
                    want[i] = whole[np.ix_(rows, cols)]
                assert np.array_equal(got, want), (t, length, rows, cols, only)
                step = store.windows[length].step
                assert starts.tolist() == [bid * step for bid, _ in picked]


@pytest.mark.parametrize("seed", range(4))
def test_renumbered_rows_equal_moving_the_dense_matrix(seed: int) -> None:
    """A partial's rows renumbered (in order, out of order, two rows onto one) hold the counts the dense matrix has
    after moving its rows the same way, each cell once and in order."""
    rng = np.random.default_rng(seed)
    rows, into = 12, 15
    m = rng.integers(0, 4, size=(rows, WIDTH)) * (rng.uniform(size=(rows, 1)) < 0.6)
    sp = S.Sparse.from_dense(m)
    for mapping in (
        np.sort(rng.choice(into, rows, replace=False)),
        rng.choice(into, rows, replace=False),
        rng.integers(0, 4, rows),
    ):
        want = np.zeros((into, WIDTH), np.int64)
        np.add.at(want, mapping, m)
        got = sp.renumbered(mapping.astype(np.int64), into)
        assert got.rows == into
        np.testing.assert_array_equal(got.dense(), want)
        assert np.all(np.diff(got.index.astype(np.int64)) > 0)
