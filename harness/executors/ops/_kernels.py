"""Chunked float32 kernels behind the transformer ops: gelu, softmax over the last axis, row normalization.

Not an op module (the leading underscore keeps the registry from importing it).
Each kernel works on contiguous float32 arrays, splits them into chunks of
about :data:`~harness.executors.ops._parallel.GRAIN` elements (whole rows for
the row-wise kernels), runs every step of a chunk while it is in cache and
spreads chunks over :func:`~harness.executors.ops._parallel.for_chunks`. All
arithmetic is float32 (scalars are float32 too, so nothing upcasts).

**gelu (EXACT).** ``gelu(x) = max(x, 0) - k(|x|)`` with ``k(a) = a Phi(-a)``
(no cancellation for negative x). ``k(a) = a exp(-a^2/2) M(a)``, where the Mills-type
ratio ``M(a) = Phi(-a) exp(a^2/2)`` is a degree-4 polynomial in ``t = 1 / (1 + p a)``
(the Abramowitz & Stegun 7.1.26 form) fitted here by weighted minimax (Lawson's
algorithm) for the error of ``k`` itself: 1.2e-7 in float64, and ``exp`` underflows
harmlessly for large ``|x|``. Measured against float64 ``0.5 x (1 + erf(x / sqrt 2))``
on a dense grid over [-12, 12] in float32: max absolute error 3.6e-7 (scipy's erf on
float32 input: 4.5e-7; ``torch.nn.functional.gelu``: 1.2e-6). 18 in-place ufunc calls
per chunk (``t = 1 / (1 + p a)`` is evaluated as ``(1/p) / (a + 1/p)``, the ``1/p`` folded
into the coefficients).
"""
from __future__ import annotations

import math

import numpy as np

from harness.executors.ops import _parallel as par
from harness.executors.ops._parallel import for_chunks, rows_per_chunk, scratch

F32 = np.float32
_ONE, _HALF = F32(1.0), F32(0.5)
# M(a) ~ sum_j _GELU_C[j] t^j, t = 1 / (1 + _GELU_P a): weighted minimax fit (see the module docstring)
_GELU_P = 0.4075
_GELU_C64 = (-0.00687750578802811, 0.22114286662983018, -0.03473665061606325, 0.454739374928385, -0.13427313603994237)
#: the same polynomial in ``u = 1 / (a + 1/p) = p t``: coefficient j divided by p^j
_GELU_INV_P = F32(1.0 / _GELU_P)
_GELU_C = [F32(c / _GELU_P ** j) for j, c in enumerate(_GELU_C64)]
_NEG_HALF_LOG2E = F32(-0.5 / np.log(2.0))
_TANH_C = F32(np.sqrt(2.0 / np.pi))
_TANH_K = F32(0.044715)


_ONES: dict[tuple[int, float], np.ndarray] = {}


def _ones(d: int, value: np.float32) -> np.ndarray:
    """A cached read-only vector of ``d`` copies of ``value`` (row sums as matrix-vector products)."""
    v = _ONES.get((d, float(value)))
    if v is None:
        v = np.full(d, value, F32)
        v.flags.writeable = False
        _ONES[(d, float(value))] = v
    return v


def _flat_out(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous float32 ``x``, a new output like it, and both flattened."""
    x = np.ascontiguousarray(x, dtype=F32)
    out = np.empty_like(x)
    return x, out, out.reshape(-1)


def _gelu_exact_chunk(x: np.ndarray, y: np.ndarray) -> None:
    a, t, e = scratch(3, x.size)
    np.abs(x, out=a)
    np.add(a, _GELU_INV_P, out=t)
    np.divide(_ONE, t, out=t)  # u = p t
    c0, c1, c2, c3, c4 = _GELU_C
    np.multiply(t, c4, out=y)  # y = M(t), Horner
    y += c3
    y *= t
    y += c2
    y *= t
    y += c1
    y *= t
    y += c0
    np.multiply(x, _NEG_HALF_LOG2E, out=e)  # exp(-x^2/2) as exp2(-x^2 log2(e)/2): numpy's exp2 is twice as fast
    e *= x
    np.exp2(e, out=e)
    y *= e  # h = M exp(-x^2/2) = Phi(-a)
    y *= a  # k = a h
    np.maximum(x, _ones(x.size, F32(0)), out=t)  # against an array: numpy's scalar-operand maximum is 3x slower
    np.subtract(t, y, out=y)  # max(x, 0) - k


def _gelu_tanh_chunk(x: np.ndarray, y: np.ndarray) -> None:
    (t,) = scratch(1, x.size)
    np.multiply(x, x, out=t)
    t *= _TANH_K
    t += _ONE
    t *= x
    t *= _TANH_C
    np.tanh(t, out=t)
    t += _ONE
    np.multiply(x, _HALF, out=y)
    y *= t


def _gelu_sigmoid_chunk(x: np.ndarray, y: np.ndarray) -> None:
    (t,) = scratch(1, x.size)
    np.multiply(x, F32(-1.702), out=t)
    np.exp(t, out=t)
    t += _ONE
    np.divide(x, t, out=y)


GELU_MODES = _GELU = {"EXACT": _gelu_exact_chunk, "TANH_APPROXIMATION": _gelu_tanh_chunk, "SIGMOID_APPROXIMATION": _gelu_sigmoid_chunk}


def gelu(x: np.ndarray, mode: str = "EXACT") -> np.ndarray:
    """GELU of ``x`` in a Core ML ``GeluMode`` (``EXACT``, ``TANH_APPROXIMATION``, ``SIGMOID_APPROXIMATION``), float32."""
    kernel = _GELU[mode]
    x, out, yf = _flat_out(x)
    xf = x.reshape(-1)

    def run(s: int, e: int) -> None:
        kernel(xf[s:e], yf[s:e])
    # inf/NaN inputs give what the formula gives
    for_chunks(run, xf.size, par.GRAIN, errstate={"over": "ignore", "under": "ignore", "invalid": "ignore"})
    return out


#: A row whose exponentials, shifted by its chunk's maximum instead of its own, sum below this is
#: recomputed with its own maximum: above it every term that matters in float32 is a normal number.
_SHIFT_OK = F32(np.exp(-60.0))


def softmax_last(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float32.

    Shift-invariance is used per chunk: ``exp(x - c)`` with ``c`` the chunk's maximum (one
    contiguous reduction instead of one per row), row sums as one matrix-vector product. A row
    whose maximum lies more than ~60 below ``c`` (its sum under :data:`_SHIFT_OK`) and a chunk
    holding inf/NaN are redone with per-row maxima, so the result equals the per-row-max softmax
    to float32 rounding.
    """
    x, out, _ = _flat_out(x)
    d = x.shape[-1]
    xr, yr = x.reshape(-1, d), out.reshape(-1, d)
    ones = _ones(d, _ONE)

    def exact(xc: np.ndarray, yc: np.ndarray) -> None:
        np.subtract(xc, xc.max(axis=1, keepdims=True), out=yc)
        np.exp(yc, out=yc)
        yc /= yc.sum(axis=1, keepdims=True)

    def run(s: int, e: int) -> None:
        xc, yc = xr[s:e], yr[s:e]
        c = xc.max()
        if not np.isfinite(c):
            exact(xc, yc)
            return
        np.subtract(xc, c, out=yc)
        np.exp(yc, out=yc)  # not exp2((x - c) log2 e): its extra rounding costs small probabilities ~2x relative error
        (m,) = scratch(1, e - s)
        np.matmul(yc, ones, out=m)
        if m.min() < _SHIFT_OK:
            low = np.flatnonzero(m < _SHIFT_OK)
            sub = np.empty((low.size, d), F32)
            exact(xc[low], sub)
            yc[low] = sub
            m[low] = F32(1)
        np.divide(_ONE, m, out=m)
        yc *= m[:, None]
    for_chunks(run, xr.shape[0], rows_per_chunk(d), errstate={"under": "ignore", "invalid": "ignore"})
    return out


def normalize_rows(x: np.ndarray, k: int, eps: float, variance: bool = True,
                   gamma: np.ndarray | None = None, beta: np.ndarray | None = None) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps)`` over the last ``k`` axes (biased variance, two passes, float32),
    then ``* gamma + beta`` if given (vectors over the flattened normalized axes), in the same pass."""
    x, out, _ = _flat_out(x)
    d = math.prod(x.shape[x.ndim - k:])
    xr, yr = x.reshape(-1, d), out.reshape(-1, d)
    eps32 = F32(eps)
    ones = _ones(d, F32(1.0 / d))

    def run(s: int, e: int) -> None:
        xc, yc = xr[s:e], yr[s:e]
        m, v = scratch(2, e - s)
        np.matmul(xc, ones, out=m)  # row means (matrix-vector product: one pass, vectorised)
        np.subtract(xc, m[:, None], out=yc)
        if not variance:
            affine(yc)
            return
        (sq,) = scratch(1, yc.size)
        sq = sq.reshape(yc.shape)
        np.multiply(yc, yc, out=sq)
        np.matmul(sq, ones, out=v)
        v += eps32
        np.sqrt(v, out=v)
        np.divide(_ONE, v, out=v)
        yc *= v[:, None]
        affine(yc)

    def affine(yc: np.ndarray) -> None:
        if gamma is not None:
            yc *= gamma
        if beta is not None:
            yc += beta
    for_chunks(run, xr.shape[0], rows_per_chunk(d))
    return out
