"""Benchmark: replay a recorded event file through decode alone and through the whole pure pipeline.

Prints events/s for both and their ratio, measured in the same run on the
same bytes (the machine is shared and noisy: compare ratios, not absolute
figures across runs). One core: numpy's thread pools are pinned to 1.

    make bench                         # 1,000,000 events, the demo config
    python bench/replay_throughput.py --events 200000 --rate 200
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402  (thread pools must be pinned before numpy loads)
import gc  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _recorded import lines_of, recorded  # noqa: E402
from driftwatch.config import load_config, load_key  # noqa: E402
from driftwatch.core.pipeline import Pipeline  # noqa: E402
from driftwatch.events import EventDecoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _batches(lines: list[bytes], size: int) -> list[list[bytes]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=100.0, help="simulated predictions per second of event time")
    ap.add_argument("--scenario", default="complaint-spike")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "driftwatch.example.yaml")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "bench" / "data")
    args = ap.parse_args()

    path = recorded(args.data_dir, args.scenario, args.events, args.rate)
    cfg = load_config(args.config)
    key = load_key(cfg.privacy).get_secret_value()
    batches = _batches(lines_of(path), args.batch)
    n = sum(len(b) for b in batches)
    print(f"file: {path.name}  events: {n:,}  batch: {args.batch:,}  size: {path.stat().st_size / 1e6:.0f} MB")

    gc.collect()
    decoder = EventDecoder(cfg.attributes, max_event_bytes=cfg.max_event_bytes)
    t0 = time.perf_counter()
    for b in batches:
        decoder.decode_batch(b)
    decode_s = time.perf_counter() - t0

    gc.collect()
    pipeline = Pipeline(cfg, key)
    t0 = time.perf_counter()
    transitions = 0
    for b in batches:
        transitions += len(pipeline.process(b)[1])
    transitions += len(pipeline.flush())
    full_s = time.perf_counter() - t0

    c = pipeline.counters
    slices = sum(len(s.space) for s in pipeline.streams.values())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"decode only     : {n / decode_s:>10,.0f} events/s  ({decode_s:.2f} s)")
    rate, ratio = n / full_s, decode_s / full_s
    print(f"whole pipeline  : {rate:>10,.0f} events/s  ({full_s:.2f} s)  target >= 150,000 {_verdict(rate >= 150_000)}")
    print(f"pipeline/decode : {ratio:>10.2f}  target >= 0.35 {_verdict(ratio >= 0.35)}")
    print(
        f"evaluations: {c.evaluations:,} ticks  slices: {slices}  alert transitions: {transitions}  "
        f"rejected: {sum(c.rejected.values())}  late: {c.late_dropped}  peak RSS: {rss_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
