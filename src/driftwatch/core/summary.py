"""Mergeable partial summaries: one integer matrix per model x version x tick, a row per slice.

Every quantity driftwatch reports is a function of integer counts, so a
summary is a ``(slices, columns)`` int64 matrix whose layout is fixed by the
model's config and reference profile (:class:`Layout`). Merging is ``+``,
which is associative and commutative (order within a tick cannot matter),
and removing a tick that leaves a window is ``-``, which is exact.

Storage: an event touches a few columns of a few slice rows, so most cells
are zero (the 122 label-delay buckets alone are ~60% of a row). Partials,
open ticks and retained window buckets are held as :class:`Sparse` (their
non-zero cells); only a window's running total and the since-start total are
dense. With 1,677 slices this took a worker's peak RSS from ~1 GB to ~300 MB.

Columns: prediction and favourable counts, scored predictions and the score
and sum of squares in micro-units (fixed point, so sums stay exact), one count per
interaction kind, labelled predictions and the confusion counts (positive =
favourable), then one block of bins per drift subject (numeric features on
the reference's quantile bins plus a *missing* column; categorical features
and predicted classes on the reference's categories plus *unseen* and
*missing*), then label-delay buckets.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from driftwatch import _fmath
from driftwatch.config import ModelConfig
from driftwatch.core.profile import Profile
from driftwatch.core.sample import TickSample
from driftwatch.core.slicing import SliceKey
from driftwatch.metrics.cbpe import Calibration

__all__ = [
    "BASE_COLUMNS",
    "DELAY_BUCKETS",
    "DELAY_GAMMA",
    "Block",
    "CbpeColumns",
    "Layout",
    "Matrix",
    "Partial",
    "Sparse",
    "WindowStore",
    "accumulate",
    "delay_bucket",
    "delay_quantile",
]

Matrix = NDArray[np.int64]
BASE_COLUMNS: Final = (
    "n_pred",
    "n_fav",
    "n_score",
    "score_micro",
    "score_sq_micro",
    "complaint",
    "escalation",
    "thumbs_down",
    "thumbs_up",
    "override",
    "resolved",
    "n_label",
    "tp",
    "fp",
    "tn",
    "fn",
)
N_PRED, N_FAV, N_SCORE, SCORE_MICRO, SCORE_SQ_MICRO = 0, 1, 2, 3, 4
KIND_COLUMN: Final = {
    k: 5 + i for i, k in enumerate(("complaint", "escalation", "thumbs_down", "thumbs_up", "override", "resolved"))
}
N_LABEL, TP, FP, TN, FN = 11, 12, 13, 14, 15
SCORE_SCALE: Final = 1_000_000

DELAY_GAMMA: Final = 1.15
"""Label delays go in log buckets ``(g**(i-1), g**i]`` seconds: quantiles within about +/-7%."""
DELAY_BUCKETS: Final = 122
"""``1.15**121`` s is about 250 days: longer delays share the last bucket."""
_LOG_GAMMA = math.log(DELAY_GAMMA)


def delay_bucket(seconds: NDArray[np.float64]) -> NDArray[np.int64]:
    """Bucket index of each delay (<= 1 s in bucket 0).

    >>> delay_bucket(np.array([0.5, 1.0, 1.1, 60.0])).tolist()
    [0, 0, 1, 30]
    """
    s = np.maximum(np.asarray(seconds, np.float64), 1.0)
    return np.minimum(np.ceil(_fmath.log(s) / _LOG_GAMMA - 1e-9), DELAY_BUCKETS - 1).astype(np.int64)


def delay_quantile(counts: NDArray[np.int64], q: float) -> float:
    """The ``q`` quantile of delays from bucket counts (the bucket's geometric middle), NaN when empty."""
    total = int(counts.sum())
    if total == 0:
        return math.nan
    i = int(np.searchsorted(np.cumsum(counts), q * total, side="left"))
    if i == 0:
        return 1.0
    return float(2 * DELAY_GAMMA**i / (DELAY_GAMMA + 1))


@dataclass(frozen=True, slots=True)
class Block:
    """The columns of one drift subject: bins, then (categorical) unseen, then missing."""

    name: str
    kind: str
    start: int
    bins: int
    reference: NDArray[np.float64]
    edges: NDArray[np.float64]
    index: dict[str, int]
    ref_count: int

    @property
    def missing(self) -> int:
        """Column counting events without a usable value."""
        return self.start + self.bins

    def columns(self, values: Sequence[object]) -> NDArray[np.int64]:
        """Column of each value (vectorised for numeric subjects)."""
        if self.kind == "numeric":
            # The decoder gives numbers as float; a string is missing even when it looks numeric,
            # so a value counts the same whatever else is in its batch.
            arr = np.array(
                [v if v.__class__ is float else float(v) if v.__class__ is int else math.nan for v in values],
                dtype=np.float64,
            )
            cols = np.searchsorted(self.edges, arr, side="right") + self.start
            return np.where(np.isnan(arr), self.missing, cols)
        unseen = self.start + self.bins - 1
        get = self.index.get
        start = self.start
        miss = self.missing
        return np.array(
            [miss if v is None else start + get(v, self.bins - 1) if v.__class__ is str else unseen for v in values],
            dtype=np.int64,
        )


@dataclass(frozen=True, slots=True)
class CbpeColumns:
    """The columns of performance estimation: per score bin, the count of scored predictions, those with a
    favourable decision, and the sum of calibrated probability (in millionths), each ``bins`` wide."""

    start: int
    bins: int
    edges: NDArray[np.float64]
    calibration: Calibration

    @property
    def positive(self) -> int:
        """First column of the favourable-decision counts."""
        return self.start + self.bins

    @property
    def calibrated(self) -> int:
        """First column of the calibrated sums."""
        return self.start + 2 * self.bins

    def sums(self, m: Matrix) -> tuple[Matrix, Matrix, NDArray[np.float64]]:
        """(count, favourable, calibrated sum) per row of summary ``m`` and bin."""
        b = self.bins
        cal = m[:, self.calibrated : self.calibrated + b] / SCORE_SCALE
        return m[:, self.start : self.start + b], m[:, self.positive : self.positive + b], cal


class Layout:
    """Column layout of one model's summaries, fixed by its config and reference profile."""

    def __init__(self, model: ModelConfig, profile: Profile) -> None:
        self.profile = profile  # the reference (its sample serves reports)
        self.favorable = frozenset(model.favorable)
        self.blocks: dict[str, Block] = {}
        pos = len(BASE_COLUMNS)
        subjects = list(model.features)
        if model.monitor_score and "score" in profile.distributions:
            subjects.append("score")
        if "prediction" in profile.distributions:
            subjects.append("prediction")
        for name in subjects:
            dist = profile.distributions.get(name)
            if dist is None:
                continue
            ref = np.asarray(dist.proportions, np.float64)
            block = Block(
                name=name,
                kind=dist.kind,
                start=pos,
                bins=dist.bins,
                reference=ref,
                edges=np.asarray(dist.edges, np.float64),
                index={c: i for i, c in enumerate(dist.categories)},
                ref_count=dist.count,
            )
            self.blocks[name] = block
            pos += block.bins + 1
        self.features = tuple(b for b in self.blocks.values() if b.name not in ("score", "prediction"))
        self.cbpe: CbpeColumns | None = None
        if profile.cbpe is not None:
            edges = np.asarray(profile.cbpe.edges, np.float64)
            self.cbpe = CbpeColumns(pos, edges.size - 1, edges, profile.cbpe.calibration)
            pos += 3 * self.cbpe.bins
        self.delay_start = pos
        self.width = pos + DELAY_BUCKETS


class Sparse:
    """A ``(rows, width)`` count matrix as its non-zero cells: sorted unique flat indices and their values.

    Most cells of a tick's or a bucket's summary are zero (an event touches a
    handful of columns of a few slice rows), so partials and retained window
    buckets are kept like this; open ticks and window totals stay dense. The
    arrays are never changed in place: :meth:`merge` returns a new one.
    """

    __slots__ = ("index", "rows", "values", "width")

    def __init__(self, rows: int, width: int, index: NDArray[np.generic], values: NDArray[np.generic]) -> None:
        self.rows = rows
        self.width = width
        # int32 flat indices when they fit (they always do for real layouts: 2**31 cells is ~88 GB of counts).
        self.index = index.astype(np.int32 if rows * width < 2**31 else np.int64, copy=False)
        self.values = values.astype(np.int64, copy=False)

    @classmethod
    def from_dense(cls, m: Matrix) -> Sparse:
        """The non-zero cells of ``m``."""
        flat = m.reshape(-1)
        nz = np.flatnonzero(flat)
        return cls(int(m.shape[0]), int(m.shape[1]), nz, flat[nz])

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return int(self.index.nbytes + self.values.nbytes)

    def dense(self) -> Matrix:
        """The matrix itself."""
        out = np.zeros(self.rows * self.width, np.int64)
        out[self.index] = self.values
        return out.reshape(self.rows, self.width)

    def row(self, r: int) -> Matrix:
        """Row ``r`` as a dense ``(1, width)`` matrix (zeros past :attr:`rows`)."""
        lo, hi = np.searchsorted(self.index, [r * self.width, (r + 1) * self.width])
        out = np.zeros((1, self.width), np.int64)
        out[0, self.index[lo:hi] - r * self.width] = self.values[lo:hi]
        return out

    def add_to(self, target: Matrix, sign: int = 1) -> None:
        """``target += self`` (or ``-=`` with ``sign=-1``) in place; ``target`` has at least as many rows."""
        flat = target.reshape(-1)  # a view: targets are C-contiguous
        if sign > 0:
            flat[self.index] += self.values
        else:
            flat[self.index] -= self.values

    def merge(self, other: Sparse) -> Sparse:
        """The sum of both (same width; rows of the larger)."""
        if not len(other.index):
            return self if self.rows >= other.rows else Sparse(other.rows, self.width, self.index, self.values)
        return Sparse.total([self, other])

    def moved(self, row: int, into: int) -> Sparse:
        """The same counts with row ``row``'s added to row ``into`` (and ``row`` empty)."""
        idx = self.index.astype(np.int64)
        lo, hi = row * self.width, (row + 1) * self.width
        sel = (idx >= lo) & (idx < hi)
        if not sel.any():
            return self
        idx[sel] += (into - row) * self.width
        return Sparse._summed(max(self.rows, into + 1), self.width, idx, self.values)

    def renumbered(self, rows: NDArray[np.int64], nrows: int) -> Sparse:
        """The same counts with row ``r``'s in row ``rows[r]``, ``nrows`` rows (rows that land on one row summed)."""
        idx = self.index.astype(np.int64)
        moved = rows[idx // self.width] * self.width + idx % self.width
        return Sparse._summed(nrows, self.width, moved, self.values)

    @staticmethod
    def total(parts: Sequence[Sparse]) -> Sparse:
        """The sum of many (same width) in one sort: merging them one by one would cost quadratic time."""
        if len(parts) == 1:
            return parts[0]
        rows = max(p.rows for p in parts)
        idx = np.concatenate([p.index.astype(np.int64) for p in parts])
        val = np.concatenate([p.values for p in parts])
        return Sparse._summed(rows, parts[0].width, idx, val)

    @staticmethod
    def _summed(rows: int, width: int, idx: NDArray[np.int64], val: NDArray[np.int64]) -> Sparse:
        """Cells given in any order, with repeats: sorted, repeats summed."""
        if not len(idx):
            return Sparse(rows, width, idx, val)
        order = np.argsort(idx, kind="stable")
        idx, val = idx[order], val[order]
        starts = np.flatnonzero(np.concatenate([[True], idx[1:] != idx[:-1]]))
        return Sparse(rows, width, idx[starts], np.add.reduceat(val, starts))


class Partial:
    """A mergeable partial summary: counts of one model x version x tick, one row per named slice.

    Rows are named, not numbered, so partials from different processes
    merge: ``a.merge(b)`` is the summary of both batches of events. The
    counts are held sparse (:class:`Sparse`); :attr:`counts` is the dense matrix.

    ``visible``: the tick at whose close the counts become visible to windows and rules, when later than ``tick``
    (a label counts in its prediction's tick but is seen when its own tick closes; see
    :mod:`driftwatch.core.pipeline`). It makes what a rule sees at each tick independent of how events were batched.
    """

    __slots__ = ("cells", "keys", "model_id", "sample", "tick", "version", "visible")

    def __init__(
        self,
        model_id: str,
        version: str,
        tick: int,
        keys: tuple[SliceKey, ...],
        counts: Matrix | Sparse,
        visible: int | None = None,
        sample: TickSample | None = None,
    ) -> None:
        self.sample = sample  # rows of some of the tick's predictions, for reports (see driftwatch.core.sample)
        self.model_id = model_id
        self.version = version
        self.tick = tick
        self.visible = tick if visible is None else max(tick, visible)
        self.keys = keys
        self.cells = counts if isinstance(counts, Sparse) else Sparse.from_dense(np.asarray(counts, np.int64))

    def __repr__(self) -> str:
        seen = "" if self.visible == self.tick else f" seen at {self.visible}"
        return (
            f"Partial({self.model_id!r}, {self.version!r}, {self.tick}{seen}, "
            f"{len(self.keys)} keys, {len(self.cells.index)} cells)"
        )

    @property
    def counts(self) -> Matrix:
        """The dense ``(slices, columns)`` count matrix."""
        return self.cells.dense()

    def merge(self, other: Partial) -> Partial:
        """The partial summary of both (same model, version, tick and visible tick)."""
        if (self.model_id, self.version, self.tick, self.visible) != (
            other.model_id,
            other.version,
            other.tick,
            other.visible,
        ):
            raise ValueError("only partials of the same model, version, tick and visible tick merge")
        index = {k: i for i, k in enumerate(self.keys)}
        keys = list(self.keys)
        for k in other.keys:
            if k not in index:
                index[k] = len(keys)
                keys.append(k)
        counts = np.zeros((len(keys), self.cells.width), np.int64)
        counts[: len(self.keys)] += self.counts
        np.add.at(counts, [index[k] for k in other.keys], other.counts)
        if self.sample is None or other.sample is None:
            sample = self.sample or other.sample
        else:
            sample = self.sample.merge(other.sample)
        return Partial(self.model_id, self.version, self.tick, tuple(keys), counts, self.visible, sample)

    def as_dict(self) -> dict[SliceKey, list[int]]:
        """Counts by slice key (for comparisons that must not depend on row order)."""
        counts = self.counts
        return {k: counts[i].tolist() for i, k in enumerate(self.keys)}


def _moved(m: Matrix | None, row: int, into: int) -> Matrix | None:
    """Dense ``m`` with row ``row`` added to row ``into`` and emptied (in place when ``into`` fits)."""
    if m is None or m.shape[0] <= row:
        return m
    if m.shape[0] <= into:
        grown = np.zeros((into + 1, m.shape[1]), np.int64)
        grown[: m.shape[0]] = m
        m = grown
    m[into] += m[row]
    m[row] = 0
    return m


def accumulate(target: Matrix | None, delta: Matrix | Sparse) -> Matrix:
    """``target + delta``, growing ``target``'s rows when the slice space grew (in place when it fits)."""
    if isinstance(delta, Sparse):
        rows, width = delta.rows, delta.width
    else:
        rows, width = delta.shape
    if target is None:
        if not isinstance(delta, Sparse):
            return delta.copy()
        target = np.zeros((rows, width), np.int64)
    elif target.shape[0] < rows:
        grown = np.zeros((rows, target.shape[1]), np.int64)
        grown[: target.shape[0]] = target
        target = grown
    if isinstance(delta, Sparse):
        delta.add_to(target)
    else:
        target[:rows] += delta
    return target


def _sparse(delta: Matrix | Sparse) -> Sparse:
    return delta if isinstance(delta, Sparse) else Sparse.from_dense(delta)


class _Window:
    __slots__ = ("buckets", "late", "length", "step", "total")

    def __init__(self, length_ticks: int) -> None:
        self.length = length_ticks
        # Long windows keep at most ~60 buckets: a 1 h window advances in 1 min steps.
        self.step = max(1, length_ticks // 60)
        # Buckets are sparse (most of their cells are zero); only the running total is dense.
        self.buckets: deque[tuple[int, Sparse]] = deque()
        # Late additions to existing buckets, summed into them only when read (:meth:`WindowStore.settle`): merging
        # each into its bucket re-sorted the bucket every time. The running total includes them already.
        self.late: dict[int, list[Sparse]] = {}
        self.total: Matrix | None = None

    def settle(self) -> None:
        """Fold the late additions into their buckets."""
        if self.late:
            self.buckets = deque(
                (b, Sparse.total([m, *self.late[b]]) if b in self.late else m) for b, m in self.buckets
            )
            self.late = {}


def _cells_of(jobs: list[tuple[Sparse, ...]], rows: NDArray[np.int64], cols: tuple[int, ...]) -> Matrix:
    """For each job, the sum of its parts in rows ``rows`` and columns ``cols``: jobs x len(rows) x len(cols) (a
    row a part lacks counts zero). One vectorised pass over all jobs: a sequential rule reads the changed buckets of
    its window at every tick, and a pass per bucket cost more in numpy's per-call overhead than in counting."""
    width = jobs[0][0].width
    col_at = np.full(width, -1, np.int64)
    col_at[list(cols)] = np.arange(len(cols))
    height = max(p.rows for parts in jobs for p in parts)
    row_at = np.full(max(height, int(rows.max()) + 1), -1, np.int64)
    row_at[rows] = np.arange(len(rows))
    cells = len(rows) * len(cols)
    out = np.zeros(len(jobs) * cells, np.int64)
    filled = [(j, p) for j, parts in enumerate(jobs) for p in parts if len(p.index)]
    if filled:
        index = np.concatenate([p.index for _, p in filled]).astype(np.int64)
        values = np.concatenate([p.values for _, p in filled])
        job = np.repeat(np.array([j for j, _ in filled], np.int64), [len(p.index) for _, p in filled])
        r, c = np.divmod(index, width)
        rp, cp = row_at[r], col_at[c]
        keep = (rp >= 0) & (cp >= 0)
        np.add.at(out, job[keep] * cells + rp[keep] * len(cols) + cp[keep], values[keep])
    return out.reshape(len(jobs), len(rows), len(cols))


_READ_CELLS = 1 << 18
"""Stored cells :func:`_cells_of` reads in one pass (its temporaries are ~50 bytes per cell): a rule's first read of
a whole window of a wide slice space made them ~20 MB, a worker's peak."""


def _read_cells(jobs: list[tuple[Sparse, ...]], rows: NDArray[np.int64], cols: tuple[int, ...]) -> Matrix:
    """:func:`_cells_of`, in passes of at most about :data:`_READ_CELLS` stored cells."""
    out: list[Matrix] = []
    batch: list[tuple[Sparse, ...]] = []
    held = 0
    for parts in jobs:
        size = sum(len(p.index) for p in parts)
        if batch and held + size > _READ_CELLS:
            out.append(_cells_of(batch, rows, cols))
            batch, held = [], 0
        batch.append(parts)
        held += size
    out.append(_cells_of(batch, rows, cols))
    return out[0] if len(out) == 1 else np.concatenate(out)


@dataclass(slots=True, eq=False)
class _ReadOut:
    """A window bucket's counts in some rows (sorted) and columns, and the parts they were read from (see
    :meth:`WindowStore.bucket_counts`)."""

    parts: tuple[Sparse, ...]
    rows: tuple[int, ...]
    row_set: frozenset[int]  # ``rows`` as a set, kept: every read asks whether its rows are among them
    counts: Matrix


_OPEN_PARTS = 64
"""Deltas an open tick collects before they are summed (bounds their memory)."""


class WindowStore:
    """Open ticks, sliding windows built from closed ticks, and the since-start total of one model x version."""

    def __init__(self, window_ticks: tuple[int, ...]) -> None:
        # Open ticks are sparse too: a backlog batch opens a hundred ticks at once, dense they were ~1 GB. Their
        # deltas are kept as a list and summed in one sort when read (merging each small partial into a growing
        # tick re-sorted the whole tick every time: quadratic with one-event messages).
        self._open: dict[int, list[Sparse]] = {}
        # Counts of closed (or earlier) ticks that become visible when a later tick closes: visible tick -> [(tick,
        # counts)]. Labels wait here for their own tick, so a rule sees them at the same tick however they were batched.
        self.deferred: dict[int, list[tuple[int, Sparse]]] = {}
        self.windows = {w: _Window(w) for w in window_ticks}
        self.since: Matrix | None = None
        # (window, bucket, columns) -> (the bucket's parts, their counts in those columns, in every row read so far):
        # see bucket_counts.
        self._columns: dict[tuple[int, int, tuple[int, ...]], _ReadOut] = {}
        self._read_from: dict[int, int | None] = {}  # window -> its oldest bucket when its reads were last pruned

    @property
    def open_cells(self) -> dict[int, Sparse]:
        """The open ticks, each summed."""
        for t, parts in self._open.items():
            if len(parts) > 1:
                self._open[t] = [Sparse.total(parts)]
        return {t: parts[0] for t, parts in self._open.items()}

    @open_cells.setter
    def open_cells(self, cells: dict[int, Sparse]) -> None:
        self._open = {t: [sp] for t, sp in cells.items()}

    @property
    def open_ticks(self) -> list[int]:
        """The ticks still open (without summing them), with those that will reveal deferred counts."""
        return [*self._open, *(t for t in self.deferred if t not in self._open)]

    def add(self, tick: int, delta: Matrix | Sparse, closed_before: int, visible: int | None = None) -> None:
        """Fold ``delta`` into ``tick``: an open tick, or (late joins and labels) the retained buckets.

        ``visible`` later than ``tick`` and not closed yet: held until that tick closes, then folded into ``tick``.
        """
        sp = _sparse(delta)
        if visible is not None and visible > tick and visible >= closed_before:
            self.deferred.setdefault(visible, []).append((tick, sp))
            return
        if tick >= closed_before:
            parts = self._open.setdefault(tick, [])
            parts.append(sp)
            if len(parts) >= _OPEN_PARTS:
                self._open[tick] = [Sparse.total(parts)]
            return
        self.since = accumulate(self.since, sp)
        for w in self.windows.values():
            bid = tick // w.step
            if bid * w.step < closed_before - w.length:
                continue  # that tick has left this window
            # Buckets are in order; a tick that had no data when it closed gets its bucket now.
            i = 0
            while i < len(w.buckets) and w.buckets[i][0] < bid:
                i += 1
            if i < len(w.buckets) and w.buckets[i][0] == bid:
                w.late.setdefault(bid, []).append(sp)
            else:
                w.buckets.insert(i, (bid, sp))
            w.total = accumulate(w.total, sp)

    def close(self, tick: int) -> Sparse | None:
        """Close ``tick``: move it into every window and the since-start total; return its counts (sparse: dense,
        one per model version, they were a wide worker's peak memory while rules ran)."""
        parts = self._open.pop(tick, None)
        sp = None if parts is None else Sparse.total(parts)
        end = tick + 1
        for w in self.windows.values():
            if sp is not None:
                bid = tick // w.step
                if w.buckets and w.buckets[-1][0] == bid:
                    w.buckets[-1] = (bid, w.buckets[-1][1].merge(sp))
                else:
                    w.buckets.append((bid, sp))
                w.total = accumulate(w.total, sp)
            # A bucket stays while it lies wholly inside the last `length` ticks.
            while w.buckets and w.buckets[0][0] * w.step < end - w.length:
                bid, old = w.buckets.popleft()
                assert w.total is not None
                old.add_to(w.total, sign=-1)
                for part in w.late.pop(bid, ()):
                    part.add_to(w.total, sign=-1)
        if sp is not None:
            self.since = accumulate(self.since, sp)
        by_tick: dict[int, list[Sparse]] = {}
        for earlier, counts in self.deferred.pop(tick, ()):
            by_tick.setdefault(earlier, []).append(counts)
        for earlier, parts in sorted(by_tick.items()):  # into the buckets of its own tick, if still in a window
            self.add(earlier, Sparse.total(parts), closed_before=end)
        return sp

    def settle(self) -> None:
        """Fold late additions into their window buckets (before the buckets are read, e.g. for a checkpoint)."""
        for w in self.windows.values():
            w.settle()

    @property
    def open(self) -> dict[int, Matrix]:
        """The open ticks' matrices (dense copies, for inspection)."""
        return {t: m.dense() for t, m in self.open_cells.items()}

    def recent(self, rows: int, width: int) -> Matrix:
        """The longest window and the open ticks together, padded to ``rows`` rows."""
        out = self.window(max(self.windows, default=0), rows, width)
        for parts in self._open.values():
            for sp in parts:
                if sp.rows <= rows:
                    sp.add_to(out)
        return out

    def move_row(self, row: int, into: int) -> None:
        """Fold slice row ``row`` into row ``into`` everywhere (its value gave the row to another)."""
        self._open = {t: [sp.moved(row, into) for sp in parts] for t, parts in self._open.items()}
        self.deferred = {v: [(t, sp.moved(row, into)) for t, sp in parts] for v, parts in self.deferred.items()}
        for w in self.windows.values():
            w.buckets = deque((b, sp.moved(row, into)) for b, sp in w.buckets)
            w.late = {b: [sp.moved(row, into) for sp in parts] for b, parts in w.late.items()}
            w.total = _moved(w.total, row, into)
        self.since = _moved(self.since, row, into)

    def bucket_counts(
        self, length_ticks: int, rows: Sequence[int], columns: Sequence[int], only: Sequence[int] | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The first tick of each bucket of a window, oldest first, and its counts: buckets x ``rows`` x ``columns``
        (late additions included; a row the bucket lacks counts zero). ``only``: just those buckets (indices).

        A bucket's columns are read out of its sparse counts once and kept until the bucket changes (a late
        addition is read on its own and added): a sequential rule reads every bucket of its window at every tick.
        The kept rows are the union of all rows asked for (reading a part costs the same for any rows): rules that
        watch different slices, and slices that come and go, never make a bucket be read again."""
        w = self.windows[length_ticks]
        cols = tuple(columns)
        buckets = list(w.buckets) if only is None else [w.buckets[i] for i in only]
        starts = np.array([bid * w.step for bid, _ in buckets], np.int64)
        if not buckets or not len(rows) or not cols:
            return starts, np.zeros((len(buckets), len(rows), len(cols)), np.int64)
        want = np.asarray(rows, np.int64)
        asked = frozenset(int(r) for r in rows)
        out = np.zeros((len(buckets), len(want), len(cols)), np.int64)
        where: dict[tuple[int, ...], NDArray[np.intp]] = {}  # kept rows -> where the asked rows are in them

        def pick(kept: tuple[int, ...], counts: Matrix) -> Matrix:
            at = where.get(kept)
            if at is None:
                at = where[kept] = np.searchsorted(np.asarray(kept, np.int64), want)
            return counts[at]

        # Reads grouped by the rows they read: rows -> [(bucket index, parts, kept counts to add to, new parts)]
        reads: dict[tuple[int, ...], list[tuple[int, tuple[Sparse, ...], _ReadOut | None, tuple[Sparse, ...]]]] = {}
        for i, (bid, sp) in enumerate(buckets):
            parts = (sp, *w.late.get(bid, ()))
            hit = self._columns.get((length_ticks, bid, cols))
            base: _ReadOut | None = None
            new = parts
            if hit is None:
                kept = tuple(sorted(asked))
            elif asked <= hit.row_set:
                kept = hit.rows
                if hit.parts == parts:
                    out[i] = pick(kept, hit.counts)
                    continue
                if len(hit.parts) < len(parts) and hit.parts == parts[: len(hit.parts)]:
                    base, new = hit, parts[len(hit.parts) :]  # only the late additions are new
            else:
                kept = tuple(sorted(hit.row_set | asked))
            reads.setdefault(kept, []).append((i, parts, base, new))
        for kept, group in reads.items():
            counts = _read_cells([new for *_, new in group], np.asarray(kept, np.int64), cols)
            row_set = frozenset(kept)
            for (i, parts, base, _), c in zip(group, counts, strict=True):
                if base is not None:
                    c += base.counts
                self._columns[(length_ticks, buckets[i][0], cols)] = _ReadOut(parts, kept, row_set, c)
                out[i] = pick(kept, c)
        self._forget_reads(length_ticks, w)
        return starts, out

    def _forget_reads(self, length_ticks: int, w: _Window) -> None:
        """Drop the kept reads of buckets that have left window ``length_ticks`` (checked when its oldest bucket
        changes): reads of slices no rule watches any more go with them."""
        first = w.buckets[0][0] if w.buckets else None
        if self._read_from.get(length_ticks, -1) == first:
            return
        self._read_from[length_ticks] = first
        for key in [k for k in self._columns if k[0] == length_ticks and (first is None or k[1] < first)]:
            del self._columns[key]

    def bucket_parts(self, length_ticks: int) -> list[tuple[int, tuple[Sparse, ...]]]:
        """Each bucket of a window and what its counts are made of (its parts change whenever its counts do)."""
        w = self.windows[length_ticks]
        return [(bid, (sp, *w.late.get(bid, ()))) for bid, sp in w.buckets]

    def window(self, length_ticks: int, rows: int, width: int) -> Matrix:
        """The summary of a window (0 = since start), padded to ``rows`` rows."""
        m = self.since if length_ticks == 0 else self.windows[length_ticks].total
        out = np.zeros((rows, width), np.int64)
        if m is not None:
            k = min(rows, m.shape[0])
            out[:k] = m[:k]
        return out
