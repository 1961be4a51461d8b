"""What a model expects as input, and checking feeds against it.

Batch convention (shared with :mod:`harness.executors`): every feed carries N
samples in dimension 0. The per-sample shape is derived from the model's
declaration:

* ``multiArray`` input of a model with ``EXACT_ARRAY_MAPPING`` (what the PyTorch
  converter emits) whose declared shape starts with a batch dimension of 1,
  e.g. ``[1, 1, 8, 8]``: the feed is ``(N, 1, 8, 8)`` — N replaces the 1.
* any other ``multiArray`` input (legacy ``RANK5_ARRAY_MAPPING`` models built
  with ``NeuralNetworkBuilder`` declare ``(C,)`` or ``(C, H, W)``; exact-mapping
  shapes without a leading 1): the declared shape is one sample and the feed is
  ``(N, *declared)``.
* ``image`` input of width W, height H: pixel arrays the way PIL gives them,
  ``(N, H, W, 3)`` in RGB order for RGB/BGR models and ``(N, H, W)`` (or
  ``(N, H, W, 1)``) for grayscale ones, values 0..255, converted to float32.
  This is the layout :mod:`harness.executors` takes; the model's own
  preprocessing (channel order, scale, bias) is applied by the executor.

Exact mapping applies only from specification version 4 (iOS 13) on, where
the field exists; older models are always rank-5 mapped. Optional inputs
(``isOptional``) may be left out of the feeds.

Feed dtypes: ``FLOAT32``/``FLOAT16``/``DOUBLE`` inputs take floating arrays,
``INT32``/``INT8`` inputs take integer arrays.

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
from typing import Any, Mapping

import numpy as np

import quantizer
from harness.errors import DataError
from quantizer._coremltools import coremltools

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


@dataclass(frozen=True)
class InputSpec:
    """One model input and the feed it takes.

    Attributes:
        name: the input's feature name.
        kind: ``"multiArray"`` or ``"image"``.
        type_name: the declared element type (``FLOAT32``, ``INT32``, ``GRAYSCALE`` ...).
        dtype: the numpy dtype feeds are converted to (``float32`` for images).
        declared_shape: the shape written in the model description.
        sample_shape: the shape of one sample; a feed is ``(N, *sample_shape)``.
        ranges: per sample dimension ``(lower, upper)`` bounds when the model declares
            a flexible shape range (``upper`` is ``-1`` for unbounded), else ``None``.
        enumerated: the allowed per-sample shapes when the model enumerates them, else ``None``.
        exact_mapping: True for ``EXACT_ARRAY_MAPPING`` models.
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

    def accepts(self, sample_shape: tuple[int, ...]) -> bool:
        """Whether one sample of this shape fits the declaration (incl. flexible shapes)."""
        sample_shape = tuple(int(d) for d in sample_shape)
        if self.kind == "image" and self.declared_shape[0] == 1 and len(sample_shape) == 3 and sample_shape[2] == 1:
            sample_shape = sample_shape[:2]  # grayscale (N, H, W, 1)
        if self.enumerated is not None:
            return sample_shape in self.enumerated
        if self.ranges is not None:
            if len(sample_shape) != len(self.ranges):
                return False
            return all(lo <= d and (hi < 0 or d <= hi) for d, (lo, hi) in zip(sample_shape, self.ranges))
        return sample_shape == self.sample_shape

    def feed_shape_text(self) -> str:
        """The expected feed shape as text, e.g. ``(N, 1, 8, 8)``."""
        if self.enumerated is not None:
            return " or ".join(_shape_text(("N",) + s) for s in self.enumerated)
        if self.ranges is not None:
            dims = [str(lo) if lo == hi else f"{lo}..{'inf' if hi < 0 else hi}" for lo, hi in self.ranges]
            return "(" + ", ".join(["N"] + dims) + ")"
        return _shape_text(("N",) + self.sample_shape)

    def describe(self) -> str:
        """One line: name, dtype and the feed shape, plus the raw declaration."""
        if self.kind == "image":
            h, w = self.declared_shape[-2:]
            decl = f"image {self.type_name} {w}x{h}, pixel values 0..255"
            if self.declared_shape[0] == 3:
                decl += ", RGB channel order"
        else:
            decl = f"multiArray {self.type_name} declared {list(self.declared_shape)}"
            decl += ", exact mapping" if self.exact_mapping else ", rank-5 mapping"
        return f"'{self.name}': {self.dtype.name} array {self.feed_shape_text()} [{decl}]"


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


def _nn_message(spec):
    """The NeuralNetwork(-Classifier/-Regressor) message that reads the model inputs, or None."""
    kind = spec.WhichOneof("Type")
    if kind in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        return getattr(spec, kind)
    if kind in ("pipeline", "pipelineClassifier", "pipelineRegressor"):
        pipe = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        for sub in pipe.models:
            found = _nn_message(sub)
            if found is not None:
                return found
    return None


def expected_inputs(model: Any) -> list[InputSpec]:
    """The model's inputs as :class:`InputSpec`, in declaration order.

    Raises:
        DataError: an input has a type a neural network cannot take here
            (not ``multiArray`` or ``image``).
    """
    spec = as_spec(model)
    nn = _nn_message(spec)
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
    drop_batch = exact and len(declared) >= 2 and declared[0] == 1
    sample = declared[1:] if drop_batch else declared
    ranges = enumerated = None
    flex = t.WhichOneof("ShapeFlexibility")
    if flex == "shapeRange" and len(t.shapeRange.sizeRanges):
        r = tuple((int(s.lowerBound), int(s.upperBound)) for s in t.shapeRange.sizeRanges)
        ranges = r[1:] if drop_batch else r
    elif flex == "enumeratedShapes" and len(t.enumeratedShapes.shapes):
        shapes = [tuple(int(d) for d in s.shape) for s in t.enumeratedShapes.shapes]
        enumerated = tuple(s[1:] if drop_batch and len(s) == len(declared) else s for s in shapes)
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
    return "\n".join("  " + i.describe() for i in expected_inputs(model))


def _given_text(feeds: Mapping[str, Any]) -> str:
    parts = []
    for k, v in feeds.items():
        if isinstance(v, np.ndarray):
            parts.append(f"  '{k}': {v.dtype.name} array {_shape_text(v.shape)}")
        else:
            parts.append(f"  '{k}': {type(v).__name__}")
    return "\n".join(parts) if parts else "  (nothing)"


def feed_problems(model: Any, feeds: Mapping[str, Any]) -> list[str]:
    """Every way ``feeds`` fail to fit the model's inputs (empty when they fit)."""
    inputs = expected_inputs(model)
    problems: list[str] = []
    names = {i.name for i in inputs}
    missing = [i.name for i in inputs if i.name not in feeds and not i.optional]
    extra = [k for k in feeds if k not in names]
    if missing:
        problems.append("missing input(s) " + ", ".join(f"'{n}'" for n in missing))
    if extra:
        problems.append("unknown input name(s) " + ", ".join(f"'{n}'" for n in extra))
    counts: dict[str, int] = {}
    for inp in inputs:
        if inp.name not in feeds:
            continue
        arr = feeds[inp.name]
        if not isinstance(arr, np.ndarray):
            problems.append(f"'{inp.name}' is a {type(arr).__name__}, not a numpy array")
            continue
        if arr.ndim < 1 or not inp.accepts(arr.shape[1:]):
            problems.append(
                f"'{inp.name}' has shape {_shape_text(arr.shape)}, the model takes {inp.feed_shape_text()}"
            )
        elif arr.shape[0] == 0:
            problems.append(f"'{inp.name}' holds no samples (N = 0)")
        else:
            counts[inp.name] = arr.shape[0]
        if inp.is_integer:
            if arr.dtype.kind not in "iu":
                problems.append(
                    f"'{inp.name}' has dtype {arr.dtype.name}, the model takes {inp.type_name} (an integer array)"
                )
            elif arr.size and (arr.min() < np.iinfo(inp.dtype).min or arr.max() > np.iinfo(inp.dtype).max):
                problems.append(f"'{inp.name}' has values outside the {inp.type_name} range")
        else:
            if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
                problems.append(
                    f"'{inp.name}' has dtype {arr.dtype.name}, the model takes {inp.type_name} (a float array)"
                )
            elif arr.dtype.kind == "f" and arr.size and not np.all(np.isfinite(arr)):
                bad = int(np.count_nonzero(~np.isfinite(arr)))
                problems.append(f"'{inp.name}' contains {bad} NaN or infinite value(s)")
    if len(set(counts.values())) > 1:
        problems.append(
            "inputs disagree on the number of samples N: "
            + ", ".join(f"'{k}' has {n}" for k, n in counts.items())
        )
    return problems


def check_feeds(model: Any, feeds: Mapping[str, Any], source: str | None = None) -> None:
    """Raise :class:`DataError` unless ``feeds`` fit the model's inputs exactly.

    Checks, before any evaluation: every input is present and no unknown name is
    given; each array has rank and shape ``(N, *sample_shape)`` (honouring flexible
    shapes); the dtype kind matches (integer inputs need integer arrays, float inputs
    numeric arrays) and float values are finite; all inputs share one N >= 1.

    Args:
        model: a spec, ``MLModel`` or ``.mlmodel`` path.
        feeds: input name -> array with the samples in dimension 0.
        source: where the feeds came from (a file name), quoted in the message.

    Raises:
        DataError: naming every problem, the model's expected inputs and what was given.
    """
    problems = feed_problems(model, feeds)
    if problems:
        where = f" from {source}" if source else ""
        raise DataError(
            f"Test data{where} does not fit the model: " + "; ".join(problems) + ".\n"
            f"The model expects:\n{describe_inputs(model)}\nGiven:\n{_given_text(feeds)}"
        )


def conform_feeds(model: Any, feeds: Mapping[str, Any], source: str | None = None) -> dict[str, np.ndarray]:
    """Check ``feeds`` (see :func:`check_feeds`) and return them in the model's dtypes.

    Float inputs are converted to the declared float type (float32 for images and
    FLOAT32 arrays). Integer inputs accept integer arrays, and float arrays whose values
    are all whole numbers; anything else is a :class:`DataError` (never rounded).
    The returned arrays are C-contiguous copies.
    """
    inputs = {i.name: i for i in expected_inputs(model)}
    fixed: dict[str, Any] = {}
    for k, v in feeds.items():
        inp = inputs.get(k)
        if isinstance(v, np.ndarray) and inp is not None and inp.is_integer and v.dtype.kind == "f":
            if v.size and not np.all(np.isfinite(v) & (v == np.round(v))):
                where = f" from {source}" if source else ""
                raise DataError(
                    f"Input '{k}'{where} takes {inp.type_name} values but the data holds non-integer numbers; "
                    "give integer ids (they are never rounded)."
                )
            v = v.astype(np.int64)
        fixed[k] = v
    check_feeds(model, fixed, source)
    return {k: np.ascontiguousarray(v, dtype=inputs[k].dtype) for k, v in fixed.items()}
