"""Evaluate: merge partial summaries into windows, compute metrics, run detectors and rules.

The second half of the pure pipeline (see :mod:`driftwatch.core.pipeline`). An
:class:`Evaluator` merges :class:`~driftwatch.core.summary.Partial`
summaries from any number of ingestors, closes ticks as the watermark it is
given passes them, and evaluates every rule at the end of each closed tick.
"""

from __future__ import annotations

import importlib.util
import math
import operator
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from driftwatch.alerts.engine import AlertEngine, AlertTransition, Candidate
from driftwatch.config import Config, Rule
from driftwatch.core import summary as S
from driftwatch.core.counters import Counters
from driftwatch.core.slicing import OTHER, OVERALL, AttributeCoder, SliceSpace
from driftwatch.core.snapshot import (
    DETECTOR_HISTORY,
    DetectorState,
    ModelsState,
    StreamState,
    WindowState,
    matrix_from,
    matrix_to,
    sparse_from,
    sparse_to,
)
from driftwatch.metrics.registry import ATTRIBUTE_METRICS, LABEL_METRICS, REGISTRY, REPORTED_SLICE_METRICS
from driftwatch.metrics.stats import benjamini_hochberg
from driftwatch.metrics.values import MetricArrays, compare_groups, p_values, slice_metric

__all__ = ["MAX_TRANSITIONS", "REPORTED_SLICE_METRICS", "Evaluator", "MetricRow"]

MAX_TRANSITIONS = 100_000
"""Alert transitions kept in memory for reports; older ones are on the alerts topic."""

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_HEALTHY = {">": operator.le, ">=": operator.lt, "<": operator.ge, "<=": operator.gt}
_DRIFT_ORDER = tuple(m.name for m in REGISTRY if m.kind == "drift")


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
    """Evaluation state of one model x version: slice rows by name and the window store."""

    __slots__ = ("layout", "model_id", "space", "store", "version")

    def __init__(
        self, model_id: str, version: str, layout: S.Layout, space: SliceSpace, window_ticks: tuple[int, ...]
    ) -> None:
        self.model_id = model_id
        self.version = version
        self.layout = layout
        self.space = space
        self.store = S.WindowStore(window_ticks)


class Evaluator:
    """Merges partial summaries into windows and turns closed ticks into metric values and alert transitions."""

    def __init__(
        self,
        config: Config,
        layouts: Mapping[str, S.Layout],
        limits: tuple[int, ...],
        coders: Mapping[str, AttributeCoder],
        counters: Counters | None = None,
    ) -> None:
        self.config = config
        self.tick = config.windows.tick
        self.window_ticks = tuple(round(w / self.tick) for w in config.windows.windows)
        self.layouts = layouts
        self.coders = coders
        self.dimensions = config.dimensions()
        self._attrs = tuple(config.attributes)
        self._limits = limits
        self.streams: dict[tuple[str, str], _Stream] = {}
        self.counters = counters if counters is not None else Counters()
        self.engine = AlertEngine()
        self.closed_before: int | None = None  # first tick not yet closed
        self._detectors: dict[tuple[str, str], object] = {}
        self._detected_at: dict[tuple[str, str], float] = {}
        # Each detector's recent inputs and labels: a checkpoint rebuilds the detector from them.
        self._series: dict[tuple[str, str], tuple[dict[str, str], deque[float]]] = {}
        # The recent history (a long-running worker must not grow without bound).
        self.transitions: deque[AlertTransition] = deque(maxlen=MAX_TRANSITIONS)

    def apply(self, partials: Iterable[S.Partial]) -> None:
        """Merge partial summaries: into open ticks, or (late joins and labels) into retained windows."""
        closed = self.closed_before if self.closed_before is not None else -(2**62)
        for part in partials:
            s = self.streams.get((part.model_id, part.version))
            if s is None:
                s = self.streams[(part.model_id, part.version)] = _Stream(
                    part.model_id,
                    part.version,
                    self.layouts[part.model_id],
                    SliceSpace(self.dimensions, self._limits),
                    self.window_ticks,
                )
            n = len(part.keys)
            cells = part.cells
            if not (n <= len(s.space) and tuple(s.space.keys[:n]) == part.keys):
                # Another slice order (another ingest process): move each cell to our row of its slice key.
                rows = np.array([s.space.row_of(k) for k in part.keys], np.int64)
                idx = cells.index.astype(np.int64)
                width = cells.width
                moved = rows[idx // width] * width + idx % width
                cells = S.Sparse(len(s.space), width, np.zeros(0, np.int64), np.zeros(0, np.int64)).merge(
                    S.Sparse(len(s.space), width, moved, cells.values)
                )  # merge: sorts, and sums cells whose keys share a row
            s.store.add(part.tick, cells, closed)

    # ------------------------------------------------------------ checkpoints

    def snapshot(self, models: Iterable[str]) -> ModelsState:
        """The state of ``models`` (streams, open alerts, detectors) as plain data for a checkpoint."""
        wanted = set(models)

        def mine(labels: Mapping[str, str]) -> bool:
            return labels.get("model") in wanted

        streams = []
        for (mid, ver), s in self.streams.items():
            if mid not in wanted:
                continue
            st = s.store
            streams.append(
                StreamState(
                    mid,
                    ver,
                    list(s.space.keys),
                    [(t, sparse_to(m)) for t, m in sorted(st.open_cells.items())],
                    [
                        WindowState(
                            w.length,
                            [(b, sparse_to(m)) for b, m in w.buckets],
                            None if w.total is None else matrix_to(w.total),
                        )
                        for w in st.windows.values()
                    ],
                    None if st.since is None else matrix_to(st.since),
                )
            )
        detectors = [
            DetectorState(key[0], labels, list(series), self._detected_at.get(key))
            for key, (labels, series) in self._series.items()
            if mine(labels)
        ]
        return ModelsState(self.closed_before, streams, self.engine.export(mine), detectors)

    def restore(self, state: ModelsState) -> list[str]:
        """Load a :meth:`snapshot` (replacing what is held for its models); return models skipped for want of a layout."""
        if self.closed_before is None:
            self.closed_before = state.closed_before
        skipped: set[str] = set()
        self.drop({s.model_id for s in state.streams})
        for ss in state.streams:
            layout = self.layouts.get(ss.model_id)
            if layout is None:
                skipped.add(ss.model_id)  # a reference still being learnt is not checkpointed
                continue
            stream = _Stream(
                ss.model_id, ss.version, layout, SliceSpace(self.dimensions, self._limits), self.window_ticks
            )
            for key in ss.keys[1:]:
                stream.space.row_of((key[0], key[1]))
            stream.store.open_cells = {t: sparse_from(m) for t, m in ss.open}
            for ws in ss.windows:
                w = stream.store.windows.get(ws.length)
                if w is None:
                    continue  # a window no longer configured
                w.buckets = deque((b, sparse_from(m)) for b, m in ws.buckets)
                w.total = None if ws.total is None else matrix_from(ws.total)
            stream.store.since = None if ss.since is None else matrix_from(ss.since)
            self.streams[(ss.model_id, ss.version)] = stream
        self.engine.load(state.alerts)
        rules = {r.name: r for r in self.config.rules}
        for d in state.detectors:
            rule = rules.get(d.rule)
            if rule is None or rule.detector is None:
                continue
            key = (d.rule, "\x1f".join(f"{k}={v}" for k, v in sorted(d.labels.items())))
            det = _make_detector(rule.detector.kind, rule.detector.delta, rule.detector.threshold)
            for x in d.series:
                det.update(x)  # type: ignore[attr-defined]
            self._detectors[key] = det
            self._series[key] = (dict(d.labels), deque(d.series, maxlen=DETECTOR_HISTORY))
            if d.detected_at is not None:
                self._detected_at[key] = d.detected_at
        return sorted(skipped)

    def drop(self, models: Iterable[str]) -> None:
        """Forget ``models`` (their summary partition moved to another worker)."""
        gone = set(models)

        def mine(labels: Mapping[str, str]) -> bool:
            return labels.get("model") in gone

        for key in [k for k in self.streams if k[0] in gone]:
            del self.streams[key]
        self.engine.drop(mine)
        for key in [k for k, (labels, _) in self._series.items() if mine(labels)]:
            del self._series[key]
            self._detectors.pop(key, None)
            self._detected_at.pop(key, None)

    def advance(self, watermark: float) -> list[AlertTransition]:
        """Close every tick that ends at or before ``watermark`` and evaluate the rules at each."""
        if watermark == -math.inf:
            return []
        target = math.floor(watermark / self.tick)
        if self.closed_before is None:
            first = min((t for s in self.streams.values() for t in s.store.open_ticks), default=target)
            self.closed_before = min(first, target)
        return self._close_until(target)

    def _close_until(self, target: int) -> list[AlertTransition]:
        out: list[AlertTransition] = []
        assert self.closed_before is not None
        while self.closed_before < target:
            t = self.closed_before
            # Skip idle stretches quickly, but still evaluate once so alerts can resolve as stale.
            if t + 1 < target and not any(s.store.open_ticks for s in self.streams.values()):
                t = target - 1  # closing the last tick of the stretch evicts everything older
            closed = {id(s): s.store.close(t) for s in self.streams.values()}
            self.closed_before = t + 1
            out.extend(self._evaluate(t, closed))
        self.transitions.extend(out)
        return out

    def flush(self) -> list[AlertTransition]:
        """Close every open tick (end of a replay): all events now count in the windows."""
        open_ticks = [t for s in self.streams.values() for t in s.store.open_ticks]
        if not open_ticks:
            return []
        return self._close_until(max(open_ticks) + 1)

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
                    self._series[key] = (labels, deque(maxlen=DETECTOR_HISTORY))
                self._series[key][1].append(x)
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
                for name in _DRIFT_ORDER:
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
                        status = "ok"
                        if name in LABEL_METRICS:
                            tot = gm[keep].sum(axis=0)
                            cov = tot[S.N_LABEL] / tot[S.N_PRED] if tot[S.N_PRED] else 0.0
                            if cov < self.config.models[s.model_id].label_coverage_min:
                                status = "provisional"
                        yield MetricRow(name, labels, cmp.value, cmp.n, cmp.lo, cmp.hi, status)

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


def _make_detector(kind: str, delta: float | None, threshold: float | None) -> object:
    if kind == "adwin":
        adwin = _river_drift_module("adwin")
        return adwin.ADWIN(delta=delta or 0.002)
    # River's defaults: delta=0.005, threshold=50.
    ph = _river_drift_module("page_hinkley")
    return ph.PageHinkley(delta=0.005 if delta is None else delta, threshold=50.0 if threshold is None else threshold)


def _river_drift_module(name: str) -> ModuleType:
    """``river.drift.<name>``, loaded without running ``river/drift/__init__.py``.

    That ``__init__`` imports ``river.drift.datasets`` and so sklearn, pandas and
    pyarrow: ~120 MB of RSS and ~1.2 s that a worker never uses. The detector
    modules themselves import only ``river.base``, ``river.stats`` and river's
    compiled core (absolute imports), so each is loaded from its file under its
    own name: a later ``import river.drift`` finds it in ``sys.modules`` and
    reuses it, so there is only ever one ``ADWIN`` class.
    """
    full = f"river.drift.{name}"
    mod = sys.modules.get(full)
    if mod is not None:
        return mod
    river_spec = importlib.util.find_spec("river")
    assert river_spec is not None
    assert river_spec.origin is not None
    spec = importlib.util.spec_from_file_location(full, Path(river_spec.origin).parent / "drift" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[full] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[full]
        raise
    return mod
