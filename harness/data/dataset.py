"""The :class:`Dataset` value: model feeds, labels and a content hash."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from harness.errors import DataError


def data_sha256(feeds: Mapping[str, np.ndarray], labels: np.ndarray | None) -> str:
    """SHA-256 over every feed (name, dtype, shape, bytes, in name order) and the labels.

    Two datasets with equal arrays hash equally, whatever order the feeds were given in.
    """
    h = hashlib.sha256()
    for name in sorted(feeds):
        arr = np.ascontiguousarray(feeds[name])
        h.update(f"feed:{name}:{arr.dtype.str}:{arr.shape}\n".encode())
        h.update(arr.tobytes())
    if labels is None:
        h.update(b"labels:none\n")
    else:
        y = np.asarray(labels)
        if y.dtype.kind in "UO":
            h.update(f"labels:str:{y.shape}\n".encode())
            h.update("\0".join(str(v) for v in y).encode("utf-8"))
        else:
            y = np.ascontiguousarray(y)
            h.update(f"labels:{y.dtype.str}:{y.shape}\n".encode())
            h.update(y.tobytes())
    return h.hexdigest()


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, copy=True, order="C")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Dataset:
    """Test data for one model: feeds by input name (samples in dim 0) and labels.

    Build it with :meth:`create` (or a loader such as
    :func:`harness.data.load_sklearn`), which copies the arrays, makes them
    read-only and computes ``sha256`` so the hash always describes the content.

    Attributes:
        name: a short identifier, e.g. ``digits[test,seed=0,scale01+image]``.
        feeds: input name -> array ``(N, ...)`` in the model's layout and dtype.
        labels: one label per sample (class labels, class indices or regression
            targets) or None when the data has no labels.
        sha256: :func:`data_sha256` of feeds and labels.
        description: where the data came from, in words.

    Example:
        >>> import numpy as np
        >>> ds = Dataset.create("toy", {"x": np.zeros((3, 2), np.float32)}, np.array([0, 1, 1]))
        >>> ds.n, len(ds.sha256)
        (3, 64)
    """

    name: str
    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None
    sha256: str
    description: str = field(default="")

    @classmethod
    def create(cls, name: str, feeds: Mapping[str, np.ndarray], labels: np.ndarray | None = None,
               description: str = "") -> "Dataset":
        """Copy the arrays (read-only), check N agrees, and hash the content."""
        if not feeds:
            raise DataError(f"Dataset {name!r} has no feeds.")
        frozen = {k: _readonly(np.asarray(v)) for k, v in feeds.items()}
        ns = {k: (v.shape[0] if v.ndim else None) for k, v in frozen.items()}
        if None in ns.values() or len(set(ns.values())) != 1:
            raise DataError(f"Dataset {name!r}: feeds must share one leading sample count N, got {ns}.")
        n = next(iter(ns.values()))
        y = None
        if labels is not None:
            y = _readonly(np.asarray(labels))
            if y.ndim != 1 or y.shape[0] != n:
                raise DataError(f"Dataset {name!r}: labels must have shape ({n},), got {y.shape}.")
        return cls(name, frozen, y, data_sha256(frozen, y), description)

    @property
    def n(self) -> int:
        """The number of samples."""
        return int(next(iter(self.feeds.values())).shape[0])

    def take(self, count: int) -> "Dataset":
        """The first ``count`` samples as a new dataset (name gets ``[:count]``)."""
        if not isinstance(count, (int, np.integer)) or count < 1:
            raise DataError(f"take(count) needs a positive integer, got {count!r}.")
        if count >= self.n:
            return self
        return Dataset.create(
            f"{self.name}[:{count}]",
            {k: v[:count] for k, v in self.feeds.items()},
            None if self.labels is None else self.labels[:count],
            self.description + f" (first {count} of {self.n} samples)",
        )

    def batches(self, size: int):
        """Yield ``(feeds, labels)`` slices of at most ``size`` samples, in order."""
        if size < 1:
            raise DataError(f"batch size must be >= 1, got {size}.")
        for start in range(0, self.n, size):
            stop = start + size
            yield ({k: v[start:stop] for k, v in self.feeds.items()},
                   None if self.labels is None else self.labels[start:stop])

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.dtype.name}{list(v.shape)}" for k, v in self.feeds.items())
        lab = "none" if self.labels is None else f"{self.labels.dtype.name}[{self.labels.shape[0]}]"
        return f"Dataset({self.name!r}, n={self.n}, feeds={{{shapes}}}, labels={lab}, sha256={self.sha256[:12]}…)"
