"""A PyTorch peer of a Core ML neural network, rebuilt from the spec's decoded weights.

Used only by the executor benchmark (``python -m harness.bench executor``) to
time the *same network* in PyTorch: every layer is translated to
``torch`` / ``torch.nn.functional`` calls on tensors laid out like the numpy
executor's blobs (a sample axis in front of Core ML's per-sample shape), with
weights decoded by :func:`quantizer.decode_weights`. Where PyTorch has a fused
kernel for what a layer computes, the peer uses it (``mvn`` -> ``layer_norm``,
``gelu`` -> ``F.gelu``, LSTMs -> torch's fused LSTM); a ``loop`` (the
converter's GRU) runs its condition and body layer by layer, as Core ML does.
Needs the optional ``torch`` extra; nothing else in qsweep imports this package.

Translators live in ``_cnn`` (classic layers), ``_nd`` (ND layers, transformer
blocks) and ``_recurrent`` (LSTM, loop, gather/scatter); :func:`unsupported`
names the layer types (or configurations) the peer cannot translate.

Example::

    peer = TorchPeer(spec)
    outs = peer.run(NumpyExecutor(spec).input_blobs(feeds), ["var_12"])
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

import quantizer
from harness.bench.torch_peer import _cnn, _nd, _recurrent  # noqa: F401  (register their translators)
from harness.bench.torch_peer._common import TRANSLATORS, translate
from harness.executors.interface import ModelIO

__all__ = ["TorchPeer", "unsupported", "translate", "TRANSLATORS"]


def fuse_layernorms(layers: list, fns: list, outputs: set[str]) -> int:
    """Replace each ``mvn -> scale`` pair (the converter's ``nn.LayerNorm``) by one affine ``F.layer_norm``,
    as PyTorch runs it: the fused function takes the mvn's slot and the scale's becomes a no-op.

    Only where the scale alone reads the mvn output and its scale/bias vary over the normalized
    axes only (so they are layer_norm's weight and bias). Returns the number of pairs fused.
    """
    count = 0
    readers: dict[str, int] = {}
    subs = [s for layer in layers for net in quantizer.walk.sub_networks(layer) for s in quantizer.walk.iter_layers(net)]
    for layer in layers + subs:
        for name in layer.input:
            readers[name] = readers.get(name, 0) + 1
    for i in range(len(layers) - 1):
        a, b = layers[i], layers[i + 1]
        if a.WhichOneof("layer") != "mvn" or b.WhichOneof("layer") != "scale" or not a.mvn.normalizeVariance:
            continue
        out = a.output[0]
        if list(b.input) != [out] or readers.get(out, 0) != 1 or out in outputs:
            continue
        k = 3 if a.mvn.acrossChannels else 2
        fused = _cnn.layernorm(b, a.mvn, k, a.input[0], b.output[0])
        if fused is not None:
            fns[i], fns[i + 1] = fused, (lambda blobs: None)
            count += 1
    return count


def unsupported(spec: Any) -> list[str]:
    """Layer types of ``spec`` (loop bodies included) this peer cannot translate (empty: it can run the model)."""
    bad = []
    for layer in quantizer.walk.iter_layers(ModelIO(spec).nn):
        try:
            translate(layer)
        except NotImplementedError as e:
            t = layer.WhichOneof("layer")
            bad.append(t if str(e) == t else f"{t} ({e})")
    return sorted(set(bad))


class TorchPeer:
    """Run the translated network on blobs laid out like the numpy executor's (N, *per-sample shape)."""

    def __init__(self, spec: Any, clock=time.perf_counter) -> None:
        self.clock = clock
        self.io = ModelIO(spec)
        layers = list(self.io.nn.layers)
        self.types = [layer.WhichOneof("layer") for layer in layers]
        self.fns = [translate(layer) for layer in layers]
        #: layer types whose work the peer does inside another type's fused layer: {"scale": "mvn"}
        self.fused: dict[str, str] = {}
        if fuse_layernorms(layers, self.fns, set(self.io.output_names) | ({self.io.prob_blob} if self.io.prob_blob else set())):
            self.fused["scale"] = "mvn"

    @torch.inference_mode()
    def run(self, blobs: dict[str, np.ndarray], outputs: list[str],
            times: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """``blobs``: the numpy executor's input blobs; returns the named blobs as numpy arrays.

        ``times``: if given, the wall time of each top-level layer is added to ``times[layer type]``
        (a loop's time includes its body).
        """
        env = {k: torch.from_numpy(np.require(v, np.float32, ("C", "W"))) for k, v in blobs.items()}
        if times is None:
            for fn in self.fns:
                fn(env)
        else:
            clock = self.clock
            for t, fn in zip(self.types, self.fns):
                t0 = clock()
                fn(env)
                times[t] = times.get(t, 0.0) + clock() - t0
        return {k: env[k].numpy() for k in outputs}
