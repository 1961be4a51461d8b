"""A model's inputs and outputs as the executors see them (:class:`ModelIO`).

Inputs, and which feeds fit them, are the one model-input contract of
:mod:`harness.data.model_inputs` (the batch convention is described there):
:meth:`ModelIO.split_feeds` reads every ``predict``'s feeds with it, so an
executor runs exactly what the data loaders accept.

Outputs: every output carries a leading N (N = 1 for a single sample).
Exact-mapping outputs are ``(N, *s)`` where ``s`` is Core ML's per-sample shape
with a leading 1 (the model's batch dim) dropped. Legacy outputs drop the Seq
axis when it is 1 and the Batch axis, and ``H, W`` when the declared output has
rank 1 (or no declared shape and ``H = W = 1``). A classifier's predicted
label output is ``(N,)`` of labels (int64 or str) and its probabilities
output ``(N, K)`` with columns in the order of ``class_labels``.

Integer (INT32) and DOUBLE inputs are accepted; the numpy executor computes in
float32, as Core ML does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

import quantizer
from harness.data.model_inputs import Feed, InputSpec, expected_inputs, split_feeds
from harness.errors import ExecutorError


def load_spec(model: Any) -> tuple[Any, str, bytes | None]:
    """Return ``(Model_pb2.Model, label, file bytes)`` for a path, an MLModel, a spec or a model file's bytes:
    a private copy, and the bytes it was parsed from (:func:`quantizer.io.load_with_bytes`; None for an MLModel)."""
    label = str(model) if isinstance(model, (str, Path)) else "model"
    spec, data = quantizer.io.load_with_bytes(model)
    return spec, label, data


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
        self.inputs: list[InputSpec] = expected_inputs(spec)
        for inp in self.inputs:
            if self.legacy and inp.kind == "multiArray" and len(inp.declared_shape) not in (1, 3):
                raise ExecutorError(
                    f"{label}: input {inp.name!r} is declared with shape {list(inp.declared_shape)}; a legacy "
                    f"(rank-5 mapping) model needs rank 1 (C) or rank 3 (C, H, W)")
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

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    # -- feeds -----------------------------------------------------------------
    def split_feeds(self, feeds: Mapping[str, Any]) -> tuple[dict[str, Feed], int]:
        """Check ``feeds`` and read them by the batch convention: ``({name: Feed}, N)``.

        Raises :class:`~harness.errors.DataError` naming every problem and what the model expects.
        """
        return split_feeds(self.inputs, feeds, context=f"{self.label}: the feeds do not fit the model")

    def image_to_blob(self, info: InputSpec, x: np.ndarray) -> np.ndarray:
        """Pixels ``(N, H, W, C)`` (RGB order) -> preprocessed float32 ``(N, C, H, W)`` as the network sees it."""
        x = np.asarray(x, dtype=np.float32)
        if info.type_name == "BGR":
            x = x[..., ::-1]
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        pre = self.preprocessing.get(info.name) or (self.preprocessing.get("") if len(self.inputs) == 1 else None)
        if pre is not None:
            which = pre.WhichOneof("preprocessor")
            if which == "scaler":
                s = pre.scaler
                if info.channels == 1:
                    bias = np.array([s.grayBias], np.float32)
                elif info.type_name == "BGR":
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
