"""Tests of reference profiles: `read_table`, `build_profile`, `Profile` JSON and `load_profile`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftwatch.config import ModelConfig
from driftwatch.core.profile import MAX_CATEGORIES, Profile, build_profile
from driftwatch.errors import InputError, ProfileError
from driftwatch.profiles import load_profile, read_table

CHANNELS = ("app", "phone", "web")
MODEL = ModelConfig.model_validate(
    {
        "favorable": ["yes"],
        "features": {"x": {"kind": "numeric"}, "channel": {"kind": "categorical"}},
        "reference": {"learn_events": 100},
    }
)


def reference_rows(n: int = 500, seed: int = 7) -> list[dict[str, object]]:
    """Rows of the reference: every 10th row misses ``x``, every 13th misses ``channel``."""
    rng = np.random.default_rng(seed)
    xs = rng.normal(5.0, 2.0, n)
    chans = rng.choice(CHANNELS, n, p=[0.5, 0.2, 0.3])
    scores = np.round(rng.uniform(0, 1, n), 4)
    preds = rng.choice(["yes", "no"], n, p=[0.4, 0.6])
    rows: list[dict[str, object]] = []
    for i in range(n):
        rows.append(
            {
                "x": None if i % 10 == 3 else float(xs[i]),
                "channel": None if i % 13 == 5 else str(chans[i]),
                "score": float(scores[i]),
                "prediction": str(preds[i]),
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["x", "channel", "score", "prediction"])
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
    return path


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    """The rows as prediction events of model ``m``, interleaved with events that must be ignored."""
    lines = []
    for i, r in enumerate(rows):
        feats = {k: r[k] for k in ("x", "channel") if r[k] is not None}  # a missing feature is left out
        lines.append(
            {
                "type": "prediction",
                "schema_version": 1,
                "event_id": f"p{i}",
                "ts": 1_700_000_000_000 + i,
                "model_id": "m",
                "model_version": "v1",
                "request_id": f"r{i}",
                "prediction": r["prediction"],
                "score": r["score"],
                "features": feats,
            }
        )
        # Noise that would change the profile if it were read: another model and an interaction.
        lines.append(
            {
                "type": "prediction",
                "schema_version": 1,
                "event_id": f"o{i}",
                "ts": 1_700_000_000_000 + i,
                "model_id": "other",
                "model_version": "v1",
                "request_id": f"o{i}",
                "prediction": "yes",
                "score": 1.0,
                "features": {"x": 1000.0 + i, "channel": "fax", "only_other": 1.0},
            }
        )
        lines.append(
            {
                "type": "interaction",
                "schema_version": 1,
                "event_id": f"c{i}",
                "ts": 1_700_000_000_000 + i,
                "request_id": f"r{i}",
                "kind": "complaint",
            }
        )
    path.write_bytes(b"\n".join(msgspec.json.encode(x) for x in lines) + b"\n\n")
    return path


def write_parquet(path: Path, rows: list[dict[str, object]]) -> Path:
    table = pa.table(
        {
            "x": pa.array([r["x"] for r in rows], pa.float64()),
            "channel": pa.array([r["channel"] for r in rows], pa.string()),
            "score": pa.array([r["score"] for r in rows], pa.float64()),
            "prediction": pa.array([r["prediction"] for r in rows], pa.string()),
        }
    )
    pq.write_table(table, path)
    return path


def test_csv_jsonl_and_parquet_give_the_same_profile(tmp_path: Path) -> None:
    """The same reference rows written as .csv, .jsonl and .parquet build the same profile."""
    rows = reference_rows()
    files = [
        write_csv(tmp_path / "ref.csv", rows),
        write_jsonl(tmp_path / "ref.jsonl", rows),
        write_parquet(tmp_path / "ref.parquet", rows),
    ]
    profiles = [build_profile("m", MODEL, read_table(f, "m")) for f in files]
    assert profiles[0] == profiles[1] == profiles[2]
    prof = profiles[0]
    assert set(prof.distributions) == {"x", "channel", "score", "prediction"}
    assert prof.count == len(rows)
    assert prof.distributions["x"].count == sum(r["x"] is not None for r in rows)
    assert prof.distributions["channel"].count == sum(r["channel"] is not None for r in rows)
    assert prof.selection_rate == pytest.approx(sum(r["prediction"] == "yes" for r in rows) / len(rows), abs=1e-12)


def test_jsonl_reads_only_prediction_events_of_the_model(tmp_path: Path) -> None:
    """A .jsonl reference keeps the model's prediction events; interactions and other models are ignored."""
    rows = reference_rows(n=50)
    cols = read_table(write_jsonl(tmp_path / "ref.jsonl", rows), "m")
    assert set(cols) == {"x", "channel", "score", "prediction"}
    assert cols["score"] == [r["score"] for r in rows]
    assert cols["prediction"] == [r["prediction"] for r in rows]
    assert "fax" not in cols["channel"]


def test_jsonl_reference_may_be_gzip_compressed_and_start_with_a_byte_order_mark(tmp_path: Path) -> None:
    """events.jsonl.gz, or a .jsonl that starts with a UTF-8 byte order mark, reads as the plain file (as replay reads
    event files); another compressed format is refused by name."""
    import gzip

    plain = write_jsonl(tmp_path / "ref.jsonl", reference_rows(n=50))
    expected = read_table(plain, "m")
    packed = tmp_path / "ref.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    marked = tmp_path / "bom.jsonl"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert read_table(packed, "m") == expected
    assert read_table(marked, "m") == expected
    csv_gz = tmp_path / "ref.csv.gz"
    csv_gz.write_bytes(gzip.compress(b"x\n1\n"))
    with pytest.raises(InputError, match="only JSON Lines"):
        read_table(csv_gz, "m")


def test_jsonl_events_missing_a_feature_still_align_columns(tmp_path: Path) -> None:
    """An event without a feature gives None in that column, so every column stays row-aligned."""
    rows = reference_rows(n=40)
    cols = read_table(write_jsonl(tmp_path / "ref.jsonl", rows), "m")
    assert {len(v) for v in cols.values()} == {len(rows)}
    assert cols["x"] == [r["x"] for r in rows]
    assert cols["channel"] == [r["channel"] for r in rows]
    assert cols["x"][3] is None
    assert cols["channel"][5] is None


def test_numeric_edges_are_the_reference_deciles() -> None:
    """A numeric feature's edges are the 10%…90% quantiles of its values; its proportions sum to 1, about 0.1 each."""
    rng = np.random.default_rng(11)
    x = rng.lognormal(0.0, 1.0, 2000)
    values: list[object] = [float(v) for v in x] + [None, "n/a"]  # unusable values are not counted
    prof = build_profile("m", MODEL, {"x": values, "channel": ["web"] * len(values)})
    d = prof.distributions["x"]
    assert d.kind == "numeric"
    assert d.count == 2000
    np.testing.assert_allclose(d.edges, np.quantile(x, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]), rtol=1e-12)
    assert d.bins == 10
    assert sum(d.proportions) == pytest.approx(1.0, abs=1e-12)
    assert max(abs(p - 0.1) for p in d.proportions) <= 1 / 2000


def test_categorical_keeps_categories_and_an_empty_unseen_bin() -> None:
    """A categorical feature keeps its categories (sorted) with their shares, plus an ``__unseen__`` bin at 0."""
    chans = ["web"] * 50 + ["app"] * 30 + ["phone"] * 20 + [None] * 7
    prof = build_profile("m", MODEL, {"x": [1.0] * len(chans), "channel": chans})
    d = prof.distributions["channel"]
    assert d.kind == "categorical"
    assert d.categories == ("app", "phone", "web")
    assert d.proportions == pytest.approx((0.3, 0.2, 0.5, 0.0), abs=1e-12)
    assert d.proportions[-1] == 0.0
    assert d.count == 100
    assert sum(d.proportions) == pytest.approx(1.0, abs=1e-12)


def test_rare_categories_beyond_the_cap_share_the_unseen_bin() -> None:
    """Categories beyond the most frequent MAX_CATEGORIES are not kept; their share goes to ``__unseen__``."""
    common = [f"c{i:02d}" for i in range(MAX_CATEGORIES)]
    rare = [f"r{i}" for i in range(10)]
    chans = [c for c in common for _ in range(3)] + rare
    prof = build_profile("m", MODEL, {"x": [1.0] * len(chans), "channel": chans})
    d = prof.distributions["channel"]
    assert d.categories == tuple(common)
    assert d.proportions[-1] == pytest.approx(10 / len(chans), abs=1e-12)
    assert sum(d.proportions) == pytest.approx(1.0, abs=1e-12)


def test_profile_json_round_trip(tmp_path: Path) -> None:
    """Profile.to_json → JSON text → from_json (and load_profile) gives back an equal profile."""
    prof = build_profile("m", MODEL, read_table(write_csv(tmp_path / "ref.csv", reference_rows()), "m"), source="ref")
    text = json.dumps(prof.to_json())
    assert Profile.from_json(json.loads(text)) == prof
    path = tmp_path / "profile.json"
    path.write_text(text, encoding="utf-8")
    assert load_profile(path) == prof


BAD_PROFILES = {
    "missing": None,
    "not_json": b"{not json",
    "json_array": b"[1, 2, 3]",
    "wrong_version": b'{"profile_version": 99, "model_id": "m", "count": 1, "distributions": {}}',
    "no_distributions": b'{"profile_version": 1, "model_id": "m", "count": 1}',
    "not_utf8": b"\xff\xfe\x00\x81 binary",
}


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_load_profile_on_a_bad_file_raises_profile_error_with_the_path(tmp_path: Path, case: str) -> None:
    """Loading a missing, malformed or non-profile file raises ProfileError whose message names the file."""
    path = tmp_path / f"{case}.json"
    data = BAD_PROFILES[case]
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(path) in str(info.value)


def test_non_strict_leaves_out_a_feature_without_values() -> None:
    """strict=False builds the profile without a feature that has no usable values or no column."""
    no_values = build_profile("m", MODEL, {"x": [None, "n/a"], "channel": ["web", "app"]}, strict=False)
    assert set(no_values.distributions) == {"channel"}
    no_column = build_profile("m", MODEL, {"channel": ["web", "app"]}, strict=False)
    assert set(no_column.distributions) == {"channel"}


@pytest.mark.parametrize(
    ("columns", "feature"),
    [
        ({"x": [None, "n/a"], "channel": ["web", "app"]}, "x"),
        ({"x": [1.0, 2.0], "channel": [None, None]}, "channel"),
        ({"channel": ["web", "app"]}, "x"),
    ],
)
def test_strict_raises_profile_error_naming_the_feature(columns: dict[str, list[object]], feature: str) -> None:
    """strict=True raises ProfileError naming the feature that has no usable values (or no column)."""
    with pytest.raises(ProfileError, match=f"'{feature}'"):
        build_profile("m", MODEL, columns, strict=True)


@pytest.mark.parametrize("name", ["ref.txt", "ref.xlsx", "ref"])
def test_unknown_extension_raises_input_error(tmp_path: Path, name: str) -> None:
    """read_table refuses a file whose extension is not .csv, .jsonl or .parquet with InputError."""
    path = tmp_path / name
    path.write_text("x\n1\n", encoding="utf-8")
    with pytest.raises(InputError, match="unknown format"):
        read_table(path, "m")
