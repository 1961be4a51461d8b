"""The ND reductions ``reduceSum/Mean/Prod/L1/L2/Max/Min/SumSquare/LogSum/LogSumExp`` (spec >= 4).

``axes`` are per-sample Core ML axes (negative allowed); ``reduceAll``
reduces every per-sample axis; ``keepDims`` keeps reduced axes as size 1.
A reduction that removes every axis yields shape ``(1,)`` (Core ML has no
rank-0 tensors). Accumulation is in float32 like the device, except
log-sum-exp which subtracts the maximum first for stability.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from harness.executors.ops import _ndutil as u
from harness.executors.ops.base import F32, Op, f32, rank
from harness.executors.registry import register


def _logsumexp(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, F32(0))
    y = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return y if keepdims else np.squeeze(y, axis=axis)


_REDUCE: dict[str, Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]] = {
    "reduceSum": lambda x, a, k: np.sum(x, axis=a, keepdims=k),
    "reduceMean": lambda x, a, k: np.mean(x, axis=a, keepdims=k),
    "reduceProd": lambda x, a, k: np.prod(x, axis=a, keepdims=k),
    "reduceL1": lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k),
    "reduceL2": lambda x, a, k: np.sqrt(np.sum(np.square(x), axis=a, keepdims=k)),
    "reduceMax": lambda x, a, k: np.max(x, axis=a, keepdims=k),
    "reduceMin": lambda x, a, k: np.min(x, axis=a, keepdims=k),
    "reduceSumSquare": lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k),
    "reduceLogSum": lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)),
    "reduceLogSumExp": _logsumexp,
}


@register(*_REDUCE)
class ReduceND(Op):
    """Reduce over ``axes`` (or all axes with ``reduceAll``), keeping them as 1s if ``keepDims``."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.fn = _REDUCE[self.type]
        self.axes = [int(a) for a in params.axes]
        self.keep, self.all = bool(params.keepDims), bool(params.reduceAll)
        if not self.all and not self.axes:
            raise self.error("axes is empty and reduceAll is false")

    def run(self, x):
        r = rank(x)
        axes = range(r) if self.all else {u.norm_axis(self, a, r, "axes value") for a in self.axes}
        ax = tuple(sorted(a + 1 for a in axes))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = f32(self.fn(f32(x), ax, self.keep))
        if y.ndim == 1:  # every per-sample axis removed
            y = y.reshape(-1, 1)
        return y
