"""The pure pipeline: decode -> slice -> join -> fold into tick summaries -> windows -> metrics -> rules.

Synchronous and deterministic, driven only by event time: the same events
in the same batches always give the same metrics and alert transitions. The
streaming shell, ``driftwatch replay`` and the tests all run this class.

Time. Events fall into ticks of ``windows.tick`` seconds by their own event
time. The watermark is the largest event time seen minus ``lateness``; a tick
closes when the watermark passes its end, then it is merged into every
window and the rules are evaluated at the tick's end. An event whose tick
has already closed when it arrives is dropped as late (counted). Lateness is
judged against the watermark as it stood before the batch, so the order of
events inside a batch does not matter.

Joins. Interactions find their prediction by ``request_id`` (remembered for
``join.ttl``, at most ``join.max_entries``). Complaints, escalations and the
other kinds count in the tick of their own event time. Labels count in the
tick of the prediction they label (so TPR/FPR and label coverage describe
the predictions made in a window); a label whose prediction's tick has left
every window still counts since start. An interaction that arrives before
its prediction waits up to ``join.grace``; then it is a join miss (counted,
never guessed).

References. A model whose reference is learnt from its first N events (or T
seconds) uses those events for the reference only; its metrics start after.
"""

from __future__ import annotations

import math
import operator
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from river import drift as river_drift

from driftwatch.alerts.engine import AlertEngine, AlertTransition, Candidate
from driftwatch.config import Config, ModelConfig, Rule
from driftwatch.events import Decoded, EventDecoder, Interaction, Prediction
from driftwatch.metrics import summary as S
from driftwatch.metrics.catalog import ATTRIBUTE_METRICS, LABEL_METRICS
from driftwatch.metrics.stats import benjamini_hochberg
from driftwatch.metrics.values import MetricArrays, compare_groups, p_values, slice_metric
from driftwatch.reports.baseline import Profile, build_profile, load_profile
from driftwatch.slicing import MISSING, OTHER, OVERALL, TRACK_FACTOR, AttributeCoder, SliceSpace, coders_from_config

__all__ = ["Counters", "MetricRow", "Pipeline"]

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_HEALTHY = {">": operator.le, ">=": operator.lt, "<": operator.ge, "<=": operator.gt}
REPORTED_SLICE_METRICS = (
    "selection_rate",
    "mean_score",
    "complaint_rate",
    "escalation_rate",
    "thumbs_down_rate",
    "override_rate",
    "label_coverage",
    "tpr",
    "fpr",
    "error_rate",
    "label_delay_p50_seconds",
    "label_delay_p90_seconds",
)


@dataclass(slots=True)
class Counters:
    """What happened to every event: decoded, rejected (by reason), late, joined, learnt from."""

    predictions: int = 0
    interactions: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    late_dropped: int = 0
    join_hits: int = 0
    join_misses: int = 0
    duplicate_labels: int = 0
    reference_learning: int = 0
    evaluations: int = 0


@dataclass(frozen=True, slots=True)
class MetricRow:
    """A final metric value for one slice or attribute, with its evidence."""

    name: str
    labels: dict[str, str]
    value: float | None
    n: int
    lo: float | None
    hi: float | None
    status: str


class _Stream:
    """State of one model x version: its slice space, summaries and attribute caches."""

    __slots__ = ("caches", "cells", "layout", "model_id", "pair_cache", "space", "store", "version")

    def __init__(
        self, model_id: str, version: str, layout: S.Layout, space: SliceSpace, window_ticks: tuple[int, ...]
    ) -> None:
        self.model_id = model_id
        self.version = version
        self.layout = layout
        self.space = space
        self.store = S.WindowStore(window_ticks)
        self.caches: list[dict[str | None, int]] = []
        self.pair_cache: list[dict[int, int]] = []
        self.cells: dict[bytes, int] = {}


class _Learner:
    """Collects a model's first events into a reference profile."""

    __slots__ = ("columns", "deadline", "model", "model_id", "target")

    def __init__(self, model_id: str, model: ModelConfig) -> None:
        self.model_id = model_id
        self.model = model
        self.target = model.reference.learn_events
        self.deadline: float | None = None
        self.columns: dict[str, list[object]] = {f: [] for f in model.features}
        self.columns["score"] = []
        self.columns["prediction"] = []

    def add(self, e: Prediction, ts: float) -> bool:
        """Take one event, or return True (without taking it) when the reference is already complete."""
        if self.model.reference.learn_seconds is not None:
            if self.deadline is None:
                self.deadline = ts + self.model.reference.learn_seconds
            if ts >= self.deadline and self.columns["prediction"]:
                return True
        elif self.target is not None and len(self.columns["prediction"]) >= self.target:
            return True
        for f in self.model.features:
            self.columns[f].append(e.features.get(f))
        self.columns["score"].append(e.score)
        self.columns["prediction"].append(e.prediction)
        return False


_TS_BITS = 43  # event time in ms: good until the year 2248
_FAV_BIT = 1 << _TS_BITS
_CELL_SHIFT = _TS_BITS + 1
_TS_MASK = _FAV_BIT - 1
_LEARNING = 0  # the cell of predictions used to learn a reference: interactions are not joined
MAX_CELLS = 1 << (62 - _CELL_SHIFT)
"""A join entry is one int: cell << 44 | favourable << 43 | event time in ms (packed: ~70 bytes each)."""


class Pipeline:
    """Runs events through the whole pure core; see the module docstring for the semantics."""

    def __init__(self, config: Config, key: bytes | None = None, profiles: dict[str, Profile] | None = None) -> None:
        self.config = config
        self.tick = config.windows.tick
        self.window_ticks = tuple(round(w / self.tick) for w in config.windows.windows)
        self.decoder = EventDecoder(config.attributes, max_event_bytes=config.max_event_bytes)
        self.coders: dict[str, AttributeCoder] = coders_from_config(config, key)
        self.dimensions = config.dimensions()
        self._attrs = tuple(config.attributes)
        self._attr_get = operator.attrgetter(*self._attrs) if self._attrs else None
        self._pairs = tuple((self._attrs.index(a), self._attrs.index(b)) for a, b in config.intersections)
        limits = [TRACK_FACTOR * ac.max_values + 1 for ac in config.attributes.values()]
        for a, b in config.intersections:
            limits.append(TRACK_FACTOR * max(config.attributes[a].max_values, config.attributes[b].max_values) + 1)
        self._limits = tuple(limits)
        self.layouts: dict[str, S.Layout] = {}
        self.learners: dict[str, _Learner] = {}
        profiles = dict(profiles or {})
        for mid, mc in config.models.items():
            prof = profiles.get(mid)
            if prof is None and mc.reference.profile is not None:
                prof = load_profile(mc.reference.profile)
            if prof is not None:
                self.layouts[mid] = S.Layout(mc, prof)
            else:
                self.learners[mid] = _Learner(mid, mc)
        self.streams: dict[tuple[str, str], _Stream] = {}
        self.versions: dict[str, list[str]] = {m: [] for m in config.models}
        self.counters = Counters()
        self.engine = AlertEngine()
        self._join: dict[str, int] = {}
        # A cell is a stream and one combination of slice rows; join entries point at cells.
        self._cell_stream: list[_Stream | None] = [None]
        self._cell_rows: list[tuple[int, ...]] = [()]
        self._join_order: deque[tuple[float, list[str]]] = deque()
        self._pending: dict[str, list[tuple[Interaction, float, int]]] = {}
        self._labeled: set[str] = set()
        self.max_ts = -math.inf
        self.closed_before: int | None = None  # first tick not yet closed
        self._detectors: dict[tuple[str, str], object] = {}
        self._detected_at: dict[tuple[str, str], float] = {}
        self.transitions: list[AlertTransition] = []

    # ------------------------------------------------------------------ ingest

    def process(self, raws: Sequence[bytes]) -> tuple[Decoded, list[AlertTransition]]:
        """Decode and ingest one batch of raw events; return the decode result and alert transitions."""
        decoded = self.decoder.decode_batch(raws)
        for err in decoded.errors:
            self.counters.rejected[err.reason] += 1
        return decoded, self.ingest(decoded.predictions, decoded.interactions)

    def ingest(self, predictions: Sequence[Prediction], interactions: Sequence[Interaction]) -> list[AlertTransition]:
        """Fold decoded events, advance the watermark, close ticks and evaluate rules."""
        closed = self.closed_before
        batch_max = self.max_ts
        if predictions:
            batch_max = max(batch_max, self._ingest_predictions(predictions, closed))
        if interactions:
            batch_max = max(batch_max, self._ingest_interactions(interactions, closed))
        return self._advance(batch_max)

    def _ingest_predictions(self, preds: Sequence[Prediction], closed: int | None) -> float:
        c = self.counters
        c.predictions += len(preds)
        ts = _seconds(preds)
        ticks = np.floor(ts / self.tick).astype(np.int64)
        # Group by model x version: one int code per event, then a stable sort (no per-event appends).
        codes: dict[tuple[str, str], int] = {}
        code = np.array(
            [codes.setdefault(k, len(codes)) for k in [(e.model_id, e.model_version) for e in preds]], np.int64
        )
        if closed is not None:
            late = ticks < closed
            c.late_dropped += int(late.sum())
            code[late] = -1
        order = np.argsort(code, kind="stable")
        bounds = np.searchsorted(code[order], np.arange(len(codes) + 1))
        keys = list(codes)
        for g, (mid, ver) in enumerate(keys):
            idx = order[bounds[g] : bounds[g + 1]].tolist()
            if not idx:
                continue
            mc = self.config.models.get(mid)
            if mc is None:
                c.rejected["unknown_model"] += len(idx)
                continue
            learner = self.learners.get(mid)
            if learner is not None:
                idx = self._learn(mid, learner, [preds[i] for i in idx], ts[idx], idx)
                if not idx:
                    continue
            stream = self._stream(mid, ver)
            self._fold_predictions(stream, [preds[i] for i in idx], ts[idx], ticks[idx], closed)
        return float(ts.max()) if len(ts) else -math.inf

    def _learn(self, mid: str, learner: _Learner, evs: list[Prediction], ts: np.ndarray, idx: list[int]) -> list[int]:
        for j, e in enumerate(evs):
            if learner.add(e, float(ts[j])):
                mc = self.config.models[mid]
                self.layouts[mid] = S.Layout(
                    mc, build_profile(mid, mc, learner.columns, source="learnt from first events", strict=False)
                )
                del self.learners[mid]
                self.counters.reference_learning += j
                for k in range(j):  # remembered so their interactions are not join misses
                    self._join[evs[k].request_id] = _LEARNING
                self._join_order.append(
                    (float(ts[j - 1]) if j else float(ts[0]), [evs[k].request_id for k in range(j)])
                )
                return idx[j:]
        self.counters.reference_learning += len(evs)
        for e in evs:
            self._join[e.request_id] = _LEARNING
        self._join_order.append((float(ts.max()), [e.request_id for e in evs]))
        return []

    def _stream(self, mid: str, ver: str) -> _Stream:
        s = self.streams.get((mid, ver))
        if s is not None:
            return s
        versions = self.versions[mid]
        if ver not in versions:
            if len(versions) >= self.config.models[mid].max_versions:
                ver = OTHER
                s = self.streams.get((mid, ver))
                if s is not None:
                    return s
            versions.append(ver)
        s = _Stream(mid, ver, self.layouts[mid], SliceSpace(self.dimensions, self._limits), self.window_ticks)
        s.caches = [{None: MISSING} for _ in self._attrs]
        s.cells = {}
        s.pair_cache = [{} for _ in self._pairs]
        self.streams[(mid, ver)] = s
        return s

    def _rows(self, stream: _Stream, evs: Sequence[Prediction]) -> np.ndarray:
        n = len(evs)
        rows = np.zeros((n, 1 + len(self.dimensions)), dtype=np.int64)
        if self._attr_get is None:
            return rows
        raw = [self._attr_get(e.attributes) for e in evs]
        columns = list(zip(*raw, strict=True)) if len(self._attrs) > 1 else [tuple(r for r in raw)]
        for d, col in enumerate(columns):
            cache = stream.caches[d]
            try:
                rows[:, 1 + d] = [cache[v] for v in col]
            except KeyError:
                coder = self.coders[self._attrs[d]]
                out = []
                for v in col:
                    r = cache.get(v)
                    if r is None:
                        value = coder.code(v)
                        r = stream.space.row(d, value)
                        if value != OTHER:
                            cache[v] = r
                    out.append(r)
                rows[:, 1 + d] = out
        base = 1 + len(self._attrs)
        for p, (a, b) in enumerate(self._pairs):
            ra, rb = rows[:, 1 + a], rows[:, 1 + b]
            # An event without either value joins no slice of the pair (key -1).
            key = np.where((ra >= 0) & (rb >= 0), ra * 1_000_003 + rb, -1)
            uniq, inv = np.unique(key, return_inverse=True)
            pc = stream.pair_cache[p]
            mapped = np.empty(len(uniq), dtype=np.int64)
            for u, k in enumerate(uniq.tolist()):
                r = pc.get(k)
                if r is None:
                    ka, kb = divmod(k, 1_000_003)
                    if k < 0:
                        r = MISSING
                    else:
                        va, vb = stream.space.keys[ka][1], stream.space.keys[kb][1]
                        r = stream.space.row(len(self._attrs) + p, OTHER if OTHER in (va, vb) else f"{va}:{vb}")
                    pc[k] = r
                mapped[u] = r
            rows[:, base + p] = mapped[inv]
        return rows

    def _fold_predictions(
        self, stream: _Stream, evs: list[Prediction], ts: np.ndarray, ticks: np.ndarray, closed: int | None
    ) -> None:
        layout = stream.layout
        n = len(evs)
        rows = self._rows(stream, evs)
        fav_set = layout.favorable
        preds = [e.prediction for e in evs]
        fav = np.array(
            [p in fav_set if f is None else f for f, p in zip([e.favorable for e in evs], preds, strict=True)],
            dtype=bool,
        )
        score_list = [e.score for e in evs]
        score = np.array(score_list, dtype=np.float64)  # None becomes NaN
        has_score = ~np.isnan(score)
        cols = [np.full(n, S.N_PRED, np.int64), np.where(fav, S.N_FAV, -1), np.where(has_score, S.N_SCORE, -1)]
        feats = [e.features for e in evs]
        for b in layout.features:
            cols.append(b.columns([f.get(b.name) for f in feats]))
        if "score" in layout.blocks:
            cols.append(layout.blocks["score"].columns(score_list))
        if "prediction" in layout.blocks:
            cols.append(layout.blocks["prediction"].columns(preds))
        col = np.stack(cols, axis=1)
        self._scatter(stream, rows, ticks, col, closed, score=score)
        # Remember the request for joins: its slices, tick, time and outcome.
        rids = [e.request_id for e in evs]
        join = self._join
        join.update(zip(rids, self._pack(stream, rows, ts, fav).tolist(), strict=False))
        self._join_order.append((float(ts.max()), rids))
        if self._pending:
            released = [w for rid in self._pending.keys() & set(rids) for w in self._pending.pop(rid)]
            if released:
                self._fold_joined(
                    [e for e, _, _ in released],
                    np.array([t for _, t, _ in released]),
                    np.array([k for _, _, k in released], np.int64),
                    closed,
                )

    def _pack(self, stream: _Stream, rows: np.ndarray, ts: np.ndarray, fav: np.ndarray) -> np.ndarray:
        """Join entries of a batch: each event's cell (stream x slice rows), outcome and time in one int64."""
        rows = np.ascontiguousarray(rows)
        view = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
        uniq, first, inv = np.unique(view, return_index=True, return_inverse=True)
        ids = np.empty(len(uniq), np.int64)
        for u, key in enumerate(uniq.tolist()):
            cell = stream.cells.get(key)
            if cell is None:
                cell = len(self._cell_rows)
                if cell >= MAX_CELLS:
                    raise OverflowError("too many slice cells; lower max_values")
                stream.cells[key] = cell
                self._cell_stream.append(stream)
                self._cell_rows.append(tuple(rows[first[u]].tolist()))
            ids[u] = cell
        ms = np.floor(ts * 1000).astype(np.int64)  # floor: the label's tick must equal the prediction's
        packed: np.ndarray = (ids[inv.ravel()] << _CELL_SHIFT) | (fav.astype(np.int64) << _TS_BITS) | (ms & _TS_MASK)
        return packed

    def _scatter(
        self,
        stream: _Stream,
        rows: np.ndarray,
        ticks: np.ndarray,
        cols: np.ndarray,
        closed: int | None,
        score: np.ndarray | None = None,
    ) -> None:
        """Add one count per (event, slice row, column) into the tick matrices; negative rows/cols are skipped."""
        width = stream.layout.width
        nrows = len(stream.space)
        uticks, tick_idx = np.unique(ticks, return_inverse=True)
        base = tick_idx[:, None] * nrows + rows  # (n, slices)
        flat = base[:, :, None] * width + cols[:, None, :]
        valid = (rows >= 0)[:, :, None] & (cols >= 0)[:, None, :]
        size = len(uticks) * nrows * width
        counts = np.bincount(flat[valid], minlength=size).reshape(len(uticks), nrows, width)
        if score is not None:
            ok = ~np.isnan(score)
            if ok.any():
                sb = base[ok]
                sv = np.repeat(score[ok], sb.shape[1])
                sb = sb.ravel()
                good = np.repeat(rows[ok] >= 0, 1, axis=0).ravel()
                micro = np.rint(sv * S.SCORE_SCALE)
                sq = np.rint(sv * sv * S.SCORE_SCALE)
                tot = np.bincount(sb[good], weights=micro[good], minlength=len(uticks) * nrows)
                tot2 = np.bincount(sb[good], weights=sq[good], minlength=len(uticks) * nrows)
                counts[:, :, S.SCORE_MICRO] += np.rint(tot).astype(np.int64).reshape(len(uticks), nrows)
                counts[:, :, S.SCORE_SQ_MICRO] += np.rint(tot2).astype(np.int64).reshape(len(uticks), nrows)
        closed_before = closed if closed is not None else -(2**62)
        for i, t in enumerate(uticks.tolist()):
            stream.store.add(t, counts[i], closed_before)

    def _ingest_interactions(self, inters: Sequence[Interaction], closed: int | None) -> float:
        c = self.counters
        c.interactions += len(inters)
        ts = _seconds(inters)
        ticks = np.floor(ts / self.tick).astype(np.int64)
        if closed is not None:
            keep = ticks >= closed
            c.late_dropped += int((~keep).sum())
            if not keep.all():
                idx = np.flatnonzero(keep)
                inters = [inters[i] for i in idx.tolist()]
                ts, ticks = ts[idx], ticks[idx]
        if len(inters):
            self._fold_joined(inters, ts, ticks, closed)
        return float(ts.max()) if len(ts) else -math.inf

    def _fold_joined(
        self, inters: Sequence[Interaction], ts: np.ndarray, ticks: np.ndarray, closed: int | None
    ) -> None:
        """Fold interactions into their prediction's slices; park those whose prediction is not known yet."""
        c = self.counters
        found = [self._join.get(e.request_id, -1) for e in inters]
        packed = np.array(found, dtype=np.int64)
        missing = packed < 0
        if missing.any():
            pending = self._pending
            for i in np.flatnonzero(missing).tolist():
                e = inters[i]
                pending.setdefault(e.request_id, []).append((e, float(ts[i]), int(ticks[i])))
        cells = packed >> _CELL_SHIFT
        learning = (cells == _LEARNING) & ~missing
        c.reference_learning += int(learning.sum())
        ok = ~missing & ~learning
        c.join_hits += int(ok.sum())
        kinds = [e.kind for e in inters]
        col0 = np.array([_KIND_CODE[k] for k in kinds], np.int64)
        col1 = np.full(len(inters), -1, np.int64)
        col2 = np.full(len(inters), -1, np.int64)
        at = ticks.copy()
        is_label = (col0 == S.N_LABEL) & ok
        if is_label.any():
            labeled = self._labeled
            li = np.flatnonzero(is_label)
            fav = (packed[li] >> _TS_BITS) & 1
            truth = np.zeros(len(li), dtype=bool)
            for j, i in enumerate(li.tolist()):
                e = inters[i]
                if e.request_id in labeled:
                    c.duplicate_labels += 1
                    ok[i] = False
                    continue
                labeled.add(e.request_id)
                v = e.value
                favorable = self._cell_stream[int(cells[i])].layout.favorable  # type: ignore[union-attr]
                truth[j] = v if v.__class__ is bool else str(v) in favorable
            pred = fav == 1
            col1[li] = np.where(pred, np.where(truth, S.TP, S.FP), np.where(truth, S.FN, S.TN))
            pred_ms = packed[li] & _TS_MASK
            delay = ts[li] - pred_ms / 1000.0
            col2[li] = S.delay_bucket(delay)  # offset by the stream's delay_start below
            at[li] = np.floor(pred_ms / 1000.0 / self.tick).astype(np.int64)  # labels describe the prediction's tick
        if not ok.any():
            return
        sel = np.flatnonzero(ok)
        cell_sel = cells[sel]
        streams = self._cell_stream
        by_stream: dict[int, list[int]] = {}
        for j, cell in enumerate(cell_sel.tolist()):
            by_stream.setdefault(id(streams[cell]), []).append(j)
        for js in by_stream.values():
            idx = sel[js]
            stream = streams[int(cells[idx[0]])]
            assert stream is not None
            rows = np.array([self._cell_rows[x] for x in cells[idx].tolist()], np.int64)
            d = col2[idx]
            col = np.stack([col0[idx], col1[idx], np.where(d >= 0, d + stream.layout.delay_start, -1)], axis=1)
            self._scatter(stream, rows, at[idx], col, closed)

    # ------------------------------------------------------------- time and rules

    def _advance(self, batch_max: float) -> list[AlertTransition]:
        if batch_max == -math.inf:
            return []
        self.max_ts = max(self.max_ts, batch_max)
        watermark = self.max_ts - self.config.windows.lateness
        self._expire(watermark)
        target = math.floor(watermark / self.tick)  # ticks ending at or before the watermark close
        if self.closed_before is None:
            first = min((t for s in self.streams.values() for t in s.store.open), default=target)
            self.closed_before = min(first, target)
        return self._close_until(target)

    def _close_until(self, target: int) -> list[AlertTransition]:
        out: list[AlertTransition] = []
        assert self.closed_before is not None
        while self.closed_before < target:
            t = self.closed_before
            # Skip idle stretches quickly, but still evaluate once so alerts can resolve as stale.
            if t + 1 < target and not any(s.store.open for s in self.streams.values()):
                t = target - 1  # closing the last tick of the stretch evicts everything older
            closed = {id(s): s.store.close(t) for s in self.streams.values()}
            self.closed_before = t + 1
            out.extend(self._evaluate(t, closed))
        self.transitions.extend(out)
        return out

    def flush(self) -> list[AlertTransition]:
        """Close every open tick (end of a replay): all events now count in the windows."""
        open_ticks = [t for s in self.streams.values() for t in s.store.open]
        if not open_ticks:
            return []
        return self._close_until(max(open_ticks) + 1)

    def _expire(self, watermark: float) -> None:
        grace = self.config.join.grace
        if self._pending:
            for rid in [r for r, waiting in self._pending.items() if waiting[0][1] + grace < self.max_ts]:
                self.counters.join_misses += len(self._pending.pop(rid))
        ttl_cut = watermark - self.config.join.ttl
        limit = self.config.join.max_entries
        join, order = self._join, self._join_order
        while order and (order[0][0] < ttl_cut or len(join) > limit):
            _, rids = order.popleft()
            cut_ms = ttl_cut * 1000
            for rid in rids:
                entry = join.get(rid)
                if entry is not None and ((entry & _TS_MASK) < cut_ms or len(join) > limit):
                    del join[rid]
                    self._labeled.discard(rid)

    def _evaluate(self, tick: int, closed: dict[int, S.Matrix | None]) -> list[AlertTransition]:
        self.counters.evaluations += 1
        now = (tick + 1) * self.tick
        out: list[AlertTransition] = []
        cache: dict[tuple[int, int, int], tuple[list[str], S.Matrix]] = {}
        for rule in self.config.rules:
            cands: list[Candidate] = []
            for s in self.streams.values():
                if rule.model not in ("*", s.model_id) or rule.version not in ("*", s.version):
                    continue
                if rule.metric in ATTRIBUTE_METRICS:
                    cands.extend(self._attribute_candidates(rule, s, cache))
                else:
                    cands.extend(self._slice_candidates(rule, s, cache, closed.get(id(s)), now))
            out.extend(self.engine.evaluate(rule, now, cands))
        return out

    def _wticks(self, rule: Rule) -> int:
        return round(rule.window / self.tick)

    def exposed(
        self, s: _Stream, wt: int, dim: int, cache: dict[tuple[int, int, int], tuple[list[str], S.Matrix]] | None = None
    ) -> tuple[list[str], S.Matrix]:
        """Values of dimension ``dim`` shown by name in window ``wt`` (top-k, >= k members) and their summaries.

        Everything else, including values folded at ingest, is merged into
        ``__other__``, itself withheld when it has fewer than k members.
        """
        key = (id(s), wt, dim)
        if cache is not None and key in cache:
            return cache[key]
        rows = s.space.rows_by_dim[dim]
        m = s.store.window(wt, len(s.space), s.layout.width)
        names = [s.space.keys[r][1] for r in rows]
        sub = m[rows] if rows else np.zeros((0, s.layout.width), np.int64)
        n = sub[:, S.N_PRED] if len(rows) else np.zeros(0, np.int64)
        dim_name = self.dimensions[dim]
        if dim < len(self._attrs):
            k_top = self.config.attributes[dim_name].max_values
        else:
            a, b = dim_name.split(":")
            k_top = max(self.config.attributes[a].max_values, self.config.attributes[b].max_values)
        k_min = self.config.privacy.min_group_size
        order = sorted(range(len(rows)), key=lambda i: (-int(n[i]), names[i]))
        shown = [i for i in order if names[i] != OTHER and n[i] >= k_min][:k_top]
        rest = [i for i in range(len(rows)) if i not in set(shown)]
        out_names = [names[i] for i in shown]
        parts = [sub[i] for i in shown]
        if rest:
            other = sub[rest].sum(axis=0)
            if other[S.N_PRED] >= k_min:
                out_names.append(OTHER)
                parts.append(other)
        result = (out_names, np.array(parts, np.int64).reshape(len(parts), s.layout.width))
        if cache is not None:
            cache[key] = result
        return result

    def _selected(
        self, rule: Rule, s: _Stream, cache: dict[tuple[int, int, int], tuple[list[str], S.Matrix]]
    ) -> list[tuple[str, str, S.Matrix]]:
        """(dimension, value, summary row) of every slice a slice-level rule watches."""
        wt = self._wticks(rule)
        out: list[tuple[str, str, S.Matrix]] = []
        if rule.attribute is None or rule.attribute == "*":
            m = s.store.window(wt, 1, s.layout.width)
            out.append((OVERALL, OVERALL, m[0]))
        dims = (
            range(len(self.dimensions))
            if rule.attribute == "*"
            else [self.dimensions.index(rule.attribute)]
            if rule.attribute
            else []
        )
        for d in dims:
            names, mat = self.exposed(s, wt, d, cache)
            want = self._value_token(self.dimensions[d], rule.value)
            for i, name in enumerate(names):
                if want is None or name == want:
                    out.append((self.dimensions[d], name, mat[i]))
        return out

    def _value_token(self, dim: str, value: str | None) -> str | None:
        if value is None or ":" in dim:
            return value
        coder = self.coders[dim]
        if coder.config.sensitive and coder.pseudonymizer is not None:
            return coder.pseudonymizer.token(dim, value)
        return value

    def _labels(self, rule: Rule, s: _Stream, dim: str, value: str) -> dict[str, str]:
        labels = {"alertname": rule.name, "model": s.model_id, "version": s.version, "severity": rule.severity}
        if dim != OVERALL:
            labels["attribute"] = dim
            labels["slice"] = value
        if rule.feature:
            labels["feature"] = rule.feature
        labels.update(rule.labels)
        return labels

    def _provisional(self, rule: Rule, s: _Stream, row: S.Matrix) -> bool:
        if rule.metric not in LABEL_METRICS:
            return False
        n = int(row[S.N_PRED])
        cov = row[S.N_LABEL] / n if n else 0.0
        return cov < self.config.models[s.model_id].label_coverage_min

    def _slice_candidates(
        self,
        rule: Rule,
        s: _Stream,
        cache: dict[tuple[int, int, int], tuple[list[str], S.Matrix]],
        tick_m: S.Matrix | None,
        now: float,
    ) -> list[Candidate]:
        sel = self._selected(rule, s, cache)
        if not sel:
            return []
        mat = np.array([r for _, _, r in sel], np.int64)
        arr = slice_metric(rule.metric, mat, s.layout, rule.feature)
        min_n = rule.min_samples or self.config.min_samples
        sufficient = (arr.n >= min_n) & ~np.isnan(arr.value)
        if rule.detector is not None:
            return self._detector_candidates(rule, s, sel, arr, sufficient, tick_m, now)
        assert rule.threshold is not None
        cond = sufficient & _OPS[rule.op](
            np.nan_to_num(_tested(rule, arr.value, arr.lo, arr.hi), nan=0.0), rule.threshold
        )
        if rule.fdr_q is not None:
            overall = s.store.window(self._wticks(rule), 1, s.layout.width)
            p = p_values(rule.metric, mat, s.layout, rule.feature, overall)
            p = np.where(sufficient, p, np.nan)
            cond &= benjamini_hochberg(p, rule.fdr_q)
        healthy_at = rule.resolve_threshold if rule.resolve_threshold is not None else rule.threshold
        out = []
        everything = self.engine.watching(rule.name)
        for i, (dim, value, row) in enumerate(sel):
            if not everything and not cond[i]:
                continue  # a healthy series of a rule with no open alert changes nothing
            prov = self._provisional(rule, s, row)
            suff = bool(sufficient[i]) and not prov
            v = float(arr.value[i])
            evidence: dict[str, object] = {"window_seconds": rule.window}
            if dim == OVERALL and bool(cond[i]):
                evidence["contributors"] = self._contributors(rule, s, v, cache)
            out.append(
                Candidate(
                    labels=self._labels(rule, s, dim, value),
                    value=v,
                    n=int(arr.n[i]),
                    lo=float(arr.lo[i]),
                    hi=float(arr.hi[i]),
                    sufficient=suff,
                    condition=bool(cond[i]) and suff,
                    healthy=suff and bool(_HEALTHY[rule.op](v, healthy_at)),
                    evidence=evidence,
                )
            )
        return out

    def _contributors(
        self, rule: Rule, s: _Stream, overall: float, cache: dict[tuple[int, int, int], tuple[list[str], S.Matrix]]
    ) -> list[dict[str, object]]:
        """Slice attribution: which single-attribute slices move the model-level value most."""
        wt = self._wticks(rule)
        sign = 1.0 if rule.op in (">", ">=") else -1.0
        total = max(int(s.store.window(wt, 1, s.layout.width)[0, S.N_PRED]), 1)
        min_n = rule.min_samples or self.config.min_samples
        scored: list[tuple[float, dict[str, object]]] = []
        for d in range(len(self._attrs)):
            names, mat = self.exposed(s, wt, d, cache)
            if not names:
                continue
            arr = slice_metric(rule.metric, mat, s.layout, rule.feature)
            for i, name in enumerate(names):
                v = float(arr.value[i])
                if np.isnan(v) or arr.n[i] < min_n:
                    continue
                share = int(mat[i, S.N_PRED]) / total
                delta = v if rule.metric in ("psi", "js_distance") else sign * (v - overall)
                scored.append(
                    (
                        delta * share,
                        {
                            "attribute": self.dimensions[d],
                            "slice": name,
                            "value": v,
                            "n": int(arr.n[i]),
                            "share": round(share, 4),
                        },
                    )
                )
        scored.sort(key=lambda x: -x[0])
        return [x for _, x in scored[:3]]

    def _detector_candidates(
        self,
        rule: Rule,
        s: _Stream,
        sel: list[tuple[str, str, S.Matrix]],
        arr: MetricArrays,
        sufficient: np.ndarray,
        tick_m: S.Matrix | None,
        now: float,
    ) -> list[Candidate]:
        det_cfg = rule.detector
        assert det_cfg is not None
        out = []
        for i, (dim, value, _) in enumerate(sel):
            labels = self._labels(rule, s, dim, value)
            key = (rule.name, "\x1f".join(f"{k}={v}" for k, v in sorted(labels.items())))
            row = s.space.find((dim, value))
            x = math.nan
            if tick_m is not None and row is not None and row < tick_m.shape[0]:
                x = float(slice_metric(rule.metric, tick_m[row : row + 1], s.layout).value[0])
            if not math.isnan(x):
                det = self._detectors.get(key)
                if det is None:
                    det = self._detectors[key] = _make_detector(det_cfg.kind, det_cfg.delta, det_cfg.threshold)
                det.update(x)  # type: ignore[attr-defined]
                if det.drift_detected:  # type: ignore[attr-defined]
                    self._detected_at[key] = now
            at = self._detected_at.get(key)
            active = at is not None and now - at < det_cfg.hold
            suff = bool(sufficient[i])
            out.append(
                Candidate(
                    labels=labels,
                    value=x if not math.isnan(x) else float(arr.value[i]),
                    n=int(arr.n[i]),
                    lo=float(arr.lo[i]),
                    hi=float(arr.hi[i]),
                    sufficient=suff,
                    condition=suff and active,
                    healthy=suff and not active,
                    evidence={"window_seconds": rule.window, "detector": det_cfg.kind, "detected_at": at},
                )
            )
        return out

    def _attribute_candidates(
        self, rule: Rule, s: _Stream, cache: dict[tuple[int, int, int], tuple[list[str], S.Matrix]]
    ) -> list[Candidate]:
        attrs = self.config.protected if rule.attribute == "*" else (rule.attribute,)
        return [c for a in attrs if a is not None for c in self._compare(rule, s, a, cache)]

    def _compare(
        self, rule: Rule, s: _Stream, attribute: str, cache: dict[tuple[int, int, int], tuple[list[str], S.Matrix]]
    ) -> list[Candidate]:
        assert rule.threshold is not None
        d = self.dimensions.index(attribute)
        names, mat = self.exposed(s, self._wticks(rule), d, cache)
        keep = [i for i, nm in enumerate(names) if nm != OTHER]
        names = [names[i] for i in keep]
        mat = mat[keep]
        min_n = rule.min_samples or self.config.min_samples
        cmp = compare_groups(rule.metric, mat, min_n) if len(names) >= 2 else None
        labels = self._labels(rule, s, OVERALL, OVERALL)
        labels["attribute"] = attribute
        prov = False
        if rule.metric in LABEL_METRICS and len(mat):
            tot = mat.sum(axis=0)
            prov = (
                tot[S.N_PRED] == 0 or tot[S.N_LABEL] / tot[S.N_PRED] < self.config.models[s.model_id].label_coverage_min
            )
        if cmp is None or math.isnan(cmp.value) or prov:
            return [Candidate(labels, math.nan, 0 if cmp is None else cmp.n, math.nan, math.nan, False, False, False)]
        v = cmp.value
        healthy_at = rule.resolve_threshold if rule.resolve_threshold is not None else rule.threshold
        groups = {names[i]: {"rate": r, "n": n} for i, (r, n) in cmp.rates.items()}
        evidence: dict[str, object] = {
            "window_seconds": rule.window,
            "low_group": names[cmp.low_group],
            "high_group": names[cmp.high_group],
            "groups": groups,
        }
        return [
            Candidate(
                labels=labels,
                value=v,
                n=cmp.n,
                lo=cmp.lo,
                hi=cmp.hi,
                sufficient=True,
                condition=bool(
                    _OPS[rule.op](float(_tested(rule, np.array(v), np.array(cmp.lo), np.array(cmp.hi))), rule.threshold)
                ),
                healthy=bool(_HEALTHY[rule.op](v, healthy_at)),
                evidence=evidence,
            )
        ]

    # ------------------------------------------------------------------ reading

    def metric_rows(self, window: float = 0.0) -> Iterator[MetricRow]:
        """Every slice and attribute metric in ``window`` seconds (0 = since start), for reports."""
        wt = round(window / self.tick)
        wname = "since_start" if wt == 0 else f"{int(window)}s"
        min_n = self.config.min_samples
        for s in self.streams.values():
            slices: list[tuple[str, str, S.Matrix]] = [(OVERALL, OVERALL, s.store.window(wt, 1, s.layout.width)[0])]
            for d, dim in enumerate(self.dimensions):
                names, mat = self.exposed(s, wt, d)
                slices.extend((dim, nm, mat[i]) for i, nm in enumerate(names))
            mat = np.array([r for _, _, r in slices], np.int64)
            base = {"model": s.model_id, "version": s.version, "window": wname}
            for name in REPORTED_SLICE_METRICS:
                yield from self._rows_of(name, None, mat, s, slices, base, min_n)
            for feature in s.layout.blocks:
                for name in ("psi", "js_distance"):
                    yield from self._rows_of(name, feature, mat, s, slices, base, min_n)
            for attr in self.config.protected:
                d = self.dimensions.index(attr)
                names, gm = self.exposed(s, wt, d)
                keep = [i for i, nm in enumerate(names) if nm != OTHER]
                for name in sorted(ATTRIBUTE_METRICS):
                    cmp = compare_groups(name, gm[keep], min_n) if len(keep) >= 2 else None
                    labels = {**base, "attribute": attr}
                    if cmp is None or math.isnan(cmp.value):
                        yield MetricRow(name, labels, None, 0 if cmp is None else cmp.n, None, None, "insufficient")
                    else:
                        yield MetricRow(name, labels, cmp.value, cmp.n, cmp.lo, cmp.hi, "ok")

    def _rows_of(
        self,
        name: str,
        feature: str | None,
        mat: S.Matrix,
        s: _Stream,
        slices: list[tuple[str, str, S.Matrix]],
        base: dict[str, str],
        min_n: int,
    ) -> Iterator[MetricRow]:
        arr = slice_metric(name, mat, s.layout, feature)
        cov_min = self.config.models[s.model_id].label_coverage_min
        for i, (dim, value, row) in enumerate(slices):
            labels = {**base, "attribute": dim, "slice": value}
            if feature is not None:
                labels["feature"] = feature
            v = float(arr.value[i])
            n = int(arr.n[i])
            if np.isnan(v) or n < min_n:
                yield MetricRow(name, labels, None, n, None, None, "insufficient")
                continue
            status = "ok"
            if name in LABEL_METRICS and row[S.N_PRED] and row[S.N_LABEL] / row[S.N_PRED] < cov_min:
                status = "provisional"
            yield MetricRow(name, labels, v, n, float(arr.lo[i]), float(arr.hi[i]), status)

    def display(self, attribute: str, value: str) -> str:
        """The display name of an exposed value where the operator allowed one; else the value itself."""
        coder = self.coders.get(attribute)
        return coder.display.get(value, value) if coder is not None else value


def _tested(rule: Rule, value: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """What a rule compares with its threshold: the value, or the interval bound nearest the healthy side."""
    if rule.confidence == "value":
        return value
    return lo if rule.op in (">", ">=") else hi


_KIND_CODE = {**S.KIND_COLUMN, "label": S.N_LABEL}


def _seconds(evs: Sequence[Prediction] | Sequence[Interaction]) -> np.ndarray:
    """Event times in epoch seconds (inlined :func:`ts_seconds`: this runs once per event)."""
    return np.array(
        [t / 1000.0 if t.__class__ is int else t.timestamp() for t in [e.ts for e in evs]],  # type: ignore[union-attr]
        dtype=np.float64,
    )


def _make_detector(kind: str, delta: float | None, threshold: float | None) -> object:
    if kind == "adwin":
        return river_drift.ADWIN(delta=delta or 0.002)  # type: ignore[no-untyped-call]  # river leaves __init__ unannotated
    # River's defaults: delta=0.005, threshold=50.
    return river_drift.PageHinkley(
        delta=0.005 if delta is None else delta, threshold=50.0 if threshold is None else threshold
    )
