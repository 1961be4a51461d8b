"""Confidence intervals and paired tests of per-sample figures: Wilson, exact McNemar, bootstrap, paired t.

Every figure a sweep reports is measured on one finite test set; this module
says how sure that figure is. The distributions are scipy's
(``scipy.stats.binom``, ``scipy.stats.ttest_rel``); the Wilson interval is its
closed formula with :data:`Z95`.

* :func:`wilson_interval` — 95% Wilson score interval of a proportion ``k / n``
  (accuracy, top-k accuracy, agreement: one 0/1 value per sample).
* :func:`mcnemar_p` — exact two-sided McNemar test of two classifiers on the
  same samples, from the discordant counts ``b`` (first right, second wrong)
  and ``c``: ``p = min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)])``, 1 when ``b + c = 0``.
* :class:`Bootstrap` — seeded percentile bootstrap of any aggregate of per-sample
  rows (the same resamples for every model of a run: common random numbers), and
  the paired bootstrap p-value of a difference.
* :func:`paired_t_p` — two-sided paired t-test of per-sample losses (the
  Diebold-Mariano test without autocorrelation): do two models' mean squared (or
  absolute) errors on the same samples differ?

Example:
    >>> lo, hi = wilson_interval(90, 100)
    >>> round(lo, 4), round(hi, 4)
    (0.8256, 0.9448)
    >>> mcnemar_p(b=1, c=0), mcnemar_p(b=0, c=0), round(mcnemar_p(b=10, c=2), 4)
    (1.0, 1.0, 0.0386)
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

__all__ = ["Z95", "CONFIDENCE", "ALPHA", "wilson_interval", "mcnemar_p", "discordant", "paired_t_p", "Bootstrap"]

#: The two-sided 95% normal quantile the Wilson interval uses.
Z95 = 1.959964
#: The confidence level of every interval qsweep reports.
CONFIDENCE = 0.95
#: The significance level "distinguishable from the float model" uses (p < ALPHA).
ALPHA = 0.05
#: Resampled values held in memory at once by :class:`Bootstrap` (indices x columns).
_CHUNK = 2_000_000


def wilson_interval(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``k / n`` (``(nan, nan)`` when ``n`` is 0).

    ``center = (p + z²/2n) / (1 + z²/n)``, ``half = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²)``,
    clipped to [0, 1]; ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`` is the same.
    """
    if n <= 0:
        return float("nan"), float("nan")
    p = float(k) / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * np.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0))
    lo = 0.0 if k <= 0 else max(0.0, center - half)  # exact ends (the formula gives 1 - 2e-16 at k = n)
    hi = 1.0 if k >= n else min(1.0, center + half)
    return float(lo), float(hi)


def discordant(first_ok: np.ndarray, second_ok: np.ndarray) -> tuple[int, int]:
    """``(b, c)``: samples the first gets right and the second wrong, and the reverse."""
    a = np.asarray(first_ok, dtype=bool)
    b = np.asarray(second_ok, dtype=bool)
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value of the discordant counts ``b`` and ``c`` (see module docstring)."""
    from scipy.stats import binom

    n = int(b) + int(c)
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(int(b), int(c)), n, 0.5)))


def paired_t_p(first: np.ndarray, second: np.ndarray) -> float:
    """Two-sided paired t-test p-value that the mean of ``first - second`` is zero (scipy's ``ttest_rel``).

    Identical inputs give 1.0; a constant non-zero difference gives 0.0 (the test's limit).
    """
    from scipy.stats import ttest_rel

    a = np.asarray(first, dtype=np.float64).ravel()
    b = np.asarray(second, dtype=np.float64).ravel()
    d = a - b
    if not np.all(np.isfinite(d)):
        return float("nan")
    if np.ptp(d) <= 1e-12 * max(1.0, float(np.max(np.abs(d)))):  # a constant difference (up to rounding)
        return 1.0 if np.all(d == 0) else 0.0
    return float(ttest_rel(a, b).pvalue)


class Bootstrap:
    """A seeded percentile bootstrap over the rows (samples) of per-sample figures.

    The resampled index sets depend only on ``seed``, ``resamples`` and the number
    of samples, so every model of a run is resampled on the same index sets and a
    paired difference can be bootstrapped from two models' distributions.

    Args:
        resamples: how many resampled test sets.
        seed: the generator seed (the run's ``seed``).

    Example:
        >>> boot = Bootstrap(1000, seed=0)
        >>> x = np.arange(100, dtype=float)[:, None]
        >>> lo, hi = boot.interval(x, lambda r: r[..., 0].mean(-1))
        >>> bool(lo < 49.5 < hi)
        True
    """

    def __init__(self, resamples: int = 1000, seed: int = 0):
        self.resamples = int(resamples)
        self.seed = int(seed)

    def indices(self, n: int) -> Iterator[np.ndarray]:
        """The resampled index sets, in chunks of shape ``(b, n)`` (``resamples`` rows in all)."""
        rng = np.random.default_rng(self.seed)
        step = max(1, _CHUNK // max(n, 1))
        for start in range(0, self.resamples, step):
            yield rng.integers(0, n, size=(min(step, self.resamples - start), n))

    def distribution(self, rows: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``reduce`` of each resample of ``rows`` (shape ``(n, c)``): ``(resamples,)``.

        ``reduce`` maps an array ``(b, n, c)`` to ``(b,)`` (e.g. ``r[..., 0].mean(-1)``).
        """
        rows = np.asarray(rows)
        out = [np.asarray(reduce(rows[idx]), dtype=np.float64) for idx in self.indices(rows.shape[0])]
        return np.concatenate(out) if out else np.empty(0)

    def distribution_of(self, n: int, statistic: Callable[[np.ndarray], float]) -> np.ndarray:
        """``statistic(index_set)`` for each resample (for a figure that is no function of per-sample rows)."""
        return np.array([float(statistic(one)) for idx in self.indices(n) for one in idx], dtype=np.float64)

    @staticmethod
    def percentile_interval(dist: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """The percentile interval of a bootstrap distribution (NaN resamples ignored)."""
        d = np.asarray(dist, dtype=np.float64)
        d = d[~np.isnan(d)]
        if d.size == 0:
            return float("nan"), float("nan")
        tail = 100 * (1 - confidence) / 2
        with np.errstate(invalid="ignore"):
            lo, hi = np.percentile(d, [tail, 100 - tail])
        return float(lo), float(hi)

    def interval(self, rows: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray],
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
        """The percentile interval of ``reduce`` over the resamples of ``rows``."""
        return self.percentile_interval(self.distribution(rows, reduce), confidence)

    @staticmethod
    def paired_p(first: np.ndarray, second: np.ndarray) -> float:
        """Two-sided paired bootstrap p-value that two figures are equal, from their distributions on the
        same resamples: ``min(1, 2 * min(P[d <= 0], P[d >= 0]))`` with ``d = first - second``."""
        d = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
        d = d[~np.isnan(d)]
        if d.size == 0:
            return float("nan")
        return float(min(1.0, 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))))
