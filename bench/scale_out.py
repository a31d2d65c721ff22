"""Benchmark: one worker against two workers of one consumer group, in events per CPU-second of the workers.

For 1 and then 2 workers, on a fresh topic pair each (4 co-partitioned
partitions, envelopes of 100 events, the same simulated events both times):

1. the workers start (``driftwatch run``, real processes) and the group
   settles: every input partition assigned, every worker ready;
2. each worker's CPU time is read (``/proc/<pid>/stat``), then the events
   are produced from this process (its CPU is not counted);
3. the run ends when one worker's since-start gauges equal those of the pure
   replay of the same events (the evaluating worker; the other only
   ingests), and every event is counted;
4. each worker's CPU time is read again.

Events per CPU-second = events / the workers' CPU seconds together. On a
2-core machine where broker, producer and workers share the cores, wall-time
rates say little about scaling; CPU per event says whether a second worker
adds overhead (re-partitioning, a second consumer, heartbeats, recovery).
Target: 2 workers >= 90% of 1 worker's events per CPU-second, and their
results equal the replay's. Figures are printed, never asserted.

    python bench/scale_out.py                 # 300,000 events, own Tansu broker (~30 s)
    python bench/scale_out.py --events 40000  # quicker, noisier

The default is 300,000 events: with 100,000 each worker spends under 2 s of
CPU, and the ratio of the same code swung from 0.84 to 0.97 between runs
(0.93-0.95 over 300,000).
    python bench/scale_out.py --bootstrap 127.0.0.1:9092

The reference profiles are built from the stream's first 2,000 predictions
per model, and metrics are since start: a reference learnt from "the first
events" would depend on which worker saw which events first.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# Bench-only pseudonymisation key (the example config pseudonymises age_band); never a real secret.
os.environ.setdefault("DRIFTWATCH_PSEUDONYM_KEY", "driftwatch-bench-only-pseudonym-key")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
import yaml  # noqa: E402
from aiokafka.partitioner import murmur2  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from driftwatch.config import Config, load_config, load_key  # noqa: E402
from driftwatch.core.pipeline import Pipeline  # noqa: E402
from driftwatch.core.profile import build_profile, prediction_columns  # noqa: E402
from driftwatch.daemon.metrics import SLICE_FAMILIES  # noqa: E402
from driftwatch.demo.broker import tansu_broker  # noqa: E402
from driftwatch.profiles import load_profiles  # noqa: E402
from throughput import (  # noqa: E402
    ENVELOPE,
    EXAMPLE,
    PARTITIONS,
    SESSION_TIMEOUT,
    _encoded_events,
    produce,
)

TARGET = 0.90
PORT = ("--metrics-port", "0")  # each worker binds a free port and logs it
Key = tuple[str, tuple[tuple[str, str], ...]]


def _scrape(port: int, *names: str) -> dict[Key, float]:
    """{(family sample name, sorted labels): value} of a worker's /metrics (only ``names`` if given)."""
    query = "?" + urllib.parse.urlencode([("name[]", n) for n in names]) if names else ""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics{query}", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(condition: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


class _Worker:
    """A ``driftwatch run`` process; its /metrics port is read from its log (it binds a free one itself)."""

    def __init__(self, config: Path, bootstrap: str, log: Path) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftwatch.cli", "run", "--config", str(config), "--bootstrap", bootstrap, *PORT],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=log.parent,  # whatever a worker leaves behind stays in the run's temporary directory
        )
        self.port = _wait(self._port, 60, "a worker's /metrics")

    def _port(self) -> int | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"a worker exited early: {self.log.read_text(errors='replace')[-2000:]}")
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict) and doc.get("event") == "metrics_listening":
                    return urllib.parse.urlsplit(doc["url"]).port
        return None

    def ready(self) -> bool:
        with contextlib.suppress(OSError):
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status == 200
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


def _config(run: str, predictions: str, interactions: str, profiles: dict[str, Path], out: Path) -> Path:
    """The example config on the run's topics, reference profiles given, metrics since start; its path."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["kafka"] = {
        **data.get("kafka", {}),
        "app_id": f"dwscale-{run}",
        "predictions": {"name": predictions, "partitions": PARTITIONS},
        "interactions": {"name": interactions, "partitions": PARTITIONS},
        **{t: {"name": f"dwscale-{run}-{t}", "partitions": 1} for t in ("summaries", "alerts", "dead_letter")},
        "ingest_state": f"dwscale-{run}-ingest-state",
        "eval_state": f"dwscale-{run}-eval-state",
        "session_timeout": f"{SESSION_TIMEOUT:g}s",
    }
    data["metrics"] = {**data.get("metrics", {}), "window": 0, "max_series": 100_000, "port": 0}
    data["alerting"] = {
        **data.get("alerting", {}),
        "audit": {"path": str(out / f"{run}-audit.jsonl"), "topic": {"name": f"dwscale-{run}-audit", "partitions": 1}},
        "control_topic": {"name": f"dwscale-{run}-control", "partitions": 1},
    }
    for mid, model in data["models"].items():
        model["reference"] = {"profile": str(profiles[mid])}
    path = out / f"{run}.json"
    path.write_text(json.dumps(data))
    return path


def _expected(config: Config, key: bytes, events: list[tuple[bool, bytes, bytes]], topics: tuple[str, str]) -> dict:
    """The since-start gauges of the pure replay of ``events``, fed source by source as the partitions deliver."""
    p = Pipeline(config, key, load_profiles(config))
    p.ingestor.set_sources([f"{t}:{i}" for t in topics for i in range(PARTITIONS)])
    for i in range(0, len(events), 5_000):
        chunk: dict[str, list[bytes]] = {}
        for is_pred, rid, data in events[i : i + 5_000]:
            src = f"{topics[0 if is_pred else 1]}:{(murmur2(rid) & 0x7FFFFFFF) % PARTITIONS}"
            chunk.setdefault(src, []).append(data)
        for src, raws in chunk.items():
            p.process(raws, source=src)
    out: dict[Key, float] = {}
    for row in p.metric_rows(0.0):
        if row.value is not None:
            family, quantile = SLICE_FAMILIES[row.name]
            labels = dict(row.labels) | ({"quantile": quantile} if quantile is not None else {})
            out[(family, tuple(sorted(labels.items())))] = row.value
    return out


def _differing(got: dict[Key, float], want: dict[Key, float]) -> int:
    return sum(1 for k, v in want.items() if k not in got or abs(got[k] - v) > 1e-12 * max(1.0, abs(v)))


def measure(
    workers: int, bootstrap: str, run: str, events: int, profiles: dict[str, Path], work: Path, timeout: float
) -> dict[str, Any]:
    """One run with ``workers`` workers; its events per CPU-second and whether it equals the replay."""
    config0 = load_config(EXAMPLE)
    key = load_key(config0.privacy).get_secret_value()
    layout = f"x{workers}"
    topics = (f"dwbench-{run}-{layout}-predictions", f"dwbench-{run}-{layout}-interactions")  # as produce names them
    cfg_path = _config(f"{run}-{layout}", *topics, profiles, work)
    config = load_config(cfg_path)
    stream = list(_encoded_events(config, key, events, wide=False))
    want = _expected(config, key, stream, topics)
    procs: list[_Worker] = []
    try:
        for i in range(workers):
            procs.append(_Worker(cfg_path, bootstrap, work / f"{layout}-worker{i}.log"))

        def settled() -> bool:
            owned = [
                _scrape(w.port, "driftwatch_input_partitions_assigned").get(
                    ("driftwatch_input_partitions_assigned", ()), 0
                )
                for w in procs
            ]
            return all(n > 0 for n in owned) and sum(owned) == 2 * PARTITIONS and all(w.ready() for w in procs)

        _wait(settled, 120, "the group to settle (every input partition assigned, every worker ready)", 0.5)
        cpu0 = [_cpu(w.proc.pid) for w in procs]
        t0 = time.perf_counter()
        asyncio.run(produce(bootstrap, config, key, run, events, {layout: ENVELOPE}))

        def equal() -> int | None:
            counted = sum(
                v
                for w in procs
                for (name, _), v in _scrape(w.port, "driftwatch_events_total").items()
                if name == "driftwatch_events_total"
            )
            if counted < events:
                return None
            for i, w in enumerate(procs):
                if not _differing(_scrape(w.port), want):
                    return i + 1
            return None

        evaluator = _wait(equal, timeout, "one worker's gauges to equal the replay", 0.5)
        seconds = time.perf_counter() - t0
        cpu = [_cpu(w.proc.pid) - c for w, c in zip(procs, cpu0, strict=True)]
    finally:
        for w in procs:
            w.stop()
    return {
        "workers": workers,
        "events": events,
        "seconds": seconds,
        "cpu_s": cpu,
        "events_per_cpu_s": events / sum(cpu),
        "evaluator": evaluator,
        "gauges": len(want),
    }


def main() -> None:
    """Run both measurements and print the ratio against its target."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000, help="events produced for each run")
    ap.add_argument("--bootstrap", help="an existing broker (default: start a Tansu broker for this run)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds a run may take after producing starts")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dwscale-")))
        bootstrap = args.bootstrap or stack.enter_context(tansu_broker())
        print(f"broker: {bootstrap}{'' if args.bootstrap else ' (Tansu, started for this run)'}", flush=True)
        config = load_config(EXAMPLE)
        key = load_key(config.privacy).get_secret_value()
        decoded = [json.loads(d) for _, _, d in _encoded_events(config, key, min(args.events, 20_000), wide=False)]
        profiles = {}
        for mid, mc in config.models.items():
            profiles[mid] = work / f"{mid}.json"
            profile = build_profile(mid, mc, prediction_columns(decoded, mid, limit=2000))
            profiles[mid].write_bytes(msgspec.json.encode(profile.to_json()))
        run = f"{int(time.time())}-{os.getpid()}"
        results = []
        for n in (1, 2):
            print(f"{n} worker{'s' if n > 1 else ''} in one group, {args.events:,} events ...", flush=True)
            r = measure(n, bootstrap, run, args.events, profiles, work, args.timeout)
            results.append(r)
            print(
                f"  {r['events_per_cpu_s']:>10,.0f} events per CPU-second  (CPU s per worker "
                f"{', '.join(f'{c:.2f}' for c in r['cpu_s'])}; {r['seconds']:.1f} s wall; worker {r['evaluator']} "
                f"evaluates; its {r['gauges']:,} gauges equal the replay's)",
                flush=True,
            )
        ratio = results[1]["events_per_cpu_s"] / results[0]["events_per_cpu_s"]
        verdict = "PASS" if ratio >= TARGET else "MISS"
        print(f"2 workers / 1 worker, events per CPU-second: {ratio:.2f}  target >= {TARGET:.2f}  {verdict}")
        print(f"load average (1, 5, 15 min): {os.getloadavg()}")


if __name__ == "__main__":
    main()
