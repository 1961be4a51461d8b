"""Exact 1-D k-means for lookup-table (palette) quantization.

coremltools builds its k-means LUT with scikit-learn's ``KMeans`` (k-means++,
``tol=1e-2``, one init), which treats a weight tensor as N points in one
dimension and costs O(N K) per iteration. In one dimension clusters are
contiguous runs of the *sorted* values, so Lloyd's algorithm can run on the
sorted array with prefix sums: an iteration is K binary searches for the
cluster boundaries plus O(K) arithmetic, independent of N. We sort once
(O(N log N)), run Lloyd's to exact convergence (the partition stops changing)
from two deterministic initialisations -- scikit-learn's greedy k-means++ run
on a few thousand weighted atoms that summarise the sorted values, and a
companded grid with centroid density proportional to p(x)**(1/3) -- refill
empty clusters by splitting the cluster with the largest error, and keep the
better result. Converging fully (scikit-learn stops at ``tol=1e-2``) is what
makes the error no higher than coremltools' on the tensors we measured.

>>> import numpy as np
>>> lut, idx = kmeans_lut(np.array([0.0, 0.1, 1.0, 1.1], np.float32), 1)
>>> np.round(lut, 3).tolist(), idx.tolist()
([0.05, 1.05], [0, 0, 1, 1])
"""
from __future__ import annotations

import numpy as np

__all__ = ["kmeans_1d", "kmeans_lut"]

#: Lloyd iterations per initialisation (each costs O(K log N); convergence is usually far earlier).
MAX_ITER = 2000


class _Sorted:
    """Sorted values with prefix sums, for O(1) cluster statistics of any index range."""

    def __init__(self, values: np.ndarray) -> None:
        x = np.sort(np.asarray(values, dtype=np.float32).ravel()).astype(np.float64)
        self.n = x.size
        self.shift = float(x[self.n // 2]) if self.n else 0.0  # centring keeps the sums well conditioned
        xc = x - self.shift
        self.x = x
        self.p1 = np.concatenate(([0.0], np.cumsum(xc)))
        self.p2 = np.concatenate(([0.0], np.cumsum(xc * xc)))

    def stats(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, mean, sse) of the index ranges [starts, ends)."""
        cnt = (ends - starts).astype(np.float64)
        s1 = self.p1[ends] - self.p1[starts]
        s2 = self.p2[ends] - self.p2[starts]
        safe = np.maximum(cnt, 1.0)
        mean = s1 / safe
        sse = np.maximum(s2 - s1 * mean, 0.0)
        return cnt, mean + self.shift, sse

    def split_points(self, centroids: np.ndarray) -> np.ndarray:
        """Start index of every cluster for sorted centroids (nearest-centroid partition)."""
        bounds = 0.5 * (centroids[:-1] + centroids[1:])
        return np.concatenate(([0], np.searchsorted(self.x, bounds, side="left")))

    def ranges(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return starts, np.concatenate((starts[1:], [self.n]))


def _lloyd(data: _Sorted, centroids: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's algorithm to convergence; returns (cluster starts, centroids)."""
    k = centroids.size
    c = np.sort(centroids)
    starts = data.split_points(c)
    for _ in range(max_iter):
        s, e = data.ranges(starts)
        cnt, mean, _ = data.stats(s, e)
        c = np.where(cnt > 0, mean, c)
        c = np.sort(c)
        new = data.split_points(c)
        if np.array_equal(new, starts):
            break
        starts = new
    # Refill empty clusters: split the cluster with the largest error at its mean.
    for _ in range(k):
        s, e = data.ranges(starts)
        cnt, mean, sse = data.stats(s, e)
        empty = np.flatnonzero(cnt == 0)
        if empty.size == 0:
            break
        splittable = (cnt >= 2) & (data.x[np.maximum(e - 1, 0)] > data.x[np.minimum(s, data.n - 1)])
        if not splittable.any():
            break
        j = int(np.argmax(np.where(splittable, sse, -1.0)))
        lo, hi = int(s[j]), int(e[j])
        cut = lo + int(np.searchsorted(data.x[lo:hi], mean[j], side="right"))
        cut = min(max(cut, lo + 1), hi - 1)
        _, m_l, _ = data.stats(np.array([lo]), np.array([cut]))
        _, m_r, _ = data.stats(np.array([cut]), np.array([hi]))
        c = np.where(cnt > 0, mean, c)
        c[j] = m_l[0]
        c[empty[0]] = m_r[0]
        return _lloyd(data, c, max_iter)  # at most k nested restarts: each adds a used cluster
    return starts, c


def _sse(data: _Sorted, starts: np.ndarray) -> float:
    s, e = data.ranges(starts)
    return float(data.stats(s, e)[2].sum())


def _atoms(data: _Sorted, max_atoms: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Summarise the sorted values as at most ``max_atoms`` runs (mean, count).

    Run boundaries are the union of an equal-width grid (resolves sparse tails
    and outliers) and equal-count quantiles (resolves the dense centre).
    """
    x = data.x
    half = max_atoms // 2
    grid = np.searchsorted(x, np.linspace(x[0], x[-1], half + 1)[1:-1], side="left")
    quant = (np.arange(1, half) * data.n) // half
    quant = np.searchsorted(x, x[quant], side="left")  # never split equal values
    starts = np.unique(np.concatenate(([0], grid, quant)))
    starts = starts[starts < data.n]
    cnt, mean, _ = data.stats(*data.ranges(starts))
    return mean, cnt


def _init_kmeanspp(data: _Sorted, k: int, seed: int = 0) -> np.ndarray:
    """Greedy k-means++ seeding (as scikit-learn does it) on weighted atoms: deterministic."""
    points, weights = _atoms(data)
    rng = np.random.default_rng(seed)
    trials = 2 + int(np.log(k))
    c = np.empty(k)
    c[0] = points[int(np.searchsorted(np.cumsum(weights), rng.random() * weights.sum()))]
    d2 = (points - c[0]) ** 2
    for m in range(1, k):
        pot = np.cumsum(weights * d2)
        if pot[-1] <= 0.0:  # every atom already coincides with a centroid
            c[m:] = c[m - 1]
            break
        cand = np.minimum(np.searchsorted(pot, rng.random(trials) * pot[-1]), points.size - 1)
        nd = np.minimum(d2[None, :], (points[None, :] - points[cand][:, None]) ** 2)
        best = int(np.argmin(nd @ weights))
        c[m] = points[cand[best]]
        d2 = nd[best]
    return c


def _init_companded(data: _Sorted, k: int) -> np.ndarray:
    """Centroid density proportional to p(x)**(1/3): the high-resolution optimum for MSE."""
    lo, hi = data.x[0], data.x[-1]
    bins = int(min(4096, max(16, data.n // 8)))
    counts, edges = np.histogram(data.x, bins=bins, range=(lo, hi))
    dens = np.cbrt(counts.astype(np.float64))
    cdf = np.concatenate(([0.0], np.cumsum(dens)))
    cdf /= cdf[-1]
    return np.interp((np.arange(k) + 0.5) / k, cdf, edges)


def kmeans_1d(values: np.ndarray, k: int, *, max_iter: int = MAX_ITER) -> tuple[np.ndarray, np.ndarray]:
    """Cluster 1-D ``values`` into at most ``k`` clusters minimising squared error.

    Returns ``(centroids, labels)``: ``centroids`` sorted float64 of length
    ``min(k, number of distinct values)`` (each the mean of its cluster) and
    ``labels`` (int64, same length as ``values``) indexing them. With at most
    ``k`` distinct values the clustering is exact (zero error).
    """
    flat = np.asarray(values, dtype=np.float32).ravel()
    if flat.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    data = _Sorted(flat)
    distinct = 1 + int(np.count_nonzero(data.x[1:] != data.x[:-1]))
    if distinct <= k:
        uniq = np.unique(data.x)
        return uniq, np.searchsorted(uniq, flat.astype(np.float64)).astype(np.int64)
    best = None
    for init in (_init_kmeanspp, _init_companded):
        starts, _ = _lloyd(data, init(data, k), max_iter)
        err = _sse(data, starts)
        if best is None or err < best[0]:
            best = (err, starts)
    starts = best[1]
    s, e = data.ranges(starts)
    cnt, mean, _ = data.stats(s, e)
    used = cnt > 0
    centroids = mean[used]
    # Label by the partition itself (split values), which is what the centroids are the means of.
    split_vals = data.x[s[used][1:]]
    labels = np.searchsorted(split_vals, flat.astype(np.float64), side="right").astype(np.int64)
    return centroids, labels


def kmeans_lut(values: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means lookup table for ``nbits``-bit palettization.

    Returns ``(lut, indices)``: ``lut`` float64 of exactly ``2**nbits`` entries
    (unused trailing entries repeat the largest centroid, so the table stays
    sorted and finite) and ``indices`` uint8 of ``values.size``.
    """
    k = 1 << nbits
    centroids, labels = kmeans_1d(values, k)
    lut = np.empty(k, dtype=np.float64)
    if centroids.size == 0:
        lut[:] = 0.0
    else:
        lut[: centroids.size] = centroids
        lut[centroids.size :] = centroids[-1]
    return lut, labels.astype(np.uint8)
