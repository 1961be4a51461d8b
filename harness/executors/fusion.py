"""Peephole fusions of a compiled top-level network: ``mvn -> scale`` runs as one layer-norm pass, and a
``batchedMatmul`` read only by a ``transpose`` writes its result in the transposed memory order.

The converter writes ``nn.LayerNorm`` as ``reshapeStatic -> mvn -> scale ->
reshapeStatic``. When the ``scale`` is the only reader of the ``mvn``'s
output and that output is not a model output, the mvn op computes the scale in
the same chunked pass (:meth:`~harness.executors.ops.normalization_nd.MVN.absorb_scale`)
and writes the scale's output; the scale op leaves the run list. Nothing else
changes: each layer type keeps its own op in the registry, and the fused op
falls back to running the scale itself for shapes it cannot fold.

Attention's ``(a @ v) -> transpose -> reshapeStatic`` would copy the permuted
product in the reshape. When the transpose is the product's only reader, the
matmul op allocates its output so that the transpose's view is C-contiguous
(``BatchedMatmul.out_axes``; BLAS writes the strided result directly) and the
reshape becomes a view. Values are unchanged; only memory order differs.

Applied to the model's network only (loop and branch bodies read and write
outer blobs).
"""
from __future__ import annotations

from typing import Iterable

from harness.executors.runner import Network, _reads


def fuse(network: Network, keep: Iterable[str]) -> dict[str, str]:
    """Fuse in place; returns ``{absorbed layer type: host layer type}`` for what was fused."""
    keep = set(keep)
    readers: dict[str, int] = {}
    for op in network.ops:
        for name in _reads(op.layer):
            readers[name] = readers.get(name, 0) + 1
    ops, fused, i = network.ops, {}, 0
    out, layers = [], []
    while i < len(ops):
        a = ops[i]
        b = ops[i + 1] if i + 1 < len(ops) else None
        if (b is not None and a.type == "mvn" and b.type == "scale" and b.inputs == list(a.outputs)
                and len(a.outputs) == 1 and readers.get(a.outputs[0], 0) == 1 and a.outputs[0] not in keep):
            a.absorb_scale(b)
            fused["scale"] = "mvn"
            out.append(a)
            layers.append(network.op_layers[i])
            i += 2
            continue
        out.append(a)
        layers.append(network.op_layers[i])
        i += 1
    network.ops, network.op_layers = out, layers
    producer = {o: op for op in out for o in op.outputs}
    for op in out:
        src = producer.get(op.inputs[0]) if op.type == "transpose" and op.inputs else None
        if (src is not None and src.type == "batchedMatmul" and len(src.inputs) == 2 and len(src.outputs) == 1
                and readers.get(src.outputs[0], 0) == 1 and src.outputs[0] not in keep):
            src.out_axes = list(op.axes)
    return fused
