"""A worker SIGKILLed again and again at random points, restarted each time, ends with exactly the replay's values.

Guarantee 3 in docs/guarantees.md. The kill points are drawn from the seed: each worker is killed once it has
processed a random number of events (sometimes before it has written a checkpoint, sometimes while producers
are still sending), and the next worker recovers from the intents and checkpoints the dead ones left.
"""

from __future__ import annotations

import random
import re
import threading
from pathlib import Path

import pytest

from driftwatch.config import load_config
from driftwatch.simulate import generate

from .conftest import WorkerProcess, log_events, produce, samples, wait_for
from .test_worker import (
    _alerts_seen,
    _config_with_profiles,
    _create_topics,
    _expected_gauges,
    _mismatches,
    _open_alerts,
    _replay,
)

KILLS = 3
SCENARIOS = ("complaint-spike", "bias", "label-shift")


_HEALTH = re.compile(
    r'^(driftwatch_events_total\{kind="(?:prediction|interaction)"\}|driftwatch_consumer_lag\{[^}]*\}'
    r"|driftwatch_checkpoints_written_total) (\S+)$",
    re.M,
)


def _progress(worker: WorkerProcess) -> tuple[float, float, float]:
    """Events processed, consumer lag and checkpoints written, read from /metrics with one regex: the kill points
    are polled every 20 ms, and parsing every series each time would load the machine the test runs on."""
    done = lag = checkpoints = 0.0
    for name, value in _HEALTH.findall(
        worker.scrape("driftwatch_events_total", "driftwatch_consumer_lag", "driftwatch_checkpoints_written_total")
    ):
        if name.startswith("driftwatch_events_total"):
            done += float(value)
        elif name.startswith("driftwatch_consumer_lag"):
            lag += float(value)
        else:
            checkpoints = float(value)
    return done, lag, checkpoints


def _processed(worker: WorkerProcess) -> float:
    return _progress(worker)[0]


@pytest.mark.parametrize("seed", [41, 42])
def test_repeated_sigkill_equals_the_replay_exactly(
    seed: int,
    tmp_path: Path,
    example_config: Path,
    kafka_bootstrap: str,
    worker_env: dict[str, str],
    pseudonym_key: bytes,
) -> None:
    """Three SIGKILLs at random points, a restart after each: every since-start and window series and every open
    alert equal the pure replay of the same events, with no tolerance."""
    rng = random.Random(seed)
    scenario = SCENARIOS[seed % len(SCENARIOS)]
    events = list(generate(scenario, events=8_000, seed=seed)[0])
    name = f"kills{seed}"
    cfg_path = _config_with_profiles(
        tmp_path,
        example_config,
        name,
        events,
        batch_size=rng.choice([50, 200, 500]),
        checkpoint_interval="1s",
    )
    cfg = load_config(cfg_path)
    expected = _replay(cfg_path, events, pseudonym_key)
    want = _expected_gauges(expected)
    open_alerts = _open_alerts(expected)
    _create_topics(kafka_bootstrap, cfg)

    # A part of the stream is on Kafka before each worker starts; the rest is sent while the last killed one runs.
    # One event per message: slow enough to kill mid-stream.
    parts = [events[i * len(events) // (KILLS + 1) : (i + 1) * len(events) // (KILLS + 1)] for i in range(KILLS + 1)]
    late_producer = threading.Thread(
        target=produce, args=(cfg, pseudonym_key, kafka_bootstrap, parts[-1], 1), daemon=True
    )
    logs: list[Path] = []
    killed_at: list[int] = []
    for k in range(KILLS):
        produce(cfg, pseudonym_key, kafka_bootstrap, parts[k], 1)
        log = tmp_path / f"worker{k}.log"
        logs.append(log)
        worker = WorkerProcess(cfg_path, kafka_bootstrap, worker_env, log)
        if k == KILLS - 1:
            late_producer.start()
        target = rng.randint(100, 1_500)

        def due(w: WorkerProcess = worker, t: int = target, first: bool = k == 0) -> bool:
            """Killed once it has processed ``t`` events, or caught up with all there is (also a random point);
            the first worker also leaves an evaluation checkpoint, so some recovery starts from one."""
            done, lag, checkpoints = _progress(w)
            far = done >= t or (done > 0 and lag == 0)
            return far and (not first or checkpoints >= 1)

        try:
            wait_for(due, 120, f"worker {k} to process {target} events", 0.02)
            killed_at.append(int(_processed(worker)))
        finally:
            assert worker.stop(sig=9) == -9
    late_producer.join(120)
    assert not late_producer.is_alive()

    last = WorkerProcess(cfg_path, kafka_bootstrap, worker_env, tmp_path / "final.log")
    try:

        def exact() -> bool:
            s = samples(last.scrape())  # one scrape for both: a full one costs the worker ~0.1 s of CPU
            return not _mismatches(last, want, s) and _alerts_seen(last, s) == open_alerts

        try:
            wait_for(
                exact, 120, "the last worker to equal the replay exactly", interval=1.0
            )  # a full scrape costs the worker ~0.1 s of CPU
        except AssertionError:
            bad = _mismatches(last, want)
            bad.sort(key=lambda m: m[0][0] != "driftwatch_predictions")  # counts first: the easiest to read
            health = {
                f"{k[0]}{dict(k[1])}": v
                for k, v in samples(last.scrape()).items()
                if v and (k[0].endswith("_total") or "tick" in k[0] or "watermark" in k[0])
            }
            recoveries = [e for p in [*logs, last.log] for e in log_events(p.read_text()) if e["event"] == "recovered"]
            whole = [m for m in bad if m[0][0] == "driftwatch_predictions" and ("attribute", "*") in m[0][1]]
            raise AssertionError(
                f"seed {seed} ({scenario}), killed after {killed_at} events: {len(bad)} of {len(want)} series "
                f"differ, e.g. {bad[:6]}; alerts {_alerts_seen(last)} against the replay's {open_alerts}\n"
                f"health of the last worker: {health}\nrecoveries: {recoveries}\n"
                f"whole models' predictions: {whole}\n"
                f"replay counters: {expected.counters}"
            ) from None
        last_processed = _processed(last)
    finally:
        assert last.stop() == 0, last.log.read_text()[-3000:]
    assert len(want) > 500
    # Each kill was mid-stream: the workers after it had events left to process; they recovered the input
    # partitions from the intents the killed ones left, and the last one did not start over.
    assert 0 < last_processed < 0.95 * len(events)
    assert sum(killed_at) < len(events)
    recovered = [e for path in [*logs[1:], last.log] for e in log_events(path.read_text()) if e["event"] == "recovered"]
    # A killed worker may die during its own recovery (after re-sending, before saying so): the last one says so.
    assert "input" in {e.get("stage") for e in log_events(last.log.read_text()) if e["event"] == "recovered"}
    checkpoints = [e["checkpoint_offset"] for e in recovered if e.get("stage") == "summaries"]
    assert max(checkpoints) >= 0, checkpoints  # some evaluation state came from a checkpoint
