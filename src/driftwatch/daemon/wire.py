"""Wire formats of what crosses Kafka between driftwatch's stages (msgpack; never pickle).

A summary message carries the partial summaries one ingest batch produced,
the source offsets it covers (for idempotent re-delivery) and the ingest
worker's watermark. An idle ingest worker sends the same message with no
partials as a heartbeat, so evaluation time keeps moving.
"""

from __future__ import annotations

import msgspec

from driftwatch.core.sample import TickSample
from driftwatch.core.snapshot import Codec, sparse_bytes, sparse_of
from driftwatch.core.summary import Partial

__all__ = ["PartialMsg", "SummaryMsg", "decode_summary", "encode_summary", "from_msg", "to_msg"]


class PartialMsg(msgspec.Struct, array_like=True, frozen=True):
    """One partial summary, sparse: flat indices (uint32) and values (int64) of its non-zero counts."""

    model_id: str
    version: str
    tick: int
    keys: list[tuple[str, str]]
    width: int
    index: bytes
    values: bytes
    visible: int | None = None  # the tick whose close reveals these counts, when later than ``tick``
    # Sampled prediction rows for reports (driftwatch.core.sample): k, priorities, rows. Absent unless reports are on.
    sample: tuple[int, list[int], list[list[object]]] | None = None
    sample_joined: list[tuple[int, str, object]] = []  # what joined sampled rows: priority, kind, label value


class SummaryMsg(msgspec.Struct, frozen=True):
    """What one ingest batch sends to the evaluation stage."""

    worker: str
    watermark: float
    sources: dict[str, tuple[int, int]]
    partials: list[PartialMsg] = []
    final: bool = True  # a batch's partials for one model may span messages; the last is final


def to_msg(p: Partial) -> PartialMsg:
    """Partial -> wire (sparse: most cells of a tick's summary are zero; the checkpoints' encoding)."""
    visible = None if p.visible == p.tick else p.visible
    sample = None if p.sample is None else (p.sample.k, p.sample.priority, [list(r) for r in p.sample.rows])
    joined = [] if p.sample is None else list(p.sample.joined)
    return PartialMsg(
        p.model_id, p.version, p.tick, list(p.keys), p.cells.width, *sparse_bytes(p.cells), visible, sample, joined
    )


def from_msg(m: PartialMsg) -> Partial:
    """Wire -> Partial (kept sparse)."""
    cells = sparse_of(len(m.keys), m.width, m.index, m.values)
    sample = None
    if m.sample is not None:
        sample = TickSample(m.sample[0], m.sample[1], [tuple(r) for r in m.sample[2]], m.sample_joined)
    return Partial(m.model_id, m.version, m.tick, tuple(m.keys), cells, m.visible, sample)  # keys decode as tuples


_SUMMARY = Codec(SummaryMsg)
encode_summary = _SUMMARY.encode
"""SummaryMsg -> bytes."""
decode_summary = _SUMMARY.decode
"""bytes -> SummaryMsg (raises msgspec.DecodeError on garbage)."""
