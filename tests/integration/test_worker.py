"""`driftwatch run` against a real broker: metrics equal the pure replay, bad events are dead-lettered."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

from driftwatch.config import Config, load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.daemon.metrics import SLICE_FAMILIES
from driftwatch.daemon.topics import ensure_topics
from driftwatch.daemon.worker import DEAD_LETTER_MAX_BYTES
from driftwatch.profiles import load_profiles
from driftwatch.simulate import generate

from .conftest import WorkerProcess, log_events, produce, reference_profiles, samples, unique_config, wait_for

PARTITIONS = 4


def _config_with_profiles(
    tmp_path: Path, example: Path, name: str, events: list[dict[str, object]], **kafka: object
) -> Path:
    cfg_path = unique_config(tmp_path, example, name, **kafka)
    data = yaml.safe_load(cfg_path.read_text())
    reference_profiles(data, example, events, tmp_path)
    data["metrics"] = {"window": 0, "max_series": 100000}  # since start: every closed tick
    cfg_path.write_text(json.dumps(data))
    return cfg_path


def _create_topics(bootstrap: str, cfg: Config) -> None:
    asyncio.run(ensure_topics(bootstrap, cfg.kafka))


def _partition(request_id: str) -> int:
    return (murmur2(request_id.encode()) & 0x7FFFFFFF) % PARTITIONS


def _replay(cfg_path: Path, events: list[dict[str, object]], key: bytes) -> Pipeline:
    """The pure replay, fed source by source as Kafka partitions deliver them (same watermark semantics)."""
    enc = msgspec.json.Encoder()
    cfg = load_config(cfg_path)
    p = Pipeline(cfg, key, load_profiles(cfg))
    topic = {"prediction": cfg.kafka.predictions.name, "interaction": cfg.kafka.interactions.name}
    sources = [f"{t}:{i}" for t in topic.values() for i in range(PARTITIONS)]
    p.ingestor.set_sources(sources)
    for i in range(0, len(events), 5_000):
        chunk: dict[str, list[bytes]] = {}
        for e in events[i : i + 5_000]:
            chunk.setdefault(f"{topic[str(e['type'])]}:{_partition(str(e['request_id']))}", []).append(enc.encode(e))
        for src, raws in chunk.items():
            p.process(raws, source=src)
    return p


def _open_alerts(expected: Pipeline) -> Counter[tuple[str, ...]]:
    """(rule, state, model, version) of the replay's pending and firing alerts."""
    return Counter(
        (rule, state, labels.get("model", ""), labels.get("version", ""))
        for rule, state, labels in expected.engine.open_alerts()
    )


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _alerts_seen(worker: WorkerProcess, s: Samples | None = None) -> Counter[tuple[str, ...]]:
    """(rule, state, model, version) of the alerts a worker's /metrics shows open (``s``: a scrape already read)."""
    return Counter(
        {
            (d["alertname"], d["state"], d["model"], d["version"]): int(v)
            for (name, labels), v in (s if s is not None else samples(worker.scrape())).items()
            if name == "driftwatch_alerts" and v
            for d in [dict(labels)]
        }
    )


def test_worker_metrics_equal_the_replay(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str], pseudonym_key: bytes
) -> None:
    """Events produced to Kafka (single events and envelopes) end as /metrics gauges equal to the pure replay of the same events."""
    events = list(generate("bias", events=30_000, seed=21)[0])
    # 64 KiB of message values per ingest call: batches of envelopes (~25 KB each) are folded in several calls.
    cfg_path = _config_with_profiles(tmp_path, example_config, "equal", events, batch_bytes=65_536)
    cfg = load_config(cfg_path)
    expected = _replay(cfg_path, events, pseudonym_key)

    _create_topics(kafka_bootstrap, cfg)
    # First a third of the events one per message, then the rest in envelopes of 100 (in order: one producer at a time).
    third = len(events) // 3
    for envelope, part in ((1, events[:third]), (100, events[third:])):
        produce(cfg, pseudonym_key, kafka_bootstrap, part, envelope)

    worker = WorkerProcess(cfg_path, kafka_bootstrap, worker_env, tmp_path / "worker.log")
    try:
        evaluations = expected.counters.evaluations

        expected_gauges = _expected_gauges(expected)

        def mismatches() -> list[tuple[object, float | None, float]]:
            return _mismatches(worker, expected_gauges)

        open_alerts = _open_alerts(expected)

        def alerts_seen() -> Counter[tuple[str, ...]]:
            return _alerts_seen(worker)

        def caught_up() -> bool:
            """Every gauge equals the replay's value (the evaluator has merged every event), and so do the open
            alerts: the rules saw the same data at every tick, however Kafka batched and interleaved it."""
            s = samples(worker.scrape())  # one scrape for both: a full one costs the worker ~0.1 s of CPU
            return not _mismatches(worker, expected_gauges, s) and _alerts_seen(worker, s) == open_alerts

        try:
            wait_for(
                caught_up, 90, "the worker's gauges to equal the replay", interval=1.0
            )  # a full scrape costs the worker ~0.1 s of CPU
        except AssertionError:
            health = {
                f"{k[0]}{dict(k[1])}": v for k, v in samples(worker.scrape()).items() if k[0].endswith("_total") and v
            }
            raise AssertionError(
                f"{len(mismatches())} gauges differ, e.g. {mismatches()[:3]}; alerts {alerts_seen()} against "
                f"the replay's {open_alerts}; health {health}"
            ) from None
        got = samples(worker.scrape())
    finally:
        assert worker.stop() == 0, worker.log.read_text()[-3000:]

    compared = len(expected_gauges)
    assert compared > 500
    assert got[("driftwatch_evaluations_total", ())] == evaluations
    firing = {t.labels["alertname"] for t in expected.transitions if t.state == "firing"}
    assert "selection_rate_disparity" in firing
    for rule in firing:
        # driftwatch_alerts is per model version: summed, the rule has a firing alert.
        per_version = [
            v
            for (name, labels), v in got.items()
            if name == "driftwatch_alerts" and ("alertname", rule) in labels and ("state", "firing") in labels
        ]
        assert sum(per_version) >= 1, (rule, per_version)
    # SIGTERM checkpoints the evaluation state first: whoever takes the summary partition over re-applies nothing.
    events = [e["event"] for e in log_events(worker.log.read_text())]
    assert "checkpoint_written" in events[events.index("stopping") :], events[-10:]


def test_malformed_events_are_dead_lettered(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str]
) -> None:
    """Bad JSON, wrong types, missing fields, unknown schema versions, oversized and 1,000-deep events go to the
    dead-letter topic with reasons (so do events stamped in the year 9999, in 1970 or two hours ahead of the wall clock) but never their values in headers (one too large to send is stored cut, with a
    flag); the valid ones around them all count."""
    cfg_path = unique_config(tmp_path, example_config, "dlq")
    cfg = load_config(cfg_path)
    good = {
        "type": "interaction",
        "schema_version": 1,
        "event_id": "i",
        "ts": 1_795_000_000_000,
        "request_id": "r-1",
        "kind": "complaint",
    }
    bad = {
        b'{"type": "interaction", "schema_ver': "invalid_json",
        json.dumps({**good, "ts": "yesterday"}).encode(): "invalid_field",
        json.dumps({k: v for k, v in good.items() if k != "request_id"}).encode(): "missing_field",
        json.dumps({**good, "schema_version": 2}).encode(): "unsupported_schema_version",
        json.dumps({**good, "event_id": "x" * 70_000}).encode(): "oversized",
        json.dumps({**good, "event_id": "y" * 1_500_000}).encode(): "oversized",  # past what a producer may send
        b'{"a":' * 1000 + b"1" + b"}" * 1000: "too_deep",
        json.dumps({**good, "kind": "555-0100-private"}).encode(): "invalid_field",
        json.dumps({**good, "event_id": "future", "ts": "9999-12-31T23:59:59Z"}).encode(): "timestamp_out_of_range",
        json.dumps({**good, "event_id": "past", "ts": 0}).encode(): "timestamp_out_of_range",
        # Two hours ahead of the wall clock (live, the wall clock is the reference).
        json.dumps({**good, "event_id": "ahead", "ts": int(time.time() * 1000) + 7_200_000}).encode(): (
            "timestamp_out_of_range"
        ),
    }

    async def produce_and_read() -> list[tuple[bytes, dict[str, bytes]]]:
        await ensure_topics(kafka_bootstrap, cfg.kafka)
        prod = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4_000_000)
        await prod.start()
        for n, raw in enumerate(bad):
            await prod.send_and_wait(
                cfg.kafka.interactions.name, json.dumps({**good, "event_id": f"ok-{n}"}).encode(), key=b"r-1"
            )
            await prod.send_and_wait(cfg.kafka.interactions.name, raw, key=b"r-1")
        await prod.stop()
        return []

    asyncio.run(produce_and_read())
    worker = WorkerProcess(cfg_path, kafka_bootstrap, worker_env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: (
                samples(worker.scrape("driftwatch_events_total")).get(
                    ("driftwatch_events_total", (("kind", "interaction"),)), 0
                )
                >= len(bad)
            ),
            60,
            "the valid interactions to be counted",
            interval=0.3,
        )
        s = samples(worker.scrape())
        for reason, count in Counter(bad.values()).items():
            assert s[("driftwatch_events_rejected_total", (("reason", reason),))] == count
    finally:
        assert worker.stop() == 0, worker.log.read_text()[-3000:]

    async def read_dlq() -> list[tuple[bytes, dict[str, bytes]]]:
        cons = AIOKafkaConsumer(
            cfg.kafka.dead_letter.name,
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await cons.start()
        out = []
        try:
            batch = await cons.getmany(timeout_ms=5000)
            for recs in batch.values():
                out.extend((r.value, dict(r.headers)) for r in recs)
        finally:
            await cons.stop()
        return out

    dlq = asyncio.run(read_dlq())
    assert {h["driftwatch-reason"].decode() for _, h in dlq} == set(bad.values())
    assert len(dlq) == len(bad)
    assert sum("driftwatch-truncated" in h for _, h in dlq) == 1  # the 1.5 MB event, stored cut
    for value, headers in dlq:
        if "driftwatch-truncated" in headers:
            (original,) = [raw for raw in bad if len(raw) == int(headers["driftwatch-truncated"])]
            assert value == original[: len(value)]
            assert len(value) == DEAD_LETTER_MAX_BYTES
        else:
            original = value
        assert bad[original] == headers["driftwatch-reason"].decode()  # the original bytes, with the reason
        assert headers["driftwatch-source"].decode().startswith(cfg.kafka.interactions.name + ":")
        assert "driftwatch-message" not in headers
        assert not any(b"555-0100" in h or b"xxxxxxxx" in h for h in headers.values())


def _mismatches(
    worker: WorkerProcess, want: dict[Any, float], s: Samples | None = None
) -> list[tuple[object, float | None, float]]:
    """Gauges of ``worker`` missing or differing from ``want`` (relative 1e-12: the same sums, in another order;
    ``s``: a scrape already read)."""
    if s is None:
        s = samples(worker.scrape())
    out = []
    for k, v in want.items():
        got = s.get(k)
        if got is None or abs(got - v) > 1e-12 * max(1.0, abs(v)):
            out.append((k, got, v))
    return out


def _expected_gauges(expected: Pipeline) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for row in expected.metric_rows(0.0):
        if row.value is None:
            continue
        family, quantile = SLICE_FAMILIES[row.name]
        labels = dict(row.labels)
        if quantile is not None:
            labels["quantile"] = quantile
        out[(family, tuple(sorted(labels.items())))] = row.value
        if row.name == "selection_rate":  # the slice's predictions: a count, the easiest difference to read
            out[("driftwatch_predictions", tuple(sorted(row.labels.items())))] = float(row.n)
    return out


def test_join_through_kafka(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str], pseudonym_key: bytes
) -> None:
    """Interactions after their prediction and before it (within grace) join; after the TTL or without a prediction they are join misses."""
    cfg_path = _config_with_profiles(
        tmp_path, example_config, "join", list(generate("baseline", events=6_000, seed=3)[0])
    )
    data = yaml.safe_load(cfg_path.read_text())
    data["join"] = {"ttl": "60s", "grace": "30s", "max_entries": 100_000}
    for t in ("predictions", "interactions"):
        data["kafka"][t]["partitions"] = 1  # one partition each: the order below is the order consumed
    cfg_path.write_text(json.dumps(data))
    cfg = load_config(cfg_path)
    t0 = 1_795_000_000_000

    def pred(rid: str, ms: int) -> dict[str, object]:
        return {
            "type": "prediction",
            "schema_version": 1,
            "event_id": f"p-{rid}",
            "ts": ms,
            "model_id": "support-router",
            "model_version": "v7",
            "request_id": rid,
            "prediction": "ai",
            "attributes": {"region": "EU"},
        }

    def inter(rid: str, ms: int) -> dict[str, object]:
        return {
            "type": "interaction",
            "schema_version": 1,
            "event_id": f"i-{rid}",
            "ts": ms,
            "request_id": rid,
            "kind": "complaint",
        }

    preds = [pred("after", t0), pred("ttl", t0 + 1_000), pred("before", t0 + 8_000)]
    preds += [pred(f"fill-{k}", t0 + 10_000 * k) for k in range(2, 40)]  # event time moves on to t0 + 390 s
    inters = [
        inter("after", t0 + 5_000),
        inter("before", t0 + 6_000),
        inter("ttl", t0 + 200_000),
        inter("orphan", t0 + 210_000),
    ]
    inters += [inter(f"fill-{k}", t0 + 10_000 * k + 1) for k in range(25, 40)]

    async def produce() -> None:
        await ensure_topics(kafka_bootstrap, cfg.kafka)
        prod = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await prod.start()
        # The early interaction is on Kafka before its prediction.
        for e in inters:
            await prod.send_and_wait(
                cfg.kafka.interactions.name, json.dumps(e).encode(), key=str(e["request_id"]).encode()
            )
        for e in preds:
            await prod.send_and_wait(
                cfg.kafka.predictions.name, json.dumps(e).encode(), key=str(e["request_id"]).encode()
            )
        await prod.stop()

    asyncio.run(produce())
    worker = WorkerProcess(cfg_path, kafka_bootstrap, worker_env, tmp_path / "worker.log")
    try:

        def joined() -> tuple[float, float] | None:
            s = samples(worker.scrape("driftwatch_join_total"))
            hit = s.get(("driftwatch_join_total", (("outcome", "hit"),)), 0)
            miss = s.get(("driftwatch_join_total", (("outcome", "miss"),)), 0)
            return (hit, miss) if hit + miss >= len(inters) else None

        hit, miss = wait_for(joined, 60, "every interaction to be joined or missed", interval=0.3)
    finally:
        assert worker.stop() == 0, worker.log.read_text()[-3000:]
    fills = len(inters) - 4
    assert (hit, miss) == (2 + fills, 2)


def _wait_mid_stream(worker: WorkerProcess, predictions: int) -> None:
    """Wait until ``worker`` has written a checkpoint and counted a fifth of the predictions (but maybe not all)."""

    def mid_stream() -> bool:
        got = samples(worker.scrape("driftwatch_events_total", "driftwatch_checkpoints_written_total"))
        seen = got.get(("driftwatch_events_total", (("kind", "prediction"),)), 0)
        return got.get(("driftwatch_checkpoints_written_total", ()), 0) >= 1 and seen >= 0.2 * predictions

    try:
        wait_for(mid_stream, 120, "the first worker to checkpoint and be mid-stream", interval=0.02)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{worker.scrape()[-3000:]}\n{worker.log.read_text()[-2000:]}") from None


def test_rebalance_mid_stream_equals_the_replay(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str], pseudonym_key: bytes
) -> None:
    """A second worker joining mid-stream takes partitions over (state recovered from the first's intents and checkpoints); the evaluating worker ends with exactly the replay's values."""
    events = list(generate("complaint-spike", events=10_000, seed=12)[0])
    cfg_path = _config_with_profiles(
        tmp_path, example_config, "rebalance", events, batch_size=300, checkpoint_interval="1s"
    )
    cfg = load_config(cfg_path)
    want = _expected_gauges(_replay(cfg_path, events, pseudonym_key))
    predictions = sum(1 for e in events if e["type"] == "prediction")
    half = len(events) // 2

    _create_topics(kafka_bootstrap, cfg)
    workers = [WorkerProcess(cfg_path, kafka_bootstrap, worker_env, tmp_path / "a.log")]
    try:
        produce(cfg, pseudonym_key, kafka_bootstrap, events[:half], 1)

        _wait_mid_stream(workers[0], predictions)
        workers.append(WorkerProcess(cfg_path, kafka_bootstrap, worker_env, tmp_path / "b.log"))

        def split() -> bool:
            owned = [
                samples(w.scrape("driftwatch_input_partitions_assigned")).get(
                    ("driftwatch_input_partitions_assigned", ()), 0
                )
                for w in workers
            ]
            return all(n > 0 for n in owned) and sum(owned) == 2 * PARTITIONS

        wait_for(split, 90, "the group to rebalance over both workers", interval=0.5)
        produce(cfg, pseudonym_key, kafka_bootstrap, events[half:], 1)

        def matching_worker() -> int | None:
            for i, w in enumerate(workers):
                if not _mismatches(w, want):
                    return i + 1
            return None

        try:
            wait_for(
                matching_worker, 120, "one worker's gauges to equal the replay", interval=1.0
            )  # full scrapes of both workers: ~0.1 s of CPU each
        except AssertionError:
            bad = [len(_mismatches(w, want)) for w in workers]
            raise AssertionError(
                f"gauges differing per worker {bad} of {len(want)}\n"
                + "\n".join(w.log.read_text()[-1500:] for w in workers)
            ) from None
        logs = "".join(w.log.read_text() for w in workers)
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]
    # The joining worker took partitions over from intents.
    assert any(e["event"] == "recovered" and e.get("stage") == "input" for e in log_events(logs)), logs[-2000:]


def _status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def test_idle_workers_turn_ready_on_their_metrics_port_even_without_partitions(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str]
) -> None:
    """Without any traffic, /healthz answers and /readyz turns 200 on the metrics port (no API needed) once
    partitions are recovered. Three workers, the consumed topics of one partition each (the two input topics are
    assigned together, as the join needs): at least one gets no partition at all, and still turns ready (a rollout
    with more replicas than partitions must not wait on it)."""
    one = {"partitions": 1}
    cfg_path = unique_config(
        tmp_path,
        example_config,
        "spare",
        predictions={"name": "spare-predictions", **one},
        interactions={"name": "spare-interactions", **one},
    )
    _create_topics(kafka_bootstrap, load_config(cfg_path))
    workers = [WorkerProcess(cfg_path, kafka_bootstrap, worker_env, tmp_path / f"w{i}.log") for i in range(3)]
    try:

        def all_ready() -> bool:
            return all(_status(f"http://127.0.0.1:{w.port}/readyz") == 200 for w in workers)

        assert all(_status(f"http://127.0.0.1:{w.port}/healthz") == 200 for w in workers)
        wait_for(all_ready, 90, "every worker to turn ready", interval=0.5)
        scrapes = [w.scrape() for w in workers]
        assert all("driftwatch_build_info" in text for text in scrapes)  # /metrics is served beside the probes
        owned = [samples(text).get(("driftwatch_input_partitions_assigned", ()), 0) for text in scrapes]
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0, 0]
    assert sorted(owned)[0] == 0, owned  # one of them owns no input partition
    assert not list(tmp_path.glob("*-data")), "a worker left Faust's data dir in its working directory"
