"""Model outputs as a metric reads them: which output is scored, its kind, and its predictions.

A :class:`Head` is one model output seen through the float model's values on the
test set. Its ``kind`` decides how predictions are read from it:

* ``labels`` — a classifier's predicted-label output (or any non-numeric output):
  the values are the predictions;
* ``class_scores`` — a classifier's probabilities, the output of a softmax layer,
  or rows that are non-negative and sum to 1 (one distribution per sample: a
  softmax over the channels of a map, ``(2, H, W)``, is a ``vector``): the
  prediction is the argmax column (a classifier's class label for that column);
* ``binary`` — one value per sample: the prediction is ``value > threshold``
  (never the argmax of a single value, which is always 0);
* ``vector`` — any other numeric output (an embedding, box coordinates, logits):
  compared with the float model's by cosine similarity, or by argmax when integer
  labels say its columns are classes.

:func:`default_output` is the output scored when ``metric.output`` is not set: a
classifier's probabilities (or a model's only class-score output), a regressor's
prediction, else the model's first output.

Example:
    >>> import numpy as np
    >>> h = Head("prob", "binary", 1, threshold=0.5)
    >>> h.predictions({"prob": np.array([[0.2], [0.7]])}).tolist()
    [0, 1]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from harness.errors import ConfigError

__all__ = ["Head", "KINDS", "output_names", "default_output", "head_for", "is_constant"]

KINDS = ("labels", "class_scores", "binary", "vector")
_SOFTMAX_LAYERS = ("softmax", "softmaxND")


def output_names(spec: Any) -> list[str]:
    """The model's declared outputs, in order."""
    return [o.name for o in spec.description.output]


def default_output(spec: Any, float_outputs: Mapping[str, np.ndarray] | None = None) -> tuple[str, str]:
    """The output scored when ``metric.output`` is not set, and why: ``(name, reason)``.

    A classifier's probabilities (else its label output); a regressor's prediction; a model
    with several outputs of which exactly one holds class scores (a softmax layer's output or
    rows summing to 1, judged on ``float_outputs``): that one; else the first output.
    """
    from harness.data import task_of

    outs = output_names(spec)
    desc = spec.description
    kind = task_of(spec)
    if kind == "classifier":
        for name, why in ((desc.predictedProbabilitiesName, "the classifier's probabilities"),
                          (desc.predictedFeatureName, "the classifier's predicted label")):
            if name and name in outs:
                return name, why
    if kind == "regressor" and desc.predictedFeatureName in outs:
        return desc.predictedFeatureName, "the regressor's prediction"
    if len(outs) > 1 and float_outputs is not None:
        scores = [o for o in outs if o in float_outputs and head_for(spec, o, float_outputs).kind == "class_scores"]
        if len(scores) == 1:
            return scores[0], "the model's only class-score output"
    return outs[0], "the model's first output"


def _producer(spec: Any, blob: str) -> Any | None:
    """The last top-level layer that writes ``blob`` (None when no layer does)."""
    import quantizer.walk as walk

    found = None
    for layer in walk.iter_layers(spec, recurse=False):
        if blob in layer.output:
            found = layer
    return found


def _rows(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    return a.reshape(a.shape[0], -1)


def is_constant(arr: np.ndarray) -> bool:
    """True when every sample's value is the same (within 1e-6 of the output's scale); needs two samples."""
    a = _rows(arr)
    if a.shape[0] < 2:
        return False
    if a.dtype.kind not in "fiub":
        return bool(np.all(a == a[:1]))
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        return False
    scale = max(1.0, float(np.max(np.abs(a))))
    return bool(np.max(np.ptp(a, axis=0)) <= 1e-6 * scale)


@dataclass(frozen=True)
class Head:
    """One output as a metric reads it.

    Attributes:
        output: the output's name.
        kind: one of :data:`KINDS`.
        width: values per sample (flattened).
        threshold: the decision threshold of a ``binary`` output.
        classes: a classifier's class labels in column order (its probabilities and label outputs).
        label_output: a classifier's predicted-label output, read for its predictions when present.
        why: how the kind was decided, in words (logged and recorded in summary.json).
        in_unit_range: the float model's values all lie in [0, 1] (probabilities).
        constant: the float model's value is the same for every test sample.
        chosen: why this output is the scored one (``metric.output``, or :func:`default_output`'s reason).
    """

    output: str
    kind: str
    width: int
    threshold: float = 0.5
    classes: np.ndarray | None = None
    label_output: str | None = None
    why: str = ""
    in_unit_range: bool = False
    constant: bool = False
    chosen: str = ""

    def values(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The output as ``(N, width)`` float64."""
        return _rows(outputs[self.output]).astype(np.float64)

    def predictions(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The predicted class of each sample ``(N,)``: a label, a column index, or 0/1."""
        if self.kind == "labels":
            return np.asarray(outputs[self.output]).reshape(-1)
        if self.kind == "binary":
            return (self.values(outputs)[:, 0] > self.threshold).astype(np.int64)
        if self.classes is not None:
            if self.label_output and self.label_output in outputs:
                return np.asarray(outputs[self.label_output]).reshape(-1)
            return self.classes[np.argmax(self.values(outputs), axis=1)]
        return np.argmax(self.values(outputs), axis=1)

    def describe(self, thresholded: bool = True) -> str:
        """``'prob' (binary: one value per sample, value > 0.5)``.

        ``thresholded=False`` (a metric on the values themselves, such as r2) leaves out the
        decision rule of a ``binary`` output.
        """
        rule = f", value > {self.threshold:g}" if self.kind == "binary" and thresholded else ""
        return f"{self.output!r} ({self.kind}: {self.why}{rule})"


def head_for(spec: Any, output: str, float_outputs: Mapping[str, np.ndarray], threshold: float = 0.5,
             key: str = "metric.output") -> Head:
    """The :class:`Head` of ``output``, its kind decided from the model and the float model's values.

    Raises:
        ConfigError: the model has no output ``output`` (names ``key`` and lists the outputs).
    """
    from harness.data import class_labels, task_of

    outs = output_names(spec)
    if output not in outs or output not in float_outputs:
        raise ConfigError(f"{key}={output!r} names no output of the model; its outputs are "
                          f"{', '.join(repr(o) for o in outs)}.")
    arr = np.asarray(float_outputs[output])
    width = int(np.prod(arr.shape[1:], dtype=np.int64)) if arr.ndim > 1 else 1
    constant = is_constant(arr)
    desc = spec.description
    common: dict[str, Any] = {"threshold": float(threshold), "constant": constant}
    if task_of(spec) == "classifier":
        classes = class_labels(spec)
        label = desc.predictedFeatureName or None
        if output == label:
            return Head(output, "labels", 1, classes=classes, why="the classifier's predicted label", **common)
        if output == desc.predictedProbabilitiesName:
            return Head(output, "class_scores", width, classes=classes,
                        label_output=label if label in float_outputs else None,
                        why=f"the classifier's probabilities over {width} classes", **common)
    if arr.dtype.kind not in "fiub":
        return Head(output, "labels", 1, why=f"non-numeric values ({arr.dtype})", **common)
    values = _rows(arr).astype(np.float64)
    finite = bool(np.all(np.isfinite(values)))
    unit = finite and bool(np.all((values >= 0) & (values <= 1)))
    common["in_unit_range"] = unit
    if width == 1:
        return Head(output, "binary", 1, why="one value per sample", **common)
    layer = _producer(spec, output)
    one_axis = sum(1 for d in arr.shape[1:] if d > 1) == 1  # (K,), (K, 1, 1): one distribution per sample
    if layer is not None and layer.WhichOneof("layer") in _SOFTMAX_LAYERS and one_axis:
        return Head(output, "class_scores", width, why=f"{width} class scores from softmax layer {layer.name!r}",
                    **common)
    if one_axis and finite and np.all(values >= -1e-6) and np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
        return Head(output, "class_scores", width,
                    why=f"{width} class scores (rows non-negative, summing to 1)", **common)
    return Head(output, "vector", width, why=f"{width} values per sample that are not class scores", **common)
