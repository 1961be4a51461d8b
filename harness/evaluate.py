"""Measure a (quantized) model on the test set against the float model.

:class:`Evaluator` runs the float model once (its outputs are cached for the
whole run: the baseline row of every report) and then, per candidate,
computes the task metric, its drop from the float value, agreement of the
predictions with the float model's, and the output SNR / PSNR in dB as
coremltools' ``compare_models`` defines them. Sizes are the serialized bytes
(:func:`quantizer.model_size`).

The task metric (:func:`choose_metric`) is ``accuracy`` (top-1) for a
classifier or a model with a class-score output and integer labels,
``top<k>_accuracy`` on request, ``r2`` / ``rmse`` / ``mae`` for regression
targets, and without labels ``agreement`` (class predictions) or ``snr_db``
(regression outputs).

Example:
    >>> from harness import zoo
    >>> spec, test = zoo.load("digits_mlp")                          # doctest: +SKIP
    >>> ev = Evaluator(spec, test, executor="numpy")                 # doctest: +SKIP
    >>> ev.baseline["accuracy"], ev.metric.name                      # doctest: +SKIP
    (0.96, 'accuracy')
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from harness.errors import ConfigError, DataError

_TOPK = re.compile(r"^top(\d+)_accuracy$")
MAXIMIZE = {"accuracy", "agreement", "snr_db", "psnr_db", "r2"}
MINIMIZE = {"rmse", "mae"}
METRIC_NAMES = ("accuracy", "top<k>_accuracy", "agreement", "snr_db", "psnr_db", "r2", "rmse", "mae")


@dataclass(frozen=True)
class TaskMetric:
    """The metric a sweep optimises: its column name and direction."""

    name: str
    maximize: bool

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"

    @property
    def drop_name(self) -> str:
        """Column of the drop from the float model (``accuracy_drop``)."""
        return f"{self.name}_drop"

    def drop(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline`` (positive = worse)."""
        return baseline - value if self.maximize else value - baseline

    @property
    def k(self) -> int:
        m = _TOPK.match(self.name)
        return int(m.group(1)) if m else 1


def _outputs(spec: Any) -> list[str]:
    return [o.name for o in spec.description.output]


@dataclass(frozen=True)
class ModelTask:
    """What a model predicts: its kind, class labels and the outputs the metrics read."""

    kind: str  # classifier | regressor | neuralNetwork
    classes: np.ndarray | None
    label_output: str | None  # classifier predicted-label output
    score_output: str  # probabilities (classifier) / first output (others)

    @classmethod
    def of(cls, spec: Any) -> "ModelTask":
        from harness.data import class_labels, task_of

        kind = task_of(spec)
        outs = _outputs(spec)
        desc = spec.description
        if kind == "classifier":
            label = desc.predictedFeatureName or None
            probs = desc.predictedProbabilitiesName or None
            score = probs if probs in outs else next((o for o in outs if o != label), label)
            return cls(kind, class_labels(spec), label, score)
        if kind == "regressor":
            target = desc.predictedFeatureName if desc.predictedFeatureName in outs else outs[0]
            return cls(kind, None, None, target)
        return cls(kind, None, None, outs[0])


def choose_metric(requested: str, task: ModelTask, labels: np.ndarray | None) -> TaskMetric:
    """The task metric for ``metric=<requested>`` (``auto`` picks one; see module docstring).

    Raises:
        ConfigError: an unknown metric name, or one the model/data cannot give
            (e.g. accuracy for a regressor, or any label metric without labels).
    """
    name = str(requested)
    regression_labels = labels is not None and labels.dtype.kind == "f"
    if name == "auto":
        if labels is None:
            name = "snr_db" if task.kind == "regressor" else "agreement"
        elif task.kind == "regressor" or (task.kind == "neuralNetwork" and regression_labels):
            name = "r2"
        else:
            name = "accuracy"
    if name not in MAXIMIZE | MINIMIZE and not _TOPK.match(name):
        raise ConfigError(f"metric={requested!r} is not a task metric; choose auto or one of {', '.join(METRIC_NAMES)}.")
    label_metric = name in ("accuracy", "r2", "rmse", "mae") or bool(_TOPK.match(name))
    if label_metric and labels is None:
        raise ConfigError(f"metric={name} needs labels, but the test data has none; use metric=agreement "
                          "(or metric=auto), or give labels (data.labels=...).")
    classification = name == "accuracy" or bool(_TOPK.match(name)) or name == "agreement"
    if classification and task.kind == "regressor":
        raise ConfigError(f"metric={name} needs class predictions, but the model is a regressor; "
                          "use metric=r2, rmse, mae or snr_db.")
    if name in ("accuracy",) or _TOPK.match(name):
        if regression_labels:
            raise ConfigError(f"metric={name} needs class labels, but the labels are real numbers; "
                              "use metric=r2, rmse or mae.")
    if name in ("r2", "rmse", "mae") and task.kind == "classifier":
        raise ConfigError(f"metric={name} is for regression, but the model is a classifier; use metric=accuracy.")
    return TaskMetric(name, name not in MINIMIZE)


def _scores_2d(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    return a.reshape(a.shape[0], -1)


class Evaluator:
    """Evaluate models on one test set; the float model's outputs are computed once.

    Args:
        spec: the float model (``Model_pb2.Model``).
        dataset: a :class:`harness.data.Dataset` fitted to the model.
        executor: ``numpy``, ``coreml`` or ``auto`` (see :func:`harness.executors.make_executor`).
        metric: ``auto`` or a metric name (see :func:`choose_metric`).
        batch_size: samples per ``predict`` call.
    """

    def __init__(self, spec: Any, dataset: Any, *, executor: str = "numpy", metric: str = "auto",
                 batch_size: int = 512):
        import quantizer

        if batch_size < 1:
            raise ConfigError(f"executor.batch_size must be at least 1, got {batch_size}.")
        self.dataset = dataset
        self.executor_kind = executor
        self.batch_size = int(batch_size)
        self.task = ModelTask.of(spec)
        self.labels = dataset.labels
        self.metric = choose_metric(metric, self.task, self.labels)
        self.float_size = quantizer.model_size(spec)
        self.float_outputs = self.predict(spec)
        self._check_labels()
        self.float_classes = self._classes(self.float_outputs)
        values = self._task_value(self.float_outputs, self.float_classes)
        self.baseline: dict[str, Any] = {
            "size_bytes": self.float_size,
            "compression_ratio": 1.0,
            self.metric.name: values,
            self.metric.drop_name: 0.0,
            "agreement": 1.0 if self.float_classes is not None else None,
        }

    # -- running -------------------------------------------------------------------------
    def executor_for(self, spec: Any) -> Any:
        """Build the executor for ``spec`` (compiles and checks every layer)."""
        from harness.executors import make_executor

        return make_executor(self.executor_kind, spec)

    def predict(self, spec: Any) -> dict[str, np.ndarray]:
        """Every output of ``spec`` on the whole test set (in batches)."""
        ex = self.executor_for(spec)
        self.executor_name = type(ex).__name__
        feeds = self.dataset.feeds
        n = next(iter(feeds.values())).shape[0]
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, self.batch_size):
            batch = {k: v[start:start + self.batch_size] for k, v in feeds.items()}
            for k, v in ex.predict(batch).items():
                parts.setdefault(k, []).append(np.asarray(v))
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    # -- metrics -------------------------------------------------------------------------
    def _check_labels(self) -> None:
        """Class indices must fit the score output (checked before the sweep)."""
        y = self.labels
        if y is None or self.task.kind != "neuralNetwork" or y.dtype.kind == "f":
            return
        scores = _scores_2d(self.float_outputs[self.task.score_output])
        k = scores.shape[1]
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= k:
            raise DataError(
                f"The labels range over {lo}..{hi} but the model's output '{self.task.score_output}' has {k} "
                f"class scores per sample (valid labels 0..{k - 1}). Give class indices matching the output "
                "columns, or choose metric=agreement.")

    def _classes(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Predicted class per sample (labels for classifiers, argmax index otherwise), or None."""
        if self.task.kind == "classifier":
            if self.task.label_output and self.task.label_output in outputs:
                return np.asarray(outputs[self.task.label_output])
            scores = _scores_2d(outputs[self.task.score_output])
            return self.task.classes[np.argmax(scores, axis=1)]
        if self.task.kind == "regressor" or (self.labels is not None and self.labels.dtype.kind == "f"):
            return None
        return np.argmax(_scores_2d(outputs[self.task.score_output]), axis=1)

    def _task_value(self, outputs: Mapping[str, np.ndarray], classes: np.ndarray | None) -> float:
        from harness import metrics

        name = self.metric.name
        y = self.labels
        if name == "accuracy":
            return metrics.top1_accuracy(classes, y)
        if _TOPK.match(name):
            scores = _scores_2d(outputs[self.task.score_output])
            classes_in_order = self.task.classes if self.task.kind == "classifier" else None
            return metrics.topk_accuracy(scores, y, self.metric.k, class_labels=classes_in_order)
        if name == "agreement":
            return metrics.agreement(self.float_classes, classes)
        if name in ("snr_db", "psnr_db"):
            return self._snr(outputs)[0 if name == "snr_db" else 1]
        pred = np.asarray(outputs[self.task.score_output], dtype=np.float64).reshape(len(y), -1)
        if pred.shape[1] != 1:
            raise DataError(f"metric={name} needs one prediction per sample, but output "
                            f"'{self.task.score_output}' has {pred.shape[1]} values per sample.")
        return float(getattr(metrics, name)(y.astype(np.float64), pred[:, 0]))

    def _snr(self, outputs: Mapping[str, np.ndarray]) -> tuple[float, float]:
        """Mean per-sample SNR and PSNR in dB (coremltools' ``compare_models`` figures).

        A classifier is compared on its probabilities output; other models on each
        numeric output, reporting the lowest (worst) output.
        """
        from harness import metrics

        names = ([self.task.score_output] if self.task.kind == "classifier" else
                 [k for k, v in self.float_outputs.items() if np.asarray(v).dtype.kind == "f"])
        snrs, psnrs = [], []
        for k in names:
            stats = metrics.noise_stats(self.float_outputs[k], outputs[k])
            snrs.append(stats.snr_mean)
            psnrs.append(stats.psnr_mean)
        return min(snrs), min(psnrs)

    def evaluate(self, spec: Any) -> dict[str, Any]:
        """All figures of ``spec`` against the float model (see module docstring)."""
        import quantizer

        outputs = self.predict(spec)
        missing = [k for k in self.float_outputs if k not in outputs]
        if missing:
            raise DataError(f"The quantized model lacks output(s) {missing} of the float model.")
        classes = self._classes(outputs)
        value = self._task_value(outputs, classes)
        snr, psnr = self._snr(outputs)
        size = quantizer.model_size(spec)
        return {
            "size_bytes": int(size),
            "compression_ratio": self.float_size / size,
            self.metric.name: value,
            self.metric.drop_name: self.metric.drop(self.baseline[self.metric.name], value),
            "agreement": agreement(self.float_classes, classes) if classes is not None else None,
            "snr_db": snr,
            "psnr_db": psnr,
        }


def agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """Fraction of samples with the same predicted class (see :func:`harness.metrics.agreement`)."""
    from harness import metrics

    return metrics.agreement(reference, other)
