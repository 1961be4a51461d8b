"""``cumSum``: the running sum along an axis (spec >= 4), inclusive or exclusive, forwards or reversed.

Conventions (per-sample axes and static shapes, values that must agree across the batch,
float index blobs): :mod:`harness.executors.ops._ndutil`.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops import _ndutil as u
from harness.executors.ops.base import F32, Op, f32, rank
from harness.executors.registry import register


@register("cumSum")
class CumSum(Op):
    """Cumulative sum along ``axis`` (or input 2); ``excludeFinalSum``: exclusive; ``reverse``: from the end."""

    n_inputs = (1, 2)

    def build(self, params, ctx) -> None:
        self.axis, self.exclusive, self.reverse = int(params.axis), bool(params.excludeFinalSum), bool(params.reverse)

    def run(self, x, axis_in=None):
        ax = int(u.uniform_scalar(self, axis_in, "the axis input")) if axis_in is not None else self.axis
        a = u.norm_axis(self, ax, rank(x)) + 1
        x = f32(x)
        if self.reverse:
            x = np.flip(x, axis=a)
        y = np.cumsum(x, axis=a, dtype=F32)
        if self.exclusive:
            y = y - x
        return np.flip(y, axis=a) if self.reverse else y
