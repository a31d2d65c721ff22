"""One report as a standalone HTML document: the alert, fairness by group, and Evidently's drift report.

:func:`build_html` is pure apart from Evidently: no sockets, no files, no
clocks. It imports pandas and Evidently inside the drift section only, so it
runs in a worker process (:class:`~driftwatch.reports.runner.ReportRunner`);
without Evidently installed the drift section says so and the rest renders.
Sections, in order (docs/reports.md says where each number comes from):

1. the header: what, which model and version, which window;
2. ``#alert``: the alert record, its evidence, contributors and runbook;
3. ``#fairness``: per protected attribute, its groups' selection rate, TPR
   and FPR, and the attribute's comparisons, exactly as /metrics shows them;
4. ``#drift``: ``#drift-table`` (Evidently's per-column drift tests as plain
   HTML) and Evidently's own interactive report in ``iframe#evidently``.

Every string from the spec is HTML-escaped; numbers are written with four
significant digits (:func:`fmt`).

>>> fmt(0.612345), fmt(1234567.0), fmt(None), fmt(3)
('0.6123', '1.235e+06', '–', '3')
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from driftwatch.reports.spec import MetricValue, ReportSpec, Sample

__all__ = ["build_html", "fmt"]

OVERALL_SLICES = frozenset({"*", "__overall__"})
"""Slice (and attribute) names of the whole population, never a group (``driftwatch.core.slicing.OVERALL``)."""

OTHER_SLICE = "__other__"
"""The slice that pools values not shown by name (``driftwatch.core.slicing.OTHER``); never compared."""

_COMPARISON_ORDER = (
    "disparate_impact_ratio",
    "statistical_parity_difference",
    "equal_opportunity_difference",
    "equalized_odds_difference",
)
"""Attribute-level rows in this order first; any other attribute-level row follows by name."""

# Nothing leaves the page: inline scripts and styles, data: fonts and images, no connections. The srcdoc frame of
# Evidently's report inherits this policy.
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "base-uri 'none'; form-action 'none'"
)

_NO_VALUE = MetricValue("", {}, None, 0, None, None, "insufficient")

_INSTALL_HINT = "pip install 'driftwatch[reports]'"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem 2rem; color: #1d232a; }
h1 { font-size: 1.5rem; margin-bottom: 0.25rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.25rem; }
h3 { font-size: 1rem; margin-top: 1.25rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.alert-group td, tr.alert-feature td { background: #fff3cd; font-weight: 600; }
tr.drifted td.drifted { color: #b42318; font-weight: 600; }
.note { color: #57606a; }
.finding { background: #fff3cd; border-left: 4px solid #d29922; padding: 0.5rem 0.75rem; }
.warning { background: #ffebe9; border-left: 4px solid #cf222e; padding: 0.5rem 0.75rem; }
code { background: #f3f5f7; padding: 0 0.2rem; }
iframe#evidently { width: 100%; height: 900px; border: 1px solid #d0d7de; }
"""

# Evidently's document reports its height to ours (postMessage from the sandboxed, opaque-origin frame), so the
# frame shows the whole report without a second scroll bar. Only a number crosses; the page checks its source.
_CHILD_RESIZE = """<script>
(function () {
  var last = 0;
  function post() {
    var h = document.documentElement.scrollHeight;
    if (Math.abs(h - last) > 4) { last = h; parent.postMessage({driftwatchEvidentlyHeight: h}, "*"); }
  }
  new ResizeObserver(post).observe(document.body);
  window.addEventListener("load", post);
})();
</script>"""
_PARENT_RESIZE = """<script>
window.addEventListener("message", function (e) {
  var frame = document.getElementById("evidently");
  var h = e.data && e.data.driftwatchEvidentlyHeight;
  if (!frame || e.source !== frame.contentWindow || typeof h !== "number") { return; }
  frame.style.height = Math.min(Math.max(h + 4, 300), 30000) + "px";
});
</script>"""


def build_html(spec: ReportSpec) -> str:
    """The report of ``spec`` as one UTF-8 HTML document (inline CSS; Evidently's report embedded offline)."""
    drift_html, embeds_evidently = _drift_section(spec)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<title>{_e(spec.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        _header(spec),
        _alert_section(spec),
        _fairness_section(spec),
        drift_html,
        f'<p class="note">driftwatch report <code>{_e(spec.report_id)}</code></p>',
        _PARENT_RESIZE if embeds_evidently else "",
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


# ------------------------------------------------------------------------------------------------------ formatting


def fmt(value: object) -> str:
    """A number as reports write it: four significant digits (``.4g``); integers as they are; None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _interval(lo: object, hi: object) -> str:
    if not isinstance(lo, int | float) or not isinstance(hi, int | float):
        return "–"
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _compact(value: object) -> str:
    """A value of a JSON document as one short line: numbers by :func:`fmt`, strings as they are, the rest JSON."""
    if value is None or isinstance(value, bool | int | float):
        return fmt(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str, ensure_ascii=False)


def _value(row: MetricValue) -> float | None:
    """The row's value, None when it has none (insufficient data)."""
    if row.value is None or row.status == "insufficient" or math.isnan(row.value):
        return None
    return row.value


def _has_value(row: MetricValue) -> bool:
    return _value(row) is not None


def _metric_value(row: MetricValue) -> str:
    """A row's value as /metrics means it: ``insufficient (n=…)`` without one, marked when provisional."""
    value = _value(row)
    if value is None:
        return f"insufficient (n={row.n})"
    return fmt(value) + (" (provisional)" if row.status == "provisional" else "")


def _link(url: object) -> str:
    """``url`` as a link if it is an http(s) URL; as plain text otherwise (never a ``javascript:`` link)."""
    text = str(url)
    parts = urlsplit(text.strip())
    if parts.scheme.lower() in {"http", "https"} and parts.netloc:
        return f'<a href="{_e(text.strip())}" rel="noopener noreferrer">{_e(text)}</a>'
    return f'<code>{_e(text)}</code> <span class="note">(not an http(s) link)</span>'


def _td(content: str, num: bool = False) -> str:
    """A cell of already escaped ``content``; numbers are right-aligned."""
    return f'<td class="num">{content}</td>' if num else f"<td>{content}</td>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], attrs: str = "", classes: Sequence[str] = ()) -> str:
    """A table of rendered cells (:func:`_td`); ``classes[i]`` is the class of row ``i`` ("" for none)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, cells in enumerate(rows):
        cls = classes[i] if i < len(classes) else ""
        body.append(f'<tr class="{cls}">' if cls else "<tr>")
        body.append("".join(c if c.startswith("<td") else _td(c) for c in cells) + "</tr>")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# ---------------------------------------------------------------------------------------------------------- header


def _alert_dict(spec: ReportSpec, key: str) -> Mapping[str, object]:
    value = (spec.alert or {}).get(key)
    return value if isinstance(value, Mapping) else {}


def _alert_attribute(spec: ReportSpec) -> str | None:
    if spec.attribute and spec.attribute not in OVERALL_SLICES:
        return spec.attribute
    attr = _alert_dict(spec, "labels").get("attribute")
    return attr if isinstance(attr, str) and attr not in OVERALL_SLICES else None


def _alert_group(spec: ReportSpec) -> str | None:
    """The group the alert is about: the spec's slice, else the evidence's ``low_group`` or ``group``."""
    if spec.slice and spec.slice not in OVERALL_SLICES:
        return spec.slice
    evidence = _alert_dict(spec, "evidence")
    for key in ("low_group", "group"):
        value = evidence.get(key)
        if isinstance(value, str) and value not in OVERALL_SLICES:
            return value
    return None


def _alert_feature(spec: ReportSpec) -> str | None:
    for source in (_alert_dict(spec, "labels"), _alert_dict(spec, "evidence")):
        value = source.get("feature")
        if isinstance(value, str) and value:
            return value
    return None


def _header(spec: ReportSpec) -> str:
    rows = [
        ("Model", _e(spec.model)),
        ("Version", _e(spec.version)),
        ("Window", f"{_e(fmt(spec.window_seconds))} s ending {_e(spec.window_end)}"),
    ]
    if spec.attribute or spec.slice:
        rows.append(("Slice", f"{_e(spec.attribute or '–')} = {_e(spec.slice or '–')}"))
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    sources = (
        "The alert and fairness numbers are the /metrics values of this window (all events); the drift table is "
        f"Evidently's, computed on a bounded sample of {spec.current.rows} current and "
        f"{spec.reference.rows} reference rows."
    )
    return (
        f'<header id="summary"><h1>{_e(spec.title)}</h1>'
        f'<table class="kv">{cells}</table><p class="sources">{_e(sources)}</p></header>'
    )


# ----------------------------------------------------------------------------------------------------------- alert


def _alert_section(spec: ReportSpec) -> str:
    alert = spec.alert
    out = ['<section id="alert">', "<h2>Alert</h2>"]
    if alert is None:
        out.append('<p class="note">This report was requested without an alert.</p></section>')
        return "\n".join(out)
    interval = alert.get("interval")
    lo, hi = interval if isinstance(interval, list | tuple) and len(interval) == 2 else (None, None)
    labels = _alert_dict(spec, "labels")
    fields = [
        ("Rule", _e(_compact(alert.get("rule")))),
        ("State", _e(_compact(alert.get("state")))),
        ("Severity", _e(_compact(alert.get("severity")))),
        ("Value", _e(_compact(alert.get("value")))),
        ("n", _e(_compact(alert.get("n")))),
        ("95% interval", _e(_interval(lo, hi))),
        ("Window", f"{_e(_compact(alert.get('window_seconds')))} s"),
        ("When", f"{_e(_compact(alert.get('event_time')))} (active since {_e(_compact(alert.get('active_since')))})"),
    ]
    if labels:
        fields.append(("Labels", _e(", ".join(f"{k}={_compact(v)}" for k, v in labels.items()))))
    out.append('<table class="kv alert">')
    out.extend(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in fields)
    out.append("</table>")
    annotations = _alert_dict(spec, "annotations")
    if "summary" in annotations:
        out.append(f'<p class="summary">{_e(_compact(annotations["summary"]))}</p>')
    if "runbook_url" in annotations:
        out.append(f'<p class="runbook">Runbook: {_link(annotations["runbook_url"])}</p>')
    others = [(k, v) for k, v in annotations.items() if k not in {"summary", "runbook_url"}]
    if others:
        out.append("<h3>Annotations</h3>")
        out.append(
            _table(
                ["annotation", "value"],
                ([_e(k), _link(v) if k.endswith("_url") else _e(_compact(v))] for k, v in others),
                ' class="kv annotations"',
            )
        )
    evidence = _alert_dict(spec, "evidence")
    contributors = evidence.get("contributors")
    rest = [(k, v) for k, v in evidence.items() if k != "contributors" or not isinstance(v, list)]
    out.append("<h3>Evidence</h3>")
    if rest:
        out.append(
            _table(["key", "value"], ([_e(k), _e(_compact(v))] for k, v in rest), ' class="kv evidence" id="evidence"')
        )
    else:
        out.append('<p class="note">The alert carries no evidence.</p>')
    if isinstance(contributors, list) and contributors:
        out.append("<h3>Contributors</h3>")
        keys: list[str] = []
        for c in contributors:
            if isinstance(c, Mapping):
                keys.extend(k for k in c if k not in keys)
        if keys:
            out.append(
                _table(
                    keys,
                    ([_e(_compact(c.get(k))) for k in keys] for c in contributors if isinstance(c, Mapping)),
                    ' class="contributors"',
                )
            )
        else:
            out.append(f"<p>{_e(_compact(contributors))}</p>")
    out.append("</section>")
    return "\n".join(out)


# -------------------------------------------------------------------------------------------------------- fairness


def _is_group_row(row: MetricValue, attribute: str) -> bool:
    labels = row.labels
    return (
        labels.get("attribute") == attribute
        and "slice" in labels
        and labels["slice"] not in OVERALL_SLICES
        and "feature" not in labels
    )


def _is_attribute_row(row: MetricValue, attribute: str) -> bool:
    labels = row.labels
    return labels.get("attribute") == attribute and "slice" not in labels and "feature" not in labels


def _fairness_attributes(spec: ReportSpec) -> list[str]:
    """Attributes with attribute-level rows (the protected ones), the alert's attribute first if it has groups."""
    protected = sorted(
        {
            a
            for r in spec.metrics
            if (a := r.labels.get("attribute")) is not None and a not in OVERALL_SLICES and _is_attribute_row(r, a)
        }
    )
    alert_attr = _alert_attribute(spec)
    if alert_attr is not None and (alert_attr in protected or any(_is_group_row(r, alert_attr) for r in spec.metrics)):
        return [alert_attr, *(a for a in protected if a != alert_attr)]
    return protected


def _combined(row: MetricValue | None) -> str:
    if row is None:
        return "–"
    text = _metric_value(row)
    return f"{text} {_interval(row.lo, row.hi)}, n={row.n}" if _has_value(row) else text


def _fairness_section(spec: ReportSpec) -> str:
    out = ['<section id="fairness">', "<h2>Fairness by group</h2>"]
    attributes = _fairness_attributes(spec)
    if not attributes:
        out.append('<p class="note">No protected attribute has metric rows in this window.</p></section>')
        return "\n".join(out)
    alert_attr, alert_group = _alert_attribute(spec), _alert_group(spec)
    for attribute in attributes:
        out.append(f"<h3>Attribute <code>{_e(attribute)}</code></h3>")
        by_group: dict[str, dict[str, MetricValue]] = {}
        for r in spec.metrics:
            if _is_group_row(r, attribute) and r.name in {"selection_rate", "tpr", "fpr"}:
                by_group.setdefault(r.labels["slice"], {})[r.name] = r
        groups = sorted(by_group, key=lambda g: (g == OTHER_SLICE, g))
        harmed = alert_group if attribute == alert_attr else None
        if harmed is not None:
            out.append(_finding(attribute, harmed, by_group))
        if groups:
            extra = [m for m in ("tpr", "fpr") if any(_has_value(by_group[g].get(m, _NO_VALUE)) for g in groups)]
            headers = [
                "group",
                "selection rate",
                "95% interval",
                "n",
                *(f"{m.upper()} (95% interval, n)" for m in extra),
            ]
            body, classes = [], []
            for g in groups:
                sr = by_group[g].get("selection_rate")
                name = _e(g)
                if g == harmed:
                    name += ' <span class="marker">◀ the alert\'s group</span>'
                if g == OTHER_SLICE:
                    name += ' <span class="note">(values not shown by name; not compared)</span>'
                body.append(
                    [
                        _td(name),
                        _td(_e(_metric_value(sr)) if sr else "–", num=True),
                        _td(_e(_interval(sr.lo, sr.hi)) if sr and _has_value(sr) else "–", num=True),
                        _td(str(sr.n) if sr else "–", num=True),
                        *(_td(_e(_combined(by_group[g].get(m))), num=True) for m in extra),
                    ]
                )
                classes.append("alert-group" if g == harmed else "")
            out.append(_table(headers, body, f' class="groups" data-attribute="{_e(attribute)}"', classes))
        else:
            out.append('<p class="note">No group of this attribute has metric rows in this window.</p>')
        comparisons = [r for r in spec.metrics if _is_attribute_row(r, attribute)]
        order = {name: i for i, name in enumerate(_COMPARISON_ORDER)}
        comparisons.sort(key=lambda r: (order.get(r.name, len(order)), r.name))
        if comparisons:
            out.append(
                _table(
                    ["comparison", "value", "95% interval", "n", "status"],
                    (
                        [
                            _e(r.name),
                            _td(_e(_metric_value(r)), num=True),
                            _td(_e(_interval(r.lo, r.hi)) if _has_value(r) else "–", num=True),
                            _td(str(r.n), num=True),
                            _e(r.status),
                        ]
                        for r in comparisons
                    ),
                    f' class="comparisons" data-attribute="{_e(attribute)}"',
                )
            )
    out.append("</section>")
    return "\n".join(out)


def _finding(attribute: str, group: str, by_group: Mapping[str, Mapping[str, MetricValue]]) -> str:
    """One sentence naming the alert's group and how its selection rate compares with the other groups'."""
    text = f"Group {group} of attribute {attribute} is the group this alert is about"
    sr = by_group.get(group, {}).get("selection_rate")
    value = None if sr is None else _value(sr)
    if sr is None:
        text += "; it has no selection-rate row in this window"
    elif value is None:
        text += f"; its selection rate is insufficient (n={sr.n})"
    else:
        text += f": selection rate {fmt(value)} {_interval(sr.lo, sr.hi)} (n={sr.n})"
        rated = sorted(
            (v, g)
            for g, m in by_group.items()
            if g != OTHER_SLICE and (r := m.get("selection_rate")) is not None and (v := _value(r)) is not None
        )
        others = [(v, g) for v, g in rated if g != group]
        if others:
            (low_v, low_g), (high_v, high_g) = others[0], others[-1]
            if value < low_v:
                text += f", the lowest of the {len(rated)} groups; the highest is {high_g} at {fmt(high_v)}"
            elif value > high_v:
                text += f", the highest of the {len(rated)} groups; the lowest is {low_g} at {fmt(low_v)}"
            else:
                text += f", against {fmt(high_v)} for {high_g}, the highest of the {len(rated)} groups"
    return f'<p class="finding">{_e(text + ".")}</p>'


# ----------------------------------------------------------------------------------------------------------- drift


def _usable(sample: Sample, name: str) -> bool:
    values = sample.columns.get(name)
    return values is not None and any(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values)


def _numbers(sample: Sample, name: str, which: str) -> list[float]:
    """A numerical column as floats (missing as NaN); text in it is an error in the spec."""
    out: list[float] = []
    for i, v in enumerate(sample.columns[name]):
        if v is None:
            out.append(math.nan)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out.append(float(v))
        else:
            raise ValueError(f"numerical column {name!r} holds {type(v).__name__} at row {i} of the {which} sample")
    return out


def _categories(sample: Sample, name: str) -> list[str | None]:
    """A categorical column as text for Evidently (missing as None; see :func:`_script_safe`)."""
    return [None if v is None else _script_safe(str(v)) for v in sample.columns[name]]


def _drift_section(spec: ReportSpec) -> tuple[str, bool]:
    """The drift section, and whether it embeds Evidently's report."""
    head = '<section id="drift">\n<h2>Drift of inputs (Evidently)</h2>'
    cur, ref = spec.current.rows, spec.reference.rows

    def done(*body: str, embeds: bool = False) -> tuple[str, bool]:
        return "\n".join([head, *body, "</section>"]), embeds

    if cur < spec.min_rows or ref < spec.min_rows:
        return done(
            '<p class="warning" id="drift-too-few">'
            + _e(
                f"Too few rows for a drift comparison: {cur} current and {ref} reference rows; at least "
                f"{spec.min_rows} of each are needed."
            )
            + "</p>"
        )
    listed = [(c, "numerical") for c in spec.columns.numerical] + [(c, "categorical") for c in spec.columns.categorical]
    kinds = dict(listed)  # a column listed under both kinds counts as categorical
    dropped = [c for c in kinds if not (_usable(spec.current, c) and _usable(spec.reference, c))]
    kept = [c for c in kinds if c not in dropped]
    notes = []
    if dropped:
        notes.append(
            '<p class="note" id="drift-dropped">'
            + _e("Left out (no values in the current or the reference sample): " + ", ".join(dropped) + ".")
            + "</p>"
        )
    if not kept:
        return done(*notes, '<p class="warning">' + _e("No column to compare.") + "</p>")
    # Evidently writes column names and categories into a <script> of its page unescaped, where "</script>" would
    # end the script (and break the page, or run what follows): what it gets carries no "<" (see _script_safe).
    safe: dict[str, str] = {}
    for c in kept:
        name = _script_safe(c)
        while name in safe.values():
            name += "\u2032"  # a prime: two names that differ only in "<" vs "‹" stay two columns
        safe[c] = name
    frames: dict[str, dict[str, list[Any]]] = {"current": {}, "reference": {}}
    for which, sample in (("current", spec.current), ("reference", spec.reference)):
        for c in kept:
            frames[which][safe[c]] = _numbers(sample, c, which) if kinds[c] == "numerical" else _categories(sample, c)
    try:
        import evidently
        import pandas as pd
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset
    except ImportError:
        return done(
            *notes,
            '<p class="warning" id="evidently-missing">'
            + f"Evidently is not installed here, so there is no drift table: <code>{_e(_INSTALL_HINT)}</code>."
            + "</p>",
        )
    definition = DataDefinition(
        numerical_columns=[safe[c] for c in kept if kinds[c] == "numerical"],
        categorical_columns=[safe[c] for c in kept if kinds[c] == "categorical"],
    )
    dtypes = {safe[c]: "float64" if kinds[c] == "numerical" else "object" for c in kept}
    datasets = {
        which: Dataset.from_pandas(
            pd.DataFrame({c: pd.Series(v, dtype=dtypes[c]) for c, v in cols.items()}), data_definition=definition
        )
        for which, cols in frames.items()
    }
    snapshot = Report([DataDriftPreset()], include_tests=True).run(datasets["current"], datasets["reference"])
    original = {v: k for k, v in safe.items()}
    table, summary = _drift_table(snapshot.dict(), original, kinds, _alert_feature(spec))
    evidently_doc = snapshot.get_html_str(as_iframe=False)
    at = evidently_doc.rfind("</body>")  # the last one: Evidently's script bundle may spell it too
    doc = evidently_doc[:at] + _CHILD_RESIZE + evidently_doc[at:] if at >= 0 else evidently_doc
    # sandbox="allow-scripts" without allow-same-origin: Evidently's page runs in an opaque origin and cannot reach
    # this page; the Content-Security-Policy above (inherited by the srcdoc frame) keeps it offline.
    frame = (
        f"<h3>Evidently's report (Evidently {_e(getattr(evidently, '__version__', '?'))})</h3>"
        '<iframe id="evidently" title="Evidently data drift report" sandbox="allow-scripts" '
        f'srcdoc="{html.escape(doc, quote=True)}"></iframe>'
    )
    sample_note = (
        f"Computed by Evidently's DataDriftPreset on {cur} current and {ref} reference rows (bounded samples)."
    )
    return done(f'<p class="note">{_e(sample_note)}</p>', *notes, summary, table, frame, embeds=True)


def _script_safe(text: str) -> str:
    """``text`` without ``<`` (each becomes ``‹``), for what Evidently writes into a script unescaped."""
    return text.replace("<", "\u2039")


def _drift_table(
    result: Mapping[str, Any], original: Mapping[str, str], kinds: Mapping[str, str], feature: str | None
) -> tuple[str, str]:
    """The plain drift table (drifted columns first, the alert's feature before all) and a summary sentence, from
    the snapshot's values: ``ValueDrift`` per column (score, method, threshold) and its test (FAIL = drift).
    ``original`` maps the names Evidently saw back to the spec's."""
    drifted_by_metric: dict[str, bool] = {}
    for test in result.get("tests", []):
        metric_id = (test.get("metric_config") or {}).get("metric_id")
        if test.get("id") == "drift" and metric_id is not None and test.get("status") in {"FAIL", "SUCCESS"}:
            drifted_by_metric[metric_id] = test["status"] == "FAIL"
    rows: list[tuple[str, str, object, object, bool | None]] = []
    count: Mapping[str, Any] | None = None
    for metric in result.get("metrics", []):
        config = metric.get("config") or {}
        kind = str(config.get("type", ""))
        if kind.endswith(":ValueDrift"):
            rows.append(
                (
                    original.get(str(config.get("column")), str(config.get("column"))),
                    str(config.get("method")),
                    metric.get("value"),
                    config.get("threshold"),
                    drifted_by_metric.get(str(metric.get("id"))),
                )
            )
        elif kind.endswith(":DriftedColumnsCount"):
            count = {**(metric.get("value") or {}), "drift_share": config.get("drift_share")}
    summary = ""
    if count is not None:
        summary = (
            f"Evidently finds drift in {fmt(_int_if_whole(count.get('count')))} of {len(rows)} columns "
            f"(share {fmt(count.get('share'))}; the dataset counts as drifted from a share of "
            f"{fmt(count.get('drift_share'))})."
        )
    rows.sort(key=lambda r: (r[0] != feature, r[4] is not True, r[0]))
    body = []
    for column, method, score, threshold, drifted in rows:
        flag = {True: "yes", False: "no", None: "unknown"}[drifted]
        marker = ' <span class="marker">◀ the alert\'s feature</span>' if column == feature else ""
        cells = (
            f"<td>{_e(column)}{marker}</td><td>{_e(kinds.get(column, '?'))}</td><td>{_e(method)}</td>"
            f'<td class="num">{_e(fmt(score))}</td><td class="num">{_e(fmt(threshold))}</td>'
            f'<td class="drifted">{flag}</td>'
        )
        classes = " ".join(c for c in ("drifted" if drifted else "", "alert-feature" if marker else "") if c)
        body.append(f'<tr class="{classes}">{cells}</tr>' if classes else f"<tr>{cells}</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("column", "kind", "method", "drift score", "threshold", "drifted"))
    table = f'<table id="drift-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return table, f'<p class="drift-summary">{_e(summary)}</p>' if summary else ""


def _int_if_whole(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value
