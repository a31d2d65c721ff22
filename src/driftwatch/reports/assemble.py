"""From the evaluator's state to a :class:`~driftwatch.reports.spec.ReportSpec`: what a report of one alert shows.

The spec is filled at the tick the alert fired (replay) or when the worker
hands the report to its builder process: the window's metric rows (the same
:class:`~driftwatch.core.report.MetricRow` values /metrics exports), the alert
record, and two samples, the window's sampled predictions (restricted to the
alert's slice) and the reference profile's rows.

Attribute values in the sample are slice tokens. Each becomes the name
/metrics would show for it in that window (a display name where the config
allows one, else the token); a value /metrics does not show (below
``min_group_size``, beyond the top ``max_values``) becomes ``__other__``,
so a report never names a group the metrics keep anonymous.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import msgspec

from driftwatch._time import rfc3339
from driftwatch.alerts.engine import AlertTransition
from driftwatch.alerts.records import AlertRecord
from driftwatch.core.evaluate import Evaluator
from driftwatch.core.exposure import Stream
from driftwatch.core.sample import columns_of, gets_report
from driftwatch.core.slicing import OTHER, OVERALL
from driftwatch.reports.spec import MetricValue, ReportSpec, Sample, SampleColumns

__all__ = ["report_id", "spec_for", "spec_of_alert"]


def report_id(record: AlertRecord) -> str:
    """A report's id: its alert's fingerprint and the time it fired (stable across replays of the same events)."""
    digest = hashlib.sha256(f"{record.fingerprint}|{record.event_time}|{record.state}".encode()).hexdigest()
    return digest[:20]


def spec_of_alert(evaluator: Evaluator, t: AlertTransition) -> ReportSpec | None:
    """The report of a firing alert, at the tick it fired (call from :attr:`Evaluator.on_tick`); None when its rule
    gets no report (:func:`~driftwatch.core.sample.gets_report`) or it is not a firing."""
    rule = next((r for r in evaluator.config.rules if r.name == t.rule), None)
    if t.state != "firing" or rule is None or not gets_report(rule, evaluator.config):
        return None
    labels = t.labels
    attribute, value = labels.get("attribute"), labels.get("slice")
    if value is None and attribute is not None:  # a group comparison: the group it names
        group = t.evidence.get("group") or t.evidence.get("low_group")
        value = group if isinstance(group, str) else None
    return spec_for(
        evaluator,
        model=labels["model"],
        version=labels.get("version", ""),
        window=t.window,
        end=t.event_time,
        record=t.to_record(),
        attribute=attribute if value is not None else None,
        value=value,
    )


def spec_for(
    evaluator: Evaluator,
    *,
    model: str,
    version: str,
    window: float,
    end: float,
    record: AlertRecord | None = None,
    attribute: str | None = None,
    value: str | None = None,
) -> ReportSpec:
    """The report of ``model`` x ``version`` over the ``window`` seconds ending at ``end`` (event time, a tick's end)
    as the evaluator holds it now, restricted to the slice ``attribute`` = ``value`` (a shown name) if given."""
    config = evaluator.config
    tick = evaluator.tick
    wt = max(1, round(window / tick))
    end_tick = math.floor(end / tick + 1e-9)
    stream = evaluator.streams.get((model, version))
    attrs = tuple(config.attributes)
    mc = config.models[model]
    numerical = tuple(n for n, f in mc.features.items() if f.kind == "numeric")
    categorical = tuple(n for n, f in mc.features.items() if f.kind == "categorical")
    current: dict[str, list[float | int | str | None]] = {}
    metrics: list[MetricValue] = []
    if stream is not None:
        sampled = evaluator.sample(model, version, end_tick, wt)
        names = columns_of([b.name for b in stream.layout.features], attrs)
        current = {c: [] for c in (*names, "label", "interactions")}
        joins = {} if sampled is None else sampled.joins()
        shown = [_shown_names(evaluator, stream, wt, d) for d in range(len(attrs))]
        keep = _keeps(attribute, value, attrs)
        first_attr = len(names) - len(attrs)
        for p, row in [] if sampled is None else zip(sampled.priority, sampled.rows, strict=True):
            tokens = [shown[d].get(str(v), OTHER) if v is not None else None for d, v in enumerate(row[first_attr:])]
            if keep is not None and not keep(tokens):
                continue
            for c, v in zip(names, (*row[:first_attr], *tokens), strict=True):
                current[c].append(_plain(v))
            label, kinds = joins.get(p, (None, ()))
            current["label"].append(_plain(label))
            current["interactions"].append(",".join(sorted(set(kinds))) or None)
        metrics = [
            MetricValue(r.name, dict(r.labels), r.value, r.n, r.lo, r.hi, r.status)
            for r in evaluator.reporter.rows([stream], window)
        ]
    layout = evaluator.layouts.get(model)  # holds the reference profile, loaded or learnt from traffic
    reference = {c: list(v) for c, v in (layout.profile.sample if layout is not None else {}).items()}
    wanted = [*mc.features, "score", "prediction"]
    if current:
        present = [c for c in wanted if c in current and c in reference]
        reference = {c: reference[c] for c in present}
        current = {c: current[c] for c in (*present, *attrs, "label", "interactions") if c in current}
    title = "Report" if record is None else f"{record.rule}: {record.state}"
    where = "" if attribute is None else f" · {attribute}={value}"
    return ReportSpec(
        report_id=report_id(record) if record is not None else _adhoc_id(model, version, window, end, where),
        title=f"{title} · {model} {version}{where}",
        model=model,
        version=version,
        window_seconds=float(wt * tick),
        window_end=rfc3339(end_tick * tick),
        attribute=attribute,
        slice=value,
        alert=None if record is None else msgspec.to_builtins(record),
        columns=SampleColumns(
            numerical=tuple(c for c in (*numerical, "score") if c in reference),
            categorical=tuple(c for c in (*categorical, "prediction") if c in reference),
        ),
        reference=Sample(reference),
        current=Sample(current),
        metrics=metrics,
        min_rows=config.reports.min_rows,
    )


def _shown_names(evaluator: Evaluator, stream: Stream, wt: int, dim: int) -> dict[str, str]:
    """Slice token -> the name /metrics shows in the window, for the values it shows (the rest are ``__other__``)."""
    keys, names, _ = evaluator.exposure.exposed_keys(stream, wt, dim)
    return dict(zip(keys, names, strict=True))


def _keeps(
    attribute: str | None, value: str | None, attrs: Sequence[str]
) -> Callable[[Sequence[str | None]], bool] | None:
    """A predicate on a row's shown attribute names: in the slice ``attribute`` = ``value`` (a pair ``a:b`` is
    matched side by side), or None for the whole model version."""
    if attribute is None or value is None or value == OVERALL or attribute == OVERALL:
        return None
    if attribute in attrs:
        d = attrs.index(attribute)
        return lambda tokens: tokens[d] == value
    a, _, b = attribute.partition(":")
    va, _, vb = value.partition(":")
    if a in attrs and b in attrs:
        da, db = attrs.index(a), attrs.index(b)
        return lambda tokens: tokens[da] == va and tokens[db] == vb
    return lambda tokens: False


def _plain(v: object) -> float | int | str | None:
    """A sampled value as a report column holds it (features arrive as JSON: numbers, strings, booleans)."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, str | int | float):
        return v
    return str(v)


def _adhoc_id(model: str, version: str, window: float, end: float, where: str) -> str:
    return hashlib.sha256(f"{model}|{version}|{window}|{end}|{where}".encode()).hexdigest()[:20]
