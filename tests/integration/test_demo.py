"""`driftwatch demo` starts a broker, a worker and live traffic, shows metrics, and stops everything cleanly."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys


def test_demo_shows_metrics_and_stops_cleanly(pseudonym_key: bytes) -> None:
    """The demo prints metric values and alert transitions, exits 0 at --duration, and leaves no broker behind."""
    env = {**os.environ, "DRIFTWATCH_PSEUDONYM_KEY": pseudonym_key.decode(), "PYTHONUNBUFFERED": "1"}
    env.pop("DRIFTWATCH_BOOTSTRAP", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftwatch.cli",
            "demo",
            "--duration",
            "30",
            "--plain",
            "--scenario-schedule",
            "feature-drift@2s",
        ],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out[-3000:]
    first = re.search(r"first metrics after ([0-9.]+) s", out)
    assert first, out[-3000:]
    print(f"first metrics after {first.group(1)} s")  # the figure the README quotes (< 15 s on an idle machine)
    assert re.search(r"metrics refund-approval/v3: n=\d+ sel=0\.\d+", out)
    assert "demo stopped" in out
    broker = re.search(r"broker 127\.0\.0\.1:(\d+)", out)
    assert broker
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(broker.group(1)))) != 0, "the demo's broker is still listening"
