"""ND tensor layers (spec >= 4): static reshapes, softmaxND, ...

Written by E for the MLP/CNN fixtures (softmaxND, reshapeStatic); the rest of
the *ND / static / dynamic tensor-manipulation family belongs here too.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops.base import Op, axis, f32
from harness.executors.registry import register


def softmax(x: np.ndarray, ax: int) -> np.ndarray:
    """Numerically stable softmax of float32 ``x`` along numpy axis ``ax``."""
    ax %= x.ndim
    if ax < x.ndim - 1 and all(d == 1 for d in x.shape[ax + 1:]):  # e.g. (..., C, 1, 1): use the last axis
        return softmax(x.reshape(x.shape[: ax + 1]), ax).reshape(x.shape)
    e = np.exp(x - x.max(axis=ax, keepdims=True))
    e /= e.sum(axis=ax, keepdims=True)
    return e


@register("softmaxND")
class SoftmaxND(Op):
    """Softmax along ``axis`` (Core ML axis, negative allowed)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.axis = int(params.axis)

    def run(self, x):
        return softmax(f32(x), axis(self.axis, x))


@register("reshapeStatic")
class ReshapeStatic(Op):
    """Reshape to the per-sample ``targetShape`` (its leading 1 is the model's batch dim, kept)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.target = tuple(int(s) for s in params.targetShape)
        if sum(1 for s in self.target if s == -1) > 1 or any(s == 0 or s < -1 for s in self.target):
            raise self.error(f"targetShape {list(self.target)} is invalid (at most one -1, no zeros)")

    def run(self, x):
        per = int(np.prod(x.shape[1:], dtype=np.int64))
        known = int(np.prod([s for s in self.target if s != -1], dtype=np.int64))
        if (-1 in self.target and per % known) or (-1 not in self.target and per != known):
            raise self.error(f"cannot reshape a per-sample tensor of shape {tuple(x.shape[1:])} to targetShape {list(self.target)}")
        return x.reshape((x.shape[0],) + self.target)
