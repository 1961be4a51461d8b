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
