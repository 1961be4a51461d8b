"""Keeping freed memory in the process: glibc malloc settings that let a network's large blobs reuse pages.

A network run allocates and frees the same large blobs over and over (a
transformer's feed-forward output, its attention scores: 25 MB each on MiniLM
at batch 32). glibc's malloc serves such blocks with ``mmap`` or returns the top
of its heap to the kernel when they are freed, so the next blob of that size
faults in fresh, zeroed pages. On this project's 2-core Linux VM a first touch costs
0.4 ms per MB with 4 KiB pages and 2.4 ms per MB when numpy asks for huge pages
that the kernel then fails to assemble (``madvise`` defrag): a 25 MB gelu output
took 60-70 ms to fault against 15 ms to compute.

:func:`keep_freed_memory` sets glibc's ``M_MMAP_THRESHOLD`` to its maximum
(32 MiB: smaller blocks come from the heap) and ``M_TRIM_THRESHOLD`` to 2 GiB
(freed heap memory is kept for the next blob). Measured on MiniLM-L6 (batch 32,
quiet machine, same day): the numpy executor's whole run went from 1398 to
1189-1259 ms at 1 thread and from 949 to 717-723 ms at 2.

The cost: the process keeps its peak heap after a run instead of returning it, and
blocks under 32 MiB that used to be mapped on their own now share the heap. On the
20 M-weight calibration benchmark the peak extra memory rose from 3.16x to
3.50-3.88x fp32 (target < 4x), the statistics passes' kept heap sitting under the
quantizer's matrices. :func:`release_freed_memory` hands it back (``malloc_trim``);
calibration calls it once its statistics are collected, which brought that peak
to 3.43-3.47x (six runs; 3.55-3.56x once convolutions ran sample blocks on two threads).

It is applied once per process, by :func:`harness.executors.runner.compile_network`.
It does nothing on a C library without ``mallopt`` (macOS, musl), and nothing when
the user configured glibc's allocator themselves (``GLIBC_TUNABLES`` naming
``glibc.malloc``, or a ``MALLOC_*_`` environment variable): their setting wins.
"""
from __future__ import annotations

import ctypes
import os
import platform
import threading

#: glibc's ``mallopt`` parameter numbers (``malloc.h``)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's largest accepted mmap threshold on 64-bit (``HEAP_MAX_SIZE / 2``)
MMAP_THRESHOLD = 32 << 20
#: the largest ``int``: freed heap memory is never trimmed below the peak by malloc itself
TRIM_THRESHOLD = 2**31 - 1
#: Environment variables through which a user sets glibc's allocator (then it is left alone).
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_lock = threading.Lock()
_state: dict[str, str | None] = {"status": None}


def user_configured(env: dict[str, str] | None = None) -> bool:
    """True if the environment sets glibc's malloc (``GLIBC_TUNABLES`` with ``glibc.malloc``, ``MALLOC_*_``)."""
    env = os.environ if env is None else env
    return "glibc.malloc." in env.get("GLIBC_TUNABLES", "") or any(k in env for k in USER_SETTINGS)


def keep_freed_memory() -> str:
    """Apply the settings once per process; returns what happened.

    ``"kept"`` (glibc took both settings), ``"user"`` (the environment configures
    malloc; untouched), ``"unsupported"`` (not glibc) or ``"refused"`` (glibc
    rejected a value). Later calls return the first call's answer.
    """
    with _lock:
        if _state["status"] is None:
            _state["status"] = _apply()
        return _state["status"]


def _apply() -> str:
    if user_configured():
        return "user"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "unsupported"
    libc = ctypes.CDLL(None)
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    return "kept" if ok else "refused"


def release_freed_memory() -> bool:
    """Return the kept free heap to the kernel (glibc ``malloc_trim(0)``) if :func:`keep_freed_memory`
    kept it; True if memory was released. The next network run faults its blobs in once more."""
    if _state["status"] != "kept":
        return False
    return ctypes.CDLL(None).malloc_trim(0) == 1
