"""scikit-learn's bundled datasets with a fixed, seeded train/test split.

The zoo's training scripts and the loaders share :func:`split`, so the test set
a zoo model is evaluated on is exactly the data it never saw in training.

Datasets: ``digits`` (8x8 images, pixel values 0..16, 10 classes), ``iris``,
``wine``, ``breast_cancer`` (classification), ``diabetes`` (regression). The
split is ``sklearn.model_selection.train_test_split`` with ``test_size=0.25``,
``random_state=seed`` and, for classification, stratified by class.

Transforms are declared by name and applied in order to the feature matrix
(statistics always come from the training part of the split):

=============  =============================================================
``scale01``    (x - min) / (max - min), global min/max of the training set
               (digits: x / 16)
``standardize`` per-feature (x - mean) / std of the training set (std 0 -> 1)
``image``      (N, 64) -> (N, 1, 8, 8) images (digits)
``upsample32`` (N, 1, 8, 8) -> (N, 1, 32, 32), each pixel repeated 4x4 (nearest)
``rows``       (N, 64) -> (N, 8, 8): a sequence of 8 rows of 8 pixels (digits)
=============  =============================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from harness.errors import DataError

SKLEARN_DATASETS = {
    "digits": ("load_digits", "classification"),
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}
TEST_SIZE = 0.25


@dataclass(frozen=True)
class Split:
    """A seeded train/test split of one bundled dataset (features as float64)."""

    name: str
    seed: int
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    task: str


def _check_name(name: str) -> None:
    if name not in SKLEARN_DATASETS:
        raise DataError(
            f"Unknown scikit-learn dataset {name!r}; available: {', '.join(sorted(SKLEARN_DATASETS))}."
        )


def split(name: str, seed: int = 0) -> Split:
    """The fixed train/test split of a bundled dataset (25% test, stratified for classification).

    Example:
        >>> s = split("digits", seed=0)
        >>> s.x_train.shape, s.x_test.shape
        ((1347, 64), (450, 64))
    """
    _check_name(name)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise DataError(f"split seed must be an integer, got {seed!r}.")
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    loader, task = SKLEARN_DATASETS[name]
    x, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    y = y.astype(np.int64) if task == "classification" else y.astype(np.float64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=int(seed), stratify=y if task == "classification" else None
    )
    return Split(name, int(seed), x_tr, x_te, y_tr, y_te, task)


# --- transforms: f(x, x_train_raw_after_previous_steps) -> x -------------------------------

def _scale01(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    lo, hi = float(ref.min()), float(ref.max())
    return (x - lo) / (hi - lo if hi > lo else 1.0)


def _standardize(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    axes = 0 if ref.ndim == 2 else tuple(i for i in range(ref.ndim) if i != 1)
    mean = ref.mean(axis=axes, keepdims=True)
    std = ref.std(axis=axes, keepdims=True)
    return (x - mean) / np.where(std > 0, std, 1.0)


def _need(x: np.ndarray, shape: tuple, step: str, hint: str) -> None:
    if x.shape[1:] != shape:
        raise DataError(f"Transform {step!r} needs samples of shape {shape}, got {x.shape[1:]}; {hint}")


def _image(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    _need(x, (64,), "image", "it turns 64 digits pixels into one 1x8x8 image.")
    return x.reshape(x.shape[0], 1, 8, 8)


def _upsample32(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    _need(x, (1, 8, 8), "upsample32", "apply 'image' before it.")
    return np.repeat(np.repeat(x, 4, axis=2), 4, axis=3)


def _rows(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    _need(x, (64,), "rows", "it turns 64 digits pixels into 8 rows of 8.")
    return x.reshape(x.shape[0], 8, 8)


TRANSFORMS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "scale01": _scale01,
    "standardize": _standardize,
    "image": _image,
    "upsample32": _upsample32,
    "rows": _rows,
}


def _names(transforms: Sequence[str] | str | None) -> list[str]:
    if transforms is None:
        return []
    if isinstance(transforms, str):
        transforms = [t for t in transforms.replace(",", "+").split("+") if t]
    names = list(transforms)
    for t in names:
        if t not in TRANSFORMS:
            raise DataError(f"Unknown transform {t!r}; available: {', '.join(TRANSFORMS)}.")
    return names


def transform(x: np.ndarray, transforms: Sequence[str] | str | None, reference: np.ndarray) -> np.ndarray:
    """Apply named transforms in order; statistics come from ``reference`` (the training features).

    ``transforms`` is a list of names or one string joined by ``+``
    (``"scale01+image"``). The reference goes through the same steps so every
    step sees training data in the layout it produces.
    """
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    for t in _names(transforms):
        fn = TRANSFORMS[t]
        x, ref = fn(x, ref), fn(ref, ref)
    return x


def prepared(name: str, seed: int = 0, transforms: Sequence[str] | str | None = None) -> Split:
    """:func:`split` with the transforms applied to both parts (what training scripts use)."""
    s = split(name, seed)
    names = _names(transforms)
    return Split(s.name, s.seed, transform(s.x_train, names, s.x_train), transform(s.x_test, names, s.x_train),
                 s.y_train, s.y_test, s.task)


def dataset_name(name: str, seed: int, transforms: Sequence[str] | str | None, part: str = "test") -> str:
    """The canonical name, e.g. ``digits[test,seed=0,scale01+image]``."""
    t = "+".join(_names(transforms))
    return f"{name}[{part},seed={seed}" + (f",{t}" if t else "") + "]"


def transforms_text(transforms: Any) -> str:
    """The transforms as one ``+``-joined string (validated)."""
    return "+".join(_names(transforms))
