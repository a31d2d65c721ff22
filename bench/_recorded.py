"""The recorded event file the replay benchmarks read: written once per scenario, size and rate, then reused."""

from __future__ import annotations

from pathlib import Path

from driftwatch.simulate import write_jsonl

__all__ = ["lines_of", "recorded"]


def recorded(data_dir: Path, scenario: str, events: int, rate: float) -> Path:
    """``data_dir``'s file of ``events`` simulated events (seed 11), written first if missing."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"{scenario}-{events}-r{rate:g}.jsonl"
    if not path.exists():
        print(f"generating {events:,} events -> {path} ...", flush=True)
        write_jsonl(scenario, path, events=events, seed=11, rate=rate)
    return path


def lines_of(path: Path) -> list[bytes]:
    """The file's non-blank lines, without their line ends."""
    with path.open("rb") as fh:
        return [line.rstrip(b"\n") for line in fh if line.strip()]
