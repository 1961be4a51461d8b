"""Which task metric a run measures: the ``metric`` config node -> a TaskMetric bound to one output.

:meth:`MetricRequest.from_config` checks what can be checked from the config
alone (the metric name, ``metric.threshold``, ``metric.bootstrap``, importing
``metric.fn``); :func:`choose_metric` then binds the request to the model and
the float model's outputs on the test set, before the sweep:

* the scored output is ``metric.output`` or :func:`harness.heads.default_output` (a
  classifier's probabilities, or a model's only class-score output, else the first output);
* ``auto`` with labels is ``accuracy`` (a classifier, class scores, a binary
  output with 0/1 labels, integer labels on a vector output whose argmax the
  float model gets right more often than the most frequent label — logits) or
  ``r2`` (a regressor, or real-valued labels); ``cosine`` on a vector output whose
  columns are not the labels' classes (an embedding: logged); without labels ``agreement`` (class
  predictions: class scores, or a one-value output in [0, 1]), ``cosine`` (any
  other vector) or ``snr_db`` (a regressor, a one-value output outside [0, 1]);
* a metric that cannot tell models apart on that output is refused: any metric
  on a constant output, ``cosine`` on one value per sample (only its sign),
  ``top<k>_accuracy`` with k at least the number of classes or on a binary output,
  ``accuracy`` / ``top<k>_accuracy`` on a vector output whose float argmax does no
  better than the most frequent label (an embedding is not class scores);
* labels must fit the output: 0/1 (or booleans) for a binary output, column
  indices for class scores.

Every refusal is a :class:`~harness.errors.ConfigError` or
:class:`~harness.errors.DataError` that names the key (``metric.name``,
``metric.output``, ``metric.fn``) and says what to use instead.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from harness import rundir
from harness.errors import ConfigError, DataError
from harness.heads import Head, default_output, head_for, output_names
from harness.scores import (LABEL_METRICS, REFERENCE_METRICS, TOPK, Accuracy, Agreement, Cosine, Fidelity,
                            Regression, TaskMetric, TopK, UserMetric)

__all__ = ["MetricRequest", "choose_metric", "METRIC_NAMES", "MINIMIZE", "CLASSIFYING"]

log = logging.getLogger("qsweep")

METRIC_NAMES = ("auto", "accuracy", "top<k>_accuracy", "agreement", "cosine", "snr_db", "psnr_db", "r2", "rmse",
                "mae")
MINIMIZE = ("rmse", "mae")
_BUILTIN = set(LABEL_METRICS) | set(REFERENCE_METRICS)
CLASSIFYING = ("accuracy", "agreement")  # the metrics that read a binary output as value > threshold


@dataclass(frozen=True)
class MetricRequest:
    """The ``metric`` config node, checked (see :class:`harness.config.MetricConfig`)."""

    name: str = "auto"
    output: str | None = None
    threshold: float = 0.5
    fn: Callable | None = None
    fn_path: str | None = None
    maximize: bool | None = None
    bootstrap: int = 1000

    @classmethod
    def from_config(cls, node: Any) -> "MetricRequest":
        """Check the ``metric`` node (a name string is ``metric.name``).

        Raises:
            ConfigError: an unknown metric name, a bad threshold or bootstrap count, a
                ``metric.fn`` that cannot be imported, ``metric.maximize`` on a built-in metric.
        """
        if isinstance(node, str):
            node = {"name": node}
        get = node.get  # a dict or the composed DictConfig node
        name = str(get("name", "auto") or "auto")
        output = get("output", None)
        threshold = get("threshold", 0.5)
        fn_path = get("fn", None)
        maximize = get("maximize", None)
        bootstrap = get("bootstrap", 1000)
        if threshold is None or not math.isfinite(float(threshold)):
            raise ConfigError(f"metric.threshold must be a finite number, got {threshold!r}.")
        if isinstance(bootstrap, bool) or int(bootstrap) != bootstrap or int(bootstrap) < 100:
            raise ConfigError(f"metric.bootstrap is the number of bootstrap resamples of an interval; it must be an "
                              f"integer >= 100, got {bootstrap!r}.")
        fn = None
        if fn_path is not None:
            from harness.space import resolve_lut_function

            if not isinstance(fn_path, str):
                raise ConfigError(f"metric.fn must be an import path (package.module.function), got {fn_path!r}.")
            fn, _ = resolve_lut_function(fn_path, key="metric.fn")
            if name == "auto":
                name = str(getattr(fn, "__name__", fn_path.rpartition(".")[2]))
            if name in _BUILTIN or TOPK.match(name) or name in rundir.fixed_columns() or not name.isidentifier():
                raise ConfigError(
                    f"metric.name={name!r} cannot name the user metric metric.fn={fn_path}: "
                    + ("it is a built-in metric or a trials.csv column" if name.isidentifier() else
                       "it must be a column name of letters, digits and _")
                    + "; set metric.name=<a name of your own> (default: the function's name).")
            maximize = True if maximize is None else bool(maximize)
        else:
            if name not in _BUILTIN and name != "auto" and not _valid_topk(name):
                raise ConfigError(f"metric.name={name!r} is not a task metric; choose "
                                  f"{', '.join(METRIC_NAMES)}, or give your own with metric.fn=package.module.function.")
            if maximize is not None and name != "auto" and bool(maximize) != (name not in MINIMIZE):
                raise ConfigError(f"metric.maximize={maximize} contradicts metric.name={name} (which is always "
                                  f"{'minimized' if name in MINIMIZE else 'maximized'}); metric.maximize is for "
                                  "metric.fn.")
        return cls(name, None if output is None else str(output), float(threshold), fn,
                   None if fn_path is None else str(fn_path), maximize, int(bootstrap))


def _valid_topk(name: str) -> bool:
    m = TOPK.match(name)
    return bool(m) and int(m.group(1)) >= 1


def _others(spec: Any, output: str, float_outputs: Mapping[str, np.ndarray]) -> list[str]:
    from harness.heads import is_constant

    return [o for o in output_names(spec) if o != output and o in float_outputs
            and not is_constant(float_outputs[o])]


def _argmax_hits(head: Head, float_outputs: Mapping[str, np.ndarray], labels: np.ndarray) -> tuple[float, float] | None:
    """For a ``vector`` output and integer labels that index its columns: ``(float argmax accuracy, majority rate)``.

    ``None`` when the question does not arise (another kind of output, or labels that are not column indices).
    """
    if head.kind != "vector" or head.classes is not None or labels.dtype.kind not in "iub" or labels.size == 0:
        return None
    y = labels.reshape(-1).astype(np.int64)
    if y.min() < 0 or y.max() >= head.width:
        return None
    hits = float(np.mean(head.predictions(float_outputs) == y))
    majority = float(np.bincount(y).max() / y.size)
    return hits, majority


def _not_classes(head: Head, hits: float, majority: float, n: int) -> str:
    return (f"the argmax of output {head.output!r} matches the labels on {hits:.1%} of the {n} test samples with the "
            f"float model, no better than always answering the most frequent label ({majority:.1%}): its "
            f"{head.width} columns are not the labels' classes")


def _auto(head: Head, task: str, labels: np.ndarray | None, float_outputs: Mapping[str, np.ndarray]) -> str:
    if labels is not None:
        if task == "regressor" or labels.dtype.kind == "f":
            return "r2"
        if head.kind == "vector" and head.classes is None:
            found = _argmax_hits(head, float_outputs, labels)
            if found is None or found[0] <= found[1]:
                why = (_not_classes(head, *found, labels.size) if found is not None else
                       f"the labels are not column indices of output {head.output!r}")
                log.info("metric: %s, so the labels are not used: scoring cosine similarity to the float model "
                         "(metric.output=<the output the labels belong to> scores them)", why)
                return "cosine"
        return "accuracy"
    if task == "regressor":
        return "snr_db"
    if head.kind in ("labels", "class_scores") or (head.kind == "binary" and head.in_unit_range):
        return "agreement"
    if head.kind == "binary":
        return "snr_db"
    return "cosine"


def _refuse_degenerate(name: str, head: Head, spec: Any, float_outputs: Mapping[str, np.ndarray], n: int) -> None:
    if head.constant and name not in ("snr_db", "psnr_db"):
        others = _others(spec, head.output, float_outputs)
        instead = (f"score another output (metric.output={' | '.join(others)})" if others else
                   "use metric.name=snr_db (output noise of every output)")
        raise ConfigError(
            f"metric.output={head.output!r} is constant over the {n} test samples (the float model gives every "
            f"sample the same value): {name} on it cannot tell a broken model from a good one; {instead}.")
    if name == "cosine" and head.width == 1:
        raise ConfigError(
            f"metric.name=cosine on output {head.output!r}, which has one value per sample: the cosine of two "
            "numbers is only their sign, so it cannot tell models apart; use metric.name=agreement (compares "
            f"value > metric.threshold) or metric.name=snr_db.")
    m = TOPK.match(name)
    if m:
        k = int(m.group(1))
        if head.kind in ("binary", "labels"):
            raise ConfigError(
                f"metric.name={name} needs class scores, but output {head.output!r} is {head.kind} "
                f"({head.why}); use metric.name=accuracy" + (" (value > metric.threshold)." if head.kind == "binary"
                                                             else "."))
        if k >= head.width:
            raise ConfigError(
                f"metric.name={name} on output {head.output!r}, which has {head.width} class scores: the top {k} "
                f"always hold the label, so it is 1.0 for every model; use metric.name=accuracy or "
                f"top{max(1, head.width - 1)}_accuracy at most.")
    if name in ("r2", "rmse", "mae") and head.width != 1:
        raise ConfigError(f"metric.name={name} needs one prediction per sample, but output {head.output!r} has "
                          f"{head.width} values per sample; choose a one-value output with metric.output=... "
                          "(or metric.name=cosine).")


def _check_task(name: str, labels: np.ndarray | None, task: str) -> None:
    """A label metric needs labels of its kind, and a model of its kind."""
    if not (name in LABEL_METRICS or TOPK.match(name)):
        return
    if labels is None:
        raise ConfigError(f"metric.name={name} needs labels, but the test data has none; use metric.name=agreement "
                          "or cosine (or metric.name=auto), or give labels (data.labels=...).")
    regression = name in ("r2", "rmse", "mae")
    if regression:
        if task == "classifier":
            raise ConfigError(f"metric.name={name} is for regression, but the model is a classifier; use "
                              "metric.name=accuracy.")
        if labels.dtype.kind not in "fiub":
            raise DataError(f"metric.name={name} needs numeric labels; these are {labels.dtype} values.")
        return
    if task == "regressor":
        raise ConfigError(f"metric.name={name} needs class predictions, but the model is a regressor; use "
                          "metric.name=r2, rmse, mae or snr_db.")
    if labels.dtype.kind == "f":
        raise ConfigError(f"metric.name={name} needs class labels, but the labels are real numbers; use "
                          "metric.name=r2, rmse or mae.")


def _check_labels(name: str, head: Head, labels: np.ndarray | None) -> None:
    """Class labels must fit the scored output (checked before the sweep)."""
    if labels is None or not (name == "accuracy" or TOPK.match(name)):
        return
    if head.classes is not None or head.kind == "labels":
        return  # a classifier's labels were matched to its classes when the data was loaded
    if labels.dtype.kind not in "iub":
        raise DataError(f"metric.name={name} on output {head.output!r} compares labels with its column indices, but "
                        f"the labels are {labels.dtype} values (a classifier's class labels are scored on its "
                        "probabilities or predicted-label output: unset metric.output).")
    lo, hi = int(labels.min()), int(labels.max())
    if head.kind == "binary":
        if lo < 0 or hi > 1:
            raise DataError(
                f"The labels range over {lo}..{hi}, but metric.output={head.output!r} has one value per sample (a "
                "binary output: labels must be 0/1 or booleans, compared with value > metric.threshold). Choose "
                "the output these labels belong to (metric.output=...), give 0/1 labels, or use "
                "metric.name=r2 / rmse / mae if they are regression targets.")
        return
    if lo < 0 or hi >= head.width:
        raise DataError(
            f"The labels range over {lo}..{hi} but metric.output={head.output!r} has {head.width} class scores per "
            f"sample (valid labels 0..{head.width - 1}). Give class indices matching the output columns, choose "
            "another output (metric.output=...), or use metric.name=agreement.")


def choose_metric(request: MetricRequest | str, spec: Any, float_outputs: Mapping[str, np.ndarray],
                  labels: np.ndarray | None) -> TaskMetric:
    """The task metric of ``request`` on this model and test set (see module docstring).

    ``float_outputs``: every output of the float model on the test set (the kinds are read from them).

    Raises:
        ConfigError / DataError: see module docstring.
    """
    from harness.data import task_of

    req = request if isinstance(request, MetricRequest) else MetricRequest.from_config(request)
    task = task_of(spec)
    output, why = (req.output, "metric.output") if req.output is not None else default_output(spec, float_outputs)
    head = head_for(spec, output, float_outputs, req.threshold)
    head = dataclasses.replace(head, chosen=why)
    n = int(next(iter(float_outputs.values())).shape[0])
    if req.fn is not None:
        metric: TaskMetric = UserMetric(req.name, bool(req.maximize), head, req.fn, str(req.fn_path))
        metric.value(float_outputs, labels, float_outputs)  # refuse a function that fails or returns no number
        return metric
    name = _auto(head, task, labels, float_outputs) if req.name == "auto" else req.name
    if name in ("snr_db", "psnr_db") and req.output is not None:
        raise ConfigError(f"metric.name={name} is the worst SNR over every numeric output (column {name}; one "
                          f"output's is the column snr_db:<output>), so metric.output={req.output!r} does not apply; "
                          "unset metric.output, or score that output with metric.name=cosine or agreement.")
    _check_task(name, labels, task)
    _refuse_degenerate(name, head, spec, float_outputs, n)
    _check_labels(name, head, labels)
    if name == "accuracy" or TOPK.match(name):
        found = None if labels is None else _argmax_hits(head, float_outputs, labels)
        if found is not None and found[0] <= found[1]:
            raise ConfigError(f"metric.name={name}: {_not_classes(head, *found, n)}, so {name} on it cannot tell "
                              "models apart; use metric.name=cosine (similarity to the float model's output), or "
                              "score the output the labels belong to (metric.output=...).")
    if name == "accuracy":
        metric = Accuracy(head)
    elif TOPK.match(name):
        metric = TopK(head, int(TOPK.match(name).group(1)))
    elif name == "agreement":
        metric = Agreement(head)
    elif name == "cosine":
        metric = Cosine(head)
    elif name in ("snr_db", "psnr_db"):
        metric = Fidelity(name, head, numeric_outputs(float_outputs))
    else:
        metric = Regression(name, head)
    if name in CLASSIFYING and head.kind == "binary" and not head.in_unit_range:
        vals = head.values(float_outputs)[:, 0]
        log.warning("metric: output %r has values outside [0, 1] (%.3g .. %.3g); %s compares value > "
                    "metric.threshold=%g (for logits set metric.threshold=0)", head.output, vals.min(), vals.max(),
                    name, head.threshold)
    return metric


def numeric_outputs(float_outputs: Mapping[str, np.ndarray]) -> list[str]:
    """The outputs with real values: each gets an ``snr_db:<output>`` column; ``snr_db`` is the worst."""
    return [k for k, v in float_outputs.items() if np.asarray(v).dtype.kind == "f"]


def classifies(metric: TaskMetric, task: str) -> bool:
    """Whether ``agreement`` (same prediction as the float model) means something for this metric's output."""
    head = metric.head
    if metric.name in ("accuracy", "agreement") or TOPK.match(metric.name):
        return True
    if task == "regressor" or metric.name in ("r2", "rmse", "mae"):
        return False
    return head.kind in ("labels", "class_scores") or (head.kind == "binary" and head.in_unit_range)
