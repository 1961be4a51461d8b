"""Index-valued layers (spec >= 4): ``argMax``, ``argMin``, ``argSort``, ``topK``, ``oneHot``,
``whereNonZero``.

Indices are written as float32 blobs, as Core ML does. Conventions (per-sample axes and
static shapes, values that must agree across the batch, float index blobs):
:mod:`harness.executors.ops._ndutil`.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops import _ndutil as u
from harness.executors.ops.base import F32, Op, rank
from harness.executors.registry import register


class _ArgReduce(Op):
    n_inputs = 1
    fn = staticmethod(np.argmax)

    def build(self, params, ctx) -> None:
        self.axis, self.remove = int(params.axis), bool(params.removeDim)

    def run(self, x):
        a = u.norm_axis(self, self.axis, rank(x)) + 1
        y = self.fn(x, axis=a).astype(F32)
        if not self.remove or rank(x) == 1:
            y = np.expand_dims(y, a)
        return y


@register("argMax")
class ArgMax(_ArgReduce):
    """Index of the maximum along ``axis`` (first one on ties); ``removeDim`` drops the axis."""

    fn = staticmethod(np.argmax)


@register("argMin")
class ArgMin(_ArgReduce):
    """Index of the minimum along ``axis`` (first one on ties); ``removeDim`` drops the axis."""

    fn = staticmethod(np.argmin)


@register("argSort")
class ArgSort(Op):
    """Indices that sort along ``axis`` (ascending, or ``descending``; stable)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.axis, self.desc = int(params.axis), bool(params.descending)

    def run(self, x):
        a = u.norm_axis(self, self.axis, rank(x)) + 1
        return np.argsort(-x if self.desc else x, axis=a, kind="stable").astype(F32)


@register("topK")
class TopK(Op):
    """The K largest (``useBottomK``: smallest) values along ``axis``, sorted, and their indices."""

    n_inputs = (1, 2)
    n_outputs = (1, 2)

    def build(self, params, ctx) -> None:
        self.axis, self.k, self.bottom = int(params.axis), int(params.K), bool(params.useBottomK)

    def run(self, x, k=None):
        a = u.norm_axis(self, self.axis, rank(x)) + 1
        kk = int(u.uniform_scalar(self, k, "K")) if k is not None else self.k
        if not 0 < kk <= x.shape[a]:
            raise self.error(f"K={kk} is out of range for an axis of length {x.shape[a]}")
        order = np.argsort(x if self.bottom else -x, axis=a, kind="stable")
        idx = np.take(order, np.arange(kk), axis=a)
        vals = np.take_along_axis(x, idx, axis=a)
        return (vals, idx.astype(F32)) if len(self.outputs) == 2 else vals


@register("oneHot")
class OneHot(Op):
    """One-hot vectors (``onValue``/``offValue``) of length ``oneHotVectorSize`` (or input 2) inserted at ``axis``."""

    n_inputs = (1, 2)

    def build(self, params, ctx) -> None:
        self.depth, self.axis = int(params.oneHotVectorSize), int(params.axis)
        self.on, self.off = F32(params.onValue), F32(params.offValue)

    def run(self, idx, depth=None):
        d = int(u.uniform_scalar(self, depth, "oneHotVectorSize")) if depth is not None else self.depth
        if d <= 0:
            raise self.error(f"oneHotVectorSize {d} must be positive")
        a = u.norm_axis(self, self.axis, rank(idx) + 1) + 1
        i = np.rint(idx).astype(np.int64)
        i = np.where(i < 0, i + d, i)  # out-of-range ids give all-off vectors
        hot = np.expand_dims(i, a) == np.arange(d).reshape((d,) + (1,) * (idx.ndim - a))
        return np.where(hot, self.on, self.off).astype(F32)


@register("whereNonZero")
class WhereNonZero(Op):
    """Coordinates ``(count, rank)`` of the non-zero entries (every sample must have the same count)."""

    n_inputs = 1

    def run(self, x):
        nz = np.argwhere(x != 0)  # (total, 1 + rank), sorted by sample
        counts = np.bincount(nz[:, 0], minlength=x.shape[0])
        if np.any(counts != counts[0]):
            raise self.error(f"the samples have different numbers of non-zero entries ({counts.tolist()}); "
                             "the output shape would differ per sample: run them one at a time")
        if counts[0] == 0:
            raise self.error("the input has no non-zero entry (the output would be empty)")
        return nz[:, 1:].reshape(x.shape[0], counts[0], rank(x)).astype(F32)
