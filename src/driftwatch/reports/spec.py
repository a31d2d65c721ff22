"""What a report is built from: a plain, picklable spec (msgspec Structs; no pandas, no numpy).

Whoever asks for a report fills a :class:`ReportSpec` from driftwatch's own
state (the /metrics rows of one window, the alert record, bounded samples of
current and reference rows); :func:`~driftwatch.reports.builder.build_html`
renders it, in a worker process (:class:`~driftwatch.reports.runner.ReportRunner`).
Specs cross the process boundary, and can be written to files, as
:func:`encode_spec` JSON bytes.

>>> spec = ReportSpec("r1", "Drift", "support-router", "v8", 300.0, "2026-11-18T10:47:30.000Z",
...                   columns=SampleColumns(numerical=("message_length",)),
...                   current=Sample({"message_length": [120, None, 95.5]}))
>>> spec.current.rows, spec.reference.rows
(3, 0)
>>> decode_spec(encode_spec(spec)) == spec
True
"""

from __future__ import annotations

import msgspec

__all__ = ["MetricValue", "ReportSpec", "Sample", "SampleColumns", "decode_spec", "encode_spec"]


class SampleColumns(msgspec.Struct, frozen=True):
    """The columns the drift table compares, by kind (Evidently picks a test per kind)."""

    numerical: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()


class Sample(msgspec.Struct):
    """Rows in columns: every list the same length; None is missing. Column names are those of SampleColumns plus
    any others (ignored by the drift table unless listed in SampleColumns)."""

    columns: dict[str, list[float | int | str | None]] = {}

    def __post_init__(self) -> None:
        lengths = {len(values) for values in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"sample columns differ in length: {sorted(lengths)}")

    @property
    def rows(self) -> int:
        """The number of rows (the length of every list; 0 without columns)."""
        for values in self.columns.values():
            return len(values)
        return 0


class MetricValue(msgspec.Struct, frozen=True):
    """One value exactly as /metrics shows it (driftwatch.core.report.MetricRow)."""

    name: str  # e.g. selection_rate, disparate_impact_ratio, statistical_parity_difference, tpr, fpr, psi, …
    labels: dict[str, str]  # model, version, window, attribute, slice (group display name), feature (drift)
    value: float | None
    n: int
    lo: float | None
    hi: float | None
    status: str  # ok | insufficient | provisional


class ReportSpec(msgspec.Struct):
    """Everything one report shows: the alert, the window's metric rows and the two samples for the drift table."""

    report_id: str
    title: str
    model: str
    version: str
    window_seconds: float
    window_end: str  # RFC 3339
    attribute: str | None = None  # the alert's slice attribute, if any
    slice: str | None = None  # its value (display name)
    # The alert record as JSON: rule, state, value, n, interval [lo, hi], window_seconds, event_time, active_since,
    # severity, evidence {...}, annotations {summary, runbook_url, ...}.
    alert: dict[str, object] | None = None
    columns: SampleColumns = SampleColumns()
    reference: Sample = msgspec.field(default_factory=Sample)  # a mutable Struct needs a factory (msgspec)
    current: Sample = msgspec.field(default_factory=Sample)
    metrics: list[MetricValue] = []  # every row of that window for this model x version
    min_rows: int = 30


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(ReportSpec)


def encode_spec(spec: ReportSpec) -> bytes:
    """The spec as JSON bytes (what crosses into the worker process; fit for a file)."""
    return _ENCODER.encode(spec)


def decode_spec(data: bytes | bytearray | memoryview | str) -> ReportSpec:
    """A spec from :func:`encode_spec` bytes; ``msgspec.ValidationError`` says which field is wrong."""
    return _DECODER.decode(data)
