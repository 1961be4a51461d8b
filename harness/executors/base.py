"""The executor interface shared by the numpy and Core ML backends."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping

import numpy as np

from harness.data.model_inputs import Feed
from harness.executors.interface import ModelIO


class Executor(ABC):
    """Runs a Core ML neural-network model on batches of feeds.

    ``predict`` takes ``{input name: array}`` following the batch convention of
    :mod:`harness.data.model_inputs` and returns ``{output name: array}``, each
    with a leading N (output shapes: :mod:`harness.executors.interface`).
    """

    #: "numpy" or "coreml"
    kind: str = ""

    def __init__(self, io: ModelIO) -> None:
        self.io = io

    @property
    def input_names(self) -> list[str]:
        """The model's input names, in description order."""
        return self.io.input_names

    @property
    def output_names(self) -> list[str]:
        """The model's output names, in description order."""
        return self.io.output_names

    @property
    def class_labels(self) -> list[Any] | None:
        """A classifier's labels in spec order (the probability columns), else None."""
        return self.io.class_labels

    def predict(self, feeds: Mapping[str, np.ndarray], batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Run the model on all samples in ``feeds``; ``batch_size`` bounds memory by running in chunks."""
        split, n = self.io.split_feeds(feeds)
        if batch_size is None or batch_size >= n:
            return self._predict(split, n)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        parts = []
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            parts.append(self._predict({k: f._replace(x=f.x[lo:hi], n=hi - lo) for k, f in split.items()}, hi - lo))
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    @abstractmethod
    def _predict(self, split: dict[str, Feed], n: int) -> dict[str, np.ndarray]:
        """Run validated feeds ``{name: Feed}`` (arrays with a leading N [and S]) of N samples."""
