"""Ctrl-C while the actions consumer waits to join its group stops the worker promptly and quietly.

A member of a consumer group that died without leaving (a worker killed, or restarted within its session timeout)
holds the group's next rebalance until its session times out: the actions consumer of a new worker waits in
aiokafka's ``start()`` meanwhile. The stop used to wait 10 s for it, then cancel it, and the cancelled client was
reported at exit ("Unclosed AIOKafkaConsumer", "Task was destroyed but it is pending!").
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from driftwatch.config import load_config
from driftwatch.daemon.topics import ensure_topics

from .conftest import WorkerProcess, log_events, unique_config, wait_for

# Joins the group with a 30 s session, says so, and waits to be killed (it never leaves the group).
STALE_MEMBER = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer

async def main():
    bootstrap, group, topic = sys.argv[1:4]
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=30000, heartbeat_interval_ms=3000,
        enable_auto_commit=False,
    )
    await consumer.start()  # returns once the group has assigned it the topic
    print("joined", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _ready(worker: WorkerProcess) -> bool:
    try:
        urllib.request.urlopen(worker.url.replace("/metrics", "/readyz"), timeout=2).read()
    except urllib.error.HTTPError:
        return False
    return True


def test_ctrl_c_while_the_actions_consumer_joins_its_group_stops_promptly_and_quietly(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str]
) -> None:
    path = unique_config(tmp_path, example_config, "stopjoin")
    cfg = load_config(path)
    asyncio.run(ensure_topics(kafka_bootstrap, cfg.kafka))
    stale = subprocess.Popen(
        [sys.executable, "-c", STALE_MEMBER, kafka_bootstrap, f"{cfg.kafka.app_id}-actions", cfg.kafka.alerts.name],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stale.stdout is not None
        assert stale.stdout.readline().strip() == "joined"
    finally:
        stale.kill()  # gone without leaving: the group waits out its 30 s session
        stale.wait()
        if stale.stdout is not None:
            stale.stdout.close()

    worker = WorkerProcess(path, kafka_bootstrap, worker_env, tmp_path / "worker.log", stderr=tmp_path / "worker.err")
    try:
        wait_for(
            lambda: any(e["event"] == "broker_connected" for e in log_events((tmp_path / "worker.err").read_text())),
            60,
            "the worker's Faust app to join its own group",
        )
        assert not _ready(worker)  # its actions consumer is still waiting for the group's rebalance
        started = time.monotonic()
        code = worker.stop(signal.SIGINT, timeout=60)
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(Exception):
            worker.stop(signal.SIGKILL, timeout=10)
    err = (tmp_path / "worker.err").read_text()
    assert code == 0, err[-3000:]
    assert "Unclosed AIOKafkaConsumer" not in err
    assert "Task was destroyed but it is pending" not in err
    assert [e for e in log_events(err) if e["event"] == "stopped"]
    assert took < 9, (took, err[-3000:])  # not the 10 s the stop gave the join, nor the 30 s of the stale session
