"""A model's inputs and outputs as the executors see them: feed validation and the batch convention.

Batch convention (shared by every executor)
-------------------------------------------
For an array input declared with shape ``D``:

* an array of exactly shape ``D`` is **one sample**;
* where ``D`` starts with a batch dim of 1 (converted models, e.g.
  ``[1, 3, 32, 32]``), an array ``(N, *D[1:])`` is **N samples**;
* an array ``(N, *D)`` is N samples (any model);
* legacy rank-5 models (RANK5_ARRAY_MAPPING, ``D`` = ``(C,)`` or ``(C, H, W)``)
  also take ``(N, S, *D)``: N samples, each a sequence of S steps (the Core ML
  Seq axis).

Image inputs take pixel arrays the way PIL gives them, in RGB order whatever
the model's colour space: ``(H, W, 3)`` / ``(N, H, W, 3)`` for RGB/BGR models,
``(H, W)`` / ``(N, H, W)`` / ``(N, H, W, 1)`` for grayscale ones; values 0..255.
The executor applies the model's preprocessing (channel order, scale, biases,
mean image).

Integer (INT32) and DOUBLE inputs are accepted; the numpy executor computes in
float32, as Core ML does. INT32 inputs must hold integral values.

Every output carries a leading N (N = 1 for a single sample). Exact-mapping
outputs are ``(N, *s)`` where ``s`` is Core ML's per-sample shape with a
leading 1 (the model's batch dim) dropped. Legacy outputs drop the Seq axis
when it is 1 and the Batch axis, and ``H, W`` when the declared output has
rank 1 (or no declared shape and ``H = W = 1``). A classifier's predicted
label output is ``(N,)`` of labels (int64 or str) and its probabilities
output ``(N, K)`` with columns in the order of ``class_labels``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

import quantizer
from harness.errors import DataError, ExecutorError

FLOAT32, DOUBLE, INT32, INT8, FLOAT16 = 65568, 65600, 131104, 131080, 65552
GRAYSCALE, RGB, BGR, GRAYSCALE_FLOAT16 = 10, 20, 30, 40
_DTYPE_NAMES = {FLOAT32: "FLOAT32", DOUBLE: "DOUBLE", INT32: "INT32", INT8: "INT8", FLOAT16: "FLOAT16"}


def load_spec(model: Any) -> tuple[Any, str]:
    """Return ``(Model_pb2.Model, label)`` for a path, an MLModel or a spec (a private copy)."""
    label = str(model) if isinstance(model, (str, Path)) else "model"
    return quantizer.load(model), label


@dataclass(frozen=True)
class InputInfo:
    """One model input."""

    name: str
    kind: str  # "array" | "image"
    shape: tuple[int, ...]  # declared default shape; images: (C, H, W)
    dtype: int = FLOAT32
    ranges: tuple[tuple[int, int], ...] | None = None  # shapeRange (upper -1: unbounded)
    enumerated: tuple[tuple[int, ...], ...] | None = None
    color_space: int = 0
    optional: bool = False

    def describe(self) -> str:
        """Human-readable expectation, for error messages."""
        if self.kind == "image":
            c, h, w = self.shape
            px = f"({h}, {w})" if c == 1 else f"({h}, {w}, 3) RGB"
            return f"image {self.name!r}: pixel array {px} for one sample, or with a leading N"
        dt = _DTYPE_NAMES.get(self.dtype, str(self.dtype))
        s = f"{dt} array {self.name!r} of shape {list(self.shape)}"
        if self.ranges:
            s += " (ranges " + ", ".join(f"{lo}..{'inf' if hi < 0 else hi}" for lo, hi in self.ranges) + ")"
        elif self.enumerated:
            s += f" (or one of {[list(e) for e in self.enumerated]})"
        return s

    def fits(self, shape: Sequence[int]) -> bool:
        """Whether ``shape`` is an allowed per-sample shape for this array input."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != len(self.shape):
            return False
        if self.ranges:
            return all(lo <= s and (hi < 0 or s <= hi) for s, (lo, hi) in zip(shape, self.ranges))
        if self.enumerated:
            return shape in self.enumerated or shape == self.shape
        return shape == self.shape


@dataclass(frozen=True)
class OutputInfo:
    """One model output."""

    name: str
    shape: tuple[int, ...]
    kind: str = "array"  # "array" | "label" | "probabilities"


class ModelIO:
    """Inputs, outputs, classifier labels and preprocessing of a neural-network model spec."""

    def __init__(self, spec: Any, label: str = "model") -> None:
        self.label = label
        kind = spec.WhichOneof("Type")
        if kind not in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
            raise ExecutorError(
                f"{label}: the executors run neuralNetwork, neuralNetworkClassifier and "
                f"neuralNetworkRegressor models; this model is {kind!r}"
            )
        self.model_type: str = kind
        self.nn = getattr(spec, kind)
        self.spec_version = int(spec.specificationVersion)
        self.legacy = not (self.spec_version >= 4 and self.nn.arrayInputShapeMapping == 1)
        self.image_rank5 = not (self.spec_version >= 4 and self.nn.imageInputShapeMapping == 1)
        desc = spec.description
        self.inputs: list[InputInfo] = [self._input_info(f) for f in desc.input]
        self.class_labels: list[Any] | None = None
        self.label_output = self.prob_output = None
        self.prob_blob: str | None = None
        if kind == "neuralNetworkClassifier":
            which = self.nn.WhichOneof("ClassLabels")
            if which is None:
                raise ExecutorError(f"{label}: the classifier has no class labels")
            vec = getattr(self.nn, which).vector
            self.class_labels = [str(v) for v in vec] if which == "stringClassLabels" else [int(v) for v in vec]
            self.label_output = desc.predictedFeatureName or None
            self.prob_output = desc.predictedProbabilitiesName or None
            self.prob_blob = self.nn.labelProbabilityLayerName or self.prob_output or (
                self.nn.layers[-1].output[0] if len(self.nn.layers) else None)
        self.outputs: list[OutputInfo] = []
        for f in desc.output:
            ok = "label" if f.name == self.label_output else "probabilities" if f.name == self.prob_output and self.class_labels is not None else "array"
            shape = tuple(int(s) for s in f.type.multiArrayType.shape) if f.type.WhichOneof("Type") == "multiArrayType" else ()
            self.outputs.append(OutputInfo(f.name, shape, ok))
        self.preprocessing = {p.featureName: p for p in self.nn.preprocessing}

    # -- description ---------------------------------------------------------
    def _input_info(self, f: Any) -> InputInfo:
        t = f.type
        which = t.WhichOneof("Type")
        if which == "multiArrayType":
            a = t.multiArrayType
            shape = tuple(int(s) for s in a.shape)
            ranges = enumerated = None
            flex = a.WhichOneof("ShapeFlexibility")
            if flex == "shapeRange":
                ranges = tuple((int(r.lowerBound), int(r.upperBound)) for r in a.shapeRange.sizeRanges)
            elif flex == "enumeratedShapes":
                enumerated = tuple(tuple(int(s) for s in e.shape) for e in a.enumeratedShapes.shapes)
            if not shape and enumerated:
                shape = enumerated[0]
            if not shape and ranges:
                shape = tuple(lo for lo, _ in ranges)
            if self.legacy and len(shape) not in (1, 3):
                raise ExecutorError(
                    f"{self.label}: input {f.name!r} is declared with shape {list(shape)}; a legacy "
                    f"(rank-5 mapping) model needs rank 1 (C) or rank 3 (C, H, W)")
            return InputInfo(f.name, "array", shape, int(a.dataType), ranges, enumerated, optional=t.isOptional)
        if which == "imageType":
            im = t.imageType
            c = 1 if im.colorSpace in (GRAYSCALE, GRAYSCALE_FLOAT16) else 3
            return InputInfo(f.name, "image", (c, int(im.height), int(im.width)), FLOAT32,
                             color_space=int(im.colorSpace), optional=t.isOptional)
        raise ExecutorError(
            f"{self.label}: input {f.name!r} has type {which!r}; the executors take multiArray and image inputs")

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def expected(self) -> str:
        """All inputs, for error messages."""
        return "; ".join(i.describe() for i in self.inputs)

    # -- feeds -----------------------------------------------------------------
    def split_feeds(self, feeds: Mapping[str, Any]) -> tuple[dict[str, tuple[np.ndarray, int, int]], int]:
        """Validate feeds. Returns ``{name: (per-sample array (N, [S,] *shape), N, S)}`` and N.

        Raises :class:`DataError` naming the input and what the model expects.
        """
        if not isinstance(feeds, Mapping):
            raise DataError(f"{self.label}: feeds must be a dict of input name -> array; expected inputs: {self.expected()}")
        unknown = [k for k in feeds if k not in self.input_names]
        if unknown:
            raise DataError(f"{self.label}: unknown input name(s) {unknown}; the model's inputs are: {self.expected()}")
        out: dict[str, tuple[np.ndarray, int, int]] = {}
        ns: dict[str, int] = {}
        for info in self.inputs:
            if info.name not in feeds:
                if info.optional:
                    continue
                raise DataError(f"{self.label}: missing input {info.name!r}; the model's inputs are: {self.expected()}")
            arr = np.asarray(feeds[info.name])
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise DataError(f"{self.label}: input {info.name!r} has dtype {arr.dtype}; expected a numeric {info.describe()}")
            x, n, s = self._split_image(info, arr) if info.kind == "image" else self._split_array(info, arr)
            if info.dtype == INT32 and not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
                if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                    raise DataError(f"{self.label}: input {info.name!r} is declared INT32 but the array holds non-integer values")
            out[info.name] = (x, n, s)
            ns[info.name] = n
        if len(set(ns.values())) > 1:
            raise DataError(f"{self.label}: inputs disagree on the number of samples: {ns}")
        return out, (next(iter(ns.values())) if ns else 1)

    def _split_array(self, info: InputInfo, a: np.ndarray) -> tuple[np.ndarray, int, int]:
        d = len(info.shape)
        if a.ndim == d and info.fits(a.shape):
            return a.reshape((1,) + a.shape), 1, 1
        if a.ndim == d and d >= 1 and info.shape[0] == 1 and info.fits((1,) + a.shape[1:]):
            return a.reshape((a.shape[0], 1) + a.shape[1:]), a.shape[0], 1
        if a.ndim == d + 1 and info.fits(a.shape[1:]):
            return a, a.shape[0], 1
        if self.legacy and a.ndim == d + 2 and info.fits(a.shape[2:]):
            return a, a.shape[0], a.shape[1]
        forms = [f"{list(info.shape)} (one sample)"]
        if d and info.shape[0] == 1:
            forms.append(f"[N, {', '.join(map(str, info.shape[1:]))}]")
        forms.append(f"[N, {', '.join(map(str, info.shape))}]")
        if self.legacy:
            forms.append(f"[N, S, {', '.join(map(str, info.shape))}] (sequences)")
        raise DataError(
            f"{self.label}: input {info.name!r} has shape {list(a.shape)} (rank {a.ndim}); the model "
            f"expects {info.describe()}: pass an array of shape {' or '.join(forms)}")

    def _split_image(self, info: InputInfo, a: np.ndarray) -> tuple[np.ndarray, int, int]:
        c, h, w = info.shape
        if c == 1:
            if a.ndim == 2 and a.shape == (h, w):
                return a.reshape(1, h, w, 1), 1, 1
            if a.ndim == 3 and a.shape[1:] == (h, w):
                return a.reshape(a.shape + (1,)), a.shape[0], 1
            if a.ndim == 4 and a.shape[1:] == (h, w, 1):
                return a, a.shape[0], 1
        else:
            if a.ndim == 3 and a.shape == (h, w, 3):
                return a.reshape((1,) + a.shape), 1, 1
            if a.ndim == 4 and a.shape[1:] == (h, w, 3):
                return a, a.shape[0], 1
        raise DataError(f"{self.label}: input {info.name!r} has shape {list(a.shape)}; the model expects {info.describe()}")

    def image_to_blob(self, info: InputInfo, x: np.ndarray) -> np.ndarray:
        """Pixels ``(N, H, W, C)`` (RGB order) -> preprocessed float32 ``(N, C, H, W)`` as the network sees it."""
        x = np.asarray(x, dtype=np.float32)
        if info.color_space == BGR:
            x = x[..., ::-1]
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        pre = self.preprocessing.get(info.name) or (self.preprocessing.get("") if len(self.inputs) == 1 else None)
        if pre is not None:
            which = pre.WhichOneof("preprocessor")
            if which == "scaler":
                s = pre.scaler
                if info.shape[0] == 1:
                    bias = np.array([s.grayBias], np.float32)
                elif info.color_space == BGR:
                    bias = np.array([s.blueBias, s.greenBias, s.redBias], np.float32)
                else:
                    bias = np.array([s.redBias, s.greenBias, s.blueBias], np.float32)
                x = x * np.float32(s.channelScale) + bias.reshape(1, -1, 1, 1)
            elif which == "meanImage":
                mean = np.asarray(pre.meanImage.meanImage, np.float32)
                if mean.size != x[0].size:
                    raise ExecutorError(f"{self.label}: the mean image of input {info.name!r} has {mean.size} values, expected {x[0].size}")
                x = x - mean.reshape((1,) + x.shape[1:])
        return x
