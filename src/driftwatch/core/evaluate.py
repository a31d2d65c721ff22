"""Evaluate: merge partial summaries into windows, close ticks by event time, and run the rules at each.

The second half of the pure pipeline (see :mod:`driftwatch.core.pipeline`). An
:class:`Evaluator` merges :class:`~driftwatch.core.summary.Partial`
summaries from any number of ingestors (:meth:`~Evaluator.apply`), closes
ticks as the watermark it is given passes them and evaluates every rule at the
end of each closed tick (:meth:`~Evaluator.advance`), and snapshots or
restores its state for checkpoints. What a rule looks at is
:mod:`driftwatch.core.rules`; which slices are shown,
:mod:`driftwatch.core.exposure`; change detectors,
:mod:`driftwatch.core.detectors`; report rows, :mod:`driftwatch.core.report`.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np

from driftwatch.alerts.engine import AlertEngine, AlertTransition, Candidate
from driftwatch.alerts.records import AlertRecord, AlertRecordError, decode_record, encode_record
from driftwatch.config import Config
from driftwatch.core import summary as S
from driftwatch.core.counters import Counters
from driftwatch.core.detectors import DetectorBank
from driftwatch.core.exposure import Cache, Exposure, Stream
from driftwatch.core.report import MetricRow, Reporter
from driftwatch.core.rules import RuleEvaluator
from driftwatch.core.sample import TickSample, merge_all, sample_ticks
from driftwatch.core.slicing import OTHER, AttributeCoder, SliceKey, SliceSpace
from driftwatch.core.snapshot import (
    ModelsState,
    StreamState,
    WindowState,
    matrix_from,
    matrix_to,
    sparse_from,
    sparse_to,
)

__all__ = ["MAX_TRANSITIONS", "Evaluator", "MetricRow"]

MAX_TRANSITIONS = 100_000
"""Alert transitions kept in memory for reports; older ones are on the alerts topic."""

_REMAPS = 8
"""Other slice orders whose rows a stream keeps (see :meth:`Evaluator._rows_of`)."""


class Evaluator:
    """Merges partial summaries into windows and turns closed ticks into metric values and alert transitions."""

    def __init__(
        self,
        config: Config,
        layouts: Mapping[str, S.Layout],
        limits: tuple[int, ...],
        coders: Mapping[str, AttributeCoder],
        counters: Counters | None = None,
    ) -> None:
        self.config = config
        self.tick = config.windows.tick
        self.window_ticks = tuple(round(w / self.tick) for w in config.windows.windows)
        # Samples are kept for the longest window of a rule whose alerts get reports (see keep_samples).
        self._sample_ticks = sample_ticks(config)
        self.layouts = layouts
        self.coders = coders
        self.dimensions = config.dimensions()
        self._limits = limits
        self.streams: dict[tuple[str, str], Stream] = {}
        self.counters = counters if counters is not None else Counters()
        self.engine = AlertEngine()
        self.closed_before: int | None = None  # first tick not yet closed
        self.exposure = Exposure(config, coders)
        self.detectors = DetectorBank()
        self.rules = RuleEvaluator(config, self.exposure, self.detectors, self.engine, self.tick)
        self.reporter = Reporter(config, self.exposure, self.tick)
        # The recent history (a long-running worker must not grow without bound).
        self.transitions: deque[AlertTransition] = deque(maxlen=MAX_TRANSITIONS)
        self._restored: dict[str, AlertRecord] = {}  # fingerprint -> record of an open alert, from a checkpoint
        # Called after each tick is evaluated with the tick's end (event time) and its transitions, while the windows
        # are still the ones the rules saw (reports are assembled here: see driftwatch.reports.assemble).
        self.on_tick: Callable[[float, list[AlertTransition]], None] | None = None

    def apply(self, partials: Iterable[S.Partial]) -> None:
        """Merge partial summaries: into open ticks, or (late joins and labels) into retained windows."""
        closed = self.closed_before if self.closed_before is not None else -(2**62)
        for part in partials:
            s = self.streams.get((part.model_id, part.version))
            if s is None:
                s = self.streams[(part.model_id, part.version)] = Stream(
                    part.model_id,
                    part.version,
                    self.layouts[part.model_id],
                    SliceSpace(self.dimensions, self._limits),
                    self.window_ticks,
                )
                self._sort_streams()
            n = len(part.keys)
            cells = part.cells
            have = len(s.space)
            if have < n and tuple(s.space.keys) == part.keys[:have]:
                # New slices after ours: append them in the same order while there is room, so later partials from
                # the same ingest process take the fast path below.
                for key in part.keys[have:]:
                    if key[1] != OTHER and s.space.full(self.dimensions.index(key[0])):
                        break
                    s.space.row_of(key)
            if not (n <= len(s.space) and tuple(s.space.keys[:n]) == part.keys):
                # Another slice order (another ingest process, or rows given to other values): move each cell to our
                # row of its slice key. Only rows with counts are looked up: an ingest process's rows include values
                # it no longer admits.
                rows = self._rows_of(s, part.keys, np.unique(cells.index // cells.width))
                cells = cells.renumbered(rows, len(s.space))
            if n or len(cells.index):  # a partial of sampled joins only (reports) changes no counts
                s.store.add(part.tick, cells, closed, visible=part.visible)
            if part.sample is not None and part.tick >= closed - self._sample_ticks:
                held = s.samples.get(part.tick)
                s.samples[part.tick] = part.sample if held is None else held.merge(part.sample)

    def _rows_of(self, s: Stream, keys: tuple[SliceKey, ...], used: np.ndarray) -> np.ndarray:
        """Our row of each of the rows ``used`` (sorted) of a partial in another slice order ``keys``, by position.

        A key's row changes only when a row goes to another value (:attr:`SliceSpace.renames`), so the rows found
        for an order are kept (:attr:`Stream.remaps`) and a partial whose keys all have rows there is moved without
        a lookup; otherwise every key is looked up in order, as :meth:`_row` needs (a new value never takes the row
        of a key before it in the partial)."""
        space = s.space
        held = s.remaps.get(keys)
        if held is None or held[0] != space.renames:
            held = s.remaps[keys] = (space.renames, np.full(len(keys), -1, np.int64))
            while len(s.remaps) > _REMAPS:
                del s.remaps[next(iter(s.remaps))]
        known = held[1]
        if (known[used] >= 0).all():
            return known
        rows = np.zeros(len(keys), np.int64)
        busy: set[int] = set()
        for r in used.tolist():
            rows[r] = self._row(s, keys[r], busy)
            busy.add(int(rows[r]))
        if held[0] != space.renames:  # a row went to a new value: what was kept may be stale
            s.remaps[keys] = held = (space.renames, np.full(len(keys), -1, np.int64))
        for r in used.tolist():
            if space.find(keys[r]) == rows[r]:  # not one folded into __other__ for want of a free row: asked again
                held[1][r] = rows[r]
        return rows

    def _row(self, s: Stream, key: SliceKey, busy: set[int]) -> int:
        """Our row of slice ``key``. A new value of a full dimension takes the row of the value least recently seen
        (fewest predictions in the longest window and the open ticks, then since start, then by name), whose counts
        are folded into ``__other__``: ingest admits values by recent volume, so the one it admitted last must not be
        folded here instead. Never a row in ``busy`` (those of the partial being merged)."""
        space = s.space
        found = space.find(key)
        if found is not None:
            return found
        dim = self.dimensions.index(key[0])
        if key[1] == OTHER or not space.full(dim):
            return space.row(dim, key[1])
        other = space.row(dim, OTHER)
        rows = [r for r in space.rows_by_dim[dim] if r != other and r not in busy]
        if not rows:
            return other
        recent = s.store.recent(len(space), s.layout.width)[:, S.N_PRED]
        total = s.store.window(0, len(space), s.layout.width)[:, S.N_PRED]
        victim = min(rows, key=lambda r: (int(recent[r]), int(total[r]), space.keys[r][1]))
        s.store.move_row(victim, other)
        space.rename(victim, key[1])
        self.counters.slices_retired += 1
        return victim

    def keep_samples(self, seconds: float) -> None:
        """Keep sampled rows for at least ``seconds`` of event time (a report asked for a longer window)."""
        self._sample_ticks = max(self._sample_ticks, round(seconds / self.tick))

    def _forget_samples(self, before: int) -> None:
        """Drop sampled rows of ticks that have left the longest window."""
        for s in self.streams.values():
            if s.samples and min(s.samples) < before:
                s.samples = {t: x for t, x in s.samples.items() if t >= before}

    def sample(self, model_id: str, version: str, end: int, length: int) -> TickSample | None:
        """The sampled rows of ticks ``[end - length, end)`` of a stream, at most ``reports.max_rows`` (a bottom-k
        sample of the window: uniform over its predictions); None without a stream."""
        s = self.streams.get((model_id, version))
        if s is None:
            return None
        ticks = [x for t, x in s.samples.items() if end - length <= t < end]
        return merge_all(ticks, self.config.reports.max_rows)

    def _sort_streams(self) -> None:
        """Keep streams in (model, version) order: rules, transitions and rows never depend on arrival order."""
        self.streams = dict(sorted(self.streams.items()))

    # ------------------------------------------------------------ checkpoints

    def snapshot(self, models: Iterable[str]) -> ModelsState:
        """The state of ``models`` (streams, open alerts, detectors) as plain data for a checkpoint."""
        wanted = set(models)
        streams = list(self.stream_states(wanted))
        shell = self.snapshot_shell(wanted)
        return ModelsState(shell.closed_before, streams, shell.alerts, shell.detectors, shell.records)

    def snapshot_shell(self, models: Iterable[str]) -> ModelsState:
        """:meth:`snapshot` without its streams (:meth:`stream_states` gives them one at a time)."""
        wanted = set(models)

        def mine(labels: Mapping[str, str]) -> bool:
            return labels.get("model") in wanted

        records = [encode_record(r) for r in self.open_records() if mine(r.labels)]
        return ModelsState(self.closed_before, [], self.engine.export(mine), self.detectors.export(mine), records)

    def stream_count(self, models: Iterable[str]) -> int:
        """How many streams :meth:`stream_states` yields for ``models``."""
        wanted = set(models)
        return sum(mid in wanted for mid, _ in self.streams)

    def stream_states(self, models: Iterable[str]) -> Iterator[StreamState]:
        """The streams of ``models`` as checkpoint data, one at a time, in :meth:`snapshot`'s order (a checkpoint is
        encoded stream by stream: the whole state never exists twice at once)."""
        wanted = set(models)
        for (mid, ver), s in self.streams.items():
            if mid not in wanted:
                continue
            st = s.store
            st.settle()
            yield StreamState(
                mid,
                ver,
                list(s.space.keys),
                [(t, sparse_to(m)) for t, m in sorted(st.open_cells.items())],
                [
                    WindowState(
                        w.length,
                        [(b, sparse_to(m)) for b, m in w.buckets],
                        None if w.total is None else matrix_to(w.total),
                    )
                    for w in st.windows.values()
                ],
                None if st.since is None else matrix_to(st.since),
                [(v, t, sparse_to(m)) for v, parts in sorted(st.deferred.items()) for t, m in parts],
            )

    def open_records(self) -> list[AlertRecord]:
        """The latest record of every pending or firing alert: from its last transition, or (right after a
        checkpoint was restored, before it has one here) from the checkpoint."""
        active = self.engine.active()
        latest = {t.fingerprint: t for t in self.transitions if t.fingerprint in active}
        out = [t.to_record() for t in latest.values()]
        out += [r for fp, r in self._restored.items() if fp in active and fp not in latest]
        return out

    def restore(self, state: ModelsState) -> list[str]:
        """Load a :meth:`snapshot` (replacing what is held for its models); return models skipped for want of a layout
        or because their counts were kept under another reference profile (other columns)."""
        if self.closed_before is None:
            self.closed_before = state.closed_before
        skipped: set[str] = set()
        self.drop({s.model_id for s in state.streams})
        for ss in state.streams:
            layout = self.layouts.get(ss.model_id)
            if layout is None:
                skipped.add(ss.model_id)  # a reference still being learnt is not checkpointed
                continue
            saved = [m.width for m in (ss.since, *(w.total for w in ss.windows)) if m is not None]
            if saved and saved[0] != layout.width:
                skipped.add(ss.model_id)  # counted under another profile (rebuilt since): its columns differ
                continue
            stream = Stream(
                ss.model_id, ss.version, layout, SliceSpace(self.dimensions, self._limits), self.window_ticks
            )
            for key in ss.keys[1:]:
                stream.space.row_of((key[0], key[1]))
            stream.store.open_cells = {t: sparse_from(m) for t, m in ss.open}
            for ws in ss.windows:
                w = stream.store.windows.get(ws.length)
                if w is None:
                    continue  # a window no longer configured
                w.buckets = deque((b, sparse_from(m)) for b, m in ws.buckets)
                w.total = None if ws.total is None else matrix_from(ws.total)
            stream.store.since = None if ss.since is None else matrix_from(ss.since)
            for v, t, m in ss.deferred:
                stream.store.deferred.setdefault(v, []).append((t, sparse_from(m)))
            self.streams[(ss.model_id, ss.version)] = stream
        self._sort_streams()
        self.engine.load(state.alerts)
        for data in state.records:
            with contextlib.suppress(AlertRecordError):
                record = decode_record(data)
                self._restored[record.fingerprint] = record
        self.detectors.load(state.detectors, self.config.rules)
        return sorted(skipped)

    def drop(self, models: Iterable[str]) -> None:
        """Forget ``models`` (their summary partition moved to another worker)."""
        gone = set(models)

        def mine(labels: Mapping[str, str]) -> bool:
            return labels.get("model") in gone

        for key in [k for k in self.streams if k[0] in gone]:
            del self.streams[key]
        for fp in [fp for fp, r in self._restored.items() if mine(r.labels)]:
            del self._restored[fp]
        self.engine.drop(mine)
        self.detectors.drop(mine)
        self.rules.sequential.drop(mine)
        self.rules.forget(gone)

    def advance(self, watermark: float, *, budget: int | None = None) -> list[AlertTransition]:
        """Close every tick that ends at or before ``watermark`` and evaluate the rules at each.

        ``budget``: evaluate at most that many ticks; :meth:`behind` then says whether some are left, and the next
        call with the same ``watermark`` goes on where this one stopped: the ticks evaluated, and what they give, are
        those of one call without a budget."""
        if watermark == -math.inf:
            return []
        target = math.floor(watermark / self.tick)
        if self.closed_before is None:
            # Evaluation starts at the first tick holding data, once the watermark has reached it: never at a tick
            # that depends on where the first batch happened to end.
            first = min((t for s in self.streams.values() for t in s.store.open_ticks), default=None)
            if first is None or target < first:
                return []
            self.closed_before = first
        return self._close_until(target, budget)

    def behind(self, watermark: float) -> bool:
        """Whether ticks that end at or before ``watermark`` are still to be closed (after an :meth:`advance` that its
        budget cut short)."""
        if watermark == -math.inf or self.closed_before is None:
            return False
        return self.closed_before < math.floor(watermark / self.tick)

    def _close_until(self, target: int, budget: int | None = None) -> list[AlertTransition]:
        out: list[AlertTransition] = []
        assert self.closed_before is not None
        evaluated = 0
        while self.closed_before < target and (budget is None or evaluated < budget):
            evaluated += 1
            t = self.closed_before
            # Skip idle stretches quickly, but still evaluate once so alerts can resolve as stale.
            if t + 1 < target and not any(s.store.open_ticks for s in self.streams.values()):
                t = target - 1  # closing the last tick of the stretch evicts everything older
            closed = {id(s): s.store.close(t) for s in self.streams.values()}
            self.closed_before = t + 1
            self._forget_samples(t + 1 - self._sample_ticks)
            now = self._evaluate(t, closed)
            if self.on_tick is not None:
                self.on_tick((t + 1) * self.tick, now)
            out.extend(now)
        self.transitions.extend(out)
        return out

    def flush(self) -> list[AlertTransition]:
        """Close every open tick (end of a replay): all events now count in the windows."""
        open_ticks = [t for s in self.streams.values() for t in s.store.open_ticks]
        if not open_ticks:
            return []
        if self.closed_before is None:
            self.closed_before = min(open_ticks)
        return self._close_until(max(open_ticks) + 1)

    def _evaluate(self, tick: int, closed: dict[int, S.Sparse | None]) -> list[AlertTransition]:
        self.counters.evaluations += 1
        now = (tick + 1) * self.tick
        out: list[AlertTransition] = []
        cache: Cache = {}
        for rule in self.config.rules:
            cands: list[Candidate] = []
            for s in self.streams.values():
                if rule.model not in ("*", s.model_id) or rule.version not in ("*", s.version):
                    continue
                cands.extend(self.rules.candidates(rule, s, cache, closed.get(id(s)), now))
            out.extend(self.engine.evaluate(rule, now, cands))
        return out

    # ------------------------------------------------------------------ reading

    def metric_rows(self, window: float = 0.0) -> Iterator[MetricRow]:
        """Every slice and attribute metric in ``window`` seconds (0 = since start), for reports."""
        return self.reporter.rows(self.streams.values(), window)

    def display(self, attribute: str, value: str) -> str:
        """The display name of an exposed value where the operator allowed one; else the value itself."""
        return self.exposure.display(attribute, value)
