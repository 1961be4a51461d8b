"""Applying a plan: a new model whose planned tensors are encoded (through the codec cache).

:func:`apply_plan` is the one path that quantizes a model
(:func:`quantizer.quantize_weights` builds a plan and calls it). It never
modifies its input: when no fold is possible it builds the new spec while
copying the source (the float payloads that get replaced are read, never
copied); otherwise it folds a private copy (:func:`quantizer.fuse`) and applies
the plan to that in place.

A bias-correcting codec (``Codec(..., bias_correction=True)``) returns, with
the encoded weights, a per-output-channel delta: the layer's bias becomes
``bias + delta`` (read from the source, before its own codec, if any, encodes
it; a layer without a bias gets a float32 one and ``hasBias``). An LSTM gate
matrix's delta goes to its gate's bias vector (the input and recurrent
matrices' deltas add up; an LSTM without biases gets zero float32 bias vectors
and ``hasBiasVectors``). A bias that is not in the plan is written as float32.

The ``affine`` codecs of a batchnorm layer's vectors (:mod:`quantizer.algorithms.affine`) are
encoded together, once per layer, from the layer's source values and the codecs of all four
fields (a field without an ``affine`` codec enters the fit as the value the runtime will read);
the codec cache keys each result on the digests and codecs of all four fields.

>>> import quantizer                                               # doctest: +SKIP
>>> plan = quantizer.build_plan("model.mlmodel", 4, "kmeans_lut")    # doctest: +SKIP
>>> small = quantizer.apply_plan("model.mlmodel", plan)            # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterator, Mapping

import numpy as np

from .algorithms.affine import BATCHNORM_FIELDS, encode_batchnorm
from .algorithms.support import bias_field
from .cache import CodecCache, codec_cache, tensor_digest
from .codecs import Codec, Encoded
from .coremltools_quiet import coremltools
from .errors import InvalidArgumentError, InvalidWeightsError
from .fusion import fuse_in_place, should_fuse
from .io import as_kind_of, fresh_spec, source_spec
from .plan import Key, QuantPlan, as_plan
from .tensors import WeightSlot, encoding_of, get_weight_params, layer_slots
from .walk import iter_layers, model_networks
from .weightparams import decode_weights, write_float32

__all__ = ["apply_plan", "apply_in_place", "apply_copying", "bump_spec_version"]


def _all_slots(spec: Any) -> Iterator[tuple[Any, WeightSlot]]:
    """Every (layer, slot) of every network of ``spec``, nested bodies included."""
    for _, nn in model_networks(spec):
        for layer in iter_layers(nn):
            for slot in layer_slots(layer):
                yield layer, slot


def _where(layer: Any, field: str) -> str:
    return f"layer '{layer.name}' field '{field}'"


def _layer_params(layer: Any) -> Any:
    return getattr(layer, layer.WhichOneof("layer"))


def _encode_tensor(
    wp: Any, layer: Any, slot: WeightSlot, codec: Codec, cache: CodecCache
) -> tuple[Encoded | None, bool]:
    """The encoding of one planned tensor (read from ``wp``), or None if there is nothing
    to do; second item: the tensor was int8 (its layer's int8DynamicQuantize must go)."""
    where = _where(layer, slot.field)
    if not slot.quantizable:
        raise InvalidArgumentError(
            f"{where} cannot be quantized: Core ML reads this parameter as float only "
            "(coremltools does not quantize it either); drop it from the plan"
        )
    enc, _ = encoding_of(wp)
    if enc == "empty" or (enc == "float32" and codec.mode == "dequantization"):
        return None, False
    shape = slot.shape if all(s >= 0 for s in slot.shape) else (int(len(wp.floatValue)),)
    shape = tuple(int(s) for s in shape)
    if enc == "float32":
        values = np.array(wp.floatValue, dtype=np.float32)
        if values.size != int(np.prod(shape)):
            raise InvalidWeightsError(
                f"{where} holds {values.size} values but the layer's shape {shape} needs "
                f"{int(np.prod(shape))}: the model is inconsistent"
            )
    else:
        values = decode_weights(wp, shape, slot.channel_axis, name=where, exact=True).reshape(-1)

    def encode() -> Encoded:
        return codec.encode(values, shape, slot.channel_axis, where=where)

    if not codec.cacheable:
        return encode(), enc == "int8"
    digest = tensor_digest(values, shape, slot.channel_axis)
    return cache.get_or_encode(digest, codec, encode), enc == "int8"


def _affine_layers(wanted: Mapping[Key, Codec]) -> set[str]:
    return {name for (name, _), codec in wanted.items() if codec.algorithm == "affine"}


def _affine_encodings(layer: Any, wanted: Mapping[Key, Codec], cache: CodecCache) -> dict[str, Encoded]:
    """The encodings of a batchnorm layer's ``affine`` fields, fitted together (read from the layer before
    any of its fields is written)."""
    p = _layer_params(layer)
    c, eps = int(p.channels), float(p.epsilon or 1e-5)  # the runtime's default epsilon
    values, codecs, fixed, parts = {}, {}, {}, [f"batchnorm eps={eps!r}"]
    for f in BATCHNORM_FIELDS:
        where = _where(layer, f)
        wp = get_weight_params(layer, f)
        enc, _ = encoding_of(wp)
        if enc == "empty":
            raise InvalidWeightsError(f"{where} is empty: a batchnorm without computeMeanVar needs all four vectors")
        v = decode_weights(wp, (c,), 0, name=where, exact=True).reshape(-1).astype(np.float32)
        values[f], codecs[f] = v, wanted.get((layer.name, f))
        parts.append(f"{f}={tensor_digest(v, (c,), 0)}:{'keep' if codecs[f] is None else codecs[f].token()}")
        if codecs[f] is None or codecs[f].algorithm != "affine":
            fixed[f] = v if codecs[f] is None else _decoded(codecs[f].encode(v, (c,), 0, where=where), c, where)
    joint = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    fitted: dict[str, Encoded] = {}

    def fit(field: str) -> Encoded:
        if not fitted:
            fitted.update(encode_batchnorm(values, codecs, fixed, eps))
        return fitted[field]

    return {f: cache.get_or_encode(f"{joint}|{f}", codecs[f], lambda f=f: fit(f))
            for f in BATCHNORM_FIELDS if codecs[f] is not None and codecs[f].algorithm == "affine"}


def _decoded(enc: Encoded, n: int, where: str) -> np.ndarray:
    """The float32 values a runtime reads from ``enc`` (any encoding)."""
    wp = coremltools().proto.NeuralNetwork_pb2.WeightParams()
    enc.write(wp)
    return decode_weights(wp, (n,), 0, name=where, exact=True).reshape(-1)


def _check_missing(plan: QuantPlan, found: set[Key], known: set[Key] | None) -> None:
    missing = [k for k in plan if k not in found and not (known and k in known)]
    if missing:
        shown = ", ".join(f"({a!r}, {b!r})" for a, b in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InvalidArgumentError(
            f"the plan names {len(missing)} tensor(s) the model does not have: {shown}{more}; "
            "see quantizer.weight_table(model) for the (layer, field) pairs"
        )


def _add_delta(deltas: dict[Key, np.ndarray], layer: Any, field: str, delta: np.ndarray) -> None:
    key = (layer.name, bias_field(layer, field))
    deltas[key] = deltas[key] + delta if key in deltas else delta


def _bias_params(layer: Any, field: str, n: int) -> tuple[Any, bool]:
    """(the WeightParams of bias ``field``, whether it holds values); an LSTM without biases gets
    zero float32 bias vectors for every gate and direction here (``hasBiasVectors``)."""
    p = _layer_params(layer)
    if field == "bias":
        present = p.hasBias
        p.hasBias = True
        return p.bias, present and encoding_of(p.bias)[0] != "empty"
    if not p.params.hasBiasVectors:
        p.params.hasBiasVectors = True
        for slot in layer_slots(layer):
            if slot.field.endswith("BiasVector"):
                write_float32(get_weight_params(layer, slot.field), np.zeros(n, np.float32))
    wp = get_weight_params(layer, field)
    return wp, encoding_of(wp)[0] != "empty"


def _correct_biases(spec: Any, deltas: dict[Key, np.ndarray], plan: QuantPlan, cache: CodecCache) -> None:
    """``bias += delta`` for every (layer, bias field) in ``deltas`` (its bias is still the
    source's): the sum is encoded with the plan's codec for the bias, else stored as float32."""
    if not deltas:
        return
    for _, nn in model_networks(spec):
        for layer in iter_layers(nn):
            for (name, field), delta in deltas.items():
                if name != layer.name:
                    continue
                n = int(delta.size)
                where = _where(layer, field)
                wp, present = _bias_params(layer, field, n)
                old = decode_weights(wp, (n,), 0, name=where, exact=True).astype(np.float64) if present else np.zeros(n)
                new = (old + delta).astype(np.float32)
                codec = plan.get((layer.name, field))
                if codec is None or codec.mode == "dequantization":
                    write_float32(wp, new)
                    continue
                digest = tensor_digest(new, (n,), 0)
                enc = cache.get_or_encode(digest, codec, lambda: codec.encode(new, (n,), 0, where=where))
                enc.write(wp)


def apply_in_place(spec: Any, plan: QuantPlan, *, cache: CodecCache | None = None, known: set[Key] | None = None) -> int:
    """Apply ``plan`` to ``spec`` (modified in place, no fusion); return the tensors changed.

    ``known`` holds keys that may be absent from ``spec`` without error (layers
    folded away by fusion). Raises :class:`InvalidArgumentError` for a plan
    entry naming no tensor of the model, or a tensor that cannot be quantized.
    """
    cache = codec_cache if cache is None else cache
    wanted = {k: c for k, c in plan.items() if c is not None}
    found: set[Key] = set()
    deltas: dict[Key, np.ndarray] = {}
    affine, fitted = _affine_layers(wanted), {}
    changed = 0
    for layer, slot in _all_slots(spec):
        key = (layer.name, slot.field)
        if key in plan:
            found.add(key)
        if layer.name in affine and layer.name not in fitted:  # before any of its fields is written
            fitted[layer.name] = _affine_encodings(layer, wanted, cache)
        codec = wanted.get(key)
        if codec is None or key in deltas:
            continue  # a corrected bias is encoded after the correction
        wp = get_weight_params(layer, slot.field)
        if codec.algorithm == "affine":
            encoded, was_int8 = fitted[layer.name][slot.field], False
        else:
            encoded, was_int8 = _encode_tensor(wp, layer, slot, codec, cache)
        if encoded is None:
            continue
        encoded.write(wp)
        if encoded.bias_delta is not None:
            _add_delta(deltas, layer, slot.field, encoded.bias_delta)
        if was_int8 and hasattr(_layer_params(layer), "int8DynamicQuantize"):
            _layer_params(layer).int8DynamicQuantize = False
        changed += 1
    _check_missing(plan, found, known)
    _correct_biases(spec, deltas, plan, cache)
    return changed


# --------------------------------------------------------------------- apply while copying
_WEIGHT_PARAMS = "CoreML.Specification.WeightParams"
_LAYER = "CoreML.Specification.NeuralNetworkLayer"
_PAYLOAD = frozenset({"floatValue", "float16Value", "rawValue", "int8RawValue", "quantization"})
_REACHES: dict[str, bool] = {}


def _reaches_weights(desc: Any) -> bool:
    """True if messages of this type can contain a WeightParams (memoised; cycles are fine)."""
    name = desc.full_name
    if name not in _REACHES:
        _REACHES[name] = name == _WEIGHT_PARAMS
        if name != _WEIGHT_PARAMS:
            _REACHES[name] = any(f.message_type is not None and _reaches_weights(f.message_type) for f in desc.fields)
    return _REACHES[name]


def _is_repeated(fd: Any) -> bool:
    rep = getattr(fd, "is_repeated", None)
    return bool(rep) if rep is not None else fd.label == fd.LABEL_REPEATED


def _copy_whole(src: Any, dst: Any) -> None:
    # serialize + merge: several times faster than CopyFrom on large upb messages
    dst.MergeFromString(src.SerializeToString())


class _CopyApplier:
    """Build a new spec from a read-only source, applying a plan on the way: planned
    tensors are read from the source and only their encodings are written, so the float
    payloads that get replaced are never copied."""

    def __init__(self, plan: QuantPlan, cache: CodecCache) -> None:
        self.plan = plan
        self.wanted = {k: c for k, c in plan.items() if c is not None}
        self.cache = cache
        self.found: set[Key] = set()
        self.deltas: dict[Key, np.ndarray] = {}
        self.affine, self.fitted = _affine_layers(self.wanted), {}

    def copy(self, src: Any, dst: Any, layer: Any = None, slots: dict | None = None, path: str = "") -> bool:
        """Copy ``src`` into ``dst``; returns True if an int8 tensor was replaced inside."""
        int8 = False
        for fd, val in src.ListFields():
            mt = fd.message_type
            if mt is None:
                if _is_repeated(fd):
                    getattr(dst, fd.name).extend(val)
                else:
                    setattr(dst, fd.name, val)
                continue
            if mt.GetOptions().map_entry:
                target = getattr(dst, fd.name)
                for k in val:
                    if mt.fields_by_name["value"].message_type is None:
                        target[k] = val[k]
                    else:
                        target[k].CopyFrom(val[k])
                continue
            if not _is_repeated(fd):
                items = [(val, getattr(dst, fd.name), fd.name)]
                getattr(dst, fd.name).SetInParent()
            else:
                container = getattr(dst, fd.name)
                items = [(item, container.add(), f"{fd.name}.{i}") for i, item in enumerate(val)]
            for s_item, d_item, name in items:
                if not _reaches_weights(mt):
                    _copy_whole(s_item, d_item)
                elif mt.full_name == _WEIGHT_PARAMS and layer is not None:
                    int8 |= self._weights(s_item, d_item, layer, slots, path + name)
                elif mt.full_name == _LAYER:
                    kind = s_item.WhichOneof("layer")
                    replaced = self._layer(s_item, d_item)
                    if replaced and kind and hasattr(getattr(d_item, kind), "int8DynamicQuantize"):
                        getattr(d_item, kind).int8DynamicQuantize = False
                elif mt.full_name == _WEIGHT_PARAMS:
                    _copy_whole(s_item, d_item)
                else:
                    int8 |= self.copy(s_item, d_item, layer, slots, path + name + ".")
        return int8

    def _layer(self, src: Any, dst: Any) -> bool:
        slots = {slot.field: slot for slot in layer_slots(src)}
        kind = src.WhichOneof("layer")
        int8 = False
        for fd, val in src.ListFields():
            if fd.name == kind:  # the layer's params: field paths are relative to it
                getattr(dst, kind).SetInParent()
                int8 = self.copy(val, getattr(dst, kind), src, slots, "")
            elif fd.message_type is None:
                if _is_repeated(fd):
                    getattr(dst, fd.name).extend(val)
                else:
                    setattr(dst, fd.name, val)
            elif _is_repeated(fd):
                getattr(dst, fd.name).extend(val)
            else:
                _copy_whole(val, getattr(dst, fd.name))
        return int8

    def _weights(self, src: Any, dst: Any, layer: Any, slots: dict, field: str) -> bool:
        key = (layer.name, field)
        if key in self.plan:
            self.found.add(key)
        codec = self.wanted.get(key)
        slot = slots.get(field)
        encoded = None
        int8 = False
        if codec is not None and codec.algorithm == "affine" and slot is not None:
            if layer.name not in self.fitted:  # the source layer: never written
                self.fitted[layer.name] = _affine_encodings(layer, self.wanted, self.cache)
            encoded = self.fitted[layer.name][field]
        elif codec is not None and slot is not None and key not in self.deltas:
            encoded, int8 = _encode_tensor(src, layer, slot, codec, self.cache)
        if encoded is None:
            _copy_whole(src, dst)
            return False
        if encoded.bias_delta is not None:
            _add_delta(self.deltas, layer, field, encoded.bias_delta)
        for fd, val in src.ListFields():
            if fd.name not in _PAYLOAD:
                setattr(dst, fd.name, val)
        encoded.write(dst)
        return int8


def apply_copying(src: Any, plan: QuantPlan, *, cache: CodecCache | None = None) -> Any:
    """A new spec: ``src`` (not modified, no fusion) with ``plan`` applied."""
    applier = _CopyApplier(plan, codec_cache if cache is None else cache)
    out = coremltools().proto.Model_pb2.Model()
    applier.copy(src, out)
    _check_missing(plan, applier.found, None)
    _correct_biases(out, applier.deltas, plan, applier.cache)
    return out


def bump_spec_version(spec: Any, minimum: int) -> None:
    """Raise ``specificationVersion`` to at least ``minimum`` for every network model
    spec (and every pipeline wrapping one)."""
    for model, _ in model_networks(spec, wrappers=True):
        model.specificationVersion = max(int(minimum), model.specificationVersion)


def _keys(spec: Any) -> set[Key]:
    return {(layer.name, slot.field) for layer, slot in _all_slots(spec)}


def apply_plan(model: Any, plan: QuantPlan | Mapping[Key, Any], fuse: bool = True, *, cache: CodecCache | None = None) -> Any:
    """Return a new model with ``plan`` applied; ``model`` is never modified.

    ``model`` is a path, a ``Model_pb2.Model`` spec or a coremltools
    ``MLModel``; an ``MLModel`` gives an ``MLModel`` back, the others a spec.
    With ``fuse=True`` and any codec below 16 bits, batchnorm/scale/bias layers
    are first folded into the layer before them (:func:`quantizer.fuse`), as
    coremltools does; entries for layers folded away are then moved with their
    values into the layer they were folded into, i.e. ignored. The
    specification version is raised to what the codecs need (fp16: 2, n-bit: 3).
    """
    plan = as_plan(plan)
    cache = codec_cache if cache is None else cache
    src, owned = source_spec(model)
    fusing = should_fuse(src, fuse=fuse, quantizes=plan.quantizes)
    if owned or fusing:
        spec = src if owned else fresh_spec(src)
        known = None
        if fusing:
            known = _keys(spec)
            fuse_in_place(spec)
        apply_in_place(spec, plan, cache=cache, known=known)
    else:
        spec = apply_copying(src, plan, cache=cache)
    if plan.codecs:
        bump_spec_version(spec, max(c.min_spec_version for c in plan.codecs))
    return as_kind_of(model, spec)
