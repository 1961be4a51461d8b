"""ReLU-aware channel choice: an output channel feeding a ReLU is switched off where that costs less than quantizing it.

GPTQ (and bias correction) minimise a layer's error *before* its activation.
Behind a ReLU that objective misleads on channels that are almost never active:
their float output is practically always 0, round-to-nearest's error there
happens to be hidden by the ReLU, but GPTQ's zero-mean error switches inactive
positions on (measured on silero_vad_8k's ``conv_4``, see the README). For a
layer whose :class:`~quantizer.algorithms.stats.LayerStats` carries ``relu``
statistics (per output channel ``c``: ``E_c = sum relu(y_c)^2``, ``E[y_c]`` and
the share of rows with ``y_c > 0`` of the float pre-activation over the calibration
rows), each channel gets the
cheaper of two choices on the calibration rows:

- *quantized* (the algorithm's row, with its bias delta ``d_c``): its error
  after the ReLU is at most its error before it (the ReLU is 1-Lipschitz),
  ``e_c = dw H dw^T - 2 n d_c dw.m + n d_c^2`` with ``dw = w_c - w_hat_c``;
- *off*: stored weights all zero (a linear row with scale 0 and offset 0) and
  the bias clipped to ``min(b_c, 0)``, so the channel outputs exactly 0 after
  the ReLU; its error is exactly ``E_c``. The float bias ``b_c = E[y_c] - w_c.m``.

A channel is switched off when ``E_c < e_c`` and it is (almost) never active: on fewer
than ``max_activity`` (default 3%) of the calibration rows. The bound ``e_c`` can be
several times the real error after the ReLU; on channels active more often, switching
off by it was measured to hurt the model (crepe_tiny 2-bit: output SNR on the
calibration samples 11.8 -> 7.9 dB with no activity limit, 11.8 with 1% or 3%, 11.5 with
10%; the README has the measurement). Only the linear modes
(per-channel scale/offset) can store an exact zero row; LUT modes are left as
they are. The stored file is plain (the same ``rawValue`` + linear parameters).

>>> import numpy as np
>>> from quantizer.algorithms.stats import LayerStats
>>> from quantizer.algorithms.grids import rtn
>>> st = LayerStats(np.eye(3) * 100, np.zeros(3), 100, relu=np.array([[0.0, 50.0], [-3.0, 1.0], [0.0, 0.01]]))
>>> w = np.array([[1.0, -2.0, 0.25], [0.5, 0.25, 0.5]], np.float32)
>>> q, delta, off = off_channels(w, rtn(w, "linear", 1), None, st)
>>> off.tolist(), q.dequantize()[0].tolist()
([True, False], [0.0, 0.0, 0.0])
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .grids import QuantizedTensor
from .stats import LayerStats

__all__ = ["off_channels", "row_errors", "DEFAULT_ACTIVITY"]

_ROW_CHUNK = 64  # output channels per product in row_errors
#: Default most activity (share of calibration rows with ``y > 0``) of a channel that may be switched off.
DEFAULT_ACTIVITY = 0.03


def row_errors(dw: np.ndarray, stats: LayerStats, delta: np.ndarray | None,
               rows: np.ndarray | None = None) -> np.ndarray:
    """Per output channel, the summed squared error over the calibration rows of a layer whose
    weights are off by ``dw`` (stored shape) and whose bias is shifted by ``delta`` (or None):
    ``dw H dw^T - 2 n d dw.m + n d^2`` (block-diagonal ``H`` block by block). With ``rows``
    (output channel indices), ``dw`` holds only those channels' rows ``(len(rows), C)`` and the
    result is in their order. Channels go in chunks of :data:`_ROW_CHUNK` (bounded memory)."""
    g = stats.groups
    dw = np.asarray(dw)
    if rows is None:
        cout = dw.shape[0]
        rows = np.arange(cout)
    else:
        rows = np.asarray(rows, dtype=np.int64)
        cout = int(stats.relu.shape[1]) if stats.relu is not None else int(rows.max(initial=-1) + 1)
    flat = dw.reshape(rows.size, -1)
    r = cout // g
    gram = stats.gram
    n = float(stats.rows)
    out = np.zeros(rows.size)
    for a in range(0, rows.size, _ROW_CHUNK):
        sel = rows[a:a + _ROW_CHUNK]
        for gi in np.unique(sel // r):
            k = np.nonzero(sel // r == gi)[0]
            part = flat[a + k].astype(np.float64)  # (k, C)
            if stats.block is None:
                quad = np.einsum("kc,kc->k", part @ gram[gi], part)
            else:
                b, c = stats.block, stats.columns
                quad = np.zeros(k.size)
                for j in range(gram.shape[1]):
                    p = part[:, j * b:min((j + 1) * b, c)]
                    quad += np.einsum("kc,kc->k", p @ np.asarray(gram[gi, j])[:p.shape[1], :p.shape[1]], p)
            if delta is not None:
                dd = np.asarray(delta, np.float64).reshape(-1)[sel[k]]
                quad += -2.0 * n * dd * (part @ stats.mean[gi]) + n * dd * dd
            out[a + k] = quad
    return np.maximum(out, 0.0)


def off_channels(weights: np.ndarray, qt: QuantizedTensor, delta: np.ndarray | None, stats: LayerStats,
                 max_activity: float = DEFAULT_ACTIVITY) -> tuple[QuantizedTensor, np.ndarray | None, np.ndarray]:
    """Switch off the channels of ``qt`` (quantized ``weights``; bias delta ``delta`` or None)
    active on fewer than ``max_activity`` of the calibration rows where that costs less on
    them (module docstring).

    Returns ``(tensor, delta, off)``: the tensor with off rows stored as zeros, the bias delta
    (None when nothing needs adding: no delta given and no off channel with a positive bias)
    and the boolean mask of switched-off channels. Unchanged when ``stats.relu`` is None or the
    mode is not a linear one.
    """
    cout = int(np.asarray(weights).shape[0])
    none = np.zeros(cout, dtype=bool)
    linear = qt.mode in ("linear", "linear_symmetric")  # a LUT cannot store an exact zero row
    if stats.relu is None or not max_activity > 0 or not linear or stats.relu.shape[1] != cout:
        return qt, delta, none
    energy, out_mean, active = stats.relu
    cand = np.nonzero(active < max_activity)[0]  # (almost) never active: the only ones that may go off
    if cand.size == 0:
        return qt, delta, none
    q = qt.indices.reshape(cout, -1)[cand].astype(np.float32)
    w = np.asarray(weights, np.float32).reshape(cout, -1)[cand]
    deq = q * qt.scale[cand, None] + qt.bias[cand, None]  # the rows as the runtime decodes them
    err = row_errors(w - deq, stats, delta, cand)
    off = np.zeros(cout, dtype=bool)
    off[cand] = energy[cand] < err
    if not off.any():
        return qt, delta, off
    r = cout // stats.groups
    wm = np.asarray(weights, np.float64).reshape(cout, -1)[off]
    bias = out_mean[off] - np.einsum("kc,kc->k", wm, stats.mean[np.nonzero(off)[0] // r])  # the float b_c
    new_delta = np.zeros(cout) if delta is None else np.array(delta, np.float64).reshape(-1)
    new_delta[off] = -np.maximum(bias, 0.0)  # b_c + delta_c = min(b_c, 0)
    if delta is None and not new_delta.any():
        new_delta = None
    idx = qt.indices.reshape(cout, -1).copy()
    idx[off] = 0
    scale, offset = qt.scale.copy(), qt.bias.copy()
    scale[off], offset[off] = 0.0, 0.0
    info = dict(qt.info, relu_off_channels=int(off.sum()))
    return dataclasses.replace(qt, indices=idx.reshape(-1), scale=scale, bias=offset, info=info), new_delta, off
