"""The evaluation stage applies each input partition's batch once, whether it came alone or with the other
partitions of its ingest call in one message, in one chunk or several, first sent or re-sent after a restart."""

from __future__ import annotations

import threading
import zlib
from pathlib import Path

import msgspec
import pytest
import structlog

from driftwatch.config import load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import Profile, build_profile, prediction_columns
from driftwatch.core.summary import Partial
from driftwatch.daemon.recovery import EvalRecovery, WorkerContext
from driftwatch.daemon.wire import SummaryMsg, to_msgs
from driftwatch.simulate import generate

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "driftwatch.example.yaml"
SOURCES = {"in:0": (100, 149), "in:1": (200, 249)}


def _batches(n: int) -> tuple[dict[str, list[bytes]], dict[str, Profile]]:
    """Simulated events, split over the two input partitions by request id, and the models' reference profiles."""
    events = list(generate("bias", events=n, seed=9)[0])
    cfg = load_config(EXAMPLE)
    profiles = {
        mid: build_profile(mid, mc, prediction_columns(events, mid, limit=2000)) for mid, mc in cfg.models.items()
    }
    enc = msgspec.json.Encoder()
    out: dict[str, list[bytes]] = {tp: [] for tp in SOURCES}
    for e in events:
        out[list(SOURCES)[zlib.crc32(str(e["request_id"]).encode()) % 2]].append(enc.encode(e))
    return out, profiles


class _Stage:
    """An evaluation stage (the worker's EvalRecovery over a real pipeline), and what it has counted."""

    def __init__(self, key: bytes, profiles: dict[str, Profile]) -> None:
        self.core = Pipeline(load_config(EXAMPLE), key, profiles)
        context = WorkerContext(self.core.config, "127.0.0.1:1", self.core, threading.Lock(), structlog.get_logger())
        self.recovery = EvalRecovery(context, topic=None, replay=lambda *_: None)
        self.offset = 0

    def send(
        self, sources: dict[str, tuple[int, int]], parts: list[Partial], worker: str, chunks: int = 1
    ) -> list[bool]:
        """Deliver ``parts`` as a worker does (a batch per model, in ``chunks`` messages); what merge answered."""
        out = []
        for model in sorted({p.model_id for p in parts}):
            mine = [p for p in parts if p.model_id == model]
            size = -(-len(mine) // chunks)
            for i in range(chunks):
                keys, msgs = to_msgs(mine[i * size : (i + 1) * size])
                msg = SummaryMsg(worker, 0.0, sources, msgs, final=i == chunks - 1, keys=keys)
                self.offset += 1
                out.append(self.recovery.merge(msg, 0, self.offset))
        return out

    def counted(self) -> list[tuple[object, ...]]:
        self.core.flush()
        return sorted((r.name, tuple(sorted(r.labels.items())), r.value, r.n) for r in self.core.metric_rows(0.0))


@pytest.fixture
def data(pseudonym_key: bytes) -> tuple[dict[str, list[Partial]], dict[str, Profile]]:
    """The partials of both partitions folded together ("both") and of each alone (one ingest process each), and
    the models' profiles."""
    key = pseudonym_key
    batches, profiles = _batches(6_000)
    together = Pipeline(load_config(EXAMPLE), key, profiles).ingestor
    _, both = together.process_sources([(raws, tp, (float("-inf"),) * 2, None) for tp, raws in batches.items()])
    alone = {
        tp: Pipeline(load_config(EXAMPLE), key, profiles).ingestor.process(raws, tp).partials
        for tp, raws in batches.items()
    }
    assert len(both) >= 4
    return {"both": both, **alone}, profiles


def _reference(key: bytes, data: tuple[dict[str, list[Partial]], dict[str, Profile]]) -> list[tuple[object, ...]]:
    partials, profiles = data
    stage = _Stage(key, profiles)
    for tp in SOURCES:
        assert stage.send({tp: SOURCES[tp]}, partials[tp], "w1") == [True, True]
    return stage.counted()


def test_a_call_of_two_partitions_in_chunks_counts_once(
    pseudonym_key: bytes, data: tuple[dict[str, list[Partial]], dict[str, Profile]]
) -> None:
    """Chunks of a two-partition batch are held until the last; the batch re-sent whole, or partition by partition,
    is dropped."""
    partials, profiles = data
    stage = _Stage(pseudonym_key, profiles)
    assert stage.send(SOURCES, partials["both"], "w1", chunks=3) == [True] * 6  # two models, three chunks each
    assert not stage.recovery.held
    assert stage.send(SOURCES, partials["both"], "w2") == [False, False]
    for tp in SOURCES:
        assert stage.send({tp: SOURCES[tp]}, partials[tp], "w2") == [False, False]
    assert stage.counted() == _reference(pseudonym_key, data)


def test_an_unfinished_call_resent_partition_by_partition_counts_once(
    pseudonym_key: bytes, data: tuple[dict[str, list[Partial]], dict[str, Profile]]
) -> None:
    """A worker stopped after the first chunk of a two-partition batch: the partitions, re-sent one by one by the
    workers that took them over, replace it (its held chunk is dropped and pins no checkpoint)."""
    partials, profiles = data
    stage = _Stage(pseudonym_key, profiles)
    first = [p for p in partials["both"] if p.model_id == partials["both"][0].model_id][:2]
    keys, msgs = to_msgs(first)
    assert stage.recovery.merge(SummaryMsg("w1", 0.0, SOURCES, msgs, final=False, keys=keys), 0, 1)
    assert len(stage.recovery.held) == 1
    stage.offset = 1
    assert stage.send({"in:0": SOURCES["in:0"]}, partials["in:0"], "w2") == [True, True]
    assert not stage.recovery.held
    assert stage.send({"in:1": SOURCES["in:1"]}, partials["in:1"], "w3") == [True, True]
    assert stage.counted() == _reference(pseudonym_key, data)
