"""Weight decoding for the executor: one place that turns WeightParams into float32 arrays.

Delegates to :func:`quantizer.decode_weights` (every encoding: float32,
float16, n-bit linear, LUT, int8). Decoded once per model by the runner's
:class:`~harness.executors.runner.BuildContext`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def has_values(wp: Any) -> bool:
    """True if the WeightParams message stores any weight values."""
    return bool(len(wp.floatValue) or len(wp.float16Value) or len(wp.rawValue) or len(wp.int8RawValue))


def decode(wp: Any, shape: Sequence[int], channel_axis: int = 0) -> np.ndarray:
    """Decode ``wp`` to a float32 array of ``shape`` (quantizer errors propagate)."""
    try:
        from quantizer import decode_weights
    except ImportError:  # quantizer core not landed yet: float encodings only
        return _decode_float(wp, shape)
    return np.asarray(decode_weights(wp, tuple(shape), channel_axis), dtype=np.float32).reshape(tuple(shape))


def _decode_float(wp: Any, shape: Sequence[int]) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    if len(wp.floatValue):
        a = np.asarray(wp.floatValue, dtype=np.float32)
    elif len(wp.float16Value):
        a = np.frombuffer(wp.float16Value, dtype="<f2").astype(np.float32)
    else:
        raise ValueError("quantized weights need quantizer.decode_weights")
    if a.size != n:
        raise ValueError(f"holds {a.size} values, the layer needs {n} for shape {tuple(shape)}")
    return a.reshape(tuple(shape))
