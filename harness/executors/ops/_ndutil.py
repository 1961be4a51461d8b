"""Helpers shared by the ND tensor, sequence and control-flow op modules, and their conventions.

Not an op module (the leading underscore keeps the registry from importing it
as one). Everything here works on internal blobs ``(N, *per-sample shape)``
(see :mod:`harness.executors.ops.base`).

Conventions of the ND ops (spec >= 4)
-------------------------------------
Every op works per sample: a Core ML axis ``a`` of a rank-``r`` blob is the
internal axis ``a % r + 1`` (the sample axis is in front). Static shapes and
indices baked into the layer (``loadConstantND.shape``, ``sliceStatic`` ids,
``tile.reps``...) are per-sample values, so a leading 1 that stands for the
converted model's batch dim stays 1 and nothing is patched to N. Layer
semantics follow ``NeuralNetwork.proto`` (coremltools ``mlmodel/format``) and,
where the proto is terse, the MIL op it is converted from.

Two recurring problems are solved here:

* **Values that must be one number for the whole batch** (a dynamic shape, a
  loop count, ``K`` of topK, the bounds of a range). Core ML computes them per
  prediction; a vectorised batch needs one value. :func:`uniform` returns the
  per-sample value when every sample agrees (constants have a sample axis of 1
  and always agree) and raises otherwise, naming the layer.
* **Indices stored as float blobs** (gather/scatter/embedding). Core ML casts
  them to integers; :func:`indices` rounds, wraps negative indices once and
  rejects out-of-range ones with a message instead of reading garbage. Index
  blobs may differ per sample.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.executors.ops.base import Op, broadcast_samples

#: Scatter accumulation modes (``ScatterMode`` enum order in NeuralNetwork.proto).
SCATTER_MODES = ("UPDATE", "ADD", "SUB", "MUL", "DIV", "MAX", "MIN")
_SCATTER_UFUNCS = {
    "ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.divide,
    "MAX": np.maximum, "MIN": np.minimum,
}


def positive_shape(op: Op, shape: Sequence[int], what: str) -> tuple[int, ...]:
    """``shape`` as a tuple of ints; the op's error unless it is a non-empty list of positive sizes."""
    s = tuple(int(d) for d in shape)
    if not s or any(d <= 0 for d in s):
        raise op.error(f"{what} {list(s)} must be a non-empty list of positive sizes")
    return s


def uniform(op: Op, x: np.ndarray, what: str) -> np.ndarray:
    """The per-sample value of ``x`` when every sample holds the same one.

    Raises the op's error when samples differ: the numpy executor runs the
    batch as one array, so shapes, counts and loop decisions must agree.
    """
    if x.shape[0] == 1 or bool(np.all(x == x[:1])):
        return x[0]
    raise op.error(
        f"{what} (input blob {x.shape[1:]} per sample) differs between the samples of the batch; "
        f"the numpy executor needs it to be the same for every sample: run such samples one at a time")


def uniform_ints(op: Op, x: np.ndarray, what: str) -> list[int]:
    """:func:`uniform` as a flat list of Python ints (shapes, counts)."""
    v = np.asarray(uniform(op, x, what)).reshape(-1)
    if not np.all(np.isfinite(v)) or not np.all(v == np.round(v)):
        raise op.error(f"{what} must hold integers, got {v.tolist()}")
    return [int(i) for i in v]


def uniform_scalar(op: Op, x: np.ndarray, what: str) -> float:
    """:func:`uniform` for a scalar (rank-1, one element) input."""
    v = np.asarray(uniform(op, x, what)).reshape(-1)
    if v.size != 1:
        raise op.error(f"{what} must be a scalar (one value per sample), got shape {tuple(x.shape[1:])}")
    return float(v[0])


def indices(op: Op, x: np.ndarray, dim: int | np.ndarray, what: str = "index") -> np.ndarray:
    """Float (or int) index blob -> int64, negative indices wrapped, range-checked against ``dim``."""
    i = np.rint(x).astype(np.int64) if x.dtype.kind == "f" else x.astype(np.int64)
    i = np.where(i < 0, i + dim, i)
    bad = (i < 0) | (i >= dim)
    if np.any(bad):
        v = np.asarray(x)[bad].reshape(-1)[:5]
        raise op.error(f"{what} values {v.tolist()} are out of range for a dimension of size {dim}")
    return i


def norm_axis(op: Op, a: int, r: int, what: str = "axis") -> int:
    """Non-negative per-sample axis of ``a`` for a Core ML rank ``r`` (error if out of range)."""
    if not -r <= a < r:
        raise op.error(f"{what} {a} is out of range for a rank-{r} tensor")
    return a % r


def gather(data: np.ndarray, idx: np.ndarray, a: int) -> np.ndarray:
    """Per-sample ``np.take(data[n], idx[n], axis=a)`` for every sample n, vectorised.

    ``data`` is ``(Nd, *ds)``, ``idx`` an int array ``(Ni, *is)`` (one of Nd, Ni
    may be 1); the result is ``(N, *ds[:a], *is, *ds[a+1:])``.
    """
    if idx.shape[0] == 1:
        return np.take(data, idx[0], axis=a + 1)
    if data.shape[0] == 1:
        return np.moveaxis(np.take(data[0], idx, axis=a), a, 0)
    data, idx = broadcast_samples(data, idx)
    n, li = data.shape[0], idx.ndim - 1
    dm = np.moveaxis(data, a + 1, 1)  # (N, D, *ds[:a], *ds[a+1:])
    g = dm[np.arange(n).reshape((n,) + (1,) * li), idx]  # (N, *is, *ds[:a], *ds[a+1:])
    perm = [0] + list(range(1 + li, 1 + li + a)) + list(range(1, 1 + li)) + list(range(1 + li + a, g.ndim))
    return g.transpose(perm)


def c_copy(x: np.ndarray) -> np.ndarray:
    """A C-ordered copy of ``x``. ``np.array``'s default order K copies a broadcast view (stride 0 on the sample
    axis of a constant) with the sample axis innermost, and every later read along another axis pays for it:
    the converter's GRU loop scatters each step into its broadcast state buffer, and gathering a step from the
    order-K copy took 50 us instead of 2.7 (256 samples x 9 x 20)."""
    return np.array(x, order="C")


def scatter_apply(out: np.ndarray, where: tuple, updates: np.ndarray, mode: str, unique: bool = False) -> None:
    """``out[where] (op)= updates`` in place for a ScatterMode name (repeated indices accumulate).

    ``unique``: the caller knows ``where`` addresses no element twice, so one gather-compute-scatter
    replaces the (much slower) unbuffered ``ufunc.at``.
    """
    if mode == "UPDATE":
        out[where] = updates
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        if unique:
            out[where] = _SCATTER_UFUNCS[mode](out[where], updates)
        else:
            _SCATTER_UFUNCS[mode].at(out, where, updates)


def scatter_mode(op: Op, value: int) -> str:
    """ScatterMode enum value -> name (error for unknown values)."""
    if not 0 <= int(value) < len(SCATTER_MODES):
        raise op.error(f"scatter mode {value} is not one of {SCATTER_MODES}")
    return SCATTER_MODES[int(value)]


def sample_index(n: int, ndim: int) -> np.ndarray:
    """``arange(n)`` shaped ``(n, 1, ..., 1)`` (``ndim`` trailing ones) for advanced indexing."""
    return np.arange(n).reshape((n,) + (1,) * ndim)


def expand_shape(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
    """``shape`` with size-1 dims inserted at ``axes`` (non-negative positions in the result)."""
    out = list(shape)
    for a in sorted(axes):
        out.insert(a, 1)
    return tuple(out)
