"""Ingest: decode -> slice -> join -> fold events into mergeable partial summaries.

The first half of the pure pipeline (see :mod:`driftwatch.core.pipeline` for the
semantics of time, joins and references). An :class:`Ingestor` owns what
must live next to the events: pseudonymisation and cardinality caps, the
request join, references learnt from first events, and its own watermark
for lateness. It returns :class:`~driftwatch.core.summary.Partial`
summaries keyed by slice names, which any evaluator can merge.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import operator
import sys
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, TypeVar, cast

import numpy as np

from driftwatch.config import Config, ModelConfig
from driftwatch.core import summary as S
from driftwatch.core.counters import Counters
from driftwatch.core.profile import Profile, build_profile
from driftwatch.core.sample import TickSample, bottom_k, priorities, sample_ticks
from driftwatch.core.sample import value as sampled
from driftwatch.core.slicing import MISSING, OTHER, TRACK_FACTOR, AttributeCoder, SliceSpace, coders_from_config
from driftwatch.errors import ProfileError
from driftwatch.events import Decoded, DecodeError, EventDecoder, Interaction, Prediction
from driftwatch.metrics.cbpe import bin_index

__all__ = ["Ingested", "Ingestor"]

_K = TypeVar("_K", str | None, int)  # a slice-row cache's key: a raw attribute value, or both sides' rows of a pair


class _Stream:
    """Ingest-side state of one model x version: slice rows, attribute caches and join cells."""

    __slots__ = ("admission", "caches", "cells", "layout", "model_id", "pair_cache", "sampled", "space", "version")

    def __init__(self, model_id: str, version: str, layout: S.Layout, space: SliceSpace) -> None:
        self.model_id = model_id
        self.version = version
        self.layout = layout
        self.space = space
        self.admission: list[_Admission] = []  # per dimension: which values have a slice row of their own
        self.caches: list[dict[str | None, int]] = []  # per attribute: raw value -> row, for admitted values
        self.pair_cache: list[dict[int, int]] = []  # per pair: both sides' rows -> row, for admitted pair values
        self.cells: dict[bytes, int] = {}  # the bytes of a combination of slice rows (int32) -> its cell
        self.sampled: dict[int, dict[str, int]] = {}  # tick -> request id -> priority, of the rows sampled here


class _Learner:
    """Collects a model's first events into a reference profile."""

    __slots__ = ("columns", "deadline", "model", "model_id", "target")

    def __init__(self, model_id: str, model: ModelConfig) -> None:
        self.model_id = model_id
        self.model = model
        self.target = model.reference.learn_events
        self.deadline: float | None = None
        self.columns: dict[str, list[object]] = {f: [] for f in model.features}
        self.columns["score"] = []
        self.columns["prediction"] = []

    def add(self, e: Prediction, ts: float) -> bool:
        """Take one event, or return True (without taking it) when the reference is already complete."""
        if self.model.reference.learn_seconds is not None:
            if self.deadline is None:
                self.deadline = ts + self.model.reference.learn_seconds
            if ts >= self.deadline and self.columns["prediction"]:
                return True
        elif self.target is not None and len(self.columns["prediction"]) >= self.target:
            return True
        for f in self.model.features:
            self.columns[f].append(e.features.get(f))
        self.columns["score"].append(e.score)
        self.columns["prediction"].append(e.prediction)
        return False


class _Recent:
    """A version's recent events: those of the clock's epoch and of the epoch before (an epoch: the longest window)."""

    __slots__ = ("before", "epoch", "now")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.now = 0
        self.before = 0

    def count(self, epoch: int) -> int:
        """Recent events when the clock is in ``epoch`` (never earlier than the last :meth:`add`)."""
        if self.epoch == epoch:
            return self.now + self.before
        return self.now if self.epoch == epoch - 1 else 0

    def add(self, epoch: int, now: int, before: int) -> None:
        """Move to the clock's ``epoch`` and add events stamped in it (``now``) and in the epoch before."""
        if self.epoch != epoch:
            self.before = self.now if self.epoch == epoch - 1 else 0
            self.now = 0
            self.epoch = epoch
        self.now += now
        self.before += before


PROBATION = 1_000
"""Per admission table (a model's versions, a stream's values of one dimension): names seen once and without a
place that are remembered (the oldest is forgotten first)."""
CANDIDATES_PER_VERSION = 4
"""Per admission table: names without a place whose recent events are counted, per place."""


class _Admission:
    """Which names get a place of their own (a version its stream, an attribute value its slice row): admission by
    recent volume (guarantee 8 in docs/guarantees.md).

    Up to ``cap`` names are admitted; every other name's events go to ``__other__``. A name's recent volume is its
    events stamped in the clock's epoch or the one before: an epoch is the longest configured window, the clock the
    newest event time of the events routed here so far. All of this is event time and exact integer counts, decided
    event by event in order, so any batching of the same events routes them the same.

    While a place is free, a new name is admitted at its first event. Once all are taken, a new name is first
    remembered in a probation queue (one event, :data:`PROBATION` names, oldest forgotten), then, from its second
    event, counted in a candidate table (``CANDIDATES_PER_VERSION x cap``, the least recent forgotten). A candidate
    with ``floor`` recent events replaces the admitted name with the fewest recent events if that one has fewer than
    ``floor``, or fewer than half the candidate's. So a flood of one-event names only ever churns the probation
    queue (O(1) per event) and never replaces a name with traffic, while a new name with steady traffic gets its
    place at its ``floor``-th event unless every admitted name carries more. A replaced name's later events go to
    ``__other__`` and it becomes a candidate again.

    :attr:`seen` lists the names that carried ``floor`` events in their own place, in the event-time order of the
    events that first admitted them (for versions: rollback targets, where "the version before" must not depend on
    which partition a worker happened to read first; a one-event flood never reaches it).
    """

    __slots__ = (
        "admitted",
        "candidates",
        "cap",
        "carried",
        "clock",
        "evicted",
        "first",
        "floor",
        "probation",
        "seen",
        "span",
    )

    def __init__(self, cap: int, floor: int, span: float) -> None:
        self.cap = cap
        self.floor = floor
        self.span = span
        self.clock = -math.inf
        self.admitted: dict[str, _Recent] = {}  # in order of admission
        self.candidates: dict[str, _Recent] = {}
        self.probation: OrderedDict[str, int] = OrderedDict()  # name -> epoch of its one event
        self.carried: dict[str, int] = {}  # events in its own place, per name admitted (first admission order)
        self.first: dict[str, float] = {}  # per name carried: the event time of the event that first admitted it
        self.seen: list[str] = []
        self.evicted: list[str] = []  # replaced since the caller last looked

    def route(self, names: Sequence[str], group: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Where each event of a batch goes: the index of its own name if that name has (or takes) a place when the
        event comes, else -1 (``__other__``).

        ``group``: per event, the index of its name in ``names``; ``ts``: the events' times, in the order they came.
        """
        if all(v in self.admitted for v in names):  # the usual batch: counts only, in bulk
            size = len(names)
            self.clock = max(self.clock, float(ts.max()))
            end = math.floor(self.clock / self.span)
            if len(group) <= _SMALL:  # a few events (one per Kafka message): a loop beats numpy's call costs
                now, before, total = [0] * size, [0] * size, [0] * size
                for g, t in zip(group.tolist(), ts.tolist(), strict=True):
                    own_epoch = math.floor(t / self.span)
                    total[g] += 1
                    if own_epoch == end:
                        now[g] += 1
                    elif own_epoch == end - 1:
                        before[g] += 1
            else:
                own = np.floor(ts / self.span).astype(np.int64)
                now = np.bincount(group[own == end], minlength=size).tolist()
                before = np.bincount(group[own == end - 1], minlength=size).tolist()
                total = np.bincount(group, minlength=size).tolist()
            for g, v in enumerate(names):
                self._carry(v, end, now[g], before[g], total[g])
            return group
        return self._route_each(names, group, ts)

    def _route_each(self, names: Sequence[str], code: np.ndarray, t: np.ndarray) -> np.ndarray:
        """:meth:`route` when some name has no place: decide event by event for those names' events."""
        clock = np.maximum(np.maximum.accumulate(t), self.clock)
        self.clock = float(clock[-1])
        epochs = np.floor(clock / self.span).astype(np.int64)  # the clock's epoch as each event finds it
        own = np.floor(t / self.span).astype(np.int64)  # each event's own epoch
        by_code = np.argsort(code, kind="stable")
        bounds = np.searchsorted(code[by_code], np.arange(len(names) + 1)).tolist()

        def members(g: int) -> np.ndarray:
            """Positions of the events of group ``g``, ascending."""
            return by_code[bounds[g] : bounds[g + 1]]

        admitted = self.admitted
        group_of = {v: g for g, v in enumerate(names)}
        dest = code.copy()  # the group whose place takes each event; -1: __other__
        synced = {g: 0 for g, v in enumerate(names) if v in admitted}  # admitted groups: events counted so far
        queued = [v not in admitted for v in names]  # groups whose events are in the work list
        work = np.flatnonzero(np.array(queued)[code]).tolist()
        extra: list[int] = []  # events of names replaced during this batch (a heap)
        epoch_l, own_l, code_l = epochs.tolist(), own.tolist(), code.tolist()

        def sync(upto: int, epoch: int) -> None:
            """Count the admitted groups' events before position ``upto``."""
            for g, done in synced.items():
                mem = members(g)
                k = int(np.searchsorted(mem, upto))
                if k > done:
                    e = own[mem[done:k]]
                    self._carry(names[g], epoch, int((e == epoch).sum()), int((e == epoch - 1).sum()), k - done)
                    synced[g] = k

        def admit(g: int, j: int) -> None:
            """Group ``g``'s name takes a place at its event ``j`` (already counted in its :class:`_Recent`)."""
            self.carried.setdefault(names[g], 0)
            self.first.setdefault(names[g], float(t[j]))
            self._carry(names[g], epoch_l[j], 0, 0, 1, counted=True)
            dest[j] = g
            synced[g] = int(np.searchsorted(members(g), j, side="right"))

        wi = 0
        while True:
            if extra and (wi >= len(work) or extra[0] < work[wi]):
                j = heapq.heappop(extra)
            elif wi < len(work):
                j = work[wi]
                wi += 1
            else:
                break
            g = code_l[j]
            v = names[g]
            if v in admitted:
                continue  # admitted earlier in this batch: stays in its place
            epoch, e = epoch_l[j], own_l[j]
            if len(admitted) < self.cap:
                fresh = self.candidates.pop(v, None) or _Recent(epoch)
                first = self.probation.pop(v, None)
                if first is not None:
                    fresh.add(epoch, first == epoch, first == epoch - 1)
                fresh.add(epoch, e == epoch, e == epoch - 1)
                admitted[v] = fresh
                admit(g, j)
                continue
            dest[j] = -1
            rec = self._observe(v, epoch, e)
            if rec is None or rec.count(epoch) < self.floor:
                continue
            sync(j, epoch)
            low = min(admitted, key=lambda w: admitted[w].count(epoch))  # the first of equals: the oldest admitted
            have, low_n = rec.count(epoch), admitted[low].count(epoch)
            if low_n >= self.floor and have < 2 * low_n:
                continue
            gl = group_of.get(low)
            del self.candidates[v]
            self._replace(low, epoch)
            if gl is not None:
                del synced[gl]
                if not queued[gl]:
                    queued[gl] = True
                    mem = members(gl)
                    for x in mem[int(np.searchsorted(mem, j, side="right")) :].tolist():
                        heapq.heappush(extra, x)
            admitted[v] = rec
            admit(g, j)
        if synced:
            sync(len(code), epoch_l[-1])
        return dest

    def _carry(self, v: str, epoch: int, now: int, before: int, n: int, *, counted: bool = False) -> None:
        """Count ``n`` events of admitted ``v`` (``now`` of them stamped in the clock's ``epoch``, ``before`` in the
        one before); ``counted``: already in its recent count (the event that admitted it)."""
        if not counted:
            self.admitted[v].add(epoch, now, before)
        total = self.carried[v] + n
        self.carried[v] = total
        if total >= self.floor > total - n:
            self._refresh()

    def _observe(self, v: str, epoch: int, e: int) -> _Recent | None:
        """Count one event of a version without a stream; its candidate count if it has one."""
        rec = self.candidates.get(v)
        if rec is not None:
            rec.add(epoch, e == epoch, e == epoch - 1)
            return rec
        first = self.probation.pop(v, None)
        if first is not None and first >= epoch - 1:
            rec = _Recent(epoch)
            rec.add(epoch, (first == epoch) + (e == epoch), (first == epoch - 1) + (e == epoch - 1))
            self._candidate(v, rec, epoch)
            return rec
        if e >= epoch - 1:  # an event older than that would not count
            self.probation[v] = e
            if len(self.probation) > PROBATION:
                self.probation.popitem(last=False)
        return None

    def _candidate(self, v: str, rec: _Recent, epoch: int) -> None:
        """Count ``v`` as a candidate, forgetting the least recent one (the oldest of equals) when the table is full."""
        table = self.candidates
        if len(table) >= CANDIDATES_PER_VERSION * self.cap:
            del table[min(table, key=lambda w: table[w].count(epoch))]
        table[v] = rec

    def _replace(self, v: str, epoch: int) -> None:
        """Take admitted ``v``'s slot away: it becomes a candidate, and is forgotten unless it carried traffic."""
        self._candidate(v, self.admitted.pop(v), epoch)
        self.evicted.append(v)
        if self.carried[v] < self.floor:
            del self.carried[v]
            self.first.pop(v, None)
            return
        kept = [w for w in self.carried if w not in self.admitted]
        for w in kept[: max(0, len(kept) - self.cap)]:  # rollback targets: the newest max_versions replaced ones
            del self.carried[w]
            self.first.pop(w, None)
        self._refresh()

    def _refresh(self) -> None:
        # sorted() is stable: names first admitted at the same event time keep their admission order.
        self.seen[:] = sorted(
            (w for w, n in self.carried.items() if n >= self.floor), key=lambda w: self.first.get(w, math.inf)
        )


_FOLDED = -2
"""A value that is ``__other__`` whatever is admitted (outside the vocabulary, invalid, a pair with a folded side)."""
_TS_BITS = 43  # event time in ms: good until the year 2248
_FAV_BIT = 1 << _TS_BITS
_CELL_SHIFT = _TS_BITS + 1
_TS_MASK = _FAV_BIT - 1
_LEARNING = 0  # the cell of predictions used to learn a reference: interactions are not joined
MAX_CELLS = 1 << (62 - _CELL_SHIFT)
"""A join entry is one int: cell << 44 | favourable << 43 | event time in ms (packed: ~70 bytes each). A cell lives
while join entries point at it; when every cell is taken, the oldest remembered requests go first (as with
``join.max_entries``) until one is free."""


_SMALL = 64
"""Up to this many elements, :func:`_unique_inverse` and :func:`_unique_first` use a set and a dict: numpy.unique
costs ~25 µs a call whatever the size, and a fold of a few events (one event per Kafka message) called it ~25 times."""


def _unique_inverse(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``numpy.unique(a, return_inverse=True)`` of a 1-D integer array.

    >>> [x.tolist() for x in _unique_inverse(np.array([5, -1, 5, 3]))]
    [[-1, 3, 5], [2, 0, 2, 1]]
    """
    if len(a) > _SMALL:
        uniq, inv = np.unique(a, return_inverse=True)
        return uniq, inv.reshape(-1)
    vals = a.tolist()
    u = sorted(set(vals))
    at = {v: i for i, v in enumerate(u)}
    return np.array(u, a.dtype), np.array([at[v] for v in vals], np.intp)


def _unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct ``(a[i], b[i])`` pairs of two 1-D integer arrays in ascending order, as two arrays, and each
    element's pair: ``numpy.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)``.

    >>> [x.tolist() for x in _unique_pairs(np.array([5, 1, 5, 5]), np.array([7, 2, 6, 7]))]
    [[1, 5, 5], [2, 6, 7], [2, 0, 1, 2]]
    """
    if len(a) > _SMALL:
        pairs, inv = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
        return pairs[:, 0], pairs[:, 1], inv.reshape(-1)
    both = list(zip(a.tolist(), b.tolist(), strict=True))
    u = sorted(set(both))
    at = {p: i for i, p in enumerate(u)}
    return (
        np.array([x for x, _ in u], a.dtype),
        np.array([y for _, y in u], b.dtype),
        np.array([at[p] for p in both], np.intp),
    )


def _unique_bytes(keys: list[bytes]) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """The distinct ``keys`` in the order they first come, where each first comes, and each key's index among them.

    >>> k, first, inv = _unique_bytes([b"b", b"a", b"b"])
    >>> k, first.tolist(), inv.tolist()
    ([b'b', b'a'], [0, 1], [0, 1, 0])
    """
    at: dict[bytes, int] = {}
    first: list[int] = []
    inv: list[int] = []
    for i, k in enumerate(keys):
        u = at.get(k)
        if u is None:
            u = at[k] = len(first)
            first.append(i)
        inv.append(u)
    return list(at), np.array(first, np.intp), np.array(inv, np.intp)


def _unique_first(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``numpy.unique(a, return_index=True)`` of a 1-D integer array: sorted values and where each is first.

    >>> [x.tolist() for x in _unique_first(np.array([5, -1, 5, 3]))]
    [[-1, 3, 5], [1, 3, 0]]
    """
    if len(a) > _SMALL:
        uniq, first = np.unique(a, return_index=True)
        return uniq, first
    firsts: dict[int, int] = {}
    for i, v in enumerate(a.tolist()):
        firsts.setdefault(v, i)
    u = sorted(firsts)
    return np.array(u, a.dtype), np.array([firsts[v] for v in u], np.intp)


class _Clock(NamedTuple):
    """Event time as each event of one batch finds it (see :meth:`Ingestor._clock`)."""

    closed_p: np.ndarray  # first open tick, per prediction
    closed_i: np.ndarray  # first open tick, per interaction
    pos_p: np.ndarray  # position in the batch, per prediction
    pos_i: np.ndarray  # position in the batch, per interaction


class _Source(NamedTuple):
    """One source's decoded batch, to fold (see :meth:`Ingestor._fold_sources`)."""

    predictions: Sequence[Prediction]
    interactions: Sequence[Interaction]
    source: str | None
    ts_p: np.ndarray
    ts_i: np.ndarray
    order: bytes | None
    clock: tuple[float, float] | None  # None: as the source's clock stands


def _interleave(ts_p: np.ndarray, ts_i: np.ndarray, order: bytes | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch's event times in input order, and the positions of its predictions and of its interactions
    (``order``: :attr:`~driftwatch.events.Decoded.order`; None: predictions first)."""
    n = len(ts_p) + len(ts_i)
    if order is None or len(order) != n:
        return np.concatenate([ts_p, ts_i]), np.arange(len(ts_p)), np.arange(len(ts_p), n)
    is_pred = np.frombuffer(order, np.uint8).astype(bool)
    pos_p, pos_i = np.flatnonzero(is_pred), np.flatnonzero(~is_pred)
    seq = np.empty(n, np.float64)
    seq[pos_p], seq[pos_i] = ts_p, ts_i
    return seq, pos_p, pos_i


class Ingested(NamedTuple):
    """What one batch produced: the decode result and the partial summaries to merge."""

    decoded: Decoded
    partials: list[S.Partial]


class Ingestor:
    """Decodes, slices and joins events and folds them into partial summaries."""

    def __init__(
        self,
        config: Config,
        key: bytes | None = None,
        profiles: dict[str, Profile] | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.config = config
        self.tick = config.windows.tick
        self.decoder = EventDecoder(config.attributes, max_event_bytes=config.max_event_bytes)
        self.coders: dict[str, AttributeCoder] = coders_from_config(config, key)
        self.dimensions = config.dimensions()
        self._attrs = tuple(config.attributes)
        self._attr_gets = tuple(operator.attrgetter(a) for a in self._attrs)  # one per attribute: see _rows
        self._pairs = tuple((self._attrs.index(a), self._attrs.index(b)) for a, b in config.intersections)
        self.limits = slice_limits(config)
        self.layouts: dict[str, S.Layout] = {}
        self.learners: dict[str, _Learner] = {}
        profiles = dict(profiles or {})
        for mid, mc in config.models.items():
            prof = profiles.get(mid)
            if prof is None and mc.reference.profile is not None:
                raise ProfileError(
                    f"models.{mid}.reference.profile: the profile was not passed in; "
                    "load it with driftwatch.profiles.load_profiles(config)"
                )
            if prof is not None:
                self.layouts[mid] = S.Layout(mc, prof)
            else:
                self.learners[mid] = _Learner(mid, mc)
        self.streams: dict[tuple[str, str], _Stream] = {}
        span = max(config.windows.windows, default=config.windows.tick)
        self._span = span
        # Per model: which versions have a stream of their own (by recent volume, see _Admission).
        self.admission = {
            m: _Admission(mc.max_versions, mc.version_min_events, span) for m, mc in config.models.items()
        }
        # Per dimension: how many values get a slice row of their own in a stream (by recent volume too).
        self._caps = value_caps(config)
        # Per model: versions that carried traffic on their own stream, in the order they were first admitted.
        self.versions: dict[str, list[str]] = {m: a.seen for m, a in self.admission.items()}
        self.counters = counters if counters is not None else Counters()
        self._join: dict[str, int] = {}
        # A cell is a stream and one combination of slice rows; join entries point at cells.
        self._cell_stream: list[_Stream | None] = [None]
        # Each cell's slice rows (a row of int32 per cell, grown by doubling; cell 0 is unused): tuples of ints took
        # ~220 bytes per cell, and a wide layout makes ~100,000 cells.
        self._cell_rows = np.zeros((64, 1 + len(self.dimensions)), np.int32)
        # Join entries pointing at each cell: a cell none points at any more is freed for reuse (its id goes on
        # _free_cells), so cells are bounded by the requests remembered, not by every combination ever seen.
        self._cell_refs = np.zeros(64, np.int64)
        self._free_cells: list[int] = []
        self._join_order: deque[tuple[float, list[str]]] = deque()
        self._pending: dict[str, list[tuple[Interaction, float, int]]] = {}
        # (tick of a waiting interaction's join.grace limit, its request id), soonest first: expiry pops what is due
        # instead of scanning every waiting request each time the watermark moves. Entries of requests that joined
        # since are skipped when popped.
        self._pending_due: list[tuple[int, str]] = []
        self._labeled: set[str] = set()
        self.max_ts = -math.inf
        # Newest event time per source (a Kafka partition): the watermark follows the slowest source,
        # so a partition read ahead of the others does not make their events late.
        self._source_max: dict[str | None, float] = {}
        # Replay: per source, how many events in a row were stamped more than `max_future_skew` ahead of its time.
        self._leaps: dict[str | None, int] = {}
        self._out: list[S.Partial] = []
        # Per partial of _out, the index of the source (in a fold of several) whose events it counts.
        self._out_src: list[int] = []
        self._n_src = 1
        # Reports: rows of up to k predictions per stream and tick (a bottom-k sample, see driftwatch.core.sample).
        self._sample_k = config.reports.sample_per_tick if config.reports.enabled else 0
        self._sample_key = key or b""
        self._sample_ticks = sample_ticks(config)
        self._rebuilding = False
        self.rebuilt_max_ts = -math.inf  # the newest event time read by rebuild() (which leaves max_ts alone)

    @property
    def watermark(self) -> float:
        """The slowest source's newest event time minus the allowed lateness (-inf until every source has data)."""
        if not self._source_max:
            return -math.inf
        return min(self._source_max.values()) - self.config.windows.lateness

    def set_sources(self, sources: Iterable[str]) -> None:
        """The sources (partitions) this ingestor waits for: new ones hold the watermark until they deliver."""
        wanted = set(sources)
        for src in wanted:
            self._source_max.setdefault(src, -math.inf)
        for src in [x for x in self._source_max if x is not None and x not in wanted]:
            del self._source_max[src]

    def waiting(self) -> int:
        """Interactions waiting for their prediction (within their ``join.grace``): neither joined nor missed yet."""
        return sum(map(len, self._pending.values()))

    def closed_before(self) -> int | None:
        """First tick still open to new events by this ingestor's watermark (None before any event)."""
        wm = self.watermark
        return None if wm == -math.inf else math.floor(wm / self.tick)

    def process(
        self,
        raws: Sequence[bytes],
        source: str | None = None,
        *,
        time_range: tuple[float, float] | None = None,
        live: bool = False,
        clock: tuple[float, float] | None = None,
    ) -> Ingested:
        """Decode and fold one batch of raw events from one ``source`` (e.g. ``topic:partition``).

        ``time_range``: the event times accepted (:meth:`~driftwatch.config.WindowConfig.event_time_range` of the
        wall clock, which the caller reads); events outside are rejected and never move event time. Unless ``live``
        (where the wall clock bounds event time), an event stamped more than ``windows.max_future_skew`` ahead of
        the events before it in its source is rejected the same way, unless :data:`LEAP_CONFIRM` such events come
        in a row (traffic resuming after a quiet stretch: the first of them are rejected, the last moves time on).
        ``clock``: see :meth:`ingest`.
        """
        decoded, ts_p, ts_i = self._decode(raws, time_range)
        if not live:
            decoded, ts_p, ts_i = self._drop_leaps(decoded, len(raws), ts_p, ts_i, source)
        for err in decoded.errors:
            self.counters.rejected[err.reason] += 1
        partials = self.ingest(
            decoded.predictions, decoded.interactions, source, times=(ts_p, ts_i), order=decoded.order, clock=clock
        )
        return Ingested(decoded, partials)

    def _decode(
        self, raws: Sequence[bytes], time_range: tuple[float, float] | None
    ) -> tuple[Decoded, np.ndarray, np.ndarray]:
        """Decode a batch; with ``time_range``, events stamped outside it are rejected. Returns the decode result and
        the event times of its predictions and interactions."""
        decoded = self.decoder.decode_batch(raws)
        # Event times are needed to fold anyway: computed once here, checked with two numpy reductions. Only a batch
        # that holds an event outside the range is decoded again, by the decoder, which names each such event.
        ts_p, ts_i = _seconds(decoded.predictions), _seconds(decoded.interactions)
        if time_range is not None and not (_within(ts_p, time_range) and _within(ts_i, time_range)):
            decoded = self.decoder.decode_batch(raws, time_range=time_range)
            ts_p, ts_i = _seconds(decoded.predictions), _seconds(decoded.interactions)
        return decoded, ts_p, ts_i

    def _drop_leaps(
        self, decoded: Decoded, n_raws: int, ts_p: np.ndarray, ts_i: np.ndarray, source: str | None
    ) -> tuple[Decoded, np.ndarray, np.ndarray]:
        """Reject events stamped far ahead of their source's time, unless enough come in a row (replay only)."""
        seq, pos_p, pos_i = _interleave(ts_p, ts_i, decoded.order)
        if not len(seq):
            return decoded, ts_p, ts_i
        start = self._source_max.get(source, -math.inf)
        skew = self.config.windows.max_future_skew
        before = np.maximum.accumulate(np.concatenate([[start], seq[:-1]]))
        if source not in self._leaps and not bool(np.any((seq > before + skew) & np.isfinite(before))):
            return decoded, ts_p, ts_i
        reject, self._leaps[source] = _leaps(seq, start, skew, self._leaps.get(source, 0))
        if not self._leaps[source]:
            del self._leaps[source]
        if not reject.any():
            return decoded, ts_p, ts_i
        failed = {e.index for e in decoded.errors}
        valid = [i for i in range(n_raws) if i not in failed]
        errors = [
            *decoded.errors,
            *(
                DecodeError(valid[k], "timestamp_out_of_range", "ts", "stamped far ahead of the events before it")
                for k in np.flatnonzero(reject).tolist()
            ),
        ]
        errors.sort(key=lambda e: e.index)
        keep_p, keep_i = ~reject[pos_p], ~reject[pos_i]
        preds = [e for e, k in zip(decoded.predictions, keep_p.tolist(), strict=True) if k]
        inters = [e for e, k in zip(decoded.interactions, keep_i.tolist(), strict=True) if k]
        is_pred = np.zeros(len(seq), np.uint8)
        is_pred[pos_p] = 1
        order = bytes(is_pred[~reject]) if preds and inters else None
        return Decoded(preds, inters, errors, order), ts_p[keep_p], ts_i[keep_i]

    def rebuild(self, raws: Sequence[bytes]) -> int:
        """Rebuild join state from events counted before a restart: nothing counts and event time stays put.

        Predictions re-enter the join table; labels mark their request as labelled again (a later duplicate is
        still ignored); interactions whose prediction is not there wait again as pending if still within their
        grace (those that found it were counted before; :meth:`rebuilt` ends the rebuild). Joins are decided by
        event time alone, so the order of the rebuild does not matter, but every partition must be rebuilt before
        any batch is re-sent. Nothing is judged late: these events counted when they came. Returns how many events
        were read.
        """
        sources, max_ts, leaps = dict(self._source_max), self.max_ts, dict(self._leaps)
        counters = dataclasses.replace(self.counters, rejected=self.counters.rejected.copy())
        decoded = self.decoder.decode_batch(raws)
        times = (_seconds(decoded.predictions), _seconds(decoded.interactions))
        newest = max(float(times[0].max(initial=-math.inf)), float(times[1].max(initial=-math.inf)))
        self.rebuilt_max_ts = max(self.rebuilt_max_ts, newest)
        self._rebuilding = True  # no expiry: time has not moved, and other partitions' pending entries must stay
        try:
            # Output dropped: sent before the restart.
            self.ingest(decoded.predictions, decoded.interactions, None, times=times, clock=(-math.inf, -math.inf))
        finally:
            self._rebuilding = False
        self._source_max, self.max_ts, self._leaps = sources, max_ts, leaps
        for f in dataclasses.fields(counters):
            setattr(self.counters, f.name, getattr(counters, f.name))
        return len(decoded.predictions) + len(decoded.interactions)

    def seed_sources(self, newest: Mapping[str, float]) -> None:
        """After a restart: each source's newest event time is at least this (its watermark goes on from there)."""
        for src, ts in newest.items():
            if math.isfinite(ts) and ts > self._source_max.get(src, -math.inf):
                self._source_max[src] = ts

    def rebuilt(self, watermark: float) -> None:
        """End a rebuild: forget what ``watermark`` (the watermark before the restart) had put out of reach (its
        join misses were counted then)."""
        if math.isfinite(watermark):
            misses = self.counters.join_misses
            self._expire(watermark)
            self.counters.join_misses = misses

    def clock_of(self, source: str | None) -> tuple[float, float]:
        """What a batch of ``source`` would be judged late by now: the source's newest event time (inf for a new
        source while others hold time, -inf before any) and the slowest other source's. Pass it back as ``clock``
        to judge a batch exactly as then (a batch re-sent after a restart)."""
        others = min((v for k, v in self._source_max.items() if k != source), default=math.inf)
        own = self._source_max.get(source)
        if own is None:
            own = math.inf if self._source_max else -math.inf
        return own, others

    def ingest(
        self,
        predictions: Sequence[Prediction],
        interactions: Sequence[Interaction],
        source: str | None = None,
        *,
        times: tuple[np.ndarray, np.ndarray] | None = None,
        order: bytes | None = None,
        clock: tuple[float, float] | None = None,
    ) -> list[S.Partial]:
        """Fold decoded events; each is judged late by the watermark as it stood just before it, so how a stream is
        cut into batches never changes which events count.

        ``times``: their event times in epoch seconds, when the caller has them already. ``order``: how predictions
        and interactions interleave (:attr:`~driftwatch.events.Decoded.order`); None: predictions first.
        ``clock``: judge lateness from this :meth:`clock_of` instead of the current one.
        """
        ts_p, ts_i = times if times is not None else (_seconds(predictions), _seconds(interactions))
        return self._fold_sources([_Source(predictions, interactions, source, ts_p, ts_i, order, clock)])[0]

    def process_sources(
        self,
        batches: Sequence[tuple[Sequence[bytes], str, tuple[float, float], tuple[float, float] | None]],
    ) -> tuple[list[Decoded], list[list[S.Partial]]]:
        """Decode and fold the batches of several sources (``(raws, source, clock, time_range)``, live) in one fold.

        Each event is judged by its own source's ``clock`` (see :meth:`ingest`) and ``time_range`` (see
        :meth:`process`), and each batch gets partial summaries of its own: what folding the batches one by one,
        each judged by its clock, gives (interactions waiting for their prediction count with the prediction's
        batch, as they would then). One fold costs less than many small ones: a worker fed one event per message
        gets a few dozen events per input partition, and the decode, slicing and join run once for them all.
        Returns each batch's decode result and its partial summaries, in the order of ``batches``.
        """
        sources = []
        decodeds = []
        for raws, source, clock, time_range in batches:
            decoded, ts_p, ts_i = self._decode(raws, time_range)
            for err in decoded.errors:
                self.counters.rejected[err.reason] += 1
            decodeds.append(decoded)
            sources.append(_Source(decoded.predictions, decoded.interactions, source, ts_p, ts_i, decoded.order, clock))
        return decodeds, self._fold_sources(sources)

    def _fold_sources(self, sources: Sequence[_Source]) -> list[list[S.Partial]]:
        """Fold the events of one or more sources, in order, each judged by the clock of its source (given, or as it
        stands now: every clock is read before anything is folded); return each source's partial summaries."""
        self._out, self._out_src = [], []
        if not sources:
            return []
        clocks = [self._clock(src.clock or self.clock_of(src.source), src.ts_p, src.ts_i, src.order) for src in sources]
        src_p = src_i = None  # each event's source (an index into sources), when there are several
        if len(sources) == 1:
            (src,) = sources
            predictions, interactions, ts_p, ts_i = src.predictions, src.interactions, src.ts_p, src.ts_i
            clock_at = clocks[0]
        else:  # one batch: the sources' events one after the other, positions shifted to match
            predictions = [e for src in sources for e in src.predictions]
            interactions = [e for src in sources for e in src.interactions]
            ts_p = np.concatenate([src.ts_p for src in sources])
            ts_i = np.concatenate([src.ts_i for src in sources])
            shift = np.cumsum([0] + [len(src.predictions) + len(src.interactions) for src in sources])
            clock_at = _Clock(
                np.concatenate([c.closed_p for c in clocks]),
                np.concatenate([c.closed_i for c in clocks]),
                np.concatenate([c.pos_p + k for c, k in zip(clocks, shift.tolist(), strict=False)]),
                np.concatenate([c.pos_i + k for c, k in zip(clocks, shift.tolist(), strict=False)]),
            )
            src_p = np.repeat(np.arange(len(sources)), [len(src.predictions) for src in sources])
            src_i = np.repeat(np.arange(len(sources)), [len(src.interactions) for src in sources])
        self._n_src = len(sources)
        ticks_i = np.floor(ts_i / self.tick).astype(np.int64)
        later = np.zeros(0, np.int64)
        if interactions:
            # Interactions first, as far as lateness and waiting go: one whose prediction comes later in this batch
            # waits for it, exactly as if the batch had ended between them.
            later = self._admit_interactions(
                interactions, ts_i, ticks_i, clock_at.closed_i, self._early(predictions, interactions, clock_at)
            )
        if predictions:
            self._ingest_predictions(predictions, ts_p, clock_at.closed_p, src_p)
        if len(later) == len(interactions) > 0:
            self._fold_joined(interactions, ts_i, ticks_i, src_i)
        elif len(later):
            self._fold_joined(
                [interactions[i] for i in later.tolist()],
                ts_i[later],
                ticks_i[later],
                None if src_i is None else src_i[later],
            )
        before = self.watermark
        for src, clock in zip(sources, clocks, strict=True):
            # The source's newest time: every prediction's, and the interactions' that were not late.
            kept_i = src.ts_i[np.floor(src.ts_i / self.tick).astype(np.int64) >= clock.closed_i]
            batch_max = max(float(src.ts_p.max(initial=-math.inf)), float(kept_i.max(initial=-math.inf)))
            if batch_max > self._source_max.get(src.source, -math.inf):
                self._source_max[src.source] = batch_max
            self.max_ts = max(self.max_ts, batch_max)
        if self.watermark > before and not self._rebuilding:  # time moved on for every source: waiting joins may expire
            self._expire(self.watermark)
        out: list[list[S.Partial]] = [[] for _ in sources]
        for p, k in zip(self._out, self._out_src, strict=True):
            out[k].append(p)
        self._out, self._out_src, self._n_src = [], [], 1
        return out

    def _clock(self, start: tuple[float, float], ts_p: np.ndarray, ts_i: np.ndarray, order: bytes | None) -> _Clock:
        """Event time as each event of a batch finds it (``start``: :meth:`clock_of` the batch's source): with the
        source's events before it counted."""
        own, others = start
        seq, pos_p, pos_i = _interleave(ts_p, ts_i, order)
        if not len(seq):
            empty = np.zeros(0, np.int64)
            return _Clock(empty, empty, pos_p, pos_i)
        # Newest time of this source before each event (a source not yet known does not hold the watermark).
        before = np.maximum.accumulate(np.concatenate([[own], seq[:-1]]))
        if len(seq) > 1 and math.isinf(own) and own > 0:
            before[1:] = np.maximum.accumulate(seq[:-1])
        slowest = np.minimum(before, others)  # the watermark before each event, plus lateness
        wm = slowest - self.config.windows.lateness
        closed = np.full(len(seq), -(2**62), np.int64)
        ok = np.isfinite(wm)
        closed[ok] = np.floor(wm[ok] / self.tick).astype(np.int64)
        return _Clock(closed[pos_p], closed[pos_i], pos_p, pos_i)

    def _early(self, preds: Sequence[Prediction], inters: Sequence[Interaction], clock: _Clock) -> np.ndarray | None:
        """Per interaction: whether its prediction is not known yet but comes later in this batch."""
        if not preds or not inters or clock.pos_i[0] > clock.pos_p[-1]:
            return None  # every interaction comes after every prediction
        inter_rids = [e.request_id for e in inters]
        pred_rids = [e.request_id for e in preds]
        # Set operations first (in C): usually no interaction meets its prediction for the first time in this batch.
        new = set(pred_rids).intersection(inter_rids).difference(self._join)
        if not new:
            return None
        first: dict[str, int] = {}
        for rid, q in zip(pred_rids, clock.pos_p.tolist(), strict=True):
            if rid in new and rid not in first:
                first[rid] = q
        out = np.zeros(len(inters), bool)
        for i, (rid, q) in enumerate(zip(inter_rids, clock.pos_i.tolist(), strict=True)):
            if rid in new and first[rid] > q:
                out[i] = True
        return out

    def _ingest_predictions(
        self, preds: Sequence[Prediction], ts: np.ndarray, closed: np.ndarray, src: np.ndarray | None = None
    ) -> None:
        """Count predictions, drop the late ones, and fold the rest into their stream (``src``: each one's source,
        in a fold of several)."""
        c = self.counters
        c.predictions += len(preds)
        ticks = np.floor(ts / self.tick).astype(np.int64)
        # Group by model x version: one int code per event, then a stable sort (no per-event appends).
        codes: dict[tuple[str, str], int] = {}
        code = np.array(
            [codes.setdefault(k, len(codes)) for k in [(e.model_id, e.model_version) for e in preds]], np.int64
        )
        late = ticks < closed
        if late.any():
            c.late_dropped += int(late.sum())
            code[late] = -1
        order = np.argsort(code, kind="stable")
        bounds = np.searchsorted(code[order], np.arange(len(codes) + 1))
        keys = list(codes)
        by_model: dict[str, list[tuple[str, np.ndarray]]] = {}
        for g, (mid, ver) in enumerate(keys):
            sel = order[bounds[g] : bounds[g + 1]]
            if not len(sel):
                continue
            mc = self.config.models.get(mid)
            if mc is None:
                c.rejected["unknown_model"] += len(sel)
                continue
            learner = self.learners.get(mid)
            if learner is not None:
                idx = sel.tolist()
                idx = self._learn(mid, learner, [preds[i] for i in idx], ts[idx], idx)
                if not idx:
                    continue
                sel = np.array(idx, np.int64)
            by_model.setdefault(mid, []).append((ver, sel))
        for mid, groups in by_model.items():
            admission = self.admission[mid]
            names = [v for v, _ in groups]
            pos = np.concatenate([sel for _, sel in groups])
            group = np.repeat(np.arange(len(groups)), [len(sel) for _, sel in groups])
            in_order = np.argsort(pos, kind="stable")
            pos, group = pos[in_order], group[in_order]
            dest = admission.route(names, group, ts[pos])
            dest[dest < 0] = len(names)  # __other__ last
            by_dest = np.argsort(dest, kind="stable")
            bounds = np.searchsorted(dest[by_dest], np.arange(len(names) + 2)).tolist()
            for g in range(len(names) + 1):
                idx = pos[by_dest[bounds[g] : bounds[g + 1]]].tolist()
                if idx:
                    ver = names[g] if g < len(names) else OTHER
                    self._fold_predictions(
                        self._stream(mid, ver),
                        [preds[i] for i in idx],
                        ts[idx],
                        ticks[idx],
                        None if src is None else src[idx],
                    )
            for ver in admission.evicted:
                if ver not in admission.admitted:  # its joins keep the stream object; a new one if it comes back
                    self.streams.pop((mid, ver), None)
            admission.evicted.clear()

    def _learn(self, mid: str, learner: _Learner, evs: list[Prediction], ts: np.ndarray, idx: list[int]) -> list[int]:
        for j, e in enumerate(evs):
            if learner.add(e, float(ts[j])):
                mc = self.config.models[mid]
                self.layouts[mid] = S.Layout(
                    mc, build_profile(mid, mc, learner.columns, source="learnt from first events", strict=False)
                )
                del self.learners[mid]
                self.counters.reference_learning += j
                # Remembered so their interactions are not join misses.
                self._remember([evs[k].request_id for k in range(j)], np.full(j, _LEARNING, np.int64))
                self._join_order.append(
                    (float(ts[j - 1]) if j else float(ts[0]), [evs[k].request_id for k in range(j)])
                )
                self._learnt_waiting([e.request_id for e in evs[:j]])
                return idx[j:]
        self.counters.reference_learning += len(evs)
        self._remember([e.request_id for e in evs], np.full(len(evs), _LEARNING, np.int64))
        self._join_order.append((float(ts.max()), [e.request_id for e in evs]))
        self._learnt_waiting([e.request_id for e in evs])
        return []

    def _learnt_waiting(self, rids: list[str]) -> None:
        """Interactions that waited for a prediction used to learn the reference: counted as learning, not joined."""
        if self._pending:
            for rid in self._pending.keys() & set(rids):
                self.counters.reference_learning += len(self._pending.pop(rid))

    def _stream(self, mid: str, ver: str) -> _Stream:
        """The stream of an admitted version of ``mid`` (or its ``__other__``), made on first use."""
        s = self.streams.get((mid, ver))
        if s is not None:
            return s
        s = _Stream(mid, ver, self.layouts[mid], SliceSpace(self.dimensions))
        s.admission = [_Admission(cap, self.config.privacy.min_group_size, self._span) for cap in self._caps]
        s.caches = [{None: MISSING} for _ in self._attrs]
        s.cells = {}
        s.pair_cache = [{} for _ in self._pairs]
        self.streams[(mid, ver)] = s
        return s

    def _rows(self, stream: _Stream, evs: Sequence[Prediction], ts: np.ndarray) -> np.ndarray:
        """Each event's slice row per dimension (:data:`MISSING` without a value): a value has a row of its own
        while it is admitted (by recent volume, see :class:`_Admission`), else it is in ``__other__``."""
        n = len(evs)
        rows = np.zeros((n, 1 + len(self.dimensions)), dtype=np.int64)
        if not self._attr_gets:
            return rows
        # Column by column: a getter of all attributes per event, then transposing the tuples, cost 3 times more.
        attributes = [e.attributes for e in evs]
        for d, get in enumerate(self._attr_gets):
            col = list(map(get, attributes))
            rows[:, 1 + d] = self._value_rows(stream, d, col, ts)
        base = 1 + len(self._attrs)
        for p, (a, b) in enumerate(self._pairs):
            rows[:, base + p] = self._pair_rows(stream, p, rows[:, 1 + a], rows[:, 1 + b], ts)
        return rows

    def _value_rows(self, stream: _Stream, d: int, col: Sequence[str | None], ts: np.ndarray) -> np.ndarray:
        """Rows of attribute ``d`` for the raw values ``col``."""
        cache, keys = stream.caches[d], stream.space.keys
        try:
            known = np.array([cache[v] for v in col], np.int64)  # the usual batch: every value admitted already
        except KeyError:
            pass
        else:
            some = known >= 0
            rows_seen, group = _unique_inverse(known[some])
            out = self._admit(stream, d, [keys[r][1] for r in rows_seen.tolist()], some, group, ts)
            return out if out is not None else known
        coder = self.coders[self._attrs[d]]
        names: dict[str, int] = {}
        missed: dict[str, str] = {}  # raw -> value, for the values not cached
        group_l: list[int] = []
        for v in col:
            r = cache.get(v)
            if r is not None:
                group_l.append(-1 if r < 0 else names.setdefault(keys[r][1], len(names)))
                continue
            assert v is not None  # None is cached
            value = coder.code(v)
            if value == OTHER:
                group_l.append(_FOLDED)
                continue
            missed[v] = value
            group_l.append(names.setdefault(value, len(names)))
        code = np.array(group_l, np.int64)
        out = self._admit(stream, d, list(names), code >= 0, code[code >= 0], ts, folded=code == _FOLDED)
        assert out is not None
        self._remember_admitted(stream, d, cache, missed.items())
        return out

    def _pair_rows(self, stream: _Stream, p: int, ra: np.ndarray, rb: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Rows of pair ``p`` for the events' rows of its two attributes."""
        dim = len(self._attrs) + p
        # An event without either value joins no slice of the pair (key -1).
        key = np.where((ra >= 0) & (rb >= 0), ra * 1_000_003 + rb, -1)
        uniq, inv = _unique_inverse(key)
        pc, keys = stream.pair_cache[p], stream.space.keys
        names: dict[str, int] = {}
        ucode = np.empty(len(uniq), np.int64)
        unames: list[str | None] = []
        for u, k in enumerate(uniq.tolist()):
            r = pc.get(k)
            if k < 0:
                ucode[u], name = MISSING, None
            elif r is not None:
                name = keys[r][1]
                ucode[u] = names.setdefault(name, len(names))
            else:
                ka, kb = divmod(k, 1_000_003)
                va, vb = keys[ka][1], keys[kb][1]
                name = f"{va}:{vb}"
                # A pair value must still be a valid label value (<= 64 chars).
                if OTHER in (va, vb) or len(name) > 64:
                    ucode[u], name = _FOLDED, None
                else:
                    ucode[u] = names.setdefault(name, len(names))
            unames.append(name)
        code = ucode[inv.reshape(-1)]
        out = self._admit(stream, dim, list(names), code >= 0, code[code >= 0], ts, folded=code == _FOLDED)
        assert out is not None
        self._remember_admitted(
            stream, dim, pc, ((k, name) for k, name in zip(uniq.tolist(), unames, strict=True) if name is not None)
        )
        return out

    def _remember_admitted(
        self, stream: _Stream, dim: int, cache: dict[_K, int], seen: Iterable[tuple[_K, str]]
    ) -> None:
        """Cache the rows of the values (``(cache key, value)``) that have a place in dimension ``dim`` now."""
        admitted, space, dim_name = stream.admission[dim].admitted, stream.space, self.dimensions[dim]
        for key, value in seen:
            if value in admitted:
                row = space.find((dim_name, value))
                if row is not None:
                    cache[key] = row

    def _admit(
        self,
        stream: _Stream,
        dim: int,
        names: list[str],
        some: np.ndarray,
        group: np.ndarray,
        ts: np.ndarray,
        folded: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Rows of dimension ``dim``: each event in ``some`` (``group``: its value's index in ``names``) gets its
        value's row while the value is admitted, else ``__other__``'s; the rest get :data:`MISSING` or, where
        ``folded``, ``__other__``'s. None: every event of ``some`` keeps its value's row (the rows are known)."""
        space = stream.space
        admission = stream.admission[dim]
        if not len(group) and folded is None:
            return None
        dest = admission.route(names, group, ts[some]) if len(group) else group
        if folded is None and not admission.evicted and all(v in admission.admitted for v in names):
            return None
        lookup = np.empty(len(names) + 1, np.int64)  # [-1]: __other__
        for g in sorted(set(dest.tolist())):  # in value order: space.row may add rows, numbered as they come
            lookup[g] = space.row(dim, names[g] if g >= 0 else OTHER)
        out = np.full(len(some), MISSING, np.int64)
        out[some] = lookup[dest]
        other_events = int((dest < 0).sum())
        if folded is not None and folded.any():
            out[folded] = space.row(dim, OTHER)
        if dim < len(self._attrs):
            self.coders[self._attrs[dim]].folded += other_events
        if admission.evicted:  # cached rows of values that lost their place
            admission.evicted.clear()
            if dim < len(self._attrs):
                stream.caches[dim] = {None: MISSING}
            else:
                stream.pair_cache[dim - len(self._attrs)] = {}
        return out

    def _fold_predictions(
        self, stream: _Stream, evs: list[Prediction], ts: np.ndarray, ticks: np.ndarray, src: np.ndarray | None
    ) -> None:
        layout = stream.layout
        n = len(evs)
        rows = self._rows(stream, evs, ts)
        fav_set = layout.favorable
        preds = [e.prediction for e in evs]
        fav = np.array(
            [p in fav_set if f is None else f for f, p in zip([e.favorable for e in evs], preds, strict=True)],
            dtype=bool,
        )
        score_list = [e.score for e in evs]
        score = np.array(score_list, dtype=np.float64)  # None becomes NaN
        has_score = ~np.isnan(score)
        cols = [np.full(n, S.N_PRED, np.int64), np.where(fav, S.N_FAV, -1), np.where(has_score, S.N_SCORE, -1)]
        feats = [e.features for e in evs]
        for b in layout.features:
            cols.append(b.columns([f.get(b.name) for f in feats]))
        if "score" in layout.blocks:
            cols.append(layout.blocks["score"].columns(score_list))
        if "prediction" in layout.blocks:
            cols.append(layout.blocks["prediction"].columns(preds))
        weighted = None
        cb = layout.cbpe
        if cb is not None and has_score.any():
            # Performance estimation: per score bin, the count, the favourable decisions and the calibrated sum.
            filled = np.where(has_score, score, cb.edges[0])
            sbin = bin_index(filled, cb.edges)
            cols.append(np.where(has_score, cb.start + sbin, -1))
            cols.append(np.where(has_score & fav, cb.positive + sbin, -1))
            micro = np.rint(cb.calibration.apply(filled) * S.SCORE_SCALE)
            weighted = (np.where(has_score, cb.calibrated + sbin, -1), micro.astype(np.int64))
        col = np.stack(cols, axis=1)
        first = len(self._out)
        self._scatter(stream, rows, ticks, col, score=score, weighted=weighted, src=src)
        rids = [e.request_id for e in evs]
        if self._sample_k:
            self._attach_samples(stream, evs, rids, rows, ticks, first, src)
        # Remember the request for joins: its slices, tick, time and outcome.
        self._remember(rids, self._pack(stream, rows, ts, fav))
        self._remember_order(rids, ticks)
        hits = self._pending.keys() & set(rids) if self._pending else ()
        if hits:
            # Waiting interactions meet their prediction: joined or missed by event time alone (see _fold_joined).
            ordered = sorted(hits)
            waiting = [self._pending.pop(rid) for rid in ordered]
            released = [w for ws in waiting for w in ws]
            if released:
                by = None
                if src is not None:  # they count with the batch of the prediction that releases them (its first)
                    first_src = dict(zip(reversed(rids), reversed(src.tolist()), strict=True))
                    by = np.repeat(np.array([first_src[r] for r in ordered], np.int64), [len(ws) for ws in waiting])
                self._fold_joined(
                    [e for e, _, _ in released],
                    np.array([t for _, t, _ in released]),
                    np.array([k for _, _, k in released], np.int64),
                    by,
                )

    def _attach_samples(
        self,
        stream: _Stream,
        evs: list[Prediction],
        rids: list[str],
        rows: np.ndarray,
        ticks: np.ndarray,
        first: int,
        src: np.ndarray | None = None,
    ) -> None:
        """Sample up to k predictions per tick of this batch (the smallest priorities) onto the tick's partial, made
        by :meth:`_scatter` from ``self._out[first]`` on: their features, score, prediction and slice tokens (per
        source too, in a fold of several: see :meth:`_tick_keys`)."""
        k = self._sample_k
        prio = priorities(rids, self._sample_key)
        names = [b.name for b in stream.layout.features]
        keys = stream.space.keys
        attrs = rows[:, 1 : 1 + len(self._attrs)]
        group = self._tick_keys(ticks, src)
        order = np.argsort(group, kind="stable")
        ugroups, starts = _unique_first(group[order])
        bounds = [*starts.tolist(), len(order)]
        samples: dict[int, TickSample] = {}
        n_src = self._n_src if src is not None else 1
        for j, g in enumerate(ugroups.tolist()):
            t = g // n_src
            members = order[bounds[j] : bounds[j + 1]]
            chosen = members[bottom_k(prio[members], k)].tolist()
            out = []
            for i in chosen:
                e = evs[i]
                tokens = tuple(keys[r][1] if r >= 0 else None for r in attrs[i].tolist())
                out.append((*(sampled(e.features.get(nm)) for nm in names), e.score, sampled(e.prediction), *tokens))
            samples[g] = TickSample(k, [int(prio[i]) for i in chosen], out)
            stream.sampled.setdefault(t, {}).update((rids[i], int(prio[i])) for i in chosen)
        if stream.sampled:  # the evaluator keeps rows for the reported window only: older joins would be dropped
            oldest = int(ticks.max()) - self._sample_ticks - 1
            for t in [t for t in stream.sampled if t < oldest]:
                del stream.sampled[t]
        for p, s in zip(self._out[first:], self._out_src[first:], strict=True):
            g = p.tick * n_src + s
            if p.visible == p.tick and g in samples:
                p.sample = samples.pop(g)

    def _tick_keys(self, ticks: np.ndarray, src: np.ndarray | None) -> np.ndarray:
        """What events are grouped by into partials: their tick, or in a fold of several sources their tick and
        source (``tick * sources + source``)."""
        return ticks if src is None or self._n_src == 1 else ticks * self._n_src + src

    def _sample_joins(
        self,
        inters: Sequence[Interaction],
        sel: np.ndarray,
        cells: np.ndarray,
        pred_tick: np.ndarray,
        src: np.ndarray | None = None,
    ) -> None:
        """The joins of sampled predictions (their kind, and a label's value), as samples of joins only on empty
        partials of the predictions' ticks: the evaluator adds them to the rows it holds (see core.sample). ``src``:
        each interaction's source, in a fold of several."""
        found: dict[tuple[_Stream, int, int], list[tuple[int, str, object]]] = {}
        for i in sel.tolist():
            stream = self._cell_stream[int(cells[i])]
            t = int(pred_tick[i])
            e = inters[i]
            p = None if stream is None else stream.sampled.get(t, {}).get(e.request_id)
            if stream is None or p is None:
                continue
            v = sampled(e.value) if e.kind == "label" else None
            found.setdefault((stream, t, 0 if src is None else int(src[i])), []).append((p, sys.intern(e.kind), v))
        for (stream, t, k), joins in found.items():
            empty = S.Sparse(0, stream.layout.width, np.zeros(0, np.int64), np.zeros(0, np.int64))
            sample = TickSample(self._sample_k, [], [], joins)
            self._out.append(S.Partial(stream.model_id, stream.version, t, (), empty, t, sample))
            self._out_src.append(k)

    def _remember_order(self, rids: list[str], ticks: np.ndarray) -> None:
        """Queue request ids for TTL eviction tick by tick (a batch may span a long stretch of event time)."""
        order = np.argsort(ticks, kind="stable")
        uticks, starts = _unique_first(ticks[order])
        ordered = [rids[i] for i in order.tolist()]
        bounds = [*starts.tolist(), len(ordered)]
        for k, t in enumerate(uticks.tolist()):
            self._join_order.append(((t + 1) * self.tick, ordered[bounds[k] : bounds[k + 1]]))

    def _pack(self, stream: _Stream, rows: np.ndarray, ts: np.ndarray, fav: np.ndarray) -> np.ndarray:
        """Join entries of a batch: each event's cell (stream x slice rows), outcome and time in one int64."""
        rows = rows.astype(np.int32)  # as _cell_rows holds them; a cell's key is their bytes (36 for 9 dimensions)
        view = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
        keys: list[bytes]
        if len(view) <= _SMALL:  # cell ids are opaque: the order the keys are numbered in does not matter
            keys, first, inv = _unique_bytes(cast(list[bytes], view.tolist()))  # void items are bytes
        else:
            uniq, first, inv = np.unique(view, return_index=True, return_inverse=True)
            keys = uniq.tolist()
        cells = stream.cells
        if len(self._cell_stream) + len(keys) > MAX_CELLS:
            self._make_room(cells, keys)
        ids = np.empty(len(keys), np.int64)
        new: list[int] = []
        for u, key in enumerate(keys):
            cell = cells.get(key)
            if cell is None:
                if self._free_cells:
                    cell = self._free_cells.pop()
                    self._cell_stream[cell] = stream
                else:
                    cell = len(self._cell_stream)
                    self._cell_stream.append(stream)
                cells[key] = cell
                new.append(u)
            ids[u] = cell
        if new:
            end = len(self._cell_stream)
            if end > len(self._cell_rows):
                size = max(end, 2 * len(self._cell_rows))
                grown = np.zeros((size, self._cell_rows.shape[1]), np.int32)
                grown[: len(self._cell_rows)] = self._cell_rows
                self._cell_rows = grown
                refs = np.zeros(size, np.int64)
                refs[: len(self._cell_refs)] = self._cell_refs
                self._cell_refs = refs
            self._cell_rows[ids[new]] = rows[first[new]]
        ms = np.floor(ts * 1000).astype(np.int64)  # floor: the label's tick must equal the prediction's
        packed: np.ndarray = (ids[inv.ravel()] << _CELL_SHIFT) | (fav.astype(np.int64) << _TS_BITS) | (ms & _TS_MASK)
        return packed

    def _scatter(
        self,
        stream: _Stream,
        rows: np.ndarray,
        ticks: np.ndarray,
        cols: np.ndarray,
        score: np.ndarray | None = None,
        visible: np.ndarray | None = None,
        weighted: tuple[np.ndarray, np.ndarray] | None = None,
        src: np.ndarray | None = None,
    ) -> None:
        """Add one count per (event, slice row, column) into sparse tick partials; negative rows/cols are skipped.

        ``visible``: per event, the tick whose close reveals its count (one partial per tick and visible tick).
        ``src``: per event, its source in a fold of several (one partial per source too).

        Never builds the dense ``(ticks, slices, columns)`` block: a backlog batch spans many ticks of a
        wide slice space, and that block (hundreds of MB with 1,000+ slices) was the worker's peak RSS.
        """
        width = stream.layout.width
        nrows = len(stream.space)
        n_src = self._n_src if src is not None else 1
        if n_src > 1:  # grouped by tick and source alike: (tick, source) and (visible, source) as one number each
            ticks = self._tick_keys(ticks, src)
            visible = None if visible is None else self._tick_keys(visible, src)
        if visible is None or (visible == ticks).all():
            uticks, tick_idx = _unique_inverse(ticks)
            useen = uticks
        else:
            uticks, useen, tick_idx = _unique_pairs(ticks, visible)
        tick_idx = tick_idx.reshape(-1)
        base = tick_idx[:, None] * nrows + rows  # (n, slices): the (tick, row) pair of each count
        row_ok = rows >= 0
        pairs = base[row_ok]
        # Cells of the (tick, row) pairs actually present: a compact id per pair, then one bincount.
        used = np.zeros(len(uticks) * nrows, bool)
        used[pairs] = True
        pair_ids = np.flatnonzero(used)
        compact = np.cumsum(used) - 1
        keys, vals = _count_cells(compact[base], row_ok, cols, width, len(pair_ids) * width)
        extra_keys, extra_vals = [keys], [vals]
        if score is not None:
            ok = ~np.isnan(score)
            if ok.any():
                sb = base[ok]
                sv = np.repeat(score[ok], sb.shape[1])
                sb = sb.ravel()
                good = np.repeat(rows[ok] >= 0, 1, axis=0).ravel()
                micro = np.rint(sv * S.SCORE_SCALE)
                sq = np.rint(sv * sv * S.SCORE_SCALE)
                tot = np.bincount(sb[good], weights=micro[good], minlength=len(uticks) * nrows)
                tot2 = np.bincount(sb[good], weights=sq[good], minlength=len(uticks) * nrows)
                t1 = np.rint(tot[pair_ids]).astype(np.int64)
                t2 = np.rint(tot2[pair_ids]).astype(np.int64)
                pk = np.arange(len(pair_ids), dtype=np.int64) * width
                extra_keys += [pk + S.SCORE_MICRO, pk + S.SCORE_SQ_MICRO]
                extra_vals += [t1, t2]
        if weighted is not None:
            # A weight per event into a column of its own (integers: sums stay exact and mergeable).
            wcol, w = weighted
            sel = (wcol >= 0)[:, None] & row_ok
            wcell = (compact[base] * width + wcol[:, None])[sel]
            wkeys, inv = _unique_inverse(wcell)
            extra_keys.append(wkeys)
            extra_vals.append(
                np.bincount(inv.ravel(), weights=np.broadcast_to(w[:, None], sel.shape)[sel]).astype(np.int64)
            )
        if len(extra_keys) > 1:
            keys, vals = np.concatenate(extra_keys), np.concatenate(extra_vals)
            nz = vals != 0
            order = np.argsort(keys[nz], kind="stable")
            keys, vals = keys[nz][order], vals[nz][order]
        # Back from compact cells to (tick, row, column), then one sparse partial per tick.
        pair = pair_ids[keys // width]
        tick_of = pair // nrows
        flat = (pair % nrows) * width + keys % width
        bounds = np.searchsorted(tick_of, np.arange(len(uticks) + 1))
        skeys = tuple(stream.space.keys[:nrows])
        for i, (t, seen) in enumerate(zip(uticks.tolist(), useen.tolist(), strict=True)):
            lo, hi = bounds[i], bounds[i + 1]
            cells = S.Sparse(nrows, width, flat[lo:hi], vals[lo:hi])
            t, k = divmod(t, n_src)
            self._out.append(S.Partial(stream.model_id, stream.version, t, skeys, cells, seen // n_src))
            self._out_src.append(k)

    def _admit_interactions(
        self,
        inters: Sequence[Interaction],
        ts: np.ndarray,
        ticks: np.ndarray,
        closed: np.ndarray,
        early: np.ndarray | None,
    ) -> np.ndarray:
        """Count interactions, drop the late ones, and park those whose prediction comes later in the batch
        (``early``); return the indices of the rest (to fold once the batch's predictions are in)."""
        c = self.counters
        c.interactions += len(inters)
        keep = ticks >= closed
        if not keep.all():
            c.late_dropped += int((~keep).sum())
        if early is not None and early.any():
            self._wait(inters, ts, ticks, np.flatnonzero(keep & early).tolist())
            now = keep & ~early
        else:
            now = keep
        return np.flatnonzero(now)

    def _wait(self, inters: Sequence[Interaction], ts: np.ndarray, ticks: np.ndarray, at: list[int]) -> None:
        """Park interactions ``at`` (indices) until their prediction comes or their ``join.grace`` has passed."""
        pending, due = self._pending, self._pending_due
        for i in at:
            e, t = inters[i], float(ts[i])
            pending.setdefault(e.request_id, []).append((e, t, int(ticks[i])))
            heapq.heappush(due, (self._grace_tick(t), e.request_id))

    def _fold_joined(
        self, inters: Sequence[Interaction], ts: np.ndarray, ticks: np.ndarray, src: np.ndarray | None = None
    ) -> None:
        """Fold interactions into their prediction's slices; park those whose prediction is not known yet (``src``:
        each one's source, in a fold of several)."""
        c = self.counters
        found = [self._join.get(e.request_id, -1) for e in inters]
        packed = np.array(found, dtype=np.int64)
        missing = packed < 0
        if missing.any():
            self._wait(inters, ts, ticks, np.flatnonzero(missing).tolist())
        cells = packed >> _CELL_SHIFT
        learning = (cells == _LEARNING) & ~missing
        c.reference_learning += int(learning.sum())
        ok = ~missing & ~learning
        # By event time alone, whatever order Kafka delivered them in: an interaction joins a prediction stamped at
        # most `join.ttl` before it, or at most `join.grace` after it.
        lag = ts * 1000 - (packed & _TS_MASK)
        limits = self.config.join
        expired = ok & ((lag > limits.ttl * 1000) | (lag < -limits.grace * 1000))
        if expired.any():
            c.join_misses += int(expired.sum())
            ok &= ~expired
        c.join_hits += int(ok.sum())
        kinds = [e.kind for e in inters]
        col0 = np.array([_KIND_CODE[k] for k in kinds], np.int64)
        col1 = np.full(len(inters), -1, np.int64)
        col2 = np.full(len(inters), -1, np.int64)
        at = ticks.copy()
        # Seen when both the interaction's own tick and its prediction's tick have closed: what a rule sees at a tick
        # then depends on event times only, never on which batch brought the interaction or its prediction.
        pred_tick = np.floor((packed & _TS_MASK) / 1000.0 / self.tick).astype(np.int64)
        visible = np.maximum(ticks, pred_tick)
        is_label = (col0 == S.N_LABEL) & ok
        if is_label.any():
            labeled = self._labeled
            li = np.flatnonzero(is_label)
            fav = (packed[li] >> _TS_BITS) & 1
            labels = [inters[i] for i in li.tolist()]
            rids = [e.request_id for e in labels]
            # A request's first label counts; any later one (in this batch or after an earlier one) is a duplicate.
            first = dict(zip(reversed(rids), range(len(rids) - 1, -1, -1), strict=True))  # rid -> its first label
            counted = np.zeros(len(rids), bool)
            counted[list(first.values())] = True
            if not labeled.isdisjoint(first):
                counted &= np.array([r not in labeled for r in rids], bool)
            if not counted.all():
                c.duplicate_labels += int((~counted).sum())
                ok[li[~counted]] = False  # a duplicate's confusion cell below is never folded
            labeled.update(first)
            streams = self._cell_stream
            favorable = [streams[cell].layout.favorable for cell in cells[li].tolist()]
            values = [e.value for e in labels]
            truth = np.array(
                [v if v.__class__ is bool else str(v) in f for v, f in zip(values, favorable, strict=True)], bool
            )
            pred = fav == 1
            col1[li] = np.where(pred, np.where(truth, S.TP, S.FP), np.where(truth, S.FN, S.TN))
            pred_ms = packed[li] & _TS_MASK
            delay = ts[li] - pred_ms / 1000.0
            col2[li] = S.delay_bucket(delay)  # offset by the stream's delay_start below
            at[li] = np.floor(pred_ms / 1000.0 / self.tick).astype(np.int64)  # labels describe the prediction's tick
        if not ok.any():
            return
        sel = np.flatnonzero(ok)
        if self._sample_k:
            self._sample_joins(inters, sel, cells, pred_tick, src)
        # By stream: each distinct cell's stream, then the events grouped by it (in their order within a stream; the
        # streams' order does not matter, partials are summed).
        streams = self._cell_stream
        ucells, inv = np.unique(cells[sel], return_inverse=True)
        group_of: dict[int, int] = {}
        ugroup = np.array([group_of.setdefault(id(streams[cell]), len(group_of)) for cell in ucells.tolist()], np.int64)
        grouped = ugroup[inv.reshape(-1)]
        by_group = np.argsort(grouped, kind="stable")
        bounds = np.searchsorted(grouped[by_group], np.arange(len(group_of) + 1)).tolist()
        for g in range(len(group_of)):
            idx = sel[by_group[bounds[g] : bounds[g + 1]]]
            stream = streams[int(cells[idx[0]])]
            assert stream is not None
            rows = self._cell_rows[cells[idx]].astype(np.int64)
            d = col2[idx]
            col = np.stack([col0[idx], col1[idx], np.where(d >= 0, d + stream.layout.delay_start, -1)], axis=1)
            self._scatter(stream, rows, at[idx], col, visible=visible[idx], src=None if src is None else src[idx])

    def _expire(self, watermark: float) -> None:
        """Forget what no event to come can still match: what the tick closed by ``watermark`` makes unreachable.

        Every later event is late unless its tick is at or after the first open tick ``C``. A waiting interaction
        can only be joined by a prediction stamped at most ``join.grace`` after it, so once the tick of that limit
        is before ``C`` it is a join miss; a prediction can only be joined by an interaction stamped at most
        ``join.ttl`` after it, so once that limit is before ``C`` it is forgotten. Only ``join.max_entries``
        forgets a request sooner. So when this runs never changes what joins (guarantee 3 in docs/guarantees.md).
        """
        j = self.config.join
        first_open = math.floor(watermark / self.tick)
        due = self._pending_due
        if not self._pending:
            due.clear()  # every request still listed joined (or was learnt from) since
        while due and due[0][0] < first_open:
            rid = heapq.heappop(due)[1]
            waiting = self._pending.pop(rid, None)
            if waiting is None:
                continue  # it joined, or an earlier entry of the same request expired it
            still = [w for w in waiting if self._grace_tick(w[1]) >= first_open]
            self.counters.join_misses += len(waiting) - len(still)
            if still:
                self._pending[rid] = still
        open_ms = first_open * self.tick * 1000 - j.ttl * 1000  # a prediction stamped before this is out of reach
        self._forget(open_ms, j.max_entries)

    def _forget(self, open_ms: float, limit: int) -> None:
        """Forget remembered requests stamped before ``open_ms``, and the oldest while more than ``limit`` are left;
        free the cells no entry points at any more."""
        join, order = self._join, self._join_order
        gone: list[int] = []
        while order and (order[0][0] * 1000 <= open_ms or len(join) > limit):
            _, rids = order.popleft()
            for rid in rids:
                entry = join.get(rid)
                if entry is not None and ((entry & _TS_MASK) < open_ms or len(join) > limit):
                    del join[rid]
                    gone.append(entry)
                    self._labeled.discard(rid)
        if gone:
            self._count_refs(np.array(gone, np.int64), -1)

    def _remember(self, rids: list[str], entries: np.ndarray) -> None:
        """Join entries (see :meth:`_pack`) of ``rids``, a request's later entry replacing its earlier one; the
        cells' reference counts follow."""
        join = self._join
        before = len(join)
        replaced = [] if join.keys().isdisjoint(rids) else [join[r] for r in join.keys() & set(rids)]
        join.update(zip(rids, entries.tolist(), strict=True))
        if len(join) - before + len(replaced) != len(rids):  # a request twice in this batch: its last entry stays
            entries = np.array([join[r] for r in dict.fromkeys(rids)], np.int64)
        self._count_refs(entries, 1)
        if replaced:
            self._count_refs(np.array(replaced, np.int64), -1)

    def _count_refs(self, entries: np.ndarray, sign: int) -> None:
        """Add ``sign`` to the reference count of each entry's cell; free the cells left with none."""
        cells, times = _unique_inverse(entries >> _CELL_SHIFT)
        self._cell_refs[cells] += sign * np.bincount(times, minlength=len(cells))
        if sign > 0:
            return
        for cell in cells[self._cell_refs[cells] == 0].tolist():
            stream = self._cell_stream[cell]
            if stream is None:  # cell 0 (_LEARNING) belongs to no stream and is never freed
                continue
            del stream.cells[self._cell_rows[cell].tobytes()]
            self._cell_stream[cell] = None
            self._free_cells.append(cell)

    def _make_room(self, cells: dict[bytes, int], keys: list[bytes]) -> None:
        """Free enough cells for the new ones among ``keys`` (combinations of one stream's slice rows): the oldest
        remembered requests go first, an eighth of them at a time."""
        while True:
            needed = sum(k not in cells for k in keys)
            if needed <= MAX_CELLS - len(self._cell_stream) + len(self._free_cells):
                return
            before = len(self._join)
            if before:
                self._forget(-math.inf, before - max(1, before // 8))
            if len(self._join) == before:  # nothing left to forget
                raise OverflowError(f"one batch holds more than {MAX_CELLS:,} combinations of slices")

    def _grace_tick(self, t: float) -> int:
        """The tick of the last moment (``t`` + ``join.grace``) a prediction may be stamped and still join an
        interaction stamped ``t``: once it is before the first open tick, the interaction is a join miss."""
        return math.floor((t + self.config.join.grace) / self.tick)


LEAP_CONFIRM = 3
"""In a replay, events in a row stamped more than ``windows.max_future_skew`` ahead of their source's time that
move it on: the last of them is kept, the others are rejected (``timestamp_out_of_range``). One such event followed
by ordinary ones is rejected and never moves event time: one event two hours ahead cannot make the next ten
thousand late."""


def _leaps(seq: np.ndarray, start: float, skew: float, count: int) -> tuple[np.ndarray, int]:
    """Which events of ``seq`` leap too far ahead of the source's time (``start``), and the run still open."""
    clock = start
    reject = np.zeros(len(seq), bool)
    for k, t in enumerate(seq.tolist()):
        if clock == -math.inf or t <= clock + skew:
            clock, count = max(clock, t), 0
            continue
        count += 1
        if count >= LEAP_CONFIRM:
            clock, count = t, 0
        else:
            reject[k] = True
    return reject, count


def value_caps(config: Config) -> tuple[int, ...]:
    """Values with a slice row of their own per dimension (attributes, then pairs) in one stream at ingest:
    ``TRACK_FACTOR x max_values``, so the top-k of a window can change over time."""
    caps = [TRACK_FACTOR * ac.max_values for ac in config.attributes.values()]
    for a, b in config.intersections:
        caps.append(TRACK_FACTOR * max(config.attributes[a].max_values, config.attributes[b].max_values))
    return tuple(caps)


def slice_limits(config: Config) -> tuple[int, ...]:
    """Slice rows per dimension of an evaluation stream, ``__other__`` included: twice what ingest admits, so the
    values an ingest process replaced can linger (their late joins, other processes' values) before the least
    recent of them is folded into ``__other__`` (see :meth:`~driftwatch.core.evaluate.Evaluator.apply`)."""
    return tuple(2 * cap + 1 for cap in value_caps(config))


_KIND_CODE = {**S.KIND_COLUMN, "label": S.N_LABEL}
_DENSE_CELLS = 1 << 19
"""Largest count block (cells of the (tick, slice) pairs of one batch) counted densely: 4 MB of int64."""
_CHUNK_CELLS = 1 << 20
"""(event, slice, column) triples counted in one pass of :func:`_count_cells`: its temporaries are a few times this
in bytes, however large the batch (a 50,000-event batch of a wide layout made them ~40 MB, a worker's peak)."""


def _count_cells(
    cpos: np.ndarray, row_ok: np.ndarray, cols: np.ndarray, width: int, cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of compact cells (``cpos`` of each event's slice rows, times ``width``, plus each of its ``cols``;
    rows not ``row_ok`` and negative columns are skipped): the cells counted and their counts, cells ascending."""
    step = max(1, _CHUNK_CELLS // max(1, cpos.shape[1] * cols.shape[1]))
    dense: np.ndarray | None = None
    found: list[tuple[np.ndarray, np.ndarray]] = []
    for lo in range(0, len(cpos), step):
        c, ok = cols[lo : lo + step], row_ok[lo : lo + step]
        live = (cpos[lo : lo + step, :, None] * width + c[:, None, :])[ok[:, :, None] & (c >= 0)[:, None, :]]
        if cells <= _DENSE_CELLS:
            counted = np.bincount(live, minlength=cells)
            dense = counted if dense is None else np.add(dense, counted, out=dense)
        else:  # too many cells to count densely: sort instead (same result)
            found.append(np.unique(live, return_counts=True))
    if dense is not None:
        keys = np.flatnonzero(dense)
        return keys, dense[keys]
    if len(found) <= 1:
        keys, counts = found[0] if found else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        return keys, counts.astype(np.int64)
    keys, inv = np.unique(np.concatenate([k for k, _ in found]), return_inverse=True)
    counts = np.concatenate([c for _, c in found]).astype(np.int64)
    return keys, np.bincount(inv.reshape(-1), weights=counts).astype(np.int64)


def _within(ts: np.ndarray, time_range: tuple[float, float]) -> bool:
    return not len(ts) or bool(time_range[0] <= ts.min() and ts.max() <= time_range[1])


def _seconds(evs: Sequence[Prediction] | Sequence[Interaction]) -> np.ndarray:
    """Event times in epoch seconds (inlined :func:`ts_seconds`: this runs once per event)."""
    return np.array(
        [t / 1000.0 if t.__class__ is int else t.timestamp() for t in [e.ts for e in evs]],  # type: ignore[union-attr]
        dtype=np.float64,
    )
