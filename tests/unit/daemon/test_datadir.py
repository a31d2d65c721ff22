"""Faust's temp dirs: a SIGKILLed worker cannot remove its own, so the next worker of the app removes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from driftwatch.daemon.worker import faust_datadir


def test_dirs_of_gone_workers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # that process has exited
    stale = tmp_path / f"driftwatch-app-{dead_pid}-abcd1234"
    live = tmp_path / f"driftwatch-app-{os.getppid()}-abcd1234"  # our parent is alive
    other_app = tmp_path / f"driftwatch-other-{dead_pid}-abcd1234"
    longer_id = tmp_path / f"driftwatch-app-{dead_pid}-{dead_pid}-abcd1234"  # app "app-<n>", not "app"
    for d in (stale, live, other_app, longer_id):
        d.mkdir()
    made = Path(faust_datadir("app", str(tmp_path)))
    assert made.is_dir()
    assert made.name.startswith(f"driftwatch-app-{os.getpid()}-")
    assert not stale.exists()
    assert live.exists()
    assert other_app.exists()
    assert longer_id.exists()
