"""Chunked float32 kernels behind the transformer ops: gelu, softmax over the last axis, row normalization.

Not an op module (the leading underscore keeps the registry from importing it).
Each kernel works on contiguous float32 arrays in chunks of about :data:`GRAIN`
elements (whole rows for the row-wise kernels), spread over the executor's threads
by :func:`~harness.executors.ops._parallel.for_compiled`: every thread makes one
call of a compiled chunk driver of :mod:`harness.executors.ops._jit`, which takes
chunks from a shared atomic counter without the GIL; the arithmetic of a chunk is
one or two compiled, vectorised loops. All arithmetic is float32 (scalars are
float32 too, so nothing upcasts).

**gelu (EXACT).** ``gelu(x) = max(x, 0) - k(|x|)`` with ``k(a) = a Phi(-a)``
(no cancellation for negative x). ``k(a) = a exp(-a^2/2) M(a)``, where the Mills-type
ratio ``M(a) = Phi(-a) exp(a^2/2)`` is a degree-4 polynomial in ``t = 1 / (1 + p a)``
(the Abramowitz & Stegun 7.1.26 form) fitted here by weighted minimax (Lawson's
algorithm) for the error of ``k`` itself: 1.2e-7 in float64, and ``exp`` underflows
harmlessly for large ``|x|``. Measured against float64 ``0.5 x (1 + erf(x / sqrt 2))``
on a dense grid over [-12, 12] in float32: max absolute error 3.6e-7 (scipy's erf on
float32 input: 4.5e-7; ``torch.nn.functional.gelu``: 1.2e-6; with the compiled exp,
2.8e-7). ``t = 1 / (1 + p a)`` is evaluated as ``(1/p) / (a + 1/p)``, the ``1/p`` folded
into the coefficients. TANH_APPROXIMATION and SIGMOID_APPROXIMATION are their formulas,
``0.5 x (1 + tanh(z))`` written as ``x / (1 + exp(-2z))``.
"""
from __future__ import annotations

import math

import numpy as np

from harness.executors.ops._parallel import for_compiled, rows_per_chunk

F32 = np.float32
_ONE = F32(1.0)
_ZERO = F32(0.0)
# M(a) ~ sum_j _GELU_C[j] t^j, t = 1 / (1 + _GELU_P a): weighted minimax fit (see the module docstring)
_GELU_P = 0.4075
_GELU_C64 = (-0.00687750578802811, 0.22114286662983018, -0.03473665061606325, 0.454739374928385, -0.13427313603994237)
#: the same polynomial in ``u = 1 / (a + 1/p) = p t``: coefficient j divided by p^j
_GELU_INV_P = F32(1.0 / _GELU_P)
_GELU_C = [F32(c / _GELU_P ** j) for j, c in enumerate(_GELU_C64)]
_TANH_C = F32(np.sqrt(2.0 / np.pi))
_TANH_K = F32(0.044715)
_SIGMOID_S = F32(1.702)


#: Elements per chunk of a compiled chunk driver (:func:`~harness.executors.ops._parallel.for_compiled`).
#: No GIL is retaken between chunks, so chunks can be smaller than the pool's ``GRAIN``
#: (2^18): in MiniLM at 2 threads 2^16 balanced the two threads better than 2^18 (layer norm
#: on its own, median 0.83-0.97x PyTorch against 0.94-1.15x; 2^14 no better).
GRAIN = 1 << 16

_ONES: dict[tuple[int, float], np.ndarray] = {}


def _ones(d: int, value: np.float32) -> np.ndarray:
    """A cached read-only vector of ``d`` copies of ``value`` (a row normalization's default gamma / beta)."""
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


_JIT: list = []


def _jit():
    """The compiled loops (imported on first use: numba's import and cache load stay off the CLI's start;
    kept here after it, since an ``import`` statement per call costs about 0.5 us on ops of 10 us)."""
    if not _JIT:
        from harness.executors.ops import _jit as jit

        _JIT.append(jit)
    return _JIT[0]


def _flat_vector(v: np.ndarray | None, d: int, default: np.float32) -> np.ndarray:
    """``v`` as a contiguous float32 vector of ``d`` (no copy when it already is one), or ``d`` copies of ``default``."""
    if v is None:
        return _ones(d, default)
    if v.dtype == F32 and v.ndim == 1 and v.flags.c_contiguous:
        return v
    return np.ascontiguousarray(v, F32).reshape(d)


#: GeluMode -> the compiled chunk driver (a name in :mod:`._jit`) and its constants
GELU_MODES = {"EXACT": ("gelu_exact_chunks", (_GELU_INV_P, *_GELU_C)),
              "TANH_APPROXIMATION": ("gelu_tanh_chunks", (_TANH_C, _TANH_K)),
              "SIGMOID_APPROXIMATION": ("gelu_sigmoid_chunks", (_SIGMOID_S,))}


def gelu(x: np.ndarray, mode: str = "EXACT") -> np.ndarray:
    """GELU of ``x`` in a Core ML ``GeluMode`` (``EXACT``, ``TANH_APPROXIMATION``, ``SIGMOID_APPROXIMATION``),
    float32; inf/NaN inputs give what the formula gives."""
    driver, constants = GELU_MODES[mode]
    x, out, yf = _flat_out(x)
    xf = x.reshape(-1)
    for_compiled(getattr(_jit(), driver), xf.size, GRAIN, xf, yf, *constants)
    return out


def softmax_last(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (each row shifted by its own maximum), float32."""
    x, out, _ = _flat_out(x)
    d = x.shape[-1]
    xr, yr = x.reshape(-1, d), out.reshape(-1, d)
    for_compiled(_jit().softmax_chunks, xr.shape[0], rows_per_chunk(d, GRAIN), xr, yr)
    return out


def normalize_rows(x: np.ndarray, k: int, eps: float, variance: bool = True,
                   gamma: np.ndarray | None = None, beta: np.ndarray | None = None) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps)`` over the last ``k`` axes (biased variance, two passes, float32),
    then ``* gamma + beta`` if given (vectors over the flattened normalized axes), in the same pass."""
    x, out, _ = _flat_out(x)
    d = math.prod(x.shape[x.ndim - k:])
    xr, yr = x.reshape(-1, d), out.reshape(-1, d)
    g, b = _flat_vector(gamma, d, _ONE), _flat_vector(beta, d, _ZERO)
    for_compiled(_jit().normalize_chunks, xr.shape[0], rows_per_chunk(d, GRAIN), xr, yr, F32(eps), bool(variance), g, b)
    return out
