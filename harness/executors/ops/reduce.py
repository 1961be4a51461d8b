"""The legacy ``reduce`` layer (axes CHW, HW, C, H, W; dims kept as 1)."""
from __future__ import annotations

import numpy as np

from harness.executors.ops.base import F32, Op, f32, rank
from harness.executors.registry import register

_AXES = {0: (-3, -2, -1), 1: (-2, -1), 2: (-3,), 3: (-2,), 4: (-1,)}
_MODES = ("SUM", "AVG", "PROD", "LOGSUM", "SUMSQUARE", "L1", "L2", "MAX", "MIN", "ARGMAX")


@register("reduce")
class Reduce(Op):
    """SUM, AVG, PROD, LOGSUM (``sum log(x + eps)``), SUMSQUARE, L1, L2, MAX, MIN, ARGMAX."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        m = int(params.mode)
        if not 0 <= m < len(_MODES):
            raise self.error(f"reduce mode {m} is not supported")
        self.mode = _MODES[m]
        if int(params.axis) not in _AXES:
            raise self.error(f"reduce axis {params.axis} is not supported")
        self.axes = _AXES[int(params.axis)]
        self.eps = F32(params.epsilon or 1e-6)
        if self.mode == "ARGMAX" and len(self.axes) != 1:
            raise self.error("ARGMAX reduces a single axis (C, H or W)")

    def run(self, x):
        if rank(x) < len(self.axes):
            raise self.error(f"input of Core ML rank {rank(x)} has no axes {self.axes}")
        x, ax, m = f32(x), self.axes, self.mode
        if m == "SUM":
            return x.sum(axis=ax, keepdims=True)
        if m == "AVG":
            return x.mean(axis=ax, keepdims=True, dtype=F32)
        if m == "PROD":
            return x.prod(axis=ax, keepdims=True)
        if m == "LOGSUM":
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.log(x + self.eps).sum(axis=ax, keepdims=True)
        if m == "SUMSQUARE":
            return np.square(x).sum(axis=ax, keepdims=True)
        if m == "L1":
            return np.abs(x).sum(axis=ax, keepdims=True)
        if m == "L2":
            return np.sqrt(np.square(x).sum(axis=ax, keepdims=True))
        if m == "MAX":
            return x.max(axis=ax, keepdims=True)
        if m == "MIN":
            return x.min(axis=ax, keepdims=True)
        return np.argmax(x, axis=ax[0], keepdims=True).astype(F32)
