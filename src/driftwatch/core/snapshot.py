"""Checkpoints of the evaluation state, as plain msgpack (never pickle; PROMISES 7).

A checkpoint holds, for a set of models, everything the
:class:`~driftwatch.core.evaluate.Evaluator` needs to continue as if it had never
stopped: each model x version's slice rows, open ticks, window buckets and
since-start totals (sparse integer matrices), the open alerts of the
lifecycle, and each detector's recent per-tick input series. River's
detectors are not serialised: they are rebuilt by feeding them their last
:data:`DETECTOR_HISTORY` values again, which reproduces them exactly when
the series is shorter than that and approximately after (documented in the
README's "State and restarts").
"""

from __future__ import annotations

import msgspec
import numpy as np

from driftwatch.core.summary import Matrix, Sparse

__all__ = [
    "DETECTOR_HISTORY",
    "DetectorState",
    "MatrixState",
    "ModelsState",
    "StreamState",
    "WindowState",
    "decode_state",
    "encode_state",
    "matrix_from",
    "matrix_to",
    "sparse_from",
    "sparse_to",
]

DETECTOR_HISTORY = 2000
"""Per-tick values kept per detector to rebuild it after a restart (2000 ticks of 10 s: 5.5 hours)."""


class MatrixState(msgspec.Struct, array_like=True, frozen=True):
    """An integer matrix, sparse: its shape, then flat indices (uint32) and values (int64) of non-zero cells."""

    rows: int
    width: int
    index: bytes
    values: bytes


class WindowState(msgspec.Struct, array_like=True, frozen=True):
    """One sliding window: its buckets (bucket id, counts) and running total."""

    length: int
    buckets: list[tuple[int, MatrixState]]
    total: MatrixState | None


class StreamState(msgspec.Struct, frozen=True):
    """One model x version: slice rows in order, open ticks, windows and since-start total."""

    model_id: str
    version: str
    keys: list[tuple[str, str]]
    open: list[tuple[int, MatrixState]]
    windows: list[WindowState]
    since: MatrixState | None


class DetectorState(msgspec.Struct, frozen=True):
    """One detector: its rule and labels, its recent input series and its last detection time."""

    rule: str
    labels: dict[str, str]
    series: list[float]
    detected_at: float | None


class ModelsState(msgspec.Struct, frozen=True):
    """The evaluation state of some models, as of the first tick not yet closed."""

    closed_before: int | None
    streams: list[StreamState]
    alerts: list[dict[str, object]]
    detectors: list[DetectorState]


def matrix_to(m: Matrix) -> MatrixState:
    """Matrix -> sparse state.

    >>> import numpy as np
    >>> m = np.array([[0, 2], [5, 0]], np.int64)
    >>> (matrix_from(matrix_to(m)) == m).all()
    np.True_
    """
    flat = m.ravel()
    nz = np.flatnonzero(flat)
    return MatrixState(int(m.shape[0]), int(m.shape[1]), nz.astype("<u4").tobytes(), flat[nz].astype("<i8").tobytes())


def matrix_from(s: MatrixState) -> Matrix:
    """Sparse state -> matrix."""
    out = np.zeros(s.rows * s.width, np.int64)
    out[np.frombuffer(s.index, dtype="<u4")] = np.frombuffer(s.values, dtype="<i8")
    return out.reshape(s.rows, s.width)


def sparse_to(m: Sparse) -> MatrixState:
    """Sparse matrix -> state (the same bytes as :func:`matrix_to` of its dense form)."""
    return MatrixState(m.rows, m.width, m.index.astype("<u4").tobytes(), m.values.astype("<i8").tobytes())


def sparse_from(s: MatrixState) -> Sparse:
    """State -> sparse matrix (never densified)."""
    return Sparse(s.rows, s.width, np.frombuffer(s.index, dtype="<u4"), np.frombuffer(s.values, dtype="<i8").copy())


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(ModelsState)


def encode_state(state: ModelsState) -> bytes:
    """ModelsState -> msgpack bytes."""
    return _ENC.encode(state)


def decode_state(data: bytes) -> ModelsState:
    """msgpack bytes -> ModelsState (raises msgspec.DecodeError on garbage)."""
    return _DEC.decode(data)
