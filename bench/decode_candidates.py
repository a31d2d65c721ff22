"""Benchmark: ways to turn a batch of JSON Lines events into columns, on the replay benchmark's file.

The ingest core needs columns (model, version, attributes, features, score, request id, time) of each batch.
Candidates, each over the same batches of 10,000 events, one thread:

- msgspec typed structs: driftwatch's decoder (validates the contract, keeps only configured attributes); what
  the pipeline decodes with, and the reference of every ratio printed here.
- msgspec structs, then columns: the same, plus reading every column the fold needs out of the structs.
- pyarrow.json: ``read_json`` over the concatenated NDJSON of a batch. It infers one type per column, and the
  contract lets ``ts`` be an RFC 3339 string or epoch milliseconds and a label's ``value`` a boolean or a string:
  on the recorded file it fails; its speed is also measured on a copy with every ``ts`` in epoch milliseconds and
  every ``value`` a string (what it would take a producer to send).
- polars: ``read_ndjson`` the same way (when installed: ``pip install polars``; not a driftwatch dependency).

Neither pyarrow nor polars validates the contract (lengths, ranges, kinds, schema version), so their figures are
what they cost before the checks the decoder makes. Compare ratios from one run, never figures across runs.

    python bench/decode_candidates.py --events 200000
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402  (thread pools must be pinned before numpy, pyarrow and polars load)
import datetime as dt  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
import pyarrow  # noqa: E402
import pyarrow.json as pa_json  # noqa: E402

from _recorded import lines_of, recorded  # noqa: E402
from driftwatch.config import load_config  # noqa: E402
from driftwatch.events import EventDecoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH = 10_000


def _normalised(lines: Sequence[bytes]) -> list[bytes]:
    """The same events with every ``ts`` in epoch milliseconds and every ``value`` a string (one type per column)."""
    out = []
    for line in lines:
        ev = msgspec.json.decode(line)
        ts = ev["ts"]
        if isinstance(ts, str):
            ev["ts"] = round(dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
        if "value" in ev and ev["value"] is not None:
            ev["value"] = str(ev["value"])
        out.append(msgspec.json.encode(ev))
    return out


def _columns_of(decoder: EventDecoder, attributes: Sequence[str], features: Sequence[str]) -> Callable[..., Any]:
    """Decode with driftwatch's decoder, then read out what the fold needs, column by column."""

    def run(batch: Sequence[bytes]) -> list[list[object]]:
        preds = decoder.decode_batch(batch).predictions
        cols: list[list[object]] = [
            [e.model_id for e in preds],
            [e.model_version for e in preds],
            [e.request_id for e in preds],
            [e.ts for e in preds],
            [e.score for e in preds],
            [e.prediction for e in preds],
        ]
        attrs = [e.attributes for e in preds]
        cols += [[getattr(a, name) for a in attrs] for name in attributes]
        feats = [e.features for e in preds]
        cols += [[f.get(name) for f in feats] for name in features]
        return cols

    return run


def _concatenated(read: Callable[[io.BytesIO], Any]) -> Callable[[Sequence[bytes]], Any]:
    return lambda batch: read(io.BytesIO(b"\n".join(batch)))


def _measure(fn: Callable[[Sequence[bytes]], Any], lines: Sequence[bytes]) -> float | str:
    """Events per second of ``fn`` over ``lines`` in batches, or why it could not read them."""
    gc.collect()
    t0 = time.perf_counter()
    try:
        for i in range(0, len(lines), BATCH):
            fn(lines[i : i + BATCH])
    except Exception as e:  # a candidate that cannot read the contract: its error is the figure
        return f"fails: {type(e).__name__}: {str(e).splitlines()[0][:90]}"
    return len(lines) / (time.perf_counter() - t0)


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=100.0, help="simulated predictions per second of event time")
    ap.add_argument("--scenario", default="complaint-spike")
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "driftwatch.example.yaml")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "bench" / "data")
    args = ap.parse_args()

    path = recorded(args.data_dir, args.scenario, args.events, args.rate)
    cfg = load_config(args.config)
    lines = lines_of(path)
    print(f"file: {path.name}  events: {len(lines):,}  batch: {BATCH:,}  one thread", flush=True)
    normal = _normalised(lines)
    decoder = EventDecoder(cfg.attributes, max_event_bytes=cfg.max_event_bytes)
    features = sorted({f for m in cfg.models.values() for f in m.features})
    read_options = pa_json.ReadOptions(use_threads=False, block_size=1 << 26)

    candidates: list[tuple[str, Callable[[Sequence[bytes]], Any], Sequence[bytes]]] = [
        ("msgspec typed structs (driftwatch)", decoder.decode_batch, lines),
        ("msgspec structs, then columns", _columns_of(decoder, cfg.attributes, features), lines),
        (
            f"pyarrow {pyarrow.__version__} json, recorded file",
            _concatenated(lambda b: pa_json.read_json(b, read_options=read_options)),
            lines,
        ),
        (
            f"pyarrow {pyarrow.__version__} json, one type per column",
            _concatenated(lambda b: pa_json.read_json(b, read_options=read_options)),
            normal,
        ),
    ]
    try:
        import polars
    except ImportError:
        print("polars is not installed (pip install polars): not measured")
    else:
        candidates += [
            (f"polars {polars.__version__} read_ndjson, recorded file", _concatenated(polars.read_ndjson), lines),
            (
                f"polars {polars.__version__} read_ndjson, one type per column",
                _concatenated(polars.read_ndjson),
                normal,
            ),
        ]

    reference: float | None = None
    print(f"{'candidate':<52} {'events/s':>10}  vs msgspec structs")
    for name, fn, data in candidates:
        rate = _measure(fn, data)
        if isinstance(rate, str):
            print(f"{name:<52} {rate}")
            continue
        reference = reference or rate
        print(f"{name:<52} {rate:>10,.0f}  {rate / reference:5.2f}")


if __name__ == "__main__":
    main()
