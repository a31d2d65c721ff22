"""Every scenario replayed with reports on: each firing drift, fairness or complaint alert gets an HTML report that
names what changed (the drifted feature, the harmed group) and shows the numbers /metrics shows for that window."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from driftwatch.alerts.engine import AlertTransition
from driftwatch.config import Config, load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.daemon.metrics import SLICE_FAMILIES, registry_for
from driftwatch.metrics.registry import DRIFT_METRICS
from driftwatch.reports.assemble import spec_of_alert
from driftwatch.reports.builder import fmt
from driftwatch.reports.runner import ReportRunner
from driftwatch.reports.spec import MetricValue, ReportSpec
from driftwatch.simulate import generate

pytestmark = pytest.mark.xdist_group("reports")

SCENARIOS = ("feature-drift", "bias", "complaint-spike", "label-shift")
EVENTS = 40_000
SEED = 1
Key = tuple[str, frozenset[tuple[str, str]]]


class _Fired(msgspec.Struct):
    transition: AlertTransition
    spec: ReportSpec
    scraped: dict[Key, float]  # /metrics of the alert's window at the tick it fired


def _scrape(registry: CollectorRegistry) -> dict[Key, float]:
    return {(s.name, frozenset(s.labels.items())): s.value for fam in registry.collect() for s in fam.samples}


def _replay(scenario: str, cfg: Config, key: bytes, batch: int = 5_000) -> list[_Fired]:
    enc = msgspec.json.Encoder()
    raws = [enc.encode(e) for e in generate(scenario, events=EVENTS, seed=SEED)[0]]
    p = Pipeline(cfg, key)
    fired: list[_Fired] = []

    def on_tick(_end: float, transitions: list[AlertTransition]) -> None:
        for t in transitions:
            spec = spec_of_alert(p.evaluator, t)
            if spec is not None:
                scraped = _scrape(registry_for(p, window=t.window, max_series=100_000))
                fired.append(_Fired(t, spec, scraped))

    p.evaluator.on_tick = on_tick
    for i in range(0, len(raws), batch):
        p.process(raws[i : i + batch])
    p.flush()
    return fired


_REPLAYED: dict[str, list[_Fired]] = {}


def _replayed(scenario: str, cfg: Config, key: bytes) -> list[_Fired]:
    """:func:`_replay` in batches of 5,000, once per test process."""
    if scenario not in _REPLAYED:
        _REPLAYED[scenario] = _replay(scenario, cfg, key)
    return _REPLAYED[scenario]


class _Tables(HTMLParser):
    """Rows of every table by its class (cells as text), and the text of each section by id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.sections: dict[str, str] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._section: str | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = f"{a.get('class') or ''}#{a.get('id') or ''}#{a.get('data-attribute') or ''}"
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag in ("section", "header") and a.get("id"):
            self._section = a["id"]
            self.sections.setdefault(self._section, "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag in ("section", "header"):
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._section is not None:
            self.sections[self._section] += data


def _parse(page: str) -> _Tables:
    t = _Tables()
    t.feed(page)
    return t


def _metrics_value(scraped: dict[Key, float], row: MetricValue) -> float | None:
    family, quantile = SLICE_FAMILIES[row.name]
    labels = {
        k: row.labels[k] for k in ("model", "version", "attribute", "slice", "window", "feature") if k in row.labels
    }
    if quantile is not None:
        labels["quantile"] = quantile
    return scraped.get((family, frozenset(labels.items())))


def _table(tables: _Tables, cls: str, attribute: str) -> list[list[str]]:
    found = [rows for k, rows in tables.tables.items() if k.split("#")[0] == cls and k.split("#")[2] == attribute]
    assert found, f"no {cls} table for {attribute}"
    return found[0]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_firing_alert_has_a_report_of_what_changed(
    scenario: str, pseudonym_key: bytes, example_config: Path, report_runner: ReportRunner, tmp_path: Path
) -> None:
    """Replayed with reports on, each firing drift, fairness or complaint alert's report is written as HTML; it names
    the drifted feature or the harmed group by its display name; its fairness and alert numbers are the /metrics
    values of the alert's window at the tick it fired."""
    cfg = load_config(example_config)
    cfg = cfg.model_copy(update={"reports": cfg.reports.model_copy(update={"enabled": True})})
    fired = _replayed(scenario, cfg, pseudonym_key)
    assert fired, f"{scenario}: no firing alert got a report"
    for f in fired:
        t, spec = f.transition, f.spec
        page = report_runner.build(spec)
        path = tmp_path / f"{spec.report_id}.html"
        path.write_text(page, encoding="utf-8")
        assert path.stat().st_size > 0
        parsed = _parse(page)
        where = f"{scenario} {t.rule} {t.labels}"
        # The alert's own value, as /metrics shows it for its slice and window.
        metric = next(r for r in cfg.rules if r.name == t.rule).metric
        alert_row = next(
            (m for m in spec.metrics if m.name == metric and _same_slice(m, t)),
            None,
        )
        assert alert_row is not None, where
        scraped = _metrics_value(f.scraped, alert_row)
        assert scraped == alert_row.value, where
        if scraped is not None:
            assert fmt(scraped) in parsed.sections["alert"], where
        if metric in DRIFT_METRICS:
            feature = t.labels["feature"]
            drift_rows = parsed.tables.get("#drift-table#", [])
            assert any(row and row[0].startswith(feature) for row in drift_rows), where
            assert feature in parsed.sections["alert"]
        attribute = t.labels.get("attribute")
        group = t.labels.get("slice") or t.evidence.get("group") or t.evidence.get("low_group")
        if attribute is not None and attribute in cfg.protected:
            assert isinstance(group, str), where
            assert group in parsed.sections["fairness"], where
            rows = _table(parsed, "groups", attribute)
            shown = {r[0].split(" ")[0]: r for r in rows[1:]}
            assert group in shown, (where, sorted(shown))
            for m in spec.metrics:
                if m.name == "selection_rate" and m.labels.get("attribute") == attribute and m.value is not None:
                    name = m.labels["slice"]
                    if name not in shown:
                        continue
                    assert _metrics_value(f.scraped, m) == m.value, (where, m)
                    assert shown[name][1] == fmt(m.value), (where, name, shown[name])
                    assert shown[name][3] == str(m.n), (where, name, shown[name])
            comparisons = {r[0]: r for r in _table(parsed, "comparisons", attribute)[1:]}
            for m in spec.metrics:
                if (
                    m.name in ("disparate_impact_ratio", "statistical_parity_difference")
                    and m.labels.get("attribute") == attribute
                    and "slice" not in m.labels
                ):
                    assert _metrics_value(f.scraped, m) == m.value, (where, m)
                    row = next(r for k, r in comparisons.items() if k.startswith(m.name))
                    assert (fmt(m.value) if m.value is not None else "insufficient") in " ".join(row), (where, row)


def _same_slice(m: MetricValue, t: AlertTransition) -> bool:
    """Whether metric row ``m`` is the one alert ``t`` judged: same model, version, attribute, slice and feature."""
    keys = ("model", "version", "feature")
    if any(m.labels.get(k) != t.labels.get(k) for k in keys):
        return False
    attr = t.labels.get("attribute")
    if attr is None:
        return m.labels.get("attribute") == "*" and m.labels.get("slice") == "*"
    if "slice" in t.labels:
        return m.labels.get("attribute") == attr and m.labels.get("slice") == t.labels["slice"]
    return m.labels.get("attribute") == attr and "slice" not in m.labels


def test_report_ids_are_stable_and_never_name_a_person(pseudonym_key: bytes, example_config: Path) -> None:
    """The same events in other batches give the same report ids; no sampled value is a request or event id; the sensitive age band
    is only ever a name the config allows to be shown (display_values) or __other__, never a token a report invents."""
    cfg = load_config(example_config)
    cfg = cfg.model_copy(update={"reports": cfg.reports.model_copy(update={"enabled": True})})
    a, b = _replayed("bias", cfg, pseudonym_key), _replay("bias", cfg, pseudonym_key, batch=1_777)
    assert a
    assert [f.spec.report_id for f in a] == [f.spec.report_id for f in b]
    ids = re.compile(r"^[prcel]-[0-9-]+$|^r-\d+-\d+$")  # the generator's event and request ids
    allowed = {*cfg.attributes["age_band"].display_values, "__other__", None}
    for f in a:
        for column, values in f.spec.current.columns.items():
            for v in values:
                assert not (isinstance(v, str) and ids.match(v)), (column, v)
        assert set(f.spec.current.columns["age_band"]) <= allowed
