"""Peer translations of the ND layers (spec >= 4) the converter emits for transformers and text models:
reshapes and transposes, slices, joins, broadcastable arithmetic, comparisons, where, reductions,
unary math, gelu, softmaxND, embeddingND, loadConstantND and batchedMatmul."""
from __future__ import annotations

from functools import reduce

import torch
import torch.nn.functional as F

from harness.bench.torch_peer._common import align, ax, per_sample, samples, translates, unary, w


@translates("reshapeStatic")
def _reshape_static(layer, p, ins, outs):
    shape = tuple(int(s) for s in p.targetShape)
    return unary(ins, outs, lambda x: per_sample(x, shape))


@translates("flattenTo2D")
def _flatten_2d(layer, p, ins, outs):
    a = int(p.axis)

    def run(x):
        s = tuple(x.shape[1:])
        k = a + len(s) if a < 0 else a
        return x.reshape(x.shape[0], int(torch.tensor(s[:k]).prod()) if k else 1, -1)
    return unary(ins, outs, run)


@translates("transpose")
def _transpose(layer, p, ins, outs):
    axes = [int(a) + 1 for a in p.axes]
    return unary(ins, outs, lambda x: x.permute(0, *axes))


@translates("expandDims")
def _expand_dims(layer, p, ins, outs):
    axes = [int(a) for a in p.axes]

    def run(x):
        shape = list(x.shape[1:])
        r = len(shape) + len(axes)
        for a in sorted(a % r for a in axes):
            shape.insert(a, 1)
        return per_sample(x, shape)
    return unary(ins, outs, run)


@translates("squeeze")
def _squeeze(layer, p, ins, outs):
    axes, squeeze_all = [int(a) for a in p.axes], bool(p.squeezeAll)

    def run(x):
        s = tuple(x.shape[1:])
        drop = {i for i, d in enumerate(s) if d == 1} if squeeze_all else {a % len(s) for a in axes}
        return per_sample(x, tuple(d for i, d in enumerate(s) if i not in drop) or (1,))
    return unary(ins, outs, run)


@translates("sliceStatic")
def _slice_static(layer, p, ins, outs):
    begins, ends, strides = list(p.beginIds), list(p.endIds), list(p.strides)
    bmask, emask, smask = list(p.beginMasks), list(p.endMasks), list(p.squeezeMasks)
    if any(int(s) < 0 for s in strides):
        raise NotImplementedError("sliceStatic with a negative stride")

    def run(x):
        idx: list = [slice(None)]
        for a in range(len(begins)):
            st = int(strides[a]) if a < len(strides) and strides[a] else 1
            b = None if (a < len(bmask) and bmask[a]) else int(begins[a])
            e = None if (a < len(emask) and emask[a]) else int(ends[a])
            idx.append(slice(b, e, st))
        y = x[tuple(idx)]
        if any(smask):
            y = per_sample(y, tuple(d for i, d in enumerate(y.shape[1:]) if not (i < len(smask) and smask[i])) or (1,))
        return y
    return unary(ins, outs, run)


@translates("slice")
def _slice(layer, p, ins, outs):
    a = {0: -3, 1: -2, 2: -1}[int(p.axis)]
    sl = slice(int(p.startIndex), int(p.endIndex), int(p.stride) or 1)

    def run(x):
        idx = [slice(None)] * x.dim()
        idx[a] = sl
        return x[tuple(idx)]
    return unary(ins, outs, run)


@translates("splitND")
def _split_nd(layer, p, ins, outs):
    sizes, axis, src = [int(s) for s in p.splitSizes], int(p.axis), ins[0]

    def run(blobs):
        x = blobs[src]
        a = ax(axis, x)
        parts = torch.split(x, sizes or x.shape[a] // len(outs), dim=a)
        for n, y in zip(outs, parts):
            blobs[n] = y
    return run


@translates("concat", "concatND")
def _concat(layer, p, ins, outs):
    t, dst = layer.WhichOneof("layer"), outs[0]
    if t == "concatND" and p.interleave:
        raise NotImplementedError("concatND with interleave")

    def run(blobs):
        xs = samples(*[blobs[n] for n in ins])
        a = (-5 if p.sequenceConcat else -3) if t == "concat" else ax(int(p.axis), xs[0])
        blobs[dst] = torch.cat(xs, dim=a)
    return run


@translates("stack")
def _stack(layer, p, ins, outs):
    axis, dst = int(p.axis), outs[0]

    def run(blobs):
        xs = samples(*[blobs[n] for n in ins])
        blobs[dst] = torch.stack(xs, dim=(axis % xs[0].dim()) + 1)
    return run


def _floor_div(a, b):
    return torch.floor(a / b)


_BROADCASTABLE = {
    "addBroadcastable": torch.add, "subtractBroadcastable": torch.sub, "multiplyBroadcastable": torch.mul,
    "divideBroadcastable": torch.div, "maxBroadcastable": torch.maximum, "minBroadcastable": torch.minimum,
    "powBroadcastable": torch.pow, "floorDivBroadcastable": _floor_div,
}
_COMPARE = {"equal": torch.eq, "notEqual": torch.ne, "lessThan": torch.lt, "lessEqual": torch.le,
            "greaterThan": torch.gt, "greaterEqual": torch.ge}


@translates(*_BROADCASTABLE)
def _broadcastable(layer, p, ins, outs):
    op, dst = _BROADCASTABLE[layer.WhichOneof("layer")], outs[0]

    def run(blobs):
        blobs[dst] = reduce(op, align(*[blobs[n] for n in ins]))
    return run


@translates(*_COMPARE)
def _compare(layer, p, ins, outs):
    op, dst, alpha = _COMPARE[layer.WhichOneof("layer")], outs[0], float(p.alpha)

    def run(blobs):
        if len(ins) == 1:
            y = op(blobs[ins[0]], alpha)
        else:
            y = op(*align(blobs[ins[0]], blobs[ins[1]]))
        blobs[dst] = y.to(torch.float32)
    return run


@translates("whereBroadcastable")
def _where(layer, p, ins, outs):
    dst = outs[0]

    def run(blobs):
        c, a, b = align(*[blobs[n] for n in ins])
        blobs[dst] = torch.where(c != 0, a, b)
    return run


_REDUCE = {
    "reduceSum": lambda x, a, k: x.sum(dim=a, keepdim=k),
    "reduceMean": lambda x, a, k: x.mean(dim=a, keepdim=k),
    "reduceProd": lambda x, a, k: reduce(lambda y, d: y.prod(dim=d, keepdim=True), a, x) if k else
    reduce(lambda y, d: y.prod(dim=d, keepdim=True), a, x).squeeze(a),
    "reduceMax": lambda x, a, k: x.amax(dim=a, keepdim=k),
    "reduceMin": lambda x, a, k: x.amin(dim=a, keepdim=k),
    "reduceL1": lambda x, a, k: x.abs().sum(dim=a, keepdim=k),
    "reduceL2": lambda x, a, k: torch.sqrt((x * x).sum(dim=a, keepdim=k)),
    "reduceSumSquare": lambda x, a, k: (x * x).sum(dim=a, keepdim=k),
    "reduceLogSum": lambda x, a, k: torch.log(x.sum(dim=a, keepdim=k)),
    "reduceLogSumExp": lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k),
}


@translates(*_REDUCE)
def _reduce(layer, p, ins, outs):
    fn, axes, keep, every = _REDUCE[layer.WhichOneof("layer")], [int(a) for a in p.axes], bool(p.keepDims), bool(p.reduceAll)

    def run(x):
        r = x.dim() - 1
        dims = tuple(range(1, r + 1)) if every else tuple(sorted({a % r + 1 for a in axes}))
        y = fn(x, dims, keep)
        return y.reshape(-1, 1) if y.dim() == 1 else y
    return unary(ins, outs, run)


_UNARY_ND = {
    "ceil": torch.ceil, "floor": torch.floor, "round": torch.round, "sign": torch.sign, "exp2": torch.exp2,
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "asin": torch.asin, "acos": torch.acos,
    "atan": torch.atan, "sinh": torch.sinh, "cosh": torch.cosh, "tanh": torch.tanh, "asinh": torch.asinh,
    "acosh": torch.acosh, "atanh": torch.atanh, "erf": torch.erf,
}


@translates(*_UNARY_ND)
def _unary_nd(layer, p, ins, outs):
    return unary(ins, outs, _UNARY_ND[layer.WhichOneof("layer")])


@translates("unary")
def _unary(layer, p, ins, outs):
    kind = ("SQRT", "RSQRT", "INVERSE", "POWER", "EXP", "LOG", "ABS", "THRESHOLD")[int(p.type)]
    scale, shift, eps, alpha = float(p.scale or 1.0), float(p.shift), float(p.epsilon or 1e-6), float(p.alpha)
    fns = {"SQRT": torch.sqrt, "RSQRT": lambda x: torch.rsqrt(x + eps), "INVERSE": lambda x: 1.0 / (x + eps),
           "POWER": lambda x: torch.pow(x, alpha), "EXP": torch.exp, "LOG": torch.log, "ABS": torch.abs,
           "THRESHOLD": lambda x: torch.clamp_min(x, alpha)}
    fn = fns[kind]
    if scale != 1 or shift != 0:
        return unary(ins, outs, lambda x: fn(x * scale + shift))
    return unary(ins, outs, fn)


@translates("gelu")
def _gelu(layer, p, ins, outs):
    mode = int(p.mode)
    if mode == 0:
        return unary(ins, outs, F.gelu)
    if mode == 1:
        return unary(ins, outs, lambda x: F.gelu(x, approximate="tanh"))
    return unary(ins, outs, lambda x: x * torch.sigmoid(1.702 * x))


@translates("softmaxND")
def _softmax_nd(layer, p, ins, outs):
    a = int(p.axis)
    return unary(ins, outs, lambda x: torch.softmax(x, dim=ax(a, x)))


@translates("embeddingND")
def _embedding_nd(layer, p, ins, outs):
    vocab, size = int(p.vocabSize), int(p.embeddingSize)
    table = w(layer, "weights", (size, vocab)).T
    if p.hasBias:
        table = table + w(layer, "bias", (size,))
    table = table.contiguous()
    return unary(ins, outs, lambda x: F.embedding(x[..., 0].long(), table))


@translates("loadConstantND")
def _load_constant_nd(layer, p, ins, outs):
    shape = tuple(int(s) for s in p.shape)
    c, dst = w(layer, "data", shape).reshape((1,) + shape), outs[0]

    def run(blobs):
        blobs[dst] = c
    return run


@translates("batchedMatmul")
def _batched_matmul(layer, p, ins, outs):
    ta, tb = bool(p.transposeA), bool(p.transposeB)
    if len(ins) == 1:
        x1, x2 = int(p.weightMatrixFirstDimension), int(p.weightMatrixSecondDimension)
        wt = w(layer, "weights", (x2, x1))
        b = w(layer, "bias", (x2,)) if p.hasBias else None
        return unary(ins, outs, lambda x: F.linear(x, wt, b))
    dst = outs[0]

    def run(blobs):
        a, b = blobs[ins[0]], blobs[ins[1]]
        a_vec, b_vec = a.dim() == 2, b.dim() == 2
        a = a.unsqueeze(1) if a_vec else (a.transpose(-1, -2) if ta else a)
        b = b.unsqueeze(-1) if b_vec else (b.transpose(-1, -2) if tb else b)
        blobs[dst] = torch.matmul(*align(a, b))
    return run
