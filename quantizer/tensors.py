"""Which weight tensors a model holds, with their logical shapes.

For every layer type that coremltools' ``quantize_weights`` touches, this
module knows which ``WeightParams`` fields it quantizes, the shape coremltools
assumes for each, and the axis that holds output channels (per-channel linear
quantization). Shapes follow coremltools exactly (e.g. ``scale``/``bias``/
``loadConstant`` tensors are flattened to 1-D, deconvolution weights are
``[Cin, Cout/groups, kH, kW]`` with channel axis 1), so a codec applied here
produces the same bytes coremltools does.

A *field* is the dotted path of the WeightParams inside the layer's params
message: ``weights``, ``bias``, ``gamma``, ``weightParams.inputGateWeightMatrix``,
``weightParams.1.forgetGateBiasVector`` (bidirectional LSTM: 0 forward,
1 backward), ``PReLU.alpha``.

>>> import quantizer
>>> quantizer.weight_table("model.mlmodel")          # doctest: +SKIP
        layer   layer_type    field        shape  count encoding  nbits  stored_bytes ...
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np

from .io import load
from .walk import iter_layers

__all__ = [
    "QUANTIZABLE_LAYER_TYPES",
    "WeightSlot",
    "layer_slots",
    "WeightTensor",
    "layer_weights",
    "iter_weight_slots",
    "weight_tensors",
    "weight_table",
    "get_weight_params",
    "encoding_of",
    "encoding_label",
    "stored_bytes",
    "element_count",
]

#: Layer types whose weights coremltools' quantize_weights quantizes (plus loop/branch bodies),
#: in the order of coremltools' ``QuantizedLayerSelector.quantizable_layer_types``.
QUANTIZABLE_LAYER_TYPES = (
    "convolution",
    "innerProduct",
    "embedding",
    "embeddingND",
    "batchnorm",
    "scale",
    "bias",
    "loadConstant",
    "loadConstantND",
    "simpleRecurrent",
    "gru",
    "uniDirectionalLSTM",
    "biDirectionalLSTM",
    "batchedMatmul",
)

_LSTM_MATRICES = ("inputGate", "forgetGate", "blockInput", "outputGate")


@dataclass(frozen=True)
class WeightSlot:
    """One WeightParams of a layer, as coremltools sees it."""

    field: str
    shape: tuple[int, ...]
    channel_axis: int
    quantizable: bool
    #: ``bias``-like fields of conv/innerProduct/batchedMatmul are asked of the
    #: selector separately (``do_quantize(layer, weight_param="bias")``).
    selector_param: str | None = None


@dataclass(frozen=True)
class WeightTensor:
    """A weight tensor of a model: where it is, its shape and how it is stored."""

    layer: str
    layer_type: str
    field: str
    shape: tuple[int, ...]
    count: int
    encoding: str  # float32 | float16 | linear | lut | int8 | empty
    nbits: int
    stored_bytes: int
    channel_axis: int
    quantizable: bool


def layer_slots(layer: Any) -> list[WeightSlot]:
    """The WeightParams slots of one layer (present or not), in coremltools' order."""
    kind = layer.WhichOneof("layer")
    p = getattr(layer, kind) if kind else None
    S = WeightSlot
    if kind == "convolution":
        cout, cin = p.outputChannels, p.kernelChannels
        kh, kw = (list(p.kernelSize) + [3, 3])[:2] if len(p.kernelSize) else (3, 3)
        g = max(1, p.nGroups)
        if p.isDeconvolution:
            w = S("weights", (cin, cout // g, kh, kw), 1, True)
        else:
            w = S("weights", (cout, cin, kh, kw), 0, True)
        out = [w]
        if p.hasBias:
            out.append(S("bias", (cout,), 0, True, "bias"))
        return out
    if kind == "innerProduct":
        out = [S("weights", (p.outputChannels, p.inputChannels), 0, True)]
        if p.hasBias:
            out.append(S("bias", (p.outputChannels,), 0, True, "bias"))
        return out
    if kind == "batchedMatmul":
        x1, x2 = p.weightMatrixFirstDimension, p.weightMatrixSecondDimension
        out = [S("weights", (x2, x1), 0, True)]
        if p.hasBias:
            out.append(S("bias", (x2,), 0, True, "bias"))
        return out
    if kind == "embedding":
        out = [S("weights", (p.outputChannels, p.inputDim), 0, True)]
        if p.hasBias:
            out.append(S("bias", (p.outputChannels,), 0, True))
        return out
    if kind == "embeddingND":
        out = [S("weights", (p.embeddingSize, p.vocabSize), 0, True)]
        if p.hasBias:
            out.append(S("bias", (p.embeddingSize,), 0, True))
        return out
    if kind == "batchnorm":
        return [S(f, (p.channels,), 0, True) for f in ("gamma", "beta", "mean", "variance")]
    if kind == "scale":
        out = [S("scale", (int(np.prod(p.shapeScale)),), 0, True)]
        if p.hasBias:
            out.append(S("bias", (int(np.prod(p.shapeBias)),), 0, True))
        return out
    if kind == "bias":
        return [S("bias", (int(np.prod(p.shape)),), 0, True)]
    if kind in ("loadConstant", "loadConstantND"):
        return [S("data", (int(np.prod(p.shape)),), 0, True)]
    if kind == "simpleRecurrent":
        i, o = p.inputVectorSize, p.outputVectorSize
        out = [S("weightMatrix", (o, i), 0, True), S("recursionMatrix", (o, o), 0, True)]
        if p.hasBiasVector:
            out.append(S("biasVector", (o,), 0, True))
        return out + _activation_slots(p.activation, "activation.")
    if kind == "gru":
        i, o = p.inputVectorSize, p.outputVectorSize
        out = [S(f"{g}WeightMatrix", (o, i), 0, True) for g in ("updateGate", "resetGate", "outputGate")]
        out += [S(f"{g}RecursionMatrix", (o, o), 0, True) for g in ("updateGate", "resetGate", "outputGate")]
        if p.hasBiasVectors:
            out += [S(f"{g}BiasVector", (o,), 0, True) for g in ("updateGate", "resetGate", "outputGate")]
        for k, act in enumerate(p.activations):
            out += _activation_slots(act, f"activations.{k}.")
        return out
    if kind == "uniDirectionalLSTM":
        out = _lstm_slots(p.inputVectorSize, p.outputVectorSize, p.params.hasPeepholeVectors, "weightParams.")
        for k, act in enumerate(p.activations):
            out += _activation_slots(act, f"activations.{k}.")
        return out
    if kind == "biDirectionalLSTM":
        out = []
        for d in range(len(p.weightParams)):
            out += _lstm_slots(p.inputVectorSize, p.outputVectorSize, p.params.hasPeepholeVectors, f"weightParams.{d}.")
        for name in ("activationsForwardLSTM", "activationsBackwardLSTM"):
            for k, act in enumerate(getattr(p, name)):
                out += _activation_slots(act, f"{name}.{k}.")
        return out
    if kind == "activation":
        return _activation_slots(p, "")
    if kind == "layerNormalization":
        n = int(np.prod(p.normalizedShape)) if len(p.normalizedShape) else 0
        return [S("gamma", (n,), 0, False), S("beta", (n,), 0, False)]
    return []


def _lstm_slots(i: int, o: int, peephole: bool, prefix: str) -> list[WeightSlot]:
    S = WeightSlot
    out = [S(f"{prefix}{g}WeightMatrix", (o, i), 0, True) for g in _LSTM_MATRICES]
    out += [S(f"{prefix}{g}RecursionMatrix", (o, o), 0, True) for g in _LSTM_MATRICES]
    out += [S(f"{prefix}{g}BiasVector", (o,), 0, True) for g in _LSTM_MATRICES]
    if peephole:
        out += [S(f"{prefix}{g}PeepholeVector", (o,), 0, True) for g in ("inputGate", "forgetGate", "outputGate")]
    return out


def _activation_slots(act: Any, prefix: str) -> list[WeightSlot]:
    kind = act.WhichOneof("NonlinearityType")
    if kind == "PReLU":
        return [WeightSlot(f"{prefix}PReLU.alpha", (-1,), 0, False)]
    if kind == "parametricSoftplus":
        return [
            WeightSlot(f"{prefix}parametricSoftplus.alpha", (-1,), 0, False),
            WeightSlot(f"{prefix}parametricSoftplus.beta", (-1,), 0, False),
        ]
    return []


def get_weight_params(layer: Any, field: str) -> Any:
    """The WeightParams message at a dotted ``field`` path inside ``layer``'s params."""
    msg = getattr(layer, layer.WhichOneof("layer"))
    for part in field.split("."):
        msg = msg[int(part)] if part.isdigit() else getattr(msg, part)
    return msg


def element_count(wp: Any, shape: tuple[int, ...] | None = None) -> int:
    """Number of weight values a WeightParams holds."""
    if len(wp.floatValue):
        return len(wp.floatValue)
    if wp.float16Value:
        return len(wp.float16Value) // 2
    if wp.int8RawValue:
        return len(wp.int8RawValue)
    if shape is not None and all(s >= 0 for s in shape):
        return int(np.prod(shape))
    if wp.rawValue and wp.quantization.numberOfBits:
        return len(wp.rawValue) * 8 // wp.quantization.numberOfBits
    return 0


def encoding_of(wp: Any) -> tuple[str, int]:
    """(encoding, nbits) of a WeightParams: float32/32, float16/16, linear/n, lut/n, int8/8, empty/0."""
    if len(wp.floatValue):
        return "float32", 32
    if wp.float16Value:
        return "float16", 16
    if wp.int8RawValue:
        return "int8", 8
    if wp.rawValue:
        q = wp.quantization
        kind = q.WhichOneof("QuantizationType")
        if kind == "linearQuantization":
            return "linear", q.numberOfBits
        if kind == "lookupTableQuantization":
            return "lut", q.numberOfBits
        return "raw", 8 * len(wp.rawValue)
    return "empty", 0


def encoding_label(encoding: str, nbits: int) -> str:
    """The one short label of a stored encoding (what a tensor holds, not the codec that made it):
    ``fp32``, ``fp16``, ``lin8`` (linear, 8 bits), ``lut4`` (lookup table, 4 bits), ``int8``;
    any other encoding ``<encoding><nbits>``.

    >>> encoding_label("lut", 4), encoding_label("float32", 32), encoding_label("linear", 8)
    ('lut4', 'fp32', 'lin8')
    """
    if encoding == "float32":
        return "fp32"
    if encoding == "float16":
        return "fp16"
    if encoding == "linear":
        return f"lin{nbits}"
    if encoding == "lut":
        return f"lut{nbits}"
    if encoding == "int8":
        return "int8"
    return f"{encoding}{nbits}"


def stored_bytes(wp: Any) -> int:
    """Payload bytes a WeightParams stores (values plus scale/bias/LUT floats)."""
    q = wp.quantization
    extra = 4 * (len(q.linearQuantization.scale) + len(q.linearQuantization.bias) + len(q.lookupTableQuantization.floatValue))
    return 4 * len(wp.floatValue) + len(wp.float16Value) + len(wp.rawValue) + len(wp.int8RawValue) + extra


def layer_weights(layer: Any, *, include_empty: bool = False) -> dict[str, tuple[Any, tuple[int, ...], int]]:
    """``{field: (WeightParams, shape, channel_axis)}`` for one layer.

    Shapes are the ones coremltools assumes; a ``-1`` shape (PReLU alpha,
    parametricSoftplus) is resolved from the stored element count.
    """
    out = {}
    for slot in layer_slots(layer):
        wp = get_weight_params(layer, slot.field)
        enc, _ = encoding_of(wp)
        if enc == "empty" and not include_empty:
            continue
        shape = slot.shape if all(s >= 0 for s in slot.shape) else (element_count(wp),)
        out[slot.field] = (wp, shape, slot.channel_axis)
    return out


def iter_weight_slots(model: Any) -> Iterator[tuple[Any, WeightSlot, Any]]:
    """``(layer, slot, WeightParams)`` for every non-empty weight of the model, in
    layer order (loop/branch bodies after their parent layer)."""
    for layer in iter_layers(model):
        for slot in layer_slots(layer):
            wp = get_weight_params(layer, slot.field)
            if encoding_of(wp)[0] == "empty":
                continue
            if any(s < 0 for s in slot.shape):
                slot = WeightSlot(slot.field, (element_count(wp),), slot.channel_axis, slot.quantizable, slot.selector_param)
            yield layer, slot, wp


def weight_tensors(model: Any) -> list[WeightTensor]:
    """Every weight tensor the model holds (see :class:`WeightTensor`)."""
    spec = model if _is_spec(model) else load(model)
    out = []
    for layer, slot, wp in iter_weight_slots(spec):
        enc, nbits = encoding_of(wp)
        out.append(
            WeightTensor(
                layer=layer.name,
                layer_type=layer.WhichOneof("layer"),
                field=slot.field,
                shape=tuple(int(s) for s in slot.shape),
                count=element_count(wp, slot.shape),
                encoding=enc,
                nbits=nbits,
                stored_bytes=stored_bytes(wp),
                channel_axis=slot.channel_axis,
                quantizable=slot.quantizable,
            )
        )
    return out


def weight_table(model: Any):
    """:func:`weight_tensors` as a pandas DataFrame (one row per tensor)."""
    import pandas as pd

    rows = [asdict(t) for t in weight_tensors(model)]
    cols = list(WeightTensor.__dataclass_fields__)
    return pd.DataFrame(rows, columns=cols)


def _is_spec(obj: Any) -> bool:
    return hasattr(obj, "DESCRIPTOR") and obj.DESCRIPTOR.name == "Model"
