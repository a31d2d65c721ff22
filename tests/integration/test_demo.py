"""`driftwatch demo`: broker, worker and live traffic; the complaint spike is rolled back and resolves; all stops."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .conftest import ROOT, log_events, wait_for

_KIND = re.compile(r'"kind":"([^"]+)"')


def _kinds(audit: Path) -> list[str]:
    """The kinds of the audit records written so far (a line being written may not show its kind yet)."""
    text = audit.read_text() if audit.exists() else ""
    return [m.group(1) for m in map(_KIND.search, text.splitlines()) if m]


def test_demo_runs_the_runbook_loop_and_stops_cleanly(pseudonym_key: bytes, tmp_path: Path) -> None:
    """The demo shows metrics; the complaint spike fires, the rollback reaches the gateway, traffic switches back and the alert resolves; the audit chain verifies; it exits 0 and leaves no broker behind."""
    env = {**os.environ, "DRIFTWATCH_PSEUDONYM_KEY": pseudonym_key.decode(), "PYTHONUNBUFFERED": "1"}
    env.pop("DRIFTWATCH_BOOTSTRAP", None)
    audit = tmp_path / "demo-audit.jsonl"
    stdout, stderr = tmp_path / "demo.out", tmp_path / "demo.err"
    # The example config, asking reports for more rows than any slice has: the reports are built, linked and served
    # without Evidently's drift table (Evidently's part is tested once, on the shared report process).
    config = tmp_path / "driftwatch.yaml"
    text = (ROOT / "config" / "driftwatch.example.yaml").read_text().replace("  min_rows: 30 ", "  min_rows: 1000000 ")
    assert "min_rows: 1000000" in text
    config.write_text(text)
    with stdout.open("wb") as out_fh, stderr.open("wb") as err_fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftwatch.cli",
                "demo",
                "--config",
                str(config),
                "--plain",
                "--scenario-schedule",
                "complaint-spike@1s",
                "--speedup",
                "5",  # 1 minute windows of event time ...
                "--clock-speed",
                "8",  # ... which pass in 7.5 s, complaints arriving 1-15 s after their prediction
                "--rate",
                "200",
                "--duration",
                "150",  # a backstop only: the test stops the demo (Ctrl-C) once the loop is done
                "--audit-file",
                str(audit),
            ],
            stdout=out_fh,
            stderr=err_fh,
            env=env,
        )
        try:
            served: dict[str, str] = {}

            def loop_done() -> bool:
                shown = stdout.read_text()
                link = re.search(
                    r"report of complaint_rate_high: (http://127\.0\.0\.1:\d+/api/reports/[0-9a-f]+)", shown
                )
                if link and not served:  # fetched while the demo still serves it (it is built off the stream)
                    with contextlib.suppress(OSError), urllib.request.urlopen(link.group(1), timeout=5) as r:
                        served[link.group(1)] = r.read().decode()
                return "alert.resolved" in _kinds(audit) and "RESOLVED complaint_rate_high" in shown and bool(served)

            wait_for(lambda: loop_done() or proc.poll() is not None, 120, "the alert to resolve", interval=0.5)
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = stdout.read_text() + stderr.read_text()
    assert code == 0, out[-3000:]
    first = re.search(r"first metrics after ([0-9.]+) s", out)
    assert first, out[-3000:]
    print(f"first metrics after {first.group(1)} s")  # the figure the README quotes
    assert re.search(r"metrics refund-approval/v3: n=\d+ sel=0\.\d+", out)

    def at(pattern: str) -> int:
        m = re.search(pattern, out)
        assert m, f"{pattern!r} not shown:\n{out[-4000:]}"
        return m.start()

    fired = at(r"FIRING +complaint_rate_high model=support-router version=v8")
    rolled = at(r"GATEWAY +rolled support-router back v8 -> v7")
    paged = at(r"ON-CALL +signed webhook: FIRING complaint_rate_high")
    resolved = at(r"RESOLVED complaint_rate_high model=support-router version=v8")
    assert fired < resolved
    assert rolled < resolved
    assert paged < resolved
    assert "rejected an unsigned" not in out
    assert "demo stopped" in out
    # The on-call inbox linked the alert's report, and the demo served it: the alert, the groups, Evidently's drift.
    (page,) = served.values()
    assert "complaint_rate_high" in page
    assert 'id="fairness"' in page
    assert 'id="drift-too-few"' in page
    # The complaints that fired the rollback came in over HTTP through the sidecar, as from a non-Python service.
    via_sidecar = re.search(r"interactions through the sidecar: (\d+) accepted, (\d+) rejected", out)
    assert via_sidecar, out[-2000:]
    assert int(via_sidecar.group(1)) > 100
    assert via_sidecar.group(2) == "0"

    kinds = _kinds(audit)
    assert kinds.index("action.started") < kinds.index("action.succeeded")
    assert "alert.resolved" in kinds
    verify = subprocess.run(
        [sys.executable, "-m", "driftwatch.cli", "audit", "verify", str(audit)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    broker = re.search(r"broker 127\.0\.0\.1:(\d+)", out)
    assert broker
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(broker.group(1)))) != 0, "the demo's broker is still listening"


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a process from /proc, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # after "pid (comm)": state, ppid, ..., starttime (field 22)
    return int(fields[1]), fields[0], fields[19]


def _descendants(pid: int) -> dict[int, str]:
    """The live descendants of ``pid``: pid -> start time (a pid reused later is not the same process)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = st
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, state, start) in table.items():
            if ppid == parent and state != "Z" and child not in found:
                found[child] = start
                frontier.append(child)
    return found


def _alive(pid: int, start: str) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start and st[1] != "Z"


class _Demo:
    """``driftwatch demo`` in its own session (as a shell starts it in a terminal), with a temp dir and a working
    directory of its own, stdout piped to a file; healthy traffic only."""

    def __init__(self, tmp_path: Path, pseudonym_key: bytes, *args: str) -> None:
        self.tmpdir, self.cwd = tmp_path / "tmp", tmp_path / "cwd"
        self.tmpdir.mkdir()
        self.cwd.mkdir()
        self.stdout, self.stderr = tmp_path / "demo.out", tmp_path / "demo.err"
        env = {
            **os.environ,
            "DRIFTWATCH_PSEUDONYM_KEY": pseudonym_key.decode(),
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(self.tmpdir),
        }
        env.pop("DRIFTWATCH_BOOTSTRAP", None)
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "driftwatch.cli",
                    "demo",
                    "--config",
                    str(ROOT / "config" / "driftwatch.example.yaml"),
                    "--scenario-schedule",
                    "",
                    "--clock-speed",
                    "8",
                    "--rate",
                    "100",
                    "--duration",
                    "120",  # a backstop only
                    "--audit-file",
                    str(tmp_path / "audit.jsonl"),
                    *args,
                ],
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        self.children: dict[int, str] = {}

    def wait_running(self) -> None:
        """Until the demo shows its first metrics (the broker, the worker and the traffic all run); note its
        child processes."""
        wait_for(
            lambda: "first metrics after" in self.stdout.read_text() or self.proc.poll() is not None,
            90,
            "the demo's first metrics",
            interval=0.2,
        )
        assert self.proc.poll() is None, self.output()[-3000:]
        self.children = _descendants(self.proc.pid)
        assert self.children, "the demo runs its broker as a child process"

    def ctrl_c(self) -> None:
        """SIGINT to the demo's process group, as a terminal sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid, start in self.children.items():
            if _alive(pid, start):
                os.kill(pid, signal.SIGKILL)

    def assert_nothing_left(self) -> None:
        survivors = [pid for pid, start in self.children.items() if _alive(pid, start)]
        assert not survivors, f"child processes of the demo still run: {survivors}"
        assert not list(self.tmpdir.iterdir()), f"left in the temp dir: {list(self.tmpdir.iterdir())}"
        assert not list(self.cwd.iterdir()), f"left in the working directory: {list(self.cwd.iterdir())}"


def test_one_ctrl_c_stops_everything_and_piped_output_is_plain(pseudonym_key: bytes, tmp_path: Path) -> None:
    """One Ctrl-C to the demo's process group stops it within 10 s with exit code 0 and a summary line; its broker
    is gone, nothing is left in the temp dir or the working directory, and piped stdout holds plain lines."""
    demo = _Demo(tmp_path, pseudonym_key)  # no --plain: stdout is a file, not a terminal
    try:
        demo.wait_running()
        demo.ctrl_c()
        started = time.monotonic()
        code = demo.proc.wait(30)
        took = time.monotonic() - started
    finally:
        demo.close()
    out = demo.stdout.read_text()
    assert code == 0, demo.output()[-3000:]
    assert took < 10, f"the demo took {took:.1f} s to stop"
    assert "\x1b" not in out, "escape codes in piped output"
    assert re.search(r"^metrics refund-approval/v3: n=\d+", out, re.M), out[-2000:]
    assert re.search(r"^demo stopped after \d+ s \(all stopped\)", out, re.M), out[-2000:]
    demo.assert_nothing_left()


def _abandoned_stop(err: str, reason: str) -> tuple[dict[str, Any], str]:
    """The worker's one ``stop_abandoned`` line (for ``reason``) and its log from the stop on, which holds no Kafka
    client error and no traceback."""
    abandoned = [e for e in log_events(err) if e["event"] == "stop_abandoned"]
    assert [e["reason"] for e in abandoned] == [reason], err[-3000:]
    after = err[err.index('"stopping"') :]
    assert '"logger": "aiokafka' not in after, "Kafka client errors logged after the stop began"
    assert "Traceback" not in after, after[-3000:]
    return abandoned[0], after


def test_second_ctrl_c_forces_the_exit(pseudonym_key: bytes, tmp_path: Path) -> None:
    """With its broker frozen the worker's stop would wait out its grace period; a second Ctrl-C during that stop
    ends the demo at once with exit code 130, the frozen broker killed, nothing left running or behind, and no Kafka
    client errors logged."""
    demo = _Demo(tmp_path, pseudonym_key, "--plain")  # --plain: info logs, so the stop can be seen starting
    try:
        demo.wait_running()
        for pid in demo.children:
            os.kill(pid, signal.SIGSTOP)  # the broker answers nothing more, and stops on nothing but SIGKILL
        demo.ctrl_c()
        wait_for(lambda: '"stopping"' in demo.stderr.read_text(), 20, "the worker to start stopping", interval=0.05)
        demo.ctrl_c()
        started = time.monotonic()
        code = demo.proc.wait(30)
        took = time.monotonic() - started
    finally:
        demo.close()
    err = demo.stderr.read_text()
    assert code == 130, demo.output()[-3000:]
    # ~3 s (Faust closes its loop); without the force: the worker's 5 s grace, then 5 s for its alerting side, the
    # sidecar's drain, the client's flush and 10 s for the frozen broker to answer SIGTERM.
    assert took < 7, f"the forced exit took {took:.1f} s"
    _abandoned_stop(err, "second_signal")
    assert re.search(r"^demo stopped after \d+ s \(forced by a second Ctrl-C\)", demo.stdout.read_text(), re.M)
    demo.assert_nothing_left()


def test_worker_whose_broker_is_gone_stops_within_its_grace_period(pseudonym_key: bytes, tmp_path: Path) -> None:
    """With the broker gone, one Ctrl-C still stops the demo: the worker gives up on Faust's stop after its grace
    period (5 s) and says so in one line instead of a connection error per retry; exit code 0, nothing left."""
    demo = _Demo(tmp_path, pseudonym_key, "--plain")
    try:
        demo.wait_running()
        for pid in demo.children:
            os.kill(pid, signal.SIGKILL)
        demo.ctrl_c()
        started = time.monotonic()
        code = demo.proc.wait(40)
        took = time.monotonic() - started
    finally:
        demo.close()
    err = demo.stderr.read_text()
    assert code == 0, demo.output()[-3000:]
    assert took < 25, f"the demo took {took:.1f} s to stop"
    abandoned, after = _abandoned_stop(err, "grace_elapsed")
    assert abandoned["kafka_client_errors"] > 0
    assert '"logger": "faust' not in after, after[-3000:]
    demo.assert_nothing_left()
