"""The worker's report service: built off the stream, failures and drops counted, kept for the retention only, and
the notifier's link dropped when a report failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftwatch.alerts.notifier import Notifier
from driftwatch.alerts.records import AlertRecord
from driftwatch.config import NotifyConfig, ReportsConfig
from driftwatch.daemon.reports import QUEUE, ReportService
from driftwatch.reports.spec import ReportSpec, Sample, SampleColumns

pytestmark = pytest.mark.xdist_group("reports")


def small(rid: str) -> ReportSpec:
    """A spec with too few rows for a drift table: built without Evidently, in a fraction of a second."""
    return ReportSpec(rid, f"report {rid}", "support-router", "v8", 300.0, "2026-11-18T10:47:30.000Z")


def broken(rid: str) -> ReportSpec:
    """A spec the builder refuses (text in a numerical column)."""
    rows = Sample({"x": ["not a number"] * 40})
    return ReportSpec(
        rid, "broken", "m", "v", 300.0, "2026-11-18T10:47:30.000Z",
        columns=SampleColumns(numerical=("x",)), reference=rows, current=rows, min_rows=1,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_built_failed_kept_and_expired(tmp_path: Path, clock: Clock) -> None:
    """A report is served once built (and written to the directory); a failing one is counted and marked failed;
    past the retention, or beyond max_reports, the oldest go, from memory and the directory."""
    cfg = ReportsConfig(enabled=True, retention=600.0, max_reports=2, directory=tmp_path / "r", timeout=60.0)
    svc = ReportService(cfg, clock=clock)
    try:
        assert svc.submit(small("aa01"))
        assert svc.submit(broken("bb02"))
        assert svc.wait("aa01", 60) == "ready"
        assert svc.wait("bb02", 60) == "failed"
        page = svc.get("aa01")
        assert page is not None
        assert b"report aa01" in page
        assert (tmp_path / "r" / "aa01.html").read_bytes() == page
        assert svc.get("bb02") is None
        assert (svc.built, svc.failed, svc.stored) == (1, 1, 1)
        assert svc.submit(small("aa01"))  # the same firing again (a restart re-evaluates it): built once
        for rid in ("cc03", "dd04"):
            svc.submit(small(rid))
            assert svc.wait(rid, 60) == "ready"
        assert svc.get("aa01") is None  # max_reports = 2: the oldest went
        assert not (tmp_path / "r" / "aa01.html").exists()
        assert svc.built == 3
        clock.now += 601
        assert svc.get("dd04") is None
        assert svc.stored == 0
        assert svc.expired == 3
        assert list((tmp_path / "r").iterdir()) == []
    finally:
        svc.close()
    assert not svc.submit(small("ee05"))  # closed


def test_a_burst_beyond_the_queue_is_dropped_and_counted(clock: Clock) -> None:
    """Submitting never blocks the stream: specs beyond the queue are dropped, counted."""
    svc = ReportService(ReportsConfig(enabled=True, timeout=60.0), clock=clock)
    try:
        accepted = [svc.submit(small(f"f{i:03d}")) for i in range(QUEUE + 10)]
        assert accepted.count(False) == svc.dropped
        # A submit that waited for room would never drop: dropping proves none waited for a build.
        assert svc.dropped >= 9  # the thread may have taken one off the queue already
    finally:
        svc.close()


def test_the_link_is_left_out_when_its_report_failed() -> None:
    """The notifier links the record's report unless this worker failed to build it (then no link at all)."""
    status = {"aa01": "ready", "bb02": "failed"}

    def record(rid: str) -> AlertRecord:
        return AlertRecord(
            rule="r", state="firing", labels={"alertname": "r", "model": "m"}, fingerprint="f" + rid,
            event_time="2026-11-18T10:47:30.000Z", active_since="2026-11-18T10:47:30.000Z",
            annotations={"report_url": f"https://dw.example/api/reports/{rid}"},
        )  # fmt: skip

    notifier = Notifier(NotifyConfig(), report_status=status.get)
    assert notifier._report_url(record("aa01")) == "https://dw.example/api/reports/aa01"
    assert notifier._report_url(record("bb02")) is None
    assert notifier._report_url(record("cc03")) == "https://dw.example/api/reports/cc03"  # another worker's
