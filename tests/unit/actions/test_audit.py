"""Tests for the hash-chained audit trail in `driftwatch.actions.audit` and `driftwatch audit verify`."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftwatch.actions import audit as audit_mod
from driftwatch.actions.audit import GENESIS, AuditError, AuditLog, record_hash, verify
from driftwatch.cli import app

LABELS = {"alertname": "complaint_rate_high", "model": "support-router", "version": "v8", "severity": "critical"}


class Clock:
    """A settable clock."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def write(path: Path, n: int = 5) -> list[bytes]:
    """Append ``n`` records and return the file's lines."""
    clock = Clock()
    with AuditLog(path, clock=clock) as log:
        for i in range(n):
            clock.t += 1
            log.append(
                {
                    "kind": "alert.firing",
                    "actor": "driftwatch",
                    "rule": "complaint_rate_high",
                    "labels": LABELS,
                    "evidence": {"i": i},
                }
            )
    return path.read_bytes().splitlines(keepends=True)


def test_chain_verifies_on_a_real_run(tmp_path: Path) -> None:
    """Records written by AuditLog verify, link to each other, and start from 64 zeros."""
    path = tmp_path / "audit.jsonl"
    lines = write(path, 5)
    report = verify(path)
    assert report.ok
    assert report.records == 5
    assert report.first_bad_line is None
    recs = [json.loads(x) for x in lines]
    assert recs[0]["prev"] == GENESIS
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(recs))
    assert all(r["hash"] == record_hash(r) for r in recs)
    assert set(recs[0]) >= {
        "seq",
        "time",
        "kind",
        "actor",
        "rule",
        "labels",
        "evidence",
        "inputs",
        "outcome",
        "prev",
        "hash",
    }
    assert recs[0]["time"].endswith("Z")
    assert recs[0]["inputs"] is None


def _tamper(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def test_edited_record_is_named(tmp_path: Path) -> None:
    """Changing one field of a record breaks its own hash, and verify names that line."""
    path = tmp_path / "audit.jsonl"
    lines = write(path)
    rec = json.loads(lines[2])
    rec["actor"] = "someone-else"
    lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    _tamper(path, lines)
    report = verify(path)
    assert not report.ok
    assert report.first_bad_line == 3
    assert report.records == 2
    assert report.reason is not None
    assert "edited" in report.reason


def test_edited_and_rehashed_record_breaks_the_next_link(tmp_path: Path) -> None:
    """An edit whose hash is recomputed is caught at the next record, whose prev no longer matches."""
    path = tmp_path / "audit.jsonl"
    lines = write(path)
    rec = json.loads(lines[1])
    rec["outcome"] = "nothing to see"
    rec["hash"] = record_hash(rec)
    lines[1] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    _tamper(path, lines)
    report = verify(path)
    assert (report.ok, report.first_bad_line) == (False, 3)
    assert report.reason is not None
    assert "prev" in report.reason


def test_deleted_record_is_named(tmp_path: Path) -> None:
    """Removing a record breaks the link of the record that followed it."""
    path = tmp_path / "audit.jsonl"
    lines = write(path)
    del lines[1]
    _tamper(path, lines)
    report = verify(path)
    assert (report.ok, report.first_bad_line) == (False, 2)


def test_inserted_record_is_named(tmp_path: Path) -> None:
    """A copied record inserted elsewhere is caught where it was inserted."""
    path = tmp_path / "audit.jsonl"
    lines = write(path)
    lines.insert(3, lines[1])
    _tamper(path, lines)
    report = verify(path)
    assert (report.ok, report.first_bad_line) == (False, 4)


def test_reordered_records_are_named(tmp_path: Path) -> None:
    """Swapping two records is caught at the first moved one."""
    path = tmp_path / "audit.jsonl"
    lines = write(path)
    lines[1], lines[2] = lines[2], lines[1]
    _tamper(path, lines)
    report = verify(path)
    assert (report.ok, report.first_bad_line) == (False, 2)


def test_truncated_last_line_is_named(tmp_path: Path) -> None:
    """A last line cut off mid-record (a crash or a copy gone wrong) is reported as cut off."""
    path = tmp_path / "audit.jsonl"
    lines = write(path)
    lines[-1] = lines[-1][:40]
    _tamper(path, lines)
    report = verify(path)
    assert (report.ok, report.first_bad_line, report.records) == (False, 5, 4)
    assert report.reason is not None
    assert "cut off" in report.reason


def test_non_json_line_is_named(tmp_path: Path) -> None:
    """A line that is not JSON is named as such."""
    path = tmp_path / "audit.jsonl"
    lines = write(path)
    lines.insert(2, b"hello\n")
    _tamper(path, lines)
    report = verify(path)
    assert (report.ok, report.first_bad_line, report.reason) == (False, 3, "not a JSON record")


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    """Reopening an existing file continues seq and prev from its last record."""
    path = tmp_path / "audit.jsonl"
    write(path, 3)
    with AuditLog(path) as log:
        assert log.seq == 3
        log.append({"kind": "action.started"})
        log.append({"kind": "action.succeeded"})
    report = verify(path)
    assert report.ok
    assert report.records == 5
    assert [json.loads(x)["seq"] for x in path.read_bytes().splitlines()] == [1, 2, 3, 4, 5]


def test_reopen_refuses_a_broken_tail(tmp_path: Path) -> None:
    """A file whose last line is cut off or altered is refused rather than chained onto."""
    path = tmp_path / "audit.jsonl"
    lines = write(path, 3)
    path.write_bytes(b"".join(lines)[:-10])
    with pytest.raises(AuditError, match="cut off"):
        AuditLog(path)
    rec = json.loads(lines[-1])
    rec["kind"] = "changed"
    path.write_bytes(b"".join(lines[:-1]) + json.dumps(rec).encode() + b"\n")
    with pytest.raises(AuditError, match="damaged"):
        AuditLog(path)


def test_record_is_on_disk_when_append_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """append fsyncs before it returns, and another file handle then reads the whole record."""
    path = tmp_path / "audit.jsonl"
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(audit_mod.os, "fsync", fsync)
    with AuditLog(path) as log, path.open("rb") as reader:
        n = len(synced)
        digest = log.append({"kind": "action.started", "inputs": {"request": {"target": "http://127.0.0.1:1/x"}}})
        assert len(synced) == n + 1
        line = reader.readline()
    assert line.endswith(b"\n")
    assert json.loads(line)["hash"] == digest


def test_sink_gets_the_same_bytes(tmp_path: Path) -> None:
    """The sink (the audit topic) receives exactly the bytes of the line, without its newline."""
    path = tmp_path / "audit.jsonl"
    got: list[bytes] = []
    with AuditLog(path, sink=got.append) as log:
        log.append({"kind": "delivery.sent"})
    assert got == [path.read_bytes().rstrip(b"\n")]


def test_failing_sink_does_not_undo_a_durable_record(tmp_path: Path) -> None:
    """A sink that raises is counted; the record stays written and the append succeeds."""

    def sink(_: bytes) -> None:
        raise ConnectionError("broker down")

    path = tmp_path / "audit.jsonl"
    with AuditLog(path, sink=sink) as log:
        log.append({"kind": "delivery.sent"})
        assert log.sink_errors == 1
    assert verify(path).records == 1


def test_directory_path_raises_audit_error(tmp_path: Path) -> None:
    """A path that is a directory cannot be an audit file."""
    with pytest.raises(AuditError):
        AuditLog(tmp_path)


def test_missing_parent_raises_audit_error(tmp_path: Path) -> None:
    """A path under a regular file (not a directory) raises AuditError."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AuditError):
        AuditLog(blocker / "audit.jsonl")


def test_write_failure_raises_and_leaves_no_half_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed write raises AuditError, leaves the file as it was, and the next append still chains."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append({"kind": "a"})
        before = path.read_bytes()

        def broken(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(audit_mod.os, "fsync", broken)
        with pytest.raises(AuditError, match="write failed"):
            log.append({"kind": "b"})
        assert path.read_bytes() == before
        assert log.seq == 1
        monkeypatch.undo()
        log.append({"kind": "c"})
    assert verify(path).ok
    assert verify(path).records == 2


def test_full_device_raises_audit_error() -> None:
    """A real write failure (/dev/full: no space) raises AuditError."""
    with AuditLog(Path("/dev/full")) as log, pytest.raises(AuditError):
        log.append({"kind": "action.started"})


def test_unencodable_record_raises_audit_error(tmp_path: Path) -> None:
    """A value that is not JSON raises AuditError (nothing may run), and NaN becomes null."""
    with AuditLog(tmp_path / "a.jsonl") as log:
        with pytest.raises(AuditError):
            log.append({"kind": "x", "inputs": {"obj": object()}})
        log.append({"kind": "x", "inputs": {"value": float("nan")}})
    assert json.loads((tmp_path / "a.jsonl").read_text())["inputs"] == {"value": None}


def test_verify_unreadable_file_raises(tmp_path: Path) -> None:
    """verify raises AuditError for a missing file or a directory."""
    with pytest.raises(AuditError):
        verify(tmp_path / "missing.jsonl")
    with pytest.raises(AuditError):
        verify(tmp_path)


def test_cli_audit_verify_exit_codes(tmp_path: Path) -> None:
    """`driftwatch audit verify` exits 0 when intact, 1 naming the first broken line, 2 when unreadable."""
    runner = CliRunner()
    path = tmp_path / "audit.jsonl"
    lines = write(path, 4)
    res = runner.invoke(app, ["audit", "verify", str(path)])
    assert res.exit_code == 0, res.output
    assert "ok: 4 records, chain intact" in res.output
    del lines[1]
    _tamper(path, lines)
    res = runner.invoke(app, ["audit", "verify", str(path)])
    assert res.exit_code == 1
    assert "line 2" in res.output
    assert "prev" in res.output
    res = runner.invoke(app, ["audit", "verify", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    """Appends from several threads interleave into one intact chain, mirrored to the sink in chain order."""
    import threading

    path = tmp_path / "audit.jsonl"
    mirrored: list[bytes] = []
    with AuditLog(path, sink=mirrored.append) as log:

        def work(n: int) -> None:
            for i in range(50):
                log.append({"kind": "delivery.sent", "inputs": {"thread": n, "i": i}})

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    report = verify(path)
    assert report.ok
    assert report.records == 200
    assert mirrored == path.read_bytes().splitlines()
