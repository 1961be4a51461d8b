"""Elementwise layers: legacy add/multiply/average/max/min, the broadcastable binary family,
bias, scale, loadConstant, dot and unary.

Blobs of different Core ML rank broadcast right-aligned (numpy rules) after
:func:`~harness.executors.ops.base.align_ranks`.
"""
from __future__ import annotations

from functools import reduce
from typing import Callable

import numpy as np

from harness.executors.ops import _parallel as par
from harness.executors.ops.base import F32, Op, align_ranks, constant, f32, rank
from harness.executors.registry import register

_LEGACY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add, "multiply": np.multiply, "average": np.add, "max": np.maximum, "min": np.minimum,
}


@register(*_LEGACY)
class LegacyElementwise(Op):
    """add/multiply/average/max/min over 1+ inputs (one input: ``x + alpha`` / ``alpha * x`` / identity)."""

    n_inputs = (1, 1 << 30)

    def build(self, params, ctx) -> None:
        self.fn = _LEGACY[self.type]
        self.alpha = F32(getattr(params, "alpha", 0.0))

    def run(self, *xs):
        xs = [f32(x) for x in xs]
        if len(xs) == 1:
            if self.type == "add":
                return par.binary(np.add, xs[0], self.alpha)
            if self.type == "multiply":
                return par.binary(np.multiply, xs[0], self.alpha)
            return xs[0]
        y = reduce(lambda a, b: par.binary(self.fn, a, b), align_ranks(*xs))
        if self.type == "average":
            y = y / F32(len(xs))
        return y


def _floor_div(a, b):
    return np.floor(a / b)


_BROADCASTABLE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "addBroadcastable": np.add,
    "subtractBroadcastable": np.subtract,
    "multiplyBroadcastable": np.multiply,
    "divideBroadcastable": np.divide,
    "maxBroadcastable": np.maximum,
    "minBroadcastable": np.minimum,
    "powBroadcastable": np.power,
    "floorDivBroadcastable": _floor_div,
    "modBroadcastable": np.mod,
}


@register(*_BROADCASTABLE)
class Broadcastable(Op):
    """Binary (max/min: 2+) elementwise ops with numpy broadcasting across Core ML ranks."""

    n_inputs = (2, 1 << 30)

    def build(self, params, ctx) -> None:
        self.fn = _BROADCASTABLE[self.type]
        if len(self.inputs) > 2 and self.type not in ("maxBroadcastable", "minBroadcastable", "addBroadcastable", "multiplyBroadcastable"):
            raise self.error(f"takes 2 inputs, got {len(self.inputs)}")

    def run(self, *xs):
        quiet = {"divide": "ignore", "invalid": "ignore", "over": "ignore"}
        return f32(reduce(lambda a, b: par.binary(self.fn, a, b, quiet), align_ranks(*[f32(x) for x in xs])))


def _param_3d(op: Op, shape, field: str) -> np.ndarray:
    """Decode a bias/scale param of shape [1], [C], [1,H,W] or [C,H,W] to broadcast over (C, H, W)."""
    shp = tuple(int(s) for s in shape) or (1,)
    if len(shp) not in (1, 3):
        raise op.error(f"{field} shape {list(shp)} must have 1 or 3 dims ([1], [C] or [C, H, W])")
    v = op.weights(field, shp, 0)
    if len(shp) == 1:
        return v.reshape(()) if shp[0] == 1 else v.reshape(-1, 1, 1)
    return v


def _check_3d(op: Op, x: np.ndarray, v: np.ndarray, field: str) -> None:
    if v.ndim == 3:
        if rank(x) < 3:
            raise op.error(f"input of Core ML rank {rank(x)} has no (C, H, W) axes for {field} of shape {v.shape}")
        for a, b in zip(x.shape[-3:], v.shape):
            if b != 1 and a != b:
                raise op.error(f"{field} of shape {v.shape} does not match input (C, H, W) = {x.shape[-3:]}")


@register("bias")
class Bias(Op):
    """``x + b`` with b of shape [1], [C], [1, H, W] or [C, H, W] broadcast over (..., C, H, W)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.b = _param_3d(self, params.shape, "bias")

    def run(self, x):
        _check_3d(self, x, self.b, "bias")
        return f32(x) + self.b


@register("scale")
class Scale(Op):
    """``x * s (+ b)`` with s, b of shape [1], [C], [1, H, W] or [C, H, W]."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.s = _param_3d(self, params.shapeScale, "scale")
        self.b = _param_3d(self, params.shapeBias, "bias") if params.hasBias else None

    def run(self, x):
        _check_3d(self, x, self.s, "scale")
        y = f32(x) * self.s
        if self.b is not None:
            _check_3d(self, x, self.b, "bias")
            y += self.b
        return y


@register("loadConstant")
class LoadConstant(Op):
    """A constant of shape ``[C, H, W]`` as a rank-5 blob ``[1, 1, C, H, W]`` (sample axis 1)."""

    n_inputs = 0

    def build(self, params, ctx) -> None:
        shp = tuple(int(s) for s in params.shape)
        if len(shp) != 3:
            raise self.error(f"shape {list(shp)} must be [C, H, W]")
        self.value = constant(self.weights("data", shp, 0).reshape((1, 1) + shp))

    def run(self):
        return self.value


@register("dot")
class Dot(Op):
    """Dot product (or cosine similarity) over axis -3 of two ``(..., C, 1, 1)`` blobs -> ``(..., 1, 1, 1)``."""

    n_inputs = 2

    def build(self, params, ctx) -> None:
        self.cosine = bool(params.cosineSimilarity)

    def run(self, a, b):
        a, b = align_ranks(f32(a), f32(b))
        d = (a * b).sum(axis=-3, keepdims=True)
        if self.cosine:
            d = d / (np.sqrt(np.square(a).sum(axis=-3, keepdims=True)) * np.sqrt(np.square(b).sum(axis=-3, keepdims=True)))
        return d


@register("unary")
class Unary(Op):
    """``f(scale * x + shift)`` for SQRT, RSQRT, INVERSE, POWER, EXP, LOG, ABS, THRESHOLD."""

    n_inputs = 1
    NAMES = ("SQRT", "RSQRT", "INVERSE", "POWER", "EXP", "LOG", "ABS", "THRESHOLD")

    def build(self, params, ctx) -> None:
        t = int(params.type)
        if not 0 <= t < len(self.NAMES):
            raise self.error(f"unary type {t} is not supported")
        self.kind = self.NAMES[t]
        self.scale = F32(params.scale or 1.0)  # proto: defaults to 1 if not set or 0
        self.shift = F32(params.shift)
        self.eps = F32(params.epsilon or 1e-6)  # proto: defaults to 1e-6 if not set or 0
        self.alpha = F32(params.alpha)

    def run(self, x):
        x = f32(x)
        if self.scale != 1 or self.shift != 0:
            x = x * self.scale + self.shift
        k = self.kind
        with np.errstate(divide="ignore", invalid="ignore"):
            if k == "SQRT":
                return np.sqrt(x)
            if k == "RSQRT":
                return F32(1) / np.sqrt(x + self.eps)
            if k == "INVERSE":
                return F32(1) / (x + self.eps)
            if k == "POWER":
                return np.power(x, self.alpha)
            if k == "EXP":
                return np.exp(x)
            if k == "LOG":
                return np.log(x)
            if k == "ABS":
                return np.abs(x)
            return np.maximum(x, self.alpha)
