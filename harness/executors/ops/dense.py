"""Fully connected layers: innerProduct (float or int8 dynamic-quantized weights)."""
from __future__ import annotations

import numpy as np

from harness.executors.ops import _parallel as par
from harness.executors.ops.base import Op, f32, rank
from harness.executors.registry import register


@register("innerProduct")
class InnerProduct(Op):
    """``y = x W^T + b`` over the channel dims, as NeuralNetwork.proto reshapes them.

    Core ML rank (per sample) -> matrix: 1 ``(Cin)``; 2 ``(x1, Cin)``; 3
    ``(x1, x2, Cin)``; 4 ``(x1, C, H, W)`` with ``C*H*W = Cin`` -> ``(x1, Cout, 1, 1)``;
    5 ``(x1, x2, C, H, W)`` -> ``(x1, x2, Cout, 1, 1)``. int8 dynamic-quantized
    weights (``int8RawValue``) are decoded to ``int8 * scale`` and applied in
    float32 (the layer's own bias is added).
    """

    n_inputs = 1

    def build(self, params, ctx) -> None:
        cout, cin = int(params.outputChannels), int(params.inputChannels)
        self.cin, self.cout = cin, cout
        self.wt = np.ascontiguousarray(self.weights("weights", (cout, cin), 0).T)  # (Cin, Cout)
        self.b = self.weights("bias", (cout,), 0) if params.hasBias else None

    def run(self, x):
        r = rank(x)
        if r >= 4:
            lead = x.shape[: x.ndim - 3]
            m = x.reshape(lead + (-1,))
        else:
            lead = x.shape[:-1]
            m = x
        if m.shape[-1] != self.cin:
            raise self.error(
                f"input has {m.shape[-1]} channels per row (Core ML shape {tuple(x.shape[1:])}), "
                f"the weights expect inputChannels={self.cin}")
        # one 2-D GEMM (a stacked matmul would call BLAS once per row), split over the pool's threads
        y = par.matmul(f32(m).reshape(-1, self.cin), self.wt)
        if self.b is not None:
            y += self.b
        return y.reshape(lead + ((self.cout, 1, 1) if r >= 4 else (self.cout,)))
