"""Empirical bias correction (Nagel et al. 2019): shift each output channel's bias by the mean error of its quantized weights.

The float layer computes ``y = W x + b``, the quantized one ``y' = W_hat x + b'``
(per group, on the rows ``x`` of :mod:`quantizer.algorithms.stats`). Asking the two to agree
on average over the calibration rows,

    E[y'] = W_hat E[x] + b'  ==  W E[x] + b = E[y]
    =>  b' = b + (W - W_hat) E[x],

so the delta to add is ``(W - W_hat) @ E[x]`` per output channel. After it the
mean output error on the calibration set is zero, and the mean squared output
error drops by exactly ``||(W - W_hat) E[x]||^2`` per row (the error's mean
part; its covariance part is untouched): it never increases on the calibration
data. It works after any algorithm (round-to-nearest, GPTQ, k-means).

>>> import numpy as np
>>> W = np.array([[1.0, 2.0]]); W_hat = np.array([[1.0, 1.5]])
>>> bias_correction(W, W_hat, np.array([0.0, 4.0])).tolist()
[2.0]
"""
from __future__ import annotations

import numpy as np

from .stats import LayerStats, matricize

__all__ = ["bias_correction"]


def bias_correction(weights: np.ndarray, quantized: np.ndarray, mean_x: np.ndarray | LayerStats) -> np.ndarray:
    """The per-output-channel delta ``(W - W_hat) @ E[x]`` (float64, length Cout) to add to the bias.

    Args:
        weights: float weights, stored shape (output channels on axis 0; see :mod:`quantizer.algorithms.stats`).
        quantized: the dequantized weights, same shape (e.g. ``QuantizedTensor.dequantize()``).
        mean_x: ``E[x]`` per group, ``(G, C)`` or ``(C,)`` for one group, or the layer's
            :class:`LayerStats` (its ``mean``). The group count comes from it.

    The integrator adds the delta to the layer's float bias, creating one (``hasBias``) where
    the layer had none; a bias stored quantized must be re-encoded after the addition.
    """
    mean = mean_x.mean if isinstance(mean_x, LayerStats) else np.asarray(mean_x, dtype=np.float64)
    if mean.ndim == 1:
        mean = mean[None]
    w = np.asarray(weights)
    wq = np.asarray(quantized)
    if w.shape != wq.shape:
        raise ValueError(f"weights {w.shape} and quantized {wq.shape} differ in shape")
    groups, c = mean.shape
    wm = matricize(w, groups).astype(np.float64)
    wm -= matricize(wq, groups)
    if wm.shape[2] != c:
        raise ValueError(f"weights have {wm.shape[2]} columns per group, mean_x has {c}")
    return np.matmul(wm, mean[:, :, None]).reshape(-1)
