"""Data reorganisation (legacy layers): flatten, reshape, permute, concat, split,
padding, crop, sequenceRepeat. (flattenTo2D is in reshape_nd.py, tile in join_nd.py.)

Shapes in params are per sample (see :mod:`harness.executors.ops.base`); the
sample axis is kept in front.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops.base import F32, Op, axis, broadcast_samples, f32, rank
from harness.executors.ops.conv import pad_hw
from harness.executors.registry import register


def _need(op: Op, x: np.ndarray, r: int, what: str = "") -> None:
    if rank(x) < r:
        raise op.error(f"needs an input of rank >= {r}{what}; got Core ML shape {tuple(x.shape[1:])}")


@register("flatten")
class Flatten(Op):
    """``(..., C, H, W) -> (..., C*H*W, 1, 1)``; CHANNEL_LAST flattens in (H, W, C) order."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.channel_last = int(params.mode) == 1

    def run(self, x):
        _need(self, x, 3, " (C, H, W)")
        if self.channel_last:
            x = np.swapaxes(np.swapaxes(x, -3, -2), -2, -1)  # (..., H, W, C)
        return x.reshape(x.shape[:-3] + (-1, 1, 1))


@register("reshape")
class Reshape(Op):
    """Legacy rank-5 reshape: ``targetShape`` (C, H, W) or (Seq, C, H, W); CHANNEL_FIRST or CHANNEL_LAST."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.target = tuple(int(v) for v in params.targetShape)
        if len(self.target) not in (3, 4):
            raise self.error(f"targetShape {list(self.target)} must be (C, H, W) or (Seq, C, H, W)")
        self.channel_last = int(params.mode) == 1

    def run(self, x):
        if rank(x) != 5:
            raise self.error(f"needs a rank-5 (Seq, B, C, H, W) input; got Core ML shape {tuple(x.shape[1:])}")
        n, s, b = x.shape[:3]
        if self.channel_last:
            x = x.transpose(0, 1, 2, 4, 5, 3)  # (.., H, W, C)
        flat = x.reshape(n, s, b, -1)
        if len(self.target) == 3:
            c, h, w = self.target
            s_out = s
        else:
            s_out, c, h, w = self.target
            if s_out == -1:
                s_out = flat[0].size // (b * abs(c * h * w))
            flat = flat.transpose(0, 2, 1, 3).reshape(n, b, -1)  # merge seq into the features
            flat = flat.reshape(n, b, s_out, -1).transpose(0, 2, 1, 3)
        if self.channel_last:
            y = flat.reshape(n, s_out, b, h, w, c).transpose(0, 1, 2, 5, 3, 4)
        else:
            y = flat.reshape(n, s_out, b, c, h, w)
        return y


@register("permute")
class Permute(Op):
    """Legacy rank-5 permute: ``axis`` permutes (Seq, C, H, W); Batch (axis 1) stays."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        a = [int(v) for v in params.axis] or [0, 1, 2, 3]
        if sorted(a) != [0, 1, 2, 3]:
            raise self.error(f"axis {a} must be a permutation of [0, 1, 2, 3]")
        five = [0, 2, 3, 4]  # (Seq, C, H, W) positions in (Seq, B, C, H, W)
        self.perm = (0,) + tuple(p + 1 for p in [five[a[0]], 1, five[a[1]], five[a[2]], five[a[3]]])

    def run(self, x):
        if rank(x) != 5:
            raise self.error(f"needs a rank-5 (Seq, B, C, H, W) input; got Core ML shape {tuple(x.shape[1:])}")
        return np.ascontiguousarray(x.transpose(self.perm))


@register("concat")
class Concat(Op):
    """Concatenate along axis -3 (C), or -5 (Seq) with ``sequenceConcat``."""

    n_inputs = (1, 1 << 30)

    def build(self, params, ctx) -> None:
        self.ax = -5 if params.sequenceConcat else -3

    def run(self, *xs):
        for x in xs:
            _need(self, x, -self.ax)
        if len({x.ndim for x in xs}) > 1:
            raise self.error(f"inputs have different ranks: {[tuple(x.shape[1:]) for x in xs]}")
        return np.concatenate(broadcast_samples(*[f32(x) for x in xs]), axis=self.ax)


@register("split")
class Split(Op):
    """Split axis -3 (C) into ``nOutputs`` equal parts."""

    n_outputs = (1, 1 << 30)
    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.n = int(params.nOutputs) or len(self.outputs)
        if self.n != len(self.outputs):
            raise self.error(f"nOutputs={self.n} but the layer names {len(self.outputs)} outputs")

    def run(self, x):
        _need(self, x, 3)
        if x.shape[-3] % self.n:
            raise self.error(f"{x.shape[-3]} channels cannot be split into {self.n} equal parts")
        return tuple(np.split(x, self.n, axis=-3))


@register("padding")
class Padding(Op):
    """Pad the last two axes: constant (value), reflection or replication."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        b = params.paddingAmounts.borderAmounts
        if len(b) not in (0, 2):
            raise self.error(f"paddingAmounts must have 2 entries [H, W], got {len(b)}")
        self.pads = (0, 0, 0, 0) if not len(b) else (
            int(b[0].startEdgeSize), int(b[0].endEdgeSize), int(b[1].startEdgeSize), int(b[1].endEdgeSize))
        self.mode = params.WhichOneof("PaddingType") or "constant"
        self.value = F32(params.constant.value) if self.mode == "constant" else F32(0)

    def run(self, x):
        _need(self, x, 2)
        pt, pb, pl, pr = self.pads
        if self.mode == "constant":
            return pad_hw(f32(x), pt, pb, pl, pr, float(self.value))
        h, w = x.shape[-2:]
        if self.mode == "reflection" and (max(pt, pb) >= h or max(pl, pr) >= w):
            raise self.error(f"reflection padding {self.pads} needs amounts smaller than the input {h}x{w}")
        widths = [(0, 0)] * (x.ndim - 2) + [(pt, pb), (pl, pr)]
        return np.pad(f32(x), widths, mode="reflect" if self.mode == "reflection" else "edge")


@register("crop")
class Crop(Op):
    """Crop the last two axes by ``cropAmounts`` (1 input) or to the second input's H, W at ``offset``."""

    n_inputs = (1, 2)

    def build(self, params, ctx) -> None:
        b = params.cropAmounts.borderAmounts
        self.amounts = None if not len(b) else (
            int(b[0].startEdgeSize), int(b[0].endEdgeSize), int(b[1].startEdgeSize), int(b[1].endEdgeSize))
        self.offset = tuple(int(v) for v in params.offset) or (0, 0)

    def run(self, x, ref=None):
        _need(self, x, 3)
        h, w = x.shape[-2:]
        if ref is not None:
            oh, ow = ref.shape[-2:]
            t, l = self.offset
            if t + oh > h or l + ow > w:
                raise self.error(f"offset {self.offset} + reference size {oh}x{ow} exceeds the input {h}x{w}")
            return x[..., t: t + oh, l: l + ow]
        t, b, l, r = self.amounts or (0, 0, 0, 0)
        if t + b >= h or l + r >= w:
            raise self.error(f"crop amounts {self.amounts} leave nothing of the input {h}x{w}")
        return x[..., t: h - b, l: w - r]


@register("sequenceRepeat")
class SequenceRepeat(Op):
    """Repeat the whole sequence (axis -5) ``nRepetitions`` times."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.n = int(params.nRepetitions) or 1

    def run(self, x):
        _need(self, x, 5)
        reps = [1] * x.ndim
        reps[x.ndim - 5] = self.n
        return np.tile(x, reps)
