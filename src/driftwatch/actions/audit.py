"""The append-only, hash-chained audit trail of alerts, deliveries and action decisions.

See guarantees 21 and 29 in docs/guarantees.md.

Each line of the file is one JSON record in canonical form (sorted keys, no
spaces, UTF-8). ``prev`` is the ``hash`` of the line before (64 zeros for the
first), and ``hash`` is the SHA-256 of the canonical JSON of the record
without ``hash``; so an edit, a deletion, an insertion or a reordering breaks
the chain at the first record it touches, and :func:`verify` names it.

What a chain alone cannot show: records cut off at the *end* of the file.
Compare the last ``seq``/``hash`` with the copy mirrored to the audit topic
(the ``sink``) to detect that.

Secrets never belong in a record: the log does not redact, its callers never
pass them (guarantee 23 in docs/guarantees.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from driftwatch._time import rfc3339
from driftwatch.errors import DriftwatchError

__all__ = [
    "GENESIS",
    "AuditError",
    "AuditLog",
    "AuditReport",
    "canonical_json",
    "read_records",
    "record_hash",
    "rfc3339",
    "verify",
]

GENESIS = "0" * 64
"""The ``prev`` of the first record of a file."""

_BASE_FIELDS = ("kind", "actor", "rule", "labels", "evidence", "inputs", "outcome")
# Bounds the backwards scan for the last line; a record is far smaller than this.
_MAX_TAIL = 16 * 1024 * 1024


class AuditError(DriftwatchError, OSError):
    """The audit trail cannot be written or read; whatever was about to be audited must not happen."""


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of :func:`verify`: whether the chain is intact and, if not, the first broken line and why."""

    ok: bool
    records: int
    first_bad_line: int | None = None
    reason: str | None = None


def _clean(value: object) -> object:
    """A JSON-ready copy: mappings with str keys, sequences as lists, non-finite floats as null."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    raise TypeError(f"audit records hold JSON values only, not {type(value).__name__}")


def canonical_json(record: Mapping[str, object]) -> bytes:
    """The canonical JSON of a record: sorted keys, no spaces, UTF-8, no NaN.

    >>> canonical_json({"b": 1, "a": [1.5, None]})
    b'{"a":[1.5,null],"b":1}'
    """
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record_hash(record: Mapping[str, object]) -> str:
    """SHA-256 hex of the canonical JSON of ``record`` without its ``hash`` field."""
    return hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != "hash"})).hexdigest()


class AuditLog:
    """Append-only JSON Lines file with a hash chain; every append is flushed and fsync'd before it returns.

    Thread-safe. Reopening an existing file continues its chain from the last
    line; a last line that is cut off or altered is refused with
    :class:`AuditError` (run ``driftwatch audit verify`` and move the file
    aside). ``sink`` receives each record's bytes (the line without its
    newline) for the audit Kafka topic, in chain order and under the lock, so
    it should only enqueue; a failing sink is counted in ``sink_errors``,
    never raised, because the file is the record of truth.
    """

    def __init__(
        self,
        path: Path,
        sink: Callable[[bytes], None] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.sink = sink
        self.sink_errors = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._seq, self._prev = _last_link(self.path)
        try:
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as e:
            raise AuditError(f"audit file {self.path}: cannot open for appending: {e.strerror or e}") from e
        if created:
            _fsync_dir(self.path.parent)

    @property
    def seq(self) -> int:
        """The ``seq`` of the last record written (0 for an empty file)."""
        return self._seq

    @property
    def last_hash(self) -> str:
        """The ``hash`` of the last record written (``GENESIS`` for an empty file)."""
        return self._prev

    def append(self, record: Mapping[str, object]) -> str:
        """Write one record durably and return its hash; raise :class:`AuditError` if it is not on disk.

        ``seq``, ``prev`` and ``hash`` are set here; ``time`` (RFC 3339) is
        kept if the caller gives it, else stamped from the clock; missing
        base fields (kind, actor, rule, labels, evidence, inputs, outcome)
        are written as null.
        """
        with self._lock:
            if self._fd < 0:
                raise AuditError(f"audit file {self.path}: closed")
            try:
                body: dict[str, object] = dict.fromkeys(_BASE_FIELDS)
                body.update({str(k): _clean(v) for k, v in record.items() if k not in ("seq", "prev", "hash")})
                if not isinstance(body.get("time"), str):
                    body["time"] = rfc3339(self._clock())
                body["seq"] = self._seq + 1
                body["prev"] = self._prev
                digest = record_hash(body)
                body["hash"] = digest
                line = canonical_json(body)
            except (TypeError, ValueError) as e:
                raise AuditError(f"audit record cannot be encoded: {e}") from e
            size = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                data = line + b"\n"
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
                os.fsync(self._fd)
            except OSError as e:
                # Leave no half record behind that would break the chain for every later append.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, size)
                raise AuditError(f"audit file {self.path}: write failed: {e.strerror or e}") from e
            self._seq += 1
            self._prev = digest
            # Under the lock, so the mirror sees records in chain order; the sink must only enqueue.
            if self.sink is not None:
                try:
                    self.sink(line)
                except Exception:  # the file is authoritative; a mirror failure must not undo a durable record
                    self.sink_errors += 1
        return digest

    def close(self) -> None:
        """Close the file; later appends raise :class:`AuditError`."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(path: Path) -> None:
    # A new file's directory entry must be durable too, or a crash can lose the whole file.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _last_link(path: Path) -> tuple[int, str]:
    """(seq, hash) of the file's last record, or (0, GENESIS) for a missing or empty file."""
    try:
        with path.open("rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            if end == 0:
                return 0, GENESIS
            fh.seek(end - 1)
            if fh.read(1) != b"\n":
                raise AuditError(
                    f"audit file {path}: the last line is cut off (no newline), so the chain cannot continue; "
                    f"run `driftwatch audit verify {path}` and move the file aside"
                )
            pos, chunk, tail = end - 1, 65536, b""
            while pos > 0 and b"\n" not in tail and end - pos < _MAX_TAIL:
                step = min(chunk, pos)
                pos -= step
                fh.seek(pos)
                tail = fh.read(step) + tail
            last = tail.rsplit(b"\n", 1)[-1] if b"\n" in tail else tail
    except AuditError:
        raise
    except IsADirectoryError as e:
        raise AuditError(f"audit file {path}: is a directory") from e
    except FileNotFoundError:
        return 0, GENESIS
    except OSError as e:
        raise AuditError(f"audit file {path}: cannot read: {e.strerror or e}") from e
    problem = _check(last, None)
    if isinstance(problem, str):
        raise AuditError(
            f"audit file {path}: the last record is damaged ({problem}), so the chain cannot continue; "
            f"run `driftwatch audit verify {path}` and move the file aside"
        )
    seq, digest = problem
    return seq, digest


def _check(line: bytes, prev: str | None) -> str | tuple[int, str]:
    """Why ``line`` is not a valid record following ``prev`` (None: any), or its (seq, hash)."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return "not a JSON record"
    if not isinstance(rec, dict):
        return "not a JSON object"
    digest, seq, link = rec.get("hash"), rec.get("seq"), rec.get("prev")
    if not isinstance(digest, str) or not isinstance(link, str) or type(seq) is not int:
        return "missing seq, prev or hash"
    try:
        expected = record_hash(rec)
    except ValueError:
        return "not a canonical record"
    if digest != expected:
        return "hash does not match the record's content: the record was edited"
    if prev is not None and link != prev:
        return "prev does not match the previous record's hash: a record was deleted, inserted or moved here"
    return seq, digest


def verify(path: Path) -> AuditReport:
    """Check a whole audit file: every hash, every link, and consecutive ``seq``; name the first broken line.

    Raises :class:`AuditError` if the file cannot be read at all.
    """
    prev, seq, n = GENESIS, 0, 0
    try:
        with Path(path).open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.endswith(b"\n"):
                    return AuditReport(False, n, lineno, "the last line is cut off (no newline)")
                result = _check(raw[:-1], prev)
                if isinstance(result, str):
                    return AuditReport(False, n, lineno, result)
                got, digest = result
                if got != seq + 1:
                    return AuditReport(False, n, lineno, f"seq is {got}, expected {seq + 1}")
                prev, seq, n = digest, got, n + 1
    except IsADirectoryError as e:
        raise AuditError(f"{path}: is a directory") from e
    except OSError as e:
        raise AuditError(f"{path}: cannot read: {e.strerror or e}") from e
    return AuditReport(True, n)


def read_records(path: Path) -> Iterator[dict[str, object]]:
    """Every JSON object record of an audit file, in order (lines that are not JSON objects are skipped).

    For rebuilding state at start; use :func:`verify` to check integrity.
    A missing file yields nothing.
    """
    if not Path(path).exists():
        return
    try:
        with Path(path).open("rb") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw)
                except (ValueError, RecursionError):
                    continue
                if isinstance(rec, dict):
                    yield rec
    except OSError as e:
        raise AuditError(f"audit file {path}: cannot read: {e.strerror or e}") from e
