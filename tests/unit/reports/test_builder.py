"""The report builder: Evidently's drift table, fairness numbers exactly as /metrics gave them, escaping, fallbacks.

Reports that need Evidently are built by a real worker (one per test process, shared with the other report tests);
the tests of the fallbacks call the builder in this process with Evidently and pandas made unimportable.
"""

from __future__ import annotations

import json
import random
import sys
from html.parser import HTMLParser

import pytest

from driftwatch.reports import MetricValue, ReportRunner, ReportSpec, Sample, SampleColumns
from driftwatch.reports.builder import build_html

# Every report test runs in one test process, so Evidently is imported once (by the shared worker).
pytestmark = pytest.mark.xdist_group("reports")

ROWS = 300
ESCAPE_PROBE = "<script>alert(1)</script>"
BASE = {"model": "refund-approval", "version": "v3", "window": "300s"}

# (group, selection rate, lo, hi, n): values with more digits than a report shows, so the format rule is tested.
GROUPS = [
    ("18-34", 0.712345, 0.671234, 0.750199, 512),
    ("35-64", 0.698712, 0.656123, 0.738066, 488),
    ("65+", 0.412371, 0.357844, 0.469012, 301),
    (ESCAPE_PROBE, 0.666666, 0.55, 0.76, 80),
]
COMPARISONS = [
    ("disparate_impact_ratio", 0.578911, 0.500123, 0.661234, 1381),
    ("statistical_parity_difference", -0.299974, -0.361234, -0.240011, 1381),
]


def four(value: float) -> str:
    """The report's number format, written independently: four significant digits."""
    return f"{value:.4g}"


def samples(seed: int, rows: int = ROWS) -> tuple[Sample, Sample]:
    """(reference, current): message_length triples in the current sample, region keeps its distribution."""
    rng = random.Random(seed)
    regions = ["EU", "US", "APAC"]

    def sample(scale: float) -> Sample:
        return Sample(
            {
                "message_length": [round(scale * rng.lognormvariate(4.5, 0.4)) for _ in range(rows)],
                "region": [rng.choice(regions) for _ in range(rows)],
                ESCAPE_PROBE: [rng.choice("ab") for _ in range(rows)],
                "empty": [None] * rows,
            }
        )

    return sample(1.0), sample(3.0)


def metric(name: str, value: float | None, lo: float | None, hi: float | None, n: int, **labels: str) -> MetricValue:
    return MetricValue(name, {**BASE, **labels}, value, n, lo, hi, "ok" if value is not None else "insufficient")


def make_spec(
    alert: dict[str, object] | None = None, rows: int = ROWS, reference_rows: int | None = None
) -> ReportSpec:
    """A fairness alert on age_band (group 65+ approved far less often) with drifting message lengths."""
    reference, current = samples(7, rows)
    if reference_rows is not None:
        reference = Sample({k: v[:reference_rows] for k, v in reference.columns.items()})
    metrics = [metric("selection_rate", 0.69, 0.66, 0.72, 1381, attribute="*", slice="*")]
    metrics += [metric("selection_rate", v, lo, hi, n, attribute="age_band", slice=g) for g, v, lo, hi, n in GROUPS]
    metrics += [
        metric("tpr", 0.812345, 0.75, 0.86, 211, attribute="age_band", slice="18-34"),
        metric("tpr", 0.55, 0.45, 0.65, 98, attribute="age_band", slice="65+"),
        metric("psi", 0.41, 0.3, 0.5, 300, attribute="region", slice="EU", feature="message_length"),
        metric("selection_rate", 0.7, 0.65, 0.75, 300, attribute="region", slice="EU"),
    ]
    metrics += [metric(name, v, lo, hi, n, attribute="age_band") for name, v, lo, hi, n in COMPARISONS]
    metrics.append(metric("equal_opportunity_difference", None, None, None, 0, attribute="age_band"))
    if alert is None:
        alert = {
            "rule": "selection_rate_disparity",
            "state": "firing",
            "labels": {"alertname": "selection_rate_disparity", "model": "refund-approval", "attribute": "age_band"},
            "value": 0.578911,
            "n": 1381,
            "interval": [0.500123, 0.661234],
            "window_seconds": 300.0,
            "event_time": "2026-11-18T10:47:30.000Z",
            "active_since": "2026-11-18T10:45:00.000Z",
            "severity": "critical",
            "evidence": {
                "window_seconds": 300.0,
                "low_group": "65+",
                "high_group": "18-34",
                "groups": {"65+": {"rate": 0.41, "n": 301}},
                "contributors": [{"attribute": "channel", "slice": "chat", "value": 0.14, "n": 730, "share": 0.5}],
            },
            "annotations": {"summary": "Selection rates differ by age band", "runbook_url": "javascript:alert(2)"},
        }
    return ReportSpec(
        report_id="rep-1",
        title=f"Refund approvals {ESCAPE_PROBE}",
        model="refund-approval",
        version="v3",
        window_seconds=300.0,
        window_end="2026-11-18T10:47:30.000Z",
        attribute="age_band",
        slice=None,
        alert=alert,
        columns=SampleColumns(numerical=("message_length", "empty"), categorical=("region", ESCAPE_PROBE)),
        reference=reference,
        current=current,
        metrics=metrics,
    )


class Page(HTMLParser):
    """Tables (by id, or class + data-attribute) as rows of cell texts and row classes; elements' attributes."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self.by_id: dict[str, dict[str, str]] = {}
        self.links: list[str] = []
        self.paragraphs: dict[str, str] = {}
        self._table: str | None = None
        self._row: tuple[str, list[str]] | None = None
        self._cell: list[str] | None = None
        self._para: tuple[str, list[str]] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.by_id[a["id"]] = a
        if tag == "a":
            self.links.append(a.get("href", ""))
        if tag == "table":
            key = a.get("id") or f"{a.get('class', '')}:{a.get('data-attribute', '')}"
            self._table = key
            self.tables[key] = []
        elif tag == "tr" and self._table is not None:
            self._row = (a.get("class", ""), [])
        elif tag in {"td", "th"} and self._row is not None:
            self._cell = []
        elif tag == "p":
            self._para = (a.get("id") or a.get("class", ""), [])

    def handle_endtag(self, tag: str) -> None:
        if tag in {"td", "th"} and self._cell is not None and self._row is not None:
            self._row[1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "p" and self._para is not None:
            self.paragraphs[self._para[0]] = "".join(self._para[1])
            self._para = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._para is not None:
            self._para[1].append(data)

    def body_rows(self, key: str) -> list[tuple[str, list[str]]]:
        """The rows of table ``key`` below its header row."""
        return self.tables[key][1:]


@pytest.fixture(scope="module")
def report(report_runner: ReportRunner) -> str:
    """The report of :func:`make_spec`, built by the real worker (Evidently included)."""
    return report_runner.build(make_spec())


@pytest.fixture(scope="module")
def page(report: str) -> Page:
    """That report, parsed."""
    return Page(report)


@pytest.fixture
def no_evidently(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evidently and pandas cannot be imported in this process for the test (an import of them raises)."""
    monkeypatch.setitem(sys.modules, "evidently", None)
    monkeypatch.setitem(sys.modules, "pandas", None)


def test_drift_table_lists_the_drifted_column_first(page: Page) -> None:
    """Evidently flags message_length (tripled) as drifted and region (unchanged) as not; drifted columns lead."""
    rows = {cells[0]: (cls, cells) for cls, cells in page.body_rows("drift-table")}
    assert rows["message_length"][1][5] == "yes"
    assert "drifted" in rows["message_length"][0]
    assert rows["region"][1][5] == "no"
    assert rows["message_length"][1][2] == "K-S p_value"
    assert float(rows["message_length"][1][3]) < 0.05 <= float(rows["region"][1][3])
    assert next(iter(rows)) == "message_length"
    drifted = sum(cells[5] == "yes" for _, cells in rows.values())
    summary = page.paragraphs["drift-summary"]
    assert summary.startswith(f"Evidently finds drift in {drifted} of {len(rows)} columns"), summary


def test_drift_table_puts_the_alerts_feature_first(report_runner: ReportRunner) -> None:
    """The feature the alert is about comes first in the drift table, drifted or not."""
    spec = make_spec()
    assert spec.alert is not None
    spec.alert["labels"] = {"alertname": "feature_drift_psi", "feature": "region"}
    rows = Page(report_runner.build(spec)).body_rows("drift-table")
    assert [cells[0].split(" ◀")[0] for _, cells in rows[:2]] == ["region", "message_length"]
    assert "alert-feature" in rows[0][0]
    assert rows[0][1][5] == "no"


def test_columns_without_values_are_left_out_and_named(page: Page) -> None:
    """A column that is entirely missing in a sample is not compared, and the report says which."""
    assert "empty" not in [cells[0] for _, cells in page.body_rows("drift-table")]
    assert page.paragraphs["drift-dropped"].endswith(": empty.")


def test_evidently_report_is_embedded(page: Page) -> None:
    """Evidently's own report is embedded as a sandboxed srcdoc frame that runs Evidently's dashboard."""
    frame = page.by_id["evidently"]
    assert frame["sandbox"] == "allow-scripts"
    assert "window.drawDashboard(" in frame["srcdoc"]
    assert "message_length" in frame["srcdoc"]


def test_fairness_groups_show_the_metrics_values(page: Page) -> None:
    """Each group's selection rate, interval and n appear exactly as given, in the report's number format."""
    rows = {cells[0].split(" ◀")[0]: cells for _, cells in page.body_rows("groups:age_band")}
    for group, value, lo, hi, n in GROUPS:
        assert rows[group][1:4] == [four(value), f"[{four(lo)}, {four(hi)}]", str(n)], group
    assert rows["18-34"][4] == f"{four(0.812345)} [0.75, 0.86], n=211"
    assert rows["35-64"][4] == "–"
    assert "*" not in rows
    comparisons = {cells[0]: cells for _, cells in page.body_rows("comparisons:age_band")}
    for name, value, lo, hi, n in COMPARISONS:
        assert comparisons[name][1:5] == [four(value), f"[{four(lo)}, {four(hi)}]", str(n), "ok"], name
    assert comparisons["equal_opportunity_difference"][1] == "insufficient (n=0)"
    assert list(comparisons)[:2] == ["disparate_impact_ratio", "statistical_parity_difference"]


def test_names_and_highlights_the_harmed_group(page: Page) -> None:
    """The alert's group (the evidence's low_group) is highlighted and named in a sentence with its numbers."""
    highlighted = [cells[0] for cls, cells in page.body_rows("groups:age_band") if cls == "alert-group"]
    assert len(highlighted) == 1
    assert highlighted[0].startswith("65+")
    finding = page.paragraphs["finding"]
    assert finding.startswith("Group 65+ of attribute age_band ")
    assert f"selection rate {four(0.412371)} [{four(0.357844)}, {four(0.469012)}] (n=301)" in finding
    assert "lowest" in finding


def test_alert_section_shows_record_and_evidence(page: Page) -> None:
    """The alert's fields, its evidence (nested values as compact JSON) and its contributors are shown."""
    alert = {cells[0]: cells[1] for _, cells in page.tables["kv alert:"]}
    assert alert["Rule"] == "selection_rate_disparity"
    assert alert["95% interval"] == f"[{four(0.500123)}, {four(0.661234)}]"
    evidence = {cells[0]: cells[1] for _, cells in page.body_rows("evidence")}
    assert evidence["low_group"] == "65+"
    assert evidence["groups"] == '{"65+":{"n":301,"rate":0.41}}'
    assert "contributors" not in evidence
    assert page.body_rows("contributors:") == [("", ["channel", "chat", "0.14", "730", "0.5"])]


def test_spec_strings_are_escaped(report: str, page: Page) -> None:
    """A title, group or column named like markup is shown as text, here and in Evidently's frame."""
    assert ESCAPE_PROBE not in report
    assert "<h1>Refund approvals &lt;script&gt;alert(1)&lt;/script&gt;</h1>" in report
    assert ESCAPE_PROBE in [cells[0].split(" ◀")[0] for _, cells in page.body_rows("groups:age_band")]
    assert ESCAPE_PROBE in [cells[0] for _, cells in page.body_rows("drift-table")]
    # Evidently writes names into a script of its page unescaped: what it got carries no "<".
    srcdoc = page.by_id["evidently"]["srcdoc"]
    assert ESCAPE_PROBE not in srcdoc
    safe = ESCAPE_PROBE.replace("<", "\u2039")
    assert safe in srcdoc or json.dumps(safe)[1:-1] in srcdoc


def test_runbook_link_only_for_web_urls(no_evidently: None) -> None:
    """A ``javascript:`` runbook URL is shown as text, never a link; an https one is a link."""
    spec = make_spec(rows=5)
    page = Page(build_html(spec))
    assert not any(href.lower().startswith("javascript") for href in page.links)
    assert page.paragraphs["runbook"].startswith("Runbook: javascript:alert(2)")
    assert spec.alert is not None
    spec.alert["annotations"] = {"runbook_url": "https://runbooks.example/refunds#disparity"}
    assert "https://runbooks.example/refunds#disparity" in Page(build_html(spec)).links


def test_too_few_rows_says_so_without_evidently(no_evidently: None) -> None:
    """Below ``min_rows`` the drift section gives the counts and never reaches for Evidently (or raises)."""
    spec = make_spec(rows=40, reference_rows=12)
    page = Page(build_html(spec))
    assert page.paragraphs["drift-too-few"] == (
        "Too few rows for a drift comparison: 40 current and 12 reference rows; at least 30 of each are needed."
    )
    assert "evidently-missing" not in page.by_id
    assert "drift-table" not in page.tables
    assert "groups:age_band" in page.tables


def test_without_evidently_the_rest_renders(no_evidently: None) -> None:
    """Without Evidently the drift section says how to install it, and the alert and fairness sections are whole."""
    page = Page(build_html(make_spec()))
    assert "pip install 'driftwatch[reports]'" in page.paragraphs["evidently-missing"]
    assert {"alert", "fairness", "drift"} <= set(page.by_id)
    assert len(page.body_rows("groups:age_band")) == len(GROUPS)
