"""Peer translations of the classic layers: innerProduct, convolution, pooling, activation, clip,
batchnorm, legacy elementwise (add, multiply, average, max, min), softmax, flatten, scale, bias."""
from __future__ import annotations

from functools import reduce
from typing import Callable


import torch
import torch.nn.functional as F

from harness.bench.torch_peer._common import align, translates, unary, w


def _pads(valid) -> tuple[int, int, int, int]:
    b = valid.paddingAmounts.borderAmounts
    if not len(b):
        return 0, 0, 0, 0
    return int(b[0].startEdgeSize), int(b[0].endEdgeSize), int(b[1].startEdgeSize), int(b[1].endEdgeSize)


def _pair(v, d):
    v = [int(x) for x in v]
    return (v[0], v[-1]) if v else (d, d)


def _spatial(fn: Callable) -> Callable:
    """Apply a 4-D (M, C, H, W) torch function to (..., C, H, W) blobs."""
    def run(x):
        lead = x.shape[:-3]
        y = fn(x.reshape((-1,) + tuple(x.shape[-3:])))
        return y.reshape(tuple(lead) + tuple(y.shape[1:]))
    return run


@translates("innerProduct")
def _inner_product(layer, p, ins, outs):
    wt = w(layer, "weights", (int(p.outputChannels), int(p.inputChannels)))
    b = w(layer, "bias", (int(p.outputChannels),)) if p.hasBias else None

    def ip(x):
        if x.dim() - 1 >= 4:
            lead = x.shape[:-3]
            return F.linear(x.reshape(tuple(lead) + (-1,)), wt, b).reshape(tuple(lead) + (-1, 1, 1))
        return F.linear(x, wt, b)
    return unary(ins, outs, ip)


@translates("convolution")
def _convolution(layer, p, ins, outs):
    g = max(1, int(p.nGroups))
    kh, kw = _pair(p.kernelSize, 3)
    stride, dil = _pair(p.stride, 1), _pair(p.dilationFactor, 1)
    if p.WhichOneof("ConvolutionPaddingType") == "same":
        raise NotImplementedError("convolution with same padding")
    pt, pb, pl, pr = _pads(p.valid)
    b = w(layer, "bias", (int(p.outputChannels),)) if p.hasBias else None
    if p.isDeconvolution:
        wt = w(layer, "weights", (int(p.kernelChannels), int(p.outputChannels) // g, kh, kw), 1)
        oh_ow = tuple(int(v) for v in p.outputShape)

        def deconv(x):
            y = F.conv_transpose2d(x, wt, b, stride=stride, groups=g, dilation=dil)
            if oh_ow:
                return y[..., pt: pt + oh_ow[0], pl: pl + oh_ow[1]]
            return y[..., pt: y.shape[-2] - pb, pl: y.shape[-1] - pr]
        return unary(ins, outs, _spatial(deconv))
    wt = w(layer, "weights", (int(p.outputChannels), int(p.kernelChannels), kh, kw))
    sym = pt == pb and pl == pr

    def conv(x):
        if not sym:
            x = F.pad(x, (pl, pr, pt, pb))
        return F.conv2d(x, wt, b, stride=stride, padding=(pt, pl) if sym else 0, dilation=dil, groups=g)
    return unary(ins, outs, _spatial(conv))


@translates("pooling")
def _pooling(layer, p, ins, outs):
    kind = int(p.type)
    if p.globalPooling:
        if kind == 0:
            return unary(ins, outs, lambda x: x.amax(dim=(-2, -1), keepdim=True))
        return unary(ins, outs, lambda x: x.mean(dim=(-2, -1), keepdim=True))
    k, s = _pair(p.kernelSize, 3), _pair(p.stride, 1)
    if p.WhichOneof("PoolingPaddingType") != "valid":
        raise NotImplementedError("pooling padding other than valid")
    pt, pb, pl, pr = _pads(p.valid)
    sym = pt == pb and pl == pr

    def pool(x):
        pad = (pt, pl) if sym else 0
        if not sym:
            x = F.pad(x, (pl, pr, pt, pb), value=float("-inf") if kind == 0 else 0.0)
        if kind == 0:
            return F.max_pool2d(x, k, s, pad)
        return F.avg_pool2d(x, k, s, pad, count_include_pad=not p.avgPoolExcludePadding)
    return unary(ins, outs, _spatial(pool))


@translates("activation")
def _activation(layer, p, ins, outs):
    kind = p.WhichOneof("NonlinearityType")
    if kind == "PReLU":
        return unary(ins, outs, _prelu(layer, p.PReLU.alpha))
    if kind == "parametricSoftplus":
        raise NotImplementedError(f"activation {kind}")
    a = float(getattr(getattr(p, kind), "alpha", 0.0))
    b = float(getattr(getattr(p, kind), "beta", 0.0))
    table = {
        "ReLU": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus,
        "leakyReLU": lambda x: F.leaky_relu(x, a), "ELU": lambda x: F.elu(x, a),
        "linear": lambda x: x * a + b, "sigmoidHard": lambda x: torch.clamp(x * a + b, 0, 1),
        "thresholdedReLU": lambda x: torch.where(x > a, x, torch.zeros_like(x)),
        "scaledTanh": lambda x: a * torch.tanh(x * b), "softsign": F.softsign,
    }
    if kind not in table:
        raise NotImplementedError(f"activation {kind}")
    return unary(ins, outs, table[kind])


def _prelu(layer, wp) -> Callable:
    """PReLU with one alpha per channel (Core ML axis -3) or one shared alpha, decoded on the first call."""
    alphas: dict[int, torch.Tensor] = {}

    def run(x):
        c = x.shape[-3] if x.dim() - 1 >= 3 else 1
        if c not in alphas:
            n = len(wp.floatValue) or len(wp.float16Value) // 2 or c
            alphas[c] = w(layer, "PReLU.alpha", (n,)).reshape(n, 1, 1) if n > 1 else w(layer, "PReLU.alpha", (1,))
        return torch.where(x >= 0, x, x * alphas[c])
    return run


@translates("clip")
def _clip(layer, p, ins, outs):
    return unary(ins, outs, lambda x: torch.clamp(x, p.minVal, p.maxVal))


@translates("batchnorm")
def _batchnorm(layer, p, ins, outs):
    if p.computeMeanVar:
        raise NotImplementedError("batchnorm with computeMeanVar")
    c = int(p.channels)
    g, be, m, v = (w(layer, f, (c,)) for f in ("gamma", "beta", "mean", "variance"))
    eps = p.epsilon or 1e-5
    return unary(ins, outs, _spatial(lambda x: F.batch_norm(x, m, v, g, be, False, 0.0, eps)))


_LEGACY = {"add": torch.add, "multiply": torch.mul, "average": torch.add, "max": torch.maximum, "min": torch.minimum}


@translates(*_LEGACY)
def _legacy_elementwise(layer, p, ins, outs):
    t = layer.WhichOneof("layer")
    op, alpha, dst = _LEGACY[t], float(getattr(p, "alpha", 0.0)), outs[0]
    if len(ins) == 1:
        if t == "add":
            return unary(ins, outs, lambda x: x + alpha)
        if t == "multiply":
            return unary(ins, outs, lambda x: x * alpha)
        return unary(ins, outs, lambda x: x)

    def ew(blobs):
        y = reduce(op, align(*[blobs[n] for n in ins]))
        blobs[dst] = y / len(ins) if t == "average" else y
    return ew


@translates("softmax")
def _softmax(layer, p, ins, outs):
    return unary(ins, outs, lambda x: torch.softmax(x, dim=x.dim() - 3))


@translates("flatten")
def _flatten(layer, p, ins, outs):
    if int(p.mode) != 0:
        raise NotImplementedError("flatten mode CHANNEL_LAST")
    return unary(ins, outs, lambda x: x.reshape(tuple(x.shape[:-3]) + (-1, 1, 1)))


def _param_3d(layer, shape, field):
    shp = tuple(int(s) for s in shape) or (1,)
    v = w(layer, field, shp)
    if len(shp) == 1:
        return v.reshape(()) if shp[0] == 1 else v.reshape(-1, 1, 1)
    return v


@translates("scale")
def _scale(layer, p, ins, outs):
    s = _param_3d(layer, p.shapeScale, "scale")
    if not p.hasBias:
        return unary(ins, outs, lambda x: x * s)
    b = _param_3d(layer, p.shapeBias, "bias")
    return unary(ins, outs, lambda x: torch.addcmul(b, x, s))


@translates("bias")
def _bias(layer, p, ins, outs):
    b = _param_3d(layer, p.shape, "bias")
    return unary(ins, outs, lambda x: x + b)


@translates("mvn")
def _mvn(layer, p, ins, outs):
    k = 3 if p.acrossChannels else 2
    eps = float(p.epsilon) or 1e-6
    if not p.normalizeVariance:
        return unary(ins, outs, lambda x: x - x.mean(dim=tuple(range(-k, 0)), keepdim=True))
    return unary(ins, outs, lambda x: F.layer_norm(x, tuple(x.shape[-k:]), eps=eps))




def layernorm(scale_layer, mvn, k: int, src: str, dst: str):
    """One ``F.layer_norm`` for ``mvn`` (over the last ``k`` axes) followed by ``scale_layer``; None if the
    scale's parameters vary along an axis the mvn does not normalize."""
    p = scale_layer.scale
    s = _param_3d(scale_layer, p.shapeScale, "scale")
    b = _param_3d(scale_layer, p.shapeBias, "bias") if p.hasBias else None

    def as_affine(v):
        if v is None:
            return None
        v = v.reshape((1,) * (3 - v.dim()) + tuple(v.shape)) if v.dim() < 3 else v
        lead = v.shape[: 3 - k]
        if any(d != 1 for d in lead):
            return None
        return v.reshape(tuple(v.shape[3 - k:]))
    ws, wb = as_affine(s), as_affine(b)
    if ws is None or (p.hasBias and wb is None):
        return None
    eps = float(mvn.epsilon) or 1e-6

    def run(blobs):
        x = blobs[src]
        shape = tuple(x.shape[-k:])
        blobs[dst] = F.layer_norm(x, shape, ws.expand(shape).contiguous() if tuple(ws.shape) != shape else ws,
                                  None if wb is None else (wb.expand(shape).contiguous() if tuple(wb.shape) != shape else wb),
                                  eps=eps)
    return run
