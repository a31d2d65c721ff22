"""Ingestor.rebuild: a fresh ingestor rebuilt from the events before a restart continues exactly like one never stopped."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from driftwatch.config import load_config
from driftwatch.core import summary as S
from driftwatch.core.evaluate import Evaluator
from driftwatch.core.ingest import Ingestor
from driftwatch.core.profile import build_profile, prediction_columns
from driftwatch.simulate import generate

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "driftwatch.example.yaml"


@pytest.mark.parametrize(("split_p", "split_i"), [(6000, 6000), (6000, 5000), (4000, 6000)])
def test_rebuilt_ingestor_continues_exactly(split_p: int, split_i: int, pseudonym_key: bytes) -> None:
    """Rebuilding the join from the predictions and interactions before the restart counts nothing, and the rest of the stream gives the same metrics as an uninterrupted ingestor."""
    cfg = load_config(EXAMPLE)
    events = list(generate("complaint-spike", events=24_000, seed=9)[0])
    profiles = {m: build_profile(m, mc, prediction_columns(events, m, limit=2000)) for m, mc in cfg.models.items()}
    enc = msgspec.json.Encoder()
    preds = [enc.encode(e) for e in events if e["type"] == "prediction"]
    inters = [enc.encode(e) for e in events if e["type"] == "interaction"]

    def feed(ing: Ingestor, out: list[S.Partial], p: tuple[int, int], i: tuple[int, int]) -> None:
        """Alternate 500-event batches of the two topics, as Kafka partitions deliver them."""
        ip, ii = p[0], i[0]
        while ip < p[1] or ii < i[1]:
            if ip < p[1]:
                out.extend(ing.process(preds[ip : min(ip + 500, p[1])], source="p").partials)
                ip = min(ip + 500, p[1])
            if ii < i[1]:
                out.extend(ing.process(inters[ii : min(ii + 500, i[1])], source="i").partials)
                ii = min(ii + 500, i[1])

    def metrics(out: list[S.Partial], ing: Ingestor) -> dict[object, object]:
        ev = Evaluator(cfg, ing.layouts, ing.limits, ing.coders)
        ev.apply(out)
        ev.advance(10**12)
        ev.flush()
        return {(r.name, tuple(sorted(r.labels.items()))): (r.value, r.n) for r in ev.metric_rows(0.0)}

    def fresh() -> Ingestor:
        ing = Ingestor(cfg, pseudonym_key, profiles)
        ing.set_sources(["p", "i"])
        return ing

    whole, whole_out = fresh(), []
    feed(whole, whole_out, (0, len(preds)), (0, len(inters)))

    first, out = fresh(), []
    feed(first, out, (0, split_p), (0, split_i))
    before = len(out)
    second = fresh()
    assert second.rebuild(preds[:split_p]) == split_p
    assert second.rebuild(inters[:split_i]) == split_i
    second.rebuilt(first.watermark)
    assert second.counters.predictions == 0  # nothing was counted by the rebuild
    assert second.counters.interactions == 0
    feed(second, out, (split_p, len(preds)), (split_i, len(inters)))
    assert len(out) > before
    assert metrics(out, second) == metrics(whole_out, whole)
