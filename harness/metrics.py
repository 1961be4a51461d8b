"""Metrics for comparing a (quantized) model's outputs with labels and with the float model.

Pure numpy. Every function validates its inputs and raises
:class:`harness.errors.DataError` naming the argument that is wrong.

Classification
    :func:`top1_accuracy`, :func:`topk_accuracy` — from a classifier's predicted
    labels, or from a probability/logit output ``(N, K)`` (argmax / the k largest).
    :func:`agreement` — how often two models predict the same class;
    :func:`topk_agreement` — coremltools' "Top k Agreement".
Output fidelity
    :func:`snr_db`, :func:`psnr_db` (and :func:`noise_stats`) — signal-to-noise and
    peak signal-to-noise ratio in dB between the float and the quantized model's
    outputs, exactly as coremltools' ``compare_models`` defines them.
Regression
    :func:`rmse`, :func:`mae`, :func:`r2`.

Example:
    >>> import numpy as np
    >>> p = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    >>> top1_accuracy(p, np.array([1, 2]))
    0.5
    >>> topk_accuracy(p, np.array([1, 2]), k=3)
    1.0
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import DataError

__all__ = [
    "top1_accuracy", "topk_accuracy", "agreement", "topk_agreement", "snr_db", "psnr_db", "noise_stats",
    "NoiseStats", "rmse", "mae", "r2", "topk_indices", "label_columns",
]


# --- validation helpers ------------------------------------------------------------------

def _array(x, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged lists
        raise DataError(f"{name} is not array-like: {e}") from None
    if arr.ndim == 0:
        raise DataError(f"{name} must hold one value per sample (an array with N rows), got a scalar.")
    if arr.shape[0] == 0:
        raise DataError(f"{name} is empty (N = 0).")
    return arr


def _same_n(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise DataError(f"{na} has {a.shape[0]} samples but {nb} has {b.shape[0]}.")


def _scores(x, name: str) -> np.ndarray:
    s = _array(x, name)
    if s.ndim != 2:
        raise DataError(f"{name} must be class scores of shape (N, K), got shape {s.shape}.")
    if s.dtype.kind not in "fiu":
        raise DataError(f"{name} must be numeric class scores, got dtype {s.dtype}.")
    if s.shape[1] == 0:
        raise DataError(f"{name} has no class columns (K = 0).")
    return s


def label_columns(labels, n_classes: int, class_labels=None, name: str = "labels") -> np.ndarray:
    """Column index of each label in a ``(N, K)`` score array.

    With ``class_labels`` (the classifier's labels in column order) each label
    must be one of them; without, labels must already be integer column indices
    ``0 .. K-1``.
    """
    y = _array(labels, name)
    if y.ndim != 1:
        raise DataError(f"{name} must have shape (N,), got {y.shape}.")
    if class_labels is not None:
        classes = np.asarray(class_labels)
        if classes.ndim != 1 or len(classes) != n_classes:
            raise DataError(f"class_labels has {classes.size} entries but the scores have {n_classes} columns.")
        lookup = {c.item() if hasattr(c, "item") else c: i for i, c in enumerate(classes)}
        try:
            return np.array([lookup[v.item() if hasattr(v, "item") else v] for v in y], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"{name} contains {e.args[0]!r}, which is not one of the class labels "
                            f"{classes.tolist()[:20]}.") from None
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y) & (y == np.round(y))):
            raise DataError(f"{name} must be integer class indices (no class_labels given), got non-integers.")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{name} must be integer class indices 0..{n_classes - 1} (or pass class_labels), "
                        f"got dtype {y.dtype}.")
    bad = (y < 0) | (y >= n_classes)
    if np.any(bad):
        raise DataError(f"{name} has class indices outside 0..{n_classes - 1}: {np.unique(y[bad])[:10].tolist()}.")
    return y.astype(np.int64)


def topk_indices(scores, k: int) -> np.ndarray:
    """The columns of the ``k`` largest scores per row, best first ``(N, k)``.

    Ties are broken in favour of the lower column index (stable sort), as argmax does.
    """
    s = _scores(scores, "scores")
    _check_k(k, s.shape[1])
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def _check_k(k, n_classes: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n_classes:
        raise DataError(f"k must be an integer in 1..{n_classes} (the number of classes), got {k!r}.")


def _predicted(pred, name: str, class_labels=None) -> np.ndarray:
    """Predicted labels: 1-D as given, or the argmax of ``(N, K)`` scores (mapped to class labels)."""
    p = _array(pred, name)
    if p.ndim == 1:
        return p
    s = _scores(p, name)
    idx = np.argmax(s, axis=1)
    if class_labels is None:
        return idx
    classes = np.asarray(class_labels)
    if classes.ndim != 1 or len(classes) != s.shape[1]:
        raise DataError(f"class_labels has {classes.size} entries but {name} has {s.shape[1]} columns.")
    return classes[idx]


# --- classification ------------------------------------------------------------------------

def top1_accuracy(predictions, labels, class_labels=None) -> float:
    """Fraction of samples whose predicted class equals the label.

    Args:
        predictions: predicted labels ``(N,)`` (a classifier's label output), or
            scores ``(N, K)`` (probabilities or logits; the argmax column is the prediction).
        labels: the true labels ``(N,)``.
        class_labels: for scores, the label of each column (a classifier's class
            labels in spec order); without it the argmax column index is compared with
            the labels, which must then be class indices.
    """
    y = _array(labels, "labels")
    if y.ndim != 1:
        raise DataError(f"labels must have shape (N,), got {y.shape}.")
    p = _array(predictions, "predictions")
    _same_n(p, y, "predictions", "labels")
    if p.ndim == 1:
        return float(np.mean(p == y))
    s = _scores(p, "predictions")
    cols = label_columns(y, s.shape[1], class_labels)
    return float(np.mean(np.argmax(s, axis=1) == cols))


def topk_accuracy(scores, labels, k: int = 5, class_labels=None) -> float:
    """Fraction of samples whose label is among the ``k`` highest-scoring classes.

    Args:
        scores: ``(N, K)`` probabilities or logits.
        labels: ``(N,)`` class indices, or class labels when ``class_labels`` is given.
        k: 1..K. Ties are broken in favour of the lower column (see :func:`topk_indices`).
        class_labels: the label of each score column.
    """
    s = _scores(scores, "scores")
    cols = label_columns(labels, s.shape[1], class_labels)
    _same_n(s, cols, "scores", "labels")
    top = topk_indices(s, k)
    return float(np.mean(np.any(top == cols[:, None], axis=1)))


def agreement(reference, other) -> float:
    """Fraction of samples on which two models predict the same class.

    Each argument is predicted labels ``(N,)`` or scores ``(N, K)`` (compared by
    argmax); both must be of the same kind.
    """
    a = _array(reference, "reference")
    b = _array(other, "other")
    if a.ndim != b.ndim or a.ndim not in (1, 2):
        raise DataError(f"reference and other must both be labels (N,) or both scores (N, K); "
                        f"got shapes {a.shape} and {b.shape}.")
    if a.ndim == 2 and a.shape != b.shape:
        raise DataError(f"reference scores have shape {a.shape} but other scores have shape {b.shape}.")
    _same_n(a, b, "reference", "other")
    pa, pb = _predicted(a, "reference"), _predicted(b, "other")
    return float(np.mean(pa == pb))


def topk_agreement(reference, other, k: int = 5) -> float:
    """coremltools' "Top k Agreement": how often the reference's top class is in ``other``'s top k.

    ``compare_models`` reports this (with k = 5, capped at K) for a classifier's
    probability output: per sample, the float model's best class must be among the
    quantized model's ``k`` best.
    """
    a = _scores(reference, "reference")
    b = _scores(other, "other")
    if a.shape != b.shape:
        raise DataError(f"reference scores have shape {a.shape} but other scores have shape {b.shape}.")
    k = min(int(k), a.shape[1]) if isinstance(k, (int, np.integer)) and k >= 1 else k
    top_ref = np.argmax(a, axis=1)
    top_other = topk_indices(b, k)
    return float(np.mean(np.any(top_other == top_ref[:, None], axis=1)))


# --- output fidelity (coremltools compare_models) -----------------------------------------

@dataclass(frozen=True)
class NoiseStats:
    """Per-sample SNR and PSNR in dB (``snr``, ``psnr`` arrays of length N) and summaries.

    ``compare_models`` prints ``SNR: mean +/- var`` and ``PSNR: mean +/- var`` with the
    population variance (``numpy.var``); :attr:`snr_mean` etc. are those figures.
    """

    snr: np.ndarray
    psnr: np.ndarray

    @property
    def snr_mean(self) -> float:
        return float(np.mean(self.snr))

    @property
    def snr_var(self) -> float:
        return float(np.var(self.snr))

    @property
    def psnr_mean(self) -> float:
        return float(np.mean(self.psnr))

    @property
    def psnr_var(self) -> float:
        return float(np.var(self.psnr))


_NOISE_FLOOR = 1e-7  # added to the noise variance by coremltools' NoiseMetrics._compute_snr


def noise_stats(reference, quantized) -> NoiseStats:
    """Per-sample SNR/PSNR between the float model's and the quantized model's outputs.

    Exactly coremltools' definition (``NoiseMetrics._compute_snr`` in
    ``coremltools/models/neural_network/quantization_utils.py``, used by
    ``compare_models`` with ``arr1`` = float output, ``arr2`` = quantized output),
    applied to each sample's flattened output::

        noise     = reference - quantized
        noise_var = sum(noise**2) / len(noise) + 1e-7
        signal    = sum(quantized**2) / len(quantized)      # energy of the *quantized* output
        peak      = max(quantized**2)
        snr  = 10 * log10(signal / noise_var)
        psnr = 10 * log10(peak / noise_var)

    Computed in float64. A sample whose quantized output is all zeros has SNR
    ``-inf`` (as in coremltools); NaN outputs give NaN.

    Args:
        reference: the float model's output, ``(N, ...)``; each row is one sample.
        quantized: the quantized model's output, same shape.
    """
    a = _array(reference, "reference")
    b = _array(quantized, "quantized")
    if a.shape != b.shape:
        raise DataError(f"reference output has shape {a.shape} but quantized output has shape {b.shape}.")
    for arr, name in ((a, "reference"), (b, "quantized")):
        if arr.dtype.kind not in "fiu":
            raise DataError(f"{name} output must be numeric, got dtype {arr.dtype}.")
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    if a.shape[1] == 0:
        raise DataError("outputs have no values per sample.")
    m = a.shape[1]
    noise_var = np.sum((a - b) ** 2, axis=1) / m + _NOISE_FLOOR
    signal = np.sum(b ** 2, axis=1) / m
    peak = np.max(b ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = 10 * np.log10(signal / noise_var)
        psnr = 10 * np.log10(peak / noise_var)
    return NoiseStats(snr, psnr)


def snr_db(reference, quantized) -> float:
    """Mean per-sample SNR in dB, as ``compare_models`` prints it (see :func:`noise_stats`)."""
    return noise_stats(reference, quantized).snr_mean


def psnr_db(reference, quantized) -> float:
    """Mean per-sample PSNR in dB, as ``compare_models`` prints it (see :func:`noise_stats`)."""
    return noise_stats(reference, quantized).psnr_mean


# --- regression ----------------------------------------------------------------------------

def _regression_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = _array(y_true, "y_true")
    p = _array(y_pred, "y_pred")
    t = t.reshape(t.shape[0], -1)
    p = p.reshape(p.shape[0], -1)
    if t.shape[1] != 1 or p.shape[1] != 1:
        raise DataError(f"regression metrics take one target per sample; got y_true {np.shape(y_true)}, "
                        f"y_pred {np.shape(y_pred)}.")
    _same_n(t, p, "y_true", "y_pred")
    for arr, name in ((t, "y_true"), (p, "y_pred")):
        if arr.dtype.kind not in "fiu":
            raise DataError(f"{name} must be numeric, got dtype {arr.dtype}.")
    t, p = t[:, 0].astype(np.float64), p[:, 0].astype(np.float64)
    if not np.all(np.isfinite(t)):
        raise DataError("y_true contains NaN or infinite values.")
    return t, p


def rmse(y_true, y_pred) -> float:
    """Root mean squared error. Shapes ``(N,)`` or ``(N, 1)`` (any trailing size-1 dims)."""
    t, p = _regression_pair(y_true, y_pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    t, p = _regression_pair(y_true, y_pred)
    return float(np.mean(np.abs(p - t)))


def r2(y_true, y_pred) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``.

    For constant ``y_true`` (SS_tot = 0) it returns 1.0 for perfect predictions and
    0.0 otherwise, like scikit-learn's ``r2_score``.
    """
    t, p = _regression_pair(y_true, y_pred)
    ss_res = float(np.sum((t - p) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot
