"""Quantization plans: which codec each weight tensor gets, applied with a cache.

A :class:`QuantPlan` maps ``(layer name, field)`` to a :class:`~quantizer.codecs.Codec`
or ``None`` (keep the tensor as it is). It is an immutable value: equal plans
(same effective entries) hash equal and share a stable :meth:`QuantPlan.digest`,
so a sweep can recognise two trials that are the same experiment.

:func:`build_plan` compiles a global setting -- ``(nbits, mode, selector)``,
the arguments of coremltools' ``quantize_weights`` -- into a plan, selecting
tensors exactly as coremltools does. :func:`apply_plan` returns a new model
with the plan applied. Encoding a tensor is a pure function of (tensor values,
shape, channel axis, codec), so results are kept in a bounded LRU
:class:`CodecCache` keyed by ``(tensor digest, codec)``: a sweep quantizes each
tensor once per codec, not once per trial.

>>> import quantizer                                               # doctest: +SKIP
>>> plan = quantizer.build_plan("model.mlmodel", 4, "kmeans_lut")    # doctest: +SKIP
>>> plan = plan.replace({("fc_out", "weights"): quantizer.Codec("linear", 8)})  # doctest: +SKIP
>>> small = quantizer.apply_plan("model.mlmodel", plan)            # doctest: +SKIP
>>> quantizer.codec_cache.stats()                                  # doctest: +SKIP
{'hits': 0, 'misses': 7, ...}
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from .codecs import Codec, Encoded
from .errors import InvalidArgumentError, InvalidWeightsError, UnsupportedModelError
from .io import load, model_networks, sub_networks
from .packing import unpack_bits
from .tensors import WeightSlot, _slots, encoding_of, get_weight_params
from .weightparams import decode_weights

__all__ = [
    "Codec",
    "QuantPlan",
    "CodecCache",
    "codec_cache",
    "build_plan",
    "apply_plan",
    "tensor_digest",
]

Key = tuple[str, str]


# ------------------------------------------------------------------------------------- plan
class QuantPlan(Mapping):
    """Immutable mapping ``(layer name, field) -> Codec | None`` (``None`` = keep).

    Values may be given as :class:`Codec`, ``None``, or a ``(mode, nbits)``
    tuple. Equality, ``hash`` and :meth:`digest` consider only the entries that
    change something (a ``None`` entry equals a missing one).

    >>> p = QuantPlan({("fc", "weights"): Codec("linear", 8), ("fc", "bias"): None})
    >>> p == QuantPlan({("fc", "weights"): ("linear", 8)})
    True
    >>> p.digest() == QuantPlan({("fc", "weights"): Codec("linear", 8)}).digest()
    True
    """

    __slots__ = ("_entries", "_effective", "_hash")

    def __init__(self, entries: Mapping[Key, Any] | Iterable[tuple[Key, Any]] = ()) -> None:
        items = entries.items() if isinstance(entries, Mapping) else entries
        out: dict[Key, Codec | None] = {}
        for key, value in items:
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
                raise InvalidArgumentError(f"plan keys are (layer name, field) string pairs, got {key!r}")
            out[key] = _as_codec(value, key)
        self._entries = out
        self._effective = frozenset((k, v) for k, v in out.items() if v is not None)
        self._hash = hash(self._effective)

    def __getitem__(self, key: Key) -> Codec | None:
        return self._entries[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QuantPlan):
            return self._effective == other._effective
        return NotImplemented

    def __repr__(self) -> str:
        counts = self.summary()
        body = ", ".join(f"{tok}: {n}" for tok, n in sorted(counts.items()))
        return f"QuantPlan({len(self._effective)} tensors; {body or 'nothing to do'}; digest {self.digest()[:12]})"

    def digest(self) -> str:
        """Stable hex digest (sha256) of the effective entries; equal plans, equal digests."""
        lines = sorted(f"{layer}\t{field}\t{codec.token()}" for (layer, field), codec in self._effective)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def summary(self) -> dict[str, int]:
        """How many tensors each codec (by token) is applied to."""
        out: dict[str, int] = {}
        for _, codec in self._effective:
            out[codec.token()] = out.get(codec.token(), 0) + 1
        return out

    @property
    def codecs(self) -> frozenset[Codec]:
        """The distinct codecs the plan applies."""
        return frozenset(c for _, c in self._effective)

    @property
    def quantizes(self) -> bool:
        """True when some codec is below 16 bits (then :func:`apply_plan` fuses first)."""
        return any(c.quantizes for c in self.codecs)

    def replace(self, entries: Mapping[Key, Any]) -> "QuantPlan":
        """A new plan with ``entries`` added or overriding existing ones."""
        merged = dict(self._entries)
        merged.update(QuantPlan(entries)._entries)
        return QuantPlan(merged)

    def to_records(self) -> list[dict[str, Any]]:
        """Entries as JSON-friendly rows ``{layer, field, mode, nbits}`` (keep entries omitted)."""
        return [
            {"layer": layer, "field": field, "mode": c.mode, "nbits": c.nbits}
            for (layer, field), c in sorted(self._effective, key=lambda kv: kv[0])
        ]


def _as_codec(value: Any, key: Key) -> Codec | None:
    if value is None or isinstance(value, Codec):
        return value
    if isinstance(value, tuple) and 1 <= len(value) <= 3:
        return Codec(*value)
    raise InvalidArgumentError(
        f"plan entry {key!r} must be a Codec, a (mode, nbits) tuple or None (keep), got {value!r}"
    )


# ------------------------------------------------------------------------------------ cache
def tensor_digest(values: np.ndarray, shape: tuple[int, ...], channel_axis: int) -> str:
    """sha256 of a float32 tensor's bytes, its shape and channel axis."""
    h = hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").data)
    h.update(repr((tuple(int(s) for s in shape), int(channel_axis))).encode())
    return h.hexdigest()


@dataclass
class _Stats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class CodecCache:
    """LRU cache of encoded tensors keyed by ``(tensor digest, codec)``, bounded in bytes.

    >>> cache = CodecCache(max_bytes=1 << 20)
    >>> cache.stats()["entries"]
    0
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self._data: OrderedDict[tuple[str, Codec], Encoded] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._stats = _Stats()
        self.max_bytes = int(max_bytes)

    def get_or_encode(self, digest: str, codec: Codec, encode: Callable[[], Encoded]) -> Encoded:
        """The cached encoding, or ``encode()`` stored (if it fits) and returned."""
        key = (digest, codec)
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                self._stats.hits += 1
                return hit
            self._stats.misses += 1
        value = encode()
        size = value.nbytes
        if size > self.max_bytes:
            return value
        with self._lock:
            if key not in self._data:
                self._data[key] = value
                self._bytes += size
            while self._bytes > self.max_bytes and self._data:
                _, old = self._data.popitem(last=False)
                self._bytes -= old.nbytes
                self._stats.evictions += 1
        return value

    def clear(self) -> None:
        """Drop every entry and reset the statistics."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self._stats = _Stats()

    def resize(self, max_bytes: int) -> None:
        """Change the memory bound (evicting least recently used entries as needed)."""
        with self._lock:
            self.max_bytes = int(max_bytes)
            while self._bytes > self.max_bytes and self._data:
                _, old = self._data.popitem(last=False)
                self._bytes -= old.nbytes
                self._stats.evictions += 1

    def stats(self) -> dict[str, int]:
        """``hits``, ``misses``, ``evictions``, ``entries``, ``bytes``, ``max_bytes``."""
        with self._lock:
            return {
                "hits": self._stats.hits,
                "misses": self._stats.misses,
                "evictions": self._stats.evictions,
                "entries": len(self._data),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
            }


#: The process-wide cache :func:`apply_plan` and :func:`~quantizer.quantize_weights` use by default.
codec_cache = CodecCache()


# ------------------------------------------------------------------------------- selection
def _model_specs(spec: Any) -> Iterator[tuple[Any, Any]]:
    """(model spec, NeuralNetwork) for every network, plus (pipeline spec, None) for wrappers."""
    return model_networks(spec, wrappers=True)


def _networks(spec: Any) -> list[Any]:
    return [nn for _, nn in model_networks(spec)]


def _all_slots(nn: Any) -> Iterator[tuple[Any, WeightSlot]]:
    """Every (layer, slot) of a network and its nested bodies."""
    for layer in nn.layers:
        for slot in _slots(layer):
            yield layer, slot
        for sub in sub_networks(layer):
            yield from _all_slots(sub)


def _ask(selector: Any, layer: Any, **kwargs: Any) -> bool:
    try:
        return bool(selector.do_quantize(layer, **kwargs))
    except Exception as exc:
        what = f" for weight_param={kwargs['weight_param']!r}" if kwargs else ""
        raise InvalidArgumentError(
            f"selector {type(selector).__name__}.do_quantize failed on layer '{layer.name}' "
            f"(type {layer.WhichOneof('layer')}){what}: {type(exc).__name__}: {exc}"
        ) from exc


def check_selector(selector: Any) -> Any:
    """The selector to use: the default :class:`~quantizer.selectors.QuantizedLayerSelector` for
    ``None``; any object with a callable ``do_quantize(layer, weight_param=None)`` otherwise."""
    if selector is None:
        from .selectors import QuantizedLayerSelector

        return QuantizedLayerSelector()
    if not callable(getattr(selector, "do_quantize", None)):
        raise InvalidArgumentError(
            f"selector must have a do_quantize(layer, weight_param=None) method (like coremltools' "
            f"QuantizedLayerSelector); got {type(selector).__name__}"
        )
    return selector


def select_tensors(spec: Any, codec: Codec, selector: Any = None) -> QuantPlan:
    """The plan coremltools' ``_quantize_nn_spec`` would carry out on ``spec`` (already fused).

    Walks each network in order; a layer the selector rejects is skipped
    (a rejected loop/branch skips its bodies); conv/innerProduct/batchedMatmul
    biases are also asked with ``weight_param="bias"``. Quantizing codecs and
    fp16 take float32 tensors only (as coremltools, which leaves float16 and
    already-quantized tensors alone); ``dequantization`` takes every tensor
    that is not float32.
    """
    selector = check_selector(selector)
    entries: dict[Key, Codec] = {}
    decided: dict[Key, bool] = {}

    def visit(nn: Any) -> None:
        for layer in nn.layers:
            if not _ask(selector, layer):
                for slot in _slots(layer):
                    _note(decided, (layer.name, slot.field), False)
                continue
            for sub in sub_networks(layer):
                visit(sub)
            for slot in _slots(layer):
                key = (layer.name, slot.field)
                wp = get_weight_params(layer, slot.field)
                enc, _ = encoding_of(wp)
                wanted = slot.quantizable and enc != "empty" and (
                    enc != "float32" if codec.mode == "dequantization" else enc == "float32"
                )
                if wanted and slot.selector_param is not None:
                    wanted = _ask(selector, layer, weight_param=slot.selector_param)
                _note(decided, key, wanted)
                if wanted:
                    entries[key] = codec

    for nn in _networks(spec):
        visit(nn)
    return QuantPlan(entries)


def _note(decided: dict[Key, bool], key: Key, wanted: bool) -> None:
    if decided.setdefault(key, wanted) != wanted:
        raise UnsupportedModelError(
            f"two layers are named '{key[0]}' and the selector quantizes field '{key[1]}' of one but not "
            "the other; plans address tensors by layer name: give the layers unique names"
        )


def build_plan(
    model: Any,
    nbits: int | None,
    quantization_mode: str = "linear",
    selector: Any = None,
    lut_function: Callable | None = None,
    *,
    fuse: bool = True,
) -> QuantPlan:
    """Compile a global setting into a per-tensor :class:`QuantPlan`.

    Same arguments and tensor selection as coremltools' ``quantize_weights``.
    Below 16 bits (and with ``fuse=True``) the plan addresses the tensors of
    the *fused* model -- the one :func:`apply_plan` quantizes -- so a
    convolution that gains a bias from a folded batchnorm gets an entry for it.
    """
    codec = Codec(quantization_mode, nbits, lut_function)
    spec = load(model)
    if fuse and codec.quantizes:
        from .fuse import fuse_in_place

        fuse_in_place(spec)
    return select_tensors(spec, codec, selector)


# ---------------------------------------------------------------------------------- apply
def _where(layer: Any, field: str) -> str:
    return f"layer '{layer.name}' field '{field}'"


def decode_exact(wp: Any, shape: tuple[int, ...], channel_axis: int, where: str) -> np.ndarray:
    """Float32 values of any encoding, with linear dequantization computed in float64 and
    rounded once (as coremltools' ``_dequantize_wp`` does)."""
    enc, nbits = encoding_of(wp)
    count = int(np.prod(shape))
    if enc == "linear":
        lq = wp.quantization.linearQuantization
        if len(wp.rawValue) < -(-count * nbits // 8):
            raise InvalidWeightsError(f"{where}: rawValue holds {len(wp.rawValue)} bytes, too few for {count} values")
        q = unpack_bits(wp.rawValue, nbits, count).astype(np.float64)
        scale = np.asarray(lq.scale, dtype=np.float64)
        bias = np.asarray(lq.bias, dtype=np.float64) if len(lq.bias) else np.zeros(1)
        return _per_channel64(q, shape, channel_axis, scale, bias, where)
    if enc == "int8":
        q = np.frombuffer(wp.int8RawValue, dtype=np.int8).astype(np.float64)
        if q.size != count:
            raise InvalidWeightsError(f"{where}: int8RawValue holds {q.size} values, expected {count}")
        scale = np.asarray(wp.quantization.linearQuantization.scale, dtype=np.float64)
        return _per_channel64(q, shape, channel_axis, scale if scale.size else np.ones(1), np.zeros(1), where)
    return decode_weights(wp, shape, channel_axis, name=where).reshape(-1)


def _per_channel64(q, shape, axis, scale, bias, where) -> np.ndarray:
    if len(shape) <= 1 or (scale.size == 1 and bias.size == 1):
        if scale.size != 1 or bias.size != 1:
            raise InvalidWeightsError(f"{where}: {scale.size} scales for a 1-channel tensor of shape {shape}")
        return (q * scale[0] + bias[0]).astype(np.float32)
    if scale.size != shape[axis] or bias.size not in (1, scale.size):
        raise InvalidWeightsError(
            f"{where}: {scale.size} scales / {bias.size} biases do not match {shape[axis]} channels on axis {axis}"
        )
    bshape = [1] * len(shape)
    bshape[axis] = scale.size
    out = q.reshape(shape) * scale.reshape(bshape) + (bias.reshape(bshape) if bias.size > 1 else bias[0])
    return out.astype(np.float32).reshape(-1)


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
        values = decode_exact(wp, shape, slot.channel_axis, where)

    def encode() -> Encoded:
        return codec.encode(values, shape, slot.channel_axis, where=where)

    if not codec.cacheable:
        return encode(), enc == "int8"
    digest = tensor_digest(values, shape, slot.channel_axis)
    return cache.get_or_encode(digest, codec, encode), enc == "int8"


def _check_missing(plan: QuantPlan, found: set[Key], known: set[Key] | None) -> None:
    missing = [k for k in plan if k not in found and not (known and k in known)]
    if missing:
        shown = ", ".join(f"({a!r}, {b!r})" for a, b in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InvalidArgumentError(
            f"the plan names {len(missing)} tensor(s) the model does not have: {shown}{more}; "
            "see quantizer.weight_table(model) for the (layer, field) pairs"
        )


def apply_in_place(spec: Any, plan: QuantPlan, *, cache: CodecCache | None = None, known: set[Key] | None = None) -> int:
    """Apply ``plan`` to ``spec`` (modified in place, no fusion); return the tensors changed.

    ``known`` holds keys that may be absent from ``spec`` without error (layers
    folded away by fusion). Raises :class:`InvalidArgumentError` for a plan
    entry naming no tensor of the model, or a tensor that cannot be quantized.
    """
    cache = codec_cache if cache is None else cache
    wanted = {k: c for k, c in plan.items() if c is not None}
    found: set[Key] = set()
    changed = 0
    for nn in _networks(spec):
        for layer, slot in _all_slots(nn):
            key = (layer.name, slot.field)
            if key in plan:
                found.add(key)
            codec = wanted.get(key)
            if codec is None:
                continue
            wp = get_weight_params(layer, slot.field)
            encoded, was_int8 = _encode_tensor(wp, layer, slot, codec, cache)
            if encoded is None:
                continue
            encoded.write(wp)
            if was_int8 and hasattr(_layer_params(layer), "int8DynamicQuantize"):
                _layer_params(layer).int8DynamicQuantize = False
            changed += 1
    _check_missing(plan, found, known)
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
        slots = {slot.field: slot for slot in _slots(src)}
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
        if codec is not None and slot is not None:
            encoded, int8 = _encode_tensor(src, layer, slot, codec, self.cache)
        if encoded is None:
            _copy_whole(src, dst)
            return False
        for fd, val in src.ListFields():
            if fd.name not in _PAYLOAD:
                setattr(dst, fd.name, val)
        encoded.write(dst)
        return int8


def apply_copying(src: Any, plan: QuantPlan, *, cache: CodecCache | None = None) -> Any:
    """A new spec: ``src`` (not modified, no fusion) with ``plan`` applied."""
    from ._coremltools import coremltools

    applier = _CopyApplier(plan, codec_cache if cache is None else cache)
    out = coremltools().proto.Model_pb2.Model()
    applier.copy(src, out)
    _check_missing(plan, applier.found, None)
    return out


_FOLD_INTO = {"convolution", "innerProduct", "batchnorm"}
_FOLDED = {"batchnorm", "scale", "bias"}


def fusion_possible(spec: Any) -> bool:
    """Conservatively, whether :func:`quantizer.fuse` could fold anything: some
    batchnorm/scale/bias layer reads a blob a convolution/innerProduct/batchnorm writes."""
    producers: dict[str, str] = {}
    readers: list[tuple[str, list[str]]] = []

    def walk(nn: Any) -> None:
        for layer in nn.layers:
            kind = layer.WhichOneof("layer")
            for blob in layer.output:
                producers[blob] = kind
            if kind in _FOLDED:
                readers.append((kind, list(layer.input)))
            for sub in sub_networks(layer):
                walk(sub)

    for nn in _networks(spec):
        walk(nn)
    return any(producers.get(blob) in _FOLD_INTO for _, inputs in readers for blob in inputs[:1])


def source_spec(model: Any) -> tuple[Any, bool]:
    """(spec, owned): the model's spec without copying it where possible. ``owned`` is True
    when the spec is a private object (loaded from a path) that may be modified."""
    from ._coremltools import coremltools
    from .io import neural_networks

    Model = coremltools().proto.Model_pb2.Model
    if isinstance(model, Model):
        neural_networks(model, source="the model")
        return model, False
    if callable(getattr(model, "get_spec", None)) and isinstance(getattr(model, "_spec", None), Model):
        neural_networks(model._spec, source="the MLModel")
        return model._spec, False  # read only; get_spec() would deep-copy it first
    return load(model), True


def bump_spec_version(spec: Any, minimum: int) -> None:
    """Raise ``specificationVersion`` to at least ``minimum`` for every network model
    spec (and every pipeline wrapping one)."""
    for model, _ in _model_specs(spec):
        model.specificationVersion = max(int(minimum), model.specificationVersion)


def _keys(spec: Any) -> set[Key]:
    return {(layer.name, slot.field) for nn in _networks(spec) for layer, slot in _all_slots(nn)}


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
    if not isinstance(plan, QuantPlan):
        if not isinstance(plan, Mapping):
            raise InvalidArgumentError(f"plan must be a QuantPlan or a mapping, got {type(plan).__name__}")
        plan = QuantPlan(plan)
    cache = codec_cache if cache is None else cache
    src, owned = source_spec(model)
    fusing = fuse and plan.quantizes and fusion_possible(src)
    if owned or fusing:
        spec = src if owned else fresh_spec(src)
        known = None
        if fusing:
            from .fuse import fuse_in_place

            known = _keys(spec)
            fuse_in_place(spec)
        apply_in_place(spec, plan, cache=cache, known=known)
    else:
        spec = apply_copying(src, plan, cache=cache)
    if plan.codecs:
        bump_spec_version(spec, max(c.min_spec_version for c in plan.codecs))
    return as_kind_of(model, spec)


def fresh_spec(model: Any) -> Any:
    """A private, validated copy of ``model``'s spec (path, spec or ``MLModel``).

    Specs and ``MLModel``s are copied by serializing and parsing, several times
    faster than ``CopyFrom``/``MLModel.get_spec()`` (a deep copy) on large models.
    """
    from ._coremltools import coremltools
    from .io import neural_networks

    Model = coremltools().proto.Model_pb2.Model
    if isinstance(model, Model):
        src, source = model, "the model"
    elif callable(getattr(model, "get_spec", None)) and isinstance(getattr(model, "_spec", None), Model):
        src, source = model._spec, "the MLModel"  # read only; get_spec() would deep-copy it first
    else:
        return load(model)
    spec = Model()
    spec.ParseFromString(src.SerializeToString())
    neural_networks(spec, source=source)
    return spec


def as_kind_of(model: Any, spec: Any) -> Any:
    """``spec`` as an ``MLModel`` if ``model`` was one (same compute units), else the spec."""
    if callable(getattr(model, "get_spec", None)):
        from ._coremltools import coremltools

        ct = coremltools()
        kwargs = {}
        if hasattr(model, "compute_unit"):
            kwargs["compute_units"] = model.compute_unit
        return ct.models.MLModel(spec, **kwargs)
    return spec
