"""1-D k-means for lookup-table (palette) quantization: exact where cheap, fast always.

coremltools builds its k-means LUT with scikit-learn's ``KMeans`` (k-means++,
``tol=1e-2``, one init), treating a weight tensor as N points: O(N K) per
iteration, ~40 s for 2 M weights at 8 bits. In one dimension clusters are
contiguous runs of the *sorted* values, which allows two much faster methods:

* **Exact optimum** (small tensors: few distinct values): dynamic programming
  over the distinct values, ``D[k][i] = min_j D[k-1][j] + cost(j, i)`` with
  cluster costs from prefix sums. The optimal split point is monotone in both
  ``i`` and ``k`` (the cost is concave Monge), which bounds the candidates;
  each DP layer is evaluated vectorised, either over a candidate window or by
  divide and conquer, whichever is smaller. The result is the global optimum,
  so its error can be no higher than scikit-learn's.
* **Lloyd on sorted values** (large tensors): an iteration is K binary searches
  plus O(K) arithmetic on prefix sums, independent of N. Lloyd runs to exact
  convergence (the partition stops changing; scikit-learn stops at
  ``tol=1e-2``) from three deterministic starts -- scikit-learn's greedy
  k-means++ run on a few thousand weighted atoms summarising the values, a
  companded grid with centroid density ~ p(x)**(1/3), and (k <= 64) the exact
  DP optimum over coarse atoms -- empty clusters are refilled by splitting the cluster
  with the largest error, and the best result is kept.

>>> import numpy as np
>>> lut, idx = kmeans_lut(np.array([0.0, 0.1, 1.0, 1.1], np.float32), 1)
>>> np.round(lut, 3).tolist(), idx.tolist()
([0.05, 1.05], [0, 0, 1, 1])
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["kmeans_1d", "kmeans_lut", "optimal_partition"]

#: Lloyd iterations per start (each costs O(K log N); convergence is usually far earlier).
MAX_ITER = 2000
#: Work (candidate evaluations) we allow the exact DP before switching to Lloyd.
EXACT_BUDGET = 600_000
#: Work allowed for the banded exact DP (k * (m - k + 1)**2), used when m is close to k.
BAND_BUDGET = 4_000_000
#: Largest k for which Lloyd also starts from the exact optimum over coarse atoms
#: (for larger k that start converges slowly and rarely wins).
COARSE_DP_MAX_K = 64


_CHUNK = 1 << 20  # elements per block in full passes over the values (bounds temporaries)


class _Sorted:
    """Sorted values (float32) with blocked float64 prefix sums, for O(1) cluster sums of
    any index range: the sum up to index i is a block prefix plus at most ``B - 1``
    values read on demand. Memory: about 4 bytes per value (plus 2 * 8 / B)."""

    B = 64  # values per prefix-sum block

    def __init__(self, values: np.ndarray) -> None:
        self.x = x = np.sort(np.asarray(values, dtype=np.float32).ravel())
        self.n = n = x.size
        self.shift = float(x[n // 2]) if n else 0.0  # centring keeps the sums well conditioned
        nb = -(-n // self.B)
        s1 = np.zeros(nb)
        s2 = np.zeros(nb)
        step = (_CHUNK // self.B) * self.B
        for a in range(0, n, step):
            c = x[a : a + step].astype(np.float64)
            c -= self.shift
            pad = -c.size % self.B
            if pad:
                c = np.concatenate((c, np.zeros(pad)))
            blocks = c.reshape(-1, self.B)
            s1[a // self.B : a // self.B + blocks.shape[0]] = blocks.sum(axis=1)
            s2[a // self.B : a // self.B + blocks.shape[0]] = np.einsum("ij,ij->i", blocks, blocks)
        self._p1 = np.concatenate(([0.0], np.cumsum(s1)))
        self._p2 = np.concatenate(([0.0], np.cumsum(s2)))
        self.total_sq = float(self._p2[-1])
        self._offs = np.arange(self.B)

    def prefix(self, idx: np.ndarray, squares: bool = False) -> np.ndarray:
        """Sum of the first ``idx`` centred values (or of their squares), for an index array."""
        idx = np.asarray(idx, dtype=np.int64)
        q = idx // self.B
        r = idx - q * self.B
        pos = np.minimum(q[:, None] * self.B + self._offs[None, :], max(self.n - 1, 0))
        part = self.x[pos].astype(np.float64) - self.shift
        if squares:
            part *= part
        part[self._offs[None, :] >= r[:, None]] = 0.0
        return (self._p2 if squares else self._p1)[q] + part.sum(axis=1)

    def stats(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count, mean) of the index ranges [starts, ends) (mean of an empty range: shift)."""
        cnt = (ends - starts).astype(np.float64)
        s1 = self.prefix(ends) - self.prefix(starts)
        return cnt, s1 / np.maximum(cnt, 1.0) + self.shift

    def range_sse(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Squared error of each range around its own mean."""
        cnt = np.maximum((ends - starts).astype(np.float64), 1.0)
        s1 = self.prefix(ends) - self.prefix(starts)
        s2 = self.prefix(ends, squares=True) - self.prefix(starts, squares=True)
        return np.maximum(s2 - s1 * s1 / cnt, 0.0)

    def ends(self, starts: np.ndarray) -> np.ndarray:
        return np.concatenate((starts[1:], [self.n]))

    def bounds_index(self, centroids: np.ndarray) -> np.ndarray:
        """Index of the first value above each midpoint of consecutive sorted centroids."""
        bounds = (0.5 * (centroids[:-1] + centroids[1:])).astype(np.float32)
        return np.searchsorted(self.x, bounds, side="left")

    def split_points(self, centroids: np.ndarray) -> np.ndarray:
        """Start index of every cluster for sorted centroids (nearest-centroid partition)."""
        return np.concatenate(([0], self.bounds_index(centroids)))

    def sse(self, starts: np.ndarray) -> float:
        """Total squared error of the partition with these cluster starts."""
        edges = np.concatenate((starts, [self.n]))
        cnt = np.diff(edges).astype(np.float64)
        s1 = np.diff(self.prefix(edges))
        used = cnt > 0
        return max(self.total_sq - float(np.sum(s1[used] * s1[used] / cnt[used])), 0.0)

    def count_runs(self) -> int:
        """Number of distinct values (computed in blocks)."""
        count = 1 if self.n else 0
        for a in range(0, max(self.n - 1, 0), _CHUNK):
            seg = self.x[a : a + _CHUNK + 1]
            count += int(np.count_nonzero(seg[1:] != seg[:-1]))
        return count

    def run_starts(self) -> np.ndarray:
        """Start index of every run of equal values."""
        return np.concatenate(([0], np.flatnonzero(self.x[1:] != self.x[:-1]) + 1))

    def atom_starts(self, max_atoms: int) -> np.ndarray:
        """At most ~``max_atoms`` runs (never splitting equal values): the union of an
        equal-width grid (resolves sparse tails and outliers) and equal-count quantiles
        (resolves the dense centre)."""
        x = self.x
        half = max(2, max_atoms // 2)
        grid_vals = np.linspace(float(x[0]), float(x[-1]), half + 1)[1:-1].astype(np.float32)
        grid = np.searchsorted(x, grid_vals, side="left")
        quant = np.searchsorted(x, x[(np.arange(1, half) * self.n) // half], side="left")
        starts = np.unique(np.concatenate(([0], grid, quant)))
        return starts[starts < self.n]


# ------------------------------------------------------------------------------- exact DP
def optimal_partition(values: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Globally optimal partition of sorted distinct ``values`` (with ``weights``) into
    ``k < len(values)`` contiguous clusters minimising weighted squared error.

    Returns the start index of each of the ``k`` clusters.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(weights, dtype=np.float64)
    m = v.size
    if not 1 <= k < m:
        raise ValueError(f"need 1 <= k < len(values), got k={k}, len={m}")
    vc = v - np.average(v, weights=c)
    C = np.concatenate(([0.0], np.cumsum(c)))
    S = np.concatenate(([0.0], np.cumsum(c * vc)))
    Q = np.concatenate(([0.0], np.cumsum(c * vc * vc)))

    def cost(j: np.ndarray, i: np.ndarray) -> np.ndarray:
        s = S[i] - S[j]
        return np.maximum(Q[i] - Q[j] - s * s / (C[i] - C[j]), 0.0)

    if k * (m - k + 1) ** 2 <= BAND_BUDGET:
        return _band_partition(cost, m, k)
    D = np.full(m + 1, np.inf)
    D[1:] = cost(np.zeros(m, dtype=np.int64), np.arange(1, m + 1))
    prev_opt = np.zeros(m + 1, dtype=np.int64)
    args = np.zeros((k + 1, m + 1), dtype=np.int32)
    for layer in range(2, k + 1):
        hi = m - (k - layer)  # leave one value for every later cluster
        i = np.arange(layer, hi + 1)
        jlo = np.maximum(prev_opt[i], layer - 1)
        window = int((i - jlo).sum())
        if window <= 4 * i.size * max(1, int(math.log2(i.size + 1))):
            D, opt = _layer_window(D, cost, i, jlo, m)
        else:
            D, opt = _layer_divide(D, cost, layer, hi, prev_opt, m)
        args[layer] = opt
        prev_opt = opt
    starts = np.empty(k, dtype=np.int64)
    end = m
    for layer in range(k, 0, -1):
        j = int(args[layer, end]) if layer > 1 else 0
        starts[layer - 1] = j
        end = j
    return starts


def _band_partition(cost, m: int, k: int) -> np.ndarray:
    """The DP when few values must share clusters (``r = m - k`` small): after ``L``
    clusters the cover ends at value ``L + t`` with ``t`` in ``[0, r]``, so each layer is one
    vectorised ``(r+1) x (r+1)`` min -- O(k r^2) work in k small numpy steps."""
    r = m - k
    t = np.arange(r + 1)
    tp, tt = np.meshgrid(t, t, indexing="ij")  # tp: previous layer's t (rows), tt: this layer's t
    invalid = tp > tt
    jj, ii = np.where(invalid, 0, tp), np.where(invalid, 1, tt)  # harmless indices where invalid
    D = cost(np.zeros(r + 1, dtype=np.int64), 1 + t)
    args = np.zeros((k + 1, r + 1), dtype=np.int64)
    for layer in range(2, k + 1):
        vals = D[:, None] + cost(layer - 1 + jj, layer + ii)
        vals[invalid] = np.inf
        args[layer] = np.argmin(vals, axis=0)
        D = vals[args[layer], t]
    starts = np.zeros(k, dtype=np.int64)
    tcur = r
    for layer in range(k, 1, -1):
        tprev = int(args[layer, tcur])
        starts[layer - 1] = layer - 1 + tprev
        tcur = tprev
    return starts


def _segment_argmin(val: np.ndarray, offs: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment (min, flat position of the first min) of a flat ragged array."""
    mins = np.minimum.reduceat(val, offs)
    pos = np.minimum.reduceat(np.where(val <= mins[seg], np.arange(val.size), val.size), offs)
    return mins, pos


def _ragged(jlo: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offs = np.concatenate(([0], np.cumsum(lens)[:-1]))
    seg = np.repeat(np.arange(lens.size), lens)
    j = jlo[seg] + (np.arange(int(lens.sum())) - offs[seg])
    return j, offs, seg


def _layer_window(D, cost, i, jlo, m):
    """One DP layer, every split candidate in [opt(k-1, i), i-1] evaluated at once."""
    j, offs, seg = _ragged(jlo, i - jlo)
    val = D[j] + cost(j, i[seg])
    mins, pos = _segment_argmin(val, offs, seg)
    Dn = np.full(m + 1, np.inf)
    opt = np.zeros(m + 1, dtype=np.int64)
    Dn[i] = mins
    opt[i] = j[pos]
    return Dn, opt


def _layer_divide(D, cost, layer, hi0, prev_opt, m):
    """One DP layer by divide and conquer on the monotone split point, one tree level at a time."""
    Dn = np.full(m + 1, np.inf)
    opt = np.zeros(m + 1, dtype=np.int64)
    lo, hi = np.array([layer]), np.array([hi0])
    olo, ohi = np.array([layer - 1]), np.array([hi0 - 1])
    while lo.size:
        mid = (lo + hi) // 2
        jlo = np.maximum(olo, prev_opt[mid])
        jhi = np.minimum(ohi, mid - 1)
        j, offs, seg = _ragged(jlo, jhi - jlo + 1)
        val = D[j] + cost(j, mid[seg])
        mins, pos = _segment_argmin(val, offs, seg)
        best = j[pos]
        Dn[mid] = mins
        opt[mid] = best
        left, right = lo <= mid - 1, mid + 1 <= hi
        lo, hi, olo, ohi = (
            np.concatenate((lo[left], mid[right] + 1)),
            np.concatenate((mid[left] - 1, hi[right])),
            np.concatenate((olo[left], best[right])),
            np.concatenate((best[left], ohi[right])),
        )
    return Dn, opt


def _exact_is_cheap(m: int, k: int) -> bool:
    """Rough work estimate of the DP over ``m`` values: window sums ~ m^2/2 * H(k), and
    at most ~m log m per layer once layers are small."""
    est = min(m * m / 2 * (math.log(k) + 0.6), k * m * max(1.0, math.log2(m)) * 2)
    return est <= EXACT_BUDGET


def _dp_on_runs(data: _Sorted, run_starts: np.ndarray, k: int) -> np.ndarray:
    """Optimal partition of the data restricted to whole runs (each run taken as one point at
    its mean); returns data start indices."""
    cnt, mean = data.stats(run_starts, data.ends(run_starts))
    cut = optimal_partition(mean, cnt, k)  # each run as one weighted point: exact for runs of equal values
    return run_starts[cut]


# ---------------------------------------------------------------------------------- Lloyd
def _lloyd_converge(data: _Sorted, c: np.ndarray, max_iter: int) -> np.ndarray:
    """Plain Lloyd iterations on the sorted data until the partition is stable (tight loop)."""
    k = c.size
    edges = np.empty(k + 1, dtype=np.int64)  # cluster i is [edges[i], edges[i+1])
    edges[0], edges[-1] = 0, data.n
    edges[1:-1] = data.bounds_index(c)
    mean = c.copy()
    for _ in range(max_iter):
        cnt = np.diff(edges)
        sums = np.diff(data.prefix(edges))
        np.divide(sums, cnt, out=mean, where=cnt > 0)  # empty clusters keep their centroid
        mean[cnt > 0] += data.shift
        if (cnt == 0).any():
            mean.sort()
        new = data.bounds_index(mean)
        if np.array_equal(new, edges[1:-1]):
            break
        edges[1:-1] = new
    return edges[:-1].copy()


def _lloyd(data: _Sorted, centroids: np.ndarray, max_iter: int) -> np.ndarray:
    """Lloyd's algorithm to convergence, refilling empty clusters; returns cluster starts."""
    k = centroids.size
    c = np.sort(np.asarray(centroids, dtype=np.float64))
    starts = np.zeros(1, dtype=np.int64)
    for _restart in range(k + 1):
        starts = _lloyd_converge(data, c, max_iter)
        s, e = starts, data.ends(starts)
        cnt, mean = data.stats(s, e)
        empty = np.flatnonzero(cnt == 0)
        if empty.size == 0:
            return starts
        # Split the cluster with the largest error at its mean into two non-empty halves.
        sse = data.range_sse(s, e)
        splittable = (cnt >= 2) & (data.x[np.maximum(e - 1, 0)] > data.x[np.minimum(s, data.n - 1)])
        if not splittable.any():
            return starts
        j = int(np.argmax(np.where(splittable, sse, -1.0)))
        lo, hi = int(s[j]), int(e[j])
        cut = lo + int(np.searchsorted(data.x[lo:hi], np.float32(mean[j]), side="right"))
        cut = min(max(cut, lo + 1), hi - 1)
        _, m_l = data.stats(np.array([lo]), np.array([cut]))
        _, m_r = data.stats(np.array([cut]), np.array([hi]))
        c = np.where(cnt > 0, mean, c)
        c[j], c[empty[0]] = m_l[0], m_r[0]
        c = np.sort(c)
    return starts


def _init_kmeanspp(data: _Sorted, k: int, seed: int = 0, max_atoms: int = 8192) -> np.ndarray:
    """Greedy k-means++ seeding (as scikit-learn does it) on weighted atoms: deterministic.

    Costs O(atoms * k * log k); atoms are capped at ``max_atoms`` and at a quarter of
    the values (but at least 2k), so small tensors seed quickly too."""
    starts = data.atom_starts(min(max_atoms, max(2 * k, data.n // 4)))
    weights, points = data.stats(starts, data.ends(starts))
    rng = np.random.default_rng(seed)
    trials = 2 + int(np.log(k))
    c = np.empty(k)
    c[0] = points[min(int(np.searchsorted(np.cumsum(weights), rng.random() * weights.sum())), points.size - 1)]
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
    bins = int(min(4096, max(16, data.n // 8)))
    counts, edges = np.histogram(data.x, bins=bins, range=(float(data.x[0]), float(data.x[-1])))
    cdf = np.concatenate(([0.0], np.cumsum(np.cbrt(counts.astype(np.float64)))))
    cdf /= cdf[-1]
    return np.interp((np.arange(k) + 0.5) / k, cdf, edges)


def _init_coarse_optimum(data: _Sorted, k: int) -> np.ndarray | None:
    """Centroids of the exact optimum over the largest affordable set of coarse atoms."""
    atoms = 2 * k
    while atoms * 2 <= data.n and _exact_is_cheap(atoms * 2, k):
        atoms *= 2
    starts = data.atom_starts(atoms)
    if starts.size <= k:
        return None
    cut = _dp_on_runs(data, starts, k)
    return data.stats(cut, data.ends(cut))[1]


# ------------------------------------------------------------------------------------ API
def kmeans_1d(values: np.ndarray, k: int, *, max_iter: int = MAX_ITER) -> tuple[np.ndarray, np.ndarray]:
    """Cluster 1-D ``values`` into at most ``k`` clusters minimising squared error.

    Returns ``(centroids, labels)``: ``centroids`` sorted float64 of length
    ``min(k, number of distinct values)`` (each the mean of its cluster) and
    ``labels`` (the smallest unsigned integer type, same length as ``values``) indexing them. With at most
    ``k`` distinct values the result is exact (zero error); with few distinct
    values it is the global optimum.
    """
    flat = np.asarray(values, dtype=np.float32).ravel()
    if flat.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.uint8)
    data = _Sorted(flat)
    m = data.count_runs()
    if m <= k:
        uniq = data.x[data.run_starts()]
        return uniq.astype(np.float64), np.searchsorted(uniq, flat).astype(_label_dtype(uniq.size))
    if k * (m - k + 1) ** 2 <= BAND_BUDGET or _exact_is_cheap(m, k):
        starts = _dp_on_runs(data, data.run_starts(), k)
    else:
        best: tuple[float, np.ndarray] | None = None
        inits = (_init_kmeanspp, _init_companded) + ((_init_coarse_optimum,) if k <= COARSE_DP_MAX_K else ())
        for init in inits:
            c0 = init(data, k)
            if c0 is None:
                continue
            cand = _lloyd(data, c0, max_iter)
            err = data.sse(cand)
            if best is None or err < best[0]:
                best = (err, cand)
        starts = best[1]
    cnt, mean = data.stats(starts, data.ends(starts))
    used = cnt > 0
    # Label by the partition itself (its split values), whose means the centroids are.
    return mean[used], _labels(flat, data.x[starts[used][1:]], float(data.x[0]), float(data.x[-1]))


def _labels(flat: np.ndarray, split_vals: np.ndarray, lo: float, hi: float, cells: int = 1 << 16) -> np.ndarray:
    """``searchsorted(split_vals, flat, side="right")`` for many values, fast, in the
    smallest unsigned dtype.

    A uniform grid over [lo, hi] gives each value a cell; cells whose
    neighbourhood holds no split value have one label for all their values
    (looked up); only values in the few cells near a split are binary-searched.
    Done in blocks, so temporaries stay small.
    """
    dtype = _label_dtype(split_vals.size + 1)
    split_vals = split_vals.astype(np.float32)  # values of the data itself: exact in float32
    if flat.size < 65536 or split_vals.size == 0 or not hi > lo:
        return np.searchsorted(split_vals, flat, side="right").astype(dtype)
    step = (hi - lo) / cells
    grid = lo + step * np.arange(cells + 1)
    lab_at = np.searchsorted(split_vals.astype(np.float64), grid, side="right").astype(dtype)
    lab_lo = np.concatenate(([lab_at[0]], lab_at[:-2]))  # left edge of the previous cell
    lab_hi = np.concatenate((lab_at[2:], [lab_at[-1]]))  # right edge of the next cell
    clear = lab_lo == lab_hi
    out = np.empty(flat.size, dtype=dtype)
    inv = np.float32(1.0 / step)
    for a in range(0, flat.size, _CHUNK):
        part = flat[a : a + _CHUNK]
        # float32 cell arithmetic is off by far less than a cell; the neighbour check absorbs it
        cell = ((part - np.float32(lo)) * inv).astype(np.int32)
        np.clip(cell, 0, cells - 1, out=cell)
        lab = lab_at[cell]
        unsure = np.flatnonzero(~clear[cell])
        lab[unsure] = np.searchsorted(split_vals, part[unsure], side="right")
        out[a : a + part.size] = lab
    return out


def _label_dtype(count: int) -> type:
    """Smallest unsigned integer type that holds labels 0..count-1."""
    return np.uint8 if count <= 256 else np.uint16 if count <= 65536 else np.int64


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
