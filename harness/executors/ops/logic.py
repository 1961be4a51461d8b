"""Comparison, logical and selection layers (spec >= 4).

Core ML represents booleans as floats: a comparison writes 1.0 where it
holds and 0.0 elsewhere; logical layers treat 0.0 as False and anything else
as True. Two inputs broadcast numpy-style after their ranks are aligned
behind the sample axis; with one input the comparison is against ``alpha``.
"""
from __future__ import annotations

from functools import reduce
from typing import Callable

import numpy as np

from harness.executors.ops.base import F32, Op, align_ranks, f32
from harness.executors.registry import register

_COMPARE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "equal": np.equal,
    "notEqual": np.not_equal,
    "lessThan": np.less,
    "lessEqual": np.less_equal,
    "greaterThan": np.greater,
    "greaterEqual": np.greater_equal,
}

_LOGICAL: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "logicalAnd": np.logical_and,
    "logicalOr": np.logical_or,
    "logicalXor": np.logical_xor,
}


@register(*_COMPARE)
class Compare(Op):
    """``x1 (op) x2`` or, with one input, ``x1 (op) alpha`` -> 1.0 / 0.0."""

    n_inputs = (1, 2)

    def build(self, params, ctx) -> None:
        self.fn = _COMPARE[self.type]
        self.alpha = F32(params.alpha)

    def run(self, a, b=None):
        if b is None:
            return self.fn(f32(a), self.alpha).astype(F32)
        a, b = align_ranks(f32(a), f32(b))
        return self.fn(a, b).astype(F32)


@register(*_LOGICAL)
class Logical(Op):
    """Elementwise AND / OR / XOR of two (or more) inputs, 0.0 meaning False -> 1.0 / 0.0."""

    n_inputs = (2, 1 << 30)

    def build(self, params, ctx) -> None:
        self.fn = _LOGICAL[self.type]

    def run(self, *xs):
        return reduce(self.fn, align_ranks(*[np.asarray(x) != 0 for x in xs])).astype(F32)


@register("logicalNot")
class LogicalNot(Op):
    """1.0 where the input is 0.0, else 0.0."""

    n_inputs = 1

    def run(self, x):
        return (np.asarray(x) == 0).astype(F32)


@register("whereBroadcastable")
class WhereBroadcastable(Op):
    """``where(cond != 0, a, b)`` with numpy broadcasting of all three inputs."""

    n_inputs = 3

    def run(self, cond, a, b):
        c, a, b = align_ranks(np.asarray(cond), f32(a), f32(b))
        return np.where(c != 0, a, b).astype(F32)
