"""Layer statistics for calibration-aware quantization: the input Gram matrix and mean input of one weight tensor.

Matricization convention
------------------------
Every algorithm here sees a weight tensor as ``G`` independent matrices
``W_g`` of shape ``(R, C)``: rows are output channels, columns are the inputs
the layer multiplies them with, so that the layer computes ``y = W_g x + b``
for every *row* ``x`` (length ``C``) of its calibration inputs, and the Gram
matrix is ``H_g = sum_rows x x^T`` (``C x C``). The stored tensor's row-major
flattening is ``(G * R, C)`` in every case below -- output channels on axis 0,
as ``quantizer.tensors`` reports (channel axis 0) -- so
``W.reshape(G, R, C)`` is the matricization and the codecs' per-channel scales
are per row:

==================  ==========================  ====  ============  ===========================================
layer               stored weights shape        G     R             C (column order) and the rows ``x``
==================  ==========================  ====  ============  ===========================================
convolution         ``[Cout, Cin/g, kH, kW]``   ``g``  ``Cout/g``   ``(Cin/g)*kH*kW`` in ``(c, kh, kw)`` row-major
                                                                     order: one im2col patch of the input
                                                                     channels ``[gi*Cin/g, (gi+1)*Cin/g)`` of group
                                                                     ``gi`` per output position and sample, zero
                                                                     padding included
                                                                     (:func:`quantizer.algorithms.patches.conv_patch_rows`). Output
                                                                     channel ``co`` is in group ``co // (Cout/g)``.
                                                                     Depthwise (``Cin/g == 1``): ``C = kH*kW``.
innerProduct        ``[Cout, Cin]``             1     ``Cout``       ``Cin``; an input of Core ML rank <= 3
                                                                     ``(..., Cin)`` gives one row per leading
                                                                     index (flattened); rank 4/5 ``(..., C, H, W)``
                                                                     gives rows ``(C, H, W)`` flattened row-major.
batchedMatmul       ``(X2, X1)``: the proto's   1     ``X2``         ``X1`` (``weightMatrixFirstDimension``, the
(one input,         ``[X1, X2]`` matrix stored                       input's last axis): ``y = a @ W[X1,X2]``, and
stored weights)     column-major                                     stored column-major the flat buffer is the
                                                                     row-major ``(X2, X1) = W^T``, exactly like
                                                                     innerProduct. coremltools quantizes it with
                                                                     ``shape=(x2, x1)``, axis 0: ``X2`` scales.
==================  ==========================  ====  ============  ===========================================

Not covered (the integrator falls back to round-to-nearest): deconvolution
(``[Cin, Cout/g, kH, kW]``, channel axis 1, a scatter not a patch product),
recurrent gate matrices, embeddings.

Memory: a full ``H`` is ``C^2`` float64 per group. Above
:data:`FULL_GRAM_MAX_COLUMNS` columns only the diagonal blocks of ``H`` (of
``block`` consecutive columns, in the column order above) are kept -- the
block-diagonal approximation, sized by :func:`block_size_for` so a layer's
statistics stay within :data:`BLOCK_GRAM_BUDGET_BYTES`.

>>> import numpy as np
>>> acc = GramAccumulator(3)
>>> acc.add(np.array([[1, 0, 2], [0, 1, 0]], np.float32))
>>> s = acc.stats()
>>> s.gram[0].tolist(), s.mean[0].tolist(), s.rows
([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [2.0, 0.0, 4.0]], [0.5, 0.5, 1.0], 2)
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from threadpoolctl import threadpool_limits

__all__ = [
    "FULL_GRAM_MAX_COLUMNS",
    "BLOCK_GRAM_BUDGET_BYTES",
    "block_size_for",
    "LayerStats",
    "GramAccumulator",
    "matricize",
    "dense_rows",
]

#: Widest layer (columns per group) whose full Gram matrix is kept: 4096^2 float64 = 128 MiB.
#: (8192 would be 512 MiB for one layer -- beyond 4x the fp32 size of a 20 M-weight model.)
FULL_GRAM_MAX_COLUMNS = 4096
#: Bytes a block-diagonal Gram matrix of one layer may take (all groups, float64).
BLOCK_GRAM_BUDGET_BYTES = 64 << 20
#: Smallest diagonal block used (narrower blocks lose most of GPTQ's error feedback).
MIN_BLOCK = 16
#: Bytes of calibration rows turned into one GEMM (bounds temporaries; float32 products stay short).
CHUNK_BYTES = 16 << 20
#: Most rows per float32 product before it is added to the float64 total.
CHUNK_ROWS = 4096
#: Elements of H hashed at a time (a file-backed H is read a few MiB at a time).
_DIGEST_CHUNK = 1 << 20


def block_size_for(columns: int, groups: int = 1, unit: int = 1, *, max_full: int = FULL_GRAM_MAX_COLUMNS,
                   budget: int = BLOCK_GRAM_BUDGET_BYTES) -> int | None:
    """Diagonal block size for a layer's Gram matrix, or None to keep it full.

    Full when ``columns <= max_full``; otherwise the largest ``b`` with
    ``groups * columns * b * 8 <= budget`` (at least :data:`MIN_BLOCK`, at most
    ``max_full``), rounded down to a multiple of ``unit`` when ``unit <= b`` --
    pass ``unit = kH*kW`` so that blocks hold whole input channels of a
    convolution.

    >>> block_size_for(4096), block_size_for(65536), block_size_for(65536, unit=9)
    (None, 128, 126)
    """
    if columns <= max_full:
        return None
    b = budget // (8 * max(1, groups) * columns)
    b = int(max(MIN_BLOCK, min(b, max_full)))
    if 1 < unit <= b:
        b = (b // unit) * unit
    return b


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


class LayerStats:
    """What the calibration-aware algorithms know about one weight tensor's inputs (a value).

    Attributes:
        gram: float64 ``H = sum_rows x x^T`` per group: ``(G, C, C)``, or with
            ``block`` set the diagonal blocks only, ``(G, nb, block, block)`` with
            ``nb = ceil(C / block)`` (the last block zero-padded beyond ``C``).
        mean: float64 ``(G, C)``: the mean row ``E[x]`` per group.
        rows: number of rows accumulated (per group; every group sees the same count).
        block: None (full ``H``) or the diagonal block size.
        relu: None, or for a layer whose output feeds only a ReLU (through layers that only
            reshape it) the float64 ``(3, Cout)`` array of, per output channel, the sum over the
            calibration rows of ``relu(y)^2``, the mean ``E[y]`` and the share of rows with
            ``y > 0`` (its activity), ``y = W x + b`` the float pre-activation: what the ReLU-aware choice of
            :func:`quantizer.algorithms.relu_off.off_channels` reads.

    A 2-D ``gram`` (``C x C``) and 1-D ``mean`` are taken as one group. Arrays
    are held read-only (not copied when already float64 and contiguous: do not
    modify them afterwards). See the module docstring for how a layer's inputs
    become rows.

    :meth:`save` writes the statistics to two ``.npy`` files and a small JSON
    header; :meth:`open` reads them back *file-backed*: ``gram`` is then
    memory-mapped anew on every access (and unmapped when the caller drops
    it), so statistics kept between trials take no resident memory, and an
    algorithm holds one layer's ``H`` only while it works on that layer. The
    digest is stored in the header (no reading of ``H`` to identify it).
    """

    def __init__(self, gram: np.ndarray, mean: np.ndarray, rows: int, block: int | None = None,
                 relu: np.ndarray | None = None) -> None:
        gram = np.ascontiguousarray(gram, dtype="<f8")
        mean = np.ascontiguousarray(mean, dtype="<f8")
        if mean.ndim == 1:
            mean = mean[None]
        block = None if block is None else int(block)
        if block is None:
            if gram.ndim == 2:
                gram = gram[None]
            if gram.ndim != 3 or gram.shape[1] != gram.shape[2]:
                raise ValueError(f"gram must be (C, C) or (G, C, C) without block, got shape {gram.shape}")
        else:
            if gram.ndim == 3:
                gram = gram[None]
            if gram.ndim != 4 or gram.shape[2] != block or gram.shape[3] != block:
                raise ValueError(f"gram must be (G, nb, {block}, {block}) with block={block}, got shape {gram.shape}")
        if mean.ndim != 2 or mean.shape[0] != gram.shape[0]:
            raise ValueError(f"mean must be (G, C) with G={gram.shape[0]} groups, got shape {mean.shape}")
        c = mean.shape[1]
        if block is None and gram.shape[1] != c:
            raise ValueError(f"gram is {gram.shape[1]}x{gram.shape[1]} but mean has {c} columns")
        if block is not None and gram.shape[1] != -(-c // block):
            raise ValueError(f"{c} columns in blocks of {block} need {-(-c // block)} blocks, gram has {gram.shape[1]}")
        rows = int(rows)
        if rows < 0:
            raise ValueError(f"rows must be >= 0, got {rows}")
        if relu is not None:
            relu = np.ascontiguousarray(relu, dtype="<f8")
            if relu.ndim != 2 or relu.shape[0] != 3:
                raise ValueError(f"relu must be (3, Cout) (sum relu(y)^2, E[y], share of y > 0), got shape {relu.shape}")
            relu = _readonly(relu)
        self._relu = relu
        self._gram: np.ndarray | None = _readonly(gram)
        self._gram_shape = tuple(gram.shape)
        self._path: Path | None = None
        self._mean = _readonly(mean)
        self._rows = rows
        self._block = block
        self._digest: str | None = None

    # -- values ---------------------------------------------------------------------------
    @property
    def gram(self) -> np.ndarray:
        """``H`` (read-only); file-backed statistics map it from disk on each access."""
        if self._gram is not None:
            return self._gram
        return np.load(self._path, mmap_mode="r")

    @property
    def mean(self) -> np.ndarray:
        return self._mean

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def block(self) -> int | None:
        return self._block

    @property
    def relu(self) -> np.ndarray | None:
        """``(3, Cout)``: per output channel ``sum relu(y)^2``, ``E[y]`` and the share of rows with
        ``y > 0`` (None: no ReLU follows)."""
        return self._relu

    @property
    def file_backed(self) -> bool:
        """True for statistics from :meth:`open` (``gram`` is memory-mapped on access)."""
        return self._gram is None

    # -- shape ----------------------------------------------------------------------------
    @property
    def groups(self) -> int:
        return int(self._mean.shape[0])

    @property
    def columns(self) -> int:
        """Columns per group (``C``)."""
        return int(self._mean.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes of ``H`` and the mean (what the statistics take in memory, or on disk)."""
        return int(8 * np.prod(self._gram_shape) + self._mean.nbytes)

    def diag(self) -> np.ndarray:
        """``diag(H)`` per group, ``(G, C)`` float64: the energy ``sum x_j^2`` of every input."""
        gram = self.gram
        if self.block is None:
            return np.diagonal(gram, axis1=1, axis2=2).copy()
        d = np.diagonal(gram, axis1=2, axis2=3)  # (G, nb, block)
        return d.reshape(self.groups, -1)[:, : self.columns].copy()

    def dense(self) -> np.ndarray:
        """The (block-diagonal) ``H`` as full ``(G, C, C)`` matrices -- for tests and small layers."""
        gram = self.gram
        if self.block is None:
            return np.array(gram)
        g, nb, b, _ = gram.shape
        out = np.zeros((g, nb * b, nb * b))
        for k in range(nb):
            out[:, k * b:(k + 1) * b, k * b:(k + 1) * b] = gram[:, k]
        return out[:, : self.columns, : self.columns]

    def centered(self) -> "LayerStats":
        """Statistics of the centred inputs: ``H - rows * mean mean^T`` (diagonal blocks only
        when block-diagonal). GPTQ on these minimises the output error *after* bias correction."""
        n = float(self.rows)
        gram = self.gram
        if self.block is None:
            out = gram - n * self.mean[:, :, None] * self.mean[:, None, :]
        else:
            g, nb, b, _ = gram.shape
            m = np.zeros((g, nb * b))
            m[:, : self.columns] = self.mean
            m = m.reshape(g, nb, b)
            out = gram - n * m[..., :, None] * m[..., None, :]
        return LayerStats(out, self.mean, self.rows, self.block, self._relu)

    # -- identity -------------------------------------------------------------------------
    def digest(self) -> str:
        """sha256 (hex) of the shapes, ``rows``, ``block`` and the float64 little-endian bytes of
        ``gram`` and ``mean``: stable across processes and machines (computed once)."""
        if self._digest is None:
            h = hashlib.sha256()
            header = {"v": 1, "gram": list(self._gram_shape), "mean": list(self._mean.shape), "rows": self.rows,
                      "block": self.block, "dtype": "<f8"}
            h.update(b"qsweep.LayerStats\n" + json.dumps(header, sort_keys=True).encode() + b"\n")
            gram = self.gram
            flat = gram.reshape(-1)
            for a in range(0, flat.size, _DIGEST_CHUNK):  # file-backed: a few MiB resident at a time
                h.update(memoryview(np.ascontiguousarray(flat[a:a + _DIGEST_CHUNK])).cast("B"))
            h.update(memoryview(self._mean).cast("B"))
            if self._relu is not None:  # statistics without it keep their digest
                h.update(b"relu" + json.dumps(list(self._relu.shape)).encode())
                h.update(memoryview(self._relu).cast("B"))
            self._digest = h.hexdigest()
        return self._digest

    def __repr__(self) -> str:
        kind = "full" if self.block is None else f"block={self.block}"
        where = ", file-backed" if self.file_backed else ""
        return (f"LayerStats(groups={self.groups}, columns={self.columns}, rows={self.rows}, {kind}{where}, "
                f"{self.digest()[:12]})")

    # -- files ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the statistics as ``<path>.gram.npy``, ``<path>.mean.npy`` and ``<path>.json``
        (header with the digest); returns ``<path>.json``, the name :meth:`open` takes."""
        base = Path(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        np.save(_part(base, "gram.npy"), self.gram, allow_pickle=False)
        np.save(_part(base, "mean.npy"), self._mean, allow_pickle=False)
        if self._relu is not None:
            np.save(_part(base, "relu.npy"), self._relu, allow_pickle=False)
        header = {"format": "qsweep.LayerStats", "v": 1, "rows": self.rows, "block": self.block,
                  "gram": list(self._gram_shape), "mean": list(self._mean.shape), "digest": self.digest(),
                  "relu": self._relu is not None}
        out = _part(base, "json")
        out.write_text(json.dumps(header, sort_keys=True))
        return out

    @classmethod
    def open(cls, path: str | os.PathLike) -> "LayerStats":
        """File-backed statistics written by :meth:`save` (``path``: the ``.json`` header or the
        base path given to :meth:`save`). ``H`` stays on disk; the mean (small) is read."""
        p = Path(path)
        base = p.with_suffix("") if p.suffix == ".json" else p
        header = json.loads(_part(base, "json").read_text())
        if header.get("format") != "qsweep.LayerStats":
            raise ValueError(f"{_part(base, 'json')} is not a LayerStats header")
        gram_path = _part(base, "gram.npy")
        mm = np.load(gram_path, mmap_mode="r")
        if list(mm.shape) != header["gram"] or mm.dtype != np.dtype("<f8"):
            raise ValueError(f"{gram_path} holds {mm.dtype}{list(mm.shape)}, the header says <f8{header['gram']}")
        # the shape rules of __init__, checked on a zero-filled H of the recorded shape's first axes
        block = header["block"]
        mean = np.load(_part(base, "mean.npy"))
        probe = mm[..., :0, :0] if block is None else mm[:, :, :0, :0]
        del mm
        if (mean.ndim != 2 or mean.shape[0] != header["gram"][0] or probe.ndim != (3 if block is None else 4)
                or (block is not None and header["gram"][1] != -(-mean.shape[1] // block))
                or (block is None and header["gram"][1] != mean.shape[1])):
            raise ValueError(f"{_part(base, 'json')}: inconsistent shapes gram {header['gram']}, mean {list(mean.shape)}")
        obj = cls.__new__(cls)
        obj._gram, obj._path = None, gram_path
        obj._gram_shape = tuple(header["gram"])
        obj._mean = _readonly(np.ascontiguousarray(mean, dtype="<f8"))
        obj._rows, obj._block, obj._digest = int(header["rows"]), block, str(header["digest"])
        obj._relu = _readonly(np.load(_part(base, "relu.npy"))) if header.get("relu") else None
        return obj


def _part(base: Path, suffix: str) -> Path:
    return base.with_name(f"{base.name}.{suffix}")


class GramAccumulator:
    """Accumulate ``H = sum x x^T`` and ``sum x`` over batches of calibration rows, in bounded memory.

    Args:
        columns: ``C``, the row length (per group).
        groups: ``G`` (grouped/depthwise convolution); rows then come as ``(G, n, C)``.
        block: ``"auto"`` (:func:`block_size_for` with ``unit``), None (full ``H``) or
            an explicit diagonal block size.
        unit: passed to :func:`block_size_for` (``kH*kW`` for a convolution).
        dtype: dtype of the per-chunk products (float32: twice BLAS's float64 speed; each
            product sums at most :data:`CHUNK_ROWS` rows, the running total is float64).

    :meth:`add` takes ``(n, C)`` (one group) or ``(G, n, C)`` rows, any float dtype,
    optionally with ``column_order``: a permutation such that ``x[..., column_order]``
    is in this module's column order (e.g. :func:`quantizer.algorithms.patches.hwc_to_chw_order` for
    channels-last im2col patches).
    """

    def __init__(self, columns: int, *, groups: int = 1, block: int | str | None = "auto", unit: int = 1,
                 dtype=np.float32, relu_weights: np.ndarray | None = None, relu_bias: np.ndarray | None = None) -> None:
        self.columns, self.groups = int(columns), int(groups)
        if self.columns < 1 or self.groups < 1:
            raise ValueError(f"columns and groups must be >= 1, got {columns}, {groups}")
        self.block = block_size_for(self.columns, self.groups, unit) if block == "auto" else (
            None if block is None else int(block))
        self.dtype = np.dtype(dtype)
        g, c = self.groups, self.columns
        if self.block is None:
            self._gram = np.zeros((g, c, c))
        else:
            self._nb = -(-c // self.block)
            self._gram = np.zeros((g, self._nb, self.block, self.block))
        self._sum = np.zeros((g, c))
        self.rows = 0
        # a layer followed by a ReLU: its float weights (G, R, C) and bias (G, R) give y per row
        self._relu_w = None if relu_weights is None else matricize(np.asarray(relu_weights, np.float32), g)
        if self._relu_w is not None:
            r = self._relu_w.shape[1]
            self._relu_b = (np.zeros((g, r)) if relu_bias is None
                            else np.asarray(relu_bias, np.float64).reshape(g, r))
            self._relu_acc = np.zeros((3, g, r))

    def add(self, x: np.ndarray, column_order: np.ndarray | None = None) -> None:
        """Add a batch of rows: ``(n, C)`` when ``groups == 1``, else ``(G, n, C)``."""
        x = np.asarray(x)
        if x.ndim == 2 and self.groups == 1:
            x = x[None]
        if x.ndim != 3 or x.shape[0] != self.groups or x.shape[2] != self.columns:
            want = f"(n, {self.columns})" if self.groups == 1 else f"({self.groups}, n, {self.columns})"
            raise ValueError(f"rows must be {want}, got shape {x.shape}")
        n = x.shape[1]
        step = int(max(1, min(CHUNK_ROWS, CHUNK_BYTES // (self.dtype.itemsize * self.groups * self.columns))))
        for a in range(0, n, step):
            xc = x[:, a:a + step]
            if column_order is not None:
                xc = xc[..., column_order]
            xc = np.ascontiguousarray(xc, dtype=self.dtype)
            self._sum += xc.sum(axis=1, dtype=np.float64)
            self._accumulate(xc)
            if self._relu_w is not None:
                # y in the accumulator's dtype (float32: one short product per chunk), sums in float64
                y = np.matmul(xc, self._relu_w.transpose(0, 2, 1).astype(xc.dtype, copy=False))
                y += self._relu_b[:, None, :].astype(y.dtype)
                self._relu_acc[1] += y.sum(axis=1, dtype=np.float64)
                self._relu_acc[2] += (y > 0).sum(axis=1)
                np.maximum(y, 0, out=y)
                self._relu_acc[0] += np.einsum("gnr,gnr->gr", y, y, dtype=np.float64)
        self.rows += n

    def _accumulate(self, xc: np.ndarray) -> None:
        if self.columns == 1 and self.block is None:  # one value per group (batchnorm channels): sum of squares
            self._gram[:, 0, 0] += np.einsum("gn,gn->g", xc[..., 0], xc[..., 0], dtype=np.float64)
            return
        if self.block is None:
            for gi in range(self.groups):  # x^T x: numpy calls BLAS syrk for a matrix times its own transpose
                self._gram[gi] += xc[gi].T @ xc[gi]
            return
        b, nb, c = self.block, self._nb, self.columns
        if nb * b != c:
            pad = np.zeros(xc.shape[:2] + (nb * b,), dtype=xc.dtype)
            pad[..., :c] = xc
            xc = pad
        xb = xc.reshape(self.groups, -1, nb, b)
        kstep = max(1, (8 << 20) // (8 * b * b))  # blocks per product: temporaries of ~8 MiB
        # a stack of small products: one BLAS thread each (measured 2.2 s vs 40.5 s on 2 threads, 65 536 columns)
        with threadpool_limits(1, user_api="blas"):
            for gi in range(self.groups):
                for k0 in range(0, nb, kstep):
                    blocks = np.ascontiguousarray(xb[gi, :, k0:k0 + kstep].transpose(1, 0, 2))  # (k, n, b)
                    self._gram[gi, k0:k0 + kstep] += np.matmul(blocks.transpose(0, 2, 1), blocks)

    def add_conv_input(self, x: np.ndarray, geometry) -> None:
        """Add a convolution's input batch ``(..., Cin, H, W)``: its patch rows, chunk by chunk
        (see :func:`quantizer.algorithms.patches.conv_patch_rows`)."""
        from .patches import conv_patch_rows

        for rows in conv_patch_rows(x, geometry):
            self.add(rows)

    def stats(self, copy: bool = True) -> LayerStats:
        """The statistics so far: copies (accumulation may go on), or with ``copy=False`` the
        accumulator's own ``H`` (no second copy of a large ``H``; the accumulator is finished)."""
        mean = self._sum / max(self.rows, 1)
        gram = self._gram.copy() if copy else self._gram
        if not copy:
            self._gram = None  # type: ignore[assignment]  # finished: a further add() fails loudly
        relu = None
        if self._relu_w is not None:
            n = max(self.rows, 1)
            relu = np.stack([self._relu_acc[0].reshape(-1), self._relu_acc[1].reshape(-1) / n,
                             self._relu_acc[2].reshape(-1) / n])
        return LayerStats(gram, mean, self.rows, self.block, relu)


def matricize(weights: np.ndarray, groups: int = 1) -> np.ndarray:
    """The ``(G, R, C)`` view of a stored weight tensor with output channels on axis 0 (see the
    module docstring); a view when ``weights`` is contiguous."""
    w = np.asarray(weights)
    if w.ndim < 2:
        raise ValueError(f"weights must have rank >= 2 (output channels first), got shape {w.shape}")
    cout = w.shape[0]
    if cout % groups:
        raise ValueError(f"{cout} output channels are not divisible into {groups} groups")
    return w.reshape(groups, cout // groups, -1)


def dense_rows(x: np.ndarray, in_features: int) -> np.ndarray:
    """innerProduct / batchedMatmul input blob (sample axis first, as the numpy executor holds
    it) as rows ``(n, in_features)``, the way innerProduct reads it: Core ML rank <= 3
    (``x.ndim <= 4``) by the last axis, rank 4/5 ``(..., C, H, W)`` with the last three axes
    flattened (``C*H*W == in_features``)."""
    x = np.asarray(x)
    flat = x.reshape(x.shape[: x.ndim - 3] + (-1,)) if x.ndim - 1 >= 4 else x
    if flat.shape[-1] != in_features:
        raise ValueError(f"input of shape {x.shape} gives rows of {flat.shape[-1]} values, the layer expects {in_features}")
    return flat.reshape(-1, in_features)


def accumulate(rows: Iterable[np.ndarray], columns: int, **kwargs) -> LayerStats:
    """:class:`GramAccumulator` over an iterable of row batches, returning its :class:`LayerStats`."""
    acc = GramAccumulator(columns, **kwargs)
    for r in rows:
        acc.add(r)
    return acc.stats()
