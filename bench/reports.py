"""Benchmark: what reports cost the worker: peak RSS with samples kept against the documented bound, and time.

The same simulated stream (``--scenario``, ``--events``) is replayed through
the worker's core (the pure pipeline, which is what keeps the samples) in two
fresh processes, reports off and on, one after the other. Each reports its
peak RSS (``ru_maxrss``), its CPU seconds and, with reports on, how many rows
its samples hold. The documented bound (docs/reports.md) is
``sample_per_tick x ticks of the longest reported window x streams x
row_bytes(columns)``; the target is that the peak grows by no more than that
bound. With reports on, the process also assembles the spec of every firing
alert (on its thread, as the worker does) and hands them to the report process
(``--build``): the worker process itself never imports Evidently.

    python bench/reports.py                       # bias, 150,000 events
    python bench/reports.py --scenario complaint-spike --events 100000 --build
"""

from __future__ import annotations

import os

os.environ.setdefault("DRIFTWATCH_PSEUDONYM_KEY", "driftwatch-bench-only-pseudonym-key")

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "driftwatch.example.yaml"


def child(scenario: str, events: int, reports: bool, build: bool) -> dict[str, object]:
    """One replay in this process: peak RSS and CPU, samples held, specs assembled (and built elsewhere)."""
    import msgspec

    from driftwatch.config import load_config, load_key
    from driftwatch.core.pipeline import Pipeline
    from driftwatch.core.sample import CODE_BYTES, row_bytes, sample_ticks
    from driftwatch.simulate import generate

    cfg = load_config(CONFIG)
    code_mb = 0.0
    if reports:
        before = _rss_mb()
        import driftwatch.daemon.reports
        import driftwatch.reports.assemble  # noqa: F401

        code_mb = _rss_mb() - before
        cfg = cfg.model_copy(update={"reports": cfg.reports.model_copy(update={"enabled": True})})
    enc = msgspec.json.Encoder()
    raws = [enc.encode(e) for e in generate(scenario, events=events, seed=7)[0]]
    p = Pipeline(cfg, load_key(cfg.privacy).get_secret_value())
    specs: list[object] = []  # held only to build them (--build): a worker's queue holds at most 16
    assembled = 0
    spec_seconds = 0.0
    if reports:
        from driftwatch.reports.assemble import spec_of_alert

        def on_tick(_end: float, transitions: list[object]) -> None:
            nonlocal spec_seconds, assembled
            for t in transitions:
                started = time.perf_counter()
                spec = spec_of_alert(p.evaluator, t)  # type: ignore[arg-type]
                spec_seconds += time.perf_counter() - started
                if spec is not None:
                    assembled += 1
                    if build:
                        specs.append(spec)

        p.evaluator.on_tick = on_tick
    started = time.process_time()
    for i in range(0, len(raws), 10_000):
        p.process(raws[i : i + 10_000])
    p.flush()
    cpu = time.process_time() - started
    held = [(x.priority, x.rows) for s in p.evaluator.streams.values() for x in s.samples.values()]
    joins = [j for s in p.evaluator.streams.values() for x in s.samples.values() for j in x.joined]
    rows = sum(len(r) for _, r in held)
    # What the rows really take: each tuple, its values and its priority (strings and floats are objects of their own).
    measured = sum(
        sys.getsizeof(row) + sum(sys.getsizeof(v) for v in row) + sys.getsizeof(pr) + 8
        for prios, rs in held
        for pr, row in zip(prios, rs, strict=True)
    ) + sum(sys.getsizeof(j) + sys.getsizeof(j[0]) + 8 for j in joins)  # what joined them (kind and label shared)
    columns = max(
        (len(x.rows[0]) for s in p.evaluator.streams.values() for x in s.samples.values() if x.rows), default=0
    )
    built = 0
    build_seconds = 0.0
    if build and specs:
        from driftwatch.reports.runner import ReportRunner

        with ReportRunner(timeout=300) as runner:
            started = time.perf_counter()
            for spec in specs:
                runner.build(spec)  # type: ignore[arg-type]
                built += 1
            build_seconds = time.perf_counter() - started
    ticks = sample_ticks(cfg)
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_seconds": cpu,
        "sample_rows": rows,
        "joins": len(joins),
        "streams": len(p.evaluator.streams),
        "columns": columns,
        "bound_mb": cfg.reports.sample_per_tick * ticks * len(p.evaluator.streams) * row_bytes(columns) / 2**20,
        "code_bound_mb": CODE_BYTES / 2**20,
        "code_mb": code_mb,
        "specs": assembled,
        "spec_ms_each": 1000 * spec_seconds / max(1, assembled),
        "bytes_per_row": measured / max(1, rows),
        "built": built,
        "build_seconds_each": build_seconds / max(1, built),
        "evidently_in_worker": "evidently" in sys.modules,
        "events": len(raws),
    }


def _rss_mb() -> float:
    """This process's resident memory now (MB)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _row_bytes(columns: object) -> int:
    from driftwatch.core.sample import row_bytes

    return row_bytes(int(columns))  # type: ignore[call-overload]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="bias")
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--build", action="store_true", help="also build every firing alert's report (report process)")
    ap.add_argument("--child", choices=["off", "on"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.scenario, args.events, args.child == "on", args.build)))
        return
    out = {}
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--child", mode, "--scenario", args.scenario, "--events", str(args.events)]
        if args.build:
            cmd.append("--build")
        print(f"replaying {args.events} {args.scenario} events with reports {mode} ...", file=sys.stderr, flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    off, on = out["off"], out["on"]
    growth = on["peak_rss_mb"] - off["peak_rss_mb"]
    print(f"load average {os.getloadavg()[0]:.2f}; {on['events']} events of {args.scenario}")
    print(f"{'':28}{'reports off':>14}{'reports on':>14}")
    print(f"{'peak RSS (MB)':28}{off['peak_rss_mb']:>14.1f}{on['peak_rss_mb']:>14.1f}")
    print(f"{'replay CPU (s)':28}{off['cpu_seconds']:>14.2f}{on['cpu_seconds']:>14.2f}")
    print(
        f"sampled rows held at the end: {on['sample_rows']} in {on['streams']} streams, {on['columns']} columns, "
        f"{on['joins']} joins; {on['bytes_per_row']:.0f} bytes a row with its joins (measured, shared values counted "
        f"each time; row_bytes documents {_row_bytes(on['columns'])})"
    )
    bound = on["bound_mb"] + on["code_bound_mb"]
    print(
        f"documented size: samples {on['bound_mb']:.1f} MB (sample_per_tick x ticks x streams x row_bytes) + report "
        f"modules {on['code_bound_mb']:.1f} MB (measured here: {on['code_mb']:.1f} MB)"
    )
    print(
        f"peak RSS growth {growth:.1f} MB against the documented size {bound:.1f} MB "
        f"(ratio {growth / bound:.2f}; target <= 1.00: {'met' if growth <= bound else 'MISSED'})"
    )
    print(f"CPU ratio on/off {on['cpu_seconds'] / off['cpu_seconds']:.2f}")
    print(f"report specs assembled on the stream: {on['specs']}, {on['spec_ms_each']:.1f} ms each")
    if args.build:
        print(f"reports built in the report process: {on['built']}, {on['build_seconds_each']:.2f} s each")
    print(f"Evidently imported by the worker's process: {on['evidently_in_worker']}")


if __name__ == "__main__":
    main()
