"""Activation-weighted 1-D k-means for ``kmeans_lut``: the LUT that minimises sum_ij H_jj (w_ij - lut[q_ij])^2.

Every weight ``w_ij`` (output channel ``i``, input column ``j`` in the
matricization of :mod:`quantizer.algorithms.stats`) is weighted by ``H_jj = sum_rows x_j^2``,
the energy of the input it multiplies: the diagonal part of the layer's output
error ``||(W - W_hat) X||^2``. (SqueezeLLM and coremltools' ``SKMPalettizer`` do
the same with other sensitivities.)

The clustering is quantizer's optimal 1-D approach with weights:

1. *atoms*: the distinct values with their summed weights (tensors up to
   :data:`EXACT_ATOM_VALUES` values), otherwise a weighted histogram of
   :data:`HISTOGRAM_BINS` equal-width bins, each kept as (total weight, weighted
   mean) -- exact sufficient statistics, so a cluster made of whole bins has the
   exact weighted centroid and error; only a boundary inside a bin (width
   ``range / 2^20``) is not representable. Built chunk by chunk (bounded memory).
2. the exact weighted optimum over the atoms
   (:func:`quantizer.kmeans.optimal_partition`, which takes weights) when cheap;
   otherwise its optimum over <= :data:`COARSE_ATOMS` merged atoms as the start of
   weighted Lloyd iterations on the atoms (prefix sums, ``O(k log m)`` each) run to
   convergence.
3. labels: the nearest centroid of every value.

>>> import numpy as np
>>> lut, idx = weighted_kmeans_lut(np.array([0.0, 0.1, 1.0, 1.1]), np.array([1.0, 3.0, 1.0, 1.0]), 1)
>>> np.round(lut, 3).tolist(), idx.tolist()
([0.075, 1.05], [0, 0, 1, 1])
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from quantizer.kmeans import kmeans_1d, optimal_partition

from .stats import LayerStats, matricize

__all__ = ["weighted_kmeans_1d", "weighted_kmeans_lut", "activation_weighted_lut", "element_weights",
           "weighted_error"]

#: Tensors up to this many values cluster their exact distinct values.
EXACT_ATOM_VALUES = 1 << 20
#: Histogram bins for larger tensors.
HISTOGRAM_BINS = 1 << 20
#: Work budget (m * k) of the exact DP over all atoms.
EXACT_DP_BUDGET = 1 << 19  # ~0.3 s of optimal_partition
#: Most merged atoms for the exact DP that starts Lloyd (fewer for large k: within the budget).
COARSE_ATOMS = 4096
MAX_ITER = 2000
_CHUNK = 1 << 20


def _check(values: np.ndarray, weights: np.ndarray) -> None:
    if values.size and not np.isfinite(values).all():
        raise ValueError("values must be finite")
    if weights.size and (not np.isfinite(weights).all() or weights.min() < 0):
        raise ValueError("weights must be finite and >= 0")


def _atoms(chunks: Iterable[tuple[np.ndarray, np.ndarray]], n: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """(sorted atom points, their weights > 0) from (values, weights) chunks."""
    if n <= EXACT_ATOM_VALUES or not hi > lo:
        vals, wts = zip(*[(np.asarray(v, np.float32).ravel(), np.asarray(w, np.float64).ravel()) for v, w in chunks])
        v, w = np.concatenate(vals), np.concatenate(wts)
        u, inv = np.unique(v, return_inverse=True)
        c = np.bincount(inv.ravel(), weights=w, minlength=u.size)
        keep = c > 0
        return u[keep].astype(np.float64), c[keep]
    nb = HISTOGRAM_BINS
    inv_w = nb / (hi - lo)
    c = np.zeros(nb)
    s = np.zeros(nb)
    for v, w in chunks:
        v = np.asarray(v, np.float64).ravel()
        w = np.broadcast_to(np.asarray(w, np.float64), v.shape).ravel()
        idx = ((v - lo) * inv_w).astype(np.int64)
        np.clip(idx, 0, nb - 1, out=idx)
        c += np.bincount(idx, weights=w, minlength=nb)
        s += np.bincount(idx, weights=w * v, minlength=nb)
    keep = c > 0
    pts = s[keep] / c[keep]
    return np.maximum.accumulate(pts), c[keep]  # bin means are sorted up to rounding


def _cluster(a: np.ndarray, c: np.ndarray, k: int, max_iter: int) -> np.ndarray:
    """Sorted centroids (<= k) of a weighted 1-D k-means over atoms ``a`` (sorted) with weights ``c``."""
    m = a.size
    if m <= k:
        return a.copy()
    P0 = np.concatenate(([0.0], np.cumsum(c)))
    P1 = np.concatenate(([0.0], np.cumsum(c * (a - a[m // 2]))))
    shift = a[m // 2]

    def centroids(starts: np.ndarray) -> np.ndarray:
        ends = np.concatenate((starts[1:], [m]))
        wsum = P0[ends] - P0[starts]
        return np.where(wsum > 0, (P1[ends] - P1[starts]) / np.where(wsum > 0, wsum, 1.0), np.nan) + shift

    if m * k <= EXACT_DP_BUDGET:
        cent = centroids(optimal_partition(a, c, k))
        return cent[np.isfinite(cent)]
    # exact optimum over merged atoms (equal-weight groups) as the start
    coarse = int(min(COARSE_ATOMS, max(4 * k, EXACT_DP_BUDGET // k)))
    half = max(2, coarse // 2)  # equal-weight cuts (the dense centre) and equal-width cuts (the tails)
    by_weight = np.searchsorted(P0[1:], np.linspace(0, P0[-1], half + 1)[1:-1], side="right")
    by_width = np.searchsorted(a, np.linspace(a[0], a[-1], half + 1)[1:-1], side="left")
    edges = np.unique(np.concatenate((by_weight, by_width)))
    starts_c = np.concatenate(([0], edges[(edges > 0) & (edges < m)]))
    ends_c = np.concatenate((starts_c[1:], [m]))
    wc = P0[ends_c] - P0[starts_c]
    mc = (P1[ends_c] - P1[starts_c]) / wc + shift
    if mc.size > k:
        cut = optimal_partition(mc, wc, k)
        cent = centroids(starts_c[cut])
    else:
        cent = mc
    cent = np.sort(cent[np.isfinite(cent)])
    prev = None
    for _ in range(max_iter):
        b = np.searchsorted(a, 0.5 * (cent[:-1] + cent[1:]), side="left")
        if prev is not None and np.array_equal(b, prev):
            break
        prev = b
        new = centroids(np.concatenate(([0], b)))
        cent = np.where(np.isfinite(new), new, cent)  # an emptied cluster keeps its centroid
        cent.sort()
    return np.unique(cent)


def _labels(values: np.ndarray, cent: np.ndarray) -> np.ndarray:
    """Nearest centroid of every value (ties to the lower one), in the smallest unsigned dtype."""
    mids = 0.5 * (cent[:-1] + cent[1:])
    dtype = np.uint8 if cent.size <= 256 else np.uint16 if cent.size <= 65536 else np.int64
    flat = values.ravel()
    out = np.empty(flat.size, dtype=dtype)
    for a in range(0, flat.size, _CHUNK):
        out[a:a + _CHUNK] = np.searchsorted(mids, flat[a:a + _CHUNK].astype(np.float64), side="left")
    return out


def weighted_kmeans_1d(values: np.ndarray, weights: np.ndarray, k: int, *,
                       max_iter: int = MAX_ITER) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``values`` into at most ``k`` clusters minimising ``sum weights * (v - centroid)^2``.

    Returns ``(centroids, labels)``: sorted float64 centroids (the weighted means of their
    clusters) and each value's nearest centroid. Values of weight 0 do not move centroids
    (they are labelled by proximity); with every weight 0 this is plain k-means.
    """
    v = np.asarray(values, dtype=np.float32).ravel()
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), np.asarray(values).shape).ravel()
    _check(v, w)
    if v.size == 0:
        return np.zeros(0), np.zeros(0, np.uint8)
    if not w.sum() > 0:
        return kmeans_1d(v, k)
    chunks = ((v[a:a + _CHUNK], w[a:a + _CHUNK]) for a in range(0, v.size, _CHUNK))
    a, c = _atoms(chunks, v.size, float(v.min()), float(v.max()))
    cent = _cluster(a, c, k, max_iter)
    return cent, _labels(v, cent)


def _lut(cent: np.ndarray, labels: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    k = 1 << nbits
    lut = np.empty(k)
    lut[: cent.size] = cent
    lut[cent.size:] = cent[-1] if cent.size else 0.0
    return lut, labels.astype(np.uint8)


def weighted_kmeans_lut(values: np.ndarray, weights: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """A weighted k-means LUT: ``(lut float64 [2^nbits], indices uint8)``, trailing unused entries
    repeating the largest centroid (as :func:`quantizer.kmeans.kmeans_lut`)."""
    cent, labels = weighted_kmeans_1d(values, weights, 1 << nbits)
    return _lut(cent, labels, nbits)


def element_weights(weights: np.ndarray, stats: LayerStats | np.ndarray) -> np.ndarray:
    """``H_jj`` for every element of a stored weight tensor (float64, its shape): the weight of
    ``w_ij`` is the energy of input column ``j`` of its group. ``stats``: LayerStats or
    ``diag(H)`` as ``(G, C)`` / ``(C,)``."""
    d = stats.diag() if isinstance(stats, LayerStats) else np.asarray(stats, np.float64)
    d = d[None] if d.ndim == 1 else d
    w = np.asarray(weights)
    wm = matricize(w, d.shape[0])
    return np.broadcast_to(d[:, None, :], wm.shape).reshape(w.shape).astype(np.float64)


def activation_weighted_lut(weights: np.ndarray, stats: LayerStats | np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """The activation-weighted k-means LUT of a stored weight tensor: ``(lut, indices)`` as
    :func:`quantizer.kmeans.kmeans_lut` returns them (indices: nearest entry, row-major).
    Element weights are never materialised for large tensors (chunks of rows)."""
    d = stats.diag() if isinstance(stats, LayerStats) else np.asarray(stats, np.float64)
    d = d[None] if d.ndim == 1 else d
    w = np.ascontiguousarray(weights, dtype=np.float32)
    wm = matricize(w, d.shape[0])
    _check(w, d)
    if not d.sum() > 0:
        cent, labels = kmeans_1d(w, 1 << nbits)
        return _lut(cent, labels, nbits)
    g, r, c = wm.shape
    step = max(1, _CHUNK // c)

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for gi in range(g):
            for a in range(0, r, step):
                blk = wm[gi, a:a + step]
                yield blk, np.broadcast_to(d[gi][None, :], blk.shape)

    pts, cw = _atoms(chunks(), w.size, float(w.min()), float(w.max()))
    cent = _cluster(pts, cw, 1 << nbits, MAX_ITER)
    return _lut(cent, _labels(w, cent), nbits)


def weighted_error(weights: np.ndarray, dequantized: np.ndarray, stats: LayerStats | np.ndarray) -> float:
    """``sum_ij H_jj (w_ij - w_hat_ij)^2``: the objective activation-weighted k-means minimises."""
    e = (np.asarray(weights, np.float64) - np.asarray(dequantized, np.float64)) ** 2
    return float((e * element_weights(weights, stats)).sum())
