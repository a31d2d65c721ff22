"""The report runner: reports are built in a worker process, and every way a build can fail is a ReportError."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from driftwatch.reports import ReportError, ReportRunner, ReportSpec, Sample, SampleColumns, encode_spec
from driftwatch.reports import runner as runner_module
from driftwatch.reports.runner import ReportAbandoned

# Every report test runs in one test process, so Evidently is imported once (by the shared worker).
pytestmark = pytest.mark.xdist_group("reports")

ROWS = 200


def drift_spec(rows: int = ROWS, seed: int = 3) -> ReportSpec:
    """A spec Evidently has to compare: message_length doubles, region stays."""
    rng = random.Random(seed)

    def sample(scale: float) -> Sample:
        return Sample(
            {
                "message_length": [scale * rng.lognormvariate(4.5, 0.4) for _ in range(rows)],
                "region": [rng.choice(["EU", "US"]) for _ in range(rows)],
            }
        )

    return ReportSpec(
        report_id="runner-test",
        title="runner test",
        model="support-router",
        version="v8",
        window_seconds=300.0,
        window_end="2026-11-18T10:47:30.000Z",
        columns=SampleColumns(numerical=("message_length",), categorical=("region",)),
        reference=sample(1.0),
        current=sample(2.0),
    )


def small_spec() -> ReportSpec:
    """A spec with too few rows for a drift comparison: built without Evidently, in a fraction of a second."""
    return ReportSpec("small", "small", "support-router", "v8", 300.0, "2026-11-18T10:47:30.000Z")


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def children() -> set[int]:
    """Process ids of this process's live multiprocessing children (the report workers)."""
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


CALLER = textwrap.dedent(
    """
    import json
    import sys

    from driftwatch.reports import ReportRunner, decode_spec

    if __name__ == "__main__":
        spec = decode_spec(open(sys.argv[1], "rb").read())
        with ReportRunner(timeout=300) as runner:
            html = runner.build(spec)
        heavy = sorted(m for m in ("evidently", "pandas", "numpy") if m in sys.modules)
        print(json.dumps({"heavy": heavy, "drift_table": 'id="drift-table"' in html, "built": runner.built}))
    """
)


def test_caller_never_imports_evidently(tmp_path: Path) -> None:
    """A process that builds a full report (drift table by Evidently) has not imported Evidently, pandas or numpy."""
    (tmp_path / "spec.json").write_bytes(encode_spec(drift_spec()))
    (tmp_path / "caller.py").write_text(CALLER)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "caller.py"), str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "drift_table": True, "built": 1}


def test_timeout_raises_and_the_next_build_works() -> None:
    """A build past the timeout raises ReportError and kills its worker; the next build gets a fresh one."""
    before = children()
    with ReportRunner(timeout=3.0) as runner:
        # A fresh worker imports Evidently first (4-14 s): this build cannot finish in 3 s.
        with pytest.raises(ReportError, match=r"took longer than 3s"):
            runner.build(drift_spec())
        assert children() <= before, "the timed-out worker is still running"
        html = runner.build(small_spec())
        assert 'id="drift-too-few"' in html
        assert (runner.built, runner.failed) == (1, 1)


def test_worker_exception_names_its_cause(report_runner: ReportRunner) -> None:
    """A spec the builder rejects gives ReportError naming the exception type and message; the worker lives on."""
    spec = drift_spec(rows=40)
    spec.current.columns["message_length"][5] = "long"
    built, failed = report_runner.built, report_runner.failed
    with pytest.raises(ReportError, match=r"ValueError: numerical column 'message_length' holds str at row 5"):
        report_runner.build(spec)
    assert 'id="drift-too-few"' in report_runner.build(small_spec())
    assert (report_runner.built, report_runner.failed) == (built + 1, failed + 1)


def test_crashed_worker_raises_and_the_next_build_works() -> None:
    """A worker killed mid-build gives ReportError saying it died; the next build starts a new worker."""
    before = children()
    with ReportRunner(timeout=120) as runner, ThreadPoolExecutor(1) as caller:
        pending = caller.submit(runner.build, drift_spec())
        worker = wait_for(lambda: children() - before, 30, "the report worker to start")
        assert isinstance(worker, set)
        os.kill(worker.pop(), signal.SIGKILL)
        with pytest.raises(ReportError, match=r"worker process died \(killed by signal 9\)"):
            pending.result(timeout=60)
        assert 'id="drift-too-few"' in runner.build(small_spec())
        assert (runner.built, runner.failed) == (1, 1)


def _sleep_long() -> None:
    time.sleep(60)


def test_a_killed_worker_is_named_by_its_signal_whoever_reaps_it() -> None:
    """The pool's manager thread, active_children() and our stop all reap a dead worker; its signal is still known.

    Before the fix, about one kill in ten lost the race and came out as a bare "BrokenProcessPool".
    """
    done = threading.Event()

    def reap_all_the_time() -> None:
        while not done.is_set():
            multiprocessing.active_children()

    reaper = threading.Thread(target=reap_all_the_time)
    reaper.start()
    try:
        for _ in range(15):
            pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            future = pool.submit(_sleep_long)
            procs = runner_module._processes(pool)
            os.kill(procs[0].pid, signal.SIGKILL)
            with pytest.raises(concurrent.futures.process.BrokenProcessPool):
                future.result(timeout=30)
            runner_module._stop(pool, procs)
            assert runner_module._exit_codes(procs) == "killed by signal 9"
    finally:
        done.set()
        reaper.join()


def test_builds_from_threads_and_after_close() -> None:
    """Builds from several threads at once all succeed; after close() a build is refused."""
    runner = ReportRunner(timeout=60)
    with ThreadPoolExecutor(4) as callers:
        pages = list(callers.map(lambda _: runner.build(small_spec()), range(4)))
    assert all('id="drift-too-few"' in page for page in pages)
    assert runner.built == 4
    runner.close()
    with pytest.raises(ReportAbandoned, match="closed"):
        runner.build(small_spec())


def test_a_build_cut_short_by_close_is_abandoned_not_failed() -> None:
    """A worker stopping closes its runner mid-build: that build ends as abandoned (logged at info, not as a
    failure warning), and the runner's process is gone."""
    before = children()
    runner = ReportRunner(timeout=120)
    outcome: list[BaseException] = []

    def build() -> None:
        try:
            runner.build(drift_spec())  # a fresh worker imports Evidently first: seconds, time enough to close
        except BaseException as e:  # handed to the test's thread
            outcome.append(e)

    caller = threading.Thread(target=build)
    caller.start()
    wait_for(lambda: children() - before, 60, "the report worker to start")
    runner.close()
    caller.join(30)
    assert not caller.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], ReportAbandoned), outcome
    assert "closed during the build" in str(outcome[0])
    assert children() <= before
