"""Joining, repeating and padding ND tensors (spec >= 4): ``concatND``, ``stack``, ``tile``,
``constantPad``.

Joins materialise the sample axis first (constants carry N = 1). Conventions (per-sample
axes and static shapes, values that must agree across the batch, float index blobs):
:mod:`harness.executors.ops._ndutil`.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops import _ndutil as u
from harness.executors.ops.base import F32, Op, broadcast_samples, f32, rank
from harness.executors.registry import register


@register("concatND")
class ConcatND(Op):
    """Concatenate along ``axis`` (``interleave``: x1[0], x2[0], x1[1], ...)."""

    n_inputs = (1, 1 << 30)

    def build(self, params, ctx) -> None:
        self.axis, self.interleave = int(params.axis), bool(params.interleave)

    def run(self, *xs):
        r = rank(xs[0])
        if any(rank(x) != r for x in xs):
            raise self.error(f"inputs have different ranks {[rank(x) for x in xs]}")
        a = u.norm_axis(self, self.axis, r) + 1
        xs = broadcast_samples(*[f32(x) for x in xs])
        if self.interleave:
            y = np.stack(xs, axis=a + 1)
            return y.reshape(y.shape[:a] + (-1,) + y.shape[a + 2:])
        return np.concatenate(xs, axis=a)


@register("stack")
class Stack(Op):
    """Stack equal-shaped inputs along a new ``axis`` (negative: counted in the output rank)."""

    n_inputs = (1, 1 << 30)

    def build(self, params, ctx) -> None:
        self.axis = int(params.axis)

    def run(self, *xs):
        a = u.norm_axis(self, self.axis, rank(xs[0]) + 1)
        return np.stack(broadcast_samples(*[f32(x) for x in xs]), axis=a + 1)


@register("tile")
class Tile(Op):
    """Repeat the per-sample tensor ``reps`` times along each axis (or reps from a second input)."""

    n_inputs = (1, 2)

    def build(self, params, ctx) -> None:
        self.reps = [int(r) for r in params.reps]

    def run(self, x, reps=None):
        reps = u.uniform_ints(self, reps, "the reps input") if reps is not None else self.reps
        if not reps or any(r <= 0 for r in reps):
            raise self.error(f"reps {reps} must be positive")
        if len(reps) < rank(x):
            reps = [1] * (rank(x) - len(reps)) + list(reps)
        x = x.reshape((x.shape[0],) + (1,) * (len(reps) - rank(x)) + x.shape[1:])
        return np.tile(x, (1,) + tuple(reps))


@register("constantPad")
class ConstantPad(Op):
    """Pad every axis with ``value``: ``padAmounts = [before_0, after_0, before_1, ...]`` (or input 2).

    With ``padToGivenOutputSizeMode`` a non-zero ``before_i`` (``after_i``) is
    the output size of axis i, reached by padding before (after) the values.
    """

    n_inputs = (1, 2)

    def build(self, params, ctx) -> None:
        self.value, self.to_size = F32(params.value), bool(params.padToGivenOutputSizeMode)
        self.amounts = [int(a) for a in params.padAmounts]

    def run(self, x, amounts=None):
        am = u.uniform_ints(self, amounts, "the pad amounts input") if amounts is not None else self.amounts
        r = rank(x)
        if len(am) != 2 * r or any(a < 0 for a in am):
            raise self.error(f"padAmounts {am} must hold 2 x rank = {2 * r} non-negative values")
        pads = [(0, 0)]
        for i in range(r):
            before, after = am[2 * i], am[2 * i + 1]
            if self.to_size:
                d = x.shape[i + 1]
                if before and after:
                    raise self.error(f"padToGivenOutputSizeMode: axis {i} sets both before ({before}) and after ({after})")
                if max(before, after) and max(before, after) < d:
                    raise self.error(f"padToGivenOutputSizeMode: output size {max(before, after)} of axis {i} is "
                                     f"smaller than the input's {d}")
                before, after = (before - d if before else 0), (after - d if after else 0)
            pads.append((before, after))
        return np.pad(f32(x), pads, mode="constant", constant_values=self.value)
