"""``make_executor``: pick the executor backend for a model."""
from __future__ import annotations

from typing import Any

from harness.errors import ConfigError
from harness.executors.base import Executor

KINDS = ("auto", "numpy", "coreml")


def coreml_available() -> bool:
    """True where coremltools can run Core ML predictions (macOS with libcoremlpython)."""
    from quantizer.coremltools_quiet import can_predict

    return can_predict()


def make_executor(kind: str, model: Any) -> Executor:
    """Build an executor for ``model`` (path, MLModel or spec).

    ``kind``: ``"numpy"`` (reference executor), ``"coreml"`` (Core ML
    prediction; :class:`~harness.errors.ExecutorError` where it cannot run), or
    ``"auto"`` (Core ML where available, numpy elsewhere).

    Example:
        >>> ex = make_executor("numpy", "model.mlmodel")  # doctest: +SKIP
        >>> out = ex.predict({"input": x})                # doctest: +SKIP
    """
    if kind not in KINDS:
        raise ConfigError(f"executor: unknown executor kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = "coreml" if coreml_available() else "numpy"
    if kind == "coreml":
        from harness.executors.coreml import CoreMLExecutor

        return CoreMLExecutor(model)
    from harness.executors.numpy_executor import NumpyExecutor

    return NumpyExecutor(model)
