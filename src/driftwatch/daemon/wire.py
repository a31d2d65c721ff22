"""Wire formats of what crosses Kafka between driftwatch's stages (msgpack; never pickle).

A summary message carries the partial summaries one ingest batch produced,
the source offsets it covers (for idempotent re-delivery) and the ingest
worker's watermark. An idle ingest worker sends the same message with no
partials as a heartbeat, so evaluation time keeps moving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from driftwatch.core.sample import TickSample
from driftwatch.core.snapshot import Codec, sparse_bytes, sparse_of
from driftwatch.core.summary import Partial

__all__ = ["PartialMsg", "SummaryMsg", "WireError", "decode_summary", "encode_summary", "from_msg", "to_msg", "to_msgs"]


class WireError(ValueError):
    """A summary message that decodes but does not hold together (a partial naming keys its message lacks)."""


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
    # >= 0: ``keys`` is empty and the slice keys are the first ``key_count`` of its message's table for ``version``.
    key_count: int = -1


Keys = list[tuple[str, str]]


class SummaryMsg(msgspec.Struct, frozen=True):
    """What one ingest batch sends to the evaluation stage."""

    worker: str
    watermark: float
    sources: dict[str, tuple[int, int]]
    partials: list[PartialMsg] = []
    final: bool = True  # a batch's partials for one model may span messages; the last is final
    # Slice keys per version, shared by the message's partials: every partial of a batch names (nearly) the same
    # slices, and a copy in each took ~280 KB per partial of a 1,700-slice layout, decoded.
    keys: dict[str, Keys] = {}


def to_msg(p: Partial) -> PartialMsg:
    """Partial -> wire, with its own slice keys (sparse: most cells of a tick's summary are zero; the checkpoints'
    encoding)."""
    return _msg(p, list(p.keys), -1)


def to_msgs(partials: Sequence[Partial]) -> tuple[dict[str, Keys], list[PartialMsg]]:
    """Partials -> wire, for one message: the slice key tables by version, and each partial naming a prefix of its
    version's table (or, where its keys are not one, its own)."""
    tables: dict[str, tuple[tuple[str, str], ...]] = {}
    for p in partials:
        if len(p.keys) > len(tables.get(p.version, ())):
            tables[p.version] = p.keys
    out = []
    for p in partials:
        n = len(p.keys)  # 0: a partial of sampled joins only (reports), which names no slice
        shared = n > 0 and tables[p.version][:n] == p.keys
        out.append(_msg(p, [], n) if shared else _msg(p, list(p.keys), -1))
    return {v: list(t) for v, t in tables.items()}, out


def _msg(p: Partial, keys: Keys, key_count: int) -> PartialMsg:
    visible = None if p.visible == p.tick else p.visible
    sample = None if p.sample is None else (p.sample.k, p.sample.priority, [list(r) for r in p.sample.rows])
    joined = [] if p.sample is None else list(p.sample.joined)
    return PartialMsg(
        p.model_id, p.version, p.tick, keys, p.cells.width, *sparse_bytes(p.cells), visible, sample, joined, key_count
    )


def from_msg(m: PartialMsg, tables: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> Partial:
    """Wire -> Partial (kept sparse); ``tables``: its message's slice key tables (:attr:`SummaryMsg.keys`)."""
    if m.key_count > 0:
        if tables is None or m.version not in tables or len(tables[m.version]) < m.key_count:
            raise WireError(f"a partial of {m.model_id}/{m.version} names slice keys its message does not carry")
        keys = tuple(tables[m.version][: m.key_count])  # tuples of the table: one copy of each key per message
    else:
        keys = tuple(m.keys)  # keys decode as tuples
    cells = sparse_of(len(keys), m.width, m.index, m.values)
    sample = None
    if m.sample is not None:
        sample = TickSample(m.sample[0], m.sample[1], [tuple(r) for r in m.sample[2]], m.sample_joined)
    return Partial(m.model_id, m.version, m.tick, keys, cells, m.visible, sample)


_SUMMARY = Codec(SummaryMsg)
encode_summary = _SUMMARY.encode
"""SummaryMsg -> bytes."""
decode_summary = _SUMMARY.decode
"""bytes -> SummaryMsg (raises msgspec.DecodeError on garbage)."""
