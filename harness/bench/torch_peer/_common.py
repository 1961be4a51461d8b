"""Shared parts of the PyTorch peer: the translator registry, weight decoding, layout helpers.

A translator turns one Core ML layer into a function over the blob dict
(``{name: torch.Tensor}``, laid out like the numpy executor's blobs: a sample
axis in front of Core ML's per-sample shape). It raises ``NotImplementedError``
for a configuration the peer does not cover; :func:`harness.bench.torch_peer.unsupported`
reports those.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

import quantizer

Fn = Callable[[dict], None]
Translator = Callable[[Any, Any, list, list], Fn]

#: layer type -> translator(layer, params, inputs, outputs) -> Fn
TRANSLATORS: dict[str, Translator] = {}


def translates(*layer_types: str) -> Callable[[Translator], Translator]:
    """Decorator: register a translator for the given Core ML layer types."""

    def deco(fn: Translator) -> Translator:
        for t in layer_types:
            TRANSLATORS[t] = fn
        return fn
    return deco


def w(layer: Any, field: str, shape: tuple[int, ...], axis: int = 0) -> torch.Tensor:
    """Decode ``layer.<type>.<field>`` (dotted, digits index repeated fields) to a float32 tensor."""
    wp = quantizer.tensors.get_weight_params(layer, field)
    return torch.from_numpy(np.ascontiguousarray(quantizer.decode_weights(wp, shape, axis), dtype=np.float32))


def ax(a: int, x: torch.Tensor) -> int:
    """Internal axis of Core ML axis ``a`` (negative allowed) of blob ``x``."""
    r = x.dim() - 1
    return (a % r) + 1


def align(*xs: torch.Tensor) -> list[torch.Tensor]:
    """Insert size-1 axes behind the sample axis so every blob has the same rank (right-aligned broadcasting)."""
    r = max(x.dim() for x in xs)
    return [x if x.dim() == r else x.reshape((x.shape[0],) + (1,) * (r - x.dim()) + tuple(x.shape[1:])) for x in xs]


def samples(*xs: torch.Tensor) -> list[torch.Tensor]:
    """Expand the sample axis of every blob to the common N (constants carry N = 1)."""
    n = max(x.shape[0] for x in xs)
    return [x if x.shape[0] == n else x.expand((n,) + tuple(x.shape[1:])) for x in xs]


def unary(ins: list, outs: list, fn: Callable[[torch.Tensor], torch.Tensor]) -> Fn:
    """A one-input, one-output layer."""
    src, dst = ins[0], outs[0]

    def run(blobs):
        blobs[dst] = fn(blobs[src])
    return run


def per_sample(x: torch.Tensor, shape) -> torch.Tensor:
    """Reshape the per-sample part of ``x`` (a leading 1 in ``shape`` is the model's batch dim, kept)."""
    return x.reshape((x.shape[0],) + tuple(int(s) for s in shape))


def translate(layer: Any) -> Fn:
    """One layer -> a function over the blob dict (``NotImplementedError`` if the peer cannot)."""
    t = layer.WhichOneof("layer")
    if t not in TRANSLATORS:
        raise NotImplementedError(t)
    return TRANSLATORS[t](layer, getattr(layer, t), list(layer.input), list(layer.output))
