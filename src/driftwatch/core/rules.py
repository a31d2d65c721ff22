"""Rules: turn a stream's windows into candidates for the alert engine (thresholds, FDR, detectors, comparisons).

For a slice rule every watched slice is one candidate: its value, interval and
n in the rule's window, whether the condition holds (on the value or, with
``confidence: interval``, on the interval bound nearest the healthy side),
whether it is healthy, with Benjamini-Hochberg across the rule's slices when
``fdr_q`` is set, and (for the whole model) the slices that contribute most.
A group comparison is one candidate per protected attribute, its evidence
naming the lowest and highest groups; while an alert about a group is open,
a window in which one of the groups it compared lacks ``min_samples`` gives an
insufficient candidate (evidence ``missing_group``), never a verdict over the other groups; a sequential comparison
weighs each group against the rest bucket by bucket and names the group furthest along. Slices and groups are named as
:class:`~driftwatch.core.exposure.Exposure` shows them (display names where
the config allows), in labels and evidence alike. The alert engine owns what
happens next.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import numpy as np

from driftwatch.alerts.engine import AlertEngine, Candidate, fingerprint
from driftwatch.config import Config, Rule
from driftwatch.core import summary as S
from driftwatch.core.detectors import DetectorBank, load_detectors
from driftwatch.core.exposure import Cache, Exposure, Stream
from driftwatch.core.sequential import (
    SequentialBank,
    comparison_evidence,
    drift_evidence,
    drift_margin,
    max_suffix,
    rate_evidence,
)
from driftwatch.core.slicing import OTHER, OVERALL
from driftwatch.core.values import (
    GroupComparison,
    MetricArrays,
    compare_groups,
    p_values,
    proportion_columns,
    slice_metric,
)
from driftwatch.metrics.registry import ATTRIBUTE_METRICS, LABEL_METRICS, spec
from driftwatch.metrics.stats import benjamini_hochberg, load_special

__all__ = ["RuleEvaluator"]

_EVIDENCE_KEYS = 10_000
"""Rule x stream (x attribute, rate and side) entries the per-bucket evidence cache holds before it starts over."""
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_HEALTHY = {">": operator.le, ">=": operator.lt, "<": operator.ge, "<=": operator.gt}


class RuleEvaluator:
    """Builds each rule's candidates from a stream's windows, through one exposure and one detector bank."""

    def __init__(
        self, config: Config, exposure: Exposure, detectors: DetectorBank, engine: AlertEngine, tick: float
    ) -> None:
        self.config = config
        self.exposure = exposure
        self.detectors = detectors
        self.sequential = SequentialBank()
        # (rule, model, version, attribute, rate, side) -> bucket -> (its parts, rows, evidence): see _bucket_evidence.
        self._evidence_cache: dict[
            tuple[object, ...], dict[int, tuple[tuple[S.Sparse, ...], tuple[int, ...], np.ndarray]]
        ] = {}
        self.engine = engine
        self.tick = tick
        if any(rule.fdr_q is not None for rule in config.rules):
            load_special()
        load_detectors(rule.detector.kind for rule in config.rules if rule.detector is not None)

    def forget(self, models: set[str]) -> None:
        """Drop what is cached for ``models`` (their summary partition moved to another worker)."""
        for key in [k for k in self._evidence_cache if k[1] in models]:
            del self._evidence_cache[key]

    def candidates(self, rule: Rule, s: Stream, cache: Cache, tick_m: S.Sparse | None, now: float) -> list[Candidate]:
        """Every candidate of ``rule`` on stream ``s`` at event time ``now`` (``tick_m``: the tick just closed)."""
        if rule.metric in ATTRIBUTE_METRICS:
            return self._attribute_candidates(rule, s, cache, now)
        return self._slice_candidates(rule, s, cache, tick_m, now)

    def _wticks(self, rule: Rule) -> int:
        return round(rule.window / self.tick)

    def _selected(self, rule: Rule, s: Stream, cache: Cache) -> list[tuple[str, str, str, S.Matrix]]:
        """(dimension, shown name, slice value, summary row) of every slice a slice-level rule watches."""
        wt = self._wticks(rule)
        out: list[tuple[str, str, str, S.Matrix]] = []
        if rule.attribute is None or rule.attribute == "*":
            m = s.store.window(wt, 1, s.layout.width)
            out.append((OVERALL, OVERALL, OVERALL, m[0]))
        dims = (
            range(len(self.exposure.dimensions))
            if rule.attribute == "*"
            else [self.exposure.dimensions.index(rule.attribute)]
            if rule.attribute
            else []
        )
        for d in dims:
            keys, names, mat = self.exposure.exposed_keys(s, wt, d, cache)
            # A rule's value is compared with the name shown for it, as an operator reads it on /metrics.
            want = self.exposure.shown_value(self.exposure.dimensions[d], rule.value)
            for i, name in enumerate(names):
                if want is None or name == want:
                    out.append((self.exposure.dimensions[d], name, keys[i], mat[i]))
        return out

    def _labels(self, rule: Rule, s: Stream, dim: str, value: str) -> dict[str, str]:
        labels = {"alertname": rule.name, "model": s.model_id, "version": s.version, "severity": rule.severity}
        if dim != OVERALL:
            labels["attribute"] = dim
            labels["slice"] = value
        if rule.feature:
            labels["feature"] = rule.feature
        labels.update(rule.labels)
        return labels

    def _provisional(self, rule: Rule, s: Stream, row: S.Matrix) -> bool:
        if rule.metric not in LABEL_METRICS:
            return False
        n = int(row[S.N_PRED])
        cov = row[S.N_LABEL] / n if n else 0.0
        return cov < self.config.models[s.model_id].label_coverage_min

    def _slice_candidates(
        self,
        rule: Rule,
        s: Stream,
        cache: Cache,
        tick_m: S.Sparse | None,
        now: float,
    ) -> list[Candidate]:
        keyed = self._selected(rule, s, cache)
        if not keyed:
            return []
        sel = [(dim, name, row) for dim, name, _, row in keyed]
        mat = np.array([r for _, _, r in sel], np.int64)
        arr = slice_metric(rule.metric, mat, s.layout, rule.feature)
        min_n = rule.min_samples or self.config.min_samples
        sufficient = (arr.n >= min_n) & ~np.isnan(arr.value)
        if rule.detector is not None:
            return self._detector_candidates(rule, s, keyed, arr, sufficient, tick_m, now)
        if rule.sequential is not None:
            return self._sequential_candidates(rule, s, keyed, arr, now)
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

    def _contributors(self, rule: Rule, s: Stream, overall: float, cache: Cache) -> list[dict[str, object]]:
        """Slice attribution: which single-attribute slices move the model-level value most."""
        wt = self._wticks(rule)
        sign = 1.0 if rule.op in (">", ">=") else -1.0
        total = max(int(s.store.window(wt, 1, s.layout.width)[0, S.N_PRED]), 1)
        min_n = rule.min_samples or self.config.min_samples
        scored: list[tuple[float, dict[str, object]]] = []
        for d in range(len(self.exposure.attrs)):
            names, mat = self.exposure.exposed(s, wt, d, cache)
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
                            "attribute": self.exposure.dimensions[d],
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
        s: Stream,
        sel: list[tuple[str, str, str, S.Matrix]],
        arr: MetricArrays,
        sufficient: np.ndarray,
        tick_m: S.Sparse | None,
        now: float,
    ) -> list[Candidate]:
        det_cfg = rule.detector
        assert det_cfg is not None
        out = []
        for i, (dim, value, slice_value, _) in enumerate(sel):
            labels = self._labels(rule, s, dim, value)
            key = self.detectors.key(rule.name, labels)
            row = s.space.find((dim, slice_value))
            x = math.nan
            if tick_m is not None and row is not None and row < tick_m.rows:
                x = float(slice_metric(rule.metric, tick_m.row(row), s.layout).value[0])
            if not math.isnan(x):
                self.detectors.update(key, labels, x, now, det_cfg)
            at = self.detectors.detected_at(key)
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

    def _sequential_candidates(
        self,
        rule: Rule,
        s: Stream,
        sel: list[tuple[str, str, str, S.Matrix]],
        arr: MetricArrays,
        now: float,
    ) -> list[Candidate]:
        """One candidate per slice from its CUSUM over the rule's window by prediction time (see
        :mod:`driftwatch.core.sequential`): the condition holds while the statistic is at or above ``h``; a firing
        alert resolves once it is below ``h`` and the window's value is on the healthy side of ``resolve_threshold``
        (or ``threshold``)."""
        seq = rule.sequential
        assert seq is not None
        assert rule.threshold is not None
        baseline = seq.baseline if seq.baseline is not None else rule.resolve_threshold
        assert baseline is not None
        healthy_at = rule.resolve_threshold if rule.resolve_threshold is not None else rule.threshold
        found = [(i, s.space.find((dim, slice_value))) for i, (dim, _, slice_value, _) in enumerate(sel)]
        tested = [(i, r) for i, r in found if r is not None]
        stat = np.zeros(len(sel))
        start = np.full(len(sel), -1, np.intp)
        starts = np.zeros(0, np.int64)
        if tested:
            at, rows = [i for i, _ in tested], [r for _, r in tested]
            weights, starts = self._evidence(rule, s, rows, baseline)
            stat[at], start[at] = max_suffix(weights)
        out = []
        everything = self.engine.watching(rule.name)
        for i, (dim, value, _, _) in enumerate(sel):
            labels = self._labels(rule, s, dim, value)
            statistic = float(stat[i])
            change = float(starts[start[i]] * self.tick) if start[i] >= 0 else None
            self.sequential.record(rule.name, labels, statistic, change, now)
            crossed = statistic >= seq.h
            if not everything and not crossed:
                continue  # a healthy series of a rule with no open alert changes nothing
            v = float(arr.value[i])
            suff = int(arr.n[i]) > 0 and not math.isnan(v)
            evidence: dict[str, object] = {
                "window_seconds": rule.window,
                "test": seq.kind,
                "statistic": round(statistic, 3),
                "h": seq.h,
                "baseline": baseline,
                "change_point": change,
            }
            out.append(
                Candidate(
                    labels=labels,
                    value=v,
                    n=int(arr.n[i]),
                    lo=float(arr.lo[i]),
                    hi=float(arr.hi[i]),
                    sufficient=suff,
                    condition=suff and crossed,
                    healthy=suff and not crossed and bool(_HEALTHY[rule.op](v, healthy_at)),
                    evidence=evidence,
                )
            )
        self.sequential.forget_idle(rule.name, now, rule.window)
        return out

    def _evidence(self, rule: Rule, s: Stream, rows: list[int], baseline: float) -> tuple[np.ndarray, np.ndarray]:
        """Each bucket's evidence (buckets x ``rows``) of ``rule``'s window, and each bucket's first tick."""
        assert rule.threshold is not None
        wt = self._wticks(rule)
        if spec(rule.metric).kind == "drift":
            b = s.layout.blocks.get(rule.feature or "")
            if b is None:  # a reference without the feature (learnt from traffic that lacked it): no evidence
                parts = s.store.bucket_parts(wt)
                return np.zeros((len(parts), len(rows))), np.array([0] * len(parts), np.int64)
            starts, counts = s.store.bucket_counts(wt, rows, range(b.start, b.start + b.bins))
            margin = drift_margin(rule.metric, baseline)
            return drift_evidence(counts, b.reference, b.ref_count, margin), starts
        num, den = proportion_columns(rule.metric)
        cols = sorted(set(num) | set(den))
        threshold, share = rule.threshold, spec(rule.metric).share

        def compute(at: list[int]) -> np.ndarray:
            _, counts = s.store.bucket_counts(wt, rows, cols, only=at)
            k = counts[:, :, [cols.index(c) for c in num]].sum(axis=2)
            n = counts[:, :, [cols.index(c) for c in den]].sum(axis=2)
            return rate_evidence(k, n, baseline, threshold, share)

        parts = s.store.bucket_parts(wt)
        starts = np.array([bid * s.store.windows[wt].step for bid, _ in parts], np.int64)
        return self._bucket_evidence((rule.name, s.model_id, s.version), parts, tuple(rows), compute), starts

    def _bucket_evidence(
        self,
        key: tuple[object, ...],
        parts: list[tuple[int, tuple[S.Sparse, ...]]],
        rows: tuple[int, ...],
        compute: Callable[[list[int]], np.ndarray],
    ) -> np.ndarray:
        """Buckets x rows of evidence that depends on each bucket's own counts alone: computed (``compute`` of the
        bucket indices) only for buckets that are new or changed since the last tick, kept for the others."""
        if key not in self._evidence_cache and len(self._evidence_cache) >= _EVIDENCE_KEYS:
            self._evidence_cache.clear()  # streams of retired versions: a cache, rebuilt on use
        held = self._evidence_cache.setdefault(key, {})
        fresh = [
            i for i, (bid, ps) in enumerate(parts) if (hit := held.get(bid)) is None or hit[1] != rows or hit[0] != ps
        ]
        if fresh:
            for i, e in zip(fresh, compute(fresh), strict=True):
                bid, ps = parts[i]
                held[bid] = (ps, rows, e)
        if len(held) > len(parts):
            keep = {bid for bid, _ in parts}
            for bid in [b for b in held if b not in keep]:
                del held[bid]
        if not parts:
            return np.zeros((0, len(rows)))
        return np.stack([held[bid][2] for bid, _ in parts])

    def _attribute_candidates(self, rule: Rule, s: Stream, cache: Cache, now: float) -> list[Candidate]:
        attrs = self.config.protected if rule.attribute == "*" else (rule.attribute,)
        out = [c for a in attrs if a is not None for c in self._compare(rule, s, a, cache, now)]
        if rule.sequential is not None:
            self.sequential.forget_idle(rule.name, now, rule.window)
        return out

    def _compare(self, rule: Rule, s: Stream, attribute: str, cache: Cache, now: float) -> list[Candidate]:
        assert rule.threshold is not None
        d = self.exposure.dimensions.index(attribute)
        keys, names, mat = self.exposure.exposed_keys(s, self._wticks(rule), d, cache)
        keep = [i for i, nm in enumerate(names) if nm != OTHER]
        keys, names = [keys[i] for i in keep], [names[i] for i in keep]
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
        healthy_at = rule.resolve_threshold if rule.resolve_threshold is not None else rule.threshold
        groups = {} if cmp is None else {names[i]: {"rate": r, "n": n} for i, (r, n) in cmp.rates.items()}
        gone = [g for g in self.engine.groups(fingerprint(labels)) if g not in groups]
        if gone:
            # A group the open alert compared lacks data: judging the others would resolve it falsely.
            missing = {"window_seconds": rule.window, "missing_group": gone[0], "min_samples": min_n, "groups": groups}
            return [
                Candidate(
                    labels, math.nan, 0 if cmp is None else cmp.n, math.nan, math.nan, False, False, False, missing
                )
            ]
        if rule.sequential is not None:
            return [self._sequential_compare(rule, s, attribute, keys, names, cmp, groups, labels, now)]
        if cmp is None or math.isnan(cmp.value) or prov:
            return [Candidate(labels, math.nan, 0 if cmp is None else cmp.n, math.nan, math.nan, False, False, False)]
        v = cmp.value
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

    def _sequential_compare(
        self,
        rule: Rule,
        s: Stream,
        attribute: str,
        keys: list[str],
        names: list[str],
        cmp: GroupComparison | None,
        groups: dict[str, dict[str, float]],
        labels: dict[str, str],
        now: float,
    ) -> Candidate:
        """A group comparison tested sequentially: for every group and rate compared, a CUSUM per direction of the
        group against the rest over the rule's window (see :func:`~driftwatch.core.sequential.comparison_evidence`);
        the statistic is the largest. It fires at ``h``; it resolves below ``h`` once the window's comparison is on the
        healthy side of ``resolve_threshold``."""
        seq = rule.sequential
        assert seq is not None
        assert rule.threshold is not None
        baseline = seq.baseline if seq.baseline is not None else rule.resolve_threshold
        assert baseline is not None
        m = spec(rule.metric)
        ratio = m.comparison == "ratio"
        found = [(i, s.space.find((attribute, key))) for i, key in enumerate(keys)]
        rows = [(i, r) for i, r in found if r is not None]
        best, best_at, best_group, best_side, best_rate = 0.0, -1, "", "", ""
        wt = self._wticks(rule)
        parts = s.store.bucket_parts(wt)
        starts = np.array([bid * s.store.windows[wt].step for bid, _ in parts], np.int64)
        row_ids = tuple(r for _, r in rows)
        data = len(rows) >= 2 and bool(parts)
        for rate in m.compares if data else ():
            num, den = proportion_columns(rate)
            cols = sorted(set(num) | set(den))
            share = spec(rate).share
            for high in (False, True):

                def compute(
                    at: list[int],
                    num: tuple[int, ...] = num,
                    den: tuple[int, ...] = den,
                    cols: list[int] = cols,
                    share: bool = share,
                    high: bool = high,
                ) -> np.ndarray:
                    assert rule.threshold is not None
                    _, counts = s.store.bucket_counts(wt, row_ids, cols, only=at)
                    k = counts[:, :, [cols.index(c) for c in num]].sum(axis=2)
                    n = counts[:, :, [cols.index(c) for c in den]].sum(axis=2)
                    return comparison_evidence(k, n, share, ratio, rule.threshold, baseline, high)

                weights = self._bucket_evidence(
                    (rule.name, s.model_id, s.version, attribute, rate, high), parts, row_ids, compute
                )
                stat, start = max_suffix(weights)
                g = int(np.argmax(stat)) if len(stat) else -1
                if g >= 0 and stat[g] > best:
                    best, best_at = float(stat[g]), int(start[g])
                    best_group, best_side, best_rate = names[rows[g][0]], "high" if high else "low", rate
        change = float(starts[best_at] * self.tick) if best_at >= 0 else None
        self.sequential.record(rule.name, labels, best, change, now)
        crossed = best >= seq.h
        v = math.nan if cmp is None else cmp.value
        evidence: dict[str, object] = {
            "window_seconds": rule.window,
            "test": seq.kind,
            "statistic": round(best, 3),
            "h": seq.h,
            "baseline": baseline,
            "change_point": change,
            "groups": groups,
        }
        if best_group:
            # The group whose test is furthest along; an open alert is about it (see AlertEngine.groups).
            evidence.update(low_group=best_group, high_group=best_group, side=best_side, rate=best_rate)
        healthy_at = rule.resolve_threshold if rule.resolve_threshold is not None else rule.threshold
        return Candidate(
            labels=labels,
            value=v,
            n=0 if cmp is None else cmp.n,
            lo=math.nan if cmp is None else cmp.lo,
            hi=math.nan if cmp is None else cmp.hi,
            sufficient=data,
            condition=data and crossed,
            healthy=data and not crossed and not math.isnan(v) and bool(_HEALTHY[rule.op](v, healthy_at)),
            evidence=evidence,
        )


def _tested(rule: Rule, value: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """What a rule compares with its threshold: the value, or the interval bound nearest the healthy side."""
    if rule.confidence == "value":
        return value
    return lo if rule.op in (">", ">=") else hi
