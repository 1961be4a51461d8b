"""ND tensor manipulation layers (spec >= 4): shapes, slices, joins, gathers and scatters.

Every op works per sample: a Core ML axis ``a`` of a rank-``r`` blob is the
internal axis ``a % r + 1`` (the sample axis is in front, see
:mod:`harness.executors.ops.base`). Static shapes and indices baked into the
layer (``loadConstantND.shape``, ``sliceStatic`` ids, ``tile.reps``...) are
per-sample values, so a leading 1 that stands for the converted model's batch
dim stays 1 and nothing is patched to N. Values that arrive as blobs but fix a
shape (``reshapeDynamic``, ``fillDynamic``, ``rangeDynamic``...) must be the
same for every sample (:func:`~harness.executors.ops._ndutil.uniform`);
constants always are. Index blobs (gather/scatter) may differ per sample.

Layer semantics follow ``NeuralNetwork.proto`` (coremltools ``mlmodel/format``)
and, where the proto is terse, the MIL op it is converted from.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.executors.ops import _ndutil as u
from harness.executors.ops.base import F32, Op, broadcast_samples, constant, f32, rank
from harness.executors.registry import register


def _shape(op: Op, shape: Sequence[int], what: str) -> tuple[int, ...]:
    s = tuple(int(d) for d in shape)
    if not s or any(d <= 0 for d in s):
        raise op.error(f"{what} {list(s)} must be a non-empty list of positive sizes")
    return s


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


# ---------------------------------------------------------------------------
# Constants, shapes, fills, ranges
# ---------------------------------------------------------------------------

@register("loadConstantND")
class LoadConstantND(Op):
    """A constant of the per-sample ``shape`` (a sample axis of 1: it broadcasts against N)."""

    n_inputs = 0

    def build(self, params, ctx) -> None:
        shape = _shape(self, params.shape, "shape")
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
        self.out = np.full((1,) + _shape(self, params.targetShape, "targetShape"), F32(params.value), dtype=F32)

    def run(self):
        return self.out


@register("fillDynamic")
class FillDynamic(Op):
    """``value`` in the shape held by the input (a rank-1 tensor of sizes)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.value = F32(params.value)

    def run(self, shape):
        s = _shape(self, u.uniform_ints(self, shape, "the shape input"), "shape input")
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


# ---------------------------------------------------------------------------
# Reshapes
# ---------------------------------------------------------------------------

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
        self.target = _shape(self, params.targetShape, "targetShape")

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
        return _broadcast_to(self, x, _shape(self, u.uniform_ints(self, shape, "the target shape input"), "target shape"))


def _broadcast_to(op: Op, x: np.ndarray, target: Sequence[int]) -> np.ndarray:
    target = tuple(int(t) for t in target)
    if rank(x) > len(target):
        raise op.error(f"cannot broadcast a rank-{rank(x)} tensor to the lower-rank shape {list(target)}")
    x = x.reshape((x.shape[0],) + (1,) * (len(target) - rank(x)) + x.shape[1:])
    try:
        return np.array(np.broadcast_to(x, (x.shape[0],) + target))
    except ValueError:
        raise op.error(f"cannot broadcast per-sample shape {tuple(x.shape[1:])} to {list(target)}") from None


# ---------------------------------------------------------------------------
# Slices
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Gathers and scatters
# ---------------------------------------------------------------------------

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
        data, i, upd = broadcast_samples(f32(data), i, f32(upd))
        n, k = data.shape[0], i.shape[1]
        want = data.shape[1:a + 1] + (k,) + data.shape[a + 2:]
        if upd.shape[1:] != want:
            raise self.error(f"updates have per-sample shape {tuple(upd.shape[1:])}, expected {want} "
                             f"(container {tuple(data.shape[1:])}, {k} indices, axis {a})")
        out = np.array(data)
        om, um = np.moveaxis(out, a + 1, 1), np.moveaxis(upd, a + 1, 1)  # (N, D, ...), (N, K, ...)
        u.scatter_apply(om, (u.sample_index(n, 1), i), um, self.mode)
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
        out = np.array(data)
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
        out = np.array(data)
        where = (u.sample_index(data.shape[0], i.ndim - 2),) + tuple(i[..., k] for k in range(L))
        u.scatter_apply(out, where, upd, self.mode)
        return out


# ---------------------------------------------------------------------------
# Index-valued layers
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Triangular masks and cumulative sums
# ---------------------------------------------------------------------------

def _band(x: np.ndarray, lower: int, upper: int) -> np.ndarray:
    m, n = x.shape[-2:]
    d = np.arange(m)[:, None] - np.arange(n)[None, :]  # row - col
    keep = ((lower < 0) | (d <= lower)) & ((upper < 0) | (-d <= upper))
    return np.where(keep, x, F32(0)).astype(F32)


@register("matrixBandPart")
class MatrixBandPart(Op):
    """Keep the band ``-numLower <= col-row <= numUpper`` of the last two axes (negative: unbounded)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.lower, self.upper = int(params.numLower), int(params.numUpper)

    def run(self, x):
        if rank(x) < 2:
            raise self.error(f"needs rank >= 2, got {rank(x)}")
        return _band(x, self.lower, self.upper)


@register("lowerTriangular")
class LowerTriangular(Op):
    """Zero the entries above diagonal ``k`` of the last two axes."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.k = int(params.k)

    def run(self, x):
        if rank(x) < 2:
            raise self.error(f"needs rank >= 2, got {rank(x)}")
        return np.tril(x, self.k)


@register("upperTriangular")
class UpperTriangular(Op):
    """Zero the entries below diagonal ``k`` of the last two axes."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.k = int(params.k)

    def run(self, x):
        if rank(x) < 2:
            raise self.error(f"needs rank >= 2, got {rank(x)}")
        return np.triu(x, self.k)


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

