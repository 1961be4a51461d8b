"""GPTQ (Frantar et al. 2022) for Core ML's weight storage formats: error feedback through the Cholesky factor of H^-1.

For every matrix ``W (R, C)`` of a layer (see :mod:`quantizer.algorithms.stats` for the
matricization) and its input Gram matrix ``H = X^T X``, columns are quantized
one at a time on the codec's fixed grid (:mod:`quantizer.algorithms.grids`); the error of
column ``j`` (divided by ``U_jj``) is pushed onto the columns not yet quantized
through row ``j`` of ``U``, the upper Cholesky factor of ``(H + lambda I)^-1``
-- the OBS update that minimises ``||(W - W_hat) X||^2`` over the remaining
columns. This is the paper's algorithm with:

- dampening ``lambda = damp * mean(diag H)`` (over the live columns);
- lazy batches of ``block_size`` columns: inside a batch a column is corrected
  left-looking (one ``(i x R)`` product with the errors so far), the rest of the
  matrix once per batch (one GEMM);
- dead columns (``H_jj == 0``: inputs that are always zero) get no feedback and
  are rounded to nearest; a Cholesky failure retries with 10x the damping and
  finally falls back to round-to-nearest for that matrix (recorded in ``info``);
- optional act-order: columns in decreasing ``diag(H)`` (``act_order=True``, the
  default; see the package README for the measurement);
- groups and block-diagonal ``H`` (:class:`quantizer.algorithms.stats.LayerStats` with
  ``block``): every (group, block) is an independent problem; all problems run
  together, vectorised, so the Python loop has ``C`` (or ``block``) steps.

``U`` is never formed explicitly: ``H`` is copied once, reversed, into a work
buffer; LAPACK ``potrf`` + ``trtri`` run in place on it (``H = J L L^T J``, so
``U = J L^-1 J``) and the GPTQ loop reads ``U`` through reversed slices of that
buffer. Peak memory is one ``C x C`` buffer plus the ``R x C`` work copy of
``W`` (float32 above :data:`FLOAT64_MAX_COLUMNS` columns, float64 below). The
solve runs on :data:`SOLVE_THREADS` BLAS thread(s).

>>> import numpy as np
>>> from quantizer.algorithms.gptq import gptq
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(256, 16)) @ rng.normal(size=(16, 16))
>>> W = rng.normal(size=(8, 16)).astype(np.float32)
>>> res = gptq(W, X.T @ X, "linear", 3)
>>> res.indices.shape, res.scale.shape
((128,), (8,))
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from .grids import Grid, QuantizedTensor, grid_result, make_grid
from .stats import LayerStats

__all__ = ["gptq", "FLOAT64_MAX_COLUMNS", "DEFAULT_DAMP", "DEFAULT_BLOCK_SIZE"]

DEFAULT_DAMP = 0.01
DEFAULT_BLOCK_SIZE = 128
#: ``dtype="auto"``: float64 when a problem has at most this many columns and the layer at most
#: :data:`FLOAT64_MAX_WEIGHTS` weights; float32 otherwise (BLAS twice as fast, half the memory;
#: the output error differs by well under 1%, see the tests and the README).
FLOAT64_MAX_COLUMNS = 1024
FLOAT64_MAX_WEIGHTS = 1 << 22
#: Most elements of the error buffer of one lazy batch (all problems): batches shrink below
#: ``block_size`` when many problems run together (block-diagonal H, many groups).
ERR_BUFFER_ELEMS = 1 << 22
#: BLAS threads of the solve. The factorisation (potrf + trtri) and the column loop's small products
#: are latency-bound: measured on the 2-core machine with other processes running, trtri of a
#: 3465-column H took 4.7 s on 2 OpenBLAS threads and 0.43 s on 1 (potrf 1.2 s vs 0.44 s).
SOLVE_THREADS = 1
_MAX_DAMP_RETRIES = 4
_GATHER_ROWS = 256  # rows per chunk when copying H (columns of W) into a work buffer
_PANEL_ELEMS = 1 << 22  # elements of one temporary in the lazy-batch update


def gptq(weights: np.ndarray, hessian: LayerStats | np.ndarray, mode: str, nbits: int, *,
         lut: np.ndarray | None = None, damp: float = DEFAULT_DAMP, block_size: int = DEFAULT_BLOCK_SIZE,
         act_order: bool = True, centered: bool = False, dtype: Any = "auto") -> QuantizedTensor:
    """Quantize ``weights`` with GPTQ on the grid of ``mode`` (``linear``, ``linear_symmetric``,
    ``linear_lut``, ``kmeans_lut``) at ``nbits``.

    Args:
        weights: the stored tensor, output channels on axis 0 (convolution
            ``[Cout, Cin/g, kH, kW]``, innerProduct ``[Cout, Cin]``, batchedMatmul
            ``(X2, X1)``); it reshapes to ``(G, Cout/G, C)``.
        hessian: :class:`~quantizer.algorithms.stats.LayerStats` (groups and block-diagonal taken from it),
            or an array ``H`` ``(C, C)`` / ``(G, C, C)``.
        lut: for ``kmeans_lut``, the fixed table (``2^nbits`` values), e.g. from
            :func:`quantizer.algorithms.weighted_kmeans.activation_weighted_lut`; default: quantizer's
            plain k-means LUT of the weights.
        damp: dampening, a fraction of the mean diagonal of ``H``.
        block_size: columns per lazy batch.
        act_order: quantize columns in decreasing ``diag(H)``.
        centered: use ``H - n mean mean^T`` (needs LayerStats): minimises the error left
            after :func:`quantizer.algorithms.bias_correction.bias_correction`.
        dtype: ``"auto"``, ``np.float32`` or ``np.float64`` for the factor and the work copy.

    Returns:
        :class:`~quantizer.algorithms.grids.QuantizedTensor` with the same grid (scale/bias or LUT) as
        round-to-nearest; ``info`` records the algorithm and its options.
    """
    w = np.ascontiguousarray(weights, dtype=np.float32)
    if w.ndim < 2:
        raise ValueError(f"weights must have rank >= 2 (output channels on axis 0), got shape {w.shape}")
    if isinstance(hessian, LayerStats):
        gram, block, ncols, groups = hessian.gram, hessian.block, hessian.columns, hessian.groups
    else:
        if centered:
            raise ValueError("centered=True needs LayerStats (the mean and row count)")
        gram = np.asarray(hessian, dtype=np.float64)
        gram = gram[None] if gram.ndim == 2 else gram
        if gram.ndim != 3 or gram.shape[1] != gram.shape[2]:
            raise ValueError(f"hessian must be (C, C) or (G, C, C), got shape {gram.shape}")
        block, ncols, groups = None, gram.shape[1], gram.shape[0]
    cout = w.shape[0]
    c = int(np.prod(w.shape[1:]))
    if cout % groups or c != ncols:
        raise ValueError(
            f"weights of shape {w.shape} do not match statistics of {groups} group(s) x {ncols} columns: "
            f"need Cout divisible by the groups and prod(shape[1:]) == columns")
    if not damp > 0:
        raise ValueError(f"damp must be > 0, got {damp}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    grid = make_grid(w, mode, nbits, lut)
    r = cout // groups
    b = c if block is None else block
    nb = 1 if block is None else gram.shape[1]
    work_dtype = _work_dtype(dtype, b, w.size)
    hb = gram.reshape(groups * nb, b, b)  # problem p = (group gi, block k): columns [k*b, (k+1)*b) of group gi
    shift = None
    if centered:  # H - n m m^T, subtracted while H is copied (no centred copy of H is made)
        m = np.zeros((groups, nb * b))
        m[:, :c] = hessian.mean
        shift = (float(hessian.rows), m.reshape(groups * nb, b))
    with threadpool_limits(SOLVE_THREADS, user_api="blas"):
        q, info = _solve(w.reshape(groups, r, c), hb, grid, nb, damp=damp, block_size=block_size,
                         act_order=act_order, dtype=work_dtype, shift=shift)
    info.update(algorithm="gptq", damp=damp, block_size=block_size, act_order=act_order, centered=centered,
                dtype=np.dtype(work_dtype).name, groups=groups, hessian_block=block)
    if isinstance(hessian, LayerStats):
        info["stats_digest"] = hessian.digest()
    return grid_result(grid, w.shape, q.reshape(-1), info)


def _work_dtype(dtype: Any, columns: int, size: int) -> np.dtype:
    if isinstance(dtype, str) and dtype == "auto":
        small = columns <= FLOAT64_MAX_COLUMNS and size <= FLOAT64_MAX_WEIGHTS
        return np.dtype(np.float64 if small else np.float32)
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'auto', float32 or float64, got {dtype!r}")
    return dt


def _solve(wm: np.ndarray, hb: np.ndarray, grid: Grid, nb: int, *, damp: float, block_size: int,
           act_order: bool, dtype: np.dtype, shift: tuple[float, np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """GPTQ on the ``P = G * nb`` problems of ``wm`` (G, R, C) float32 with Gram blocks ``hb``
    (P, b, b), minus ``n m m^T`` per problem when ``shift = (n, m (P, b))``. Returns the
    indices (G, R, C) uint8."""
    g, r, c = wm.shape
    p, b, _ = hb.shape
    diag = np.diagonal(hb, axis1=1, axis2=2)
    if shift is not None:
        diag = np.maximum(diag - shift[0] * shift[1] ** 2, 0.0)
    perm = np.argsort(-diag, axis=1, kind="stable") if act_order else np.broadcast_to(np.arange(b), (p, b))
    # damping (and the diagonal given to dead columns) from each group's whole diagonal, so that a
    # block-diagonal H is dampened as the full H it approximates would be
    live = np.where(diag > 0, diag, 0.0).reshape(g, -1)
    nlive = np.maximum((diag > 0).reshape(g, -1).sum(axis=1), 1)
    group_scale = live.sum(axis=1) / nlive
    fac = np.empty((p, b, b), dtype=dtype)
    info = {"dead_columns": 0, "rtn_fallbacks": 0, "damp_max": damp}
    for k in range(p):
        sk = None if shift is None else (shift[0], shift[1][k])
        dead, used = _factor(hb[k], perm[k], fac[k], damp, float(group_scale[k // nb]), diag[k], sk)
        info["dead_columns"] += int(dead) - max(0, (k % nb + 1) * b - c)  # padding is not dead input
        if used is None:
            info["rtn_fallbacks"] += 1
        else:
            info["damp_max"] = max(info["damp_max"], used)
    # work[p, j] = column perm[p, j] of problem p's matrix: one column of every row contiguous
    work = np.zeros((p, b, r), dtype=dtype)
    for k in range(p):
        _permuted_columns(wm[k // nb], (k % nb) * b, perm[k], work[k], c)
    rows = np.repeat(np.arange(g * r).reshape(g, 1, r), nb, axis=1).reshape(p, r)
    qp = _gptq_loop(work, fac, grid, grid.row_params(rows), block_size)
    del work, fac
    q = np.zeros((g, r, nb * b), dtype=np.uint8)
    for k in range(p):
        q[k // nb, :, (k % nb) * b + perm[k]] = qp[k]
    return q[:, :, :c], info


def _permuted_columns(wg: np.ndarray, start: int, perm: np.ndarray, out: np.ndarray, c: int) -> None:
    """``out[j] = wg[:, start + perm[j]]`` (zero beyond column ``c``), in chunks of columns."""
    for a in range(0, perm.size, _GATHER_ROWS):
        sel = start + perm[a:a + _GATHER_ROWS]
        ok = sel < c
        if ok.all():
            out[a:a + sel.size] = wg[:, sel].T
        else:
            out[a:a + sel.size][ok] = wg[:, sel[ok]].T


def _factor(h: np.ndarray, perm: np.ndarray, out: np.ndarray, damp: float, scale: float, diag: np.ndarray,
            shift: tuple[float, np.ndarray] | None) -> tuple[int, float | None]:
    """Fill ``out`` with ``L^-T`` (C-order, upper) where ``J H' J = L L^T``, ``H'`` the permuted,
    dampened ``h``; then ``U = chol_upper(H'^-1) = J L^-1 J``. Returns (dead columns, damping
    used), damping None when every retry failed and ``out`` holds the identity (RTN).
    ``scale``: the mean live diagonal of the group (dead columns get it as their diagonal;
    the damping is ``damp * scale``)."""
    c = h.shape[0]
    rp = perm[::-1]
    d = diag[rp]
    mr = None if shift is None else shift[1][rp]
    dead = ~(d > 0)
    if dead.all() or not scale > 0:  # no live input: nothing to feed back, round to nearest
        _identity(out)
        return int(dead.sum()), damp
    potrf, trtri = lapack.get_lapack_funcs(("potrf", "trtri"), (out,))
    lam = damp * scale
    for _ in range(_MAX_DAMP_RETRIES + 1):
        for a in range(0, c, _GATHER_ROWS):
            blk = h[rp[a:a + _GATHER_ROWS]][:, rp]
            if mr is not None:
                blk -= shift[0] * mr[a:a + _GATHER_ROWS, None] * mr[None, :]
            out[a:a + _GATHER_ROWS] = blk
        dg = np.einsum("ii->i", out)
        dg[dead] = scale
        dg += lam
        m = out.T  # F-contiguous view of the symmetric buffer: LAPACK works in place
        l, info = potrf(m, lower=1, overwrite_a=1, clean=1)
        if info == 0:
            li, info = trtri(l, lower=1, overwrite_c=1)
            if info == 0 and np.isfinite(np.einsum("ii->i", li)).all():
                if not np.shares_memory(li, out):
                    out[...] = li.T
                return int(dead.sum()), lam / scale
        lam *= 10.0
    _identity(out)
    return int(dead.sum()), None


def _identity(out: np.ndarray) -> None:
    out[...] = 0
    np.einsum("ii->i", out)[...] = 1


def _gptq_loop(work: np.ndarray, fac: np.ndarray, grid: Grid, params: dict, block_size: int) -> np.ndarray:
    """The column loop over P problems at once: ``work`` (P, C, R) corrected in place.

    ``U[i, j] = fac[C-1-j, C-1-i]`` (``fac`` holds ``L^-T``): a block ``U[i1:i2, i1:i2]``
    and the panel ``U[i1:i2, i2:]^T = fac[:C-i2, C-i2:C-i1][::-1, ::-1]`` are read as reversed
    slices, so no second ``C x C`` array is made."""
    p, c, r = work.shape
    q = np.empty((p, c, r), dtype=np.uint8)
    block_size = max(1, min(block_size, ERR_BUFFER_ELEMS // max(1, p * r)))
    for i1 in range(0, c, block_size):
        i2 = min(c, i1 + block_size)
        n = i2 - i1
        # ut[k, j, i] = U[i1+i, i1+j] (U's diagonal block, transposed: column j of U is row j)
        ut = np.ascontiguousarray(fac[:, c - i2:c - i1, c - i2:c - i1][:, ::-1, ::-1])
        err = np.empty((p, n, r), dtype=work.dtype)
        for j in range(n):
            col = work[:, i1 + j, :]
            if j:
                col = col - np.matmul(ut[:, j:j + 1, :j], err[:, :j, :])[:, 0, :]
            qj, deq = grid.quantize(col, params)
            q[:, i1 + j, :] = qj
            np.subtract(col, deq, out=err[:, j, :])
            err[:, j, :] /= ut[:, j, j][:, None]
        if i2 < c:
            # U[i1:i2, i2:]^T = fac[:, :C-i2, C-i2:C-i1] reversed on both axes: with the errors
            # reversed too, the product comes out reversed along the remaining columns
            erev = np.ascontiguousarray(err[:, ::-1, :])
            step = max(1, _PANEL_ELEMS // max(1, p * r))
            for a in range(0, c - i2, step):
                e = min(c - i2, a + step)  # panel rows [a, e) update columns c-1-a ... c-e
                upd = np.matmul(fac[:, a:e, c - i2:c - i1], erev)
                work[:, c - e:c - a, :] -= upd[:, ::-1, :]
    return q
