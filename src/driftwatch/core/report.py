"""Report rows: every slice and attribute metric of a window as plain values with n, interval and status.

What ``driftwatch replay`` prints, what /metrics exports and what reports
show are these rows: one per metric of the registry and exposed slice (drift
per monitored feature, comparisons per protected attribute). A value below
``min_samples`` is ``insufficient`` (no value); a label metric below the
model's label coverage is ``provisional``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from driftwatch.config import Config
from driftwatch.core import summary as S
from driftwatch.core.exposure import Exposure, Stream
from driftwatch.core.slicing import OTHER, OVERALL
from driftwatch.core.values import compare_groups, slice_metric
from driftwatch.metrics.registry import (
    ATTRIBUTE_METRICS,
    ESTIMATE_METRICS,
    LABEL_METRICS,
    REGISTRY,
    REPORTED_SLICE_METRICS,
)

__all__ = ["MetricRow", "Reporter"]

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


class Reporter:
    """Reads metric rows out of streams' windows, through the same exposure rules and alerts use."""

    def __init__(self, config: Config, exposure: Exposure, tick: float) -> None:
        self.config = config
        self.exposure = exposure
        self.tick = tick

    def rows(self, streams: Iterable[Stream], window: float = 0.0) -> Iterator[MetricRow]:
        """Every slice and attribute metric in ``window`` seconds (0 = since start), for reports."""
        wt = round(window / self.tick)
        wname = "since_start" if wt == 0 else f"{int(window)}s"
        min_n = self.config.min_samples
        for s in streams:
            slices: list[tuple[str, str, S.Matrix]] = [(OVERALL, OVERALL, s.store.window(wt, 1, s.layout.width)[0])]
            for d, dim in enumerate(self.exposure.dimensions):
                names, mat = self.exposure.exposed(s, wt, d)
                slices.extend((dim, nm, mat[i]) for i, nm in enumerate(names))
            mat = np.array([r for _, _, r in slices], np.int64)
            base = {"model": s.model_id, "version": s.version, "window": wname}
            for name in REPORTED_SLICE_METRICS:
                if name in ESTIMATE_METRICS and s.layout.cbpe is None:
                    continue  # no calibration in the profile: nothing to estimate from
                yield from self._rows_of(name, None, mat, s, slices, base, min_n)
            for feature in s.layout.blocks:
                for name in _DRIFT_ORDER:
                    yield from self._rows_of(name, feature, mat, s, slices, base, min_n)
            for attr in self.config.protected:
                d = self.exposure.dimensions.index(attr)
                names, gm = self.exposure.exposed(s, wt, d)
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
        s: Stream,
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
