"""A PyTorch peer of a Core ML neural network, rebuilt from the spec's decoded weights.

Used only by the executor benchmark (``python -m harness.bench executor``) to
time the *same network* in PyTorch: every layer is translated to
``torch.nn.functional`` calls on tensors laid out like the numpy executor's
blobs (a sample axis in front of Core ML's per-sample shape), with weights
decoded by :func:`quantizer.decode_weights`. Needs the optional ``torch``
extra; nothing else in qsweep imports this module.

Covers the layers the zoo's MLPs, CNNs and LSTM use; :func:`unsupported`
names the layer types it cannot translate.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

import quantizer
from harness.executors.interface import ModelIO

Fn = Callable[[dict], None]


def _w(layer: Any, field: str, shape: tuple[int, ...], axis: int = 0) -> torch.Tensor:
    wp = quantizer.tensors.get_weight_params(layer, field)
    return torch.from_numpy(np.ascontiguousarray(quantizer.decode_weights(wp, shape, axis), dtype=np.float32))


def _pads(valid) -> tuple[int, int, int, int]:
    b = valid.paddingAmounts.borderAmounts
    if not len(b):
        return 0, 0, 0, 0
    return int(b[0].startEdgeSize), int(b[0].endEdgeSize), int(b[1].startEdgeSize), int(b[1].endEdgeSize)


def _pair(v, d):
    v = [int(x) for x in v]
    return (v[0], v[-1]) if v else (d, d)


def _conv(layer, p) -> Callable:
    g = max(1, int(p.nGroups))
    kh, kw = _pair(p.kernelSize, 3)
    stride, dil = _pair(p.stride, 1), _pair(p.dilationFactor, 1)
    if p.WhichOneof("ConvolutionPaddingType") == "same":
        raise NotImplementedError("convolution with same padding")
    pt, pb, pl, pr = _pads(p.valid)
    b = _w(layer, "bias", (int(p.outputChannels),)) if p.hasBias else None
    if p.isDeconvolution:
        w = _w(layer, "weights", (int(p.kernelChannels), int(p.outputChannels) // g, kh, kw), 1)
        oh_ow = tuple(int(v) for v in p.outputShape)

        def deconv(x):
            y = F.conv_transpose2d(x, w, b, stride=stride, groups=g, dilation=dil)
            if oh_ow:
                return y[..., pt: pt + oh_ow[0], pl: pl + oh_ow[1]]
            return y[..., pt: y.shape[-2] - pb, pl: y.shape[-1] - pr]
        return deconv
    w = _w(layer, "weights", (int(p.outputChannels), int(p.kernelChannels), kh, kw))
    sym = pt == pb and pl == pr

    def conv(x):
        if not sym:
            x = F.pad(x, (pl, pr, pt, pb))
        return F.conv2d(x, w, b, stride=stride, padding=(pt, pl) if sym else 0, dilation=dil, groups=g)
    return conv


def _spatial(fn: Callable) -> Callable:
    """Apply a 4-D (M, C, H, W) torch function to (..., C, H, W) blobs."""
    def run(x):
        lead = x.shape[:-3]
        y = fn(x.reshape((-1,) + tuple(x.shape[-3:])))
        return y.reshape(tuple(lead) + tuple(y.shape[1:]))
    return run


def _pool(p) -> Callable:
    kind = int(p.type)
    if p.globalPooling:
        return (lambda x: x.amax(dim=(-2, -1), keepdim=True)) if kind == 0 else (lambda x: x.mean(dim=(-2, -1), keepdim=True))
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
    return _spatial(pool)


def _activation(p) -> Callable:
    kind = p.WhichOneof("NonlinearityType")
    a = getattr(getattr(p, kind), "alpha", 0.0)
    b = getattr(getattr(p, kind), "beta", 0.0)
    table = {
        "ReLU": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus,
        "leakyReLU": lambda x: F.leaky_relu(x, a), "ELU": lambda x: F.elu(x, a),
        "linear": lambda x: x * a + b, "sigmoidHard": lambda x: torch.clamp(x * a + b, 0, 1),
        "thresholdedReLU": lambda x: torch.where(x > a, x, torch.zeros_like(x)),
    }
    if kind not in table:
        raise NotImplementedError(f"activation {kind}")
    return table[kind]


def _ax(a: int, x: torch.Tensor) -> int:
    r = x.dim() - 1
    return (a % r) + 1


def translate(layer: Any) -> Fn:
    """One layer -> a function over the blob dict."""
    t = layer.WhichOneof("layer")
    p = getattr(layer, t)
    ins, outs = list(layer.input), list(layer.output)

    def unary(fn: Callable) -> Fn:
        def run(blobs):
            blobs[outs[0]] = fn(blobs[ins[0]])
        return run

    if t == "innerProduct":
        w = _w(layer, "weights", (int(p.outputChannels), int(p.inputChannels)))
        b = _w(layer, "bias", (int(p.outputChannels),)) if p.hasBias else None

        def ip(x):
            if x.dim() - 1 >= 4:
                lead = x.shape[:-3]
                return F.linear(x.reshape(tuple(lead) + (-1,)), w, b).reshape(tuple(lead) + (-1, 1, 1))
            return F.linear(x, w, b)
        return unary(ip)
    if t == "convolution":
        return unary(_spatial(_conv(layer, p)))
    if t == "pooling":
        return unary(_pool(p))
    if t == "activation":
        return unary(_activation(p))
    if t == "clip":
        return unary(lambda x: torch.clamp(x, p.minVal, p.maxVal))
    if t == "batchnorm" and not p.computeMeanVar:
        c = int(p.channels)
        g, be, m, v = (_w(layer, f, (c,)) for f in ("gamma", "beta", "mean", "variance"))
        eps = p.epsilon or 1e-5
        return unary(_spatial(lambda x: F.batch_norm(x, m, v, g, be, False, 0.0, eps)))
    if t in ("add", "multiply") and len(ins) > 1:
        op = torch.add if t == "add" else torch.mul

        def ew(blobs):
            y = blobs[ins[0]]
            for n in ins[1:]:
                y = op(y, blobs[n])
            blobs[outs[0]] = y
        return ew
    if t in ("addBroadcastable", "multiplyBroadcastable", "subtractBroadcastable"):
        op = {"addBroadcastable": torch.add, "multiplyBroadcastable": torch.mul, "subtractBroadcastable": torch.sub}[t]

        def bc(blobs):
            a, b2 = blobs[ins[0]], blobs[ins[1]]
            r = max(a.dim(), b2.dim())
            a = a.reshape((a.shape[0],) + (1,) * (r - a.dim()) + tuple(a.shape[1:]))
            b2 = b2.reshape((b2.shape[0],) + (1,) * (r - b2.dim()) + tuple(b2.shape[1:]))
            blobs[outs[0]] = op(a, b2)
        return bc
    if t == "softmaxND":
        return unary(lambda x: torch.softmax(x, dim=_ax(int(p.axis), x)))
    if t == "softmax":
        return unary(lambda x: torch.softmax(x, dim=x.dim() - 3))
    if t == "reshapeStatic":
        shape = tuple(int(s) for s in p.targetShape)
        return unary(lambda x: x.reshape((x.shape[0],) + shape))
    if t == "flatten" and int(p.mode) == 0:
        return unary(lambda x: x.reshape(tuple(x.shape[:-3]) + (-1, 1, 1)))
    if t == "flattenTo2D":
        a = int(p.axis)
        return unary(lambda x: x.reshape(x.shape[0], int(np.prod(x.shape[1:a % (x.dim()) + 1 if a < 0 else a + 1])), -1))
    if t == "transpose":
        axes = [int(a) + 1 for a in p.axes]
        return unary(lambda x: x.permute(0, *axes))
    if t == "expandDims":
        axes = sorted(int(a) for a in p.axes)

        def ed(x):
            r = x.dim() - 1 + len(axes)
            for a in sorted(a % r for a in axes):
                x = x.unsqueeze(a + 1)
            return x
        return unary(ed)
    if t == "squeeze":
        def sq(x):
            r = x.dim() - 1
            axes = sorted(((int(a) % r) + 1 for a in p.axes), reverse=True) if not p.squeezeAll else [
                i for i in range(x.dim() - 1, 0, -1) if x.shape[i] == 1]
            for a in axes:
                x = x.squeeze(a)
            return x
        return unary(sq)
    if t == "loadConstantND":
        shape = tuple(int(s) for s in p.shape)
        c = _w(layer, "data", shape).reshape((1,) + shape)

        def lc(blobs):
            blobs[outs[0]] = c
        return lc
    if t == "uniDirectionalLSTM" and not p.params.hasPeepholeVectors and not p.reverseInput:
        return _lstm(layer, p, ins, outs)
    if t == "sliceStatic":
        return unary(_slice_static(p))
    if t == "concatND":
        def cat(blobs):
            xs = [blobs[n] for n in ins]
            n = max(x.shape[0] for x in xs)
            xs = [x.expand((n,) + tuple(x.shape[1:])) for x in xs]
            blobs[outs[0]] = torch.cat(xs, dim=_ax(int(p.axis), xs[0]))
        return cat
    raise NotImplementedError(t)


def _slice_static(p) -> Callable:
    begins, ends, strides = list(p.beginIds), list(p.endIds), list(p.strides)
    bmask, emask, smask = list(p.beginMasks), list(p.endMasks), list(p.squeezeMasks)

    def run(x):
        idx: list = [slice(None)]
        squeeze = []
        for a in range(len(begins)):
            size = x.shape[a + 1]
            st = int(strides[a]) if a < len(strides) and strides[a] else 1
            if st < 0:
                raise NotImplementedError("sliceStatic with a negative stride")
            b = 0 if (a < len(bmask) and bmask[a]) else int(begins[a])
            e = size if (a < len(emask) and emask[a]) else int(ends[a])
            b, e = (b + size if b < 0 else b), (e + size if e < 0 else e)
            if a < len(smask) and smask[a]:
                idx.append(b)
                squeeze.append(a)
            else:
                idx.append(slice(b, e, st))
        return x[tuple(idx)]
    return run


def _lstm(layer, p, ins, outs) -> Fn:
    """uniDirectionalLSTM (sigmoid/tanh/tanh, no peepholes) via torch's fused LSTM."""
    h, i = int(p.outputVectorSize), int(p.inputVectorSize)
    wp = "weightParams."
    gates = ("inputGate", "forgetGate", "blockInput", "outputGate")  # i, f, g, o: torch's order
    w_ih = torch.cat([_w(layer, f"{wp}{g}WeightMatrix", (h, i)) for g in gates])
    w_hh = torch.cat([_w(layer, f"{wp}{g}RecursionMatrix", (h, h)) for g in gates])
    b = torch.cat([_w(layer, f"{wp}{g}BiasVector", (h,)) for g in gates]) if p.params.hasBiasVectors else torch.zeros(4 * h)
    acts = [a.WhichOneof("NonlinearityType") for a in p.activations]
    if acts and acts != ["sigmoid", "tanh", "tanh"]:
        raise NotImplementedError(f"LSTM activations {acts}")
    seq_out = p.params.sequenceOutput

    def run(blobs):
        x = blobs[ins[0]]  # (N, S, B, I, 1, 1)
        n, s, bb = x.shape[:3]
        h0 = blobs[ins[1]].reshape(-1, h) if len(ins) > 1 else torch.zeros(n * bb, h)
        c0 = blobs[ins[2]].reshape(-1, h) if len(ins) > 2 else torch.zeros(n * bb, h)
        h0 = h0.expand(n * bb, h).contiguous().unsqueeze(0)
        c0 = c0.expand(n * bb, h).contiguous().unsqueeze(0)
        seq = x.reshape(n, s, bb, i).permute(1, 0, 2, 3).reshape(s, n * bb, i)
        y, hn, cn = torch._VF.lstm(seq, (h0, c0), [w_ih, w_hh, b, torch.zeros_like(b)], True, 1, 0.0, False, False, False)
        if seq_out:
            out = y.reshape(s, n, bb, h).permute(1, 0, 2, 3).reshape(n, s, bb, h, 1, 1)
        else:
            out = hn.reshape(n, 1, bb, h, 1, 1)
        blobs[outs[0]] = out
        if len(outs) > 1:
            blobs[outs[1]] = hn.reshape(n, 1, bb, h, 1, 1)
        if len(outs) > 2:
            blobs[outs[2]] = cn.reshape(n, 1, bb, h, 1, 1)
    return run


def unsupported(spec: Any) -> list[str]:
    """Layer types of ``spec`` this peer cannot translate (empty: it can run the model)."""
    bad = []
    for layer in ModelIO(spec).nn.layers:
        try:
            translate(layer)
        except NotImplementedError as e:
            bad.append(f"{layer.WhichOneof('layer')} ({e})")
    return sorted(set(bad))


class TorchPeer:
    """Run the translated network on blobs laid out like the numpy executor's (N, *per-sample shape)."""

    def __init__(self, spec: Any) -> None:
        self.io = ModelIO(spec)
        self.fns = [translate(layer) for layer in self.io.nn.layers]

    @torch.inference_mode()
    def run(self, blobs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """``blobs``: the numpy executor's input blobs; returns the named blobs as numpy arrays."""
        env = {k: torch.from_numpy(np.require(v, np.float32, ("C", "W"))) for k, v in blobs.items()}
        for fn in self.fns:
            fn(env)
        return {k: env[k].numpy() for k in outputs}
