"""Fewer glibc malloc arenas in a worker: less memory held for nothing.

glibc gives each thread that allocates under contention an arena of its own,
up to eight per core. In a worker, Faust's consumer thread allocates the
fetched records and the event loop's thread frees them, so the consumer's
arena keeps pages the main thread no longer uses. On the 2-core development
machine, the 1,677-slice benchmark worker (``bench/throughput.py
--wide-events 200000``) peaked at 292-342 MB (mean 325, 7 runs) with glibc's
default and at 272-308 MB (mean 288, 4 runs) with two arenas, at the same
events per second.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["ARENAS", "limit_arenas"]

ARENAS = 2
"""Arenas a worker keeps when the operator has not chosen (``MALLOC_ARENA_MAX``)."""

_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (call before threads start); True if it took effect.

    Nothing is changed where the operator set ``MALLOC_ARENA_MAX`` (glibc read it already) or where the C library
    has no ``mallopt`` (musl, macOS).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
