"""`driftwatch demo`: broker, worker and live traffic; the complaint spike is rolled back and resolves; all stops."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_runbook_loop_and_stops_cleanly(pseudonym_key: bytes, tmp_path: Path) -> None:
    """The demo shows metrics; the complaint spike fires, the rollback reaches the gateway, traffic switches back and the alert resolves; the audit chain verifies; it exits 0 and leaves no broker behind."""
    env = {**os.environ, "DRIFTWATCH_PSEUDONYM_KEY": pseudonym_key.decode(), "PYTHONUNBUFFERED": "1"}
    env.pop("DRIFTWATCH_BOOTSTRAP", None)
    audit = tmp_path / "demo-audit.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftwatch.cli",
            "demo",
            "--plain",
            "--scenario-schedule",
            "complaint-spike@1s",
            "--speedup",
            "20",  # 15 s windows: complaints arrive with their real delays, so the loop takes ~2.5 min
            "--rate",
            "200",
            "--duration",
            "170",
            "--audit-file",
            str(audit),
        ],
        capture_output=True,
        env=env,
        timeout=320,
        check=False,
    )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out[-3000:]
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

    kinds = [line.split('"kind":"', 1)[1].split('"', 1)[0] for line in audit.read_text().splitlines()]
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
