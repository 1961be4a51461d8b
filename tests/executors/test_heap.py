"""The executor's heap settings: applied once, left alone when the user configured malloc, and (on glibc) a
repeated network-like allocation pattern stops faulting in fresh pages."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from harness.executors import heap

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Six transformer layers' worth of large blobs (6 MB activations, 25 MB feed-forward outputs), run four
# times; prints the minor page faults of the last run.
PATTERN = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from harness.executors import heap
    if sys.argv[1] == "kept":
        assert heap.keep_freed_memory() == "kept"
    MB = 1 << 18  # float32 per MB
    def chain():
        x = np.ones(6 * MB, np.float32)
        for _ in range(6):
            h = np.empty(25 * MB, np.float32); h[:] = x[0]
            g = np.empty(25 * MB, np.float32); g[:] = h
            del h
            y = np.empty(6 * MB, np.float32); y[:] = g[0]
            del g
            x = y
    for _ in range(3):
        chain()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    chain()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
""")


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not heap.user_configured({k: v})}
    out = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_kept_heap_reuses_pages_where_the_default_faults():
    default, kept = _faults("default"), _faults("kept")
    # the default heap re-faults thousands of 4 KiB pages per run of this pattern; kept reuses them
    assert kept * 20 < default, (default, kept)
    assert kept < 200, kept


def test_user_settings_win():
    assert heap.user_configured({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert heap.user_configured({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert not heap.user_configured({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
    code = "from harness.executors import heap; print(heap.keep_freed_memory())"
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "user"


def test_applied_once_by_compiling_a_network():
    code = textwrap.dedent("""
        import quantizer
        from harness.executors import heap, NumpyExecutor
        assert heap._state["status"] is None
        NumpyExecutor(quantizer.load("tests/fixtures/lstm_text.mlmodel"))
        first = heap._state["status"]
        print(first, heap.keep_freed_memory())
    """)
    env = {k: v for k, v in os.environ.items() if not heap.user_configured({k: v})}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    first, again = out.stdout.split()
    assert first == again == ("kept" if GLIBC else "unsupported")


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_release_hands_the_kept_heap_back():
    code = PATTERN.replace("print(resource", "_ = (resource") + textwrap.dedent("""
        def rss():
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024
        before = rss()
        released = heap.release_freed_memory()
        print(released, before - rss())
    """)
    env = {k: v for k, v in os.environ.items() if not heap.user_configured({k: v})}
    out = subprocess.run([sys.executable, "-c", code, "kept"], capture_output=True, text=True, env=env, check=True)
    released, freed = out.stdout.split()
    assert released == "True" and int(freed) > 20 << 20, out.stdout  # the chain's freed 25 MB blobs
