"""Task metrics as per-sample rows plus an aggregate: what a sweep measures, its interval, its drop test.

Every built-in metric is a :class:`SampleMetric`: :meth:`~SampleMetric.per_sample`
turns a model's outputs into one row per test sample (correct or not, the
cosine with the float model's output, the squared error and label, ...),
:meth:`~SampleMetric.aggregate` turns any set of rows into the figure, and
:meth:`~SampleMetric.interval` gives its 95% interval. Because the figure is a
function of rows, it can be computed on a prefix of the test set, on a
bootstrap resample, or chunk by chunk.

========================  ==============================  ============  =================
metric                    row per sample                  interval      drop test
========================  ==============================  ============  =================
accuracy, top<k>_accuracy  1 if right (argmax / top k /    Wilson        exact McNemar
                          ``value > threshold``)
agreement                 1 if the float model's          Wilson        (none: the float
                          prediction is the same                        figure is exact)
cosine                    cosine with the float output    bootstrap     (none)
snr_db, psnr_db           SNR / PSNR in dB per output     bootstrap     (none)
                          (the figure: the worst output)
rmse, r2                  squared error, label            bootstrap     paired t-test
mae                       absolute error, label           bootstrap     paired t-test
``metric.fn``             (the whole set)                 bootstrap     paired bootstrap
========================  ==============================  ============  =================

Example:
    >>> import numpy as np
    >>> from harness.heads import Head
    >>> from harness.stats import Bootstrap
    >>> acc = Accuracy(Head("prob", "binary", 1))
    >>> out = {"prob": np.array([[0.9], [0.2], [0.6], [0.4]])}
    >>> s = acc.score(out, np.array([1, 0, 0, 0]), out, boot=Bootstrap(100))
    >>> s.value, round(s.ci_low, 3), round(s.ci_high, 3)
    (0.75, 0.301, 0.954)
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from harness import stats
from harness.errors import DataError
from harness.heads import Head
from harness.stats import Bootstrap

__all__ = ["Score", "TaskMetric", "SampleMetric", "Accuracy", "TopK", "Agreement", "Cosine", "Fidelity",
           "Regression", "UserMetric", "TOPK", "LABEL_METRICS", "REFERENCE_METRICS"]

TOPK = re.compile(r"^top(\d+)_accuracy$")
#: Metrics measured against labels (the float model's own figure has sampling noise: a drop test applies).
LABEL_METRICS = ("accuracy", "r2", "rmse", "mae")
#: Metrics measured against the float model's outputs (the float model's own figure is exact).
REFERENCE_METRICS = ("agreement", "cosine", "snr_db", "psnr_db")

Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Score:
    """A task metric measured on one model: the figure, its 95% interval and the drop test's p-value.

    ``rows`` are the per-sample rows (None for a user metric); ``boot`` the bootstrap
    distribution (kept for a paired bootstrap test against the float model).
    """

    value: float
    ci_low: float
    ci_high: float
    drop_p: float | None = None
    rows: np.ndarray | None = field(default=None, repr=False)
    boot: np.ndarray | None = field(default=None, repr=False)


class TaskMetric:
    """The metric a sweep optimises: its column name, direction and how it is measured.

    Attributes:
        name: the trials.csv column (``accuracy``, ``top3_accuracy``, ``cosine``, a user metric's name).
        maximize: whether larger is better.
        head: the scored output (:class:`harness.heads.Head`); its predictions also give ``agreement``.
        interval_method: ``wilson`` or ``bootstrap``.
        drop_test: ``mcnemar``, ``paired_t``, ``paired_bootstrap`` or None (the float figure is exact).
        needs_labels: measured against labels.
    """

    interval_method = "bootstrap"
    drop_test: str | None = None
    needs_labels = False

    def __init__(self, name: str, maximize: bool, head: Head):
        self.name, self.maximize, self.head = name, bool(maximize), head

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"

    @property
    def drop_name(self) -> str:
        """Column of the drop from the float model (``accuracy_drop``)."""
        from harness import rundir

        return rundir.drop_column(self.name)

    def drop(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline`` (positive = worse)."""
        return baseline - value if self.maximize else value - baseline

    @property
    def k(self) -> int:
        m = TOPK.match(self.name)
        return int(m.group(1)) if m else 1

    @property
    def output(self) -> str | None:
        """The scored output (None: every numeric output)."""
        return self.head.output

    def score(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs, *,
              boot: Bootstrap, reference: Score | None = None) -> Score:
        """The metric of ``outputs``; with ``reference`` (the float model's score) the drop test too."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, output={self.output!r})"


class SampleMetric(TaskMetric):
    """A metric that is an aggregate of per-sample rows (every built-in metric)."""

    #: Rows are 0/1 (a proportion: Wilson interval).
    proportion = False

    def per_sample(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs) -> np.ndarray:
        """One row per sample, ``(N, c)`` float64."""
        raise NotImplementedError

    def reduce(self, rows: np.ndarray) -> np.ndarray:
        """The figure of rows ``(..., n, c)`` -> ``(...)`` (any leading batch dimensions)."""
        return rows[..., 0].mean(axis=-1)

    def aggregate(self, rows: np.ndarray) -> float:
        """The figure of a set of rows (the whole test set, a prefix, a resample)."""
        return float(self.reduce(np.asarray(rows, dtype=np.float64)))

    def interval(self, rows: np.ndarray, boot: Bootstrap) -> tuple[float, float]:
        """The 95% interval of the figure of ``rows``: Wilson for a proportion, else the percentile bootstrap."""
        rows = np.asarray(rows, dtype=np.float64)
        if self.proportion:
            return stats.wilson_interval(float(rows[:, 0].sum()), rows.shape[0])
        return boot.interval(rows, self.reduce)

    def drop_p(self, rows: np.ndarray, float_rows: np.ndarray) -> float | None:
        """Two-sided p-value that this model's figure differs from the float model's (paired samples)."""
        if self.drop_test == "mcnemar":
            b, c = stats.discordant(float_rows[:, 0] > 0.5, rows[:, 0] > 0.5)
            return stats.mcnemar_p(b, c)
        if self.drop_test == "paired_t":
            return stats.paired_t_p(rows[:, 0], float_rows[:, 0])
        return None

    def score(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs, *,
              boot: Bootstrap, reference: Score | None = None) -> Score:
        rows = self.per_sample(outputs, labels, float_outputs)
        value = self.aggregate(rows)
        lo, hi = self.interval(rows, boot)
        p = self.drop_p(rows, reference.rows) if reference is not None and reference.rows is not None else None
        return Score(value, lo, hi, p, rows)


def _column(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1, 1)


class Accuracy(SampleMetric):
    """Fraction of samples predicted right: argmax of class scores, a label output, or ``value > threshold``."""

    proportion, drop_test, needs_labels = True, "mcnemar", True

    def __init__(self, head: Head):
        super().__init__("accuracy", True, head)

    def per_sample(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs) -> np.ndarray:
        return _column(self.head.predictions(outputs) == np.asarray(labels))


class TopK(SampleMetric):
    """Fraction of samples whose label is among the ``k`` highest class scores."""

    proportion, drop_test, needs_labels = True, "mcnemar", True

    def __init__(self, head: Head, k: int):
        super().__init__(f"top{k}_accuracy", True, head)

    def per_sample(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs) -> np.ndarray:
        from harness import metrics

        scores = self.head.values(outputs)
        cols = metrics.label_columns(labels, scores.shape[1], self.head.classes)
        top = metrics.topk_indices(scores, self.k)
        return _column(np.any(top == cols[:, None], axis=1))


class Agreement(SampleMetric):
    """Fraction of samples on which the model predicts what the float model predicts."""

    proportion = True

    def __init__(self, head: Head):
        super().__init__("agreement", True, head)

    def per_sample(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs) -> np.ndarray:
        return _column(self.head.predictions(outputs) == self.head.predictions(float_outputs))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two ``(N, D)`` arrays (1 where both rows are zero, 0 where one is)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    both_zero = (na == 0) & (nb == 0)
    one_zero = (na == 0) ^ (nb == 0)
    cos = np.where(both_zero, 1.0, np.where(one_zero, 0.0, cos))
    return np.clip(cos, -1.0, 1.0)


class Cosine(SampleMetric):
    """Mean per-sample cosine similarity of the output to the float model's."""

    def __init__(self, head: Head):
        super().__init__("cosine", True, head)

    def per_sample(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs) -> np.ndarray:
        return _column(cosine_rows(self.head.values(outputs), self.head.values(float_outputs)))


class Fidelity(SampleMetric):
    """``snr_db`` / ``psnr_db``: per-sample SNR (PSNR) in dB of each numeric output (coremltools'
    ``compare_models``); the figure is the lowest (worst) output's mean."""

    def __init__(self, name: str, head: Head, outputs: list[str]):
        super().__init__(name, True, head)
        self.outputs = list(outputs)

    @property
    def output(self) -> str | None:
        return None

    def per_sample(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs) -> np.ndarray:
        from harness import metrics

        cols = []
        for k in self.outputs:
            st = metrics.noise_stats(float_outputs[k], outputs[k])
            cols.append(st.snr if self.name == "snr_db" else st.psnr)
        return np.stack(cols, axis=1).astype(np.float64)

    def reduce(self, rows: np.ndarray) -> np.ndarray:
        return rows.mean(axis=-2).min(axis=-1)


class Regression(SampleMetric):
    """``rmse``, ``mae`` or ``r2`` of a one-value-per-sample output against numeric labels.

    Rows are ``(loss, label)``: the squared error (rmse, r2) or absolute error (mae) and the label
    (r2's total sum of squares is taken over the rows' labels).
    """

    drop_test, needs_labels = "paired_t", True

    def __init__(self, name: str, head: Head):
        super().__init__(name, name == "r2", head)

    def per_sample(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs) -> np.ndarray:
        pred = self.head.values(outputs)[:, 0]
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        err = pred - y
        loss = np.abs(err) if self.name == "mae" else err * err
        return np.stack([loss, y], axis=1)

    def reduce(self, rows: np.ndarray) -> np.ndarray:
        loss = rows[..., 0]
        if self.name == "mae":
            return loss.mean(axis=-1)
        if self.name == "rmse":
            return np.sqrt(loss.mean(axis=-1))
        y = rows[..., 1]
        ss_res = loss.sum(axis=-1)
        ss_tot = ((y - y.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = 1.0 - ss_res / ss_tot
        # constant labels: 1 for a perfect prediction, else 0 (as scikit-learn's r2_score)
        return np.where(ss_tot == 0, np.where(ss_res == 0, 1.0, 0.0), r2)


def _number(value: Any, where: str) -> float:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise DataError(f"metric.fn={where} returned {value!r} ({type(value).__name__}), not a number; it must "
                        "return one float, e.g. float(np.mean(...)).")
    v = float(value)
    if math.isnan(v):
        raise DataError(f"metric.fn={where} returned NaN; it must return a number.")
    return v


def _subset(outputs: Outputs, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[idx] for k, v in outputs.items()}


class UserMetric(TaskMetric):
    """``metric.fn``: ``fn(outputs, labels, float_outputs) -> float`` on the whole test set.

    Its interval is the percentile bootstrap of ``fn`` on resampled test sets and its drop test
    the paired bootstrap against the float model on the same resamples (``fn`` is called
    ``metric.bootstrap`` times per model).
    """

    drop_test = "paired_bootstrap"

    def __init__(self, name: str, maximize: bool, head: Head, fn: Callable, path: str):
        super().__init__(name, maximize, head)
        self.fn, self.path = fn, path

    def value(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs) -> float:
        """``fn`` on these outputs, checked to be a number.

        Raises:
            DataError: ``fn`` raised or returned something that is not a number (names metric.fn).
        """
        try:
            got = self.fn(outputs, labels, float_outputs)
        except Exception as e:  # noqa: BLE001 - the user's code: report it by the config key
            raise DataError(f"metric.fn={self.path} raised {type(e).__name__}: {e}") from None
        return _number(got, self.path)

    def score(self, outputs: Outputs, labels: np.ndarray | None, float_outputs: Outputs, *,
              boot: Bootstrap, reference: Score | None = None) -> Score:
        value = self.value(outputs, labels, float_outputs)
        n = next(iter(outputs.values())).shape[0]

        def statistic(idx: np.ndarray) -> float:
            return self.value(_subset(outputs, idx), None if labels is None else np.asarray(labels)[idx],
                              _subset(float_outputs, idx))

        dist = boot.distribution_of(n, statistic)
        lo, hi = boot.percentile_interval(dist)
        p = Bootstrap.paired_p(dist, reference.boot) if reference is not None and reference.boot is not None else None
        return Score(value, lo, hi, p, None, dist)
