"""The HTTP API: alerts, actions and their approval, silences, and health (aiohttp).

Every route but ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer
<token>``, compared in constant time (guarantees 19 and 20 in
docs/guarantees.md); a missing or wrong
token gets 401 with ``WWW-Authenticate: Bearer``. Without a token the API
refuses to start unless ``allow_unauthenticated_loopback`` is set *and* it
binds a loopback address.

Who approved: the token is one shared operator token, so changes also need
an ``X-Driftwatch-Actor`` header (``^[A-Za-z0-9_.@-]{1,64}$``), recorded as
``token:<first 8 hex of sha256(token)>/<actor>``. That is an audited *claim*
by a token holder, not a proof of identity.

Status codes: 400 malformed input, 401 no or bad token, 404 unknown id or
route, 409 the action is no longer awaiting a decision, 413 body over
``max_body_bytes``, 503 not ready or the audit trail cannot be written
(nothing was run). No input yields a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
from aiohttp import web

from driftwatch._duration import parse_duration
from driftwatch._log import get_logger
from driftwatch.actions.audit import AuditError
from driftwatch.actions.planner import ActionConflictError, ActionNotFoundError
from driftwatch.alerts.records import AlertRecord
from driftwatch.alerts.silences import SilenceError, SilenceNotFoundError, Silences
from driftwatch.config import ApiConfig, is_loopback
from driftwatch.errors import ConfigError

__all__ = ["ACTOR_HEADER", "ActionsLike", "ApiServer", "build_api", "is_loopback", "start_api"]

log = get_logger(__name__)

ACTOR_HEADER = "X-Driftwatch-Actor"
"""The header naming who, among token holders, makes a change."""

_ACTOR = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_OPEN = frozenset({"/healthz", "/readyz"})
_MIN_TOKEN = 16
_REPORT_ID = re.compile(r"^[0-9a-f]{1,64}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ActionsLike(Protocol):
    """What the API needs from the action runner."""

    def actions(self) -> list[dict[str, object]]:
        """Every known action."""
        ...

    async def approve(self, action_id: str, actor: str) -> Mapping[str, object]:
        """Approve (audited first) and run; the action's state after."""
        ...

    async def deny(self, action_id: str, actor: str) -> Mapping[str, object]:
        """Deny; the action's state after."""
        ...


def _json(data: object, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda d: json.dumps(d, default=str))


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status, headers)


def _route(request: web.Request) -> str:
    """The matched route's pattern (``/api/actions/{id}/approve``), never the raw path with its ids."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "?"


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def build_api(
    cfg: ApiConfig,
    token: bytes | None,
    *,
    alerts: Callable[[], Sequence[AlertRecord]],
    runner: ActionsLike,
    silences: Silences,
    ready: Callable[[], bool],
    now: Callable[[], float] = time.time,
    reports: Callable[[str], bytes | None] | None = None,
) -> web.Application:
    """The aiohttp application; :class:`~driftwatch.errors.ConfigError` if it would be open without reason."""
    if not token:
        if not (cfg.allow_unauthenticated_loopback and is_loopback(cfg.host)):
            raise ConfigError(
                [
                    "alerting.api.token: the API needs a bearer token (token: {env: NAME} or {file: PATH}, "
                    "at least 16 bytes, e.g. `openssl rand -hex 32`), or allow_unauthenticated_loopback: true "
                    f"with a loopback host (host is {cfg.host!r})"
                ]
            )
        token = None
        token_id = "unauthenticated-loopback"
    else:
        if len(token) < _MIN_TOKEN:
            raise ConfigError([f"alerting.api.token: at least {_MIN_TOKEN} bytes (e.g. `openssl rand -hex 32`)"])
        token_id = "token:" + hashlib.sha256(token).hexdigest()[:8]
    limit = cfg.max_body_bytes

    def authorized(request: web.Request) -> bool:
        if token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path not in _OPEN and not authorized(request):
                return _error(401, "missing or invalid bearer token", {"WWW-Authenticate": 'Bearer realm="driftwatch"'})
            return await handler(request)
        except _HttpError as e:
            return _error(e.status, e.message)
        except web.HTTPException as e:
            # Routing (404/405) and body size (413) errors, as JSON; keep headers such as Allow.
            headers = {k: v for k, v in e.headers.items() if k.lower() not in ("content-type", "content-length")}
            return _error(e.status, e.reason, headers)
        except AuditError:
            log.error("api_audit_unwritable", route=_route(request))
            return _error(503, "the audit trail cannot be written; nothing was run")
        except Exception:  # a bug, never input: tests drive arbitrary input through every route
            log.exception("api_internal_error", route=_route(request))
            return _error(500, "internal error")

    async def body(request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > limit:
            raise _HttpError(413, f"body over {limit} bytes")
        return await request.read()

    def actor(request: web.Request) -> str:
        given = request.headers.getall(ACTOR_HEADER, [])
        if len(given) > 1:  # which one acted would be a guess: the audit must name exactly one person
            raise _HttpError(400, f"{ACTOR_HEADER} given {len(given)} times; send it once")
        who = given[0] if given else ""
        if not _ACTOR.match(who):
            raise _HttpError(400, f"{ACTOR_HEADER} must name who acts (^[A-Za-z0-9_.@-]{{1,64}}$)")
        return f"{token_id}/{who}"

    async def get_alerts(request: web.Request) -> web.Response:
        return _json({"alerts": [msgspec.to_builtins(a) for a in alerts()]})

    async def get_actions(request: web.Request) -> web.Response:
        return _json({"actions": runner.actions()})

    async def decide(request: web.Request, approve: bool) -> web.Response:
        await body(request)
        who = actor(request)
        aid = request.match_info["id"]
        try:
            result = await (runner.approve(aid, who) if approve else runner.deny(aid, who))
        except ActionNotFoundError:
            raise _HttpError(404, f"no action {aid!r}") from None
        except ActionConflictError as e:
            raise _HttpError(409, str(e)) from None
        return _json({"action": dict(result)})

    async def post_approve(request: web.Request) -> web.Response:
        return await decide(request, True)

    async def post_deny(request: web.Request) -> web.Response:
        return await decide(request, False)

    async def post_silence(request: web.Request) -> web.Response:
        raw = await body(request)
        who = actor(request)
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise _HttpError(400, "body must be a JSON object {matchers, duration, comment}") from None
        if not isinstance(data, dict):
            raise _HttpError(400, "body must be a JSON object {matchers, duration, comment}")
        extra = set(data) - {"matchers", "duration", "comment"}
        if extra:
            raise _HttpError(400, f"unknown fields: {', '.join(sorted(extra))}")
        try:
            duration = parse_duration(data.get("duration"))
        except (ValueError, OverflowError) as e:
            raise _HttpError(400, f"duration: {e}") from None
        matchers, comment = data.get("matchers"), data.get("comment")
        if not isinstance(matchers, dict) or not all(isinstance(v, str) for v in matchers.values()):
            raise _HttpError(400, 'matchers: an object of label name to exact value, e.g. {"alertname": "..."}')
        if not isinstance(comment, str):
            raise _HttpError(400, "comment: say why, as a string")
        try:
            s = silences.add(matchers, duration, who, comment, now())
        except SilenceError as e:
            raise _HttpError(400, str(e)) from None
        return _json({"silence": s.to_json()}, 201)

    async def delete_silence(request: web.Request) -> web.Response:
        await body(request)
        who = actor(request)
        sid = request.match_info["id"]
        try:
            s = silences.remove(sid, who, now())
        except SilenceNotFoundError:
            raise _HttpError(404, f"no active silence {sid!r}") from None
        return _json({"silence": s.to_json(), "removed_by": who})

    async def get_silences(request: web.Request) -> web.Response:
        return _json({"silences": [s.to_json() for s in silences.active(now())]})

    async def get_report(request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        if reports is None:
            raise _HttpError(404, "reports are off (reports.enabled)")
        page = reports(rid) if _REPORT_ID.fullmatch(rid) else None
        if page is None:
            raise _HttpError(404, f"no report {rid!r} (unknown, still being built, failed or expired)")
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"},
        )

    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if ready():
            return _json({"status": "ready"})
        return _json({"status": "starting"}, 503)

    app = web.Application(middlewares=[guard], client_max_size=limit)
    app.router.add_get("/api/alerts", get_alerts)
    app.router.add_get("/api/actions", get_actions)
    app.router.add_post("/api/actions/{id}/approve", post_approve)
    app.router.add_post("/api/actions/{id}/deny", post_deny)
    app.router.add_get("/api/silences", get_silences)
    app.router.add_post("/api/silences", post_silence)
    app.router.add_delete("/api/silences/{id}", delete_silence)
    app.router.add_get("/api/reports/{id}", get_report)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@dataclass(slots=True)
class ApiServer:
    """A running API: where it listens, and how to stop it."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9465``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening and finish open requests."""
        await self.runner.cleanup()


async def start_api(app: web.Application, host: str, port: int) -> ApiServer:
    """Serve ``app`` on ``host:port`` (0 = any free port) in the running loop."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            bound = int(addr[1])
            break
    return ApiServer(runner, host, bound)
