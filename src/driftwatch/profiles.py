"""Reading reference data and profiles from files: the file side of :mod:`driftwatch.core.profile`.

The core builds and applies profiles from values it is given; this module
opens the files (``baseline build`` input tables, profile JSON) and turns
every problem into an error that names the file and, for a config, the key.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import msgspec

from driftwatch.config import Config
from driftwatch.core.profile import Profile, prediction_columns
from driftwatch.errors import InputError, ProfileError
from driftwatch.eventfile import EventFile
from driftwatch.metrics.registry import ESTIMATE_METRICS

__all__ = ["load_profile", "load_profiles", "profile_problems", "read_table"]


_JSON_LINES = (".jsonl", ".ndjson", ".json")


def read_table(path: Path, model_id: str) -> dict[str, list[object]]:
    """Read reference rows as columns from ``.csv``, ``.parquet`` or ``.jsonl`` (prediction events of ``model_id``;
    also gzip-compressed, read as :class:`~driftwatch.eventfile.EventFile` reads events for ``replay``)."""
    suffix = path.suffix.lower()
    if suffix == ".gz":  # events.jsonl.gz
        suffix = Path(path.stem).suffix.lower()
        if suffix not in _JSON_LINES:
            raise InputError(f"{path}: unknown format; only JSON Lines (.jsonl.gz) may be compressed")
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            cols: dict[str, list[object]] = {}
            for r in rows:
                for k, v in r.items():
                    cols.setdefault(k, []).append(v if v != "" else None)
            return cols
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return {k: list(v) for k, v in pq.read_table(path).to_pydict().items()}
        if suffix in _JSON_LINES:
            with EventFile(str(path)) as events:
                lines = (line for batch, _ in events.batches(10_000) for line in batch)
                return prediction_columns(map(msgspec.json.decode, lines), model_id)
    except (OSError, msgspec.DecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read reference data: {e}") from e
    raise InputError(f"{path}: unknown format {suffix!r}; use .csv, .jsonl or .parquet")


def load_profile(path: Path) -> Profile:
    """Read a profile JSON file; every problem is a :class:`ProfileError` naming the file."""
    try:
        return Profile.from_json(json.loads(path.read_bytes().decode("utf-8")))
    except OSError as e:
        raise ProfileError(f"{path}: cannot read profile: {e.strerror}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProfileError(f"{path}: not a JSON profile: {e}") from e
    except ProfileError as e:
        raise ProfileError(f"{path}: {e}") from None


def _load_all(config: Config) -> tuple[dict[str, Profile], list[str]]:
    profiles: dict[str, Profile] = {}
    problems: list[str] = []
    for mid, mc in config.models.items():
        path = mc.reference.profile
        if path is None:
            continue
        try:
            prof = load_profile(path)
        except ProfileError as e:
            problems.append(f"models.{mid}.reference.profile: {e}")
            continue
        if prof.model_id != mid:
            problems.append(
                f"models.{mid}.reference.profile: {path} was built for model {prof.model_id!r}, not {mid!r}; "
                f"build one with: driftwatch baseline build --model {mid} DATA -o {path}"
            )
            continue
        profiles[mid] = prof
    for i, rule in enumerate(config.rules):
        if rule.metric not in ESTIMATE_METRICS:
            continue
        for mid, mc in config.models.items():
            if rule.model not in ("*", mid):
                continue
            if mc.reference.profile is None:
                problems.append(
                    f"rules[{i}] ({rule.name}): {rule.metric} needs a calibrated profile, and model {mid!r} learns its "
                    f"reference from live traffic (no labels): build one from labelled data with `driftwatch baseline "
                    f"build --model {mid} DATA -o profile.json` and set models.{mid}.reference.profile"
                )
            elif mid in profiles and profiles[mid].cbpe is None:
                problems.append(
                    f"rules[{i}] ({rule.name}): {rule.metric} needs a calibrated profile, and "
                    f"{mc.reference.profile} has none: rebuild it from data with a label column"
                )
    return profiles, problems


def profile_problems(config: Config) -> list[str]:
    """Every reason the config's profile files cannot be used (missing, unreadable, built for another model)."""
    return _load_all(config)[1]


def load_profiles(config: Config) -> dict[str, Profile]:
    """The reference profile of every model whose config names a profile file, checked against the model.

    Raises :class:`ProfileError` naming the config key and the file of every
    profile that is missing, unreadable, or was built for another model.
    """
    profiles, problems = _load_all(config)
    if problems:
        raise ProfileError("; ".join(problems))
    return profiles
