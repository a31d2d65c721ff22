"""The worker's reports: built off the stream, kept for a while, served by the API and linked from alerts.

When a rule whose alerts get reports fires (:func:`~driftwatch.core.sample.gets_report`), the evaluation assembles the
report's spec at that tick (cheap: one stream's metric rows and its sample) and hands it to :class:`ReportService`,
which never blocks the stream:

- a bounded queue (``QUEUE`` specs); a full queue drops the spec, counted and logged;
- one thread that builds each spec in the report process (:class:`~driftwatch.reports.runner.ReportRunner`,
  Evidently is never imported by the worker) within ``reports.timeout``; a failure is counted and logged, and the
  alert goes out without the link;
- a store of the built pages, at most ``reports.max_reports`` kept ``reports.retention`` (oldest go first), also
  written to ``reports.directory`` as ``<id>.html`` when set (a directory every worker shares makes every report
  servable by any worker's API).

Counts (``built``, ``failed``, ``dropped``, ``expired``) and the pages held are on /metrics.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from driftwatch._log import get_logger
from driftwatch.config import ReportsConfig
from driftwatch.reports.runner import ReportAbandoned, ReportError, ReportRunner
from driftwatch.reports.spec import ReportSpec

__all__ = ["QUEUE", "ReportService", "ReportStatus"]

log = get_logger(__name__)

QUEUE = 16
"""Specs waiting for the report process at most (a burst of firings beyond it is dropped, counted)."""

ReportStatus = Literal["pending", "ready", "failed"]


class ReportService:
    """Builds, keeps and serves the reports of one worker's alerts (thread-safe)."""

    def __init__(self, config: ReportsConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._queue: queue.Queue[ReportSpec | None] = queue.Queue(QUEUE)
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # a report stopped being pending
        self._pages: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # id -> (built at, html), oldest first
        self._status: OrderedDict[str, ReportStatus] = OrderedDict()
        self._runner = ReportRunner(timeout=config.timeout)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.built = 0
        self.failed = 0
        self.dropped = 0
        self.expired = 0

    def submit(self, spec: ReportSpec) -> bool:
        """Queue ``spec`` for building; False (counted as dropped) when the queue is full or the service closed."""
        with self._lock:
            if self._closed:
                return False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="driftwatch-reports", daemon=True)
                self._thread.start()
            if spec.report_id in self._status:
                return True  # the same firing, re-evaluated after a restart: built once
            try:
                self._queue.put_nowait(spec)
            except queue.Full:
                self.dropped += 1
                log.warning("report_dropped", report_id=spec.report_id, reason="queue full", queue=QUEUE)
                return False
            self._status[spec.report_id] = "pending"
            while len(self._status) > 4 * self.config.max_reports:
                self._status.popitem(last=False)
            return True

    def status(self, report_id: str) -> ReportStatus | None:
        """Where the report ``report_id`` stands in this worker (None: never submitted here)."""
        with self._lock:
            return self._status.get(report_id)

    def get(self, report_id: str) -> bytes | None:
        """The HTML of a report kept here or in ``reports.directory`` and not expired; None otherwise."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            held = self._pages.get(report_id)
            if held is not None:
                return held[1]
        path = self._path(report_id)
        if path is None:
            return None
        try:
            if now - path.stat().st_mtime > self.config.retention:
                return None
            return path.read_bytes()
        except OSError:
            return None

    @property
    def stored(self) -> int:
        """Reports held in memory now."""
        with self._lock:
            self._expire(self._clock())
            return len(self._pages)

    def wait(self, report_id: str, timeout: float) -> ReportStatus | None:
        """Wait until the report is no longer pending (or ``timeout`` passes); its status."""
        with self._settled:
            self._settled.wait_for(lambda: self._status.get(report_id) != "pending", timeout)
            return self._status.get(report_id)

    def close(self) -> None:
        """Stop building (the report process is stopped, a build in progress abandoned). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._runner.close()
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            spec = self._queue.get()
            if spec is None or self._closed:
                return
            try:
                page = self._runner.build(spec).encode("utf-8")
            except ReportError as e:
                with self._lock:
                    self.failed += 1
                    self._status[spec.report_id] = "failed"
                    self._settled.notify_all()
                if isinstance(e, ReportAbandoned):
                    log.info("report_abandoned", report_id=spec.report_id, reason=str(e))
                else:
                    log.warning("report_failed", report_id=spec.report_id, error=str(e))
                continue
            self._keep(spec.report_id, page)

    def _keep(self, report_id: str, page: bytes) -> None:
        now = self._clock()
        path = self._path(report_id)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(page)
                tmp.replace(path)
            except OSError as e:
                log.warning("report_not_written", report_id=report_id, path=str(path), error=e.strerror)
        with self._lock:
            self._pages[report_id] = (now, page)
            self._status[report_id] = "ready"
            self._settled.notify_all()
            self.built += 1
            self._expire(now)
        log.info("report_ready", report_id=report_id, bytes=len(page))

    def _expire(self, now: float) -> None:
        """Drop pages past the retention or beyond ``max_reports`` (oldest first), here and in the directory."""
        while self._pages:
            rid, (at, _) = next(iter(self._pages.items()))
            if now - at <= self.config.retention and len(self._pages) <= self.config.max_reports:
                break
            self._pages.popitem(last=False)
            self.expired += 1
            path = self._path(rid)
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()

    def _path(self, report_id: str) -> Path | None:
        d = self.config.directory
        if d is None or not report_id.isalnum():
            return None
        return d / f"{report_id}.html"
