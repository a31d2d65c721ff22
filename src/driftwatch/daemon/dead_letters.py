"""``driftwatch dead-letters``: what the workers set aside, read without joining a consumer group.

The worker sends every invalid event to ``kafka.dead_letter`` (:mod:`driftwatch.daemon.worker`): the record's value
is the event's original bytes (cut at ``DEAD_LETTER_MAX_BYTES``, with ``driftwatch-truncated: <original length>``),
no key (the original one is normally the request id, an identifier), its headers ``driftwatch-reason``, ``driftwatch-field``, ``driftwatch-source``
(topic:partition:offset of the event) and ``driftwatch-schema-version``; its timestamp is when it was dead-lettered.

This module reads that topic with a consumer that has no group (``group_id=None``: it joins nothing, commits nothing,
and the workers never notice it), up to the end offsets it finds when it starts (records added meanwhile wait for
the next run). Two reports:

- :func:`read_summary`: the whole topic from its first offset: counts by reason and by (reason, field), per partition
  totals, the oldest and newest record timestamps;
- :func:`read_tail`: the last N records (only the last N offsets of each partition are read): partition, offset,
  timestamp, reason, field, source, size, truncated flag; the value only when asked for.

Values are raw events and may hold personal data: they are shown only with ``show_values`` (escaped, at most
:data:`VALUE_CHARS` characters; only that many bytes are kept in memory). Keys (request ids) are never shown.
:func:`run_dead_letters` is the command: it prints tables (or JSON Lines) and returns the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from driftwatch._time import rfc3339
from driftwatch.config import Config
from driftwatch.daemon.offsets import end_offsets
from driftwatch.daemon.topics import bootstrap_hosts
from driftwatch.errors import StreamingError

__all__ = [
    "INTERRUPTED",
    "VALUE_CHARS",
    "DeadLetter",
    "Summary",
    "escape",
    "read_summary",
    "read_tail",
    "run_dead_letters",
]

VALUE_CHARS: Final = 200
"""At most this many characters of a value are printed (with ``show_values``)."""

INTERRUPTED: Final = 130
"""Exit code after Ctrl-C (what was read so far is printed, marked partial)."""

_TIMEOUT_MS: Final = 10_000
_BATCH: Final = 5_000
_NO_REASON: Final = "(none)"  # a record without driftwatch's headers (not written by a worker)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-letter record, without its key; ``value`` holds at most :data:`VALUE_CHARS` bytes, and only when
    values were asked for."""

    partition: int
    offset: int
    timestamp: float | None
    """Epoch seconds of the record: when the worker dead-lettered the event."""
    reason: str
    field: str
    source: str
    """``topic:partition:offset`` of the event in its input topic."""
    size: int
    """Bytes stored (the value, cut when it was too large to send)."""
    original_size: int | None
    """The event's length when it was stored cut (``driftwatch-truncated``), else None."""
    value: bytes | None = None

    @property
    def truncated(self) -> bool:
        """Whether the stored value is the event cut short."""
        return self.original_size is not None


def dead_letter(record: Any, *, keep_value: bool = False) -> DeadLetter:
    """A :class:`DeadLetter` from an aiokafka ``ConsumerRecord`` (headers read leniently: a foreign record counts
    under reason ``(none)``)."""
    headers: dict[str, bytes] = {}
    for name, raw in record.headers or ():
        headers[name] = bytes(raw or b"")

    def text(name: str) -> str:
        return headers.get(name, b"").decode("utf-8", "replace")

    value: bytes = record.value or b""
    original = text("driftwatch-truncated")
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp / 1000 if record.timestamp is not None and record.timestamp >= 0 else None,
        reason=text("driftwatch-reason") or _NO_REASON,
        field=text("driftwatch-field"),
        source=text("driftwatch-source"),
        size=len(value),
        original_size=int(original) if original.isdigit() else None,
        value=value[:VALUE_CHARS] if keep_value else None,
    )


def escape(value: bytes, limit: int = VALUE_CHARS) -> tuple[str, int]:
    """``value`` as printable text of at most ``limit`` characters, and how many of its bytes that text shows.

    UTF-8 text stays readable; a backslash, control and invisible characters, and bytes that are not UTF-8 are
    escaped (nothing can move the cursor or recolour a terminal).

    >>> escape(b'{"name": "Zo\\xc3\\xab"}\\n\\x1b[2J')
    ('{"name": "Zoë"}\\\\n\\\\x1b[2J', 21)
    >>> print(escape(b"a\\\\b\\xff" + "\\u202e".encode())[0])
    a\\\\b\\xff\\u202e
    >>> escape(b"abcdef", limit=4)
    ('abcd', 4)
    """
    out: list[str] = []
    length = 0
    used = 0
    for ch in value.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            piece, width = f"\\x{code - 0xDC00:02x}", 1
        else:
            width = len(ch.encode("utf-8"))
            if ch == "\\":
                piece = "\\\\"
            elif ch in "\n\r\t":
                piece = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch]
            elif ch.isprintable():
                piece = ch
            elif code < 0x100:
                piece = f"\\x{code:02x}"
            else:
                piece = f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
        if length + len(piece) > limit:
            break
        out.append(piece)
        length += len(piece)
        used += width
    return "".join(out), used


@dataclass(slots=True)
class PartitionTotal:
    """One partition of the dead-letter topic: its offsets when the read started and the records read."""

    partition: int
    start: int
    end: int
    count: int = 0


@dataclass(slots=True)
class Summary:
    """Counts over the dead-letter topic (``complete`` once every partition was read to its end offset)."""

    topic: str
    exists: bool = True
    complete: bool = False
    partitions: dict[int, PartitionTotal] = field(default_factory=dict)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_field: Counter[tuple[str, str]] = field(default_factory=Counter)
    oldest: float | None = None
    newest: float | None = None

    @property
    def total(self) -> int:
        """Records read."""
        return sum(self.by_reason.values())

    @property
    def expected(self) -> int:
        """Offsets between each partition's start and end when the read started (records, unless compacted)."""
        return sum(p.end - p.start for p in self.partitions.values())

    def add(self, d: DeadLetter) -> None:
        """Count one record."""
        self.by_reason[d.reason] += 1
        self.by_field[(d.reason, d.field)] += 1
        part = self.partitions.get(d.partition)
        if part is not None:
            part.count += 1
        if d.timestamp is not None:
            self.oldest = d.timestamp if self.oldest is None else min(self.oldest, d.timestamp)
            self.newest = d.timestamp if self.newest is None else max(self.newest, d.timestamp)


# ------------------------------------------------------------------------------------------------ reading


@contextlib.contextmanager
def _quiet_kafka() -> Iterator[None]:
    """Hold aiokafka's own error lines back: an unreachable broker is reported once, as a StreamingError."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _open(bootstrap: str) -> AIOKafkaConsumer:
    """A started consumer with no group: it joins nothing and commits nothing."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=_TIMEOUT_MS,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        await asyncio.wait_for(consumer.start(), _TIMEOUT_MS / 1000 + 5)
    except Exception as e:  # aiokafka raises several unrelated types for an unreachable broker
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise StreamingError(
            f"cannot reach the Kafka broker at {','.join(bootstrap_hosts(bootstrap))} ({type(e).__name__}): check kafka.bootstrap in "
            "the config (--bootstrap or DRIFTWATCH_BOOTSTRAP override it)"
        ) from e
    return consumer


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition] | None:
    """The topic's partitions; None if the topic does not exist (it is never created here)."""
    if topic not in await consumer.topics():
        return None
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


async def _read(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    on_record: Callable[[Any], None],
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Call ``on_record`` for every record with ``starts[tp] <= offset < ends[tp]``, partition by partition in
    offset order; ``on_progress`` with the offsets covered so far."""
    todo = [tp for tp in starts if ends[tp] > starts[tp]]
    consumer.assign(todo)
    for tp in todo:
        consumer.seek(tp, starts[tp])
    covered = dict.fromkeys(todo, 0)
    while todo:
        batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=_BATCH)
        for tp, records in batch.items():
            for rec in records:
                if rec.offset >= ends[tp]:
                    break
                on_record(rec)
        done = []
        for tp in todo:
            position = await consumer.position(tp)
            covered[tp] = min(position, ends[tp]) - starts[tp]
            if position >= ends[tp]:
                done.append(tp)
        if done:
            consumer.pause(*done)  # records written since the read started are left for the next run
            todo = [tp for tp in todo if tp not in done]
        if on_progress is not None:
            on_progress(sum(covered.values()))


async def read_summary(
    config: Config, bootstrap: str, summary: Summary, on_progress: Callable[[int, int], None] | None = None
) -> Summary:
    """Count the whole dead-letter topic into ``summary`` (filled as it goes, so Ctrl-C leaves what was read);
    ``on_progress(read, total)`` with offsets. Raises :class:`StreamingError` if the broker cannot be reached."""
    consumer = await _open(bootstrap)
    try:
        tps = await _partitions(consumer, config.kafka.dead_letter.name)
        if tps is None:
            summary.exists = False
            summary.complete = True
            return summary
        starts = {tp: int(o) for tp, o in (await consumer.beginning_offsets(tps)).items()}
        ends = await end_offsets(consumer, tps)
        for tp in tps:
            summary.partitions[tp.partition] = PartitionTotal(tp.partition, starts[tp], ends[tp])
        total = summary.expected
        await _read(
            consumer,
            starts,
            ends,
            lambda rec: summary.add(dead_letter(rec)),
            None if on_progress is None else lambda n: on_progress(n, total),
        )
        summary.complete = True
        return summary
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def read_tail(
    config: Config, bootstrap: str, count: int, *, keep_values: bool = False
) -> list[DeadLetter] | None:
    """The last ``count`` records of the dead-letter topic, oldest first (by timestamp, then partition and offset);
    None if the topic does not exist. Values are kept (their first :data:`VALUE_CHARS` bytes) only if asked."""
    consumer = await _open(bootstrap)
    try:
        tps = await _partitions(consumer, config.kafka.dead_letter.name)
        if tps is None:
            return None
        firsts = await consumer.beginning_offsets(tps)
        ends = await end_offsets(consumer, tps)
        starts = {tp: max(int(firsts[tp]), ends[tp] - count) for tp in tps}
        found: list[DeadLetter] = []
        await _read(consumer, starts, ends, lambda rec: found.append(dead_letter(rec, keep_value=keep_values)))
        found.sort(key=lambda d: (d.timestamp if d.timestamp is not None else float("-inf"), d.partition, d.offset))
        return found[-count:] if count else []
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


# --------------------------------------------------------------------------------------------- presenting


def _when(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


def summary_json(s: Summary) -> Iterator[dict[str, object]]:
    """The summary as JSON objects: one per reason, per (reason, field), per partition, then the totals."""
    for reason, n in sorted(s.by_reason.items(), key=lambda x: (-x[1], x[0])):
        yield {"type": "reason", "reason": reason, "count": n}
    for (reason, fld), n in sorted(s.by_field.items(), key=lambda x: (-x[1], x[0])):
        yield {"type": "field", "reason": reason, "field": fld, "count": n}
    for p in sorted(s.partitions.values(), key=lambda p: p.partition):
        yield {
            "type": "partition",
            "partition": p.partition,
            "count": p.count,
            "start_offset": p.start,
            "end_offset": p.end,
        }
    yield {
        "type": "summary",
        "topic": s.topic,
        "exists": s.exists,
        "complete": s.complete,
        "total": s.total,
        "oldest": _when(s.oldest),
        "newest": _when(s.newest),
    }


def record_json(d: DeadLetter, *, show_values: bool = False) -> dict[str, object]:
    """One record as a JSON object (``value`` and ``value_cut`` only with ``show_values``)."""
    out: dict[str, object] = {
        "type": "record",
        "partition": d.partition,
        "offset": d.offset,
        "timestamp": _when(d.timestamp),
        "reason": d.reason,
        "field": d.field,
        "source": d.source,
        "size": d.size,
        "truncated": d.truncated,
        "original_size": d.original_size,
    }
    if show_values:
        text, used = escape(d.value or b"")
        out["value"] = text
        out["value_cut"] = used < d.size
    return out


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(
            col, justify="right" if col in ("count", "partition", "offset", "size", "start", "end") else "left"
        )
    return table


def summary_tables(s: Summary) -> list[Table]:
    """The summary as tables: by reason, by field, by partition."""
    reasons = _table("by reason", "reason", "count")
    for reason, n in sorted(s.by_reason.items(), key=lambda x: (-x[1], x[0])):
        reasons.add_row(Text(reason), str(n))
    fields = _table("by field", "reason", "field", "count")
    for (reason, fld), n in sorted(s.by_field.items(), key=lambda x: (-x[1], x[0])):
        fields.add_row(Text(reason), Text(fld or "-"), str(n))
    parts = _table("by partition", "partition", "count", "start", "end")
    for p in sorted(s.partitions.values(), key=lambda p: p.partition):
        parts.add_row(str(p.partition), str(p.count), str(p.start), str(p.end))
    return [reasons, fields, parts]


def tail_table(records: list[DeadLetter], *, show_values: bool = False) -> Table:
    """The records as a table (a value column only with ``show_values``)."""
    columns = ["partition", "offset", "timestamp", "reason", "field", "source", "size", "truncated"]
    table = _table(f"last {len(records)} dead letters", *columns, *(["value"] if show_values else []))
    for d in records:
        row: list[str | Text] = [
            str(d.partition),
            str(d.offset),
            _when(d.timestamp) or "-",
            Text(d.reason),
            Text(d.field or "-"),
            Text(d.source or "-"),
            str(d.size),
            f"yes (of {d.original_size})" if d.truncated else "no",
        ]
        if show_values:
            text, used = escape(d.value or b"")
            row.append(Text(text + ("…" if used < d.size else "")))
        table.add_row(*row)
    return table


def _console(out: TextIO) -> Console:
    # Piped output (CI logs, `| less`) gets a wide table instead of rich's 80 columns.
    if out.isatty():
        return Console(file=out, highlight=False, markup=False)
    return Console(file=out, width=160, highlight=False, markup=False)


def run_dead_letters(
    config: Config,
    bootstrap: str,
    *,
    out: TextIO,
    err: Console,
    tail: int | None = None,
    show_values: bool = False,
    json_out: bool = False,
    progress: bool = False,
) -> int:
    """``driftwatch dead-letters``: print the summary (or the last ``tail`` records) to ``out``, progress to ``err``;
    return the exit code (0, or :data:`INTERRUPTED` after Ctrl-C with what was read so far).

    A missing topic is not an error: no worker has started yet, so nothing was dead-lettered (exit 0, one line saying
    so). Raises :class:`StreamingError` if the broker cannot be reached.
    """
    topic = config.kafka.dead_letter.name
    console = _console(out)

    def write(doc: dict[str, object]) -> None:
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")

    if tail is not None:
        try:
            with _quiet_kafka():
                records = asyncio.run(read_tail(config, bootstrap, tail, keep_values=show_values))
        except KeyboardInterrupt:
            err.print("interrupted", highlight=False)
            return INTERRUPTED
        if records is None:
            if json_out:
                write({"type": "summary", "topic": topic, "exists": False, "complete": True, "total": 0})
            else:
                console.print(f"no dead letters yet: topic {topic} does not exist (a worker creates it at start-up)")
            return 0
        if json_out:
            for d in records:
                write(record_json(d, show_values=show_values))
        elif records:
            console.print(tail_table(records, show_values=show_values))
        else:
            console.print(f"no dead letters in {topic}")
        return 0

    summary = Summary(topic)
    code = 0
    with Progress(
        TextColumn(f"reading {topic}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task("read", total=None)
        try:
            with _quiet_kafka():
                asyncio.run(
                    read_summary(
                        config, bootstrap, summary, lambda n, total: bar.update(task, completed=n, total=total)
                    )
                )
        except KeyboardInterrupt:
            code = INTERRUPTED
    if code:
        err.print(
            f"interrupted: {summary.total} of {summary.expected} records read, the counts below are partial",
            highlight=False,
        )
    if json_out:
        for doc in summary_json(summary):
            write(doc)
        return code
    if not summary.exists:
        console.print(f"no dead letters yet: topic {topic} does not exist (a worker creates it at start-up)")
        return code
    if not summary.total:
        console.print(f"no dead letters in {topic}")
        return code
    for table in summary_tables(summary):
        console.print(table)
    console.print(
        f"{summary.total} dead letters in {topic}, oldest {_when(summary.oldest) or '-'}, newest "
        f"{_when(summary.newest) or '-'}{'' if summary.complete else ' (partial)'}; --tail N lists the last N "
        "(without values)"
    )
    return code
