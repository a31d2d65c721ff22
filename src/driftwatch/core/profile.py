"""Reference profiles: quantile bins and reference distributions of a model's inputs, score and predictions.

With a ``label`` column (the true outcome, written like the prediction or as
a boolean), a profile also carries what performance estimation without
labels needs: an isotonic calibration of the score fitted on the labelled
rows, and the score bins the streaming core sums calibrated probabilities
over (:mod:`driftwatch.metrics.cbpe`).

A profile is plain JSON (no pickle) so that it can be reviewed, diffed and
checked into a repository. Numeric features get ``bins`` quantile bins of
the reference; a value ``x`` falls in bin ``searchsorted(edges, x, "right")``
so the outer bins are open-ended. Categorical features keep their most
frequent categories (at most :data:`MAX_CATEGORIES`); anything else lands in
an ``__unseen__`` bin whose reference proportion is 0.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from driftwatch.config import ModelConfig
from driftwatch.errors import ProfileError
from driftwatch.metrics.cbpe import Calibration

__all__ = [
    "CBPE_BINS",
    "MAX_CATEGORIES",
    "MIN_LABELLED",
    "CbpeReference",
    "Distribution",
    "Profile",
    "build_profile",
    "calibrate",
    "columns_from",
    "prediction_columns",
]

MAX_CATEGORIES = 50
"""Categories beyond the 50 most frequent share the ``__unseen__`` bin (bounded columns per slice)."""
PROFILE_VERSION = 1
CBPE_BINS = 40
"""Score bins of performance estimation: quantiles of the reference's scores (plus the decision threshold)."""
MIN_LABELLED = 100
"""Labelled reference rows with a score, of both outcomes, that a calibration needs."""


@dataclass(frozen=True, slots=True)
class Distribution:
    """A reference distribution over fixed bins (numeric edges or categories, then one extra bin)."""

    kind: Literal["numeric", "categorical"]
    proportions: tuple[float, ...]
    count: int
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def bins(self) -> int:
        """Number of bins: ``len(edges) + 1`` numeric; categories + ``__unseen__`` categorical."""
        return len(self.proportions)


@dataclass(frozen=True, slots=True)
class CbpeReference:
    """What estimating performance without labels needs: the score's calibration and the bins it is summed over
    (``edges``: increasing, the outer two bound the reference's scores; outside them scores count in the end
    bins), fitted on ``labelled`` reference rows."""

    calibration: Calibration
    edges: tuple[float, ...]
    labelled: int

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"calibration": self.calibration.to_json(), "edges": list(self.edges), "labelled": self.labelled}

    @classmethod
    def from_json(cls, data: object) -> CbpeReference:
        """Inverse of :meth:`to_json` (``ValueError`` or ``KeyError`` naming what is wrong)."""
        if not isinstance(data, dict):
            raise ValueError("cbpe must be an object")
        edges = tuple(float(x) for x in data["edges"])
        if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("cbpe.edges must be at least 2 increasing numbers")
        return cls(Calibration.from_json(data["calibration"]), edges, int(data["labelled"]))


@dataclass(frozen=True, slots=True)
class Profile:
    """The reference of one model: a distribution per monitored feature, ``score`` and ``prediction``."""

    model_id: str
    count: int
    distributions: dict[str, Distribution]
    selection_rate: float | None = None
    source: str = ""
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    cbpe: CbpeReference | None = None
    # Reference rows for the reports' drift tables: features, score and prediction of at most REFERENCE_SAMPLE_ROWS
    # evenly spaced reference rows (no ids, no attributes); empty in profiles written before it existed.
    sample: dict[str, list[float | str | None]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (stable key order)."""
        return {
            "profile_version": PROFILE_VERSION,
            "model_id": self.model_id,
            "count": self.count,
            "source": self.source,
            "selection_rate": self.selection_rate,
            "cbpe": None if self.cbpe is None else self.cbpe.to_json(),
            "sample": {k: list(v) for k, v in self.sample.items()},
            "distributions": {
                k: {
                    "kind": d.kind,
                    "count": d.count,
                    "edges": list(d.edges),
                    "categories": list(d.categories),
                    "proportions": list(d.proportions),
                }
                for k, d in sorted(self.distributions.items())
            },
        }

    @classmethod
    def from_json(cls, data: object) -> Profile:
        """Inverse of :meth:`to_json`; raise :class:`ProfileError` naming what is wrong."""
        if not isinstance(data, dict):
            raise ProfileError(f"not a driftwatch profile: expected a JSON object, got {type(data).__name__}")
        if data.get("profile_version") != PROFILE_VERSION:
            raise ProfileError(f"profile_version {data.get('profile_version')!r} is not {PROFILE_VERSION}")
        try:
            raw = data["distributions"]
            if not isinstance(raw, dict):
                raise TypeError("distributions must be an object")
            dists = {
                str(k): Distribution(
                    kind=d["kind"],
                    proportions=tuple(float(x) for x in d["proportions"]),
                    count=int(d["count"]),
                    edges=tuple(float(x) for x in d.get("edges", ())),
                    categories=tuple(str(x) for x in d.get("categories", ())),
                )
                for k, d in raw.items()
            }
            sel = data.get("selection_rate")
            cbpe = data.get("cbpe")
            sample = data.get("sample") or {}
            if not isinstance(sample, dict) or not all(isinstance(v, list) for v in sample.values()):
                raise TypeError("sample must be an object of columns")
            return cls(
                model_id=str(data["model_id"]),
                count=int(data["count"]),
                distributions=dists,
                selection_rate=float(sel) if isinstance(sel, int | float) else None,
                source=str(data.get("source", "")),
                cbpe=None if cbpe is None else CbpeReference.from_json(cbpe),
                sample={str(k): [_cell(x) for x in v] for k, v in sample.items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProfileError(f"not a driftwatch profile: missing or invalid {e}") from None


def _numeric(values: Sequence[object], bins: int) -> Distribution:
    arr = np.array([_to_float(v) for v in values], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        raise ProfileError("no numeric values to build bins from")
    qs = np.quantile(arr, np.arange(1, bins) / bins)
    edges = np.unique(qs)  # ties collapse bins (e.g. a mostly-zero feature)
    idx = np.searchsorted(edges, arr, side="right")
    counts = np.bincount(idx, minlength=edges.size + 1)
    return Distribution("numeric", tuple((counts / arr.size).tolist()), int(arr.size), edges=tuple(edges.tolist()))


def _categorical(values: Sequence[object]) -> Distribution:
    seen = [str(v) for v in values if v is not None]
    if not seen:
        raise ProfileError("no categorical values")
    top = Counter(seen).most_common(MAX_CATEGORIES)
    cats = tuple(sorted(c for c, _ in top))
    total = len(seen)
    counts = Counter(seen)
    props = [counts[c] / total for c in cats]
    props.append(1.0 - sum(props))  # the __unseen__ bin: what the top categories miss
    return Distribution("categorical", tuple(max(p, 0.0) for p in props), total, categories=cats)


def _to_float(v: object) -> float:
    if v is None or isinstance(v, bool):
        return math.nan
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return math.nan


def build_profile(
    model_id: str,
    model: ModelConfig,
    columns: Mapping[str, Sequence[object]],
    *,
    source: str = "",
    strict: bool = True,
) -> Profile:
    """Build a profile from columns: every configured feature, and ``score`` / ``prediction`` when present.

    ``strict=False`` (references learnt from live traffic) leaves out a
    feature without usable values instead of failing: it is then not
    monitored for drift, rather than stopping the pipeline.
    """
    dists: dict[str, Distribution] = {}
    n = max((len(v) for v in columns.values()), default=0)
    if n == 0:
        raise ProfileError(f"model {model_id!r}: no reference rows")
    for name, fc in model.features.items():
        if name not in columns:
            if strict:
                raise ProfileError(f"model {model_id!r}: reference data has no column {name!r}")
            continue
        try:
            dists[name] = _numeric(columns[name], fc.bins) if fc.kind == "numeric" else _categorical(columns[name])
        except ProfileError as e:
            if strict:
                raise ProfileError(f"model {model_id!r}, feature {name!r}: {e}") from None
    if model.monitor_score and any(v is not None for v in columns.get("score", ())):
        dists["score"] = _numeric(columns["score"], 10)
    selection = None
    if "prediction" in columns:
        dists["prediction"] = _categorical(columns["prediction"])
        preds = [p for p in columns["prediction"] if p is not None]
        if preds:
            selection = sum(1 for p in preds if str(p) in model.favorable) / len(preds)
    cbpe, _ = calibrate(model, columns)
    return Profile(
        model_id, n, dists, selection_rate=selection, source=source, cbpe=cbpe, sample=reference_sample(model, columns)
    )


REFERENCE_SAMPLE_ROWS = 2_000
"""Reference rows a profile keeps for the reports' drift tables (evenly spaced over the reference data)."""


def reference_sample(
    model: ModelConfig, columns: Mapping[str, Sequence[object]]
) -> dict[str, list[float | str | None]]:
    """At most :data:`REFERENCE_SAMPLE_ROWS` evenly spaced rows of the configured features, ``score`` and
    ``prediction`` (columns the reference lacks are left out): what a report compares the current window with."""
    names = [c for c in (*model.features, "score", "prediction") if c in columns]
    n = min((len(columns[c]) for c in names), default=0)
    if n == 0:
        return {}
    at = np.unique(np.linspace(0, n - 1, min(n, REFERENCE_SAMPLE_ROWS)).round().astype(np.int64)).tolist()
    numeric = {c for c, fc in model.features.items() if fc.kind == "numeric"} | {"score"}
    out: dict[str, list[float | str | None]] = {}
    for c in names:
        if c in numeric:  # as the bins read them: a CSV's "4.2" is 4.2
            out[c] = [None if math.isnan(f := _to_float(columns[c][i])) else f for i in at]
        else:
            out[c] = [None if columns[c][i] is None else str(columns[c][i]) for i in at]
    return out


def _cell(v: object) -> float | str | None:
    """A sample value as JSON keeps it: a number, a string or None."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    return str(v)


def _truth(v: object, favorable: frozenset[str]) -> bool | None:
    """A label as the stream reads it: a boolean, or the outcome written like a prediction (favourable or not)."""
    if v is None:
        return None
    return v if isinstance(v, bool) else str(v) in favorable


def calibrate(model: ModelConfig, columns: Mapping[str, Sequence[object]]) -> tuple[CbpeReference | None, str]:
    """The calibration of ``score`` on ``label`` and its bins, or None; and a sentence saying what was done."""
    if "label" not in columns or "score" not in columns:
        return None, "no calibration: the reference data has no label and score columns"
    favorable = frozenset(model.favorable)
    rows = [
        (s, t, p)
        for s, lab, p in zip(
            [_to_float(v) for v in columns["score"]],
            columns["label"],
            columns.get("prediction", [None] * len(columns["score"])),
            strict=False,
        )
        if not math.isnan(s) and (t := _truth(lab, favorable)) is not None
    ]
    outcomes = {t for _, t, _ in rows}
    if len(rows) < MIN_LABELLED or len(outcomes) < 2:
        return None, (
            f"no calibration: {len(rows)} labelled rows with a score"
            + ("" if len(outcomes) == 2 else " of one outcome only")
            + f"; performance estimation needs at least {MIN_LABELLED} of both outcomes"
        )
    scores = np.array([s for s, _, _ in rows])
    try:
        cal = Calibration.fit(scores, np.array([t for _, t, _ in rows], np.float64))
    except ValueError as e:
        return None, f"no calibration: {e}"
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, CBPE_BINS + 1)))
    decided = [(s, str(p) in favorable) for s, _, p in rows if p is not None]
    fav = [s for s, f in decided if f]
    unfav = [s for s, f in decided if not f]
    if fav and unfav and max(unfav) < min(fav):
        # Predictions follow a score threshold: make it an edge, so that every bin is wholly one decision.
        edges = np.unique(np.append(edges, min(fav)))
    if edges.size < 2:
        return None, "no calibration: every reference score is the same"
    return CbpeReference(cal, tuple(edges.tolist()), len(rows)), f"calibration from {len(rows)} labelled rows"


def prediction_columns(events: Iterable[object], model_id: str, limit: int | None = None) -> dict[str, list[object]]:
    """Reference columns (features, ``score``, ``prediction``) from the prediction events of ``model_id``, and
    ``label`` from the label interactions among ``events`` that name their request (read to the end of ``events``
    unless ``limit`` predictions stop it first)."""
    rows: list[dict[str, object]] = []
    request: list[object] = []
    labels: dict[object, object] = {}
    for ev in events:
        if not isinstance(ev, dict):
            continue
        if ev.get("type") == "interaction":
            if ev.get("kind") == "label" and ev.get("value") is not None:
                labels[ev.get("request_id")] = ev["value"]
            continue
        if ev.get("type", "prediction") != "prediction" or ev.get("model_id") != model_id:
            continue
        rows.append({**(ev.get("features") or {}), "score": ev.get("score"), "prediction": ev.get("prediction")})
        request.append(ev.get("request_id"))
        if limit is not None and len(rows) >= limit:
            break
    if labels:
        for row, rid in zip(rows, request, strict=True):
            row["label"] = labels.get(rid)
    return columns_from(rows)


def columns_from(values: Iterable[Mapping[str, object]]) -> dict[str, list[object]]:
    """Turn rows into columns (missing keys become None)."""
    rows = list(values)
    keys = {k for r in rows for k in r}
    return {k: [r.get(k) for r in rows] for k in keys}
