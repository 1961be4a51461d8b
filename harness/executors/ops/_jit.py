"""Compiled (numba) float32 loops behind the transformer kernels: exp, gelu, row sums, row normalization.

Not an op module (the leading underscore keeps the registry from importing it);
:mod:`harness.executors.ops._kernels` imports it on first use and runs these
loops through the ``*_chunks`` drivers at the end, one call per thread (every
function releases the GIL).

Why compiled loops: numpy runs one pass over memory per ufunc, so gelu was 18
passes and layer norm about 7, against PyTorch's one fused, vectorised pass;
measured 3.2-5.1x PyTorch's time in MiniLM. Each function here is one loop that
LLVM vectorises (AVX2 / AVX-512 where the CPU has them; numba compiles for the
host CPU). Compiled code is cached on disk (numba's ``cache=True``: the package's
``__pycache__``, or numba's user cache directory when that is read-only), so the
kernels are compiled once per machine (about 2 s for all of them); a later process
loads them in about 0.5 s, numba's import included, on its first transformer layer.

**Fast-math, selectively.** Loops that only map elements use ``_MAP`` flags
(contract to FMA, approximate reciprocals allowed, signed zeros ignored) and keep
IEEE ordering, which the range reduction of :func:`expf` needs; only the reductions
(row sums) allow reassociation (``_SUM``), which is what vectorises them. Neither
assumes finite inputs, so inf and NaN give what the formulas give.

**exp** (:func:`expf`): Cody-Waite reduction ``x = n ln2 + r`` with ``ln2`` split in a
high part exact in float32 and a low part, ``exp(r)`` by a degree-6 polynomial on
``|r| <= ln2/2``, ``2^n`` built from its exponent bits. Max relative error 8.8e-8
(1.5 float32 ulp) on [-87.3, 88.37]; 0 below -87.34 (where float32's exp turns subnormal),
inf above 88.37 (float32 overflows at 88.72: exp is 2.4e38-3.4e38 in between). numba's own ``math.exp`` calls libm per element and does not vectorise.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  the BLAS numba's np.dot calls (loaded here, held at 1 thread below)
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from harness.executors.ops import _parallel

_parallel.rescan_blas()  # owned_threads now holds scipy's BLAS at one thread as well as numpy's

F32 = np.float32
_MAP = {"nsz", "arcp", "contract", "afn"}
_SUM = _MAP | {"reassoc"}


def _cacheable() -> bool:
    """Whether numba has somewhere to write this module's compiled code (its own test: the in-tree
    ``__pycache__``, ``NUMBA_CACHE_DIR`` or the user cache directory). Without one numba would raise
    on the first call; then every process compiles instead (about 2 s for all kernels)."""
    try:
        from numba.core.caching import CacheImpl

        return any(loc.from_function(_cacheable, __file__) is not None for loc in CacheImpl._locator_classes)
    except Exception:  # another numba's internals: let numba decide
        return True


#: numpy's error model: x / 0 is inf, not a raise; every loop releases the GIL
_OPTS = dict(nogil=True, cache=_cacheable(), error_model="numpy")


@intrinsic
def _bits_f32(typingctx, bits):
    """Reinterpret an int32 as the float32 with the same bits."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _maximum(typingctx, a, b):
    """IEEE ``maximum`` of two float32 (NaN if either is NaN): a max reduction LLVM vectorises."""
    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.maximum", [f32], ir.FunctionType(f32, [f32, f32]))
        return builder.call(fn, args)
    return types.float32(types.float32, types.float32), codegen


@intrinsic
def _take(typingctx, counter):
    """``counter[0] += 1`` as one atomic step, returning the old value: the next chunk for the calling
    thread (the threads of one :func:`~harness.executors.ops._parallel.for_compiled` share ``counter``)."""
    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [context.get_constant(types.intp, 0)])
        return builder.atomic_rmw("add", ptr, context.get_constant(types.int64, 1), "monotonic")
    return types.int64(counter), codegen


_LOG2E = F32(1.4426950408889634)
_LN2_HI = F32(0.693145751953125)  # 12 significant bits: n * _LN2_HI is exact for |n| < 2^12
_LN2_LO = F32(math.log(2.0) - 0.693145751953125)
_EXP_LO, _EXP_HI = F32(-87.336), F32(88.37)  # 2^n needs n <= 127: x * log2(e) + 0.5 < 128


def _exp_poly() -> list[np.float32]:
    """exp on [-ln2/2, ln2/2]: least squares in relative error, degree 6 (fitted in float64 at import)."""
    r = np.linspace(-math.log(2.0) / 2, math.log(2.0) / 2, 20001)
    return [F32(c) for c in np.polynomial.polynomial.polyfit(r, np.exp(r), 6, w=np.exp(-r))]


_E0, _E1, _E2, _E3, _E4, _E5, _E6 = _exp_poly()


@njit(inline="always", fastmath=_MAP, **_OPTS)
def _exp_reduced(r, n):
    """``exp(r) * 2^n`` for ``|r| <= ln2/2`` and integral ``n`` in [-126, 127] (a float32)."""
    p = ((((((_E6 * r + _E5) * r + _E4) * r + _E3) * r + _E2) * r + _E1) * r + _E0)
    return p * _bits_f32((np.int32(n) + np.int32(127)) << 23)


@njit(inline="always", fastmath=_MAP, **_OPTS)
def expf(x):
    """float32 exp, vectorisable (see the module docstring for its error and range)."""
    t = _EXP_LO if x < _EXP_LO else x  # NaN passes (and stays NaN)
    t = _EXP_HI if t > _EXP_HI else t
    n = np.floor(t * _LOG2E + F32(0.5))  # in [-126, 127]: 2^n's exponent bits are in range
    r = t - n * _LN2_HI
    y = _exp_reduced(r - n * _LN2_LO, n)
    y = F32(0.0) if x < _EXP_LO else y
    return F32(np.inf) if x > _EXP_HI else y


# gelu EXACT = max(x, 0) - a exp(-a^2/2) M(a), a = |x|, M a degree-4 polynomial in u = 1 / (a + 1/p):
# the coefficients and their fit are documented in harness.executors.ops._kernels.
@njit(fastmath=_MAP, **_OPTS)
def gelu_exact(x, y, inv_p, c0, c1, c2, c3, c4):
    for i in range(x.size):
        v = x[i]
        a = abs(v)
        u = F32(1.0) / (a + inv_p)
        m = (((c4 * u + c3) * u + c2) * u + c1) * u + c0
        k = a * m * expf(F32(-0.5) * v * v)
        y[i] = (v if v > F32(0.0) else F32(0.0)) - k


@njit(fastmath=_MAP, **_OPTS)
def gelu_tanh(x, y, c, k):
    """``0.5 x (1 + tanh(z))`` with ``z = c (x + k x^3)``, as ``x / (1 + exp(-2z))`` (the same function)."""
    for i in range(x.size):
        v = x[i]
        z = c * (v + k * v * v * v)
        y[i] = v / (F32(1.0) + expf(F32(-2.0) * z))


@njit(fastmath=_MAP, **_OPTS)
def gelu_sigmoid(x, y, s):
    """``x sigmoid(s x)`` as ``x / (1 + exp(-s x))``."""
    for i in range(x.size):
        v = x[i]
        y[i] = v / (F32(1.0) + expf(-s * v))


@njit(fastmath=_SUM, **_OPTS)
def _row_max(x, r):
    d = x.shape[1]
    m = x[r, 0]
    for j in range(1, d):
        m = _maximum(m, x[r, j])
    return m


@njit(fastmath=_MAP, **_OPTS)
def _exp_row(x, r, c, y):
    for j in range(x.shape[1]):
        y[r, j] = expf(x[r, j] - c)


@njit(fastmath=_SUM, **_OPTS)
def _row_sum(x, r):
    s = F32(0.0)
    for j in range(x.shape[1]):
        s += x[r, j]
    return s


@njit(fastmath=_SUM, **_OPTS)
def _divide_by_sum(y, r):
    inv = F32(1.0) / _row_sum(y, r)
    for j in range(y.shape[1]):
        y[r, j] = y[r, j] * inv


@njit(**_OPTS)
def softmax_rows(x, y):
    """Softmax of every row of 2-D ``x`` into ``y``: ``exp(x - max) / sum``, the row's own maximum
    (a row holding NaN is NaN; +inf gives NaN, as ``x - max`` does)."""
    for r in range(x.shape[0]):
        _exp_row(x, r, _row_max(x, r), y)
        _divide_by_sum(y, r)


@njit(fastmath=_SUM, **_OPTS)
def _mean(x, r):
    return _row_sum(x, r) / F32(x.shape[1])


@njit(fastmath=_SUM, **_OPTS)
def _centered_var(x, r, mu):
    d = x.shape[1]
    s = F32(0.0)
    for j in range(d):
        t = x[r, j] - mu
        s += t * t
    return s / F32(d)


@njit(fastmath=_MAP, **_OPTS)
def _affine(x, r, mu, inv, gamma, beta, y):
    for j in range(x.shape[1]):
        y[r, j] = (x[r, j] - mu) * inv * gamma[j] + beta[j]


@njit(**_OPTS)
def normalize_rows(x, eps, variance, gamma, beta, y):
    """Per row of 2-D ``x``: ``(x - mean) / sqrt(var + eps)`` (biased variance, two passes; without
    ``variance`` only the mean is subtracted), then ``* gamma + beta`` (length-``d`` vectors)."""
    for r in range(x.shape[0]):
        mu = _mean(x, r)
        inv = F32(1.0)
        if variance:
            inv = F32(1.0) / np.sqrt(_centered_var(x, r, mu) + eps)
        _affine(x, r, mu, inv, gamma, beta, y)


# Short rows (softmax over 8 keys, layer norm over 16 features): a row's loops are too short to
# vectorise, and each row pays its reductions' latency (max, sum, sqrt, divide) alone, about 30 ns.
# These kernels copy a block of SHORT_BLOCK rows into a (d, block) scratch, transposed, and run the
# same arithmetic down its columns, so every loop is SHORT_BLOCK wide and the block's rows share the
# latency. Thresholds measured on 32 768 floats (kernels alone, 1 thread, us, rows -> columns):
# softmax d=4 300 -> 90, d=8 143 -> 74, d=10 143 -> 75, d=16 69 -> 70, d=32 45 -> 59; layer norm
# d=8 85 -> 42, d=16 54 -> 30, d=32 28 -> 24, d=48 29 -> 24, d=64 17.5 -> 22.4.
SHORT_BLOCK = 64
SHORT_SOFTMAX = 15  # the widest row the softmax takes by columns
SHORT_NORMALIZE = 48  # ... and the row normalization


@njit(**_OPTS)
def _block_t(x, r0, b, t):
    """``t[:, :b] = x[r0:r0 + b].T``."""
    for i in range(b):
        for j in range(x.shape[1]):
            t[j, i] = x[r0 + i, j]


@njit(fastmath=_MAP, **_OPTS)
def _softmax_cols(t, b, m, s):
    """Softmax down each of the first ``b`` columns of ``t`` in place (column max, exp, divide)."""
    d = t.shape[0]
    for i in range(b):
        m[i] = t[0, i]
        s[i] = F32(0.0)
    for j in range(1, d):
        for i in range(b):
            m[i] = _maximum(m[i], t[j, i])
    for j in range(d):
        for i in range(b):
            e = expf(t[j, i] - m[i])
            t[j, i] = e
            s[i] += e
    for i in range(b):
        s[i] = F32(1.0) / s[i]


@njit(**_OPTS)
def _short_scratch(d):
    """The short-row kernels' scratch: a ``(d, SHORT_BLOCK)`` transposed block and two per-row vectors."""
    return np.empty((d, SHORT_BLOCK), F32), np.empty(SHORT_BLOCK, F32), np.empty(SHORT_BLOCK, F32)


@njit(**_OPTS)
def softmax_short_rows(x, y):
    """:func:`softmax_rows` for rows of at most :data:`SHORT_SOFTMAX`, a block of rows at a time by columns."""
    n, d = x.shape
    t, m, s = _short_scratch(d)
    for r0 in range(0, n, SHORT_BLOCK):
        b = min(SHORT_BLOCK, n - r0)
        _block_t(x, r0, b, t)
        _softmax_cols(t, b, m, s)
        for i in range(b):
            for j in range(d):
                y[r0 + i, j] = t[j, i] * s[i]


@njit(fastmath=_SUM, **_OPTS)
def _column_moments(t, b, eps, variance, m, s):
    """Each of the first ``b`` columns' mean into ``m`` and ``1 / sqrt(var + eps)`` (1 without
    ``variance``) into ``s``; two passes, as :func:`normalize_rows`."""
    d = t.shape[0]
    for i in range(b):
        m[i] = F32(0.0)
        s[i] = F32(0.0)
    for j in range(d):
        for i in range(b):
            m[i] += t[j, i]
    for i in range(b):
        m[i] = m[i] / F32(d)
    if not variance:
        for i in range(b):
            s[i] = F32(1.0)
        return
    for j in range(d):
        for i in range(b):
            u = t[j, i] - m[i]
            s[i] += u * u
    for i in range(b):
        s[i] = F32(1.0) / np.sqrt(s[i] / F32(d) + eps)


@njit(fastmath=_MAP, **_OPTS)
def normalize_short_rows(x, eps, variance, gamma, beta, y):
    """:func:`normalize_rows` for rows of at most :data:`SHORT_NORMALIZE`, a block of rows at a time
    (the moments by columns, the affine pass row by row)."""
    n, d = x.shape
    t, m, s = _short_scratch(d)
    for r0 in range(0, n, SHORT_BLOCK):
        b = min(SHORT_BLOCK, n - r0)
        _block_t(x, r0, b, t)
        _column_moments(t, b, eps, variance, m, s)
        for i in range(b):
            mu, inv = m[i], s[i]
            for j in range(d):
                y[r0 + i, j] = (x[r0 + i, j] - mu) * inv * gamma[j] + beta[j]


_E2_LO, _E2_HI = F32(-126.0), F32(127.49)
_LN2 = F32(math.log(2.0))


@njit(inline="always", fastmath=_MAP, **_OPTS)
def exp2f(x):
    """float32 2^x, vectorisable: ``2^n`` from its exponent bits times :func:`expf`'s polynomial at
    ``(x - n) ln 2``; 0 below -126, inf above 127.49 (relative error as :func:`expf`'s)."""
    t = _E2_LO if x < _E2_LO else x
    t = _E2_HI if t > _E2_HI else t
    n = np.floor(t + F32(0.5))
    y = _exp_reduced((t - n) * _LN2, n)
    y = F32(0.0) if x < _E2_LO else y
    return F32(np.inf) if x > _E2_HI else y


@njit(inline="always", fastmath=_MAP, **_OPTS)
def tanhf(x):
    """float32 tanh as ``sign(x) (1 - 2 / (exp(2|x|) + 1))``: absolute error 1.1e-7 (no cancellation
    matters there), vectorisable, unlike numba's ``math.tanh`` (a libm call per element)."""
    t = F32(1.0) - F32(2.0) / (expf(F32(2.0) * abs(x)) + F32(1.0))
    return t if x >= F32(0.0) else -t


@njit(fastmath=_MAP, **_OPTS)
def lstm_cell(g, rh, bias, c, h, clip, do_clip):
    """One LSTM step, gates (sigmoid, tanh, tanh), no peepholes, in the executor's transposed layout.

    ``g + rh + bias`` (``(D, 4H, M)``, ``(D, 4H, M)``, ``(D, 4H)``) are the pre-activations of gates i, f, o
    (scaled by ``-log2(e)`` at build time: ``sigmoid(a) = 1 / (1 + 2^(-a log2 e))``) and of the block input
    z; ``c (D, H, M)`` is updated in place (clipped to ``+-clip`` when ``do_clip``), ``h (D, H, M)``
    receives ``o * tanh(c)``.
    """
    nd, h4, m = g.shape
    hs = h4 // 4
    for d in range(nd):
        for u in range(hs):
            bi, bf, bo, bz = bias[d, u], bias[d, hs + u], bias[d, 2 * hs + u], bias[d, 3 * hs + u]
            for j in range(m):
                i = F32(1.0) / (F32(1.0) + exp2f(g[d, u, j] + rh[d, u, j] + bi))
                f = F32(1.0) / (F32(1.0) + exp2f(g[d, hs + u, j] + rh[d, hs + u, j] + bf))
                o = F32(1.0) / (F32(1.0) + exp2f(g[d, 2 * hs + u, j] + rh[d, 2 * hs + u, j] + bo))
                z = tanhf(g[d, 3 * hs + u, j] + rh[d, 3 * hs + u, j] + bz)
                cc = c[d, u, j] * f + i * z
                if do_clip:
                    cc = clip if cc > clip else cc
                    cc = -clip if cc < -clip else cc
                c[d, u, j] = cc
                h[d, u, j] = o * tanhf(cc)


@njit(**_OPTS)
def lstm_sequence(proj, r, bias, h0, c, ys, tmp, clip, do_clip, yt, backwards, want_yt):
    """Every step of the common LSTM (see :func:`lstm_cell`) in one call: ``proj (S, D, 4H, M)`` the input
    projections (without the bias), ``r (D, 4H, H)`` the recurrent matrices, ``bias (D, 4H)``, added in the
    cell's loop (a separate broadcast add over ``proj`` was 78 of lstm_text's 700 us), ``h0, c (D, H, M)`` the initial states (``c``
    updated in place), ``ys (S, D, H, M)`` receives every step's ``h``; ``tmp (D, 4H, M)`` is scratch.
    With ``want_yt``, ``yt (M, S, D, H)`` receives every ``h`` too, in the layer's output order (step ``k`` of
    direction d at ``S-1-k`` where ``backwards[d]``: a bidirectional layer's backward outputs aligned with the
    input), each step's block transposed while it is in cache: a column block's thread writes its own rows of
    the layer's output, where numpy's transposing copy of the whole output ran in the calling thread alone.
    The recurrent products are BLAS calls (numba's ``np.dot``), so the whole sequence runs without the GIL."""
    s, nd = proj.shape[0], proj.shape[1]
    hs, m = ys.shape[2], ys.shape[3]
    for k in range(s):
        for d in range(nd):
            np.dot(r[d], h0[d] if k == 0 else ys[k - 1, d], tmp[d])
        lstm_cell(proj[k], tmp, bias, c, ys[k], clip, do_clip)
        if want_yt:
            for d in range(nd):
                t = s - 1 - k if backwards[d] else k
                for j in range(m):
                    for u in range(hs):
                        yt[j, t, d, u] = ys[k, d, u, j]


# Chunk drivers: each thread of a for_compiled call runs one of these; it takes chunks of ``grain``
# elements (rows for the row kernels) from the shared counter until none is left, all without the GIL.
@njit(**_OPTS)
def gelu_exact_chunks(counter, grain, x, y, inv_p, c0, c1, c2, c3, c4):
    n = x.size
    while True:
        s = _take(counter) * grain
        if s >= n:
            return
        e = min(n, s + grain)
        gelu_exact(x[s:e], y[s:e], inv_p, c0, c1, c2, c3, c4)


@njit(**_OPTS)
def gelu_tanh_chunks(counter, grain, x, y, c, k):
    n = x.size
    while True:
        s = _take(counter) * grain
        if s >= n:
            return
        e = min(n, s + grain)
        gelu_tanh(x[s:e], y[s:e], c, k)


@njit(**_OPTS)
def gelu_sigmoid_chunks(counter, grain, x, y, s_):
    n = x.size
    while True:
        s = _take(counter) * grain
        if s >= n:
            return
        e = min(n, s + grain)
        gelu_sigmoid(x[s:e], y[s:e], s_)


@njit(**_OPTS)
def softmax_chunks(counter, grain, x, y):
    n = x.shape[0]
    while True:
        s = _take(counter) * grain
        if s >= n:
            return
        e = min(n, s + grain)
        if x.shape[1] <= SHORT_SOFTMAX:
            softmax_short_rows(x[s:e], y[s:e])
        else:
            softmax_rows(x[s:e], y[s:e])


@njit(**_OPTS)
def normalize_chunks(counter, grain, x, y, eps, variance, gamma, beta):
    n = x.shape[0]
    while True:
        s = _take(counter) * grain
        if s >= n:
            return
        e = min(n, s + grain)
        if x.shape[1] <= SHORT_NORMALIZE:
            normalize_short_rows(x[s:e], eps, variance, gamma, beta, y[s:e])
        else:
            normalize_rows(x[s:e], eps, variance, gamma, beta, y[s:e])


@njit(fastmath=_MAP, **_OPTS)
def depthwise_nhwc(xp, w, b, sh, sw, dh, dw, y):
    """Depthwise convolution in channels-last order: ``xp (M, Hp, Wp, C)`` the padded input, ``w (kh, kw, C)``,
    ``b (C,)``, ``y (M, Ho, Wo, C)`` receives ``b + sum_pq xp[r, s] * w[p, q]`` per channel (the channel loop is
    the vectorised one; the sum runs in kernel order, as the per-offset numpy passes did)."""
    m, ho, wo, c = y.shape
    kh, kw = w.shape[0], w.shape[1]
    for n in range(m):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    y[n, i, j, ch] = b[ch]
                for p in range(kh):
                    r = i * sh + p * dh
                    for q in range(kw):
                        s = j * sw + q * dw
                        for ch in range(c):
                            y[n, i, j, ch] += xp[n, r, s, ch] * w[p, q, ch]


@njit(**_OPTS)
def depthwise_chunks(counter, grain, xp, w, b, sh, sw, dh, dw, y):
    n = y.shape[0]
    while True:
        s = _take(counter) * grain
        if s >= n:
            return
        e = min(n, s + grain)
        depthwise_nhwc(xp[s:e], w, b, sh, sw, dh, dw, y[s:e])
