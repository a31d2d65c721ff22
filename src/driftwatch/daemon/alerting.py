"""The alerting side of a worker: notifier, action runner, HTTP API and audit trail, off the stream loop.

``driftwatch run`` starts it next to the Faust app, in its own thread and
event loop (guarantee 6 in docs/guarantees.md: webhook and action I/O never
runs inside the stream loop). It reads the alerts topic the evaluation stage writes (the outbox),
so it keeps working while the metrics pipeline is busy, and the metrics
pipeline never waits for a receiver.

- :class:`~driftwatch.daemon.notifier.NotifierService` delivers notifications
  (only when receivers are configured);
- :class:`~driftwatch.daemon.actions.ActionRunner` decides and runs the
  runbook actions, and audits every firing and resolved transition;
- :class:`~driftwatch.actions.audit.AuditLog` is the hash-chained file, also
  mirrored to the audit topic;
- the API (``alerting.api.enabled``) serves alerts, actions, approvals,
  silences, ``/healthz`` and ``/readyz``.

Its counters reach ``/metrics`` through
:class:`~driftwatch.daemon.metrics.AlertingCollector`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer

from driftwatch._log import get_logger
from driftwatch.actions.audit import AuditLog, read_records
from driftwatch.alerts.records import AlertRecord
from driftwatch.alerts.silences import Silences
from driftwatch.config import Config
from driftwatch.daemon.actions import ActionRunner
from driftwatch.daemon.api import ApiServer, build_api, start_api
from driftwatch.daemon.notifier import NotifierService

if TYPE_CHECKING:
    from driftwatch.daemon.reports import ReportService

__all__ = ["AlertingService"]

log = get_logger(__name__)


class AlertingService:
    """Everything that turns alert records into notifications, actions and audit records, in one thread."""

    def __init__(
        self,
        config: Config,
        bootstrap: str,
        *,
        versions_seen: Callable[[str], Sequence[str]],
        alerts: Callable[[], Sequence[AlertRecord]],
        pipeline_ready: Callable[[], bool],
        reports: ReportService | None = None,
    ) -> None:
        self.reports = reports  # this worker's reports (served by the API, their status read by the notifier)
        self.config = config
        self.bootstrap = bootstrap
        self._versions_seen = versions_seen
        self._alerts = alerts
        self._pipeline_ready = pipeline_ready
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False  # a stop that came before the thread had its event
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.audit: AuditLog | None = None
        self.notifier: NotifierService | None = None
        self.runner: ActionRunner | None = None
        self.api: ApiServer | None = None
        self.silences: Silences | None = None
        self.audit_mirrored = 0
        self.audit_mirror_failed = 0

    # ----------------------------------------------------------------- life

    def start(self, timeout: float = 60.0, *, wait: bool = True) -> None:
        """Start in a background thread; raise what stopped it from starting (config, secrets, audit file).

        ``wait=False`` returns at once (the demo: its consumer groups join while the pipeline starts).
        """
        self._thread = threading.Thread(target=self._main, name="driftwatch-alerting", daemon=True)
        self._thread.start()
        if not wait:
            return
        if not self._started.wait(timeout):
            raise TimeoutError("the alerting side did not start within 60 s (is the broker reachable?)")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 30.0) -> None:
        """Stop delivering and acting: flush, commit, close the audit file."""
        self._stop_requested = True  # seen by the thread if it has not made its stop event yet
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def ready(self) -> bool:
        """Whether state recovery is done: the pipeline's partitions, the notifier's state, the action runner; never
        while the alerting thread has died."""
        if self._error is not None or (self._thread is not None and not self._thread.is_alive()):
            return False
        if not self._pipeline_ready():
            return False
        if self.notifier is not None and not self.notifier.state_loaded.is_set():
            return False
        return self.runner is None or self.runner.ready.is_set()

    def _main(self) -> None:
        try:
            # A Runner closes its loop as asyncio.run does: what a stopped Kafka client left pending is cancelled and
            # awaited first, so nothing is reported at exit as destroyed while pending.
            with asyncio.Runner() as runner:
                self._loop = runner.get_loop()
                runner.run(self._run())
        except BaseException as e:  # reported to start() if it happens while starting
            self._error = e
            self._started.set()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        if self._stop_requested:  # stop() came first (Ctrl-C during start-up): do not wait for another
            self._stop.set()
        al = self.config.alerting
        mirror: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)
        loop = asyncio.get_running_loop()

        def sink(line: bytes) -> None:
            # Called under the audit log's lock, maybe from another thread: only enqueue.
            def put() -> None:
                try:
                    mirror.put_nowait(line)
                except asyncio.QueueFull:
                    self.audit_mirror_failed += 1  # the file is the record; the topic is a copy

            loop.call_soon_threadsafe(put)

        self.audit = AuditLog(al.audit.path, sink=sink)
        self.silences = Silences(self.audit.append)
        self.silences.restore(read_records(al.audit.path), time.time())
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20)
        await producer.start()
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(self._mirror(producer, mirror))]
        try:
            if al.notify.receivers:
                self.notifier = NotifierService(
                    self.config,
                    self.bootstrap,
                    audit=self._audit_notification,
                    is_silenced=self.silences.is_silenced,
                    report_status=None if self.reports is None else self.reports.status,
                )
                await self.notifier.start()
            self.runner = ActionRunner.from_config(
                self.config, self.audit, bootstrap=self.bootstrap, versions_seen=self._versions_seen, audit_alerts=True
            )
            tasks.append(asyncio.create_task(self.runner.run(self._stop)))
            if al.api.enabled:
                token = al.api.token.read() if al.api.token is not None else None
                app = build_api(
                    al.api,
                    token,
                    alerts=self._alerts,
                    runner=self.runner,
                    silences=self.silences,
                    ready=self.ready,
                    reports=None if self.reports is None else self.reports.get,
                )
                self.api = await start_api(app, al.api.host, al.api.port)
                log.info("api_listening", host=self.api.host, port=self.api.port)
            self._started.set()
            log.info(
                "alerting_started",
                receivers=len(al.notify.receivers),
                actions=len(al.actions),
                api=self.api is not None,
                dry_run=al.dry_run,
                kill_switch=al.kill_switch,
            )
            await self._stop.wait()
        finally:
            # Not _started.set() here: _main stores the error first, then sets it, so start() always sees the
            # error (setting it here woke start() before the error was stored: a dead alerting side went unnoticed).
            if self.api is not None:
                await self.api.stop()
            if self.notifier is not None:
                await self.notifier.stop()
            for t in tasks[1:]:
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(t, 10)
            if self.runner is not None:
                await self.runner.close()
            tasks[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[0]
            while not mirror.empty():  # what is left still goes to the topic
                with contextlib.suppress(Exception):
                    await producer.send(al.audit.topic.name, mirror.get_nowait())
            with contextlib.suppress(Exception):
                await producer.stop()
            self.audit.close()
            log.info(
                "alerting_stopped", audit_mirrored=self.audit_mirrored, audit_mirror_failed=self.audit_mirror_failed
            )

    def _audit_notification(self, event: dict[str, object]) -> None:
        """The notifier's deliveries and suppressions, as audit records (guarantees 17 and 29 in docs/guarantees.md)."""
        if self.audit is None:
            return
        kind = str(event.get("type", "notification"))
        self.audit.append(
            {
                "kind": kind.replace("notification_", "notification."),
                "actor": "notifier",
                "rule": event.get("rule"),
                "labels": event.get("labels"),
                "inputs": {k: v for k, v in event.items() if k not in ("type", "rule", "labels")},
                "outcome": event.get("reason"),
            }
        )

    async def _mirror(self, producer: AIOKafkaProducer, queue: asyncio.Queue[bytes]) -> None:
        topic = self.config.alerting.audit.topic.name
        while True:
            line = await queue.get()
            try:
                await producer.send_and_wait(topic, line)
                self.audit_mirrored += 1
            except Exception:  # the file is the record; the topic is a copy
                self.audit_mirror_failed += 1
