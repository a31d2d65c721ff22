"""A PII scan of everything a real worker writes: personal data planted in every field a careless client or an
attacker controls appears nowhere but the input topics and the dead-letter values.

Every planted value is fictitious (555-01xx numbers, example.com/.net/.org addresses, the card networks' published
test numbers, placeholder names). Each place it is planted in gets its own value, so a leak names its way in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import BaseModel

from driftwatch.config import Config, TopicConfig, load_config
from driftwatch.core.profile import build_profile, prediction_columns
from driftwatch.daemon.topics import alerting_topics, ensure_topics
from driftwatch.demo.broker import free_port
from driftwatch.simulate import generate

from .conftest import WorkerProcess, http_on_loopback, produce, samples, unique_config, wait_for

NAME = "piiscan"
SECRET = "whsec_" + base64.b64encode(b"pii-scan-test-signing-secret-32b").decode()
TOKEN = "pii-scan-api-token-0123456789abcdef"

# ------------------------------------------------------------------ what is planted, and where
# Through the producer client (a careless model server): it drops unconfigured attributes and tokenises sensitive
# ones at the source, and sends everything else as given.
RID = "erika.mustermann@example.net"
"""Every request id of the stream is ``<n>:`` + this (an e-mail address used as a request id)."""
EVENT_ID = "max.mustermann@example.org"
"""Every event id of the stream is ``<n>:`` + this."""
C_REGION_PHONE = "+1-202-555-0101"  # label-shaped: passes the label grammar, must fold as personal
C_LANGUAGE_EMAIL = "jane.roe@example.com"
C_CHANNEL_CARD = "4111111111111111"  # label-shaped card number
C_REGION_NAME = "Jane Roe"
C_AGE_PHONE = "+1-202-555-0102"  # sensitive: a token from the client on
C_AGE_EMAIL = "john.roe@example.com"  # sensitive
C_COMPLAINT_TEXT = "Jane Roe, call back on 202-555-0103"  # an interaction's value as free text
C_LABEL_EMAIL = "jane.roe+label@example.com"  # a ground-truth label's value
C_TOPIC_CARD = "card 4000 0566 5566 5556"  # a categorical feature value
C_LENGTH_PHONE = "+1-202-555-0104"  # a numeric feature sent as a string
C_FEATURE_NAME = "John Q. Public"  # an unconfigured feature's value
C_FEATURE_KEY = "jq.public@example.org"  # an unconfigured feature's name

# Straight to the input topics, keyed by request id as docs/sidecar.md tells producers (a hand-rolled producer or
# an attacker): nothing minimised or tokenised at the source.
R_AGE_PHONE = "+1-202-555-0111"  # sensitive: the worker must tokenise it
R_ATTR_PHONE = "+1-202-555-0112"  # unconfigured attributes: dropped by the decoder
R_ATTR_EMAIL = "rae.roe@example.com"
R_ATTR_NAME = "Rae Roe"
R_ATTR_CARD = "5555 5555 5555 4444"
R_REGION_TEXT = "Call Rae Roe at 202-555-0113"
R_REASON_EMAIL = "rae.roe+refund@example.com"  # a categorical feature while the reference is still being learnt
R_REASON_CARD = "refund to 5105105105105100"
R_MODEL_EMAIL = "rae.roe+model@example.com"  # an unknown model id
R_COMPLAINT_TEXT = "Rae Roe is furious, call 202-555-0114"

# Malformed events: the dead-letter topic's VALUES may hold these, nothing else may.
M_JSON_TEXT = "Dana Dee +1-202-555-0121 dana.dee@example.com"
M_KIND_PHONE = "+1-202-555-0122"
M_TYPE_EMAIL = "dana.dee+type@example.com"
M_SCORE_CARD = "4111 1111 1111 1111"
M_REGION_LONG = "Dana Dee, 12 Example Street, Springfield, phone +1-202-555-0123, card 6011000990139424"
M_EVENT_ID_EMAIL = "dana.dee+v2@example.com"
M_ATTR_PHONE = "+1-202-555-0124"
M_TS_PHONE = "+1-202-555-0125"
M_FEATURE_KEY = "dana.dee+feature@example.com"
M_LABEL_TEXT = "Dana Dee of 12 Example Street wants her money back: call 202-555-0126 now"  # over 64
DL_RID = "dl.mustermann@example.net"
"""Request id (``<n>:`` + this) and so message key of every malformed event."""

CLIENT_PLANTED = {
    "request ids": RID,
    "event ids": EVENT_ID,
    "region (phone)": C_REGION_PHONE,
    "language (e-mail)": C_LANGUAGE_EMAIL,
    "channel (card)": C_CHANNEL_CARD,
    "region (name)": C_REGION_NAME,
    "age_band, sensitive (phone)": C_AGE_PHONE,
    "age_band, sensitive (e-mail)": C_AGE_EMAIL,
    "complaint value (free text)": C_COMPLAINT_TEXT,
    "label value (e-mail)": C_LABEL_EMAIL,
    "categorical feature (card)": C_TOPIC_CARD,
    "numeric feature as a string (phone)": C_LENGTH_PHONE,
    "unconfigured feature value (name)": C_FEATURE_NAME,
    "unconfigured feature name (e-mail)": C_FEATURE_KEY,
}
RAW_PLANTED = {
    "raw age_band, sensitive (phone)": R_AGE_PHONE,
    "raw unconfigured attribute (phone)": R_ATTR_PHONE,
    "raw unconfigured attribute (e-mail)": R_ATTR_EMAIL,
    "raw unconfigured attribute (name)": R_ATTR_NAME,
    "raw unconfigured attribute (card)": R_ATTR_CARD,
    "raw region (free text)": R_REGION_TEXT,
    "raw categorical feature while learning (e-mail)": R_REASON_EMAIL,
    "raw categorical feature while learning (card)": R_REASON_CARD,
    "raw unknown model id (e-mail)": R_MODEL_EMAIL,
    "raw complaint value (free text)": R_COMPLAINT_TEXT,
}
MALFORMED_PLANTED = {
    "malformed: invalid JSON text": M_JSON_TEXT,
    "malformed: kind (phone)": M_KIND_PHONE,
    "malformed: type (e-mail)": M_TYPE_EMAIL,
    "malformed: score (card)": M_SCORE_CARD,
    "malformed: region over 64 characters": M_REGION_LONG,
    "malformed: event id of schema version 2": M_EVENT_ID_EMAIL,
    "malformed: attribute of an event without request id": M_ATTR_PHONE,
    "malformed: attribute of an event from the year 9999": M_TS_PHONE,
    "malformed: feature name with a nested value": M_FEATURE_KEY,
    "malformed: label value over 64 characters": M_LABEL_TEXT,
    "malformed: request ids (message keys)": DL_RID,
}
PLANTED = {**CLIENT_PLANTED, **RAW_PLANTED, **MALFORMED_PLANTED}
TO_SOURCE = {k: v for k, v in PLANTED.items() if not k.startswith("age_band, sensitive")}
"""What the input topics and dead-letter values must hold (sensitive values from the client are tokens already)."""


def _forms(text: str) -> set[bytes]:
    """The ways ``text`` could be written out (as is, lowercase, URL-quoted, JSON-escaped), as lowercase bytes."""
    lowered = text.lower()
    out = {lowered, urllib.parse.quote(lowered, safe=""), urllib.parse.quote_plus(lowered)}
    out.add(json.dumps(lowered)[1:-1])
    return {f.encode() for f in out}


NEEDLES = {where: _forms(value) for where, value in PLANTED.items()}


def _leaks(blob: bytes | str, only: dict[str, set[bytes]] | None = None) -> list[str]:
    """Which planted values (by where they were planted) ``blob`` holds, case-insensitively."""
    data = (blob.encode() if isinstance(blob, str) else blob).lower()
    return [where for where, forms in (only or NEEDLES).items() if any(f in data for f in forms)]


# ------------------------------------------------------------------ the stream


_PLANTED: dict[int, tuple[tuple[str, str, object], ...]] = {
    # Slot of the support-router predictions (every 40th each) -> what is planted in it.
    1: (("attributes", "region", C_REGION_PHONE),),
    2: (("attributes", "language", C_LANGUAGE_EMAIL),),
    3: (("attributes", "channel", C_CHANNEL_CARD),),
    4: (("attributes", "region", C_REGION_NAME),),
    5: (("attributes", "age_band", C_AGE_PHONE),),
    6: (("attributes", "age_band", C_AGE_EMAIL),),
    7: (("features", "topic", C_TOPIC_CARD),),
    8: (("features", "message_length", C_LENGTH_PHONE),),
    9: (("features", "caller", C_FEATURE_NAME), ("features", C_FEATURE_KEY, 1.0)),
}


def _stream(events: int) -> list[dict[str, Any]]:
    """The complaint-spike simulation (it fires complaint_rate_high) with the client-side values planted in it."""
    out: list[dict[str, Any]] = []
    rids: dict[str, str] = {}
    sr = rr = labels = complaints = 0
    for n, ev in enumerate(generate("complaint-spike", events=events, seed=31)[0]):
        e: dict[str, Any] = {**ev, "event_id": f"{n}:{EVENT_ID}"}
        e["request_id"] = rids.setdefault(str(ev["request_id"]), f"{len(rids)}:{RID}")
        if e["type"] == "prediction":
            attrs = dict(e["attributes"])
            feats = dict(e["features"])
            if e["model_id"] == "support-router":
                sr += 1
                for target, key, value in _PLANTED.get(sr % 40, ()):
                    (attrs if target == "attributes" else feats)[key] = value
            else:
                rr += 1
                if rr % 40 == 1:
                    attrs["age_band"] = C_AGE_EMAIL
            e["attributes"], e["features"] = attrs, feats
        elif e["kind"] == "label":
            labels += 1
            if labels % 40 == 1:
                e["value"] = C_LABEL_EMAIL
        elif e["kind"] == "complaint":
            complaints += 1
            if complaints % 10 == 1:
                e["value"] = C_COMPLAINT_TEXT
        out.append(e)
    return out


def _raw_valid(start_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """(topic kind, event) of valid events with the producer-side values planted (sent without the client)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for n in range(30):
        rid = f"raw-{n}:{RID}"
        ts = start_ms + 1000 + n * 50
        attrs: dict[str, str] = {"region": "EU", "language": "en", "channel": "chat", "age_band": "25-34"}
        if n % 3 == 0:
            attrs["age_band"] = R_AGE_PHONE
        if n % 3 == 1:
            attrs.update(phone=R_ATTR_PHONE, email=R_ATTR_EMAIL, full_name=R_ATTR_NAME, card=R_ATTR_CARD)
        if n % 3 == 2:
            attrs["region"] = R_REGION_TEXT
        base = {"schema_version": 1, "event_id": f"raw-{n}:{EVENT_ID}", "ts": ts, "request_id": rid}
        if n % 2 == 0:
            pred = {
                **base,
                "type": "prediction",
                "model_id": "support-router",
                "model_version": "v7",
                "prediction": "ai",
                "score": 0.4,
                "attributes": attrs,
                "features": {"message_length": 120.0, "sentiment": 0.1, "account_age_days": 300.0, "topic": "billing"},
            }
        else:
            reason = R_REASON_EMAIL if n % 4 == 1 else R_REASON_CARD
            pred = {
                **base,
                "type": "prediction",
                "model_id": "refund-approval",
                "model_version": "v3",
                "prediction": "approve",
                "score": 0.7,
                "attributes": attrs,
                "features": {"amount": 40.0, "account_age_days": 90.0, "prior_refunds": 0.0, "reason": reason},
            }
        out.append(("predictions", pred))
        out.append(
            (
                "interactions",
                {
                    **base,
                    "event_id": f"raw-i{n}:{EVENT_ID}",
                    "ts": ts + 20,
                    "type": "interaction",
                    "kind": "complaint",
                    "value": R_COMPLAINT_TEXT,
                },
            )
        )
    unknown = {
        "type": "prediction",
        "schema_version": 1,
        "event_id": f"raw-u:{EVENT_ID}",
        "ts": start_ms + 2000,
        "model_id": R_MODEL_EMAIL,
        "model_version": "v1",
        "request_id": f"raw-u:{RID}",
        "prediction": "ai",
    }
    out.append(("predictions", unknown))
    return out


def _malformed(start_ms: int) -> list[tuple[str, bytes, str, bytes]]:
    """(topic kind, raw bytes, expected reason, message key) of events the worker must dead-letter; each is keyed
    by its request id (a planted e-mail address), as producers are told to key events."""
    rid = iter(f"{n}:{DL_RID}" for n in range(100))
    pred = {
        "type": "prediction",
        "schema_version": 1,
        "event_id": "m",
        "ts": start_ms + 3000,
        "model_id": "support-router",
        "model_version": "v7",
        "prediction": "ai",
        "attributes": {"region": "EU"},
    }
    inter = {"type": "interaction", "schema_version": 1, "event_id": "m", "ts": start_ms + 3000, "kind": "complaint"}

    def enc(doc: dict[str, Any]) -> bytes:
        return json.dumps(doc).encode()

    events = [
        ("predictions", ('{"type": "prediction", "note": "' + M_JSON_TEXT).encode(), "invalid_json"),
        ("interactions", enc({**inter, "request_id": next(rid), "kind": M_KIND_PHONE}), "invalid_field"),
        ("predictions", enc({**pred, "request_id": next(rid), "type": M_TYPE_EMAIL}), "unknown_type"),
        ("predictions", enc({**pred, "request_id": next(rid), "score": M_SCORE_CARD}), "invalid_field"),
        (
            "predictions",
            enc({**pred, "request_id": next(rid), "attributes": {"region": M_REGION_LONG}}),
            "invalid_field",
        ),
        (
            "predictions",
            enc({**pred, "request_id": next(rid), "schema_version": 2, "event_id": M_EVENT_ID_EMAIL}),
            "unsupported_schema_version",
        ),
        ("predictions", enc({**pred, "attributes": {"region": "EU", "phone": M_ATTR_PHONE}}), "missing_field"),
        (
            "predictions",
            enc({**pred, "request_id": next(rid), "ts": "9999-01-01T00:00:00Z", "attributes": {"region": M_TS_PHONE}}),
            "timestamp_out_of_range",
        ),
        ("predictions", enc({**pred, "request_id": next(rid), "features": {M_FEATURE_KEY: [1]}}), "invalid_field"),
        (
            "interactions",
            enc({**inter, "request_id": next(rid), "kind": "label", "value": M_LABEL_TEXT}),
            "invalid_field",
        ),
    ]
    out = []
    for kind, raw, reason in events:
        try:
            key = str(json.loads(raw).get("request_id") or next(rid))
        except ValueError:
            key = next(rid)
        out.append((kind, raw, reason, key.encode()))
    return out


# ------------------------------------------------------------------ a recording webhook receiver


@dataclass
class _Hook:
    """Every request the receiver got: (method and path, headers, body)."""

    requests: list[tuple[str, list[tuple[str, str]], bytes]] = field(default_factory=list)


class _Recorder(BaseHTTPRequestHandler):
    hook: _Hook

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).hook.requests.append((f"POST {self.path}", list(self.headers.items()), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, _Hook]]:
    """A webhook receiver on loopback that keeps every request whole (headers and body)."""
    got = _Hook()
    with http_on_loopback(type("Recorder", (_Recorder,), {"hook": got})) as url:
        yield url, got


# ------------------------------------------------------------------ reading every topic whole


@dataclass(frozen=True)
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


async def _topics_named(bootstrap: str, part: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if part in t}
    finally:
        await admin.close()


async def _read_whole(bootstrap: str, topics: set[str]) -> dict[str, list[_Record]]:
    """Every record of ``topics`` from the beginning to the end offsets at the time of the call (no group)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        await c.topics()  # fetches metadata of every topic
        tps = [TopicPartition(t, p) for t in sorted(topics) for p in sorted(c.partitions_for_topic(t) or ())]
        assert {tp.topic for tp in tps} == topics, f"no partitions known for {topics - {tp.topic for tp in tps}}"
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        out: dict[str, list[_Record]] = {t: [] for t in topics}
        todo = {tp for tp in tps if end[tp] > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while todo:
            assert loop.time() < deadline, f"could not read {sorted(str(tp) for tp in todo)} to their end"
            batch = await c.getmany(*todo, timeout_ms=500)
            for tp, msgs in batch.items():
                out[tp.topic].extend(
                    _Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers)) for m in msgs
                )
            todo = {tp for tp in todo if await c.position(tp) < end[tp]}
        return out
    finally:
        await c.stop()


async def _send_raw(bootstrap: str, cfg: Config, items: Sequence[tuple[str, bytes, bytes]]) -> None:
    """Produce (topic kind, value, key) records straight to the input topics (the default murmur2 partitioner)."""
    topics = {"predictions": cfg.kafka.predictions.name, "interactions": cfg.kafka.interactions.name}
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await prod.start()
    try:
        for kind, value, key in items:
            await prod.send_and_wait(topics[kind], value, key=key)
    finally:
        await prod.stop()


def _named_topics(cfg: Config) -> set[str]:
    """Every topic the config names anywhere (a TopicConfig at any depth, the state topics)."""
    found: set[str] = {cfg.kafka.ingest_state, cfg.kafka.eval_state}

    def walk(obj: object) -> None:
        if isinstance(obj, TopicConfig):
            found.add(obj.name)
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name))
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list | tuple):
            for v in obj:
                walk(v)

    walk(cfg)
    return found


# ------------------------------------------------------------------ the test


def _config(tmp_path: Path, example: Path, events: list[dict[str, Any]], url: str, api_port: int) -> Path:
    """The example config with this test's topics, a webhook receiver, actions, the API and the audit file."""
    path = unique_config(tmp_path, example, NAME, checkpoint_interval="1s")
    data = yaml.safe_load(path.read_text())
    # support-router against a reference built from the stream (the spike fires at once); refund-approval learns
    # its reference from its first events, so planted categorical values land in a learnt profile.
    clean = list(generate("complaint-spike", events=len(events), seed=31)[0])  # planted values stay unseen
    columns = prediction_columns(clean, "support-router", limit=2000)
    prof = tmp_path / "support-router.json"
    prof.write_text(
        json.dumps(build_profile("support-router", load_config(example).models["support-router"], columns).to_json())
    )
    data["models"]["support-router"]["reference"] = {"profile": str(prof)}
    data["models"]["refund-approval"]["reference"] = {"learn_events": 500}
    for rule in data["rules"]:
        if rule["name"] == "complaint_rate_high":
            rule["for"] = "30s"  # fires well before the stream's last event time: a short stream suffices
    data["alerting"] = {
        "dry_run": False,
        "notify": {
            "group_wait": "1s",
            "group_interval": "2s",
            "receivers": [{"name": "oncall", "kind": "webhook", "url": url, "secret": {"env": "PII_SECRET"}}],
            "dead_letter": {"name": f"{NAME}-notify-dead-letter", "partitions": 1},
        },
        "egress": {"allow": ["127.0.0.1/32"]},
        "actions": {
            "rollback_model": {"kind": "rollback_model", "transport": "kafka"},
            "route_to_human": {"kind": "route_to_human", "transport": "kafka"},
        },
        "api": {"enabled": True, "port": api_port, "token": {"env": "PII_TOKEN"}},
        "audit": {"path": str(tmp_path / "audit.jsonl"), "topic": {"name": f"{NAME}-audit", "partitions": 1}},
        "control_topic": {"name": f"{NAME}-control", "partitions": 1},
    }
    path.write_text(json.dumps(data))
    return path


def _api(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()  # type: ignore[no-any-return]


def test_planted_personal_data_reaches_nothing_driftwatch_writes(
    tmp_path: Path,
    example_config: Path,
    kafka_bootstrap: str,
    worker_env: dict[str, str],
    pseudonym_key: bytes,
    hook: tuple[str, _Hook],
) -> None:
    """Phone numbers, e-mail addresses, card numbers and names planted in every field a producer controls (request
    and event ids, configured, sensitive and unconfigured attributes, feature names and values, interaction values,
    model ids, malformed events) appear in none of /metrics, the log, the webhooks, the API, the audit file, the
    replay reports, or any topic's keys, values and headers, except the input topics and the dead-letter values."""
    url, got = hook
    events = _stream(20_000)
    start_ms = 1_795_000_000_000  # the simulation's first event time
    raw_valid = _raw_valid(start_ms)
    malformed = _malformed(start_ms)
    api_port = free_port()
    cfg_path = _config(tmp_path, example_config, events, url, api_port)
    cfg = load_config(cfg_path)
    assert all(NAME in t for t in _named_topics(cfg)), _named_topics(cfg)  # nothing shared with another test
    asyncio.run(ensure_topics(kafka_bootstrap, cfg.kafka, alerting_topics(cfg)))

    # The producer-side events first (their event times are the stream's first seconds), then the client's stream.
    asyncio.run(
        _send_raw(
            kafka_bootstrap,
            cfg,
            [(k, json.dumps(e).encode(), str(e["request_id"]).encode()) for k, e in raw_valid]
            + [(k, v, key) for k, v, _, key in malformed],
        )
    )
    produce(cfg, pseudonym_key, kafka_bootstrap, events)
    total = len(events) + len(raw_valid) + len(malformed)

    # The replay reports, from a file of the same events with raw values (replay pseudonymises them itself).
    stream_file = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for _, e in raw_valid] + [v.decode() for _, v, _, _ in malformed]
    stream_file.write_text("\n".join(lines + [json.dumps(e) for e in events]) + "\n")
    replay_env = {**worker_env, "COLUMNS": "200"}
    replays = [
        subprocess.Popen(
            [sys.executable, "-m", "driftwatch.cli", "replay", str(stream_file), "-c", str(cfg_path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=replay_env,
            cwd=tmp_path,
        )
        for args in (("--json", "--rejects", str(tmp_path / "rejects.jsonl")), ())
    ]

    env = {**worker_env, "PII_SECRET": SECRET, "PII_TOKEN": TOKEN}
    worker = WorkerProcess(cfg_path, kafka_bootstrap, env, tmp_path / "worker.log")
    try:

        def settled() -> bool:
            s = samples(worker.scrape("driftwatch_events_total", "driftwatch_dead_lettered_total"))
            seen = sum(s.get(("driftwatch_events_total", (("kind", k),)), 0) for k in ("prediction", "interaction"))
            return seen + s.get(("driftwatch_dead_lettered_total", ()), 0) >= total and any(
                b'"firing"' in body for _, _, body in got.requests
            )

        wait_for(settled, 90, "every event processed and a firing webhook", interval=0.5)
        written = worker.log.read_text().count("checkpoint_written")
        wait_for(
            lambda: worker.log.read_text().count("checkpoint_written") > written,
            30,
            "a checkpoint of the settled evaluation state",
            interval=0.2,
        )
        metrics = worker.scrape()
        api = f"http://127.0.0.1:{api_port}"
        api_out = [_api(f"{api}/api/alerts"), _api(f"{api}/api/actions"), _api(f"{api}/api/silences")]
    finally:
        assert worker.stop() == 0, worker.log.read_text()[-3000:]

    reports: dict[str, bytes] = {}
    for p, name in zip(replays, ("replay --json", "replay"), strict=True):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-3000:]
        reports[f"{name} stdout"], reports[f"{name} stderr"] = out, err
    reports["replay --rejects file"] = (tmp_path / "rejects.jsonl").read_bytes()

    # Evidence that the scan has something to look at: the alert fired and went everywhere, events were folded.
    s = samples(metrics)
    assert s[("driftwatch_dead_lettered_total", ())] == len(malformed)
    assert s[("driftwatch_events_rejected_total", (("reason", "unknown_model"),))] == 1
    assert s[("driftwatch_attribute_values_folded_total", (("attribute", "region"),))] > 0
    assert any(b"complaint_rate_high" in body for _, _, body in got.requests)
    assert b"complaint_rate_high" in reports["replay --json stdout"]
    assert b"complaint_rate_high" in api_out[0]
    audit = (tmp_path / "audit.jsonl").read_bytes()
    assert b"alert.firing" in audit
    log = worker.log.read_bytes()

    topics = asyncio.run(_topics_named(kafka_bootstrap, NAME))  # the config's (all hold NAME) and Faust's own
    records = asyncio.run(_read_whole(kafka_bootstrap, topics))
    inputs = {cfg.kafka.predictions.name, cfg.kafka.interactions.name}
    dead = cfg.kafka.dead_letter.name
    for t in (cfg.kafka.summaries.name, cfg.kafka.alerts.name, cfg.kafka.ingest_state, cfg.kafka.eval_state, dead):
        assert records[t], f"nothing on {t}: the scan would prove nothing"
    assert records[cfg.alerting.audit.topic.name]
    assert records[cfg.alerting.control_topic.name]
    reasons = sorted(dict(r.headers)["driftwatch-reason"].decode() for r in records[dead])
    assert reasons == sorted(reason for _, _, reason, _ in malformed)

    # The scanner finds what is there: every planted value in the input topics, the malformed ones in dead letters.
    source = b"\n".join(r.value or b"" for t in inputs for r in records[t])
    assert _leaks(source, {w: NEEDLES[w] for w in TO_SOURCE}) == list(TO_SOURCE)
    dead_values = b"\n".join(r.value or b"" for r in records[dead])
    assert set(_leaks(dead_values)) >= set(MALFORMED_PLANTED)

    found: dict[str, list[str]] = {}

    def scan(place: str, blob: bytes | str) -> None:
        for where in _leaks(blob):
            found.setdefault(where, []).append(place)

    scan("/metrics", metrics)
    scan("the worker's log", log)
    scan("the audit file", audit)
    for i, body in enumerate(api_out):
        scan(f"API response {i}", body)
    for name, blob in reports.items():
        scan(name, blob)
    for line, headers, body in got.requests:
        scan(f"webhook {line} headers", line + "\n" + "\n".join(f"{k}: {v}" for k, v in headers))
        scan(f"webhook {line} body", body)
    for t in sorted(topics - inputs):
        by_partition: dict[int, list[bytes]] = {}
        for r in records[t]:
            at = f"{t}:{r.partition}:{r.offset}"
            scan(f"{at} key", r.key or b"")
            scan(f"{at} headers", b"\n".join(k.encode() + b": " + v for k, v in r.headers))
            if t != dead:
                scan(f"{at} value", r.value or b"")
                by_partition.setdefault(r.partition, []).append(r.value or b"")
        for part, values in by_partition.items():  # a value split across chunked messages
            scan(f"{t}:{part} values joined", b"".join(values))
    assert not found, "personal data leaked: " + "; ".join(
        f"{where} ({PLANTED[where]!r}) in {', '.join(sorted(set(places))[:6])}" for where, places in found.items()
    )
