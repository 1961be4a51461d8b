"""Weight decoding for the executor: one place that turns WeightParams into float32 arrays.

Delegates to :func:`quantizer.decode_weights` (every encoding: float32,
float16, n-bit linear, LUT, int8). Decoded once per model by the runner's
:class:`~harness.executors.runner.BuildContext`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from quantizer import decode_weights


def has_values(wp: Any) -> bool:
    """True if the WeightParams message stores any weight values."""
    return bool(len(wp.floatValue) or len(wp.float16Value) or len(wp.rawValue) or len(wp.int8RawValue))


def decode(wp: Any, shape: Sequence[int], channel_axis: int = 0, name: str = "weights") -> np.ndarray:
    """Decode ``wp`` to a C-contiguous float32 array of ``shape`` (quantizer errors propagate).

    ``channel_axis`` is the axis a per-channel linear scale/bias runs along (1 for
    deconvolution weights); ``name`` labels error messages (``"layer.field"``).
    """
    a = decode_weights(wp, tuple(int(s) for s in shape), channel_axis, name=name)
    return np.ascontiguousarray(a, dtype=np.float32).reshape(tuple(shape))
