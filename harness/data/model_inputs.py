"""The model-input contract: what inputs a model declares, which feeds fit them, how feeds are conformed.

The one definition, used by the data loaders (:mod:`harness.data`) and by the
executors (:mod:`harness.executors`): whatever a loader accepts an executor
runs, and the other way round.

Batch convention
----------------
A feed is an array per input name; its samples run along a leading axis N.
For a ``multiArray`` input declared with shape ``D``:

1. where ``D`` starts with 1, ``(N, *D[1:])`` is **N samples**: the 1 is the
   batch dim of a converted (``EXACT_ARRAY_MAPPING``) model, e.g. ``[1, 1, 8, 8]``
   takes ``(N, 1, 8, 8)`` (for a legacy model it is a channel count of 1);
2. an array of exactly shape ``D`` is **one sample** (N = 1);
3. ``(N, *D)`` is **N samples**;
4. legacy models (``RANK5_ARRAY_MAPPING``: ``D`` is ``(C,)`` or ``(C, H, W)``)
   also take ``(N, S, *D)``: **N samples, each a sequence of S steps** (Core
   ML's Seq axis).

The first form that fits wins. The per-sample shape
(:attr:`InputSpec.sample_shape`) is ``D[1:]`` in case 1 for converted models,
else ``D``. ``image`` inputs take pixel arrays the way PIL gives them, in RGB
order whatever the model's colour space: ``(N, H, W, 3)`` or one sample
``(H, W, 3)`` for RGB/BGR models; ``(N, H, W)``, ``(N, H, W, 1)`` or one sample
``(H, W)`` for grayscale ones; values 0..255. The executor applies the model's
preprocessing (channel order, scale, biases, mean image). Flexible shapes
(``shapeRange``, ``enumeratedShapes``, image size ranges) are honoured.

Exact mapping applies only from specification version 4 (iOS 13) on, where
the field exists; older models are always rank-5 mapped. Optional inputs
(``isOptional``) may be left out of the feeds.

Feed values: ``FLOAT32`` / ``FLOAT16`` / ``DOUBLE`` and image inputs take
numeric (or boolean) arrays; ``INT32`` / ``INT8`` inputs take integer arrays,
or float arrays holding whole numbers (never rounded), within the type's
range. All inputs share one N >= 1. Test data must also be finite
(:func:`check_feeds`); an executor runs NaN as given.

Example:
    >>> from harness import zoo
    >>> from harness.data import expected_inputs
    >>> spec, _ = zoo.load("digits_cnn")
    >>> print(expected_inputs(spec)[0].describe())
    'image': float32 array (N, 1, 8, 8) [multiArray FLOAT32 declared [1, 1, 8, 8], exact mapping]
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Mapping, NamedTuple

import numpy as np

import quantizer
from harness.errors import DataError
from quantizer.coremltools_quiet import coremltools
from quantizer.walk import model_networks

# ArrayFeatureType.ArrayDataType values (FeatureTypes.proto)
_ARRAY_DTYPES = {
    0: ("FLOAT32", np.dtype(np.float32)),  # INVALID_ARRAY_DATA_TYPE: Core ML treats it as float
    65568: ("FLOAT32", np.dtype(np.float32)),
    65600: ("DOUBLE", np.dtype(np.float64)),
    65552: ("FLOAT16", np.dtype(np.float16)),
    131104: ("INT32", np.dtype(np.int32)),
    131080: ("INT8", np.dtype(np.int8)),
}
# ImageFeatureType.ColorSpace values
_COLOR_CHANNELS = {10: ("GRAYSCALE", 1), 20: ("RGB", 3), 30: ("BGR", 3), 40: ("GRAYSCALE_FLOAT16", 1)}
_EXACT_ARRAY_MAPPING = 1


class Feed(NamedTuple):
    """One input's feed, read by the batch convention (:meth:`InputSpec.split`).

    Attributes:
        x: the array with the sample axis in front: ``(N, *declared)``, or
            ``(N, S, *declared)`` for legacy sequences (``multiArray``);
            ``(N, H, W, C)`` pixels (images, ``C`` = 1 or 3).
        n: the number of samples N.
        s: the sequence length S (1 unless the feed holds legacy sequences).
        one_sample: the feed was given without its N axis (one sample).
    """

    x: np.ndarray
    n: int
    s: int = 1
    one_sample: bool = False


@dataclass(frozen=True)
class InputSpec:
    """One model input and the feeds it takes.

    Attributes:
        name: the input's feature name.
        kind: ``"multiArray"`` or ``"image"``.
        type_name: the declared element type (``FLOAT32``, ``INT32`` ...) or, for
            images, colour space (``GRAYSCALE``, ``RGB``, ``BGR`` ...).
        dtype: the numpy dtype feeds are converted to (``float32`` for images).
        declared_shape: the shape written in the model description; images ``(C, H, W)``.
        sample_shape: the shape of one sample; the usual feed is ``(N, *sample_shape)``.
        ranges: per sample dimension ``(lower, upper)`` bounds when the model declares
            a flexible shape range (``upper`` is ``-1`` for unbounded), else ``None``.
        enumerated: the allowed per-sample shapes when the model enumerates them, else ``None``.
        exact_mapping: True for ``EXACT_ARRAY_MAPPING`` models (False: legacy rank-5 mapping).
        optional: the model marks the input optional (it may be absent from the feeds).
    """

    name: str
    kind: str
    type_name: str
    dtype: np.dtype
    declared_shape: tuple[int, ...]
    sample_shape: tuple[int, ...]
    ranges: tuple[tuple[int, int], ...] | None = None
    enumerated: tuple[tuple[int, ...], ...] | None = None
    exact_mapping: bool = False
    optional: bool = False

    @property
    def is_integer(self) -> bool:
        """True when the input takes integer values (token ids, masks)."""
        return self.dtype.kind in "iu"

    @property
    def has_batch_dim(self) -> bool:
        """True for a converted model's array input whose declared leading 1 is the batch dim (not in a sample)."""
        return self.kind == "multiArray" and len(self.sample_shape) == len(self.declared_shape) - 1

    @property
    def channels(self) -> int:
        """An image input's channel count (1 grayscale, 3 colour)."""
        return self.declared_shape[0]

    def accepts(self, sample_shape: tuple[int, ...]) -> bool:
        """Whether one sample of this shape fits the declaration (incl. flexible shapes)."""
        sample_shape = tuple(int(d) for d in sample_shape)
        if self.kind == "image" and self.channels == 1 and len(sample_shape) == 3 and sample_shape[2] == 1:
            sample_shape = sample_shape[:2]  # grayscale (H, W, 1)
        if self.enumerated is not None:
            return sample_shape in self.enumerated or sample_shape == self.sample_shape
        if self.ranges is not None:
            if len(sample_shape) != len(self.ranges):
                return False
            return all(lo <= d and (hi < 0 or d <= hi) for d, (lo, hi) in zip(sample_shape, self.ranges))
        return sample_shape == self.sample_shape

    def _fits_declared(self, shape: tuple[int, ...]) -> bool:
        """Whether ``shape`` fits the declared shape (a converted model's batch dim must be 1)."""
        if self.has_batch_dim:
            return len(shape) == len(self.declared_shape) and shape[0] == 1 and self.accepts(shape[1:])
        return self.accepts(shape)

    def split(self, a: np.ndarray) -> Feed | None:
        """Read ``a`` by the batch convention (module docstring); None when no form fits."""
        return self._split_image(a) if self.kind == "image" else self._split_array(a)

    def _split_array(self, a: np.ndarray) -> Feed | None:
        shape, d = tuple(a.shape), len(self.declared_shape)
        if d and self.declared_shape[0] == 1 and a.ndim == d and self._fits_declared((1,) + shape[1:]):
            return Feed(a.reshape((shape[0], 1) + shape[1:]), shape[0])
        if a.ndim == d and self._fits_declared(shape):
            return Feed(a.reshape((1,) + shape), 1, one_sample=True)
        if a.ndim == d + 1 and self._fits_declared(shape[1:]):
            return Feed(a, shape[0])
        if not self.exact_mapping and a.ndim == d + 2 and self._fits_declared(shape[2:]):
            return Feed(a, shape[0], shape[1])
        return None

    def _split_image(self, a: np.ndarray) -> Feed | None:
        shape = tuple(a.shape)
        if self.channels == 1:
            if a.ndim == 2 and self.accepts(shape):
                return Feed(a.reshape((1,) + shape + (1,)), 1, one_sample=True)
            if a.ndim == 3 and self.accepts(shape[1:]):
                return Feed(a.reshape(shape + (1,)), shape[0])
            if a.ndim == 4 and shape[3] == 1 and self.accepts(shape[1:3]):
                return Feed(a, shape[0])
        else:
            if a.ndim == 3 and self.accepts(shape):
                return Feed(a.reshape((1,) + shape), 1, one_sample=True)
            if a.ndim == 4 and self.accepts(shape[1:]):
                return Feed(a, shape[0])
        return None

    def feed_shape_text(self, lead: tuple[str, ...] = ("N",)) -> str:
        """The expected feed shape as text, e.g. ``(N, 1, 8, 8)`` (``lead``: the axes in front)."""
        if self.enumerated is not None:
            return " or ".join(_shape_text(lead + s) for s in self.enumerated)
        if self.ranges is not None:
            dims = [str(lo) if lo == hi else f"{lo}..{'inf' if hi < 0 else hi}" for lo, hi in self.ranges]
            return "(" + ", ".join(list(lead) + dims) + ("," if len(lead) + len(dims) == 1 else "") + ")"
        return _shape_text(lead + self.sample_shape)

    def describe(self) -> str:
        """One line: name, dtype and the feed shape, the raw declaration, and the other forms taken."""
        if self.kind == "image":
            h, w = self.declared_shape[-2:]
            decl = f"image {self.type_name} {w}x{h}, pixel values 0..255"
            if self.channels == 3:
                decl += ", RGB channel order"
        else:
            decl = f"multiArray {self.type_name} declared {list(self.declared_shape)}"
            decl += ", exact mapping" if self.exact_mapping else ", rank-5 mapping"
        also = []
        if not self.has_batch_dim:
            also.append(f"{self.feed_shape_text(())} for one sample")
        if self.kind != "image" and not self.exact_mapping:
            also.append(f"{self.feed_shape_text(('N', 'S'))} for N sequences of S steps")
        return (f"'{self.name}': {self.dtype.name} array {self.feed_shape_text()} [{decl}]"
                + ("; also " + ", ".join(also) if also else ""))


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def as_spec(model: Any):
    """Return the ``Model_pb2.Model`` for a spec, an ``MLModel`` or a ``.mlmodel`` path."""
    ct = coremltools()
    if isinstance(model, ct.proto.Model_pb2.Model):
        return model
    if hasattr(model, "get_spec"):
        return model.get_spec()
    if isinstance(model, (str, os.PathLike)):
        return quantizer.load(model)
    raise DataError(
        f"Expected a Core ML model (Model_pb2.Model spec, MLModel or .mlmodel path), got {type(model).__name__}."
    )


def expected_inputs(model: Any) -> list[InputSpec]:
    """The model's inputs as :class:`InputSpec`, in declaration order.

    Raises:
        DataError: an input has a type a neural network cannot take here
            (not ``multiArray`` or ``image``).
    """
    spec = as_spec(model)
    nn = next((net for _, net in model_networks(spec)), None)  # the network reading the inputs
    exact = (nn is not None and spec.specificationVersion >= 4
             and nn.arrayInputShapeMapping == _EXACT_ARRAY_MAPPING)
    result = []
    for feat in spec.description.input:
        which = feat.type.WhichOneof("Type")
        if which == "multiArrayType":
            inp = _array_input(feat.name, feat.type.multiArrayType, exact)
        elif which == "imageType":
            inp = _image_input(feat.name, feat.type.imageType)
        else:
            raise DataError(
                f"Model input '{feat.name}' is of type {which}; qsweep feeds only multiArray and image inputs."
            )
        if feat.type.isOptional:
            inp = replace(inp, optional=True)
        result.append(inp)
    return result


def _array_input(name: str, t, exact: bool) -> InputSpec:
    type_name, dtype = _ARRAY_DTYPES.get(t.dataType, (None, None))
    if dtype is None:
        raise DataError(f"Model input '{name}' has an unknown multiArray dataType {t.dataType}.")
    declared = tuple(int(d) for d in t.shape)
    ranges = enumerated = None
    flex = t.WhichOneof("ShapeFlexibility")
    if flex == "shapeRange" and len(t.shapeRange.sizeRanges):
        ranges = tuple((int(s.lowerBound), int(s.upperBound)) for s in t.shapeRange.sizeRanges)
    elif flex == "enumeratedShapes" and len(t.enumeratedShapes.shapes):
        enumerated = tuple(tuple(int(d) for d in s.shape) for s in t.enumeratedShapes.shapes)
    if not declared:  # a flexible shape without a default: its first choice / lower bounds
        declared = enumerated[0] if enumerated else tuple(lo for lo, _ in ranges or ())
    drop_batch = exact and len(declared) >= 2 and declared[0] == 1
    if drop_batch:
        ranges = ranges[1:] if ranges else ranges
        enumerated = tuple(s[1:] if len(s) == len(declared) else s for s in enumerated) if enumerated else enumerated
    sample = declared[1:] if drop_batch else declared
    return InputSpec(name, "multiArray", type_name, dtype, declared, sample, ranges, enumerated, exact)


def _image_input(name: str, t) -> InputSpec:
    space, channels = _COLOR_CHANNELS.get(t.colorSpace, (None, None))
    if space is None:
        raise DataError(f"Model input '{name}' is an image with an invalid colorSpace ({t.colorSpace}).")
    declared = (channels, int(t.height), int(t.width))
    tail = (3,) if channels == 3 else ()
    sample = (int(t.height), int(t.width)) + tail
    ranges = enumerated = None
    flex = t.WhichOneof("SizeFlexibility")
    if flex == "imageSizeRange":
        hr, wr = t.imageSizeRange.heightRange, t.imageSizeRange.widthRange
        ranges = ((int(hr.lowerBound), int(hr.upperBound)), (int(wr.lowerBound), int(wr.upperBound)))
        ranges += ((3, 3),) if tail else ()
    elif flex == "enumeratedSizes" and len(t.enumeratedSizes.sizes):
        enumerated = tuple((int(s.height), int(s.width)) + tail for s in t.enumeratedSizes.sizes)
    return InputSpec(name, "image", space, np.dtype(np.float32), declared, sample, ranges, enumerated)


def describe_inputs(model: Any) -> str:
    """All expected inputs as text, one per line (used in error messages)."""
    return _describe(expected_inputs(model))


def _describe(inputs: list[InputSpec]) -> str:
    return "\n".join("  " + i.describe() for i in inputs)


def _given_text(feeds: Any) -> str:
    if not isinstance(feeds, Mapping):
        return f"  a {type(feeds).__name__}"
    parts = []
    for k, v in feeds.items():
        if isinstance(v, np.ndarray):
            parts.append(f"  '{k}': {v.dtype.name} array {_shape_text(v.shape)}")
        else:
            parts.append(f"  '{k}': {type(v).__name__}")
    return "\n".join(parts) if parts else "  (nothing)"


def _value_problems(inp: InputSpec, arr: np.ndarray, finite: bool) -> list[str]:
    """Dtype and value problems of one feed (see the module docstring)."""
    kind = arr.dtype.kind
    if inp.is_integer:
        if kind not in "biuf":
            return [f"'{inp.name}' has dtype {arr.dtype.name}, the model takes {inp.type_name} (an integer array)"]
        if kind == "f" and arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            return [f"'{inp.name}' has dtype {arr.dtype.name}, the model takes {inp.type_name} (an integer array) "
                    "and the array holds non-integer numbers (they are never rounded)"]
        info = np.iinfo(inp.dtype)
        if arr.size and kind != "b" and (arr.min() < info.min or arr.max() > info.max):
            return [f"'{inp.name}' has values outside the {inp.type_name} range"]
        return []
    if kind not in "biuf":
        return [f"'{inp.name}' has dtype {arr.dtype.name}, the model takes {inp.type_name} (a numeric array)"]
    if finite and kind == "f" and arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        return [f"'{inp.name}' contains {bad} NaN or infinite value(s)"]
    return []


def _examine(inputs: list[InputSpec], feeds: Any, finite: bool) -> tuple[list[str], dict[str, Feed]]:
    """Every problem of ``feeds`` against ``inputs``, and the feeds that fit, read by the convention."""
    if not isinstance(feeds, Mapping):
        return [f"feeds must be a dict of input name -> array, got a {type(feeds).__name__}"], {}
    problems: list[str] = []
    names = {i.name for i in inputs}
    missing = [i.name for i in inputs if i.name not in feeds and not i.optional]
    extra = [k for k in feeds if k not in names]
    if missing:
        problems.append("missing input(s) " + ", ".join(f"'{n}'" for n in missing))
    if extra:
        problems.append("unknown input name(s) " + ", ".join(f"'{n}'" for n in extra))
    split: dict[str, Feed] = {}
    for inp in inputs:
        if inp.name not in feeds:
            continue
        try:
            arr = np.asarray(feeds[inp.name])
        except (ValueError, TypeError) as e:  # ragged nested lists
            problems.append(f"'{inp.name}' is not an array ({e})")
            continue
        feed = inp.split(arr) if arr.ndim else None
        if feed is None:
            problems.append(f"'{inp.name}' has shape {_shape_text(arr.shape)}, the model takes {inp.feed_shape_text()}")
        elif feed.n == 0:
            problems.append(f"'{inp.name}' holds no samples (N = 0)")
        values = _value_problems(inp, arr, finite)
        problems += values
        if feed is not None and feed.n and not values:
            split[inp.name] = feed
    counts = {k: f.n for k, f in split.items()}
    if len(set(counts.values())) > 1:
        problems.append("inputs disagree on the number of samples N: "
                        + ", ".join(f"'{k}' has {n}" for k, n in counts.items()))
    return problems, split


def split_feeds(inputs: list[InputSpec], feeds: Mapping[str, Any], *,
                context: str = "The feeds do not fit the model",
                finite: bool = False) -> tuple[dict[str, Feed], int]:
    """Check ``feeds`` against ``inputs`` and read each by the batch convention.

    Returns ``({name: Feed}, N)``. ``finite=True`` also rejects NaN / infinite
    values (test data). The executors call this on every ``predict``.

    Raises:
        DataError: ``context``, then every problem, the model's expected inputs and what was given.
    """
    problems, split = _examine(inputs, feeds, finite)
    if problems:
        raise DataError(f"{context}: " + "; ".join(problems) + ".\n"
                        f"The model expects:\n{_describe(inputs)}\nGiven:\n{_given_text(feeds)}")
    return split, (next(iter(split.values())).n if split else 1)


def feed_problems(model: Any, feeds: Mapping[str, Any]) -> list[str]:
    """Every way ``feeds`` fail to fit the model's inputs as test data (empty when they fit)."""
    return _examine(expected_inputs(model), feeds, finite=True)[0]


def _context(source: str | None) -> str:
    return f"Test data{f' from {source}' if source else ''} does not fit the model"


def check_feeds(model: Any, feeds: Mapping[str, Any], source: str | None = None) -> None:
    """Raise :class:`DataError` unless ``feeds`` fit the model's inputs as test data.

    Checks, before any evaluation: every input is present and no unknown name is
    given; each array has a shape the batch convention reads (honouring flexible
    shapes); the dtype fits (integer inputs take whole numbers) and float values
    are finite; all inputs share one N >= 1.

    Args:
        model: a spec, ``MLModel`` or ``.mlmodel`` path.
        feeds: input name -> array, by the batch convention.
        source: where the feeds came from (a file name), quoted in the message.

    Raises:
        DataError: naming every problem, the model's expected inputs and what was given.
    """
    split_feeds(expected_inputs(model), feeds, context=_context(source), finite=True)


def conform_feeds(model: Any, feeds: Mapping[str, Any], source: str | None = None) -> dict[str, np.ndarray]:
    """Check ``feeds`` (see :func:`check_feeds`) and return them with N in front, in the model's dtypes.

    A feed given as one sample gets a leading N of 1; every other form is kept as
    given. Float inputs are converted to the declared float type (float32 for
    images and FLOAT32 arrays), integer inputs to their integer type (float arrays
    of whole numbers included; anything else is a :class:`DataError`, never
    rounded). The returned arrays are C-contiguous.
    """
    inputs = expected_inputs(model)
    split, _ = split_feeds(inputs, feeds, context=_context(source), finite=True)
    dtypes = {i.name: i.dtype for i in inputs}
    out = {}
    for k, feed in split.items():
        arr = np.asarray(feeds[k])
        out[k] = np.ascontiguousarray(arr[None] if feed.one_sample else arr, dtype=dtypes[k])
    return out
