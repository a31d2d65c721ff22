"""Shared fixtures: the example config and a test-only pseudonymisation key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from driftwatch.reports.runner import ReportRunner

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "config" / "driftwatch.example.yaml"
TEST_KEY = "test-only-pseudonym-key-0123456789"


@pytest.fixture
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Set the pseudonymisation key the example config reads, for this test only."""
    monkeypatch.setenv("DRIFTWATCH_PSEUDONYM_KEY", TEST_KEY)
    return TEST_KEY.encode()


@pytest.fixture
def example_config() -> Path:
    """Path of the shipped example config (the demo domain)."""
    return EXAMPLE_CONFIG


@pytest.fixture(scope="session")
def report_runner() -> Iterator[ReportRunner]:
    """The report process of this test process, shared by every report test (Evidently is imported once per test
    worker; the report tests share the xdist group "reports" so that is usually once)."""
    from driftwatch.reports.runner import ReportRunner

    with ReportRunner(timeout=180) as runner:
        yield runner
