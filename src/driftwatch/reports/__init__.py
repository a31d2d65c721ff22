"""Alert reports: what changed for an alert, as one standalone HTML document (docs/reports.md).

A :class:`ReportSpec` (plain data: the alert, the window's /metrics rows,
bounded samples of current and reference rows) goes to a
:class:`ReportRunner`, which builds the report in a worker process:
Evidently's drift report and driftwatch's alert and fairness sections
(:mod:`driftwatch.reports.builder`). Nothing here imports Evidently, pandas
or numpy in the caller's process::

    with ReportRunner(timeout=60) as runner:
        html = runner.build(spec)
"""

from __future__ import annotations

from driftwatch.reports.runner import ReportError, ReportRunner
from driftwatch.reports.spec import MetricValue, ReportSpec, Sample, SampleColumns, decode_spec, encode_spec

__all__ = [
    "MetricValue",
    "ReportError",
    "ReportRunner",
    "ReportSpec",
    "Sample",
    "SampleColumns",
    "decode_spec",
    "encode_spec",
]
