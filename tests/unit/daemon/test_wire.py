"""The summary wire format: partials survive it exactly, and share their message's slice key table."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from driftwatch.core import summary as S
from driftwatch.daemon.wire import (
    PartialMsg,
    SummaryMsg,
    WireError,
    decode_summary,
    encode_summary,
    from_msg,
    to_msg,
    to_msgs,
)

KEYS = tuple(("region", f"r{i:03d}") for i in range(50))


def _partial(version: str, tick: int, keys: tuple[tuple[str, str], ...], seed: int) -> S.Partial:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 3, (len(keys), 9)) * (rng.random((len(keys), 9)) > 0.7)
    return S.Partial("m", version, tick, keys, counts, tick + 1 if seed % 2 else None)


def _same(a: S.Partial, b: S.Partial) -> bool:
    return (a.model_id, a.version, a.tick, a.visible, a.keys) == (
        b.model_id,
        b.version,
        b.tick,
        b.visible,
        b.keys,
    ) and (np.array_equal(a.counts, b.counts))


def test_partials_of_one_message_share_one_key_table_and_come_back_exactly() -> None:
    reordered = (KEYS[1], KEYS[0], *KEYS[2:10])  # not a prefix of the table: sent with its own keys
    parts = [
        _partial("v1", 10, KEYS[:20], 1),
        _partial("v1", 11, KEYS, 2),
        _partial("v1", 12, KEYS[:35], 3),
        _partial("v2", 10, KEYS[:5], 4),
        _partial("v1", 13, reordered, 5),
        _partial("v1", 14, (), 6),
    ]
    tables, msgs = to_msgs(parts)
    assert tables == {"v1": list(KEYS), "v2": list(KEYS[:5])}
    assert [m.key_count for m in msgs] == [20, 50, 35, 5, -1, -1]
    assert [len(m.keys) for m in msgs] == [0, 0, 0, 0, 10, 0]
    wire = decode_summary(encode_summary(SummaryMsg("w", 1.0, {"t:0": (0, 9)}, msgs, keys=tables)))
    back = [from_msg(m, wire.keys) for m in wire.partials]
    assert all(_same(a, b) for a, b in zip(parts, back, strict=True))
    shared = [p for p, m in zip(back, wire.partials, strict=True) if m.key_count > 0 and m.version == "v1"]
    assert all(p.keys[0] is shared[0].keys[0] for p in shared)  # one copy of each key per message


def test_a_partial_with_its_own_keys_still_decodes_as_before() -> None:
    """A message from a worker that sends each partial's keys (no table) is applied the same way."""
    p = _partial("v1", 3, KEYS[:7], 7)
    wire = decode_summary(encode_summary(SummaryMsg("w", 1.0, {}, [to_msg(p)])))
    assert wire.keys == {}
    assert _same(from_msg(wire.partials[0]), p)


def test_a_partial_naming_keys_its_message_lacks_is_refused() -> None:
    m = PartialMsg("m", "v9", 1, [], 9, b"", b"", key_count=4)
    with pytest.raises(WireError, match="does not carry"):
        from_msg(m, {"v1": list(KEYS)})
    with pytest.raises(WireError, match="does not carry"):
        from_msg(PartialMsg("m", "v1", 1, [], 9, b"", b"", key_count=60), {"v1": list(KEYS)})


def test_an_older_partial_without_a_key_count_decodes() -> None:
    """Messages of an older worker (no ``key_count`` field, no key tables) decode: a rolling upgrade keeps going."""
    old = msgspec.msgpack.encode(["m", "v1", 5, [["region", "r000"]], 9, b"", b"", None, None, []])
    msg = msgspec.msgpack.Decoder(PartialMsg).decode(old)
    assert msg.key_count == -1
    assert from_msg(msg).keys == (("region", "r000"),)


def test_a_version_with_only_partials_of_no_slice_comes_back() -> None:
    """Partials that name no slice (sampled joins only, with reports on) need no key table of their version."""
    parts = [_partial("v1", 10, KEYS[:3], 1), _partial("v7", 10, (), 2), _partial("v7", 11, (), 3)]
    tables, msgs = to_msgs(parts)
    assert set(tables) == {"v1"}
    wire = decode_summary(encode_summary(SummaryMsg("w", 1.0, {}, msgs, keys=tables)))
    back = [from_msg(m, wire.keys) for m in wire.partials]
    assert all(_same(a, b) for a, b in zip(parts, back, strict=True))
