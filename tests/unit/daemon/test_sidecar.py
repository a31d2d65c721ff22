"""The sidecar's pure parts: body framing, minimisation, partition choice and envelopes (no sockets)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import yaml
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwatch.client import Minimiser, envelopes, murmur2, partition_for, partitions_for
from driftwatch.config import load_config
from driftwatch.core.slicing import Pseudonymizer
from driftwatch.daemon.sidecar import Intake, parse_body
from driftwatch.errors import ConfigError
from driftwatch.events import EventDecoder, split_messages
from driftwatch.simulate import generate

# Apache Kafka's UtilsTest.testMurmur2 vectors (Java's signed ints): what the Java client and librdkafka's
# murmur2_random compute, so a key lands on the same partition whoever produced it.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
    b"": 275646681,
}

PRED = {
    "type": "prediction",
    "schema_version": 1,
    "event_id": "p-1",
    "ts": 1_795_000_000_000,
    "model_id": "support-router",
    "model_version": "v7",
    "request_id": "r-1",
    "prediction": "human",
    "attributes": {"region": "EU", "age_band": "65+", "customer_email": "someone@example.com"},
    "features": {"message_length": 12},
    "score": 0.5,
}
INTER = {
    "type": "interaction",
    "schema_version": 1,
    "event_id": "i-1",
    "ts": 1_795_000_001_000,
    "request_id": "r-1",
    "kind": "complaint",
}


@pytest.fixture
def intake(example_config: Path, pseudonym_key: bytes) -> Intake:
    """The sidecar's intake over the example config (age_band is sensitive)."""
    return Intake(load_config(example_config), pseudonym_key)


def _enc(event: dict[str, object]) -> bytes:
    return json.dumps(event).encode()


# --------------------------------------------------------------------------------------------- framing


def test_ndjson_bodies_give_one_event_per_non_blank_line() -> None:
    """NDJSON is split on newlines; CRLF, blank lines and surrounding spaces do not make events."""
    body = b'  {"a":1}\r\n\n{"b":[1,2]}\n   \n{"c":3}'
    assert parse_body(body, "application/x-ndjson") == [b'{"a":1}', b'{"b":[1,2]}', b'{"c":3}']
    assert parse_body(body, "application/jsonl") == parse_body(body, "application/x-ndjson")


def test_json_bodies_are_an_array_or_one_event() -> None:
    """application/json is a JSON array of events (each element one event, objects or not) or one event,
    which may span lines."""
    assert parse_body(b'[{"a":1},\n {"b":2}, 3, "x"]', "application/json") == [b'{"a":1}', b'{"b":2}', b"3", b'"x"']
    pretty = b'{\n  "type": "interaction",\n  "kind": "complaint"\n}\n'
    assert parse_body(pretty, "application/json") == [pretty.strip()]
    assert parse_body(b"[]", "application/json") == []


def test_other_content_types_are_sniffed() -> None:
    """Without a JSON content type (curl's default form type, none at all) a leading '[' means an array,
    anything else NDJSON."""
    for ctype in ("", "application/x-www-form-urlencoded", "text/plain"):
        assert parse_body(b' [{"a":1},{"b":2}]', ctype) == [b'{"a":1}', b'{"b":2}']
        assert parse_body(b'{"a":1}\n{"b":2}', ctype) == [b'{"a":1}', b'{"b":2}']


def test_a_byte_order_mark_is_skipped() -> None:
    """A body that starts with a UTF-8 byte order mark frames as the same body without it, whatever its type."""
    bom = b"\xef\xbb\xbf"
    for body in (b'{"a":1}\n{"b":2}', b'[{"a":1},{"b":2}]', b'{"a":1}'):
        for ctype in ("", "application/json", "application/x-ndjson"):
            assert parse_body(bom + body, ctype) == parse_body(body, ctype)
    assert parse_body(bom + b'[{"a":1},{"b":2}]', "") == [b'{"a":1}', b'{"b":2}']


def test_ndjson_is_never_read_as_an_array() -> None:
    """An NDJSON body whose line is an array keeps that line as one (invalid) event."""
    assert parse_body(b'[{"a":1}]\n{"b":2}', "application/x-ndjson") == [b'[{"a":1}]', b'{"b":2}']


def test_a_broken_array_body_is_a_framing_error() -> None:
    """A body that claims to be a JSON array but is not valid JSON cannot be split into events: None."""
    for body in (b'[{"a":1}', b"[1,,2]", b'[{"a":1}] trailing'):
        assert parse_body(body, "application/json") is None
        assert parse_body(body, "") is None


def test_empty_bodies_hold_no_events() -> None:
    """An empty or blank body is no events, not an error."""
    assert parse_body(b"", "application/json") == []
    assert parse_body(b" \n\t ", "application/x-ndjson") == []


# ------------------------------------------------------------------------------------- partition choice


def test_murmur2_equals_kafkas_java_vectors() -> None:
    """Our murmur2 gives the Java client's (and librdkafka murmur2_random's) hash for Kafka's own test vectors."""
    for key, java in JAVA_MURMUR2.items():
        assert murmur2(key) == java & 0xFFFFFFFF, key
        assert aiokafka_murmur2(key) == java & 0xFFFFFFFF, key


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_murmur2_equals_aiokafkas(key: bytes) -> None:
    """For any key our murmur2 equals aiokafka's (the implementation its producer and Faust partition with)."""
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=200))
def test_partition_is_kafkas_default_partitioner(key: bytes, count: int) -> None:
    """The partition is Kafka's default for a keyed record: toPositive(murmur2(key)) % count."""
    assert partition_for(key, range(count)) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % count
    assert partition_for(b"foobar", range(50)) == 16  # the Java client's DefaultPartitioner for 50 partitions


# ------------------------------------------------------------------------------------------- envelopes


def test_envelopes_group_by_partition_in_order_and_split_at_size() -> None:
    """Items become NDJSON envelopes of one topic and partition, in arrival order, of at most `size` events; the
    worker's split gives back exactly the events."""
    rids = [f"r-{i}".encode() for i in range(40)]
    items = [("preds", rid, b'{"n":%d}' % i) for i, rid in enumerate(rids)]
    items += [("inters", rid, b'{"m":%d}' % i) for i, rid in enumerate(rids)]
    out = envelopes(items, [0, 1, 2, 3], 3)
    assert all(1 <= e.events <= 3 for e in out)
    back: dict[tuple[str, int], list[bytes]] = {}
    for e in out:
        events, _ = split_messages([e.value])
        assert len(events) == e.events
        back.setdefault((e.topic, e.partition), []).extend(events)
    for topic in ("preds", "inters"):
        for p in range(4):
            want = [d for t, rid, d in items if t == topic and partition_for(rid, [0, 1, 2, 3]) == p]
            assert back.get((topic, p), []) == want
    assert sum(e.events for e in out) == len(items)


def test_a_request_lands_on_one_partition_in_both_topics() -> None:
    """A request's prediction and interactions get the same partition whichever replica groups them, because
    the choice depends on the request id and the partition count alone."""
    partitions = [0, 1, 2, 3, 4, 5]
    rid = b"req-5a0e0c1b-7d1f"
    others = [("inters", f"other-{i}".encode(), b'{"other":%d}' % i) for i in range(20)]
    replica_1 = envelopes([("preds", rid, b'{"p":1}')], partitions, 100)
    replica_2 = envelopes([*others, ("inters", rid, b'{"i":1}'), *others], partitions, 100)
    (pred_envelope,) = replica_1
    (inter_envelope,) = [e for e in replica_2 if b'{"i":1}' in e.value.split(b"\n")]
    assert pred_envelope.partition == inter_envelope.partition == partition_for(rid, partitions)
    assert len({e.partition for e in replica_2}) > 1  # the other requests spread, so the equality means something


# ---------------------------------------------------------------------------------------- minimisation


def test_unconfigured_attributes_and_unknown_fields_never_leave(intake: Intake) -> None:
    """An attribute the config does not name, and a field the contract does not have, are gone from what is produced."""
    taken = intake.take([_enc({**PRED, "customer_name": "Ada Lovelace"})])
    assert taken.errors == []
    (topic, rid, data), *_ = taken.items
    assert (topic, rid) == ("driftwatch-predictions", b"r-1")
    assert b"customer_email" not in data
    assert b"someone@example.com" not in data
    assert b"customer_name" not in data
    assert b"Ada Lovelace" not in data


def test_sensitive_values_become_the_clients_tokens(intake: Intake, example_config: Path, pseudonym_key: bytes) -> None:
    """A sensitive value leaves as the keyed token the Python client would send (the config key's HMAC), never raw."""
    (_, _, data), *_ = intake.take([_enc(PRED)]).items
    sent = msgspec.json.decode(data)
    token = Pseudonymizer(pseudonym_key).token("age_band", "65+")
    assert sent["attributes"]["age_band"] == token
    assert b'"65+"' not in data
    client_side = Minimiser(load_config(example_config), pseudonym_key).attributes(PRED["attributes"])  # type: ignore[arg-type]
    assert client_side == {"region": "EU", "age_band": token}


def test_sidecar_events_decode_like_the_clients(example_config: Path, pseudonym_key: bytes) -> None:
    """Every simulated event, shaped by the sidecar or by the Python client's rules, decodes in the worker to the
    same struct (so the worker counts them the same)."""
    cfg = load_config(example_config)
    intake = Intake(cfg, pseudonym_key)
    minimiser = Minimiser(cfg, pseudonym_key)
    worker = EventDecoder(cfg.attributes, max_event_bytes=cfg.max_event_bytes)
    events = list(generate("bias", events=3_000, seed=4)[0])
    taken = intake.take([_enc(e) for e in events])
    assert taken.errors == []
    assert taken.predictions + taken.interactions == len(events)
    client_bytes = [
        msgspec.json.encode({**e, "attributes": minimiser.attributes(e["attributes"])})  # type: ignore[arg-type]
        if e["type"] == "prediction"
        else msgspec.json.encode(e)
        for e in events
    ]
    want = worker.decode_batch(client_bytes)
    got = worker.decode_batch([data for _, _, data in taken.items])
    assert got.errors == want.errors == []
    assert got.predictions == want.predictions
    assert got.interactions == want.interactions


def test_rejects_name_reason_and_field_never_the_value(intake: Intake) -> None:
    """Each invalid event is reported by its index with a bounded reason and the field path; the valid ones around it
    are kept."""
    raws = [
        _enc(PRED),
        b"not json at all",
        _enc({**PRED, "score": "SECRET-SCORE-VALUE"}),
        _enc({k: v for k, v in INTER.items() if k != "request_id"}),
        _enc({**INTER, "schema_version": 2}),
        b"[1, 2]",
        _enc({**INTER, "kind": "SECRET-KIND"}),
        _enc(INTER),
    ]
    taken = intake.take(raws)
    got = [(e.index, e.reason, e.field) for e in taken.errors]
    assert got == [
        (1, "invalid_json", None),
        (2, "invalid_field", "score"),
        (3, "missing_field", "request_id"),
        (4, "unsupported_schema_version", "schema_version"),
        (5, "not_an_object", None),
        (6, "invalid_field", "kind"),
    ]
    assert (taken.predictions, taken.interactions) == (1, 1)
    assert "SECRET" not in repr(got)


def test_oversized_events_are_rejected(example_config: Path, pseudonym_key: bytes, tmp_path: Path) -> None:
    """An event over max_event_bytes is rejected as oversized, whatever it holds."""
    data = yaml.safe_load(example_config.read_text())
    data["max_event_bytes"] = 512
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    intake = Intake(load_config(path), pseudonym_key)
    taken = intake.take([_enc({**INTER, "event_id": "x" * 600}), _enc(INTER)])
    assert [(e.index, e.reason) for e in taken.errors] == [(0, "oversized")]
    assert taken.interactions == 1


# ------------------------------------------------------------------------------------------------ config


def _config_with(example_config: Path, tmp_path: Path, sidecar: dict[str, object]) -> Path:
    data = yaml.safe_load(example_config.read_text())
    data["sidecar"] = sidecar
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sidecar_defaults_are_loopback_and_bounded(example_config: Path) -> None:
    """Without a sidecar section the sidecar listens on loopback, rejects when full and bounds its buffer."""
    sc = load_config(example_config).sidecar
    assert (sc.host, sc.on_full, sc.token) == ("127.0.0.1", "reject", None)
    assert sc.max_body_bytes <= sc.buffer_bytes


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"on_full": "block"}, "sidecar.on_full"),
        ({"port": 70000}, "sidecar.port"),
        ({"buffer_events": 0}, "sidecar.buffer_events"),
        ({"drain_grace": "soon"}, "sidecar.drain_grace"),
        ({"max_body_bytes": 2**30}, "sidecar.max_body_bytes"),
        ({"host": "0.0.0.0"}, "sidecar.token"),
        ({"token": {"env": "not a name"}}, "sidecar.token.env"),
        ({"linger": 0}, "sidecar.linger"),
        ({"buffer": 5}, "sidecar.buffer"),
    ],
)
def test_invalid_sidecar_settings_name_their_key(
    example_config: Path, tmp_path: Path, section: dict[str, object], key: str
) -> None:
    """A wrong sidecar setting fails loading with an error that names its key."""
    with pytest.raises(ConfigError) as err:
        load_config(_config_with(example_config, tmp_path, section))
    assert any(f"{key}:" in p for p in err.value.problems), err.value.problems


def test_off_loopback_is_fine_with_a_token_or_a_socket(example_config: Path, tmp_path: Path) -> None:
    """Listening beyond loopback is accepted once a token is set; a Unix socket needs none."""
    with_token = {"host": "0.0.0.0", "token": {"env": "DRIFTWATCH_SIDECAR_TOKEN"}}
    assert load_config(_config_with(example_config, tmp_path, with_token)).sidecar.token is not None
    socket = {"host": "0.0.0.0", "unix_socket": str(tmp_path / "s.sock")}
    assert load_config(_config_with(example_config, tmp_path, socket)).sidecar.unix_socket == tmp_path / "s.sock"


# --------------------------------------------------------------------------------------------- command line


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftwatch.cli", "sidecar", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def test_cli_refuses_an_open_address_without_a_token(example_config: Path, pseudonym_key: bytes) -> None:
    """`driftwatch sidecar` exits 2 naming sidecar.token when told to listen beyond loopback without one, also when
    the address comes from DRIFTWATCH_SIDECAR_HOST."""
    env = {"DRIFTWATCH_PSEUDONYM_KEY": pseudonym_key.decode()}
    for args, extra in (([], {"DRIFTWATCH_SIDECAR_HOST": "0.0.0.0"}), (["--host", "0.0.0.0"], {})):
        done = _cli(["--config", str(example_config), *args], {**env, **extra})
        assert done.returncode == 2, done.stderr
        assert "sidecar.token" in done.stderr


def test_cli_refuses_a_missing_or_short_token(example_config: Path, tmp_path: Path, pseudonym_key: bytes) -> None:
    """A configured token that is unset or shorter than 16 bytes stops the sidecar with exit 2 before it listens."""
    path = _config_with(example_config, tmp_path, {"token": {"env": "DW_TEST_SIDECAR_TOKEN"}})
    env = {"DRIFTWATCH_PSEUDONYM_KEY": pseudonym_key.decode()}
    missing = _cli(["--config", str(path)], env)
    assert missing.returncode == 2
    assert "DW_TEST_SIDECAR_TOKEN" in missing.stderr
    short = _cli(["--config", str(path)], {**env, "DW_TEST_SIDECAR_TOKEN": "too-short"})
    assert short.returncode == 2
    assert "at least 16 bytes" in short.stderr


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=70), st.integers(min_value=0, max_value=60), st.randoms())
def test_murmur2_of_a_batch_equals_aiokafkas(length: int, count: int, rnd: random.Random) -> None:
    """Keys hashed together (numpy, for many keys of one length) give aiokafka's hash for each, in order, mixed
    with keys of other lengths."""
    keys = [rnd.randbytes(length) for _ in range(count)] + [rnd.randbytes(rnd.randrange(40)) for _ in range(count // 3)]
    rnd.shuffle(keys)
    assert partitions_for(keys, range(1000)) == [(aiokafka_murmur2(k) & 0x7FFFFFFF) % 1000 for k in keys]


@settings(max_examples=100)
@given(st.integers(min_value=0, max_value=70), st.integers(min_value=16, max_value=300), st.randoms())
def test_partitions_of_keys_of_one_length_equal_aiokafkas(length: int, count: int, rnd: random.Random) -> None:
    """Many keys of one length (request ids usually are: UUIDs) are placed in one numpy pass: Kafka's default
    partitioner for each, in order, whatever the partition list."""
    keys = [rnd.randbytes(length) for _ in range(count)]
    parts = sorted(rnd.sample(range(100), rnd.randrange(1, 20)))
    assert partitions_for(keys, parts) == [parts[(aiokafka_murmur2(k) & 0x7FFFFFFF) % len(parts)] for k in keys]
