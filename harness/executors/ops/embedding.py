"""Embedding lookups: the legacy ``embedding`` layer and ``embeddingND``.

Token ids arrive as float blobs (float32 inputs, or int32 inputs converted by
the executor; both hold integers exactly below 2**24). An id outside
``[0, vocab)`` raises an error naming the layer, rather than reading another
row or garbage as a device might.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops.base import F32, Op, rank
from harness.executors.registry import register


def _ids(op: Op, x: np.ndarray, vocab: int) -> np.ndarray:
    if x.dtype.kind == "f":
        i = np.rint(x)
        off = ~(np.abs(i - x) <= 1e-3)  # also catches NaN
        if np.any(off):
            bad = x[off].reshape(-1)[:5]
            raise op.error(f"token ids must be integers, got {bad.tolist()}")
        i = i.astype(np.int64)
    else:
        i = x.astype(np.int64)
    if np.any((i < 0) | (i >= vocab)):
        bad = np.unique(i[(i < 0) | (i >= vocab)])[:5]
        raise op.error(f"token ids {bad.tolist()} are outside the vocabulary 0..{vocab - 1}")
    return i


@register("embeddingND")
class EmbeddingND(Op):
    """``(..., 1)`` ids -> ``(..., embeddingSize)``; weights stored ``[embeddingSize, vocabSize]``."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.vocab, self.size = int(params.vocabSize), int(params.embeddingSize)
        if self.vocab <= 0 or self.size <= 0:
            raise self.error(f"vocabSize {self.vocab} and embeddingSize {self.size} must be positive")
        table = self.weights("weights", (self.size, self.vocab), 0).T  # (vocab, E)
        if params.hasBias:
            table = table + self.weights("bias", (self.size,), 0)
        self.table = np.ascontiguousarray(table, dtype=F32)

    def run(self, x):
        if rank(x) < 1 or x.shape[-1] != 1:
            raise self.error(f"input per-sample shape {tuple(x.shape[1:])} must end in a dimension of 1 (the id axis)")
        return self.table[_ids(self, x[..., 0], self.vocab)]


@register("embedding")
class Embedding(Op):
    """Legacy lookup: ids ``(..., 1, 1, 1)`` -> ``(..., outputChannels, 1, 1)``; weights ``[outputChannels, inputDim]``."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.vocab, self.size = int(params.inputDim), int(params.outputChannels)
        if self.vocab <= 0 or self.size <= 0:
            raise self.error(f"inputDim {self.vocab} and outputChannels {self.size} must be positive")
        table = self.weights("weights", (self.size, self.vocab), 0).T
        if params.hasBias:
            table = table + self.weights("bias", (self.size,), 0)
        self.table = np.ascontiguousarray(table, dtype=F32)

    def run(self, x):
        if rank(x) < 3 or x.shape[-3:] != (1, 1, 1):
            raise self.error(f"input per-sample shape {tuple(x.shape[1:])} must end in (1, 1, 1) (ids on axis -4)")
        y = self.table[_ids(self, x[..., 0, 0, 0], self.vocab)]  # (..., C)
        return y[..., None, None]
