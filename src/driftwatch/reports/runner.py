"""Reports are built in a worker process: Evidently never enters the caller's process.

Importing Evidently takes seconds and ~280 MB, and a report can take long or
fail in ways we do not control, so :class:`ReportRunner` runs
:func:`~driftwatch.reports.builder.build_html` in one spawned worker process
(started on first use, reused afterwards) and hands it the spec as
:func:`~driftwatch.reports.spec.encode_spec` bytes. A build that outlives the
timeout, raises, or kills its process becomes a :class:`ReportError`; after a
timeout or a crash the worker is killed and the next build starts a new one.
This module imports neither Evidently nor pandas nor numpy.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Self

from driftwatch._log import get_logger
from driftwatch.errors import DriftwatchError
from driftwatch.reports.spec import ReportSpec, encode_spec

__all__ = ["ReportAbandoned", "ReportError", "ReportRunner"]

log = get_logger(__name__)

_JOIN_SECONDS = 5.0
"""How long :meth:`ReportRunner.close` and a reset wait for a killed worker to be reaped."""


class ReportError(DriftwatchError, RuntimeError):
    """A report could not be built: it timed out, the builder raised (type and message named), or the worker died."""


class ReportAbandoned(ReportError):
    """The runner was closed (the worker is stopping) before or during the build: nothing went wrong."""


def _build(data: bytes) -> tuple[bool, str]:
    """In the worker: ``(True, html)``, or ``(False, "Type: message")`` when the builder raises.

    The error comes back as text: an exception of a third-party type may not survive pickling, and a result that
    cannot be read would break the pool.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry (its UI service only) stays off
    from driftwatch.reports.builder import build_html
    from driftwatch.reports.spec import decode_spec

    try:
        return True, build_html(decode_spec(data))
    except Exception as e:  # every failure is reported to the caller as a ReportError, never lost
        return False, f"{type(e).__name__}: {e}"


class ReportRunner:
    """Builds reports in one worker process (spawned lazily, reused), at most ``timeout`` seconds each.

    Thread-safe: builds run one at a time (a caller waits for the build before it, outside its timeout).
    ``built`` and ``failed`` count the outcomes. Usable as a context manager; :meth:`close` stops the worker.
    """

    def __init__(self, timeout: float = 60.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.built = 0
        self.failed = 0
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._closed = False
        self._build_lock = threading.Lock()  # one build at a time
        self._pool_lock = threading.Lock()  # guards _pool and _closed; never held while waiting on a build

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def build(self, spec: ReportSpec) -> str:
        """The report of ``spec`` as HTML, built in the worker; :class:`ReportError` if it cannot be built."""
        data = encode_spec(spec)
        with self._build_lock:
            started = time.monotonic()
            try:
                html = self._run(data)
            except ReportAbandoned as e:
                self.failed += 1
                log.info("report_abandoned", report_id=spec.report_id, reason=str(e))
                raise
            except ReportError as e:
                self.failed += 1
                log.warning("report_failed", report_id=spec.report_id, error=str(e))
                raise
            self.built += 1
            log.info("report_built", report_id=spec.report_id, seconds=round(time.monotonic() - started, 3))
            return html

    def close(self) -> None:
        """Stop the worker (killed if it is still building) and refuse further builds. Idempotent."""
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            _stop(pool)

    def _run(self, data: bytes) -> str:
        with self._pool_lock:
            if self._closed:
                raise ReportAbandoned("the report runner is closed")
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn")
                )
            pool = self._pool
        procs: list[multiprocessing.process.BaseProcess] = []
        try:
            future = pool.submit(_build, data)
            procs = _processes(pool)  # the pool forgets a dead worker: keep it to say how it ended
            ok, text = future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self._reset(pool, procs)
            raise ReportError(
                f"the report took longer than {self.timeout:g}s; its worker process was stopped"
            ) from None
        except (BrokenProcessPool, concurrent.futures.CancelledError, RuntimeError) as e:
            # RuntimeError: submit() after close() shut the pool down from another thread.
            self._reset(pool, procs)
            codes = _exit_codes(procs)
            if self._closed:
                raise ReportAbandoned("the report runner was closed during the build") from None
            raise ReportError(f"the report worker process died ({codes or type(e).__name__})") from None
        if not ok:
            raise ReportError(f"building the report failed: {text}")
        return text

    def _reset(
        self, pool: concurrent.futures.ProcessPoolExecutor, procs: list[multiprocessing.process.BaseProcess]
    ) -> None:
        """Drop ``pool`` (killing its worker, ``procs``) so the next build starts a fresh one."""
        with self._pool_lock:
            if self._pool is pool:
                self._pool = None
        _stop(pool, procs)


def _processes(pool: concurrent.futures.ProcessPoolExecutor) -> list[multiprocessing.process.BaseProcess]:
    # The executor's own process table (Python 3.11 has no public way to kill a stuck worker; 3.14's
    # kill_workers() does the same).
    procs = getattr(pool, "_processes", None) or {}
    return list(procs.values())


def _exit_codes(procs: Sequence[multiprocessing.process.BaseProcess]) -> str:
    codes = [p.exitcode for p in procs if p.exitcode is not None]
    return ", ".join(f"killed by signal {-c}" if c < 0 else f"exit code {c}" for c in codes)


def _stop(
    pool: concurrent.futures.ProcessPoolExecutor, known: Sequence[multiprocessing.process.BaseProcess] = ()
) -> None:
    """Shut ``pool`` down without waiting for its work: kill its worker (also ``known`` ones) and reap it."""
    procs = list({id(p): p for p in [*_processes(pool), *known]}.values())
    for p in procs:
        if p.is_alive():
            p.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + _JOIN_SECONDS
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        # The pool's manager thread reaps its dead worker too. When it wins the race, our join sees ECHILD and
        # returns before the exit code is stored on the shared Popen: wait for that store, to say how it ended.
        while p.exitcode is None and not _running(p) and time.monotonic() < deadline:
            time.sleep(0.005)


def _running(p: multiprocessing.process.BaseProcess) -> bool:
    """Whether ``p``'s process still exists (its sentinel closes when it ends, whoever reaps it)."""
    return not multiprocessing.connection.wait([p.sentinel], 0)
