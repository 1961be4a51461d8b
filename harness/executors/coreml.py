"""``CoreMLExecutor``: the executor interface over ``coremltools.models.MLModel.predict`` (macOS)."""
from __future__ import annotations

import platform
from typing import Any

import numpy as np

from harness.errors import ExecutorError
from harness.executors.base import Executor
from harness.data.model_inputs import Feed
from harness.executors.interface import ModelIO, load_spec

_NP_DTYPES = {"INT32": np.int32, "DOUBLE": np.float64}  # every other array input: float32


class CoreMLExecutor(Executor):
    """Run a model with Core ML (macOS only), batched through ``MLModel.predict``'s list form.

    Inputs follow the same batch convention as the numpy executor and outputs
    have the same shapes (leading N; classifier probabilities as ``(N, K)`` in
    ``class_labels`` order). ``compute_units`` defaults to CPU_ONLY so results
    are float32, comparable with the numpy executor.
    """

    kind = "coreml"

    def __init__(self, model: Any, compute_units: str = "CPU_ONLY") -> None:
        from harness.executors.factory import coreml_available

        spec, label, _ = load_spec(model)
        super().__init__(ModelIO(spec, label))
        if not coreml_available():
            raise ExecutorError(
                f"{label}: Core ML prediction is not available on this machine ({platform.system()} "
                f"{platform.machine()}); it needs macOS with coremltools' libcoremlpython. "
                f"Use executor=numpy (or auto) instead.")
        from quantizer.coremltools_quiet import coremltools

        ct = coremltools()
        try:
            self.mlmodel = ct.models.MLModel(spec, compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as e:  # Core ML's compiler rejects the model
            raise ExecutorError(f"{label}: Core ML cannot load the model: {e}") from e

    def _sample_feed(self, name: str, feed: Feed, i: int) -> Any:
        info = next(inp for inp in self.io.inputs if inp.name == name)
        xi = feed.x[i]
        if info.kind == "image":
            from PIL import Image

            px = np.clip(np.rint(xi), 0, 255).astype(np.uint8)
            return Image.fromarray(px[..., 0], "L") if info.channels == 1 else Image.fromarray(px, "RGB")
        dt = _NP_DTYPES.get(info.type_name, np.float32)
        if self.io.legacy and xi.ndim == len(info.declared_shape) + 1:  # a sequence: (S, *D) -> (S, 1, *D)
            xi = xi.reshape((xi.shape[0], 1) + xi.shape[1:])
        return np.ascontiguousarray(xi, dtype=dt)

    def _predict(self, split: dict[str, Feed], n: int) -> dict[str, np.ndarray]:
        batch = [{k: self._sample_feed(k, feed, i) for k, feed in split.items()} for i in range(n)]
        try:
            results = self.mlmodel.predict(batch)
        except Exception as e:
            raise ExecutorError(f"{self.io.label}: Core ML prediction failed: {e}") from e
        if isinstance(results, dict):
            results = [results]
        out: dict[str, np.ndarray] = {}
        for o in self.io.outputs:
            vals = [r[o.name] for r in results]
            if o.kind == "label":
                out[o.name] = np.asarray(vals)
            elif o.kind == "probabilities":
                out[o.name] = np.asarray([[d[c] for c in self.io.class_labels] for d in vals], dtype=np.float32)
            else:
                y = np.stack([np.asarray(v, dtype=np.float32) for v in vals])
                if self.io.legacy:
                    if y.ndim >= 3 and y.shape[1:3] == (1, 1) and y.ndim == 6:
                        y = y[:, 0, 0]
                    if o.shape and int(np.prod(o.shape)) == int(np.prod(y.shape[1:])):
                        y = y.reshape((n,) + o.shape)
                elif y.ndim >= 2 and y.shape[1] == 1:
                    y = y[:, 0]
                out[o.name] = y
        return out
