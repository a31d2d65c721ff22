"""Actions end to end: a real loopback HTTP target, the real API server, the real audit file, and a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from driftwatch.actions.audit import AuditLog, read_records, verify
from driftwatch.actions.planner import action_id
from driftwatch.alerts.records import decode_record
from driftwatch.alerts.silences import Silences
from driftwatch.config import AlertingConfig, ApiConfig
from driftwatch.daemon.actions import ActionRunner
from driftwatch.daemon.api import ACTOR_HEADER, ApiServer, build_api, start_api
from driftwatch.errors import ConfigError

TOKEN = b"api-token-0123456789abcdef"
ACTOR_PREFIX = "token:" + hashlib.sha256(TOKEN).hexdigest()[:8]
FP = "a684325636c5e4aa"
SINCE = "2026-11-18T11:35:30.000Z"
T0 = 1_800_000_000.0


def record(
    state: str = "firing", *, actions: Sequence[str] = ("act",), since: str = SINCE, **labels: str
) -> dict[str, object]:
    """An alert transition record shaped like `AlertTransition.to_record()`."""
    lab = {"alertname": "complaint_rate_high", "model": "support-router", "version": "v8", "severity": "critical"}
    lab.update(labels)
    return {
        "rule": "complaint_rate_high",
        "state": state,
        "labels": lab,
        "annotations": {},
        "value": 0.129,
        "n": 1488,
        "interval": [0.11, 0.14],
        "window_seconds": 300.0,
        "event_time": since,
        "active_since": since,
        "severity": "critical",
        "fingerprint": FP,
        "actions": list(actions),
        "evidence": {"window_seconds": 300.0},
    }


class Clock:
    """A settable clock shared by the runner and the API."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Target:
    """A loopback HTTP server standing in for the system an action changes; it records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        """Listen on a free loopback port."""

        async def hook(request: web.Request) -> web.Response:
            self.requests.append({"headers": dict(request.headers), "body": await request.json()})
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Stack:
    """Everything one test talks to."""

    api: ApiServer
    target: Target
    runner: ActionRunner
    silences: Silences
    clock: Clock
    session: aiohttp.ClientSession
    audit: Path
    ready: dict[str, bool]

    def url(self, path: str) -> str:
        """Absolute URL of an API path."""
        return self.api.url + path

    def headers(self, actor: str | None = "alice", token: bytes | None = TOKEN) -> dict[str, str]:
        """Request headers with a bearer token and an actor."""
        h: dict[str, str] = {}
        if token is not None:
            h["Authorization"] = "Bearer " + token.decode()
        if actor is not None:
            h["X-Driftwatch-Actor"] = actor
        return h


@contextlib.asynccontextmanager
async def stack(
    tmp_path: Path, actions: Mapping[str, Mapping[str, object]], **alerting_kw: object
) -> AsyncIterator[Stack]:
    """Start a target, an action runner on a fresh audit file, and the API on a free port."""
    target = Target()
    await target.start()
    acts = {n: {**a, "url": target.url} if a.get("url") == "TARGET" else dict(a) for n, a in actions.items()}
    # The target listens on loopback, which the egress refuses unless allowed.
    cfg = AlertingConfig.model_validate({"actions": acts, "egress": {"allow": ["127.0.0.1/32"]}, **alerting_kw})
    clock = Clock()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, clock=clock)
    runner = ActionRunner(cfg, log, clock=clock)
    silences = Silences(log.append)
    ready = {"ready": True}
    app = build_api(
        ApiConfig(max_body_bytes=1024),
        TOKEN,
        alerts=lambda: [decode_record(record())],
        runner=runner,
        silences=silences,
        ready=lambda: ready["ready"],
        now=clock,
    )
    api = await start_api(app, "127.0.0.1", 0)
    session = aiohttp.ClientSession()
    try:
        yield Stack(api, target, runner, silences, clock, session, path, ready)
    finally:
        await session.close()
        await api.stop()
        await runner.close()
        await target.stop()
        log.close()


HTTP = {"kind": "http", "url": "TARGET", "cooldown": "0s", "body": {"model": "{labels.model}", "id": "{action_id}"}}
ASK = {**HTTP, "requires_approval": True, "approval_ttl": "10m"}


def test_approval_flow_end_to_end(tmp_path: Path) -> None:
    """Unauthenticated calls get 401, a bad actor 400; an approval is audited with the actor, then calls the target once."""

    async def main() -> None:
        async with stack(tmp_path, {"act": ASK}) as s:
            await s.runner.handle(record())
            assert s.target.requests == []
            aid = action_id("act", FP, SINCE)
            approve = s.url(f"/api/actions/{aid}/approve")
            async with s.session.get(s.url("/api/actions")) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            async with s.session.get(s.url("/api/actions"), headers=s.headers()) as r:
                assert r.status == 200
                [a] = (await r.json())["actions"]
                assert (a["id"], a["state"]) == (aid, "proposed")
            async with s.session.post(approve, headers=s.headers(token=None)) as r:
                assert r.status == 401
            async with s.session.post(approve, headers=s.headers(token=b"wrong-token-0123456789abcd")) as r:
                assert r.status == 401
            async with s.session.post(approve, headers={"Authorization": "Basic " + TOKEN.decode()}) as r:
                assert r.status == 401
            async with s.session.post(approve, headers=s.headers(actor=None)) as r:
                assert r.status == 400
            async with s.session.post(approve, headers=s.headers(actor="alice smith")) as r:
                assert r.status == 400
            # Two actor headers: the audit could only guess who approved, so it is refused.
            two = CIMultiDict(s.headers(actor="alice"))
            two.add(ACTOR_HEADER, "mallory")
            async with s.session.post(approve, headers=two) as r:
                assert r.status == 400
                assert "once" in (await r.json())["error"]
            assert s.target.requests == []
            s.clock.t += 60
            async with s.session.post(approve, headers=s.headers()) as r:
                assert r.status == 200
                assert (await r.json())["action"]["state"] == "succeeded"
            async with s.session.post(approve, headers=s.headers(actor="bob")) as r:
                assert r.status == 409
            async with s.session.post(s.url("/api/actions/0000/approve"), headers=s.headers()) as r:
                assert r.status == 404
            [req] = s.target.requests
            assert req["body"] == {"model": "support-router", "id": aid}
        recs = list(read_records(s.audit))
        assert [r["kind"] for r in recs] == ["action.proposed", "action.approved", "action.started", "action.succeeded"]
        assert recs[1]["actor"] == f"{ACTOR_PREFIX}/alice"
        assert verify(s.audit).ok

    asyncio.run(main())


def test_deny_and_expiry(tmp_path: Path) -> None:
    """A denied action never calls the target; approving after approval_ttl answers 409 and audits the expiry."""

    async def main() -> None:
        async with stack(tmp_path, {"a": ASK, "b": ASK}) as s:
            await s.runner.handle(record(actions=("a", "b")))
            a, b = action_id("a", FP, SINCE), action_id("b", FP, SINCE)
            async with s.session.post(s.url(f"/api/actions/{a}/deny"), headers=s.headers()) as r:
                assert r.status == 200
                assert (await r.json())["action"]["state"] == "denied"
            s.clock.t += 601
            async with s.session.post(s.url(f"/api/actions/{b}/approve"), headers=s.headers()) as r:
                assert r.status == 409
            assert s.target.requests == []
        kinds = [(r["action"], r["kind"], r["actor"]) for r in read_records(s.audit)]
        assert ("a", "action.denied", f"{ACTOR_PREFIX}/alice") in kinds
        assert ("b", "action.expired", "driftwatch") in kinds

    asyncio.run(main())


def test_rate_limit_dry_run_and_kill_switch(tmp_path: Path) -> None:
    """max_per_hour holds back the second run; a dry-run action and the kill switch never call the target."""

    async def main() -> None:
        async with stack(tmp_path / "rate", {"act": {**HTTP, "max_per_hour": 1}}) as s:
            await s.runner.handle(record(since="2026-11-18T12:11:00.000Z", model="m1"))
            await s.runner.handle(record(since="2026-11-18T12:12:00.000Z", model="m2"))
            assert len(s.target.requests) == 1
            async with s.session.get(s.url("/api/actions"), headers=s.headers()) as r:
                states = {(a["labels"]["model"], a["state"], a["reason"]) for a in (await r.json())["actions"]}
            assert states == {("m1", "succeeded", None), ("m2", "suppressed", "max_per_hour")}
        async with stack(tmp_path / "dry", {"act": {**HTTP, "dry_run": True}}) as s:
            await s.runner.handle(record())
            assert s.target.requests == []
            assert [a["state"] for a in s.runner.actions()] == ["dry_run"]
            dry = [r for r in read_records(s.audit) if r["kind"] == "action.dry_run"]
            assert dry[0]["inputs"]["request"]["target"] == s.target.url  # type: ignore[index]
        async with stack(tmp_path / "kill", {"act": HTTP}, kill_switch=True) as s:
            await s.runner.handle(record())
            assert s.target.requests == []
            assert [(a["state"], a["reason"]) for a in s.runner.actions()] == [("suppressed", "kill_switch")]

    asyncio.run(main())


def test_undo_on_resolve_reaches_the_target(tmp_path: Path) -> None:
    """A safety-filter toggle goes strict when the alert fires and the target gets the undo (normal) when it resolves."""

    async def main() -> None:
        act = {"kind": "toggle_safety_filter", "transport": "http", "url": "TARGET", "undo_on_resolve": True}
        async with stack(tmp_path, {"act": act}) as s:
            await s.runner.handle(record(attribute="region", slice="EU"))
            s.clock.t += 600
            await s.runner.handle(record("resolved", attribute="region", slice="EU"))
            bodies = [r["body"] for r in s.target.requests]
            headers = [r["headers"] for r in s.target.requests]
        assert [(b["state"], b["phase"], b["slice"]) for b in bodies] == [  # type: ignore[index]
            ("strict", "do", {"region": "EU"}),
            ("normal", "undo", {"region": "EU"}),
        ]
        assert [h["X-Driftwatch-Phase"] for h in headers] == ["do", "undo"]  # type: ignore[index]

    asyncio.run(main())


def test_silences_through_the_api(tmp_path: Path) -> None:
    """Silences are created, listed and removed through the API, audited with the actor; bad input is a 400."""

    async def main() -> None:
        async with stack(tmp_path, {}) as s:
            body = {"matchers": {"alertname": "complaint_rate_high"}, "duration": "30m", "comment": "known issue"}
            async with s.session.post(s.url("/api/silences"), json=body, headers=s.headers()) as r:
                assert r.status == 201
                sil = (await r.json())["silence"]
            assert sil["created_by"] == f"{ACTOR_PREFIX}/alice"
            assert s.silences.is_silenced(record()["labels"], s.clock())  # type: ignore[arg-type]
            async with s.session.get(s.url("/api/silences"), headers=s.headers()) as r:
                assert [x["id"] for x in (await r.json())["silences"]] == [sil["id"]]
            for bad in (
                {**body, "duration": "soon"},
                {**body, "duration": -1},
                {**body, "matchers": {}},
                {**body, "matchers": ["alertname"]},
                {**body, "comment": ""},
                {**body, "extra": 1},
                [body],
            ):
                async with s.session.post(s.url("/api/silences"), json=bad, headers=s.headers()) as r:
                    assert r.status == 400, bad
            async with s.session.post(s.url("/api/silences"), data=b"{not json", headers=s.headers()) as r:
                assert r.status == 400
            async with s.session.delete(s.url(f"/api/silences/{sil['id']}"), headers=s.headers(actor="bob")) as r:
                assert r.status == 200
            async with s.session.delete(s.url(f"/api/silences/{sil['id']}"), headers=s.headers(actor="bob")) as r:
                assert r.status == 404
            assert not s.silences.is_silenced(record()["labels"], s.clock())  # type: ignore[arg-type]
        kinds = [(r["kind"], r["actor"]) for r in read_records(s.audit)]
        assert kinds == [("silence.created", f"{ACTOR_PREFIX}/alice"), ("silence.removed", f"{ACTOR_PREFIX}/bob")]

    asyncio.run(main())


def test_health_readiness_and_body_limit(tmp_path: Path) -> None:
    """/healthz needs no token; /readyz is 503 until ready; bodies over max_body_bytes get 413, chunked or not."""

    async def main() -> None:
        async with stack(tmp_path, {}) as s:
            s.ready["ready"] = False
            async with s.session.get(s.url("/healthz")) as r:
                assert r.status == 200
            async with s.session.get(s.url("/readyz")) as r:
                assert r.status == 503
            s.ready["ready"] = True
            async with s.session.get(s.url("/readyz")) as r:
                assert r.status == 200
            big = json.dumps({"matchers": {"a": "b"}, "duration": 60, "comment": "x" * 2000}).encode()
            async with s.session.post(s.url("/api/silences"), data=big, headers=s.headers()) as r:
                assert r.status == 413

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b" " * 600

            async with s.session.post(s.url("/api/silences"), data=chunks(), headers=s.headers()) as r:
                assert r.status == 413
            async with s.session.get(s.url("/api/alerts"), headers=s.headers()) as r:
                assert (await r.json())["alerts"][0]["fingerprint"] == FP

    asyncio.run(main())


def test_api_refuses_to_start_open() -> None:
    """Without a token the API refuses to start, unless explicitly allowed on a loopback host."""
    common: dict[str, object] = {
        "alerts": list,
        "runner": _NoRunner(),
        "silences": Silences(),
        "ready": lambda: True,
    }
    with pytest.raises(ConfigError, match="token"):
        build_api(ApiConfig(), None, **common)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="loopback"):
        build_api(ApiConfig(host="0.0.0.0", allow_unauthenticated_loopback=True), None, **common)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="16 bytes"):
        build_api(ApiConfig(), b"short", **common)  # type: ignore[arg-type]
    build_api(ApiConfig(allow_unauthenticated_loopback=True), None, **common)  # type: ignore[arg-type]


class _NoRunner:
    """A runner with no actions."""

    def actions(self) -> list[dict[str, object]]:
        return []

    async def approve(self, action_id: str, actor: str) -> Mapping[str, object]:
        raise AssertionError("not called")

    async def deny(self, action_id: str, actor: str) -> Mapping[str, object]:
        raise AssertionError("not called")


# -- no input yields a 5xx ----------------------------------------------------------------------


class ThreadedStack:
    """The stack in a background event loop, for a synchronous raw-HTTP client driven by hypothesis."""

    def __init__(self, tmp_path: Path, actions: Mapping[str, Mapping[str, object]]) -> None:
        self._tmp, self._actions = tmp_path, actions
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._done: asyncio.Event | None = None
        self.stack: Stack | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self.thread.start()
        if not self._started.wait(30):
            raise AssertionError("the API did not start")
        if self.error is not None:
            raise self.error

    async def _main(self) -> None:
        self._done = asyncio.Event()
        try:
            async with stack(self._tmp, self._actions) as s:
                self.stack = s
                self._started.set()
                await self._done.wait()
        except BaseException as e:
            self.error = e
            self._started.set()

    def call(self, fn: Callable[[Stack], object]) -> None:
        """Run a coroutine function against the stack in its loop."""
        assert self.stack is not None
        coro = fn(self.stack)
        assert asyncio.iscoroutine(coro)
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        """Stop the stack and its loop."""
        assert self._done is not None
        self.loop.call_soon_threadsafe(self._done.set)
        self.thread.join(30)
        self.loop.close()


_SEGMENT = st.text(alphabet=st.sampled_from("abcdef0123456789-_.~%:@!$&'()*+,;=AZaz"), max_size=30)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


MALFORMED_BODIES = [b"[" * 1020, b"1" * 1020, b"-" + b"9" * 1000, b"NaN", b"\xff\xfe", b"", b"null", b'"x"']


@st.composite
def requests(draw: st.DrawFn, known_id: str) -> tuple[str, str, bytes, dict[str, str]]:
    """A method, path, body and headers: mostly a real route with its method, a valid token and actor."""
    ident = draw(st.one_of(st.just(known_id), _SEGMENT.filter(bool)))
    method, path = draw(
        st.sampled_from(
            [
                ("GET", "/api/alerts"),
                ("GET", "/api/actions"),
                ("POST", f"/api/actions/{ident}/approve"),
                ("POST", f"/api/actions/{ident}/deny"),
                ("GET", "/api/silences"),
                ("POST", "/api/silences"),
                ("POST", "/api/silences"),
                ("POST", "/api/silences"),
                ("DELETE", f"/api/silences/{ident}"),
                ("GET", "/healthz"),
                ("GET", "/readyz"),
                ("GET", "/" + ident),
                ("POST", "/api/actions/" + ident),
            ]
        )
    )
    if draw(st.integers(0, 4)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]))
    silence = st.fixed_dictionaries(
        {},
        optional={
            "matchers": st.one_of(_JSON, st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=20)),
            "duration": st.one_of(_JSON, st.sampled_from(["30m", "1h30m", "0s", "99999d", "1e309", "-1s"])),
            "comment": st.one_of(_JSON, st.text(max_size=50)),
        },
    )
    body = draw(
        st.one_of(
            st.binary(max_size=300),
            silence.map(lambda d: json.dumps(d).encode()),
            _JSON.map(lambda d: json.dumps(d).encode()),
            st.sampled_from(MALFORMED_BODIES),
            st.just(b'{"matchers": {"alertname": "complaint_rate_high"}, "duration": "30m", "comment": "known"}'),
        )
    )
    headers: dict[str, str] = {}
    auth = draw(st.sampled_from(["good", "good", "good", "good", "bad", "none", "basic", "empty"]))
    headers_for = {
        "good": "Bearer " + TOKEN.decode(),
        "bad": "Bearer " + TOKEN.decode()[:-1] + "X",
        "basic": "Basic " + TOKEN.decode(),
        "empty": "Bearer ",
    }
    if auth in headers_for:
        headers["Authorization"] = headers_for[auth]
    actor = draw(st.sampled_from(["alice", "alice", "alice", "ops@example.org", "a" * 65, "", "al ice", None]))
    if actor is not None:
        headers["X-Driftwatch-Actor"] = actor
    return method, path, body, headers


def _status(port: int, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> int:
    """Send one raw HTTP request and return the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=dict(headers))
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_no_input_yields_a_5xx(tmp_path: Path) -> None:
    """Arbitrary methods, paths, headers and bodies against every route never get a 5xx."""
    # The approvable action points at a closed port: approving it must fail the action, not the request.
    closed = {"kind": "http", "url": "http://127.0.0.1:9/hook", "requires_approval": True, "timeout": "2s"}
    ts = ThreadedStack(tmp_path, {"act": closed})
    try:

        async def fire(s: Stack) -> None:
            await s.runner.handle(record())

        ts.call(fire)
        assert ts.stack is not None
        port = ts.stack.api.port
        known = action_id("act", FP, SINCE)
        seen: set[int] = set()

        good = {"Authorization": "Bearer " + TOKEN.decode(), "X-Driftwatch-Actor": "alice"}
        # The table: every malformed body on every route that reads one.
        for path in ("/api/silences", "/api/actions/unknown/deny", "/api/silences/x"):
            for body in MALFORMED_BODIES:
                method = "DELETE" if path == "/api/silences/x" else "POST"
                assert _status(port, method, path, body, good) in (400, 404), (path, body[:20])
        seen: set[int] = set()

        valid = b'{"matchers": {"alertname": "complaint_rate_high"}, "duration": "30m", "comment": "known"}'

        @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(req=requests(known))
        @example(req=("POST", "/api/silences", valid, good))
        @example(req=("PUT", "/api/alerts", b"", good))
        @example(req=("GET", "/api/alerts", b"", {}))
        def check(req: tuple[str, str, bytes, dict[str, str]]) -> None:
            method, path, body, headers = req
            status = _status(port, method, path, body, headers)
            seen.add(status)
            assert status < 500, (method, path, body[:100], headers, status)

        check()
        assert {200, 201, 400, 401, 404, 405}.issubset(seen)
    finally:
        ts.close()


# -- through Kafka ------------------------------------------------------------------------------


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Await ``condition`` becoming true, failing after ``timeout`` seconds naming ``what``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _control_messages(
    bootstrap: str, topic: str, want: int
) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    """Read the control topic from the start until ``want`` messages arrived; then check that is all there is."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    cons = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await cons.start()
    out: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(out) < want and asyncio.get_running_loop().time() < deadline:
            for msgs in (await cons.getmany(timeout_ms=500)).values():
                out.extend((m.key, m.value, dict(m.headers)) for m in msgs)
        end = await cons.end_offsets([TopicPartition(topic, 0)])
        assert end[TopicPartition(topic, 0)] == want
    finally:
        await cons.stop()
    return out


def test_kafka_alert_to_rollback_control_message_once(tmp_path: Path, kafka_bootstrap: str) -> None:
    """A firing record produced twice to the alerts topic yields one rollback control message (v8 -> v7), also after a restart."""
    import uuid

    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    name = f"actions-{uuid.uuid4().hex[:8]}"
    alerts_topic, control_topic = f"{name}-alerts", f"{name}-control"
    cfg = AlertingConfig.model_validate(
        {
            "actions": {"rollback": {"kind": "rollback_model", "transport": "kafka"}},
            "control_topic": {"name": control_topic},
        }
    )
    path = tmp_path / "audit.jsonl"

    def versions(model: str) -> list[str]:
        return ["v7", "v8"] if model == "support-router" else []

    async def consume_all(group: str) -> ActionRunner:
        with AuditLog(path) as log:
            runner = ActionRunner(
                cfg,
                log,
                versions_seen=versions,
                bootstrap=kafka_bootstrap,
                alerts_topic=alerts_topic,
                group_id=group,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            try:
                await _until(lambda: runner.counters.received >= 2 or task.done(), 60, "both alert records")
            finally:
                stop.set()
                await task
                await runner.close()
        return runner

    async def main() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, 1, 1) for t in (alerts_topic, control_topic)])
        finally:
            await admin.close()
        prod = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await prod.start()
        try:
            value = json.dumps(record(actions=("rollback",))).encode()
            for _ in range(2):
                await prod.send_and_wait(alerts_topic, value, key=FP.encode())
        finally:
            await prod.stop()

        first = await consume_all(f"{name}-actions")
        assert (first.counters.started, first.counters.succeeded, first.counters.duplicates) == (1, 1, 1)
        [(key, body, headers)] = await _control_messages(kafka_bootstrap, control_topic, 1)
        aid = action_id("rollback", FP, SINCE)
        assert key == b"support-router"
        assert json.loads(body) == {
            "action": "rollback",
            "model_id": "support-router",
            "from_version": "v8",
            "to_version": "v7",
            "action_id": aid,
            "rule": "complaint_rate_high",
            "fingerprint": FP,
            "phase": "do",
        }
        assert headers["driftwatch-action-id"] == aid.encode()

        # A restart that reads the topic again (a new group) knows from the audit file that it already ran.
        second = await consume_all(f"{name}-actions-again")
        assert (second.counters.started, second.counters.duplicates) == (0, 2)
        assert len(await _control_messages(kafka_bootstrap, control_topic, 1)) == 1

    asyncio.run(main())
    kinds = [r["kind"] for r in read_records(path)]
    assert kinds == ["action.started", "action.succeeded"]
    assert verify(path).ok
