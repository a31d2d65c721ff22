"""Benchmark: what folding one ingest call costs per event, by how its events are split over input partitions.

A worker takes a batch of Kafka messages (at most ``kafka.batch_size``, 2,000 by default, or what came within
``kafka.batch_wait``) and folds it in one ingest call. With one event per message and 8 input partitions (4 per
topic), each partition brings a few dozen to a few hundred events. This
prints CPU microseconds per event of the pure ingest (no Kafka) for the same events folded:

  (a) partition by partition, each batch alone (``Ingestor.process`` per partition, how workers folded before);
  (b) all partitions of a call in one fold (``Ingestor.process_sources``, what a worker does);
  (c) the call's events as if from one partition (one fold of the same size: the floor for (b));
  (d) batches of 10,000 events from one partition (a replay: the per-event floor).

Each figure is the median of ``--repeat`` runs over the same events; the ratios are what to compare.

    python bench/fold_calls.py                       # 60,000 events, calls of 480 over 8 partitions
    python bench/fold_calls.py --call 2000 --partitions 16
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402  (thread pools must be pinned before numpy loads)
import gc  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import msgspec  # noqa: E402

from driftwatch.client import partitions_for  # noqa: E402
from driftwatch.config import load_config, load_key  # noqa: E402
from driftwatch.core.ingest import Ingestor  # noqa: E402
from driftwatch.simulate import generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--call", type=int, default=480, help="events per ingest call (default 480)")
    ap.add_argument("--partitions", type=int, default=8, help="input partitions a call's events come from")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scenario", default="complaint-spike")
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "driftwatch.example.yaml")
    args = ap.parse_args()
    if min(args.events, args.call, args.partitions, args.repeat) < 1:
        ap.error("--events, --call, --partitions and --repeat must be at least 1")

    cfg = load_config(args.config)
    key = load_key(cfg.privacy).get_secret_value()
    print(f"simulating {args.events:,} {args.scenario} events ...", flush=True)
    events = list(generate(args.scenario, events=args.events, seed=11)[0])
    enc = msgspec.json.Encoder()
    raws = [enc.encode(e) for e in events]
    # As the client and Kafka's default partitioner place them: a request's events on one partition.
    parts = partitions_for([str(e["request_id"]).encode() for e in events], range(args.partitions))
    sources = [f"in:{k}" for k in range(args.partitions)]
    calls = []
    for i in range(0, len(raws), args.call):
        chunk = list(zip(raws[i : i + args.call], parts[i : i + args.call], strict=True))
        calls.append([[raw for raw, p in chunk if p == k] for k in range(args.partitions)])

    def alone(ing: Ingestor) -> None:
        for batches in calls:
            for raws_k, src in zip(batches, sources, strict=True):
                ing.process(raws_k, src, live=True, clock=ing.clock_of(src))

    def together(ing: Ingestor) -> None:
        for batches in calls:
            ing.process_sources([(b, s, ing.clock_of(s), None) for b, s in zip(batches, sources, strict=True)])

    def one_source(ing: Ingestor) -> None:
        for batches in calls:
            ing.process([raw for b in batches for raw in b], sources[0], live=True, clock=ing.clock_of(sources[0]))

    def large(ing: Ingestor) -> None:
        for i in range(0, len(raws), 10_000):
            ing.process(raws[i : i + 10_000], sources[0], live=True, clock=ing.clock_of(sources[0]))

    def cost(fold: Callable[[Ingestor], None], n_sources: int) -> float:
        """Median CPU microseconds per event of ``fold`` over every event, each run on a fresh ingestor."""
        runs = []
        for _ in range(args.repeat):
            ing = Ingestor(cfg, key)
            ing.set_sources(sources[:n_sources])
            gc.collect()
            t0 = time.process_time()
            fold(ing)
            runs.append((time.process_time() - t0) / len(raws) * 1e6)
        return statistics.median(runs)

    per_call = len(raws) / len(calls)
    print(
        f"{len(calls):,} calls of ~{per_call:,.0f} events over {args.partitions} partitions "
        f"(~{per_call / args.partitions:,.0f} each); CPU µs per event, median of {args.repeat}:",
        flush=True,
    )
    figures = {}
    for name, fold, n in (
        ("(a) each partition alone", alone, args.partitions),
        ("(b) one fold per call", together, args.partitions),
        ("(c) one partition, same calls", one_source, 1),
        ("(d) batches of 10,000", large, 1),
    ):
        figures[name[:3]] = cost(fold, n)
        print(f"  {name:<32} {figures[name[:3]]:6.1f} µs/event", flush=True)
    a, b, c, d = (figures[k] for k in ("(a)", "(b)", "(c)", "(d)"))
    print(f"  (a)/(b) {a / b:.2f}: what folding a call's partitions together saves")
    print(f"  (b)/(c) {b / c:.2f}: what keeping each partition's partials apart costs")
    print(f"  (c)/(d) {c / d:.2f}: what a call's size costs against large batches")


if __name__ == "__main__":
    main()
