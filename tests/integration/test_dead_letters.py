"""`driftwatch dead-letters` against a real broker: counts, the last records, values only when asked, clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from typer.testing import CliRunner

from driftwatch._time import rfc3339
from driftwatch.cli import app
from driftwatch.config import Config, load_config
from driftwatch.daemon.dead_letters import VALUE_CHARS
from driftwatch.daemon.topics import ensure_topics
from driftwatch.daemon.worker import DEAD_LETTER_MAX_BYTES
from driftwatch.demo.broker import free_port

from .conftest import WorkerProcess, samples, unique_config, wait_for

PRIVATE = "555-0100-private"
"""Stands for personal data inside an event: it must never be printed without --show-values."""


def _cli(cfg_path: Path, bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `driftwatch dead-letters` as users do."""
    env = {k: v for k, v in os.environ.items() if k != "DRIFTWATCH_BOOTSTRAP"}
    return subprocess.run(
        [sys.executable, "-m", "driftwatch.cli", "dead-letters", "-c", str(cfg_path), "--bootstrap", bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def _groups(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_dead_letters_counts_what_a_worker_set_aside(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str]
) -> None:
    """Events a real worker dead-lettered are counted by reason, field and partition; --tail lists them with their
    source, size and truncated flag; no value is printed unless --show-values asks (then escaped, cut to 200)."""
    cfg_path = unique_config(tmp_path, example_config, "dlcli")
    cfg = load_config(cfg_path)
    good = {
        "type": "interaction",
        "schema_version": 1,
        "event_id": "i",
        "ts": 1_795_000_000_000,
        "request_id": "r-1",
        "kind": "complaint",
    }
    bad = [
        (b'{"type": "interaction", "schema_ver', "invalid_json"),
        (json.dumps({**good, "ts": "yesterday"}).encode(), "invalid_field"),
        (json.dumps({k: v for k, v in good.items() if k != "request_id"}).encode(), "missing_field"),
        (json.dumps({**good, "kind": PRIVATE}).encode(), "invalid_field"),
        (json.dumps({**good, "event_id": "y" * 1_500_000}).encode(), "oversized"),  # stored cut
        (json.dumps({**good, "schema_version": 2, "event_id": PRIVATE}).encode(), "unsupported_schema_version"),
    ]

    async def produce_bad() -> None:
        await ensure_topics(kafka_bootstrap, cfg.kafka)
        prod = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4_000_000)
        await prod.start()
        try:
            for n, (raw, _) in enumerate(bad):
                await prod.send_and_wait(
                    cfg.kafka.interactions.name, json.dumps({**good, "event_id": f"ok-{n}"}).encode(), key=b"r-1"
                )
                await prod.send_and_wait(cfg.kafka.interactions.name, raw, key=b"r-1")
        finally:
            await prod.stop()

    asyncio.run(produce_bad())
    worker = WorkerProcess(cfg_path, kafka_bootstrap, worker_env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: (
                samples(worker.scrape("driftwatch_dead_lettered_total")).get(("driftwatch_dead_lettered_total", ()), 0)
                >= len(bad)
            ),
            60,
            "the bad events to be dead-lettered",
            interval=0.3,
        )
    finally:
        assert worker.stop() == 0, worker.log.read_text()[-3000:]
    groups_before = asyncio.run(_groups(kafka_bootstrap))

    table = _cli(cfg_path, kafka_bootstrap)
    assert table.returncode == 0, table.stderr
    want = Counter(reason for _, reason in bad)
    for reason in want:
        assert reason in table.stdout
    assert f"{len(bad)} dead letters in {cfg.kafka.dead_letter.name}" in table.stdout

    summary = _cli(cfg_path, kafka_bootstrap, "--json")
    assert summary.returncode == 0, summary.stderr
    docs = _json_lines(summary.stdout)
    assert {d["reason"]: d["count"] for d in docs if d["type"] == "reason"} == want
    fields = {(d["reason"], d["field"]): d["count"] for d in docs if d["type"] == "field"}
    assert sum(fields.values()) == len(bad)
    assert fields[("invalid_field", "ts")] == 1
    assert fields[("invalid_field", "kind")] == 1
    assert fields[("missing_field", "request_id")] == 1
    (part,) = [d for d in docs if d["type"] == "partition"]  # the dead-letter topic has one partition here
    assert (part["partition"], part["count"], part["start_offset"], part["end_offset"]) == (0, len(bad), 0, len(bad))
    (total,) = [d for d in docs if d["type"] == "summary"]
    assert total["total"] == len(bad)
    assert total["exists"] is True
    assert total["complete"] is True
    assert total["oldest"] <= total["newest"]
    assert total["oldest"].endswith("Z")

    tail = _cli(cfg_path, kafka_bootstrap, "--tail", str(len(bad)), "--json")
    assert tail.returncode == 0, tail.stderr
    records = _json_lines(tail.stdout)
    assert [r["reason"] for r in records] == [reason for _, reason in bad]  # oldest first, as dead-lettered
    assert [r["offset"] for r in records] == list(range(len(bad)))
    assert all(r["source"].startswith(f"{cfg.kafka.interactions.name}:") for r in records)
    assert [r["truncated"] for r in records] == [reason == "oversized" for _, reason in bad]
    cut = records[[reason for _, reason in bad].index("oversized")]
    assert cut["size"] == DEAD_LETTER_MAX_BYTES
    assert cut["original_size"] == len(bad[4][0])
    assert [r["size"] for r in records if not r["truncated"]] == [len(raw) for raw, r in bad if r != "oversized"]
    assert all("value" not in r for r in records)

    last = _cli(cfg_path, kafka_bootstrap, "--tail", "2")
    assert last.returncode == 0, last.stderr
    assert "oversized" in last.stdout
    assert "unsupported_schema_version" in last.stdout
    assert "invalid_json" not in last.stdout  # only the last two
    assert "yes (of" in last.stdout  # the truncated flag, with the original length

    for out in (table.stdout, summary.stdout, tail.stdout, last.stdout):
        assert PRIVATE not in out
        assert "yyyyyyyy" not in out

    shown = _cli(cfg_path, kafka_bootstrap, "--tail", str(len(bad)), "--json", "--show-values")
    assert shown.returncode == 0, shown.stderr
    values = _json_lines(shown.stdout)
    assert sum(PRIVATE in r["value"] for r in values) == 2
    assert all(len(r["value"]) <= VALUE_CHARS for r in values)
    assert [r["value_cut"] for r in values] == [reason == "oversized" for _, reason in bad]
    assert values[1]["value"] == json.dumps({**good, "ts": "yesterday"})  # short values whole, unescaped text

    assert asyncio.run(_groups(kafka_bootstrap)) == groups_before  # reading joined no consumer group


def _write(bootstrap: str, topic: str, records: list[tuple[int, int, bytes, list[tuple[str, bytes]]]]) -> None:
    """Write (partition, timestamp ms, value, headers) records to ``topic``."""

    async def go() -> None:
        prod = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await prod.start()
        try:
            for partition, ts, value, headers in records:
                await prod.send_and_wait(
                    topic, value, key=b"request-42", partition=partition, timestamp_ms=ts, headers=headers
                )
        finally:
            await prod.stop()

    asyncio.run(go())


def _headers(reason: str, fld: str, source: str) -> list[tuple[str, bytes]]:
    return [
        ("driftwatch-reason", reason.encode()),
        ("driftwatch-field", fld.encode()),
        ("driftwatch-source", source.encode()),
        ("driftwatch-schema-version", b"1"),
    ]


def _config(tmp_path: Path, example: Path, name: str, dead_letter_partitions: int) -> tuple[Path, Config]:
    path = unique_config(tmp_path, example, name)
    data = yaml.safe_load(path.read_text())
    data["kafka"]["dead_letter"]["partitions"] = dead_letter_partitions
    path.write_text(json.dumps(data))
    return path, load_config(path)


def test_dead_letters_reads_every_partition_and_escapes_values(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str
) -> None:
    """Records on every partition are counted (a record without driftwatch's headers under "(none)"); --tail takes
    the newest by timestamp across partitions; --show-values escapes control characters and cuts long values."""
    cfg_path, cfg = _config(tmp_path, example_config, "dlparts", 2)
    asyncio.run(ensure_topics(kafka_bootstrap, cfg.kafka))
    topic = cfg.kafka.dead_letter.name
    base = 1_795_000_000_000
    _write(
        kafka_bootstrap,
        topic,
        [
            (0, base + 1, b"{not json", _headers("invalid_json", "", "in:0:1")),
            (1, base + 2, b'{"ts": "x"}', _headers("invalid_field", "ts", "in:1:7")),
            (0, base + 3, b"raw from elsewhere", []),
            (1, base + 5, f'{{"name": "{PRIVATE}"}}\n\x1b[31m'.encode(), _headers("invalid_field", "ts", "in:1:9")),
            (0, base + 4, b"z" * 1000, _headers("oversized", "", "in:0:3")),
        ],
    )

    summary = _cli(cfg_path, kafka_bootstrap, "--json")
    assert summary.returncode == 0, summary.stderr
    docs = _json_lines(summary.stdout)
    assert {d["reason"]: d["count"] for d in docs if d["type"] == "reason"} == {
        "invalid_field": 2,
        "invalid_json": 1,
        "oversized": 1,
        "(none)": 1,
    }
    assert {(d["reason"], d["field"]): d["count"] for d in docs if d["type"] == "field"}[("invalid_field", "ts")] == 2
    assert {d["partition"]: d["count"] for d in docs if d["type"] == "partition"} == {0: 3, 1: 2}
    (total,) = [d for d in docs if d["type"] == "summary"]
    assert (total["total"], total["oldest"], total["newest"]) == (
        5,
        rfc3339((base + 1) / 1000),
        rfc3339((base + 5) / 1000),
    )

    tail = _cli(cfg_path, kafka_bootstrap, "--tail", "2", "--json")
    assert tail.returncode == 0, tail.stderr
    assert [(r["partition"], r["offset"], r["reason"]) for r in _json_lines(tail.stdout)] == [
        (0, 2, "oversized"),
        (1, 1, "invalid_field"),
    ]
    assert PRIVATE not in tail.stdout

    shown = _cli(cfg_path, kafka_bootstrap, "--tail", "2", "--show-values")
    assert shown.returncode == 0, shown.stderr
    assert PRIVATE in shown.stdout
    assert "\x1b" not in shown.stdout  # the escape sequence is printed as text, never sent to the terminal
    assert "\\n\\x1b[31m" in shown.stdout
    values = {
        r["reason"]: r
        for r in _json_lines(_cli(cfg_path, kafka_bootstrap, "--tail", "2", "--json", "--show-values").stdout)
    }
    assert values["oversized"]["value"] == "z" * VALUE_CHARS
    assert values["oversized"]["value_cut"] is True
    assert values["invalid_field"]["value"] == f'{{"name": "{PRIVATE}"}}\\n\\x1b[31m'


def test_a_missing_topic_means_no_dead_letters_yet(tmp_path: Path, example_config: Path, kafka_bootstrap: str) -> None:
    """Before any worker created the dead-letter topic the command says so and exits 0, without creating it."""
    cfg_path, cfg = _config(tmp_path, example_config, "dlnone", 1)
    for args in ((), ("--tail", "5")):
        res = _cli(cfg_path, kafka_bootstrap, *args)
        assert res.returncode == 0, res.stderr
        assert f"no dead letters yet: topic {cfg.kafka.dead_letter.name} does not exist" in res.stdout
    (doc,) = _json_lines(_cli(cfg_path, kafka_bootstrap, "--json").stdout)
    assert (doc["type"], doc["exists"], doc["total"]) == ("summary", False, 0)
    assert cfg.kafka.dead_letter.name not in asyncio.run(_topics(kafka_bootstrap))


def test_an_unreachable_broker_is_one_line_naming_kafka_bootstrap(tmp_path: Path, example_config: Path) -> None:
    """With no broker at the address the command exits 2 with one error line that names kafka.bootstrap."""
    cfg_path, _ = _config(tmp_path, example_config, "dlunreach", 1)
    res = _cli(cfg_path, f"127.0.0.1:{free_port()}")
    assert res.returncode == 2
    assert res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith("error: cannot reach the Kafka broker at 127.0.0.1:")
    assert "kafka.bootstrap" in line


def test_show_values_needs_tail(example_config: Path) -> None:
    """--show-values without --tail is a usage error (the counts never show values)."""
    res = CliRunner().invoke(app, ["dead-letters", "-c", str(example_config), "--show-values"])
    assert res.exit_code == 2
    assert "--show-values needs --tail" in res.output
