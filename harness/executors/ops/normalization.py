"""Normalization layers: batchnorm, softmax (legacy, over the channel axis -3) and softmaxND, l2normalize, lrn."""
from __future__ import annotations

import numpy as np

from harness.executors.ops import _kernels
from harness.executors.ops.base import F32, Op, axis, f32, rank
from harness.executors.registry import register


def _need_chw(op: Op, x: np.ndarray) -> None:
    if rank(x) < 3:
        raise op.error(f"needs an input of rank >= 3 (C, H, W); got Core ML shape {tuple(x.shape[1:])}")


@register("batchnorm")
class Batchnorm(Op):
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` per channel (axis -3).

    With ``computeMeanVar`` the statistics come from the data: per instance and
    channel over (H, W) with ``instanceNormalization``, else per channel over
    the model's own batch and (H, W) *of each sample* (so batched results equal
    per-sample results).
    """

    n_inputs = 1

    def build(self, params, ctx) -> None:
        c = int(params.channels)
        self.c = c
        self.eps = F32(params.epsilon or 1e-5)  # proto: defaults to 1e-5 if not set or 0
        self.compute = bool(params.computeMeanVar)
        self.instance = bool(params.instanceNormalization)
        gamma = self.weights("gamma", (c,), 0)
        beta = self.weights("beta", (c,), 0)
        if self.compute:
            self.gamma, self.beta = gamma.reshape(-1, 1, 1), beta.reshape(-1, 1, 1)
        else:
            mean = self.weights("mean", (c,), 0)
            var = self.weights("variance", (c,), 0)
            scale = (gamma / np.sqrt(var.astype(np.float64) + float(self.eps))).astype(F32)
            self.scale = scale.reshape(-1, 1, 1)
            self.shift = (beta - mean * scale).astype(F32).reshape(-1, 1, 1)

    def run(self, x):
        _need_chw(self, x)
        if x.shape[-3] != self.c:
            raise self.error(f"input has {x.shape[-3]} channels, the layer has {self.c}")
        x = f32(x)
        if not self.compute:
            return x * self.scale + self.shift
        if self.instance or x.ndim == 4:
            axes = (-2, -1)
        else:  # statistics over every per-sample axis except C
            axes = tuple(range(1, x.ndim - 3)) + (-2, -1)
        mean = x.mean(axis=axes, keepdims=True, dtype=F32)
        var = np.square(x - mean).mean(axis=axes, keepdims=True, dtype=F32)
        return (x - mean) / np.sqrt(var + self.eps) * self.gamma + self.beta


def softmax(x: np.ndarray, ax: int) -> np.ndarray:
    """Numerically stable softmax of float32 ``x`` along numpy axis ``ax``."""
    ax %= x.ndim
    if ax == x.ndim - 1:
        return _kernels.softmax_last(x)
    if all(d == 1 for d in x.shape[ax + 1:]):  # e.g. (..., C, 1, 1): use the last axis
        return softmax(x.reshape(x.shape[: ax + 1]), ax).reshape(x.shape)
    e = np.exp(x - x.max(axis=ax, keepdims=True))
    e /= e.sum(axis=ax, keepdims=True)
    return e


@register("softmaxND")
class SoftmaxND(Op):
    """Softmax along ``axis`` (Core ML axis, negative allowed)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.axis = int(params.axis)
        self._axis: dict[int, int] = {}  # input ndim -> numpy axis (checked once per rank)

    def run(self, x):
        ax = self._axis.get(x.ndim)
        if ax is None:
            ax = self._axis[x.ndim] = axis(self.axis, x)
        if ax == x.ndim - 1:  # the common case, straight to the kernel (ops of 10 us: each call showed)
            return _kernels.softmax_last(x)
        return softmax(f32(x), ax)


@register("softmax")
class Softmax(Op):
    """Softmax over axis -3 (C)."""

    n_inputs = 1

    def run(self, x):
        _need_chw(self, x)
        return softmax(f32(x), x.ndim - 3)


@register("l2normalize")
class L2Normalize(Op):
    """``x / sqrt(sum(x^2 over C, H, W) + eps)``."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.eps = F32(params.epsilon or 1e-6)

    def run(self, x):
        _need_chw(self, x)
        x = f32(x)
        return x / np.sqrt(np.square(x).sum(axis=(-3, -2, -1), keepdims=True) + self.eps)


@register("lrn")
class LRN(Op):
    """Local response normalization across channels: ``x / (k + alpha/n * sum x^2)^beta``.

    The window of ``n = localSize`` channels around channel c is
    ``[c - (n-1)//2, c + n//2]`` (Caffe's ACROSS_CHANNELS convention).
    """

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.alpha, self.beta = F32(params.alpha), F32(params.beta)
        self.n = int(params.localSize)
        if self.n < 1:
            raise self.error("localSize must be >= 1")
        self.k = F32(params.k or 1.0)  # proto: defaults to 1 if not set or 0

    def run(self, x):
        _need_chw(self, x)
        x = f32(x)
        sq = np.square(x)
        c = x.shape[-3]
        pre = (self.n - 1) // 2
        cs = np.cumsum(np.concatenate([np.zeros_like(sq[..., :1, :, :]), sq], axis=-3), axis=-3)
        lo = np.clip(np.arange(c) - pre, 0, c)
        hi = np.clip(np.arange(c) - pre + self.n, 0, c)
        window = np.take(cs, hi, axis=-3) - np.take(cs, lo, axis=-3)
        return x / np.power(self.k + self.alpha / F32(self.n) * window, self.beta)
