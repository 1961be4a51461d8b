"""Which tensors a calibration-aware algorithm handles, the codec a plan gives each, and the per-layer record.

The algorithms work on a weight matrix whose rows are output channels and
whose columns are the inputs it multiplies (:mod:`quantizer.algorithms.stats`):
the ``weights`` of a ``convolution`` (not a deconvolution), an
``innerProduct`` and a one-input ``batchedMatmul``. Everything else a plan
quantizes -- recurrent gate matrices, embedding tables, deconvolution
weights, batchnorm/scale/bias parameters, constants -- falls back to
round-to-nearest: :func:`calibrated_codec` returns the plain codec with a
``note`` saying why (logged once per layer and reason), and biases are left to
their own codec (bias correction changes them through the weights' codec).
:func:`applied_algorithms` is the per-layer record of what a plan applies.

>>> from quantizer.codecs import Codec
>>> applied_algorithms({("fc", "weights"): Codec("linear", 4, note="gptq: no statistics")})
{'fc': 'rtn (fallback: gptq: no statistics)'}
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from ..codecs import ALGORITHM_MODES, ALGORITHMS, Codec
from ..errors import InvalidArgumentError

__all__ = ["CALIBRATED_LAYER_TYPES", "unsupported_reason", "calibrated_codec", "applied_algorithms", "check_request"]

log = logging.getLogger("quantizer")

#: Layer types whose ``weights`` the calibration-aware algorithms handle.
CALIBRATED_LAYER_TYPES = ("convolution", "innerProduct", "batchedMatmul")
_REASONS = {
    "simpleRecurrent": "recurrent weight matrix (its inputs include the layer's own state)",
    "gru": "recurrent gate matrix (its inputs include the layer's own state)",
    "uniDirectionalLSTM": "recurrent gate matrix (its inputs include the layer's own state)",
    "biDirectionalLSTM": "recurrent gate matrix (its inputs include the layer's own state)",
    "embedding": "embedding table (its input is an index, not a vector)",
    "embeddingND": "embedding table (its input is an index, not a vector)",
}
_logged: set[tuple[str, str]] = set()


def unsupported_reason(layer: Any, field: str) -> str | None:
    """Why no calibration-aware algorithm handles tensor ``field`` of ``layer`` (None: one does)."""
    kind = layer.WhichOneof("layer")
    if kind in _REASONS:
        return _REASONS[kind]
    if kind not in CALIBRATED_LAYER_TYPES:
        return f"{kind} parameters (not a matrix multiply)"
    if field != "weights":
        return f"{field} of a {kind} (only its weight matrix is calibrated)"
    if kind == "convolution" and layer.convolution.isDeconvolution:
        return "deconvolution weights (a scatter, output channels on axis 1)"
    if kind == "batchedMatmul" and len(layer.input) != 1:
        return "batchedMatmul with two dynamic inputs (no stored weights)"
    return None


def check_request(algorithm: str, bias_correction: bool, calibration: Mapping[str, Any] | None) -> bool:
    """Validate a plan-wide request; True when it is calibration-aware (then ``calibration`` is required).

    Raises:
        InvalidArgumentError: unknown algorithm, or a calibrated request without statistics.
    """
    if algorithm not in ALGORITHMS:
        raise InvalidArgumentError(f"unknown algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    calibrated = algorithm != "rtn" or bool(bias_correction)
    if calibrated and calibration is None:
        what = f"algorithm={algorithm!r}" + (" with bias_correction" if bias_correction else "")
        raise InvalidArgumentError(
            f"{what} needs calibration statistics: pass calibration=<layer name -> LayerStats>, e.g. from "
            "harness.calibration.collect_stats(model, feeds)")
    if calibration is not None and not isinstance(calibration, Mapping):
        raise InvalidArgumentError(f"calibration must map layer names to LayerStats, got {type(calibration).__name__}")
    return calibrated


def _fallback(codec: Codec, layer: Any, reason: str, algorithm: str) -> Codec:
    key = (layer.name, reason)
    if key not in _logged:
        _logged.add(key)
        log.info("layer %r: %s not applied (%s); round-to-nearest", layer.name, algorithm, reason)
    return Codec(codec.mode, codec.nbits, codec.lut_function, note=f"{algorithm}: {reason}")


def calibrated_codec(layer: Any, field: str, codec: Codec, *, algorithm: str = "rtn", bias_correction: bool = False,
                     options: Mapping[str, Any] | None = None, calibration: Mapping[str, Any] | None = None,
                     shape: tuple[int, ...] | None = None) -> Codec:
    """The codec a plan gives tensor ``field`` of ``layer`` when ``codec`` is requested with
    ``algorithm`` / ``bias_correction``: the calibration-aware codec with the layer's statistics,
    or ``codec`` itself (biases; float16 and dequantization; plain rtn), or the plain codec with a
    fallback ``note`` (a tensor no algorithm handles, a layer without statistics).

    Raises:
        InvalidArgumentError: statistics that do not fit the tensor's ``shape`` (another model's).
    """
    requested = f"{algorithm}{'+bc' if bias_correction else ''}"
    if (algorithm == "rtn" and not bias_correction) or not codec.quantizes or codec.mode == "dequantization":
        return codec
    kind = layer.WhichOneof("layer")
    if field != "weights" and kind in CALIBRATED_LAYER_TYPES:
        return codec  # a bias: corrected (if asked) through the weights' codec, stored with its own
    reason = unsupported_reason(layer, field)
    if reason is not None:
        return _fallback(codec, layer, reason, requested)
    stats = (calibration or {}).get(layer.name)
    if stats is None:
        return _fallback(codec, layer, "no calibration statistics for this layer (its input was not observed)",
                         requested)
    if shape is not None:
        cols = 1
        for s in shape[1:]:
            cols *= int(s)
        if cols != stats.columns or int(shape[0]) % stats.groups:
            raise InvalidArgumentError(
                f"layer {layer.name!r}: calibration statistics of {stats.groups} group(s) x {stats.columns} columns "
                f"do not fit its weights of shape {tuple(shape)}: were they collected on another model?")
    algo, note = algorithm, ""
    modes = ALGORITHM_MODES.get(algorithm)
    if modes is not None and codec.mode not in modes:
        if not bias_correction:
            return _fallback(codec, layer, f"{algorithm} handles {', '.join(modes)}, not {codec.mode}", requested)
        algo, note = "rtn", f"{algorithm}: handles {', '.join(modes)}, not {codec.mode}"
    opts = dict(options or {}) if algo == "gptq" else {}
    return Codec(codec.mode, codec.nbits, codec.lut_function, algorithm=algo, bias_correction=bool(bias_correction),
                 options=opts, stats=stats, note=note)


def _label(codec: Codec) -> str:
    base = codec.algorithm + ("+bc" if codec.bias_correction else "")
    return f"{base} (fallback: {codec.note})" if codec.note else base


def applied_algorithms(plan: Mapping[tuple[str, str], Any]) -> dict[str, str]:
    """``{layer: what was applied}`` for every layer with an n-bit entry in ``plan``: ``gptq``,
    ``gptq+bc``, ``awkm``, ``rtn+bc``, ``rtn``, or ``rtn (fallback: <why>)`` where a requested
    algorithm could not be applied (a calibration-aware entry wins over its layer's biases)."""
    out: dict[str, tuple[int, str]] = {}
    for (layer, _field), codec in plan.items():
        if codec is None or not codec.quantizes or codec.mode == "dequantization":
            continue
        rank = 2 if codec.calibrated else 1 if codec.note else 0
        if layer not in out or rank > out[layer][0]:
            out[layer] = (rank, _label(codec))
    return {layer: label for layer, (_, label) in sorted(out.items())}
