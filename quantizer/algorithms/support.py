"""Which tensors a calibration-aware algorithm handles, the codec a plan gives each, and the per-layer record.

The algorithms work on a weight matrix whose rows are output channels and
whose columns are the inputs it multiplies (:mod:`quantizer.algorithms.stats`):
the ``weights`` of a ``convolution`` (not a deconvolution), an
``innerProduct`` and a one-input ``batchedMatmul``, and the gate matrices of
``uniDirectionalLSTM`` / ``biDirectionalLSTM`` layers: every input-to-gate
matrix ``W_* (H, X)`` of a direction multiplies the step input ``x_t``, every
recurrent matrix ``R_* (H, H)`` the previous hidden state ``h_{t-1}``; their
statistics (over samples and steps, the float model's ``h``) are two per
direction, keyed by :func:`stats_key`. A plan-wide ``bias_correction`` is not
applied to them (:data:`LSTM_GATE_BIAS_CORRECTION`: measured harmful, see the
README; the gate matrices get the algorithm alone, with a note); a codec built
with ``bias_correction=True`` for a gate matrix corrects its gate's bias vector
(:func:`bias_field`). The four vectors of a ``batchnorm`` layer (``computeMeanVar`` false) get
the ``affine`` codec whatever calibration-aware algorithm was requested: they are chosen together
(:mod:`quantizer.algorithms.affine`) on the statistics of the layer's input (one group per
channel, one column). Everything else a plan
quantizes -- GRU and simpleRecurrent matrices, LSTM peepholes, embedding tables, deconvolution
weights, scale/bias parameters, constants -- falls back to
round-to-nearest: :func:`calibrated_codec` returns the plain codec with a
``note`` saying why (logged once per layer and reason), and biases are left to
their own codec (bias correction changes them through the weights' codec).
:func:`applied_algorithms` is the per-layer record of what a plan applies.

>>> from quantizer.codecs import Codec
>>> stats_key("lstm", "weightParams.1.forgetGateRecursionMatrix"), bias_field("lstm", "weightParams.outputGateWeightMatrix")
('lstm|weightParams.1.h', 'weightParams.outputGateBiasVector')
>>> applied_algorithms({("fc", "weights"): Codec("linear", 4, note="gptq: no statistics")})
{'fc': 'rtn (fallback: gptq: no statistics)'}
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping

from ..codecs import ALGORITHM_MODES, ALGORITHMS, Codec
from ..errors import InvalidArgumentError

__all__ = ["CALIBRATED_LAYER_TYPES", "LSTM_LAYER_TYPES", "AFFINE_LAYER_TYPES", "affine_reason", "unsupported_reason", "calibrated_codec", "applied_algorithms",
           "check_request", "stats_key", "bias_field", "lstm_prefixes", "lstm_matrix", "observed"]

log = logging.getLogger("quantizer")

#: Layer types whose ``weights`` the calibration-aware algorithms handle.
CALIBRATED_LAYER_TYPES = ("convolution", "innerProduct", "batchedMatmul")
#: Layer types whose parameter vectors are chosen together by the ``affine`` codec.
AFFINE_LAYER_TYPES = ("batchnorm",)
#: Layer types whose gate matrices (``weightParams[.d].<gate>WeightMatrix`` / ``RecursionMatrix``) are handled.
LSTM_LAYER_TYPES = ("uniDirectionalLSTM", "biDirectionalLSTM")
_LSTM_MATRIX = re.compile(r"^(weightParams\.(?:\d+\.)?)(inputGate|forgetGate|blockInput|outputGate)"
                          r"(WeightMatrix|RecursionMatrix)$")
#: Whether a plan-wide ``bias_correction`` request corrects LSTM gate biases. Off, by measurement
#: (python -m harness.bench calibrated, 2026-12-01): on resemblyzer (three LSTMs) it cost 3-5 dB of output
#: SNR (kmeans_lut 4-bit GPTQ 5.0 dB, GPTQ+BC 0.1 dB; RTN 4.4, RTN+BC -2.2); on silero_vad_8k within +-0.3 dB.
LSTM_GATE_BIAS_CORRECTION = False
_GATE_BC_NOTE = "bias correction: not applied to LSTM gate matrices (measured harmful)"
_REASONS = {
    "simpleRecurrent": "recurrent weight matrix (its inputs include the layer's own state)",
    "gru": "recurrent gate matrix (its recurrent inputs are the reset-gated state)",
    "embedding": "embedding table (its input is an index, not a vector)",
    "embeddingND": "embedding table (its input is an index, not a vector)",
}
_logged: set[tuple[str, str]] = set()


def lstm_matrix(field: str) -> tuple[str, str, str] | None:
    """``(direction prefix, gate, "x" | "h")`` of an LSTM gate-matrix field, else None."""
    m = _LSTM_MATRIX.match(field)
    if m is None:
        return None
    return m.group(1), m.group(2), "x" if m.group(3) == "WeightMatrix" else "h"


def lstm_prefixes(layer: Any) -> list[str]:
    """The direction prefixes of an LSTM layer's fields (``weightParams.``; ``weightParams.0.``, ``.1.``)."""
    if layer.WhichOneof("layer") == "uniDirectionalLSTM":
        return ["weightParams."]
    return [f"weightParams.{d}." for d in range(len(layer.biDirectionalLSTM.weightParams))]


def stats_key(layer_name: str, field: str = "weights") -> str:
    """The calibration statistics' key of tensor ``field`` of layer ``layer_name``: the layer name,
    or for an LSTM gate matrix ``<layer>|<direction prefix>x`` (the step inputs, ``W_*``) or
    ``...h`` (the previous hidden states, ``R_*``)."""
    m = lstm_matrix(field)
    return layer_name if m is None else f"{layer_name}|{m[0]}{m[2]}"


def bias_field(layer: Any, field: str) -> str:
    """The bias a correction of weight tensor ``field`` is added to (``bias``, or the LSTM gate's
    ``<prefix><gate>BiasVector``)."""
    m = lstm_matrix(field)
    return "bias" if m is None else f"{m[0]}{m[1]}BiasVector"


def observed(layer: Any) -> bool:
    """True when the statistics collector observes ``layer`` (it has a tensor an algorithm handles)."""
    kind = layer.WhichOneof("layer")
    if kind in AFFINE_LAYER_TYPES:
        return affine_reason(layer) is None
    return kind in LSTM_LAYER_TYPES or unsupported_reason(layer, "weights") is None


def affine_reason(layer: Any) -> str | None:
    """Why the ``affine`` fit does not apply to a batchnorm ``layer`` (None: it does)."""
    if layer.batchnorm.computeMeanVar:
        return ("batchnorm computing its mean and variance from the data (gamma and beta act on normalized "
                "inputs: round-to-nearest is already the best fit)")
    return None


def unsupported_reason(layer: Any, field: str) -> str | None:
    """Why no calibration-aware algorithm handles tensor ``field`` of ``layer`` (None: one does)."""
    kind = layer.WhichOneof("layer")
    if kind in LSTM_LAYER_TYPES:
        return None if lstm_matrix(field) is not None else f"{field} of a {kind} (only its gate matrices are calibrated)"
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
    if kind in AFFINE_LAYER_TYPES:
        return _affine_codec(layer, codec, requested, calibration)
    if (field != "weights" and kind in CALIBRATED_LAYER_TYPES) or (kind in LSTM_LAYER_TYPES
                                                                   and field.endswith("BiasVector")):
        return codec  # a bias: corrected (if asked) through the weights' codec, stored with its own
    reason = unsupported_reason(layer, field)
    if reason is not None:
        return _fallback(codec, layer, reason, requested)
    stats = (calibration or {}).get(stats_key(layer.name, field))
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
    if bias_correction and kind in LSTM_LAYER_TYPES and not LSTM_GATE_BIAS_CORRECTION:
        if algorithm == "rtn":
            return _fallback(codec, layer, _GATE_BC_NOTE, requested)
        bias_correction, note = False, _GATE_BC_NOTE
    modes = ALGORITHM_MODES.get(algorithm)
    if modes is not None and codec.mode not in modes:
        if not bias_correction:
            return _fallback(codec, layer, f"{algorithm} handles {', '.join(modes)}, not {codec.mode}", requested)
        algo, note = "rtn", f"{algorithm}: handles {', '.join(modes)}, not {codec.mode}"
    opts = dict(options or {}) if algo == "gptq" else {}
    return Codec(codec.mode, codec.nbits, codec.lut_function, algorithm=algo, bias_correction=bool(bias_correction),
                 options=opts, stats=stats, note=note)


def _affine_codec(layer: Any, codec: Codec, requested: str, calibration: Mapping[str, Any] | None) -> Codec:
    """A batchnorm field's codec: ``affine`` with the layer's statistics, or a fallback with a note."""
    reason = affine_reason(layer)
    if reason is not None:
        return _fallback(codec, layer, reason, requested)
    modes = ALGORITHM_MODES["affine"]
    if codec.mode not in modes:
        return _fallback(codec, layer, f"affine handles {', '.join(modes)}, not {codec.mode}", requested)
    stats = (calibration or {}).get(layer.name)
    if stats is None:
        return _fallback(codec, layer, "no calibration statistics for this layer (its input was not observed)",
                         requested)
    channels = int(layer.batchnorm.channels)
    if stats.columns != 1 or stats.groups != channels:
        raise InvalidArgumentError(
            f"layer {layer.name!r}: calibration statistics of {stats.groups} group(s) x {stats.columns} columns do "
            f"not fit a batchnorm of {channels} channels (one group per channel, one column): were they collected "
            "on another model?")
    return Codec(codec.mode, codec.nbits, algorithm="affine", stats=stats)


def _label(codec: Codec) -> str:
    base = codec.algorithm + ("+bc" if codec.bias_correction else "")
    return f"{base} (fallback: {codec.note})" if codec.note else base


def applied_algorithms(plan: Mapping[tuple[str, str], Any]) -> dict[str, str]:
    """``{layer: what was applied}`` for every layer with an n-bit entry in ``plan``: ``gptq``,
    ``gptq+bc``, ``awkm``, ``affine`` (batchnorm), ``rtn+bc``, ``rtn``, or ``rtn (fallback: <why>)`` where a requested
    algorithm could not be applied (a calibration-aware entry wins over its layer's biases)."""
    out: dict[str, tuple[int, str]] = {}
    for (layer, _field), codec in plan.items():
        if codec is None or not codec.quantizes or codec.mode == "dequantization":
            continue
        rank = 2 if codec.calibrated else 1 if codec.note else 0
        if layer not in out or rank > out[layer][0]:
            out[layer] = (rank, _label(codec))
    return {layer: label for layer, (_, label) in sorted(out.items())}
