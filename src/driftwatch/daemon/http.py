"""The one HTTP egress of driftwatch (webhooks, Alertmanager pushes, runbook actions): one POST, classified,
never a redirect, SSRF-safe unless the configuration allows a target.

:func:`post_json` never raises for a network or HTTP failure: it returns an
:class:`HttpResult` whose :class:`DeliveryOutcome` says what to do next, the
way Alertmanager's notifiers do (2xx done; connection errors, timeouts, 408,
429 and 5xx worth a retry; other 4xx, every 3xx and a refused target not).

The target's host is resolved once and every address it resolves to must be
global (IPv4-mapped, NAT64, 6to4 and Teredo IPv6 addresses are judged by the
IPv4 address inside), unless the :class:`EgressPolicy` allows it: an address
inside an allowed network, or a host whose name is allowed
(``alerting.egress.allow``, see guarantee 22 in docs/guarantees.md). The
connection goes to those checked addresses — the URL, and so the Host header
and TLS SNI, keep the hostname — and the response is read up to a cap.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import math
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from driftwatch.alerts.notifier import DeliveryOutcome
from driftwatch.config import egress_entry

__all__ = [
    "DeliveryOutcome",
    "EgressPolicy",
    "HttpResult",
    "classify",
    "post_json",
    "refusal_reason",
    "retry_after_seconds",
]

_USER_AGENT = "driftwatch-notifier/1"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class HttpResult:
    """One attempt's outcome: the classification, the reason (a bounded word), and the response if any."""

    outcome: DeliveryOutcome
    reason: str
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    retry_after: float | None = None


def classify(status: int) -> DeliveryOutcome:
    """Alertmanager's reading of a status code: 2xx delivered; 408, 429, 5xx retry; the rest fail.

    >>> [classify(s).value for s in (204, 302, 404, 408, 429, 503)]
    ['delivered', 'fail', 'fail', 'retry', 'retry', 'retry']
    """
    if 200 <= status < 300:
        return DeliveryOutcome.DELIVERED
    if status in (408, 429) or status >= 500:
        return DeliveryOutcome.RETRY
    return DeliveryOutcome.FAIL


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or an HTTP-date); None if absent or unreadable.

    >>> retry_after_seconds("7", now=0.0)
    7.0
    >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0)
    10.0
    >>> retry_after_seconds("soon", now=0.0) is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _effective(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), else the address itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
    return ip


def refusal_reason(address: str) -> str | None:
    """Why ``address`` is not a safe egress target (not global, multicast), or None when it is.

    >>> refusal_reason("169.254.169.254")
    'not a global address'
    >>> refusal_reason("::ffff:127.0.0.1")
    'not a global address'
    >>> refusal_reason("93.184.215.14") is None
    True
    """
    try:
        ip = _effective(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return "not an IP address"
    if not ip.is_global or ip.is_multicast or ip.is_unspecified:
        return "not a global address"
    return None


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which non-global targets egress may reach: addresses in ``networks``, and hosts named in ``hosts``.

    The default policy allows global addresses only.

    >>> p = EgressPolicy.from_allow(["127.0.0.1/32", "Gateway.Internal"])
    >>> p.refusal("gateway.internal", "10.1.2.3") is None, p.refusal("x", "::ffff:127.0.0.1") is None
    (True, True)
    >>> p.refusal("x", "169.254.169.254"), p.refusal("x", "1.1.1.1") is None
    ('not a global address', True)
    """

    networks: tuple[_Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_allow(cls, allow: Iterable[str]) -> EgressPolicy:
        """The policy of an ``alerting.egress.allow`` list (validated at config load; a bad entry is a ValueError)."""
        networks: list[_Network] = []
        hosts: set[str] = set()
        for text in allow:
            entry = egress_entry(text)
            if entry is None:
                raise ValueError(f"egress allow entry {text!r} is neither a CIDR nor a host name")
            if isinstance(entry, str):
                hosts.add(entry)
            else:
                networks.append(entry)
        return cls(tuple(networks), frozenset(hosts))

    def refusal(self, host: str, address: str) -> str | None:
        """Why connecting to ``address`` (resolved from ``host``) is refused, or None when it is allowed."""
        if host.rstrip(".").lower() in self.hosts:
            return None
        reason = refusal_reason(address)
        if reason is None or not self.networks:
            return reason
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return reason
        return None if any(a in net for a in (ip, _effective(ip)) for net in self.networks) else reason


class _PinnedResolver(AbstractResolver):
    """Answers every lookup with the addresses already resolved and checked (no second DNS answer)."""

    def __init__(self, addresses: list[tuple[str, int]]) -> None:
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=address, port=port, family=fam, proto=0, flags=socket.AI_NUMERICHOST)
            for address, fam in self._addresses
        ]

    async def close(self) -> None:
        return None


class _Refused(Exception):
    """The target resolves to an address egress must not reach."""


async def _resolve_once(host: str, port: int, policy: EgressPolicy) -> list[tuple[str, int]]:
    """One resolution; every answer must pass ``policy``. Returns (address, family) to try."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError("no address")
    for info in infos:
        if policy.refusal(host, str(info[4][0])) is not None:
            raise _Refused
    out: list[tuple[str, int]] = []
    for family, _, _, _, sockaddr in infos:
        if (str(sockaddr[0]), int(family)) not in out:
            out.append((str(sockaddr[0]), int(family)))
    return out


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    buf = bytearray()
    while len(buf) < cap:
        chunk = await resp.content.read(cap - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def post_json(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    policy: EgressPolicy,
    max_response_bytes: int = 65536,
) -> HttpResult:
    """POST ``body`` as JSON to ``url`` once: no redirects, response capped; see the module docstring."""
    target = URL(url)
    host, port = target.raw_host, target.port
    if target.scheme not in ("http", "https") or not host or port is None:
        return HttpResult(DeliveryOutcome.FAIL, "bad_url")
    send = {"Content-Type": "application/json", "User-Agent": _USER_AGENT, **headers}
    try:
        async with asyncio.timeout(timeout):
            addresses = await _resolve_once(host.strip("[]"), port, policy)
            connector = aiohttp.TCPConnector(resolver=_PinnedResolver(addresses), use_dns_cache=False, force_close=True)
            async with (
                aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session,
                session.post(target, data=body, headers=send, allow_redirects=False) as resp,
            ):
                data = await _read_capped(resp, max_response_bytes)
                status = resp.status
                got = dict(resp.headers.items())
                retry_header = resp.headers.get("Retry-After")  # case-insensitive lookup
    except _Refused:
        return HttpResult(DeliveryOutcome.FAIL, "refused_target")
    except aiohttp.InvalidURL:  # e.g. aiohttp refuses non-canonical IPv4 such as 127.1
        return HttpResult(DeliveryOutcome.FAIL, "bad_url")
    except TimeoutError:
        return HttpResult(DeliveryOutcome.RETRY, "timeout")
    except (aiohttp.ClientError, OSError, UnicodeError):
        # connection refused or reset, DNS failure, TLS error: the target may come back
        return HttpResult(DeliveryOutcome.RETRY, "connection")
    outcome = classify(status)
    if 300 <= status < 400:
        reason = "redirect_not_followed"
    elif outcome is DeliveryOutcome.DELIVERED:
        reason = "ok"
    else:
        reason = f"http_{status}"
    wait = None
    if outcome is DeliveryOutcome.RETRY:
        wait = retry_after_seconds(retry_header, time.time())
        if wait is not None and not math.isfinite(wait):
            wait = None
    return HttpResult(outcome, reason, status, got, data, wait)
