"""``batchedMatmul``: two dynamic inputs (numpy matmul broadcasting) or one input times stored weights.

Two inputs: the matrices are the last two per-sample axes, leading axes
broadcast (ranks are aligned behind the sample axis first). A rank-1 ``a``
becomes ``(1, D)`` and a rank-1 ``b`` becomes ``(D, 1)``; unlike numpy, the
added axis stays in the output, whose rank is ``max(2, rank a, rank b)``
(NeuralNetwork.proto). ``transposeA``/``transposeB`` swap the last two axes.

One input: ``y = a @ W + bias`` over the last axis, output rank = input rank.
``W`` is ``[X1, X2]`` (X1 = ``weightMatrixFirstDimension``, the input's last
dim; X2 = ``weightMatrixSecondDimension``) but is *stored column-major*, i.e.
as the row-major array ``(X2, X1)`` — coremltools' builder writes
``W.T.flatten()``, and ``quantizer.tensors.layer_weights`` reports the shape
``(X2, X1)`` with channels on axis 0. int8 dynamic-quantized weights decode
to ``int8 * scale`` and run in float32 (the layer's own bias is added).

Speed: numpy's matmul calls BLAS once per matrix of a stack. With more than one
thread, a stack is split along the sample axis over the executor's thread pool,
each slice run with single-threaded BLAS (:func:`stacked_matmul`); one large
product (one sample, or stored weights) is split into row blocks
(:func:`~harness.executors.ops._parallel.matmul`). Transposed inputs stay views:
BLAS reads them with a transpose flag.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops import _parallel as par
from harness.executors.ops.base import Op, align_ranks, f32, rank
from harness.executors.registry import register


@register("batchedMatmul")
class BatchedMatmul(Op):
    """``a @ b`` (two inputs) or ``a @ W + bias`` (one input, stored weights)."""

    n_inputs = (1, 2)

    def build(self, params, ctx) -> None:
        self.ta, self.tb = bool(params.transposeA), bool(params.transposeB)
        #: set by harness.executors.fusion when a transpose alone reads the product: the output is
        #: laid out so that transpose's view of it is C-contiguous (its reshape then copies nothing)
        self.out_axes: list[int] | None = None
        self.w = self.b = None
        if len(self.inputs) == 1:
            x1, x2 = int(params.weightMatrixFirstDimension), int(params.weightMatrixSecondDimension)
            if x1 <= 0 or x2 <= 0:
                raise self.error(f"one input needs weightMatrixFirstDimension/SecondDimension > 0, got ({x1}, {x2})")
            self.x1, self.x2 = x1, x2
            self.w = np.ascontiguousarray(self.weights("weights", (x2, x1), 0).T)  # (X1, X2)
            self.b = self.weights("bias", (x2,), 0) if params.hasBias else None

    def run(self, a, b=None):
        if b is None:
            return self._weights(f32(a))
        a, b = f32(a), f32(b)
        a_vec, b_vec = rank(a) == 1, rank(b) == 1
        if a_vec:
            a = a[:, None, :]
        if b_vec:
            b = b[:, :, None]
        if self.ta and not a_vec:
            a = np.swapaxes(a, -1, -2)
        if self.tb and not b_vec:
            b = np.swapaxes(b, -1, -2)
        a, b = align_ranks(a, b)
        if a.shape[-1] != b.shape[-2]:
            raise self.error(f"inner dimensions differ: a is (..., {a.shape[-2]}, {a.shape[-1]}), "
                             f"b is (..., {b.shape[-2]}, {b.shape[-1]}) after transposes")
        return stacked_matmul(a, b, self.out_axes)

    def _weights(self, a: np.ndarray) -> np.ndarray:
        if a.shape[-1] != self.x1:
            raise self.error(f"the input's last dim is {a.shape[-1]} (per-sample shape {tuple(a.shape[1:])}), "
                             f"the weights expect weightMatrixFirstDimension={self.x1}")
        y = par.matmul(a.reshape(-1, self.x1), self.w).reshape(a.shape[:-1] + (self.x2,))
        if self.b is not None:
            y += self.b
        return y


def _output(a: np.ndarray, b: np.ndarray, out_axes: list[int] | None) -> np.ndarray:
    """An empty result array for ``a @ b``; with ``out_axes`` (a per-sample permutation) its memory is
    laid out so that ``result.transpose([0] + [x + 1 for x in out_axes])`` is C-contiguous."""
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    dtype = np.result_type(a, b)
    if out_axes is None or len(out_axes) != len(shape) - 1:
        return np.empty(shape, dtype)
    perm = [0] + [x + 1 for x in out_axes]
    buf = np.empty([shape[k] for k in perm], dtype)
    return buf.transpose(np.argsort(perm))


def stacked_matmul(a: np.ndarray, b: np.ndarray, out_axes: list[int] | None = None) -> np.ndarray:
    """``np.matmul(a, b)`` for equal-rank stacks, sliced along the sample axis over the thread pool
    (each slice single-threaded BLAS) when the stack has at least
    :data:`~harness.executors.ops._parallel.SPLIT_MATMUL` multiply-adds; a single product of 2-D
    matrices is split by rows instead.

    ``out_axes``: the layout hint of :func:`_output` (BLAS writes the strided result directly).
    """
    n_threads = par.threads()
    n = max(a.shape[0], b.shape[0])
    out = _output(a, b, out_axes)
    if n_threads <= 1 or out.size * a.shape[-1] < par.SPLIT_MATMUL:
        # small stacks in one call: the pool's hand-off costs more than it saves (transformer_block,
        # batch 32, 2 threads: 0.33 ms for its two products split, 0.08 ms at 1 thread)
        return np.matmul(a, b, out=out)
    if n < 2:
        if out.size == out.shape[-2] * out.shape[-1]:  # one matrix product
            par.matmul(a.reshape(a.shape[-2:]), b.reshape(b.shape[-2:]), out=out.reshape(out.shape[-2:]))
            return out
        return np.matmul(a, b, out=out)

    def run(s: int, e: int) -> None:
        np.matmul(a[s:e] if a.shape[0] > 1 else a, b[s:e] if b.shape[0] > 1 else b, out=out[s:e])
    par.for_chunks(run, n, -(-n // (2 * n_threads)), n_threads=n_threads)
    return out
