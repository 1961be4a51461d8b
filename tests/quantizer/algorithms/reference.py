"""A straightforward GPTQ (right-looking, explicit inverse, no lazy batches) to check quantizer.algorithms.gptq against."""
from __future__ import annotations

import numpy as np

from quantizer.algorithms.grids import make_grid


def reference_gptq(W: np.ndarray, H: np.ndarray, mode: str, nbits: int, *, damp: float = 0.01,
                   act_order: bool = True, lut=None) -> np.ndarray:
    """Indices (shape of W, one group) of textbook GPTQ with quantizer.algorithms' damping/dead-column rules."""
    W = np.asarray(W, np.float32)
    grid = make_grid(W, mode, nbits, lut)
    R, C = W.shape
    H = np.array(H, dtype=np.float64)
    d = np.diag(H).copy()
    dead = ~(d > 0)
    scale = d[~dead].mean()
    H[dead, dead] = scale
    H += damp * scale * np.eye(C)
    perm = np.argsort(-d, kind="stable") if act_order else np.arange(C)
    Wp = W.astype(np.float64)[:, perm]
    Hp = H[np.ix_(perm, perm)]
    U = np.linalg.cholesky(np.linalg.inv(Hp)).T  # upper: U^T U = H^-1
    params = grid.row_params(np.arange(R)[None, :])
    Q = np.zeros((R, C), np.uint8)
    for j in range(C):
        w = Wp[:, j].copy()
        q, deq = grid.quantize(w[None, :], params)
        Q[:, j] = q[0]
        err = (w - deq[0]) / U[j, j]
        Wp[:, j:] -= np.outer(err, U[j, j:])
    out = np.empty_like(Q)
    out[:, perm] = Q
    return out
