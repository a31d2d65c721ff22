"""A worker caps glibc's malloc arenas (``driftwatch.daemon._malloc``); an operator's MALLOC_ARENA_MAX stands."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")

# Six threads malloc and free through ctypes, which releases the GIL around each call: their mallocs contend, as C
# extensions' do in a worker, and glibc gives contending threads arenas of their own. malloc_stats() lists them.
SCRIPT = """
import ctypes, sys, threading
from driftwatch.daemon._malloc import limit_arenas
if sys.argv[1] == "limit":
    print("limited", limit_arenas(), flush=True)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def work():
    for _ in range(20000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc.malloc_stats()
"""


def _arenas(mode: str, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return sum(line.startswith("Arena ") for line in out.stderr.splitlines()), out.stdout


def test_contending_threads_share_two_arenas_once_limited() -> None:
    unlimited, _ = _arenas("none")
    limited, said = _arenas("limit")
    assert unlimited > 2  # the control: without the cap, contending threads get arenas of their own
    assert limited <= 2
    assert "limited True" in said


def test_an_operators_malloc_arena_max_is_left_alone() -> None:
    arenas, said = _arenas("limit", MALLOC_ARENA_MAX="4")
    assert "limited False" in said
    assert 2 < arenas <= 4
