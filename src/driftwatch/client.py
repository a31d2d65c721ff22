"""The producer client model servers embed: validate, pseudonymise at the source, batch into envelopes.

    client = Client(config, key=secret, bootstrap="kafka:9092")
    client.start()
    client.emit_prediction(model_id="support-router", model_version="v7", request_id=rid,
                           prediction="human", score=0.73, attributes={...}, features={...})
    client.emit_interaction(request_id=rid, kind="complaint")
    client.close()   # flushes

- Every event is validated against the event contract before it is queued
  (a :class:`ValueError` names the field), and sensitive attributes are
  replaced by their keyed tokens, so raw values never reach Kafka.
- Events are grouped by the partition their ``request_id`` maps to (Kafka's
  default murmur2 partitioner, the same for both topics since they are
  co-partitioned) into newline-delimited JSON envelopes of up to
  ``envelope_size`` events, sent when full or after ``linger`` seconds.
- The model server is never blocked: ``emit_*`` only appends to a bounded
  buffer; when Kafka is slow and the buffer is full the event is dropped and
  counted in :attr:`Client.dropped`. A background thread owns the producer.

The rules every producer follows live here once, shared with ``driftwatch
sidecar`` (:mod:`driftwatch.daemon.sidecar`), so both send the same bytes'
meaning: :class:`Minimiser` (configured attributes only, sensitive values as
keyed tokens), :func:`murmur2` and :func:`partition_for` (Kafka's default
partitioner) and :func:`envelopes` / :func:`pack` (NDJSON envelopes per
partition).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec
from aiokafka import AIOKafkaProducer

from driftwatch.config import Config
from driftwatch.core.slicing import AttributeCoder, coders_from_config
from driftwatch.events import Interaction, Prediction

__all__ = ["Client", "Envelope", "Minimiser", "envelopes", "murmur2", "pack", "partition_for", "partitions_for"]

_ENC = msgspec.json.Encoder()
_S = TypeVar("_S", bound=msgspec.Struct)


class Minimiser:
    """Data minimisation at the source: only configured attributes leave, sensitive values as keyed tokens.

    The tokens are :class:`~driftwatch.core.slicing.AttributeCoder`'s (keyed
    HMAC-SHA256 with the config's privacy key), so the worker recognises them
    and never sees the raw value.
    """

    def __init__(self, config: Config, key: bytes | None) -> None:
        self.configured = frozenset(config.attributes)
        self.sensitive = tuple(a for a, ac in config.attributes.items() if ac.sensitive)
        self._sensitive = frozenset(self.sensitive)
        self._coders: dict[str, AttributeCoder] = coders_from_config(config, key)
        self._codes = tuple((a, self._coders[a].code) for a in self.sensitive)

    def attributes(self, attributes: Mapping[str, object]) -> dict[str, object]:
        """Only configured attributes, sensitive ones as keyed tokens: raw values never leave the model server."""
        sensitive, coders = self._sensitive, self._coders
        return {
            a: coders[a].code(v) if a in sensitive and isinstance(v, str) else v
            for a, v in attributes.items()
            if a in self.configured
        }

    def decoded(self, predictions: Sequence[_S]) -> list[_S]:
        """The same for predictions decoded by :class:`~driftwatch.events.EventDecoder` (whose config-shaped
        attributes have already lost unconfigured attributes): sensitive values replaced by their tokens."""
        codes, replace = self._codes, msgspec.structs.replace
        if not codes:
            return list(predictions)
        out = []
        for ev in predictions:
            attrs: Any = ev.attributes  # type: ignore[attr-defined]  # every decoded prediction has them
            tokens = {a: code(v) for a, code in codes if (v := getattr(attrs, a)) is not None}
            out.append(replace(ev, attributes=replace(attrs, **tokens)) if tokens else ev)
        return out


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{n}I") for n in range(64)]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``) as an unsigned 32-bit int.

    Equal to ``aiokafka.partitioner.murmur2`` (about twice as fast: whole words are unpacked at once).

    >>> murmur2(b"21") - 2**32, murmur2(b"foobar") - 2**32, murmur2(b"abc")
    (-973932308, -790332482, 479470107)
    """
    return _hashes((data,))[0]


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """Kafka's default partitioner for a keyed record: ``toPositive(murmur2(key)) % count``.

    librdkafka's ``murmur2_random`` and the Java client's default agree, so any producer
    keyed by ``request_id`` puts a request's prediction and interactions on one partition.

    >>> partition_for(b"foobar", range(50))
    16
    """
    return partitions_for((key,), partitions)[0]


def partitions_for(keys: Iterable[bytes], partitions: Sequence[int]) -> list[int]:
    """:func:`partition_for` of many keys at once (one call, not one per key)."""
    keys = keys if isinstance(keys, list) else list(keys)
    count = len(partitions)
    h = _one_length_hashes(keys)
    if h is not None:  # the usual: ids of one length, placed in one numpy pass
        placed: list[int] = sys.modules["numpy"].asarray(partitions)[(h & 0x7FFFFFFF) % count].tolist()
        return placed
    return [partitions[(h & 0x7FFFFFFF) % count] for h in _hashes(keys)]


_VECTOR_MIN = 16
"""Keys of one length hashed together with numpy from this many on (request ids usually share a length)."""


def _one_length_hashes(keys: list[bytes]) -> Any:
    """murmur2 of ``keys`` as a uint32 array, when the process has loaded numpy (the sidecar, a worker; the client
    never loads it into a model server) and they are at least :data:`_VECTOR_MIN` keys of one length; else None."""
    np = sys.modules.get("numpy")
    if np is None or len(keys) < _VECTOR_MIN or len(set(map(len, keys))) != 1:
        return None
    return _hash_same_length(np, keys, len(keys[0]))


def _hashes(keys: Iterable[bytes]) -> list[int]:
    """murmur2 of every key: keys of one length in bulk with numpy when the process has loaded it (see
    :func:`_one_length_hashes`), the rest one by one (:func:`_hash_each`)."""
    keys = keys if isinstance(keys, list) else list(keys)
    same = _one_length_hashes(keys)
    if same is not None:
        hashed: list[int] = same.tolist()
        return hashed
    np = sys.modules.get("numpy")
    if np is None or len(keys) < _VECTOR_MIN:
        return _hash_each(keys)
    by_length: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        by_length.setdefault(len(k), []).append(i)
    out = [0] * len(keys)
    for n, idx in by_length.items():
        group = [keys[i] for i in idx]
        hashed = _hash_same_length(np, group, n).tolist() if len(idx) >= _VECTOR_MIN else _hash_each(group)
        for i, h in zip(idx, hashed, strict=True):
            out[i] = h
    return out


def _hash_same_length(np: Any, keys: list[bytes], n: int) -> Any:
    """murmur2 of keys that are all ``n`` bytes long, as a uint32 array (numpy's uint32 products wrap as Java's do)."""
    buf = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), n)
    m = np.uint32(_M)
    h = np.full(len(keys), (0x9747B28C ^ n) & _MASK, np.uint32)
    words = n >> 2
    if words:
        w = np.ascontiguousarray(buf[:, : words * 4]).view("<u4")
        for j in range(words):
            k = w[:, j] * m
            k ^= k >> np.uint32(24)
            k *= m
            h *= m
            h ^= k
    rest = n & 3
    if rest:
        i = words << 2
        if rest == 3:
            h ^= buf[:, i + 2].astype(np.uint32) << np.uint32(16)
        if rest >= 2:
            h ^= buf[:, i + 1].astype(np.uint32) << np.uint32(8)
        h ^= buf[:, i].astype(np.uint32)
        h *= m
    h ^= h >> np.uint32(13)
    h *= m
    h ^= h >> np.uint32(15)
    return h


def _hash_each(keys: Iterable[bytes]) -> list[int]:
    """murmur2 of every key, one by one (a loop, so a batch pays no call per key)."""
    out = []
    words_of, m, mask = _WORDS, _M, _MASK
    for data in keys:
        n = len(data)
        h = 0x9747B28C ^ n
        words = n >> 2
        if words:
            unpack = words_of[words] if words < 64 else struct.Struct(f"<{words}I")
            for k in unpack.unpack_from(data):
                k = (k * m) & mask
                k ^= k >> 24
                h = ((h * m) ^ (k * m)) & mask
        rest = n & 3
        if rest:
            i = words << 2
            if rest == 3:
                h ^= data[i + 2] << 16
            if rest >= 2:
                h ^= data[i + 1] << 8
            h = ((h ^ data[i]) * m) & mask
        h ^= h >> 13
        h = (h * m) & mask
        out.append(h ^ (h >> 15))
    return out


class Envelope(NamedTuple):
    """One Kafka message: newline-delimited events of one topic that share a partition."""

    topic: str
    partition: int
    value: bytes
    events: int


def envelopes(items: Iterable[tuple[str, bytes, bytes]], partitions: Sequence[int], size: int) -> list[Envelope]:
    """Group ``(topic, request id, event json)`` items by the partition their request id maps to, in order,
    into NDJSON envelopes of up to ``size`` events (the predictions and interactions topics are co-partitioned,
    so one partition list serves both).

    >>> [(e.topic, e.events) for e in envelopes([("p", b"r1", b"{}"), ("p", b"r1", b"{}"), ("i", b"r1", b"{}")], [0], 1)]
    [('p', 1), ('p', 1), ('i', 1)]
    """
    items = list(items)
    groups: dict[tuple[str, int], list[bytes]] = {}
    group_placed(groups, items, partitions_for([rid for _, rid, _ in items], partitions))
    return cut(groups, size)


def pack(placed: Iterable[tuple[str, int, bytes]], size: int) -> list[Envelope]:
    """Group ``(topic, partition, event json)`` items, in order, into NDJSON envelopes of up to ``size`` events.

    >>> [(e.partition, e.value) for e in pack([("t", 1, b"a"), ("t", 0, b"b"), ("t", 1, b"c")], 100)]
    [(1, b'a\\nc'), (0, b'b')]
    """
    placed = list(placed)
    groups: dict[tuple[str, int], list[bytes]] = {}
    group_placed(groups, placed, [p for _, p, _ in placed])
    return cut(groups, size)


def group_placed(
    groups: dict[tuple[str, int], list[bytes]], items: Sequence[tuple[str, object, bytes]], placed: Sequence[int]
) -> None:
    """Append each ``(topic, _, event json)`` item's json to the group of its topic and partition (``placed``: the
    item's partition), in order; a batch may come in parts (the sidecar hashes its ids in slices)."""
    for (topic, _, data), p in zip(items, placed, strict=True):
        group = groups.get((topic, p))
        if group is None:
            groups[(topic, p)] = [data]
        else:
            group.append(data)


def cut(groups: Mapping[tuple[str, int], list[bytes]], size: int) -> list[Envelope]:
    """Each group's events, in order, as NDJSON envelopes of up to ``size`` events (groups in their order)."""
    out = []
    for (topic, p), events in groups.items():
        for i in range(0, len(events), size):
            chunk = events[i : i + size]
            out.append(Envelope(topic, p, b"\n".join(chunk), len(chunk)))
    return out


class Client:
    """A non-blocking, batching producer of driftwatch events (one background thread)."""

    def __init__(
        self,
        config: Config,
        *,
        key: bytes | None,
        bootstrap: str,
        envelope_size: int = 100,
        linger: float = 0.05,
        max_buffer: int = 100_000,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.envelope_size = envelope_size
        self.linger = linger
        self.max_buffer = max_buffer
        self.dropped = 0
        self.sent = 0
        self.errors = 0
        self._minimiser = Minimiser(config, key)
        self._buffer: deque[tuple[str, bytes, bytes]] = deque()  # (topic, partition key, event json)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._ids = itertools.count()

    # ----------------------------------------------------------------- public

    def start(self, timeout: float = 30.0) -> None:
        """Connect in the background thread; raise if the broker cannot be reached within ``timeout``."""
        self._thread = threading.Thread(target=self._run, name="driftwatch-client", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._failure is not None:
            raise ConnectionError(f"driftwatch client cannot reach Kafka at {self.bootstrap}: {self._failure}")

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is buffered and stop the background thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def emit_prediction(
        self,
        *,
        model_id: str,
        model_version: str,
        request_id: str,
        prediction: str,
        attributes: Mapping[str, str] | None = None,
        features: Mapping[str, float | str | None] | None = None,
        score: float | None = None,
        favorable: bool | None = None,
        ts: dt.datetime | int | None = None,
        event_id: str | None = None,
    ) -> None:
        """Validate, pseudonymise and queue one prediction (raises ValueError on a contract violation)."""
        event = {
            "type": "prediction",
            "schema_version": 1,
            "event_id": event_id or f"p-{next(self._ids)}",
            "ts": _ts(ts),
            "model_id": model_id,
            "model_version": model_version,
            "request_id": request_id,
            "prediction": prediction,
            "attributes": self._minimised(attributes or {}),
            "features": dict(features or {}),
            "score": score,
            "favorable": favorable,
        }
        self._queue(self.config.kafka.predictions.name, request_id, event, Prediction)

    def emit_interaction(
        self,
        *,
        request_id: str,
        kind: str,
        value: bool | int | str | None = None,
        ts: dt.datetime | int | None = None,
        event_id: str | None = None,
    ) -> None:
        """Validate and queue one interaction (complaint, escalation, label, ...)."""
        event = {
            "type": "interaction",
            "schema_version": 1,
            "event_id": event_id or f"i-{next(self._ids)}",
            "ts": _ts(ts),
            "request_id": request_id,
            "kind": kind,
            "value": value,
        }
        self._queue(self.config.kafka.interactions.name, request_id, event, Interaction)

    def emit_event(self, event: Mapping[str, object]) -> None:
        """Queue an already-formed event dict (the simulator's); sensitive attributes are still pseudonymised."""
        if event.get("type") == "prediction":
            attrs = event.get("attributes")
            if isinstance(attrs, dict):
                event = {**event, "attributes": self._minimised(attrs)}
            topic, typ = self.config.kafka.predictions.name, Prediction
        else:
            topic, typ = self.config.kafka.interactions.name, Interaction  # type: ignore[assignment]
        self._queue(topic, str(event.get("request_id", "")), event, typ)

    @property
    def buffered(self) -> int:
        """Events waiting to be sent."""
        return len(self._buffer)

    # ---------------------------------------------------------------- private

    def _minimised(self, attributes: Mapping[str, object]) -> dict[str, object]:
        return self._minimiser.attributes(attributes)

    def _queue(self, topic: str, request_id: str, event: Mapping[str, object], typ: type[msgspec.Struct]) -> None:
        data = _ENC.encode(event)
        try:
            msgspec.json.decode(data, type=typ)
        except msgspec.ValidationError as e:
            raise ValueError(f"invalid {typ.__name__.lower()} event: {e}") from None
        with self._lock:
            if len(self._buffer) >= self.max_buffer:
                self.dropped += 1
                return
            self._buffer.append((topic, request_id.encode(), data))
        if len(self._buffer) >= self.envelope_size:
            self._wake.set()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, max_request_size=8 * 1024 * 1024)
        try:
            await producer.start()
            parts = await producer.partitions_for(self.config.kafka.predictions.name)
        except Exception as e:  # any failure to connect is reported to start()
            self._failure = e
            self._ready.set()
            await producer.stop()
            return
        partitions = sorted(parts or {0})
        self._ready.set()
        try:
            while True:
                stopping = self._stop.is_set()
                await asyncio.get_running_loop().run_in_executor(None, self._wake.wait, self.linger)
                self._wake.clear()
                await self._drain(producer, partitions)
                if stopping:
                    break
        finally:
            await self._drain(producer, partitions)
            await producer.stop()

    async def _drain(self, producer: AIOKafkaProducer, partitions: list[int]) -> None:
        with self._lock:
            items = list(self._buffer)
            self._buffer.clear()
        if not items:
            return
        futures = []
        for env in envelopes(items, partitions, self.envelope_size):
            futures.append((await producer.send(env.topic, env.value, partition=env.partition), env.events))
        for fut, n in futures:
            try:
                await fut
                self.sent += n
            except Exception:  # a failed send is counted, never raised into the model server
                self.errors += n


def _ts(ts: dt.datetime | int | None) -> str | int:
    if ts is None:
        return int(time.time() * 1000)
    if isinstance(ts, int):
        return ts
    return ts.isoformat()
