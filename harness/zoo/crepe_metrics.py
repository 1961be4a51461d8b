"""Pitch metrics for ``crepe_tiny`` in the shape of qsweep's ``metric.fn``: ``fn(outputs, labels, float_outputs) -> float``.

``rpa50``: raw pitch accuracy, the standard pitch-tracking figure (Salamon et al.):
the share of frames whose predicted pitch (argmax bin) is within 50 cents
(2 bins of 20 cents) of the true pitch. ``outputs`` may be the ``pitch_probs``
array (N, 360) or a dict of outputs holding it.
"""
from __future__ import annotations

import numpy as np


def _probs(outputs):
    if isinstance(outputs, dict):
        outputs = outputs["pitch_probs"]
    a = np.asarray(outputs)
    return a.reshape(a.shape[0], -1)


def rpa50(outputs, labels, float_outputs=None) -> float:
    pred = _probs(outputs).argmax(1)
    return float(np.mean(np.abs(pred - np.asarray(labels).astype(np.int64)) <= 2))


def cents_error(outputs, labels, float_outputs=None) -> float:
    """Mean absolute pitch error in cents of the argmax bin (lower is better)."""
    pred = _probs(outputs).argmax(1)
    return float(np.mean(np.abs(pred - np.asarray(labels).astype(np.int64))) * 20.0)
