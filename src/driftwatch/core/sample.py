"""Bounded samples of recent predictions, for the reports of alerts (what an on-call human reads).

The core keeps counts, not rows; a drift report wants rows. So per model x
version x tick the ingest keeps up to ``k`` predictions' rows: the ``k`` with
the smallest *sampling priority*, a keyed hash of the request id. Taking the
``k`` smallest of a union is the same as taking them from each part first, so
samples merge exactly like counts: across batches, ingest workers and ticks,
and any batching of the same events gives the same sample (a bottom-k
sample, uniform over the predictions of a tick).

A row holds only what a report needs, and nothing that identifies a person:

- the model's configured features (as sent);
- score and prediction;
- each attribute's slice token: the value's row name in the slice space, which
  is the keyed pseudonym for a sensitive attribute and ``__other__`` for a
  value without a row of its own;
- once they join it, its interactions' kinds and its label's value
  (:attr:`TickSample.joined`).

It never holds request ids, event ids or free text; the priority (48 bits of
a keyed BLAKE2b of the request id) is never shown and cannot be turned back
into the id without the key.

Memory: a row is a tuple of ``len(columns)`` Python values plus an int
(about 60 + 30 per column bytes); a stream keeps at most ``k`` rows per tick of
its longest window, e.g. 50 rows x 30 ticks of a 5-minute window x 10 s ticks =
1,500 rows, ~150 KB with 6 columns. See :func:`row_bytes`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from driftwatch.config import Config, Rule
from driftwatch.metrics.registry import ATTRIBUTE_METRICS, DRIFT_METRICS, spec

__all__ = [
    "CODE_BYTES",
    "INTERACTION_RATES",
    "Joined",
    "TickSample",
    "bottom_k",
    "columns_of",
    "gets_report",
    "merge_all",
    "priorities",
    "row_bytes",
    "sample_ticks",
    "value",
]


INTERACTION_RATES = frozenset({"complaint_rate", "escalation_rate", "thumbs_down_rate", "override_rate"})
"""Slice rates of what customers did next: their alerts get a report (the complaint kind)."""


def gets_report(rule: Rule, config: Config) -> bool:
    """Whether ``rule``'s alerts get a report (docs/reports.md): drift, group comparisons, rates of the groups of a
    protected attribute and of what customers did next (:data:`INTERACTION_RATES`)."""
    if rule.metric in DRIFT_METRICS or rule.metric in ATTRIBUTE_METRICS or rule.metric in INTERACTION_RATES:
        return True
    return spec(rule.metric).kind == "proportion" and (
        rule.attribute == "*" or (rule.attribute is not None and rule.attribute in config.protected)
    )


def sample_ticks(config: Config) -> int:
    """Ticks of samples kept: the longest window of a rule whose alerts get reports (one tick without any)."""
    tick = config.windows.tick
    return max((round(r.window / tick) for r in config.rules if gets_report(r, config)), default=1)


_PRIORITY_BITS = 48


def priorities(request_ids: Sequence[str], key: bytes) -> np.ndarray:
    """Each request id's sampling priority (uint64 below 2**48): a keyed hash, uniform and independent of order."""
    k = key[:64] or b"driftwatch-sample"
    out = np.fromiter(
        (int.from_bytes(hashlib.blake2b(r.encode(), digest_size=6, key=k).digest(), "big") for r in request_ids),
        np.uint64,
        count=len(request_ids),
    )
    return out


def bottom_k(priority: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest priorities, in ascending priority (ties: lower index first)."""
    if len(priority) <= k:
        return np.argsort(priority, kind="stable")
    part = np.argpartition(priority, k - 1)[:k]
    return part[np.lexsort((part, priority[part]))]


def value(v: object) -> object:
    """A sampled value as a row keeps it: text interned (categories repeat in every row), anything else as is."""
    return sys.intern(v) if isinstance(v, str) else v


def columns_of(features: Sequence[str], attributes: Sequence[str]) -> tuple[str, ...]:
    """The columns of a sampled row, in order: the features, ``score``, ``prediction``, then each attribute."""
    return (*features, "score", "prediction", *attributes)


Joined = tuple[int, str, object]
"""What joined a sampled prediction later: its priority, the interaction's kind, and the label's value (else None)."""


class TickSample:
    """The sampled rows of one model x version x tick: priorities ascending, at most ``k`` of them, no repeats; and
    the interactions that joined them (``joined``, sorted). A sample of joins only (no rows) travels from the ingest
    that joined them to the evaluator, where the joins of rows it does not hold are dropped."""

    __slots__ = ("joined", "k", "priority", "rows")

    def __init__(
        self, k: int, priority: list[int], rows: list[tuple[object, ...]], joined: Iterable[Joined] = ()
    ) -> None:
        self.k = k
        self.priority = priority
        self.rows = rows
        self.joined: tuple[Joined, ...] = tuple(sorted(set(joined), key=_joined_order))

    def __len__(self) -> int:
        return len(self.rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TickSample) and (self.priority, self.rows, self.joined) == (
            other.priority,
            other.rows,
            other.joined,
        )

    def joins(self) -> dict[int, tuple[object, tuple[str, ...]]]:
        """Per sampled priority: its label's value (None without one) and the other kinds that joined it."""
        out: dict[int, tuple[object, tuple[str, ...]]] = {}
        for p, kind, v in self.joined:
            label, kinds = out.get(p, (None, ()))
            out[p] = (v, kinds) if kind == "label" else (label, (*kinds, kind))
        return out

    def __repr__(self) -> str:
        return f"TickSample({len(self.rows)} rows)"

    def merge(self, other: TickSample) -> TickSample:
        """The bottom-k sample of both (a row seen in both, e.g. re-delivered, is kept once)."""
        return merge_all([self, other], max(self.k, other.k))


def merge_all(samples: Iterable[TickSample], k: int) -> TickSample:
    """The bottom-``k`` sample of all of ``samples`` (of one tick, or of a window's ticks), with the joins of the
    rows it keeps (a join whose row is not there, or no longer, is dropped)."""
    seen: dict[int, tuple[object, ...]] = {}
    joined: list[Joined] = []
    for s in samples:
        for p, row in zip(s.priority, s.rows, strict=True):
            seen.setdefault(p, row)
        joined.extend(s.joined)
    keep = sorted(seen)[:k]
    kept = set(keep)
    if not keep:  # joins on their way to the rows they belong to (from an ingest to the evaluator)
        return TickSample(k, [], [], joined)
    return TickSample(k, keep, [seen[p] for p in keep], (j for j in joined if j[0] in kept))


def _joined_order(j: Joined) -> tuple[int, str, str]:
    return j[0], j[1], repr(j[2])


_JOIN_BYTES = 104
"""One join kept with its row (a tuple of priority, shared kind and value); rows average under two."""


def row_bytes(columns: int) -> int:
    """Bytes one sampled row holds at most, about (the tuple, a float or int per numeric value, text values shared
    with the slice space or interned, the priority, what joined it): the documented memory bound.
    ``bench/reports.py`` measures it."""
    return 104 + 48 * columns + 2 * _JOIN_BYTES


CODE_BYTES = 7 * 2**20
"""What turning reports on adds to a worker besides its samples: the report modules it imports (measured 5.7-6.4 MB)."""
