"""Racing: stop evaluating a candidate on the test set as soon as a finished trial dominates it.

Every candidate sees the test samples in one fixed order (:class:`SampleOrder`, seeded with the
run's ``seed``), in chunks of ``evaluation.chunk`` samples. After each chunk but the last, the
candidate's *reach* -- the best final figure it can still get -- is computed from the samples
seen so far (:class:`Bounds`), and the candidate stops when a fully evaluated trial of the study
dominates it (:func:`dominator`): it is no larger and its figure is at least the reach.

``exact`` (the default): the reach is the figure the candidate would get if every remaining
sample went its way (right, cosine 1, zero error): no completion of the evaluation could put it
on the Pareto front or make it the smallest model within a drop, so both are identical to
``racing=off`` by construction. Ties follow :func:`harness.pareto.front`: of two trials with the
same size and figure the lower trial number represents them, so a candidate stops on a tie only
when the dominating trial is smaller or has the lower number. Metrics without such a best case
per sample (``snr_db``, ``psnr_db``: no upper end; ``metric.fn``: no per-sample rows) never stop.

``confident``: the reach is an upper confidence bound on the final figure, at level
``(1 - confidence) / looks`` per look (Bonferroni over the looks). For proportions (accuracy,
top-k accuracy, agreement) it bounds the hits the unseen samples add with the stratified estimator
of the order's strata: within each stratum the seen samples are a simple random sample of it, the
unseen hits of a stratum are estimated from its seen rate, and the bound is the estimate plus
``z`` times the standard error of the sum (finite-population correction per stratum, each rate
smoothed to ``(k + 1) / (n + 2)`` so that a stratum seen all right or all wrong still has a
spread; a stratum not seen yet counts all its samples as hits). This is the normal approximation:
approximate, documented as such, and measured (README: Racing): over 20 seeded orders of the default
grid on each of seven zoo models, 3 wrong stops of 8 138 (a stop below the final figure) and no
front changed. Other sample metrics use
the normal (t) approximation of the mean with the finite-population correction, one bound per column
at the same split level. Either bound is never looser than the exact one. (A hypergeometric bound
per stratum, exact in distribution but split over strata too, needed 57% of ``off``'s sample
evaluations on crepe_tiny where this one needs 46%.)

The order: the float model's per-sample outcome sorts the samples into strata, hardest first --
the samples it gets wrong, then those it gets right by increasing margin (top-1 minus top-2
class score, or distance from the binary threshold), in :data:`MARGIN_BINS` quantile bins; each
stratum in a seeded random order. The first chunk draws from every stratum in proportion (so a
confident bound has every stratum's rate from the start), then the strata follow hardest first:
a candidate accumulates its losses early, which is what lets an exact stop come early. Measured
on the default grid of five zoo models (recorded per-sample rows, every variant raced): a plain
shuffle needs 80% of racing=off's sample evaluations on crepe_tiny, this order 59%; chunks of 32
beat 64, one proportional chunk beats two, five margin bins beat three (README: Racing). Both
modes use this order: drawing the first quarter in proportion helps a confident race on crepe_tiny
(41% instead of 46% of ``off``) but costs it on the others (digits_mlp 37% instead of 23%,
mtcnn_onet 48% instead of 41%).
Metrics that are not proportions use one stratum: a plain seeded shuffle.

Example:
    >>> import numpy as np
    >>> dominator(size=100, number=5, reach=0.80, maximize=True,
    ...           finished=[Finished(number=2, size=90, value=0.85), Finished(number=3, size=120, value=0.99)])
    Finished(number=2, size=90, value=0.85)
    >>> dominator(size=100, number=5, reach=0.80, maximize=True, finished=[Finished(7, 100, 0.80)]) is None
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from harness.config import Racing
from harness.rundir import DOMINATED_COLUMN as DOMINATED_ATTR
from harness.rundir import DROP_BOUND_COLUMN as DROP_BOUND_ATTR
from harness.rundir import EVALUATED_COLUMN as EVALUATED_ATTR
from harness.rundir import REACH_COLUMN as REACH_ATTR

__all__ = ["Racing", "SampleOrder", "Bounds", "Finished", "Stop", "chunk_size", "difficulty_strata", "dominator", "finished_trials", "EVALUATED_ATTR", "DOMINATED_ATTR", "REACH_ATTR", "DROP_BOUND_ATTR"]

#: Quantile bins of the margin among the samples the float model gets right (strata of the order).
MARGIN_BINS = 5
#: Chunks at the start of the order drawn from every stratum in proportion.
PHASE_CHUNKS = 1
#: The first look comes after half a chunk when that is at least this many samples (see :meth:`SampleOrder.build`).
FIRST_LOOK_MIN = 8
#: Relative slack added to an exact reach computed in floating point from mixed rows (never a proportion).
_SLACK = 1e-9


def chunk_size(n: int, chunk: int | None = None) -> int:
    """Samples per chunk: ``chunk``, or N/64 rounded to a multiple of 16, within 16..256 (never above N).

    Measured on crepe_tiny's default grid (1 024 samples, exact): chunks of 16 run 59% of ``off``'s sample
    evaluations, chunks of 32 60.2%, 64 more; the front is identical at each.
    """
    if chunk is None:
        chunk = min(256, max(16, 16 * round(n / 64 / 16)))
    return max(1, min(int(chunk), int(n)))


def _margin(metric: Any, float_outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """How far each sample's float prediction is from changing (None when the output has no scores)."""
    head = metric.head
    if head.output is None or head.kind == "labels":
        return None
    v = head.values(float_outputs)
    if head.kind == "binary":
        return np.abs(v[:, 0] - head.threshold)
    if v.shape[1] < 2:
        return None
    top = np.partition(v, v.shape[1] - 2, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def difficulty_strata(metric: Any, reference_rows: np.ndarray | None,
                      float_outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Stratum of every sample, 0 the hardest (see module docstring); all 0 for a metric that is no proportion."""
    n = next(iter(float_outputs.values())).shape[0]
    if not getattr(metric, "proportion", False) or reference_rows is None:
        return np.zeros(n, dtype=np.int64)
    wrong = np.asarray(reference_rows)[:, 0] < 0.5
    strata = np.zeros(n, dtype=np.int64)
    margin = _margin(metric, float_outputs)
    right = ~wrong
    offset = 1 if wrong.any() else 0
    if margin is not None and right.sum() >= MARGIN_BINS:
        edges = np.quantile(margin[right], np.linspace(0, 1, MARGIN_BINS + 1)[1:-1])
        strata[right] = offset + np.searchsorted(edges, margin[right], side="right")
    else:
        strata[right] = offset
    _, strata = np.unique(strata, return_inverse=True)  # consecutive ids, hardest first
    return strata.astype(np.int64)


@dataclass(frozen=True)
class SampleOrder:
    """The fixed order every candidate sees the test samples in, and its chunks.

    Attributes:
        order: position -> sample index (a permutation of ``range(n)``).
        strata: stratum of each sample (by sample index), 0 the hardest.
        ends: the number of samples seen after each chunk (the last is ``n``).
        phase: the first positions drawn from every stratum in proportion.
        chunk: samples per chunk (the first look may come after half of one, :data:`FIRST_LOOK_MIN`).
    """

    order: np.ndarray
    strata: np.ndarray
    ends: tuple[int, ...]
    phase: int
    chunk: int = 0

    @classmethod
    def build(cls, strata: np.ndarray, seed: int, chunk: int, phase: int | None = None) -> "SampleOrder":
        """Strata in seeded random order each; the first ``phase`` samples (default :data:`PHASE_CHUNKS`
        chunks) proportional, then the strata hardest first.

        Looks come after every ``chunk`` samples, and a first one after half a chunk when that is at least
        :data:`FIRST_LOOK_MIN` samples: a candidate far below the front (the usual 1-3-bit settings) stops
        there. Measured on the default grid: minilm_l6 (cosine, 1 024 samples) confident 30.3% of ``off``'s
        sample evaluations with looks every 16 (7 front members in full, the 17 other plans after one
        chunk each), 29.8% with the first look at 8 (15 of them stop there); the seven proportion zoo models' replays move by at
        most 0.2 points, with no wrong stop or front change added (README: Racing)."""
        strata = np.asarray(strata, dtype=np.int64)
        n = strata.size
        rng = np.random.default_rng([int(seed), 0x5ace])
        groups = [rng.permutation(np.nonzero(strata == s)[0]) for s in range(int(strata.max()) + 1)]
        sizes = np.array([g.size for g in groups], dtype=np.float64)
        phase = min(n, PHASE_CHUNKS * chunk if phase is None else int(phase)) if len(groups) > 1 else 0
        taken = np.zeros(len(groups), dtype=np.int64)
        head = []
        for i in range(phase):  # the stratum furthest behind its proportional share (largest remainder)
            behind = (i + 1) * sizes / n - taken
            behind[taken >= sizes] = -np.inf
            s = int(np.argmax(behind))
            head.append(groups[s][taken[s]])
            taken[s] += 1
        order = np.concatenate([np.asarray(head, dtype=np.int64)] + [g[t:] for g, t in zip(groups, taken)])
        first = (chunk // 2,) if chunk // 2 >= FIRST_LOOK_MIN and chunk // 2 < n else ()
        ends = first + tuple(range(chunk, n, chunk)) + (n,)
        return cls(order.astype(np.int64), strata, ends, phase, int(chunk))

    @property
    def n(self) -> int:
        return int(self.order.size)

    @property
    def looks(self) -> int:
        """How many times a candidate may be stopped (after every chunk but the last)."""
        return len(self.ends) - 1

    @property
    def n_strata(self) -> int:
        return int(self.strata.max()) + 1 if self.strata.size else 1

    def chunks(self) -> list[np.ndarray]:
        """The sample indices of each chunk, in order."""
        starts = (0,) + self.ends[:-1]
        return [self.order[a:b] for a, b in zip(starts, self.ends)]

    def describe(self) -> dict[str, Any]:
        """For summary.json: chunk ends, strata sizes, the proportional phase."""
        return {"chunks": len(self.ends), "chunk": self.chunk, "first_look": self.ends[0], "strata": np.bincount(self.strata).tolist(),
                "proportional_first": self.phase}


@dataclass(frozen=True)
class Finished:
    """A fully evaluated trial of the study: a possible dominator."""

    number: int
    size: int
    value: float


@dataclass(frozen=True)
class Stop:
    """Why a candidate stopped: the trial dominating it, its reach, the samples it saw."""

    dominated_by: Finished
    reach: float
    seen: int


def dominator(size: int, number: int, reach: float | None, finished: Iterable[Finished], *,
              maximize: bool) -> Finished | None:
    """A finished trial that dominates a candidate whose final figure is at most ``reach`` (in its direction).

    It is no larger and at least as good as ``reach``; on equal size it must be strictly better, or
    equal with a lower trial number (the front's tie-break, :func:`harness.pareto.front`). Of several,
    the best figure, then the smallest. None when ``reach`` is None (no bound) or nothing dominates.
    """
    if reach is None or math.isnan(reach):
        return None
    sign = 1.0 if maximize else -1.0
    g = sign * reach
    hits = []
    for f in finished:
        if f.number == number:
            continue
        gd = sign * f.value
        if (f.size < size and gd >= g) or (f.size == size and (gd > g or (gd == g and f.number < number))):
            hits.append(f)
    if not hits:
        return None
    return max(hits, key=lambda f: (sign * f.value, -f.size, -f.number))


def finished_trials(trials: Sequence[Any], n_samples: int) -> list[Finished]:
    """The dominating set: COMPLETE trials of the study that evaluated every sample themselves
    (not a reused result), with a finite size and figure."""
    out = []
    for t in trials:
        if t.state.name != "COMPLETE" or t.values is None or len(t.values) < 2:
            continue
        attrs = t.user_attrs
        if attrs.get("reused_from") is not None:
            continue
        seen = attrs.get(EVALUATED_ATTR)
        if seen is not None and int(seen) != int(n_samples):
            continue
        size, value = float(t.values[0]), float(t.values[1])
        if math.isfinite(size) and not math.isnan(value):
            out.append(Finished(int(t.number), int(size), value))
    return out


class Bounds:
    """The reach of a candidate from the rows of the samples it has seen (see module docstring).

    Args:
        metric: the task metric (:class:`harness.scores.TaskMetric`).
        order: the sample order.
        labels: the test labels (the label column of regression rows), or None.
        mode: :class:`~harness.config.Racing`.
        confidence: of a ``confident`` bound.
    """

    def __init__(self, metric: Any, order: SampleOrder, labels: np.ndarray | None, mode: Racing,
                 confidence: float):
        from harness.scores import SampleMetric

        self.metric, self.order, self.mode, self.confidence = metric, order, Racing(mode), float(confidence)
        self.labels = None if labels is None else np.asarray(labels)
        self.sample = isinstance(metric, SampleMetric)
        self.proportion = self.sample and bool(getattr(metric, "proportion", False))
        self.best = self._best_case() if self.sample else None
        self.sizes = np.bincount(order.strata, minlength=order.n_strata)
        self.pos_strata = order.strata[order.order]  # stratum of each position

    @property
    def stops(self) -> bool:
        """Whether a candidate can stop at all (not with racing off, a user metric, or an exact SNR)."""
        if self.mode == Racing.off or self.best is None:
            return False
        return self.mode == Racing.confident or all(math.isfinite(b) for b in self.best.values())

    def _best_case(self) -> dict[int, float] | None:
        """Per row column, the best value one sample can have (column -> value); None: unknown metric."""
        from harness.scores import Cosine, Fidelity, Regression

        m = self.metric
        self.label_column = isinstance(m, Regression)  # rows are (loss, label): the labels are known
        if self.proportion or isinstance(m, Cosine):
            return {0: 1.0}
        if isinstance(m, Fidelity):
            return {j: math.inf for j in range(len(m.outputs))}
        if isinstance(m, Regression):
            return {0: 0.0}
        return None

    def _alpha(self, tests: int) -> float:
        return (1.0 - self.confidence) / max(1, tests * max(1, self.order.looks))

    def reach(self, seen: np.ndarray) -> float | None:
        """The best final figure a candidate can still get, from the rows of its first ``len(seen)`` positions."""
        if self.mode == Racing.off or self.best is None:
            return None
        seen = np.asarray(seen, dtype=np.float64)
        n, total = seen.shape[0], self.order.n
        if n >= total:
            return self.metric.aggregate(seen)
        if self.proportion:
            k = int(round(float(seen[:, 0].sum())))
            count = k + (total - n)
            if self.mode == Racing.confident:
                count = min(count, self._proportion_ucb(seen[:, 0], n))  # a float bound of the count
            return count / total
        rest = self._rest_rows(seen, n)
        if rest is None:
            return None
        value = self.metric.aggregate(np.concatenate([seen, rest], axis=0))
        if not math.isfinite(value):
            return value
        slack = _SLACK * max(1.0, abs(value))
        return value + slack if self.metric.maximize else value - slack

    def _proportion_ucb(self, hits: np.ndarray, n: int) -> float:
        """Seen hits plus the stratified normal upper bound of the unseen ones (module docstring)."""
        from scipy.stats import norm

        strata = self.pos_strata[:n]
        seen_n = np.bincount(strata, minlength=self.sizes.size).astype(np.float64)
        seen_k = np.bincount(strata, weights=hits, minlength=self.sizes.size)
        rest = self.sizes - seen_n
        sampled = seen_n > 0
        mean = float(seen_k.sum() + rest[~sampled].sum())
        r, ns, ks, size = rest[sampled], seen_n[sampled], seen_k[sampled], self.sizes[sampled].astype(np.float64)
        p = (ks + 1.0) / (ns + 2.0)
        mean += float((r * ks / ns).sum())
        var = float((size * r * p * (1.0 - p) / ns * size / np.maximum(1.0, size - 1.0)).sum())
        return mean + float(norm.ppf(1.0 - self._alpha(1))) * math.sqrt(var)

    def _rest_rows(self, seen: np.ndarray, n: int) -> np.ndarray | None:
        """Rows standing in for the unseen samples: each column's best case (exact) or its confidence
        bound (confident; never past the best case). None when a column has no finite bound."""
        from scipy.stats import t as student

        total = self.order.n
        rest = np.empty((total - n, seen.shape[1]), dtype=np.float64)
        if self.label_column:
            rest[:, 1] = np.asarray(self.labels, dtype=np.float64)[self.order.order[n:]]
        alpha = self._alpha(len(self.best))
        fpc = math.sqrt((total - n) / max(1, total - 1))
        for j, best in self.best.items():
            value, col = best, seen[:, j]
            if self.mode == Racing.confident and n >= 2 and np.all(np.isfinite(col)):
                half = float(student.ppf(1 - alpha, n - 1)) * float(np.std(col, ddof=1)) / math.sqrt(n) * fpc
                mean = float(col.mean())
                value = min(best, mean + half) if best >= mean else max(best, mean - half)
            if math.isinf(value):
                return None
            rest[:, j] = value
        return rest
