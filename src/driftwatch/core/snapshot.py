"""Checkpoints of the evaluation state, as plain msgpack (never pickle; guarantee 7 in docs/guarantees.md),
zlib-compressed when written (:func:`encode_checkpoint`, :func:`decode_checkpoint`).

A checkpoint holds, for a set of models, everything the
:class:`~driftwatch.core.evaluate.Evaluator` needs to continue as if it had never
stopped: each model x version's slice rows, open ticks, window buckets and
since-start totals (sparse integer matrices), the open alerts of the
lifecycle, and each detector's recent per-tick input series. River's
detectors are not serialised: they are rebuilt by feeding them their last
:data:`DETECTOR_HISTORY` values again, which reproduces them exactly when
the series is shorter than that and approximately after (documented in the
README's "State and restarts").

The same two encodings serve every message driftwatch writes to Kafka
(:mod:`driftwatch.daemon.wire`, :mod:`driftwatch.daemon.recovery`): a
:class:`Codec` per msgpack struct type, and a sparse count matrix as the
bytes of its flat indices and values (:func:`sparse_bytes`, :func:`sparse_of`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Generic, TypeVar, cast

import msgspec
import numpy as np

from driftwatch.core.summary import Matrix, Sparse

__all__ = [
    "DETECTOR_HISTORY",
    "Codec",
    "DetectorState",
    "MatrixState",
    "ModelsState",
    "StreamState",
    "WindowState",
    "decode_checkpoint",
    "decode_state",
    "encode_checkpoint",
    "encode_state",
    "matrix_from",
    "matrix_to",
    "sparse_bytes",
    "sparse_from",
    "sparse_of",
    "sparse_to",
]

T = TypeVar("T")

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
    """One model x version: slice rows in order, open ticks, windows, since-start total, and the counts of earlier
    ticks waiting for a later tick to close (visible tick, tick, counts; empty in older checkpoints)."""

    model_id: str
    version: str
    keys: list[tuple[str, str]]
    open: list[tuple[int, MatrixState]]
    windows: list[WindowState]
    since: MatrixState | None
    deferred: list[tuple[int, int, MatrixState]] = []


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
    records: list[bytes] = []  # the latest alert record (JSON) of each open alert: what the API shows after a restore


class Codec(Generic[T]):
    """msgpack for one struct type (never pickle): :meth:`encode` it, :meth:`decode` bytes back."""

    def __init__(self, kind: type[T]) -> None:
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(kind)

    def encode(self, obj: T) -> bytes:
        """The struct -> msgpack bytes."""
        return self._enc.encode(obj)

    def decode(self, data: bytes) -> T:
        """msgpack bytes -> the struct (raises msgspec.DecodeError on garbage)."""
        return self._dec.decode(data)


def sparse_bytes(m: Sparse) -> tuple[bytes, bytes]:
    """A sparse matrix's flat indices (little-endian uint32) and values (int64) as buffers that msgpack encodes as
    bytes (memoryviews of the arrays where they already have that layout): how it is stored and sent.

    >>> m = Sparse(2, 2, np.array([1, 2]), np.array([2, 5]))
    >>> s = sparse_of(2, 2, *sparse_bytes(m))
    >>> (s.dense() == m.dense()).all()
    np.True_
    """
    # Views, not copies, where the arrays already have that layout (msgpack encodes a buffer as bytes): a checkpoint
    # of a wide worker is tens of MB, and copying each array first doubled its peak memory. Sparse arrays are never
    # changed in place, so a view stays valid while it is encoded.
    index = m.index.view("<u4") if m.index.dtype == np.dtype("<i4") else m.index.astype("<u4")
    values = np.ascontiguousarray(m.values.astype("<i8", copy=False))
    return cast(bytes, np.ascontiguousarray(index).data), cast(bytes, values.data)


def sparse_of(rows: int, width: int, index: bytes, values: bytes) -> Sparse:
    """The sparse matrix of :func:`sparse_bytes` (never densified; the values are copied, so no view keeps the
    whole message or checkpoint alive)."""
    return Sparse(rows, width, np.frombuffer(index, dtype="<u4"), np.frombuffer(values, dtype="<i8").copy())


def matrix_to(m: Matrix) -> MatrixState:
    """Matrix -> sparse state.

    >>> m = np.array([[0, 2], [5, 0]], np.int64)
    >>> (matrix_from(matrix_to(m)) == m).all()
    np.True_
    """
    return sparse_to(Sparse.from_dense(m))


def matrix_from(s: MatrixState) -> Matrix:
    """Sparse state -> matrix."""
    return sparse_from(s).dense()


def sparse_to(m: Sparse) -> MatrixState:
    """Sparse matrix -> state (the same bytes as :func:`matrix_to` of its dense form)."""
    return MatrixState(m.rows, m.width, *sparse_bytes(m))


def sparse_from(s: MatrixState) -> Sparse:
    """State -> sparse matrix (never densified)."""
    return sparse_of(s.rows, s.width, s.index, s.values)


_STATE = Codec(ModelsState)
encode_state = _STATE.encode
"""ModelsState -> msgpack bytes."""
decode_state = _STATE.decode
"""msgpack bytes -> ModelsState (raises msgspec.DecodeError on garbage)."""


_STREAM_ENC = msgspec.msgpack.Encoder()
_STREAMS_KEY = b"\xa7streams"  # msgpack of the field name, then its array


def encode_checkpoint(shell: ModelsState, count: int, streams: Iterable[StreamState]) -> tuple[bytes, int]:
    """A checkpoint as written, encoded and compressed stream by stream: ``shell`` (a ModelsState whose streams are
    empty) with the ``count`` ``streams`` in its place, so the plain msgpack of a wide state (tens of MB) never
    exists whole. zlib at level 1: a 1,677-slice worker's 25 MB state becomes ~6 MB in ~0.2 s of CPU (sparse counts
    compress well), so the eval-state topic and the chunks a worker holds while sending are a quarter of the size.
    Returns the compressed bytes and the plain size; decompressed, the bytes equal :func:`encode_state` of the
    whole state (tested).

    >>> shell = ModelsState(7, [], [], [])
    >>> blob, size = encode_checkpoint(shell, 0, [])
    >>> decode_checkpoint(blob) == shell, size == len(encode_state(shell))
    (True, True)
    """
    plain = encode_state(shell)
    at = plain.find(_STREAMS_KEY + b"\x90")
    if shell.streams or at < 0:
        raise ValueError("the shell of a checkpoint has no streams of its own")
    at += len(_STREAMS_KEY)
    if count < 16:
        header = bytes([0x90 | count])
    elif count < 1 << 16:
        header = b"\xdc" + count.to_bytes(2, "big")
    else:
        header = b"\xdd" + count.to_bytes(4, "big")
    z = zlib.compressobj(1)
    parts = [z.compress(plain[:at]), z.compress(header)]
    size = at + len(header)
    n = 0
    for stream in streams:
        piece = _STREAM_ENC.encode(stream)
        size += len(piece)
        parts.append(z.compress(piece))
        n += 1
    if n != count:
        raise ValueError(f"{n} streams given, {count} announced")
    parts += [z.compress(plain[at + 1 :]), z.flush()]
    return b"".join(parts), size + len(plain) - at - 1


def decode_checkpoint(blob: bytes) -> ModelsState:
    """A checkpoint's bytes -> ModelsState: compressed (:func:`encode_checkpoint`) or plain msgpack, as checkpoints
    written before they were compressed are. Raises msgspec.DecodeError on garbage.

    >>> decode_checkpoint(b"x-garbage")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    msgspec.DecodeError: checkpoint: not a zlib stream (...)
    """
    # A zlib stream starts with 0x78; msgpack of a ModelsState (a map) with 0x80-0x8f or 0xde, never 0x78.
    if blob[:1] == b"\x78":
        try:
            blob = zlib.decompress(blob)
        except zlib.error as e:
            raise msgspec.DecodeError(f"checkpoint: not a zlib stream ({e})") from e
    return decode_state(blob)
