"""Elementwise unary ND layers (spec >= 4): rounding, trigonometry, exp2, erf, gelu, clampedReLU.

Each is ``y = f(x)`` on float32, shape preserved. ``erf`` uses
:func:`scipy.special.erf` (scipy is a dependency of scikit-learn). ``gelu``
implements the three ``GeluMode`` formulas of NeuralNetwork.proto:
EXACT ``0.5 x (1 + erf(x / sqrt 2))``, TANH_APPROXIMATION
``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` and SIGMOID_APPROXIMATION
``x * sigmoid(1.702 x)``, as chunked, compiled float32 kernels
(:func:`harness.executors.ops._kernels.gelu`; EXACT uses a fitted Abramowitz & Stegun
7.1.26 form, within 2.8e-7 of the float64 exact GELU).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.special import erf as _erf

from harness.executors.ops import _kernels
from harness.executors.ops.base import F32, Op, f32
from harness.executors.registry import register


def erf(x: np.ndarray) -> np.ndarray:
    """Gauss error function, float32."""
    return _erf(f32(x)).astype(F32)


def gelu(x: np.ndarray, mode: str = "EXACT") -> np.ndarray:
    """GELU in one of the Core ML modes (``EXACT``, ``TANH_APPROXIMATION``, ``SIGMOID_APPROXIMATION``)."""
    if mode not in _kernels.GELU_MODES:
        raise ValueError(f"unknown gelu mode {mode!r}")
    return _kernels.gelu(x, mode)


_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ceil": np.ceil,
    "floor": np.floor,
    "round": np.round,  # half to even, like IEEE rint
    "sign": np.sign,
    "exp2": np.exp2,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
    "erf": erf,
}


@register(*_UNARY)
class UnaryND(Op):
    """``y = f(x)`` for the layer's function (domain errors give NaN/inf, as on device)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.fn = _UNARY[self.type]

    def run(self, x):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return f32(self.fn(f32(x)))


@register("gelu")
class Gelu(Op):
    """GELU, ``mode`` EXACT / TANH_APPROXIMATION / SIGMOID_APPROXIMATION."""

    n_inputs = 1
    MODES = ("EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION")

    def build(self, params, ctx) -> None:
        m = int(params.mode)
        if not 0 <= m < len(self.MODES):
            raise self.error(f"gelu mode {m} is not one of {self.MODES}")
        self.mode = self.MODES[m]

    def run(self, x):
        return gelu(x, self.mode)


@register("clampedReLU")
class ClampedReLU(Op):
    """``min(x >= 0 ? x : alpha * x, beta)``."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.alpha, self.beta = F32(params.alpha), F32(params.beta)

    def run(self, x):
        x = f32(x)
        return np.minimum(np.where(x >= 0, x, self.alpha * x), self.beta).astype(F32)
