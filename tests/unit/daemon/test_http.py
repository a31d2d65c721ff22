"""Tests for outgoing HTTP in `driftwatch.daemon.http`, against real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from driftwatch.daemon.http import DeliveryOutcome, EgressPolicy, post_json, refusal_reason, retry_after_seconds

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def server(routes: dict[str, Handler]) -> AsyncIterator[tuple[int, list[web.Request]]]:
    """A real HTTP server on a free loopback port; yields its port and the requests it received."""
    seen: list[web.Request] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(request)
        return await handler(request)

    app = web.Application(middlewares=[record])
    for path, h in routes.items():
        app.router.add_post(path, h)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, seen
    finally:
        await runner.cleanup()


async def ok(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=200, text="ok")


SAFE = EgressPolicy()
LOOPBACK = EgressPolicy.from_allow(["127.0.0.0/8", "::1/128"])


def post(url: str, *, policy: EgressPolicy, timeout: float = 5.0, cap: int = 65536):  # type: ignore[no-untyped-def]
    return post_json(url, b"{}", {}, timeout=timeout, policy=policy, max_response_bytes=cap)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "127.0.0.1",
        "127.255.255.254",
        "0.0.0.0",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "fd00::1",
        "fe80::1%1",
        "not-an-ip",
    ],
)
def test_private_and_special_addresses_are_refused(address: str) -> None:
    """Every non-global address, also wrapped in IPv6, is refused as an egress target."""
    assert refusal_reason(address) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_global_addresses_are_allowed(address: str) -> None:
    """Global unicast addresses pass the check."""
    assert refusal_reason(address) is None


def test_default_policy_refuses_loopback_spellings_before_connecting() -> None:
    """By default every spelling of loopback/metadata/any is refused and the server never sees a request."""

    async def main() -> None:
        async with server({"/": ok}) as (port, seen):
            for host in [
                "127.0.0.1",
                "127.1",
                "2130706433",
                "[::ffff:127.0.0.1]",
                "0.0.0.0",
                "localhost",
                "169.254.169.254",
            ]:
                res = await post(f"http://{host}:{port}/", policy=SAFE)
                assert res.outcome is DeliveryOutcome.FAIL, host
                assert res.reason == "refused_target", host
            assert seen == []

    asyncio.run(main())


def test_allowlisted_loopback_is_reached_with_original_host() -> None:
    """With loopback allowed the same targets are delivered to, and the Host header keeps the name used."""

    async def main() -> None:
        async with server({"/": ok}) as (port, seen):
            for host in ["127.0.0.1", "localhost", "localhost"]:
                res = await post(f"http://{host}:{port}/", policy=LOOPBACK)
                assert res.outcome is DeliveryOutcome.DELIVERED, host
                assert res.status == 200
            assert len(seen) == 3
            for host in ["127.1", "2130706433"]:  # aiohttp itself refuses non-canonical IPv4 URLs
                res = await post(f"http://{host}:{port}/", policy=LOOPBACK)
                assert (res.outcome, res.reason) == (DeliveryOutcome.FAIL, "bad_url")
            assert len(seen) == 3
            assert seen[-1].headers["Host"] == f"localhost:{port}"
            assert seen[-1].headers["Content-Type"] == "application/json"

    asyncio.run(main())


def test_redirect_is_not_followed() -> None:
    """A 302 is a non-retryable failure and its target is never requested."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/target")

    async def main() -> None:
        async with server({"/": redirect, "/target": ok}) as (port, seen):
            res = await post(f"http://127.0.0.1:{port}/", policy=LOOPBACK)
            assert res.outcome is DeliveryOutcome.FAIL
            assert res.reason == "redirect_not_followed"
            assert res.status == 302
            assert [r.path for r in seen] == ["/"]

    asyncio.run(main())


def test_response_body_is_capped() -> None:
    """A huge response is read only up to max_response_bytes."""

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1_000_000)

    async def main() -> None:
        async with server({"/": big}) as (port, _):
            res = await post(f"http://127.0.0.1:{port}/", policy=LOOPBACK, cap=1000)
            assert res.outcome is DeliveryOutcome.DELIVERED
            assert res.body == b"x" * 1000

    asyncio.run(main())


def test_timeout_is_classified_as_retry() -> None:
    """A receiver that never answers within the timeout is a retry with reason timeout."""
    release = asyncio.Event

    async def main() -> None:
        gate = release()

        async def hang(request: web.Request) -> web.Response:
            await gate.wait()
            return web.Response(status=200)

        async with server({"/": hang}) as (port, seen):
            res = await post(f"http://127.0.0.1:{port}/", policy=LOOPBACK, timeout=0.3)
            gate.set()
            assert res.outcome is DeliveryOutcome.RETRY
            assert res.reason == "timeout"
            assert len(seen) == 1

    asyncio.run(main())


@pytest.mark.parametrize(
    ("status", "outcome", "retry_after"),
    [
        (204, DeliveryOutcome.DELIVERED, None),
        (500, DeliveryOutcome.RETRY, None),
        (503, DeliveryOutcome.RETRY, 7.0),
        (429, DeliveryOutcome.RETRY, 7.0),
        (408, DeliveryOutcome.RETRY, None),
        (404, DeliveryOutcome.FAIL, None),
        (401, DeliveryOutcome.FAIL, None),
    ],
)
def test_status_classification(status: int, outcome: DeliveryOutcome, retry_after: float | None) -> None:
    """2xx delivered; 5xx, 408, 429 retried with Retry-After read; other 4xx fail."""

    async def answer(request: web.Request) -> web.Response:
        headers = {"retry-after": "7"} if retry_after is not None else {}  # any case
        return web.Response(status=status, headers=headers)

    async def main() -> None:
        async with server({"/": answer}) as (port, _):
            res = await post(f"http://127.0.0.1:{port}/", policy=LOOPBACK)
            assert res.outcome is outcome
            assert res.status == status
            assert res.retry_after == retry_after

    asyncio.run(main())


def test_closed_port_is_a_retryable_connection_error() -> None:
    """Connection refused is worth a retry."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = asyncio.run(post(f"http://127.0.0.1:{port}/", policy=LOOPBACK))
    assert res.outcome is DeliveryOutcome.RETRY
    assert res.reason == "connection"


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP-date is the seconds until then, never negative."""
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after_seconds("", now=0.0) is None


def test_policy_allows_only_what_it_names() -> None:
    """Allowed networks admit their addresses (also IPv4-mapped); a host name admits whatever that name resolves to."""
    loopback = EgressPolicy.from_allow(["127.0.0.0/8"])
    assert loopback.refusal("x", "127.0.0.1") is None
    assert loopback.refusal("x", "::ffff:127.0.0.1") is None
    assert loopback.refusal("x", "169.254.169.254") == "not a global address"
    assert loopback.refusal("x", "10.0.0.1") == "not a global address"
    metadata = EgressPolicy.from_allow(["169.254.169.254/32"])
    assert metadata.refusal("x", "169.254.169.254") is None
    assert metadata.refusal("x", "169.254.169.253") == "not a global address"
    named = EgressPolicy.from_allow(["Gateway.Internal"])
    assert named.refusal("gateway.internal", "10.1.2.3") is None
    assert named.refusal("GATEWAY.internal.", "169.254.169.254") is None
    assert named.refusal("other.internal", "10.1.2.3") == "not a global address"
    for policy in (SAFE, loopback, metadata, named):
        assert policy.refusal("example.org", "93.184.215.14") is None


def test_policy_rejects_entries_that_are_neither_cidr_nor_host() -> None:
    """A malformed allow entry is an error naming it (config load reports it with its key)."""
    with pytest.raises(ValueError, match=r"10\.0\.0\.1/8"):
        EgressPolicy.from_allow(["10.0.0.1/8"])


def test_name_allowed_by_policy_is_reached_and_other_names_are_not() -> None:
    """Allowing localhost by name reaches a loopback server through it; the address itself stays refused."""

    async def main() -> None:
        async with server({"/": ok}) as (port, seen):
            by_name = EgressPolicy.from_allow(["localhost"])
            res = await post(f"http://localhost:{port}/", policy=by_name)
            assert res.outcome is DeliveryOutcome.DELIVERED
            res = await post(f"http://127.0.0.1:{port}/", policy=by_name)
            assert (res.outcome, res.reason) == (DeliveryOutcome.FAIL, "refused_target")
            assert len(seen) == 1

    asyncio.run(main())
