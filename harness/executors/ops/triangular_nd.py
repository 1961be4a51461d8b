"""Triangular and band masks of the last two axes (spec >= 4): ``matrixBandPart``,
``lowerTriangular``, ``upperTriangular``.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops.base import F32, Op, rank
from harness.executors.registry import register


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
