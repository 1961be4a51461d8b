"""Batchnorm parameters chosen jointly: the stored gamma/beta/mean/variance whose effective per-channel affine map is closest on the calibration data.

A batchnorm layer (``computeMeanVar`` false) computes, per channel ``c``,

    y = a x + b,   a = gamma / sqrt(variance + eps),   b = beta - a * mean,

and quantizes its four vectors separately, each on its own grid (one scale and
offset, or one LUT, per vector: 1-D tensors are one channel). Round-to-nearest
rounds each vector on its own, so ``a`` and ``b`` carry the compounded
errors. The layer's output error on an input ``x`` is ``(a - a') x + (b - b')``;
over the calibration rows of channel ``c`` (mean ``m``, second moment ``s``)

    E[(da x + db)^2] = da^2 (s - m^2) + (da m + db)^2.

:func:`fit_batchnorm` minimises it per channel over the candidate values of
the four vectors (every level of a grid at up to :data:`DEFAULT_WINDOW` levels,
otherwise the ``window`` levels nearest the float value): every (gamma,
variance) pair gives an ``a'``, every (beta, mean) pair a ``b'``; the
exhaustive search finds the best combination. With the grids fixed channels are
independent, and the round-to-nearest combination is among the candidates, so
the error on the calibration statistics is never above round-to-nearest's.
Measured on crepe_tiny (4-bit linear, six batchnorm layers): the error sum
drops 30-150x per layer (see the README).

The statistics are a :class:`~quantizer.algorithms.stats.LayerStats` with one
group per channel and one column (``gram[c, 0, 0] = sum x_c^2``, ``mean[c, 0]
= E[x_c]``), collected by ``harness.calibration`` over every sample and
position of the layer's input.

>>> import numpy as np
>>> from quantizer.algorithms.stats import LayerStats
>>> st = LayerStats(np.full((2, 1, 1), 20.0), np.array([[1.0], [2.0]]), 10)  # E[x^2] = 2
>>> vals = {"gamma": np.array([1.0, 2.0]), "beta": np.array([0.0, 1.0]), "mean": np.array([0.5, 0.0]),
...         "variance": np.array([1.0, 4.0])}
>>> cands = {f: np.stack([v, v + 0.1], axis=1) for f, v in vals.items()}   # the float value is candidate 0
>>> [c.tolist() for c in fit_batchnorm(vals, cands, 1e-3, st).values()]
[[0, 0], [0, 0], [0, 0], [0, 0]]
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from .grids import Grid, grid_result, make_grid
from .stats import LayerStats

__all__ = ["BATCHNORM_FIELDS", "DEFAULT_WINDOW", "affine_moments", "grid_levels", "window_candidates",
           "fit_batchnorm", "batchnorm_error", "vector_grid", "encode_batchnorm"]

#: The four stored vectors of a batchnorm layer, in the order the search reads them.
BATCHNORM_FIELDS = ("gamma", "beta", "mean", "variance")
#: Candidate levels per vector and channel: every level up to 4 bits; above, the nearest 16.
DEFAULT_WINDOW = 16
#: Channels searched at once (bounds the (channels x beta x mean) temporaries to a few MiB).
_CHANNEL_CHUNK = 256


def affine_moments(stats: LayerStats) -> tuple[np.ndarray, np.ndarray]:
    """(E[x], Var[x]) per channel from one-column-per-group statistics (float64, ``(C,)``)."""
    if stats.columns != 1:
        raise ValueError(f"batchnorm statistics have one column per channel, got {stats.columns}")
    n = max(int(stats.rows), 1)
    m = np.asarray(stats.mean, np.float64)[:, 0]
    second = np.asarray(stats.gram, np.float64).reshape(stats.groups) / n
    return m, np.maximum(second - m * m, 0.0)


def grid_levels(grid: Grid) -> np.ndarray:
    """The float32 values (as float64) a runtime decodes from each index of a one-channel grid."""
    if grid.lut is not None:
        return grid.lut.astype(np.float64)
    q = np.arange(1 << grid.nbits, dtype=np.float32)
    return (q * grid.scale[0] + grid.bias[0]).astype(np.float32).astype(np.float64)


def window_candidates(values: np.ndarray, levels: np.ndarray, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """Indices ``(C, W)`` into ``levels`` of the ``W = min(window, len(levels))`` levels nearest each value,
    nearest first (so column 0 is round-to-nearest)."""
    v = np.asarray(values, np.float64).reshape(-1, 1)
    dist = np.abs(v - np.asarray(levels, np.float64)[None, :])
    w = min(int(window), dist.shape[1])
    order = np.argsort(dist, axis=1, kind="stable")
    return order[:, :w]


def batchnorm_error(values: Mapping[str, np.ndarray], chosen: Mapping[str, np.ndarray], eps: float,
                    stats: LayerStats) -> np.ndarray:
    """Per channel ``E[(y - y')^2]`` on the statistics between the float vectors ``values`` and
    ``chosen`` (each ``(C,)``); ``inf`` where ``chosen`` has ``variance + eps <= 0``."""
    m, var = affine_moments(stats)
    a, b = _affine({f: np.asarray(values[f], np.float64) for f in BATCHNORM_FIELDS}, eps)
    a2, b2 = _affine({f: np.asarray(chosen[f], np.float64) for f in BATCHNORM_FIELDS}, eps)
    bad = ~np.isfinite(a2)
    da, db = a - np.where(bad, 0.0, a2), b - np.where(bad, 0.0, b2)
    return np.where(bad, np.inf, da * da * var + (da * m + db) ** 2)


def _affine(v: Mapping[str, np.ndarray], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(a, b); ``inf`` where ``variance + eps <= 0`` (a runtime would compute NaN there)."""
    ok = v["variance"] + eps > 0
    a = np.where(ok, v["gamma"] / np.sqrt(np.where(ok, v["variance"] + eps, 1.0)), np.inf)
    return a, np.where(ok, v["beta"] - np.where(ok, a, 0.0) * v["mean"], np.inf)


def fit_batchnorm(values: Mapping[str, np.ndarray], candidates: Mapping[str, np.ndarray], eps: float,
                  stats: LayerStats) -> dict[str, np.ndarray]:
    """For every channel, the column of each field's ``candidates`` (``(C, K_f)`` float values) that
    minimises ``E[(y - y')^2]`` over the channel's calibration statistics.

    Args:
        values: the float vectors ``gamma``, ``beta``, ``mean``, ``variance`` (``(C,)`` each).
        candidates: per field, the values it may take, ``(C, K_f)`` (``K_f = 1`` for a vector that
            is not being chosen, e.g. kept float). Variance candidates with ``v + eps <= 0`` are skipped.
        eps: the layer's epsilon (as the runtime adds it).
        stats: one group per channel, one column (see the module docstring).

    Returns:
        ``{field: (C,) int}`` -- the chosen column per channel. Ties go to the lower columns
        (with :func:`window_candidates`, to round-to-nearest).
    """
    c = int(np.asarray(values["gamma"]).size)
    if stats.groups != c:
        raise ValueError(f"statistics of {stats.groups} channels do not fit a batchnorm of {c} channels")
    m, var = affine_moments(stats)
    a, b = _affine({f: np.asarray(values[f], np.float64).reshape(c) for f in BATCHNORM_FIELDS}, eps)
    cand = {f: np.asarray(candidates[f], np.float64).reshape(c, -1) for f in BATCHNORM_FIELDS}
    out = {f: np.zeros(c, np.int64) for f in BATCHNORM_FIELDS}
    for lo in range(0, c, _CHANNEL_CHUNK):
        sl = slice(lo, min(c, lo + _CHANNEL_CHUNK))
        picked = _fit_chunk(a[sl], b[sl], m[sl], var[sl], {f: v[sl] for f, v in cand.items()}, eps)
        for f in BATCHNORM_FIELDS:
            out[f][sl] = picked[f]
    return out


def _fit_chunk(a, b, m, var, cand, eps) -> dict[str, np.ndarray]:
    g, bt, mu, v = cand["gamma"], cand["beta"], cand["mean"], cand["variance"]
    n, kb, km = a.size, bt.shape[1], mu.shape[1]
    rows = np.arange(n)
    best = np.full(n, np.inf)
    pick = np.zeros((n, 4), np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        root = np.where(v + eps > 0, np.sqrt(np.maximum(v + eps, 0.0)), np.nan)
    for i in range(g.shape[1]):
        for j in range(v.shape[1]):
            a2 = g[:, i] / root[:, j]  # NaN where this variance level is invalid
            da = a - a2
            target = b + da * m  # the b' that leaves no mean error
            b2 = bt[:, :, None] - a2[:, None, None] * mu[:, None, :]  # (n, kb, km)
            err = ((target[:, None, None] - b2) ** 2).reshape(n, kb * km)
            k = np.argmin(err, axis=1)
            total = da * da * var + err[rows, k]
            better = total < best  # NaN never compares smaller
            if better.any():
                best[better] = total[better]
                pick[better] = np.stack([np.full(n, i), k // km, k % km, np.full(n, j)], axis=1)[better]
    if not np.isfinite(best).all():  # no valid variance candidate: keep round-to-nearest's columns
        pick[~np.isfinite(best)] = 0
    return dict(zip(BATCHNORM_FIELDS, pick.T))


def vector_grid(values: np.ndarray, mode: str, nbits: int) -> Grid:
    """The round-to-nearest grid of a 1-D parameter vector (one scale/offset or one LUT), as quantizer's codec
    computes it."""
    return make_grid(np.asarray(values, np.float32).reshape(1, -1), mode, nbits)


def encode_batchnorm(values: Mapping[str, np.ndarray], codecs: Mapping[str, Any], fixed: Mapping[str, np.ndarray],
                     eps: float) -> dict[str, Any]:
    """The stored form of every field of one batchnorm layer whose codec is ``affine``.

    Args:
        values: the float vectors (``(C,)`` each, the four fields).
        codecs: field -> the plan's codec (``affine`` ones are chosen here; their ``stats`` are the layer's).
        fixed: for every other field, the values the runtime will read (float, float16 or
            round-to-nearest decoded): a single candidate.
        eps: the layer's epsilon.

    Returns:
        ``{field: quantizer.codecs.Encoded}`` for the ``affine`` fields (same WeightParams layout as
        round-to-nearest: the field's own grid, other indices), with ``info`` (error vs round-to-nearest).
    """
    chosen = [f for f in BATCHNORM_FIELDS if codecs.get(f) is not None and codecs[f].algorithm == "affine"]
    if not chosen:
        return {}
    stats = codecs[chosen[0]].stats
    c = int(np.asarray(values["gamma"]).size)
    grids, cols, cand = {}, {}, {}
    for f in BATCHNORM_FIELDS:
        if f in chosen:
            codec = codecs[f]
            grids[f] = vector_grid(values[f], codec.mode, codec.nbits)
            window = int(dict(codec.options).get("window", DEFAULT_WINDOW))
            cols[f] = window_candidates(values[f], grid_levels(grids[f]), window)
            cand[f] = grid_levels(grids[f])[cols[f]]
        else:
            cand[f] = np.asarray(fixed[f], np.float64).reshape(c, 1)
    pick = fit_batchnorm(values, cand, eps, stats)
    rows = np.arange(c)
    got = {f: cand[f][rows, pick[f]] for f in BATCHNORM_FIELDS}
    near = {f: cand[f][:, 0] for f in BATCHNORM_FIELDS}
    err, err_rtn = batchnorm_error(values, got, eps, stats).sum(), batchnorm_error(values, near, eps, stats).sum()
    info = {"algorithm": "affine", "error": float(err), "rtn_error": float(err_rtn), "stats_digest": stats.digest()}
    out = {}
    for f in chosen:
        idx = cols[f][rows, pick[f]].astype(np.uint8)
        out[f] = dataclasses.replace(grid_result(grids[f], (c,), idx, {}).encoded(), info=dict(info))
    return out
