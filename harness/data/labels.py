"""Labels: matching them to the model's task and class labels.

A classifier (``neuralNetworkClassifier``) declares its class labels (int64 or
string). Labels for it may be given either as those class labels themselves or
as indices into them (0 .. K-1, the column order of the probability output):

* ``label_mode="labels"``: every value must be one of the class labels;
* ``label_mode="indices"``: every value must be an integer in 0 .. K-1;
* ``label_mode="auto"`` (default): class labels when every value is one
  (this wins when both readings are possible, e.g. int labels ``[0, 1, 2, 5]``
  and values in ``{0, 1, 2}``), else indices when every value is an integer in
  range; otherwise a :class:`DataError` listing the unknown values.

Whatever the form given, the stored labels are the class labels themselves
(int64 or str), so they compare directly with the predicted-label output.
For any other model the labels are kept as numbers: integers (indices of a
probability output's columns) when they are whole, else floats (regression
targets); they must be finite.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.errors import DataError
from harness.data.model_inputs import as_spec

LABEL_MODES = ("auto", "labels", "indices")


def class_labels(model: Any) -> np.ndarray | None:
    """The class labels of a classifier in spec order (int64 or str array), else None."""
    spec = as_spec(model)
    kind = spec.WhichOneof("Type")
    if kind == "neuralNetworkClassifier":
        clf = spec.neuralNetworkClassifier
    elif kind == "pipelineClassifier":
        last = spec.pipelineClassifier.pipeline.models
        if not len(last) or last[-1].WhichOneof("Type") != "neuralNetworkClassifier":
            return None
        clf = last[-1].neuralNetworkClassifier
    else:
        return None
    which = clf.WhichOneof("ClassLabels")
    if which == "int64ClassLabels":
        return np.array(list(clf.int64ClassLabels.vector), dtype=np.int64)
    if which == "stringClassLabels":
        return np.array(list(clf.stringClassLabels.vector), dtype=str)
    return None


def task_of(model: Any) -> str:
    """``"classifier"``, ``"regressor"`` or ``"neuralNetwork"`` (no declared task)."""
    kind = as_spec(model).WhichOneof("Type")
    if kind in ("neuralNetworkClassifier", "pipelineClassifier"):
        return "classifier"
    if kind in ("neuralNetworkRegressor", "pipelineRegressor"):
        return "regressor"
    return "neuralNetwork"


def _preview(values, limit: int = 8) -> str:
    vals = list(values)
    text = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in vals[:limit])
    return "[" + text + (", ..." if len(vals) > limit else "") + "]"


def _as_1d(labels: Any, n: int | None, source: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"Labels from {source} must be one value per sample (shape (N,)), got shape {y.shape}.")
    if n is not None and y.shape[0] != n:
        raise DataError(f"Labels from {source} hold {y.shape[0]} values but the feeds hold N = {n} samples.")
    if y.dtype.kind == "S":
        y = np.char.decode(y, "utf-8")
    if y.dtype == object:
        try:
            y = y.astype(str) if all(isinstance(v, str) for v in y) else y.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"Labels from {source} mix types that are neither numbers nor strings.") from None
    return y


def _whole(y: np.ndarray) -> bool:
    if y.dtype.kind in "iub":
        return True
    return y.dtype.kind == "f" and bool(np.all(np.isfinite(y) & (y == np.round(y))))


def match_labels(model: Any, labels: Any, n: int | None = None, *, label_mode: str = "auto",
                 source: str = "the data") -> np.ndarray | None:
    """Validate ``labels`` against the model and return them in canonical form.

    Args:
        model: a spec, ``MLModel`` or path.
        labels: one label per sample, or None (no labels).
        n: the number of samples in the feeds (checked when given).
        label_mode: ``auto``, ``labels`` or ``indices`` (classifiers only; see module doc).
        source: where the labels came from, quoted in errors.

    Returns:
        For classifiers an array of class labels (int64 or str); otherwise int64
        (whole numbers) or float64 values. None when ``labels`` is None.

    Raises:
        DataError: wrong length or rank, non-finite values, or values that are
            neither class labels nor valid indices (lists the model's class labels).
    """
    if label_mode not in LABEL_MODES:
        raise DataError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}.")
    if labels is None:
        return None
    y = _as_1d(labels, n, source)
    if y.shape[0] == 0:
        raise DataError(f"Labels from {source} are empty.")
    classes = class_labels(model)
    if classes is None:
        if y.dtype.kind not in "iufb":
            raise DataError(
                f"Labels from {source} are {y.dtype.name} values but the model declares no class labels; "
                "give numbers (class indices of the probability output, or regression targets)."
            )
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise DataError(f"Labels from {source} contain {int(np.sum(~np.isfinite(y)))} NaN or infinite value(s).")
        if task_of(model) != "regressor" and _whole(y):
            return y.astype(np.int64)
        return y.astype(np.float64)
    return _match_classes(y, classes, label_mode, source)


def _as_label_values(y: np.ndarray, classes: np.ndarray) -> np.ndarray | None:
    """``y`` in the class labels' dtype when that reading is possible (else None).

    Whole numbers compare to int64 labels; strings to string labels; whole numbers
    also to string labels by their decimal text (CSV columns of "digit" strings).
    """
    if classes.dtype.kind == "i":
        return y.astype(np.int64) if y.dtype.kind in "iufb" and _whole(y) else None
    if y.dtype.kind == "U":
        return y
    if y.dtype.kind in "iufb" and _whole(y):
        return y.astype(np.int64).astype(str)
    return None


def _match_classes(y: np.ndarray, classes: np.ndarray, mode: str, source: str) -> np.ndarray:
    k = len(classes)
    values = _as_label_values(y, classes)
    as_labels_ok = values is not None and bool(np.all(np.isin(values, classes)))
    as_indices_ok = y.dtype.kind in "iufb" and _whole(y) and bool(np.all((y >= 0) & (y < k)))
    listing = f"The model's {k} class labels are {_preview(classes, 20)}."

    if mode == "labels" or (mode == "auto" and as_labels_ok):
        if as_labels_ok:
            return values
        raise DataError(
            f"Labels from {source} are not the model's class labels: unknown value(s) "
            f"{_preview(_unknown(y, values, classes))}. {listing}"
            + (" Pass label_mode='indices' if they are class indices." if as_indices_ok else "")
        )
    if mode == "indices" or (mode == "auto" and as_indices_ok):
        if as_indices_ok:
            return classes[y.astype(np.int64)]
        if y.dtype.kind in "iufb":
            bad = np.unique(y[~np.isin(y, np.arange(k))])
        else:
            bad = np.unique(y)
        raise DataError(
            f"Labels from {source} are not class indices 0..{k - 1}: offending value(s) {_preview(bad)}."
        )
    raise DataError(
        f"Labels from {source} do not match the model's classes: value(s) "
        f"{_preview(_unknown(y, values, classes))} are neither class labels nor class indices 0..{k - 1}. "
        f"{listing}"
    )


def _unknown(y: np.ndarray, values: np.ndarray | None, classes: np.ndarray) -> np.ndarray:
    """The distinct values of ``y`` that are not class labels."""
    if values is None:
        if y.dtype.kind == "f" and classes.dtype.kind == "i":
            return np.unique(y[~np.isin(y, classes)])
        return np.unique(y)
    return np.unique(y[~np.isin(values, classes)])


def label_indices(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Column indices (into ``classes``) of canonical class labels."""
    order = np.argsort(classes, kind="stable")
    pos = np.searchsorted(classes, labels, sorter=order)
    pos = np.clip(pos, 0, len(classes) - 1)
    idx = order[pos]
    if not np.all(classes[idx] == labels):
        raise DataError("Some labels are not among the model's class labels.")
    return idx
