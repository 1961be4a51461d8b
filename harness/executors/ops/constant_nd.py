"""ND constants, shapes, fills and ranges (spec >= 4): ``loadConstantND``, ``getShape``,
``fillLike`` / ``fillStatic`` / ``fillDynamic``, ``rangeStatic`` / ``rangeDynamic``.

Outputs are constants with a sample axis of 1 (they broadcast against N). Conventions
(per-sample axes and static shapes, values that must agree across the batch, float index
blobs): :mod:`harness.executors.ops._ndutil`.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops import _ndutil as u
from harness.executors.ops.base import F32, Op, constant
from harness.executors.registry import register


@register("loadConstantND")
class LoadConstantND(Op):
    """A constant of the per-sample ``shape`` (a sample axis of 1: it broadcasts against N)."""

    n_inputs = 0

    def build(self, params, ctx) -> None:
        shape = u.positive_shape(self, params.shape, "shape")
        self.value = constant(self.weights("data", shape, 0))

    def run(self):
        return self.value


@register("getShape")
class GetShape(Op):
    """The per-sample shape of the input as a rank-1 float tensor (the same for every sample)."""

    n_inputs = 1

    def run(self, x):
        return constant(np.asarray(x.shape[1:], dtype=F32))


@register("fillLike")
class FillLike(Op):
    """``value`` in the per-sample shape of the input."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.value = F32(params.value)

    def run(self, x):
        return np.full((1,) + x.shape[1:], self.value, dtype=F32)


@register("fillStatic")
class FillStatic(Op):
    """``value`` in the per-sample ``targetShape``."""

    n_inputs = 0

    def build(self, params, ctx) -> None:
        self.out = np.full((1,) + u.positive_shape(self, params.targetShape, "targetShape"), F32(params.value), dtype=F32)

    def run(self):
        return self.out


@register("fillDynamic")
class FillDynamic(Op):
    """``value`` in the shape held by the input (a rank-1 tensor of sizes)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.value = F32(params.value)

    def run(self, shape):
        s = u.positive_shape(self, u.uniform_ints(self, shape, "the shape input"), "shape input")
        return np.full((1,) + s, self.value, dtype=F32)


def _arange(op: Op, start: float, end: float, step: float) -> np.ndarray:
    if step == 0:
        raise op.error("range step is 0")
    v = np.arange(start, end, step, dtype=np.float64).astype(F32)
    if v.size == 0:
        raise op.error(f"range({start}, {end}, {step}) is empty")
    return constant(v)


@register("rangeStatic")
class RangeStatic(Op):
    """``arange(startValue, endValue, stepSizeValue)`` as a rank-1 constant."""

    n_inputs = 0

    def build(self, params, ctx) -> None:
        self.out = _arange(self, float(params.startValue), float(params.endValue), float(params.stepSizeValue))

    def run(self):
        return self.out


@register("rangeDynamic")
class RangeDynamic(Op):
    """``arange(start, end, step)``; inputs in order end[, start[, step]], the rest from params."""

    n_inputs = (1, 3)

    def build(self, params, ctx) -> None:
        self.start, self.step = float(params.startValue), float(params.stepSizeValue)

    def run(self, end, start=None, step=None):
        e = u.uniform_scalar(self, end, "range end")
        s = self.start if start is None else u.uniform_scalar(self, start, "range start")
        d = self.step if step is None else u.uniform_scalar(self, step, "range step")
        return _arange(self, s, e, d)
