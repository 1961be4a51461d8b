"""Gathers and scatters (spec >= 4): ``gather``, ``gatherAlongAxis``, ``gatherND``, ``scatter``,
``scatterAlongAxis``, ``scatterND``.

Index blobs may differ per sample; float indices are rounded, negative ones wrapped once
and out-of-range ones rejected (:func:`~harness.executors.ops._ndutil.indices`). Scatter
modes (UPDATE, ADD, ...) accumulate repeated indices. Conventions (per-sample axes and
static shapes, values that must agree across the batch, float index blobs):
:mod:`harness.executors.ops._ndutil`.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops import _ndutil as u
from harness.executors.ops.base import Op, broadcast_samples, f32, rank
from harness.executors.registry import register


@register("gather")
class Gather(Op):
    """``out = take(data, indices, axis)``: shape data[:axis] + indices + data[axis+1:]; indices may differ per sample."""

    n_inputs = 2

    def build(self, params, ctx) -> None:
        self.axis = int(params.axis)

    def run(self, data, idx):
        a = u.norm_axis(self, self.axis, rank(data))
        return u.gather(f32(data), u.indices(self, idx, data.shape[a + 1]), a)


@register("gatherAlongAxis")
class GatherAlongAxis(Op):
    """``take_along_axis(data, indices, axis)`` (indices of the same rank as data)."""

    n_inputs = 2

    def build(self, params, ctx) -> None:
        self.axis = int(params.axis)

    def run(self, data, idx):
        if rank(idx) != rank(data):
            raise self.error(f"indices have rank {rank(idx)}, data rank {rank(data)}; they must match")
        a = u.norm_axis(self, self.axis, rank(data)) + 1
        i = u.indices(self, idx, data.shape[a])
        data, i = broadcast_samples(f32(data), i)
        return np.take_along_axis(data, i, axis=a)


@register("gatherND")
class GatherND(Op):
    """``out[i...] = data[indices[i..., :]]``: shape indices[:-1] + data[L:] (L = indices.shape[-1])."""

    n_inputs = 2

    def run(self, data, idx):
        L = idx.shape[-1]
        if L > rank(data):
            raise self.error(f"indices address {L} axes of a rank-{rank(data)} tensor")
        data, idx = broadcast_samples(f32(data), idx)
        dims = np.asarray(data.shape[1:1 + L])
        i = u.indices(self, idx, dims, "indices")
        n = data.shape[0]
        where = (u.sample_index(n, i.ndim - 2),) + tuple(i[..., k] for k in range(L))
        return data[where]


@register("scatter")
class Scatter(Op):
    """Copy of the container with slices along ``axis`` at ``indices`` replaced/accumulated (``mode``)."""

    n_inputs = 3

    def build(self, params, ctx) -> None:
        self.axis, self.mode = int(params.axis), u.scatter_mode(self, params.mode)

    def run(self, data, idx, upd):
        r = rank(data)
        a = u.norm_axis(self, self.axis, r)
        i = u.indices(self, idx.reshape(idx.shape[0], -1), data.shape[a + 1])  # (Ni, K)
        k = i.shape[1]
        want = data.shape[1:a + 1] + (k,) + data.shape[a + 2:]
        if upd.shape[1:] != want:
            raise self.error(f"updates have per-sample shape {tuple(upd.shape[1:])}, expected {want} "
                             f"(container {tuple(data.shape[1:])}, {k} indices, axis {a})")
        unique = k == 1 or not np.any(np.diff(np.sort(i, axis=1), axis=1) == 0)
        if i.shape[0] == 1:  # the same indices for every sample (a loop counter): one index along the axis
            data, upd = broadcast_samples(f32(data), f32(upd))
            out = u.c_copy(data)
            u.scatter_apply(out, (slice(None),) * (a + 1) + (i[0],), upd, self.mode, unique=unique)
            return out
        data, i, upd = broadcast_samples(f32(data), i, f32(upd))
        out = u.c_copy(data)
        om, um = np.moveaxis(out, a + 1, 1), np.moveaxis(upd, a + 1, 1)  # (N, D, ...), (N, K, ...)
        u.scatter_apply(om, (u.sample_index(data.shape[0], 1), i), um, self.mode, unique=unique)
        return out


@register("scatterAlongAxis")
class ScatterAlongAxis(Op):
    """Inverse of gatherAlongAxis: ``out[.., idx[j], ..] (op)= updates[.., j, ..]`` along ``axis``."""

    n_inputs = 3

    def build(self, params, ctx) -> None:
        self.axis, self.mode = int(params.axis), u.scatter_mode(self, params.mode)

    def run(self, data, idx, upd):
        a = u.norm_axis(self, self.axis, rank(data)) + 1
        i = u.indices(self, idx, data.shape[a])
        data, i, upd = broadcast_samples(f32(data), i, f32(upd))
        if i.shape != upd.shape or i.ndim != data.ndim:
            raise self.error(f"indices {tuple(i.shape[1:])} and updates {tuple(upd.shape[1:])} must have the same shape and the data's rank")
        grid = list(np.indices(i.shape, sparse=True))
        grid[a] = i
        out = u.c_copy(data)
        u.scatter_apply(out, tuple(grid), upd, self.mode)
        return out


@register("scatterND")
class ScatterND(Op):
    """``out[indices[i..., :]] (op)= updates[i...]``: updates shape indices[:-1] + data[L:]."""

    n_inputs = 3

    def build(self, params, ctx) -> None:
        self.mode = u.scatter_mode(self, params.mode)

    def run(self, data, idx, upd):
        L = idx.shape[-1]
        if L > rank(data):
            raise self.error(f"indices address {L} axes of a rank-{rank(data)} tensor")
        data, idx, upd = broadcast_samples(f32(data), idx, f32(upd))
        want = idx.shape[1:-1] + data.shape[1 + L:]
        if upd.shape[1:] != want:
            raise self.error(f"updates have per-sample shape {tuple(upd.shape[1:])}, expected {want}")
        i = u.indices(self, idx, np.asarray(data.shape[1:1 + L]), "indices")
        out = u.c_copy(data)
        where = (u.sample_index(data.shape[0], i.ndim - 2),) + tuple(i[..., k] for k in range(L))
        u.scatter_apply(out, where, upd, self.mode)
        return out
