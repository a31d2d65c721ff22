"""Tests for silences in `driftwatch.alerts.silences`."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftwatch.actions.audit import AuditLog, read_records
from driftwatch.alerts.silences import SilenceError, SilenceNotFoundError, Silences

FIRING = {"alertname": "complaint_rate_high", "model": "support-router", "version": "v8", "severity": "critical"}


def test_exact_matchers_silence_for_their_duration() -> None:
    """A silence mutes labels that match every matcher, from its start until its end, and nothing else."""
    s = Silences()
    s.add({"alertname": "complaint_rate_high", "model": "support-router"}, 1800, "alice", "deploying v9", now=100)
    assert s.is_silenced(FIRING, 100)
    assert s.is_silenced(FIRING, 1899)
    assert not s.is_silenced(FIRING, 1900)
    assert not s.is_silenced(FIRING, 99)
    assert not s.is_silenced({**FIRING, "model": "intent-classifier"}, 500)
    assert not s.is_silenced({"model": "support-router"}, 500)


def test_active_lists_only_current_silences() -> None:
    """active() lists silences in force, oldest first, and drops expired ones."""
    ids = iter(["a", "b"])
    s = Silences(new_id=lambda: next(ids))
    s.add({"model": "support-router"}, 100, "alice", "one", now=0)
    s.add({"slice": "EU"}, 1000, "bob", "two", now=10)
    assert [x.id for x in s.active(50)] == ["a", "b"]
    assert [x.id for x in s.active(150)] == ["b"]


def test_remove_ends_a_silence_and_unknown_ids_are_not_found() -> None:
    """remove() ends a silence at once; an unknown or expired id raises SilenceNotFoundError."""
    s = Silences()
    sil = s.add({"alertname": "complaint_rate_high"}, 600, "alice", "known issue", now=0)
    s.remove(sil.id, "bob", now=10)
    assert not s.is_silenced(FIRING, 11)
    with pytest.raises(SilenceNotFoundError):
        s.remove(sil.id, "bob", now=12)
    later = s.add({"alertname": "complaint_rate_high"}, 60, "alice", "short", now=20)
    with pytest.raises(SilenceNotFoundError):
        s.remove(later.id, "bob", now=80)


def test_ids_are_random_uuids() -> None:
    """Ids are uuid4 strings, different for identical silences."""
    s = Silences()
    a = s.add({"model": "support-router"}, 60, "alice", "x", now=0)
    b = s.add({"model": "support-router"}, 60, "alice", "x", now=0)
    assert a.id != b.id
    assert len(a.id) == 36


@pytest.mark.parametrize(
    ("matchers", "duration", "comment"),
    [
        ({}, 60, "why"),
        ({"bad-name": "x"}, 60, "why"),
        ({"model": ""}, 60, "why"),
        ({"model": "support-router"}, 0, "why"),
        ({"model": "support-router"}, -5, "why"),
        ({"model": "support-router"}, float("inf"), "why"),
        ({"model": "support-router"}, 91 * 86400, "why"),
        ({"model": "support-router"}, 60, "   "),
        ({"model": "support-router"}, 60, "x" * 1001),
    ],
)
def test_invalid_silences_are_refused(matchers: dict[str, str], duration: float, comment: str) -> None:
    """Empty or malformed matchers, non-positive, infinite or over-long durations and empty comments are refused."""
    with pytest.raises(SilenceError):
        Silences().add(matchers, duration, "alice", comment, now=0)


def test_number_of_silences_is_bounded() -> None:
    """More than max_silences active silences are refused (memory stays bounded)."""
    s = Silences(max_silences=2)
    s.add({"model": "a"}, 60, "alice", "x", now=0)
    s.add({"model": "b"}, 60, "alice", "x", now=0)
    with pytest.raises(SilenceError, match="too many"):
        s.add({"model": "c"}, 60, "alice", "x", now=0)
    s.add({"model": "c"}, 60, "alice", "x", now=61)  # the first two expired


def test_changes_are_audited_and_restored(tmp_path: Path) -> None:
    """Creation and removal go to the audit hook with the actor, and a new Silences rebuilds from those records."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        s = Silences(log.append)
        keep = s.add({"alertname": "complaint_rate_high"}, 3600, "token:abcd1234/alice", "known issue", now=0)
        gone = s.add({"model": "support-router"}, 3600, "token:abcd1234/alice", "temporary", now=0)
        s.remove(gone.id, "token:abcd1234/bob", now=5)
    recs = list(read_records(path))
    assert [r["kind"] for r in recs] == ["silence.created", "silence.created", "silence.removed"]
    assert recs[2]["actor"] == "token:abcd1234/bob"
    assert recs[0]["rule"] == "complaint_rate_high"
    restored = Silences()
    assert restored.restore(recs, now=10) == 1
    assert [x.id for x in restored.active(10)] == [keep.id]
    assert restored.is_silenced(FIRING, 10)
    assert not restored.is_silenced(FIRING, 3600)
