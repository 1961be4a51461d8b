"""ND reshapes and broadcasts (spec >= 4): ``reshapeStatic`` / ``reshapeLike`` / ``reshapeDynamic``,
``rankPreservingReshape``, ``flattenTo2D``, ``expandDims``, ``squeeze``, ``transpose``,
``broadcastToStatic`` / ``broadcastToLike`` / ``broadcastToDynamic``.

Target shapes are per-sample shapes: a leading 1 (the converted model's batch dim) stays
1. Conventions (per-sample axes and static shapes, values that must agree across the
batch, float index blobs): :mod:`harness.executors.ops._ndutil`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.executors.ops import _ndutil as u
from harness.executors.ops.base import Op, rank
from harness.executors.registry import register


def _reshape(op: Op, x: np.ndarray, target: Sequence[int], keep_zero: bool = False) -> np.ndarray:
    """Reshape the per-sample part of ``x`` to ``target`` (one -1 allowed; 0 keeps the input dim if ``keep_zero``)."""
    t = [int(s) for s in target]
    if keep_zero:
        if len(t) != rank(x):
            raise op.error(f"targetShape {t} must have the input's rank {rank(x)}")
        t = [x.shape[i + 1] if s == 0 else s for i, s in enumerate(t)]
    if sum(1 for s in t if s == -1) > 1 or any(s == 0 or s < -1 for s in t):
        raise op.error(f"target shape {list(target)} is invalid (positive sizes, at most one -1)")
    per = int(np.prod(x.shape[1:], dtype=np.int64))
    known = int(np.prod([s for s in t if s != -1], dtype=np.int64))
    if (-1 in t and (known == 0 or per % known)) or (-1 not in t and per != known):
        raise op.error(f"cannot reshape a per-sample tensor of shape {tuple(x.shape[1:])} to {list(target)}")
    return x.reshape((x.shape[0],) + tuple(t))


@register("reshapeStatic")
class ReshapeStatic(Op):
    """Reshape to the per-sample ``targetShape`` (its leading 1 is the model's batch dim, kept)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.target = tuple(int(s) for s in params.targetShape)
        if sum(1 for s in self.target if s == -1) > 1 or any(s == 0 or s < -1 for s in self.target):
            raise self.error(f"targetShape {list(self.target)} is invalid (at most one -1, no zeros)")

    def run(self, x):
        try:  # the target was checked at build time; numpy checks the element count
            return x.reshape((x.shape[0],) + self.target)
        except ValueError:
            return _reshape(self, x, self.target)  # raises the error naming the shapes


@register("reshapeLike")
class ReshapeLike(Op):
    """Reshape the first input to the per-sample shape of the second."""

    n_inputs = 2

    def run(self, x, ref):
        return _reshape(self, x, ref.shape[1:])


@register("reshapeDynamic")
class ReshapeDynamic(Op):
    """Reshape to the shape held by the second input (the same for every sample)."""

    n_inputs = 2

    def run(self, x, shape):
        return _reshape(self, x, u.uniform_ints(self, shape, "the target shape input"))


@register("rankPreservingReshape")
class RankPreservingReshape(Op):
    """Reshape keeping the rank: 0 keeps the input dim, one -1 is inferred."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.target = [int(s) for s in params.targetShape]

    def run(self, x):
        return _reshape(self, x, self.target, keep_zero=True)


@register("flattenTo2D")
class FlattenTo2D(Op):
    """``(prod(shape[:axis]), prod(shape[axis:]))`` per sample."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.axis = int(params.axis)

    def run(self, x):
        r = rank(x)
        if not -r <= self.axis <= r:
            raise self.error(f"axis {self.axis} is out of range for a rank-{r} tensor")
        a = self.axis + r if self.axis < 0 else self.axis
        s = x.shape[1:]
        return x.reshape(x.shape[0], int(np.prod(s[:a], dtype=np.int64)), int(np.prod(s[a:], dtype=np.int64)))


@register("expandDims")
class ExpandDims(Op):
    """Insert size-1 dims at ``axes`` (negative axes count from the end of the output)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.axes = [int(a) for a in params.axes]
        if not self.axes:
            raise self.error("axes is empty")

    def run(self, x):
        out_rank = rank(x) + len(self.axes)
        axes = sorted(u.norm_axis(self, a, out_rank, "axes value") for a in self.axes)
        if len(set(axes)) != len(axes):
            raise self.error(f"axes {self.axes} repeat an axis")
        return x.reshape((x.shape[0],) + u.expand_shape(x.shape[1:], axes))


@register("squeeze")
class Squeeze(Op):
    """Remove size-1 dims at ``axes`` (or all of them with ``squeezeAll``); a rank-1 result never drops below rank 1."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.axes = [int(a) for a in params.axes]
        self.all = bool(params.squeezeAll)
        if not self.all and not self.axes:
            raise self.error("axes is empty and squeezeAll is false")

    def run(self, x):
        s = x.shape[1:]
        if self.all:
            drop = {i for i, d in enumerate(s) if d == 1}
        else:
            drop = {u.norm_axis(self, a, len(s), "axes value") for a in self.axes}
            big = [a for a in sorted(drop) if s[a] != 1]
            if big:
                raise self.error(f"cannot squeeze axes {big} of a per-sample tensor of shape {tuple(s)} (size is not 1)")
        out = tuple(d for i, d in enumerate(s) if i not in drop) or (1,)
        return x.reshape((x.shape[0],) + out)


@register("transpose")
class Transpose(Op):
    """Permute the per-sample axes by ``axes``."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.axes = [int(a) for a in params.axes]
        if sorted(self.axes) != list(range(len(self.axes))):
            raise self.error(f"axes {self.axes} is not a permutation of 0..{len(self.axes) - 1}")

    def run(self, x):
        if len(self.axes) != rank(x):
            raise self.error(f"axes {self.axes} has {len(self.axes)} entries but the input has rank {rank(x)}")
        return x.transpose([0] + [a + 1 for a in self.axes])


@register("broadcastToStatic")
class BroadcastToStatic(Op):
    """Broadcast (numpy rules, right-aligned) to the per-sample ``targetShape``."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.target = u.positive_shape(self, params.targetShape, "targetShape")

    def run(self, x):
        return _broadcast_to(self, x, self.target)


@register("broadcastToLike")
class BroadcastToLike(Op):
    """Broadcast the first input to the per-sample shape of the second."""

    n_inputs = 2

    def run(self, x, ref):
        return _broadcast_to(self, x, ref.shape[1:])


@register("broadcastToDynamic")
class BroadcastToDynamic(Op):
    """Broadcast the first input to the shape held by the second."""

    n_inputs = 2

    def run(self, x, shape):
        return _broadcast_to(self, x, u.positive_shape(self, u.uniform_ints(self, shape, "the target shape input"), "target shape"))


def _broadcast_to(op: Op, x: np.ndarray, target: Sequence[int]) -> np.ndarray:
    target = tuple(int(t) for t in target)
    if rank(x) > len(target):
        raise op.error(f"cannot broadcast a rank-{rank(x)} tensor to the lower-rank shape {list(target)}")
    x = x.reshape((x.shape[0],) + (1,) * (len(target) - rank(x)) + x.shape[1:])
    try:
        return u.c_copy(np.broadcast_to(x, (x.shape[0],) + target))
    except ValueError:
        raise op.error(f"cannot broadcast per-sample shape {tuple(x.shape[1:])} to {list(target)}") from None
