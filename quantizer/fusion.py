"""Fusion: fold batchnorm, scale and bias layers into the layer before them.

Before quantizing below 16 bits, coremltools' ``quantize_weights`` runs a
fusion pass (``optimization_utils._optimize_nn``) that folds

* a ``batchnorm``, ``scale`` or ``bias`` layer into the ``convolution`` /
  deconvolution that feeds it,
* a ``scale`` or ``bias`` layer into the ``innerProduct`` that feeds it,
* a ``scale`` layer into the (non-instance) ``batchnorm`` that feeds it,

so that one weight tensor (quantized once) replaces two (an innerProduct +
batchnorm pair is not folded, by coremltools or here). :func:`fuse` does the
same folds, in the same order and with the same float32 numpy arithmetic where
coremltools 9.0 is right, so the fused floats -- and hence the quantized
model -- are byte-identical to coremltools' output. It differs where
coremltools is wrong:

* convolution + batchnorm: coremltools broadcasts the per-channel factor
  wrongly and crashes (every conv+batchnorm model fails below 16 bits);
* deconvolution + scale / batchnorm: deconvolution weights are
  ``[Cin, Cout/nGroups, kH, kW]``; coremltools scales them as if they were
  ``[Cout, ...]`` (silently wrong);
* convolution/innerProduct with a bias + scale without a bias: coremltools
  leaves the bias unscaled (silently wrong);
* a batchnorm computing its statistics at run time (``computeMeanVar``):
  coremltools tries to fold it into a convolution; we never do;
* a blob that is also a model output, or read inside a loop/branch body:
  coremltools folds it away; we do not fold;
* a length-1 scale bias / bias-layer value folded into a layer without a bias:
  coremltools writes a 1-element bias for a layer with C output channels.

A fold is made only when it cannot change what the network computes
(conditions are a subset of coremltools', which ignores some of them):

* the intermediate blob is read by exactly one layer in the whole model
  (nested loop/branch bodies included), is not a model output or input, and
  is not the classifier's probability blob;
* no layer between the two (or nested in one between them) reads or writes
  either blob; neither layer is updatable; the second layer has one input;
* every weight involved is float32 (``floatValue``) of the expected length,
  the weights are not a second input of the convolution, the batchnorm uses
  stored statistics (not ``computeMeanVar``) when folded into a convolution,
  and the scale/bias is one value or one per channel (``[1]``, ``[C]``,
  ``[1,1,1]``, ``[C,1,1]``);
* per-channel folds into an innerProduct only in rank-5-mapped networks
  (``arrayInputShapeMapping = RANK5_ARRAY_MAPPING``), where innerProduct output
  is ``[.., C, 1, 1]``; with exact ND shapes an innerProduct on a rank-3 input
  puts its channels last while scale/bias act on axis -3, so only single-value
  scale/bias are folded there;
* the folded float32 values are finite.

Example::

    >>> import quantizer                                    # doctest: +SKIP
    >>> fused = quantizer.fuse("model.mlmodel")              # doctest: +SKIP
    >>> [f.removed for f in fuse_in_place(spec)]             # doctest: +SKIP
    ['bn1', 'scale1']
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from .io import load
from .walk import blobs_read, blobs_written, iter_layers, layer_lists, model_networks
from .weightparams import write_float32

__all__ = ["fuse", "fuse_in_place", "fusion_possible", "should_fuse", "Fusion"]

_log = logging.getLogger(__name__)

_RANK5_ARRAY_MAPPING = 0  # NeuralNetworkMultiArrayShapeMapping.RANK5_ARRAY_MAPPING


@dataclass(frozen=True)
class Fusion:
    """One fold: layer ``removed`` (of type ``removed_type``) was folded into
    layer ``into`` (of type ``into_type``, ``"deconvolution"`` for a
    convolution with ``isDeconvolution``)."""

    into: str
    into_type: str
    removed: str
    removed_type: str


def fuse(model: Any) -> Any:
    """Return a new spec with batchnorm/scale/bias layers folded into the
    convolution / deconvolution / innerProduct (or batchnorm) before them.

    ``model`` is a path, a ``coremltools.models.MLModel`` or a
    ``Model_pb2.Model``; it is never modified. The returned model computes the
    same outputs as the input (up to float32 rounding of the folded weights).
    """
    spec = load(model)
    fuse_in_place(spec)
    return spec


def fuse_in_place(spec: Any) -> list[Fusion]:
    """Fold in place every legal pair in every neural network of ``spec``
    (pipelines and loop/branch bodies included); return the folds made, in
    order."""
    done: list[Fusion] = []
    for model, nn in model_networks(spec):
        ctx = _Context.of(model, nn)
        for layers in layer_lists(nn):
            done.extend(_optimize(layers, ctx))
    return done


_FOLD_INTO = {"convolution", "innerProduct", "batchnorm"}
_FOLDED = {"batchnorm", "scale", "bias"}


def fusion_possible(spec: Any) -> bool:
    """Conservatively, whether :func:`fuse` could fold anything: some batchnorm/scale/bias
    layer reads a blob a convolution/innerProduct/batchnorm writes (cheap; no copy)."""
    producers: dict[str, str] = {}  # blob -> type of the last layer writing it
    firsts: list[str] = []  # the first input of every batchnorm/scale/bias layer
    for _, nn in model_networks(spec):
        for layer in iter_layers(nn):
            kind = layer.WhichOneof("layer")
            producers.update(dict.fromkeys(layer.output, kind))
            if kind in _FOLDED and len(layer.input):
                firsts.append(layer.input[0])
    return any(producers.get(blob) in _FOLD_INTO for blob in firsts)


def should_fuse(spec: Any, *, fuse: bool, quantizes: bool) -> bool:
    """The one rule for folding before quantizing, as coremltools: when asked to (``fuse``),
    for codecs below 16 bits (``quantizes``), and only if a fold is possible at all."""
    return fuse and quantizes and fusion_possible(spec)


# ----------------------------------------------------------------------------- per-model facts


@dataclass
class _Context:
    """Per-model facts: reserved blob names and the network's shape mapping."""

    model_io: frozenset[str]  # model inputs, outputs, classifier probability blob, loss-layer blobs
    nn: Any
    rank5: bool
    reads: Counter = field(default_factory=Counter)  # blob -> reads anywhere in nn (refreshed per pass)

    @classmethod
    def of(cls, model: Any, nn: Any) -> "_Context":
        names = {f.name for f in model.description.input}
        names |= {f.name for f in model.description.output}
        names |= {f.name for f in getattr(model.description, "trainingInput", [])}
        if model.WhichOneof("Type") == "neuralNetworkClassifier" and nn.labelProbabilityLayerName:
            names.add(nn.labelProbabilityLayerName)
        for loss in nn.updateParams.lossLayers:
            kind = loss.WhichOneof("LossLayerType")
            if kind:
                sub = getattr(loss, kind)
                names |= {getattr(sub, "input", ""), getattr(sub, "target", "")} - {""}
        return cls(frozenset(names), nn, nn.arrayInputShapeMapping == _RANK5_ARRAY_MAPPING)

    def refresh(self) -> None:
        """Recount how often each blob is read anywhere in the network (all depths)."""
        self.reads = Counter(name for layer in self.nn.layers for name in blobs_read(layer))


# ----------------------------------------------------------------------------- weights


def _floats(wp: Any, count: int) -> np.ndarray | None:
    """float32 copy of a float32 WeightParams of exactly ``count`` values, else None.

    float32, as coremltools' ``np.array(wp.floatValue)`` (protobuf's repeated
    float container converts to a float32 array): the folds coremltools gets
    right are computed with the same float32 numpy operations in the same order.
    """
    if wp.float16Value or wp.rawValue or wp.int8RawValue or wp.HasField("quantization"):
        return None
    if len(wp.floatValue) != count:
        return None
    return np.array(wp.floatValue, dtype=np.float32)


def _write(wp: Any, values: np.ndarray) -> None:
    """Store ``values`` as float32 ``floatValue`` (float64 input is rounded once, as protobuf does)."""
    write_float32(wp, np.asarray(values).astype(np.float32).ravel())


def _finite32(*arrays: np.ndarray | None) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        return all(a is None or bool(np.isfinite(np.asarray(a, dtype=np.float32)).all()) for a in arrays)


def _per_channel(shape: Iterable[int], channels: int) -> bool:
    """True for a scale/bias shape that is one value or one value per channel."""
    shape = [int(s) for s in shape]
    return shape in ([1], [channels], [1, 1, 1], [channels, 1, 1])


def _channel_vector(values: np.ndarray, channels: int) -> np.ndarray:
    """A length-1 or length-C vector as length C (for writing a layer bias)."""
    return np.broadcast_to(values, (channels,)).copy() if values.size == 1 else values


def _is_deconv(layer: Any) -> bool:
    return layer.WhichOneof("layer") == "convolution" and layer.convolution.isDeconvolution


def _scale_rows(w: np.ndarray, factor: np.ndarray, layer: Any) -> np.ndarray:
    """Multiply weights by a per-output-channel factor (length 1 or C).

    convolution ``[Cout, Cin/g, kH, kW]`` and innerProduct ``[Cout, Cin]``: as
    coremltools, ``w.reshape(C, -1) * factor[:, None]``. Deconvolution
    ``[Cin, Cout/g, kH, kW]``: output channel ``gi*(Cout/g) + j`` is weight
    slice ``[gi*(Cin/g):(gi+1)*(Cin/g), j]``.
    """
    if _is_deconv(layer):
        conv = layer.convolution
        cout = conv.outputChannels
        groups = max(1, conv.nGroups)
        cin = conv.kernelChannels
        full = np.broadcast_to(factor, (cout,)).reshape(groups, cout // groups)
        w4 = w.reshape(groups, cin // groups, cout // groups, -1)
        return (w4 * full[:, None, :, None]).reshape(-1)
    channels = _out_channels(layer)
    return (w.reshape(channels, -1) * factor[:, None]).reshape(-1)


def _out_channels(layer: Any) -> int:
    kind = layer.WhichOneof("layer")
    if kind == "convolution":
        return int(layer.convolution.outputChannels)
    if kind == "innerProduct":
        return int(layer.innerProduct.outputChannels)
    return int(layer.batchnorm.channels)


def _weight_count(layer: Any) -> int | None:
    """Expected number of weights of a convolution / innerProduct (None if malformed)."""
    kind = layer.WhichOneof("layer")
    if kind == "innerProduct":
        p = layer.innerProduct
        return int(p.outputChannels) * int(p.inputChannels)
    c = layer.convolution
    if len(c.kernelSize) != 2:
        return None
    k = int(c.kernelSize[0]) * int(c.kernelSize[1])
    groups = max(1, int(c.nGroups))
    if c.isDeconvolution:
        if c.outputChannels % groups or c.kernelChannels % groups:
            return None
        return int(c.kernelChannels) * (int(c.outputChannels) // groups) * k
    return int(c.outputChannels) * int(c.kernelChannels) * k


def _layer_params(layer: Any) -> Any:
    return getattr(layer, layer.WhichOneof("layer"))


def _kind(layer: Any) -> str:
    return "deconvolution" if _is_deconv(layer) else layer.WhichOneof("layer")


# ----------------------------------------------------------------------------- the folds
# Each returns True when it changed the layers (and False, untouched, when a
# weight is not float32 of the right size or a result would not be finite).


def _fold_scale(first: Any, scale_layer: Any, ctx: _Context) -> bool:
    """convolution / innerProduct + scale (coremltools ``_fuse_layer_with_scale_layer``)."""
    p = _layer_params(first)
    s = scale_layer.scale
    c = _out_channels(first)
    if not _per_channel(s.shapeScale, c) or (s.hasBias and not _per_channel(s.shapeBias, c)):
        return False
    sw = _floats(s.scale, int(np.prod(s.shapeScale)))
    sb = _floats(s.bias, int(np.prod(s.shapeBias))) if s.hasBias else None
    w = _floats(p.weights, _weight_count(first) or -1)
    lb = _floats(p.bias, c) if p.hasBias else None
    if sw is None or w is None or (s.hasBias and sb is None) or (p.hasBias and lb is None):
        return False
    if first.WhichOneof("layer") == "innerProduct" and not ctx.rank5 and (sw.size > 1 or (sb is not None and sb.size > 1)):
        return False
    wp = _scale_rows(w, sw, first)
    if sb is not None:
        bp = _channel_vector(sb, c) if lb is None else sw * lb + sb
    elif lb is not None:
        bp = sw * lb  # coremltools forgets this: it leaves the bias unscaled
    else:
        bp = None
    if bp is not None:
        bp = _channel_vector(bp, c)
    if not _finite32(wp, bp):
        return False
    _write(p.weights, wp)
    if bp is not None:
        _write(p.bias, bp)
        p.hasBias = True
    return True


def _fold_bias(first: Any, bias_layer: Any, ctx: _Context) -> bool:
    """convolution / innerProduct + bias (coremltools ``_fuse_layer_with_bias_layer``)."""
    p = _layer_params(first)
    b = bias_layer.bias
    c = _out_channels(first)
    if not _per_channel(b.shape, c):
        return False
    bb = _floats(b.bias, int(np.prod(b.shape)))
    lb = _floats(p.bias, c) if p.hasBias else None
    if bb is None or (p.hasBias and lb is None) or _weight_count(first) is None:
        return False
    if first.WhichOneof("layer") == "innerProduct" and not ctx.rank5 and bb.size > 1:
        return False
    bp = _channel_vector(bb if lb is None else lb + bb, c)
    if not _finite32(bp):
        return False
    _write(p.bias, bp)
    p.hasBias = True
    return True


def _fold_batchnorm(first: Any, bn_layer: Any, ctx: _Context) -> bool:
    """convolution / deconvolution + batchnorm with stored statistics.

    ``w' = gamma/sqrt(var+eps) * w``, ``b' = gamma*b/sqrt(var+eps) -
    gamma*mean/sqrt(var+eps) + beta`` (the formula coremltools means, per
    output channel). coremltools crashes here, so there are no bytes to match:
    computed in float64 and rounded once to float32, for the closest fold.
    """
    bn = bn_layer.batchnorm
    p = first.convolution
    c = int(p.outputChannels)
    if bn.computeMeanVar or bn.instanceNormalization or int(bn.channels) != c:
        return False
    gamma, beta, mean, var = (_floats(getattr(bn, f), c) for f in ("gamma", "beta", "mean", "variance"))
    w = _floats(p.weights, _weight_count(first) or -1)
    b = _floats(p.bias, c) if p.hasBias else np.zeros(c, np.float32)
    if any(v is None for v in (gamma, beta, mean, var, w, b)):
        return False
    gamma, beta, mean, var, w, b = (v.astype(np.float64) for v in (gamma, beta, mean, var, w, b))
    variance = var + float(bn.epsilon)
    if not (variance > 0).all():
        return False
    std = np.sqrt(variance)
    wp = _scale_rows(w, gamma / std, first)
    bp = (gamma * b / std) - (gamma * mean / std) + beta
    if not _finite32(wp, bp):
        return False
    _write(p.weights, wp)
    _write(p.bias, bp)
    p.hasBias = True
    return True


def _fold_bn_scale(bn_layer: Any, scale_layer: Any, ctx: _Context) -> bool:
    """batchnorm + scale (coremltools ``_bn_scale_fusion``): gamma*s, beta*s + b."""
    bn = bn_layer.batchnorm
    s = scale_layer.scale
    c = int(bn.channels)
    if not _per_channel(s.shapeScale, c) or (s.hasBias and not _per_channel(s.shapeBias, c)):
        return False
    gamma, beta = _floats(bn.gamma, c), _floats(bn.beta, c)
    sw = _floats(s.scale, int(np.prod(s.shapeScale)))
    sb = _floats(s.bias, int(np.prod(s.shapeBias))) if s.hasBias else None
    if gamma is None or beta is None or sw is None or (s.hasBias and sb is None):
        return False
    gamma = gamma * sw
    beta = beta * sw
    if sb is not None:
        beta = beta + sb
    if not _finite32(gamma, beta):
        return False
    _write(bn.gamma, gamma)
    _write(bn.beta, beta)
    return True


_Fold = Callable[[Any, Any, _Context], bool]


# ----------------------------------------------------------------------------- the pass


def _legal(layers: Any, i: int, j: int, ctx: _Context) -> bool:
    """Whether layer ``j`` may be folded into layer ``i`` (same list, i < j)."""
    first, second = layers[i], layers[j]
    if first.isUpdatable or second.isUpdatable:
        return False
    if len(first.input) != 1 or len(first.output) != 1 or len(second.input) != 1 or len(second.output) != 1:
        return False
    mid, out = first.output[0], second.output[0]
    if second.input[0] != mid or mid == out or mid in ctx.model_io:
        return False
    if ctx.reads[mid] != 1:
        return False
    for k in range(i + 1, j):
        touched = set(blobs_read(layers[k])) | set(blobs_written(layers[k]))
        if mid in touched or out in touched:
            return False
    return True


def _single_successor(layers: Any, i: int, readers: dict, producers: dict) -> int | None:
    """coremltools' test: the index of the only layer (in this list) reading an
    output of layer ``i``, provided every input of that layer is produced by
    exactly one layer of the list; else None."""
    succ = {k for blob in layers[i].output for k in readers.get(blob, ())}
    if len(succ) != 1:
        return None
    (j,) = succ
    preds = {k for blob in layers[j].input for k in producers.get(blob, ())}
    return j if len(preds) == 1 else None


def _optimize(layers: Any, ctx: _Context) -> list[Fusion]:
    """coremltools' ``_optimize_nn`` loop: make the first legal fold in its
    priority order (convolutions, then innerProducts, then batchnorms, each in
    layer order), then start again, until none is left."""
    done: list[Fusion] = []
    while True:
        fusion = _fold_once(layers, ctx)
        if fusion is None:
            return done
        _log.info("fused %s %r into %s %r", fusion.removed_type, fusion.removed, fusion.into_type, fusion.into)
        done.append(fusion)


def _fold_once(layers: Any, ctx: _Context) -> Fusion | None:
    kinds = [layer.WhichOneof("layer") for layer in layers]
    readers: dict[str, list[int]] = defaultdict(list)
    producers: dict[str, list[int]] = defaultdict(list)
    for k, layer in enumerate(layers):
        for blob in layer.input:
            readers[blob].append(k)
        for blob in layer.output:
            producers[blob].append(k)
    ctx.refresh()
    plans: list[tuple[str, dict[str, _Fold]]] = [
        ("convolution", {"batchnorm": _fold_batchnorm, "scale": _fold_scale, "bias": _fold_bias}),
        ("innerProduct", {"scale": _fold_scale, "bias": _fold_bias}),
        ("batchnorm", {"scale": _fold_bn_scale}),
    ]
    for first_kind, folds in plans:
        for i, kind in enumerate(kinds):
            if kind != first_kind:
                continue
            if kind == "batchnorm" and layers[i].batchnorm.instanceNormalization:
                continue
            j = _single_successor(layers, i, readers, producers)
            if j is None:
                continue
            second_kind = kinds[j]
            if second_kind == "batchnorm" and layers[j].batchnorm.instanceNormalization:
                continue  # coremltools never fuses instance normalization
            fold = folds.get(second_kind)
            if fold is None or j <= i or not _legal(layers, i, j, ctx):
                continue
            fusion = Fusion(layers[i].name, _kind(layers[i]), layers[j].name, second_kind)
            if not fold(layers[i], layers[j], ctx):
                continue
            del layers[i].output[:]
            layers[i].output.extend(layers[j].output)
            del layers[j]
            return fusion
    return None
