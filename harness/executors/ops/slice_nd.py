"""Slices, splits, reversals and sliding windows: ``slice`` (legacy, one of C/H/W),
``sliceStatic`` / ``sliceDynamic`` / ``sliceBySize``, ``splitND``, ``reverse``, ``reverseSeq``,
``slidingWindows``.

Conventions (per-sample axes and static shapes, values that must agree across the batch,
float index blobs): :mod:`harness.executors.ops._ndutil`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.executors.ops import _ndutil as u
from harness.executors.ops.base import Op, broadcast_samples, rank
from harness.executors.registry import register


def _slices(op: Op, x: np.ndarray, begin, end, strides, bmask, emask) -> tuple[slice, ...]:
    r = rank(x)
    for what, v in (("beginIds", begin), ("endIds", end), ("strides", strides)):
        if len(v) != r:
            raise op.error(f"{what} has {len(v)} entries but the input has rank {r}")
    sl = []
    for i in range(r):
        st = int(strides[i]) if strides[i] else 1
        b = None if (i < len(bmask) and bmask[i]) else int(begin[i])
        e = None if (i < len(emask) and emask[i]) else int(end[i])
        sl.append(slice(b, e, st))
    return tuple(sl)


def _slice(op: Op, x: np.ndarray, sl: tuple[slice, ...], squeeze: Sequence[bool]) -> np.ndarray:
    y = x[(slice(None),) + sl]
    if any(d == 0 for d in y.shape[1:]):
        raise op.error(f"slice {sl} of a per-sample tensor of shape {tuple(x.shape[1:])} is empty")
    if any(squeeze):
        sq = [i for i, s in enumerate(squeeze) if s]
        if any(y.shape[i + 1] != 1 for i in sq):
            raise op.error(f"squeezeMasks select axes {sq} whose sliced size is not 1 (shape {tuple(y.shape[1:])})")
        out = tuple(d for i, d in enumerate(y.shape[1:]) if i not in sq) or (1,)
        y = y.reshape((y.shape[0],) + out)
    return y


@register("slice")
class Slice(Op):
    """Legacy slice ``x[start:end:stride]`` on axis -3 (CHANNEL), -2 (HEIGHT) or -1 (WIDTH).

    The converter emits it for a ``slice_by_index`` that cuts one of those
    axes (e.g. the GRU loop's output buffer). Indices follow Python/numpy
    (negative ones count from the end; ``end`` is exclusive).
    """

    n_inputs = 1
    AXES = {0: -3, 1: -2, 2: -1}

    def build(self, params, ctx) -> None:
        if int(params.axis) not in self.AXES:
            raise self.error(f"axis {params.axis} is not CHANNEL (0), HEIGHT (1) or WIDTH (2)")
        self.axis = self.AXES[int(params.axis)]
        self.sl = slice(int(params.startIndex), int(params.endIndex), int(params.stride) or 1)
        if self.sl.step < 0:
            raise self.error(f"stride {params.stride} must be positive")

    def run(self, x):
        if rank(x) < -self.axis:
            raise self.error(f"slicing axis {self.axis} needs an input of rank >= {-self.axis}, got rank {rank(x)}")
        idx = [slice(None)] * x.ndim
        idx[self.axis] = self.sl
        y = x[tuple(idx)]
        if y.shape[self.axis] == 0:
            raise self.error(f"slice {self.sl.start}:{self.sl.stop}:{self.sl.step} of an axis of length "
                             f"{x.shape[self.axis]} is empty")
        return y


@register("sliceStatic")
class SliceStatic(Op):
    """``x[begin:end:stride]`` on every axis (masks select the full range; squeezeMasks drop axes)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        p = params
        self.begin, self.end, self.strides = list(p.beginIds), list(p.endIds), list(p.strides) or [1] * len(p.beginIds)
        self.bmask, self.emask, self.squeeze = list(p.beginMasks), list(p.endMasks), list(p.squeezeMasks)
        if any(s == 0 for s in self.strides):
            raise self.error("a stride is 0")

    def run(self, x):
        sl = _slices(self, x, self.begin, self.end, self.strides, self.bmask, self.emask)
        return _slice(self, x, sl, self.squeeze)


@register("sliceDynamic")
class SliceDynamic(Op):
    """sliceStatic whose begin (and optionally end, strides) ids come from inputs 2, 3, 4."""

    n_inputs = (2, 4)

    def build(self, params, ctx) -> None:
        p = params
        self.end, self.strides = list(p.endIds), list(p.strides)
        self.bmask, self.emask, self.squeeze = list(p.beginMasks), list(p.endMasks), list(p.squeezeMasks)

    def run(self, x, begin, end=None, strides=None):
        r = rank(x)
        b = u.uniform_ints(self, begin, "the begin ids input")
        e = u.uniform_ints(self, end, "the end ids input") if end is not None else (self.end or list(x.shape[1:]))
        s = u.uniform_ints(self, strides, "the strides input") if strides is not None else (self.strides or [1] * r)
        if any(v == 0 for v in s):
            raise self.error("a stride is 0")
        return _slice(self, x, _slices(self, x, b, e, s, self.bmask, self.emask), self.squeeze)


@register("sliceBySize")
class SliceBySize(Op):
    """``x[..., begin:begin+size, ...]`` on ``axis``; begin is the second input (may differ per sample)."""

    n_inputs = 2

    def build(self, params, ctx) -> None:
        self.size, self.axis = int(params.size), int(params.axis)
        if self.size <= 0:
            raise self.error(f"size {self.size} must be positive")

    def run(self, x, begin):
        a = u.norm_axis(self, self.axis, rank(x))
        d = x.shape[a + 1]
        b = u.indices(self, begin.reshape(begin.shape[0], -1)[:, :1], d, "begin")  # (Nb, 1)
        if np.any(b + self.size > d):
            raise self.error(f"begin + size {self.size} exceeds the axis length {d}")
        return u.gather(x, b + np.arange(self.size), a)


@register("splitND")
class SplitND(Op):
    """Split along ``axis`` into ``splitSizes`` or ``numSplits`` equal parts (one per output)."""

    n_inputs = 1
    n_outputs = (1, 1 << 30)

    def build(self, params, ctx) -> None:
        self.axis = int(params.axis)
        self.sizes = [int(s) for s in params.splitSizes]
        if self.sizes and len(self.sizes) != len(self.outputs):
            raise self.error(f"splitSizes has {len(self.sizes)} entries for {len(self.outputs)} outputs")

    def run(self, x):
        a = u.norm_axis(self, self.axis, rank(x))
        d = x.shape[a + 1]
        sizes = self.sizes or ([d // len(self.outputs)] * len(self.outputs) if d % len(self.outputs) == 0 else None)
        if sizes is None or sum(sizes) != d:
            raise self.error(f"cannot split an axis of length {d} into {self.sizes or len(self.outputs)} parts")
        return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=a + 1))


@register("reverse")
class Reverse(Op):
    """Reverse every axis whose ``reverseDim`` is true."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.dims = [bool(d) for d in params.reverseDim]

    def run(self, x):
        if len(self.dims) != rank(x):
            raise self.error(f"reverseDim has {len(self.dims)} entries but the input has rank {rank(x)}")
        axes = tuple(i + 1 for i, d in enumerate(self.dims) if d)
        return np.flip(x, axis=axes) if axes else x


@register("reverseSeq")
class ReverseSeq(Op):
    """Reverse the first ``lengths[b]`` entries along ``sequenceAxis`` for each index b of ``batchAxis``."""

    n_inputs = 2

    def build(self, params, ctx) -> None:
        self.batch_axis, self.seq_axis = int(params.batchAxis), int(params.sequenceAxis)

    def run(self, x, lengths):
        r = rank(x)
        ba, sa = u.norm_axis(self, self.batch_axis, r), u.norm_axis(self, self.seq_axis, r)
        nb, ns = x.shape[ba + 1], x.shape[sa + 1]
        ln = np.rint(lengths.reshape(lengths.shape[0], -1)).astype(np.int64)  # (Nl, B)
        if ln.shape[1] != nb or np.any(ln < 0) or np.any(ln > ns):
            raise self.error(f"lengths {lengths.shape[1:]} must hold {nb} values in 0..{ns}")
        s = np.arange(ns)
        src = np.where(s[None, None, :] < ln[:, :, None], ln[:, :, None] - 1 - s[None, None, :], s[None, None, :])  # (Nl, B, S)
        shape = [src.shape[0]] + [1] * r
        shape[ba + 1], shape[sa + 1] = nb, ns
        order = (0, 1, 2) if ba < sa else (0, 2, 1)
        idx = src.transpose(order).reshape(shape)
        x, idx = broadcast_samples(x, idx)
        idx = np.broadcast_to(idx, x.shape)
        return np.take_along_axis(x, idx, axis=sa + 1)


@register("slidingWindows")
class SlidingWindows(Op):
    """Windows of ``windowSize`` every ``step`` along ``axis``: ``(.., L, ..) -> (.., M, W, ..)``."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.axis, self.w, self.step = int(params.axis), int(params.windowSize), int(params.step) or 1

    def run(self, x):
        a = u.norm_axis(self, self.axis, rank(x)) + 1
        if not 0 < self.w <= x.shape[a]:
            raise self.error(f"windowSize {self.w} does not fit an axis of length {x.shape[a]}")
        v = np.lib.stride_tricks.sliding_window_view(x, self.w, axis=a)  # (..., L-W+1, ..., W)
        v = np.take(v, np.arange(0, x.shape[a] - self.w + 1, self.step), axis=a)
        return np.ascontiguousarray(np.moveaxis(v, -1, a + 1))
