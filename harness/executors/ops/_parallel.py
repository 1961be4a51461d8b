"""Intra-op parallelism of the numpy executor: chunked elementwise and row-wise work on a thread pool.

Not an op module (the leading underscore keeps the registry from importing it).

numpy's ufuncs run on one core and stream whole arrays through memory once per
operation; PyTorch's pointwise kernels are fused and multi-threaded. Ops whose
cost is elementwise (gelu, softmax, mvn, scale...) therefore process their
arrays in chunks of about :data:`GRAIN` elements: every intermediate of a chunk
stays in cache (L2 or L3), and chunks are spread over a thread pool (numpy releases the
GIL inside ufunc loops).

**How many threads.** As many as numpy's BLAS may use: :func:`threads` reads
OpenBLAS's (or MKL's) current thread count through threadpoolctl, so
``threadpool_limits(n)``, ``OPENBLAS_NUM_THREADS`` or ``OMP_NUM_THREADS`` size
the executor's threads, one knob for everything. With one thread every op runs
inline, in the calling thread.

**One pool, not two.** While the executor runs (:func:`owned_threads`, entered by
the runner around every network run) BLAS is held at one thread and the executor's
pool does all the parallel work: large matrix products are split into row (or
column) blocks over the pool (:func:`matmul`), each block a single-threaded BLAS
call. The reason is measured: after every multi-threaded call OpenBLAS's worker
threads busy-wait for about 0.1 s (its ``THREAD_TIMEOUT``, 2^28 cycles) before they
sleep, so in a network that runs a product every few milliseconds one core is
always taken by a spinning BLAS thread, and the pool's chunks of gelu, softmax,
layer norm or LSTM steps got *slower* with a second thread (gelu on 6.3 M floats:
14.5 ms at 1 thread, 16.5 ms at 2 after a product; 8.8 ms at 2 when OpenBLAS does
not spin). The pool's idle workers block instead of spinning.

Scratch buffers (:func:`scratch`) are per thread, so chunk kernels need no
allocation in their inner loop.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np

#: Elements per chunk of :func:`for_chunks` work (and the size from which pooling splits). Every
#: ufunc call of a chunk releases and retakes the GIL, and with two threads each retake can wait
#: for the other thread's wake-up, so fewer, larger calls win over L2-sized ones: when gelu,
#: softmax and layer norm were numpy ufunc sequences (2-core EPYC, MiniLM's shapes, medians) gelu
#: 14.9 -> 7.6 ms, softmax 6.5 -> 4.0 ms, layer norm 2.3 -> 0.9 ms at 2 threads from 2^16 to 2^18
#: elements (2^19 no better). Compiled chunk drivers (:func:`for_compiled`) retake no GIL
#: between chunks and use smaller ones.
GRAIN = 1 << 18

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas: list | None = None  # threadpoolctl controllers of the loaded BLAS libraries, numpy's first
_local = threading.local()


def _blas_libs() -> list:
    """threadpoolctl controllers of every BLAS library loaded when last scanned, numpy's first
    (numba's ``np.dot`` calls scipy's, a second OpenBLAS with its own threads)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        _blas = sorted(blas, key=lambda c: "numpy" not in str(c.filepath))
    return _blas


def rescan_blas() -> None:
    """Find the BLAS libraries again (after a module that loads another one is imported)."""
    global _blas
    _blas = None


def _numpy_blas():
    """The threadpoolctl library controller of the BLAS numpy is linked against (None if none is found)."""
    libs = _blas_libs()
    return libs[0] if libs else None


_owned = {"depth": 0, "before": 1, "threads": 1, "others": []}
_owned_lock = threading.Lock()


def threads() -> int:
    """Threads the executor may use now: numpy's BLAS thread count outside :func:`owned_threads`
    (1 when it cannot be read), the count BLAS had when the outermost block was entered inside one."""
    if _owned["depth"]:
        return _owned["threads"]
    blas = _numpy_blas()
    if blas is None:
        return 1
    return max(1, int(blas.get_num_threads()))


@contextlib.contextmanager
def owned_threads() -> Iterator[int]:
    """The executor owns the threads inside the block: every loaded BLAS is held at one thread (their
    own workers never wake, so they never spin against the pool) and :func:`threads` keeps returning
    the count numpy's BLAS had on entry, which sizes the pool. The outermost block restores every
    BLAS's count when it exits; blocks nest, and blocks entered from several threads at once share
    one state. Yields the thread count."""
    libs = _blas_libs()
    if not libs:
        yield 1
        return
    blas, others = libs[0], libs[1:]
    with _owned_lock:
        if _owned["depth"] == 0:
            before = max(1, int(blas.get_num_threads()))
            _owned["before"] = _owned["threads"] = before
            if before > 1:
                blas.set_num_threads(1)
            _owned["others"] = [(c, int(c.get_num_threads())) for c in others]
            for c, k in _owned["others"]:
                if k > 1:
                    c.set_num_threads(1)
        _owned["depth"] += 1
        n = _owned["threads"]
    try:
        yield n
    finally:
        with _owned_lock:
            _owned["depth"] -= 1
            if _owned["depth"] == 0:
                if _owned["before"] > 1:
                    blas.set_num_threads(_owned["before"])
                for c, k in _owned["others"]:
                    if k > 1:
                        c.set_num_threads(k)


def _reset_after_fork() -> None:
    global _pool, _pool_size, _lock, _owned_lock
    _pool, _pool_size, _lock, _owned_lock = None, 0, threading.Lock(), threading.Lock()
    _owned["depth"] = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _get_pool(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            old = _pool
            _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="qsweep-exec"), n
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _in_pool() -> bool:
    return threading.current_thread().name.startswith("qsweep-exec")


def for_chunks(fn: Callable[[int, int], None], n: int, grain: int, n_threads: int | None = None,
               errstate: dict | None = None) -> None:
    """Call ``fn(start, stop)`` on consecutive ranges of about ``grain`` items that cover ``range(n)``.

    With more than one thread (``n_threads``, default :func:`threads`) and more than one chunk,
    the ranges are taken from a shared counter by the calling thread and pool workers, so a
    core slowed by other load just takes fewer chunks. ``fn`` must only write its own range.
    ``errstate``: :func:`numpy.errstate` settings for every chunk (numpy's error state is per
    thread, so the caller's does not reach the workers).
    """
    grain = max(1, int(grain))
    if n <= grain:  # one chunk: no pool, no thread-count lookup
        if errstate is None:
            fn(0, n)
        else:
            with np.errstate(**errstate):
                fn(0, n)
        return
    chunks = -(-n // grain)
    k = min(threads() if n_threads is None else n_threads, chunks)
    state = errstate or {}
    if k <= 1 or _in_pool():
        with np.errstate(**state):
            for s in range(0, n, grain):
                fn(s, min(n, s + grain))
        return
    counter = itertools.count()

    def worker() -> None:
        with np.errstate(**state):
            while True:
                i = next(counter)
                if i >= chunks:
                    return
                s = i * grain
                fn(s, min(n, s + grain))

    with owned_threads():  # BLAS calls inside chunks stay single-threaded
        futures = [_get_pool(k - 1).submit(worker) for _ in range(k - 1)]
        worker()
        for f in futures:
            f.result()


def for_compiled(driver: Callable[..., None], n: int, grain: int, *args, n_threads: int | None = None) -> None:
    """Run a compiled chunk driver, ``driver(counter, grain, *args)``, over ``n`` items in chunks of ``grain``.

    The driver (one of :mod:`._jit`'s ``*_chunks``) takes chunk indices from ``counter`` with an atomic
    increment and processes them until none is left, without the GIL. With more than one thread the
    calling thread and ``k - 1`` pool workers each make one call, so, unlike :func:`for_chunks`, no
    thread retakes the GIL between chunks, and a core slowed by other load just takes fewer chunks.
    """
    grain = max(1, int(grain))
    counter = np.zeros(1, np.int64)
    chunks = -(-n // grain)
    k = 1 if chunks <= 1 else min(threads() if n_threads is None else n_threads, chunks)
    if k <= 1 or _in_pool():
        driver(counter, grain, *args)
        return
    with owned_threads():
        futures = [_get_pool(k - 1).submit(driver, counter, grain, *args) for _ in range(k - 1)]
        driver(counter, grain, *args)
        for f in futures:
            f.result()


#: Byte alignment of :func:`empty_aligned` arrays: one cache line, one AVX-512 register.
ALIGN = 64


def empty_aligned(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a :data:`ALIGN`-byte boundary.

    numpy's arrays come from malloc, 16-byte aligned; where a 64-byte vector load then starts in a
    cache line depends on the heap's history, so it changes from one process to the next. Measured on
    digits_lstm (256 sequences, 1 thread, 16 fresh processes each, fastest of 30 runs per process):
    the LSTM layer took 1.40-1.71 ms (two processes above 1.65), with its step arrays aligned
    1.40-1.47 ms.
    """
    dtype = np.dtype(dtype)
    n = math.prod(shape) * dtype.itemsize
    raw = np.empty(n + ALIGN, np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + n].view(dtype).reshape(shape)


def scratch(count: int, size: int, dtype=np.float32) -> list[np.ndarray]:
    """``count`` float32 work buffers of ``size`` elements, private to the calling thread (reused)."""
    try:
        bufs = _local.bufs
    except AttributeError:
        bufs = _local.bufs = {}
    key = (count, dtype)
    have = bufs.get(key)
    if have is None or have.shape[1] < size:
        have = bufs[key] = np.empty((count, max(size, GRAIN)), dtype)
    return list(have[:, :size])


def rows_per_chunk(row: int, grain: int | None = None) -> int:
    """How many rows of ``row`` elements make a chunk of about ``grain`` (default :data:`GRAIN`) elements."""
    return max(1, (GRAIN if grain is None else grain) // max(1, row))


#: Elementwise results smaller than this many elements are computed in one ufunc call.
PARALLEL_MIN = 1 << 18


def _direct(ufunc: Callable, a, b, errstate: dict | None):
    if errstate is None:
        return ufunc(a, b)
    with np.errstate(**errstate):
        return ufunc(a, b)


def binary(ufunc: Callable, a: np.ndarray, b, errstate: dict | None = None) -> np.ndarray:
    """``ufunc(a, b)`` with numpy broadcasting (ranks already aligned; ``b`` may be a scalar), split
    along the sample axis over the thread pool when the result is large and threads allow."""
    if a.size < PARALLEL_MIN and np.size(b) < PARALLEL_MIN and (a.size + np.size(b)) * 2 < PARALLEL_MIN:
        return _direct(ufunc, a, b, errstate)  # small: one call, no thread-count lookup
    b_arr = np.asarray(b)
    n = max(a.shape[0], b_arr.shape[0] if b_arr.ndim == a.ndim else 1)
    k = threads()
    if k <= 1 or n < 2 or not isinstance(ufunc, np.ufunc):
        return _direct(ufunc, a, b, errstate)
    shape = np.broadcast_shapes(a.shape, b_arr.shape)
    if math.prod(shape) < PARALLEL_MIN:
        return _direct(ufunc, a, b, errstate)
    # the memory order of ``a`` when it has the result's shape (as the ufunc itself would choose): a
    # convolution's output is an NCHW view of channels-last memory, and a C-ordered result would turn
    # a residual add into a transposing copy (digits_resnet's adds: 4.8 ms at 1 and 2 threads)
    dtype = np.result_type(a, b)
    out = np.empty_like(a, dtype=dtype) if a.shape == shape else np.empty(shape, dtype)
    split_b = b_arr.ndim == a.ndim and b_arr.shape[0] > 1

    def run(s: int, e: int) -> None:
        ufunc(a[s:e] if a.shape[0] > 1 else a, b_arr[s:e] if split_b else b, out=out[s:e])
    for_chunks(run, n, -(-n // (2 * k)), n_threads=k, errstate=errstate)
    return out


#: Matrix products of fewer multiply-adds run as one BLAS call (splitting them costs more than it saves).
SPLIT_MATMUL = 1 << 20
#: Row / column blocks of a split product are multiples of this (whole register tiles of the BLAS kernels).
_TILE = 16


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` for 2-D ``a (M, K)`` and ``b (K, N)``, split into row blocks (column blocks when
    ``N > M``) over the pool when :func:`threads` allows and the product is large.

    Every block is one single-threaded BLAS call on views of the same operands: the same sums over
    K as the unsplit product, equal to it up to float32 rounding (OpenBLAS may pick another kernel
    for a block's shape: on small convolutions 1 and 2 threads differed by up to 3e-6 relative). ``out``: an ``(M, N)``
    array to write (any layout BLAS accepts, e.g. a slice of a larger array).
    """
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        out = np.empty((m, n), np.result_type(a, b))
    t = threads()
    side = max(m, n)
    if t <= 1 or m * k * n < SPLIT_MATMUL or side < 2 * _TILE or _in_pool():
        return np.matmul(a, b, out=out)
    blocks = min(-(-side // _TILE), 2 * t)  # two blocks per thread: a core slowed by other load takes fewer
    grain = -(-side // blocks)
    grain = -(-grain // _TILE) * _TILE
    if m >= n:
        def run(s: int, e: int) -> None:
            np.matmul(a[s:e], b, out=out[s:e])
    else:
        def run(s: int, e: int) -> None:
            np.matmul(a, b[:, s:e], out=out[:, s:e])
    for_chunks(run, side, grain, n_threads=t)
    return out
