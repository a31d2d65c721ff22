"""A built report opened in a real browser (Debian's Chromium through playwright) shows its tables and Evidently's."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftwatch.reports import MetricValue, ReportRunner, ReportSpec, Sample, SampleColumns

# Every report test runs in one test process, so Evidently is imported once (by the shared worker).
pytestmark = pytest.mark.xdist_group("reports")

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_COPY = Path("/tmp/driftwatch-report.png")
"""Where a human finds the screenshot of the last run."""
ROWS = 300
BASE = {"model": "refund-approval", "version": "v3", "window": "300s"}
GROUPS = [("18-34", 0.712345, 0.671234, 0.750199, 512), ("65+", 0.412371, 0.357844, 0.469012, 301)]


def make_spec() -> ReportSpec:
    """A fairness alert on age_band (65+ approved less often) with message lengths tripled in the current sample."""
    rng = random.Random(5)

    def sample(scale: float) -> Sample:
        return Sample(
            {
                "message_length": [round(scale * rng.lognormvariate(4.5, 0.4)) for _ in range(ROWS)],
                "region": [rng.choice(["EU", "US", "APAC"]) for _ in range(ROWS)],
            }
        )

    metrics = [
        MetricValue("selection_rate", {**BASE, "attribute": "age_band", "slice": g}, v, n, lo, hi, "ok")
        for g, v, lo, hi, n in GROUPS
    ]
    metrics.append(
        MetricValue("disparate_impact_ratio", {**BASE, "attribute": "age_band"}, 0.5789, 813, 0.5, 0.66, "ok")
    )
    return ReportSpec(
        report_id="browser-1",
        title="Refund approvals for 65+ dropped",
        model="refund-approval",
        version="v3",
        window_seconds=300.0,
        window_end="2026-11-18T10:47:30.000Z",
        attribute="age_band",
        slice="65+",
        alert={
            "rule": "selection_rate_disparity",
            "state": "firing",
            "value": 0.5789,
            "n": 813,
            "interval": [0.5, 0.66],
            "window_seconds": 300.0,
            "event_time": "2026-11-18T10:47:30.000Z",
            "active_since": "2026-11-18T10:45:00.000Z",
            "severity": "critical",
            "evidence": {"low_group": "65+", "high_group": "18-34"},
            "annotations": {"runbook_url": "https://runbooks.example/refunds"},
        },
        columns=SampleColumns(numerical=("message_length",), categorical=("region",)),
        reference=sample(1.0),
        current=sample(3.0),
        metrics=metrics,
    )


@pytest.fixture
def chromium() -> Iterator[object]:
    """Debian's Chromium, headless, through playwright (which cannot download its own browsers here)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium (as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def test_report_renders_in_chromium(report_runner: ReportRunner, chromium: object, tmp_path: Path) -> None:
    """The drift table, the group table and Evidently's own report are visible; nothing is fetched from outside."""
    from playwright.sync_api import Browser, expect

    assert isinstance(chromium, Browser)
    path = tmp_path / "report.html"
    path.write_text(report_runner.build(make_spec()), encoding="utf-8")
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())

    drift_rows = page.locator("#drift-table tbody tr")
    expect(drift_rows).to_have_count(2)
    expect(drift_rows.nth(0)).to_contain_text("message_length")
    expect(drift_rows.nth(0).locator("td.drifted")).to_have_text("yes")
    expect(drift_rows.nth(1)).to_contain_text("region")
    expect(drift_rows.nth(1).locator("td.drifted")).to_have_text("no")

    groups = page.locator("#fairness table.groups tbody tr")
    expect(groups).to_have_count(2)
    expect(groups.nth(1)).to_be_visible()
    expect(groups.nth(1)).to_contain_text("65+")
    expect(groups.nth(1)).to_contain_text("0.4124")
    expect(groups.nth(1)).to_contain_text("[0.3578, 0.469]")
    expect(page.locator("#fairness .finding")).to_contain_text("Group 65+ of attribute age_band")
    expect(page.locator("#alert a[href='https://runbooks.example/refunds']")).to_be_visible()

    # Chromium renders an off-screen cross-origin frame lazily: bring Evidently's report into view.
    page.locator("#evidently").scroll_into_view_if_needed()
    evidently = page.frame_locator("#evidently")
    expect(evidently.get_by_text("Dataset Drift", exact=True).first).to_be_visible(timeout=30_000)
    expect(evidently.get_by_text("message_length").first).to_be_visible()
    # The frame grows to Evidently's height (the report posts it), so nothing is cut off.
    page.wait_for_function("document.getElementById('evidently').getBoundingClientRect().height > 910")

    # The page's Content-Security-Policy holds in Evidently's frame too: a connection attempt is refused there.
    frame = next(f for f in page.frames if f.url == "about:srcdoc")
    refused = frame.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation", (e) => resolve(e.effectiveDirective));
            fetch("https://evidently.invalid/track").catch(() => {});
        })"""
    )
    assert refused == "connect-src"

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "about:", "data:"))] == []
