"""The ``upsample`` layer: nearest neighbour and bilinear (DEFAULT / ALIGN_CORNERS_TRUE / ALIGN_CORNERS_FALSE),
integer or fractional scaling factors."""
from __future__ import annotations

import math

import numpy as np

from harness.executors.ops.base import F32, Op, f32, rank
from harness.executors.registry import register

NN, BILINEAR = 0, 1
DEFAULT, ALIGN_TRUE, ALIGN_FALSE = 0, 1, 2


def grid(n_in: int, n_out: int, mode: int) -> np.ndarray:
    """Sampling positions in input coordinates for each output index (NeuralNetwork.proto)."""
    i = np.arange(n_out, dtype=np.float64)
    if mode == ALIGN_TRUE:
        spacing = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        g = i * spacing
    elif mode == ALIGN_FALSE:
        spacing = n_in / n_out
        g = i * spacing + 0.5 * spacing - 0.5
    else:
        spacing = (n_in - n_in / n_out) / (n_out - 1) if n_out > 1 else 0.0
        g = i * spacing
    return np.clip(g, 0, n_in - 1)


def interp_matrix(n_in: int, n_out: int, mode: int) -> np.ndarray:
    """(n_out, n_in) float32 linear-interpolation weights along one axis."""
    g = grid(n_in, n_out, mode)
    lo = np.floor(g).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = g - lo
    m = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1 - frac)
    np.add.at(m, (rows, hi), frac)
    return m.astype(F32)


@register("upsample")
class Upsample(Op):
    """Upsample the last two axes of ``(..., C, H, W)``.

    NN repeats pixels by integer factors; BILINEAR is two small matrix
    multiplies (H then W) with the interpolation weights of the layer's
    ``linearUpsampleMode``. Fractional factors give ``floor(scale * size)``.
    """

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.mode = int(params.mode)
        self.linear_mode = int(getattr(params, "linearUpsampleMode", 0))
        frac = [float(v) for v in getattr(params, "fractionalScalingFactor", [])]
        ints = [int(v) for v in params.scalingFactor]
        if frac:
            if self.mode != BILINEAR:
                raise self.error("fractionalScalingFactor needs BILINEAR mode")
            self.scale = (frac[0], frac[1] if len(frac) > 1 else frac[0])
        else:
            ints = ints or [1, 1]
            self.scale = (ints[0], ints[1] if len(ints) > 1 else ints[0])
        self._mats: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def run(self, x):
        if rank(x) < 3:
            raise self.error(f"needs an input of rank >= 3 (C, H, W); got Core ML shape {tuple(x.shape[1:])}")
        x = f32(x)
        h, w = x.shape[-2:]
        sh, sw = self.scale
        if self.mode == NN:
            return np.repeat(np.repeat(x, int(sh), axis=-2), int(sw), axis=-1)
        ho, wo = int(math.floor(h * sh + 1e-9)), int(math.floor(w * sw + 1e-9))
        if (h, w) not in self._mats:
            self._mats[(h, w)] = (interp_matrix(h, ho, self.linear_mode), interp_matrix(w, wo, self.linear_mode).T.copy())
        mh, mw = self._mats[(h, w)]
        y = x @ mw  # (..., H, Wo)
        return np.ascontiguousarray(np.swapaxes(np.swapaxes(y, -1, -2) @ mh.T, -1, -2))  # (..., Ho, Wo)
