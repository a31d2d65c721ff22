"""Benchmark: ``driftwatch sidecar`` response time, throughput, and sidecar -> worker against client -> worker.

A ``driftwatch sidecar`` process (the CLI, as deployed) produces to a broker;
this process plays the model server, posting NDJSON batches of 100 simulated
events (``complaint-spike``) over keep-alive connections:

(1) response time  open loop at a fixed 20,000 events/s (200 posts/s of 100
                   events) for ``--latency-seconds``: p50/p99 of each post's
                   round trip as the poster sees it (target: p99 <= 5 ms);
(2) throughput     closed loop, ``--concurrency`` posters, ``--events`` events:
                   wall events/s from the first post until Kafka acknowledged
                   the last event (the sidecar's own counter), and events per
                   CPU-second of the sidecar process, its one core's rate
                   (target: >= 100,000 events/s);
(3) worker ratio   the same events end to end into a ``driftwatch run`` worker
                   (already in its group), once through the Python
                   :class:`~driftwatch.client.Client`, once posted through a
                   sidecar: events/s from the first event sent until the
                   worker's /metrics counted all of them, and sidecar/client
                   (target: >= 0.8). The worker runs on CPU 0 alone and what
                   feeds it (broker, posters, client, sidecar) on the other
                   CPUs, as deployed: a sidecar sits in the model server's pod,
                   not on the worker's core (``--no-pin``: all share every
                   CPU). Events per worker CPU-second are printed beside.

If the throughput target is missed (or with ``--profile``), a further
throughput run against a sidecar in this process, its event loop thread under
cProfile for exactly the run, prints the top functions. Figures are printed,
never asserted: the machines are shared and noisy (the load average is
printed with them), compare ratios.

    python bench/sidecar.py                                   # own Tansu broker, 200,000 events
    python bench/sidecar.py --events 50000 --latency-seconds 5
    python bench/sidecar.py --events 50000 --latency-seconds 5 --repeat 3    # medians of 3 rounds of (2), (3)
    python bench/sidecar.py --bootstrap 127.0.0.1:9092 --profile
"""

from __future__ import annotations

import os

# Bench-only pseudonymisation key (the example config pseudonymises age_band); never a real secret.
os.environ.setdefault("DRIFTWATCH_PSEUDONYM_KEY", "driftwatch-bench-only-pseudonym-key")

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import yaml
from prometheus_client.parser import text_string_to_metric_families

from driftwatch.client import Client
from driftwatch.config import load_config
from driftwatch.daemon.sidecar import Sidecar
from driftwatch.daemon.topics import ensure_topics
from driftwatch.demo.broker import free_port, kafka_cluster
from driftwatch.simulate import generate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "driftwatch.example.yaml"
BATCH = 100
RATE = 20_000
TARGET_P99_MS = 5.0
TARGET_RATE = 100_000
TARGET_RATIO = 0.8


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _produced(url: str) -> float:
    s = _samples(url)
    return sum(v for (name, _), v in s.items() if name == "driftwatch_sidecar_events_produced_total")


def _counted(url: str) -> float:
    s = _samples(url)
    return sum(v for (name, _), v in s.items() if name == "driftwatch_events_total")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ready(base: str) -> bool:
    with contextlib.suppress(OSError):  # urllib's HTTPError (a 503) is an OSError too
        return bool(urllib.request.urlopen(base + "/readyz", timeout=1).status == 200)
    return False


def _wait(condition: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _config(work: Path, name: str) -> Path:
    """The example config with topics of its own (4 co-partitioned input partitions)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    run = f"bench-sc-{name}-{uuid.uuid4().hex[:6]}"
    data["kafka"] = {
        "app_id": run,
        "predictions": {"name": f"{run}-predictions", "partitions": 4},
        "interactions": {"name": f"{run}-interactions", "partitions": 4},
        "dead_letter": {"name": f"{run}-dead-letter", "partitions": 1},
        "summaries": {"name": f"{run}-summaries", "partitions": 1},
        "alerts": {"name": f"{run}-alerts", "partitions": 1},
        "ingest_state": f"{run}-ingest-state",
        "eval_state": f"{run}-eval-state",
        "session_timeout": "2s",
    }
    data["alerting"]["audit"] = {"path": str(work / f"{run}-audit.jsonl"), "topic": {"name": f"{run}-audit"}}
    data["alerting"]["control_topic"] = {"name": f"{run}-control"}
    data["sidecar"] = {"buffer_events": 1_000_000, "buffer_bytes": 1 << 30}
    path = work / f"{run}.yaml"
    path.write_text(json.dumps(data))
    return path


@contextlib.contextmanager
def _process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def sidecar(config: Path, bootstrap: str, work: Path) -> Iterator[tuple[str, int]]:
    """A `driftwatch sidecar` process, ready; yields its base URL and pid."""
    port = free_port()
    args = [sys.executable, "-m", "driftwatch.cli", "sidecar", "--config", str(config), "--bootstrap", bootstrap]
    args += ["--port", str(port)]
    with _process(args, work / f"sidecar-{port}.log") as proc:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"sidecar exited: {(work / f'sidecar-{port}.log').read_text()[-2000:]}")
            return _ready(base)

        _wait(ready, 60, "the sidecar to be ready", 0.1)
        yield base, proc.pid


@contextlib.contextmanager
def worker(config: Path, bootstrap: str, work: Path, cpu: int | None = None) -> Iterator[tuple[str, int]]:
    """A `driftwatch run` process that owns every input partition (on CPU ``cpu`` alone, if given); yields its
    /metrics URL and pid."""
    port = free_port()
    args = [sys.executable, "-m", "driftwatch.cli", "run", "--config", str(config), "--bootstrap", bootstrap]
    if cpu is not None:  # from its first thread on (taskset execs: the pid stays the worker's)
        args = ["taskset", "--cpu-list", str(cpu), *args]
    with _process([*args, "--metrics-port", str(port)], work / f"worker-{port}.log") as proc:
        url = f"http://127.0.0.1:{port}/metrics"

        def owns_all() -> bool:
            with contextlib.suppress(OSError):
                return _samples(url).get(("driftwatch_input_partitions_assigned", ()), 0) == 8
            return False

        _wait(owns_all, 120, "the worker to own all 8 input partitions", 0.2)
        yield url, proc.pid


def _descendants(pid: int) -> list[int]:
    """Every process started by ``pid``, and by those, and so on."""
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split():
                out += [int(child), *_descendants(int(child))]
    return out


def pin_feeders(cpus: set[int]) -> None:
    """Every thread of this process and of the processes it started (an own broker) onto ``cpus``; processes
    started later inherit it."""
    for pid in [os.getpid(), *_descendants(os.getpid())]:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)


def _bodies(events: list[dict[str, object]]) -> list[bytes]:
    enc = msgspec.json.Encoder()
    return [b"\n".join(enc.encode(e) for e in events[i : i + BATCH]) for i in range(0, len(events), BATCH)]


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    async with session.post(url, data=body, headers={"Content-Type": "application/x-ndjson"}) as r:
        await r.read()
        return r.status


async def fixed_rate(base: str, bodies: list[bytes], seconds: float) -> dict[str, Any]:
    """Open loop: a post of 100 events every 1/200 s; each post's round trip, as the model server sees it."""
    url = base + "/v1/events"
    interval = BATCH / RATE
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        for body in bodies[:20]:  # open the keep-alive connections before the clock runs
            await _post(session, url, body)

        async def one(body: bytes) -> None:
            t0 = time.perf_counter()
            status = await _post(session, url, body)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1

        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        n = int(seconds * RATE / BATCH)
        for i in range(n):
            delay = start + i * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
        took = loop.time() - start
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "posts": n,
        "events_per_s": n * BATCH / took,
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "max_ms": latencies[-1] * 1000,
        "statuses": statuses,
    }


async def closed_loop(base: str, bodies: list[bytes], concurrency: int) -> int:
    """Every body posted once by ``concurrency`` posters as fast as answers come; the number of 202s."""
    url = base + "/v1/events"
    queue = list(reversed(bodies))
    accepted = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def poster() -> None:
            nonlocal accepted
            while queue:
                body = queue.pop()
                while (status := await _post(session, url, body)) == 429:
                    await asyncio.sleep(0.05)
                accepted += status == 202

        await asyncio.gather(*(poster() for _ in range(concurrency)))
    return accepted


def throughput(base: str, pid: int, bodies: list[bytes], events: int, concurrency: int) -> dict[str, Any]:
    """Closed-loop posting until Kafka acknowledged every event: wall rate and the sidecar's CPU seconds."""
    metrics = base + "/metrics"
    before = _produced(metrics)
    cpu0, t0 = _cpu_seconds(pid), time.perf_counter()
    posted = asyncio.run(closed_loop(base, bodies, concurrency))
    t_posted = time.perf_counter() - t0
    _wait(lambda: _produced(metrics) - before >= events, 300, "Kafka to acknowledge every event")
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds(pid) - cpu0
    return {
        "events": events,
        "posts": posted,
        "post_seconds": t_posted,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "sidecar_cpu_s": cpu,
        "events_per_cpu_s": events / max(cpu, 1e-9),
    }


def via_client(config: Path, bootstrap: str, events: list[dict[str, object]], metrics: str) -> float:
    """Seconds from the first event handed to the Python client until the worker counted all of them."""
    cfg = load_config(config)
    client = Client(cfg, key=os.environ["DRIFTWATCH_PSEUDONYM_KEY"].encode(), bootstrap=bootstrap)
    client.start()
    t0 = time.perf_counter()
    for e in events:
        client.emit_event(e)
    client.close()
    _wait(lambda: _counted(metrics) >= len(events), 600, "the worker to count the client's events", 0.05)
    return time.perf_counter() - t0


def via_sidecar(base: str, bodies: list[bytes], events: int, metrics: str, concurrency: int) -> float:
    """Seconds from the first post to the sidecar until the worker counted all of them."""
    t0 = time.perf_counter()
    asyncio.run(closed_loop(base, bodies, concurrency))
    _wait(lambda: _counted(metrics) >= events, 600, "the worker to count the sidecar's events", 0.05)
    return time.perf_counter() - t0


def profiled_throughput(config: Path, bootstrap: str, bodies: list[bytes], events: int, concurrency: int) -> None:
    """A throughput run against a sidecar on a thread of this process, profiled for the run alone; print the top."""
    cfg = load_config(config)
    cfg = cfg.model_copy(update={"sidecar": cfg.sidecar.model_copy(update={"port": 0})})
    loop = asyncio.new_event_loop()
    side = Sidecar(cfg, os.environ["DRIFTWATCH_PSEUDONYM_KEY"].encode(), bootstrap=bootstrap)
    thread = threading.Thread(target=loop.run_forever, name="sidecar", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(side.start(), loop).result(30)
    base = f"http://127.0.0.1:{side.port}"
    _wait(lambda: _ready(base), 60, "the sidecar to be ready", 0.1)
    profiler = cProfile.Profile(time.thread_time)  # CPU of the sidecar thread, not the poster's or waits
    loop.call_soon_threadsafe(profiler.enable)  # cProfile follows the thread that enables it: the sidecar's loop
    try:
        asyncio.run(closed_loop(base, bodies, concurrency))
        _wait(lambda: side.produced >= events, 300, "Kafka to acknowledge every event")
    finally:
        asyncio.run_coroutine_threadsafe(_disable(profiler), loop).result(30)
        asyncio.run_coroutine_threadsafe(side.stop(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
    print("(2') a sidecar's event loop under cProfile for one throughput run, top functions by own time:", flush=True)
    pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(25)


async def _disable(profiler: cProfile.Profile) -> None:
    profiler.disable()


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _round(r: int, rounds: int) -> str:
    return f", round {r + 1} of {rounds}" if rounds > 1 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="events for the throughput and worker phases")
    ap.add_argument("--latency-seconds", type=float, default=10.0, help="length of the fixed-rate phase")
    ap.add_argument("--concurrency", type=int, default=8, help="closed-loop posters")
    ap.add_argument("--bootstrap", help="an existing broker (default: start a Tansu broker for this run)")
    ap.add_argument("--profile", action="store_true", help="profile a throughput run even if the target is met")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of (2) and (3), each printed; the verdicts use the medians (the order of client and sidecar "
        "alternates between rounds of (3))",
    )
    ap.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="in (3), let the worker share every CPU with what feeds it (default: the worker on CPU 0 alone, the "
        "broker, posters, client and sidecar on the others, as when the sidecar runs in a model server's pod)",
    )
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if args.pin and ((os.cpu_count() or 1) < 2 or shutil.which("taskset") is None):
        print("(3) not pinned: pinning needs 2 CPUs and taskset (util-linux)", flush=True)
        args.pin = False

    print(f"load average (1, 5, 15 min) at start: {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    events = list(generate("complaint-spike", events=args.events, seed=11)[0])
    bodies = _bodies(events)
    print(f"{len(events)} events in {len(bodies)} NDJSON posts of {BATCH}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="driftwatch-bench-sidecar-"))
    with kafka_cluster(args.bootstrap) as bootstrap:
        print(f"broker: {bootstrap}{'' if args.bootstrap else ' (Tansu, started for this run)'}", flush=True)
        configs = {"sidecar": _config(work, "sidecar")}
        for path in configs.values():
            asyncio.run(ensure_topics(bootstrap, load_config(path).kafka))

        with sidecar(configs["sidecar"], bootstrap, work) as (base, pid):
            lat = asyncio.run(fixed_rate(base, bodies, args.latency_seconds))
            print(
                f"(1) response time at {lat['events_per_s']:,.0f} events/s ({lat['posts']} posts of {BATCH}): "
                f"p50 {lat['p50_ms']:.2f} ms  p90 {lat['p90_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms  "
                f"max {lat['max_ms']:.1f} ms  statuses {lat['statuses']}  "
                f"[{_verdict(lat['p99_ms'] <= TARGET_P99_MS)}: p99 <= {TARGET_P99_MS} ms]",
                flush=True,
            )
            rates = []
            for r in range(args.repeat):
                tp = throughput(base, pid, bodies, len(events), args.concurrency)
                rates.append(tp["events_per_cpu_s"])
                print(
                    f"(2) throughput{_round(r, args.repeat)}: {tp['events_per_s']:,.0f} events/s wall "
                    f"({tp['events']} events, {tp['seconds']:.2f} s, posting {tp['post_seconds']:.2f} s), sidecar CPU "
                    f"{tp['sidecar_cpu_s']:.2f} s = {tp['events_per_cpu_s']:,.0f} events per CPU-second",
                    flush=True,
                )
            rate = statistics.median(rates)
            print(
                f"(2) events per CPU-second of the sidecar{' (median)' if args.repeat > 1 else ''}: {rate:,.0f}  "
                f"[{_verdict(rate >= TARGET_RATE)}: >= {TARGET_RATE:,} on one core]",
                flush=True,
            )

        worker_cpu = None
        if args.pin:
            # The worker on CPU 0; the broker, the posters, the client and the sidecar on the rest: as deployed,
            # where the sidecar runs in the model server's pod and never takes the worker's core.
            worker_cpu = 0
            pin_feeders(set(range(1, os.cpu_count() or 2)))
            print("(3) pinned: the worker on CPU 0, what feeds it (broker, posters, client, sidecar) on the rest")
        ratios, cpu_ratios = [], []
        for r in range(args.repeat):
            names = {way: f"{way}-{r}" for way in ("client", "worker")}
            round_configs = {way: _config(work, name) for way, name in names.items()}
            for path in round_configs.values():
                asyncio.run(ensure_topics(bootstrap, load_config(path).kafka))
            seconds, cpu = {}, {}
            for way in ("client", "sidecar") if r % 2 == 0 else ("sidecar", "client"):
                if way == "client":
                    with worker(round_configs["client"], bootstrap, work, worker_cpu) as (metrics, wpid):
                        cpu0 = _cpu_seconds(wpid)
                        seconds[way] = via_client(round_configs["client"], bootstrap, events, metrics)
                        cpu[way] = _cpu_seconds(wpid) - cpu0
                else:
                    cfg = round_configs["worker"]
                    with (
                        sidecar(cfg, bootstrap, work) as (base, _),
                        worker(cfg, bootstrap, work, worker_cpu) as (
                            metrics,
                            wpid,
                        ),
                    ):
                        cpu0 = _cpu_seconds(wpid)
                        seconds[way] = via_sidecar(base, bodies, len(events), metrics, args.concurrency)
                        cpu[way] = _cpu_seconds(wpid) - cpu0
            rate = {way: len(events) / seconds[way] for way in seconds}
            per_cpu = {way: len(events) / max(cpu[way], 1e-9) for way in cpu}
            ratios.append(rate["sidecar"] / rate["client"])
            cpu_ratios.append(per_cpu["sidecar"] / per_cpu["client"])
            print(
                f"(3) into a worker's /metrics{_round(r, args.repeat)}: client {rate['client']:,.0f} events/s "
                f"({seconds['client']:.2f} s), sidecar {rate['sidecar']:,.0f} events/s ({seconds['sidecar']:.2f} s), "
                f"sidecar/client {ratios[-1]:.2f}; per worker CPU-second: client {per_cpu['client']:,.0f}, sidecar "
                f"{per_cpu['sidecar']:,.0f} ({cpu_ratios[-1]:.2f})",
                flush=True,
            )
        ratio = statistics.median(ratios)
        print(
            f"(3) sidecar/client{' (median)' if args.repeat > 1 else ''}: {ratio:.2f}  "
            f"[{_verdict(ratio >= TARGET_RATIO)}: >= {TARGET_RATIO}]; per worker CPU-second "
            f"{statistics.median(cpu_ratios):.2f}",
            flush=True,
        )

        if args.profile or rate < TARGET_RATE:
            config = _config(work, "profile")
            asyncio.run(ensure_topics(bootstrap, load_config(config).kafka))
            profiled_throughput(config, bootstrap, bodies, len(events), args.concurrency)
    print(f"load average (1, 5, 15 min): {os.getloadavg()}; logs and configs: {work}")


if __name__ == "__main__":
    main()
