"""Shared fixtures: the example config and a test-only pseudonymisation key."""

from __future__ import annotations

from pathlib import Path

import pytest

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
