"""`driftwatch demo`: broker, worker and live traffic; the complaint spike is rolled back and resolves; all stops."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from .conftest import wait_for

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
    with stdout.open("wb") as out_fh, stderr.open("wb") as err_fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftwatch.cli",
                "demo",
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

            def loop_done() -> bool:
                shown = stdout.read_text()
                return "alert.resolved" in _kinds(audit) and "RESOLVED complaint_rate_high" in shown

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
