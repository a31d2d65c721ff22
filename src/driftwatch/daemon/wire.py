"""Wire formats of what crosses Kafka between driftwatch's stages (msgpack; never pickle).

A summary message carries the partial summaries one ingest batch produced,
the source offsets it covers (for idempotent re-delivery) and the ingest
worker's watermark. An idle ingest worker sends the same message with no
partials as a heartbeat, so evaluation time keeps moving.
"""

from __future__ import annotations

import msgspec
import numpy as np

from driftwatch.core.summary import Partial, Sparse

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


class SummaryMsg(msgspec.Struct, frozen=True):
    """What one ingest batch sends to the evaluation stage."""

    worker: str
    watermark: float
    sources: dict[str, tuple[int, int]]
    partials: list[PartialMsg] = []
    final: bool = True  # a batch's partials for one model may span messages; the last is final


def to_msg(p: Partial) -> PartialMsg:
    """Partial -> wire (sparse: most cells of a tick's summary are zero)."""
    c = p.cells
    return PartialMsg(
        p.model_id,
        p.version,
        p.tick,
        list(p.keys),
        c.width,
        c.index.astype("<u4").tobytes(),
        c.values.astype("<i8").tobytes(),
    )


def from_msg(m: PartialMsg) -> Partial:
    """Wire -> Partial (kept sparse)."""
    cells = Sparse(
        len(m.keys),
        m.width,
        np.frombuffer(m.index, dtype="<u4"),
        np.frombuffer(m.values, dtype="<i8").copy(),  # a copy: a view would keep the whole message alive
    )
    return Partial(m.model_id, m.version, m.tick, tuple(m.keys), cells)  # msgspec decodes each key as a tuple


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(SummaryMsg)


def encode_summary(msg: SummaryMsg) -> bytes:
    """SummaryMsg -> bytes."""
    return _ENC.encode(msg)


def decode_summary(data: bytes) -> SummaryMsg:
    """bytes -> SummaryMsg (raises msgspec.DecodeError on garbage)."""
    return _DEC.decode(data)
