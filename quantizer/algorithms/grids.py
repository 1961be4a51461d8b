"""Quantization grids of Core ML's storage formats, and the quantized tensor they produce.

A grid maps a column of (error-corrected) weights to integer indices and the
values the runtime will decode from them. The grids are the round-to-nearest
codecs of :mod:`quantizer.codecs` with the same float32 arithmetic, so that
quantizing the original weights with no error feedback gives exactly
quantizer's (and coremltools') indices:

- ``linear``: per output channel ``q = round((w - min) * (1/scale))`` clipped to
  ``[0, 2^n - 1]``, decoded ``q * scale + min``; scale/min from the *original*
  weights (:func:`quantizer.codecs.linear_quantize`).
- ``linear_symmetric``: ``q = round((w - bias) / scale)``, ``bias = -2^(n-1) scale``,
  ``scale = max|w| / (2^(n-1) - 1)`` per channel; clipped to ``[0, 2^n - 1]``.
- ``linear_lut``: the ``linear`` rule with one scale/min for the whole tensor;
  decoded through the stored float32 LUT ``arange(2^n) * scale + min``.
- ``kmeans_lut`` (or any fixed LUT): the nearest entry of the float32 table.

:class:`QuantizedTensor` holds the result in the form quantizer's writer
stores (``Encoded``: packed indices plus per-channel scale/bias or a LUT).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantizer.codecs import Encoded, linear_quantize, pack
from quantizer.kmeans import kmeans_lut

__all__ = ["Grid", "make_grid", "QuantizedTensor", "rtn", "MODES"]

MODES = ("linear", "linear_symmetric", "linear_lut", "kmeans_lut")
_F32 = np.float32


@dataclass
class Grid:
    """How one codec rounds: ``quantize(w, rows) -> (q uint8, decoded float32)``.

    ``w`` is ``(B, R)`` (a column of every problem), ``rows`` selects, for each of the
    B problems, the output channels its R rows are (an int array ``(B, R)``).
    """

    mode: str
    nbits: int
    scale: np.ndarray | None = None  # float32 per channel (linear modes)
    bias: np.ndarray | None = None
    lut: np.ndarray | None = None  # float32 [2^n] (LUT modes), as stored
    _mul: np.ndarray | None = field(default=None, repr=False)
    _mids: np.ndarray | None = field(default=None, repr=False)
    _order: np.ndarray | None = field(default=None, repr=False)

    @property
    def qmax(self) -> int:
        return (1 << self.nbits) - 1

    def row_params(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per-row arrays for problems whose rows are the output channels ``rows`` ((B, R) ints)."""
        if self.mode == "linear":
            return {"a": self.bias[rows], "mul": self._mul[rows], "scale": self.scale[rows]}
        if self.mode == "linear_symmetric":
            return {"bias": self.bias[rows], "scale": self.scale[rows]}
        return {}

    def quantize(self, w: np.ndarray, p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        w32 = np.asarray(w, dtype=_F32)
        if self.mode in ("linear", "linear_lut"):
            if self.mode == "linear":
                a, mul, scale = p["a"], p["mul"], p["scale"]
            else:
                a, mul = self.bias[0], self._mul[0]
            qf = w32 - a
            qf *= mul
        elif self.mode == "linear_symmetric":
            den, num = p["scale"], w32 - p["bias"]
            qf = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        else:
            idx = np.searchsorted(self._mids, w32.reshape(-1)).reshape(w32.shape)
            q = self._order[idx]
            return q, self.lut[q]
        np.round(qf, out=qf)
        np.clip(qf, 0, self.qmax, out=qf)
        q = qf.astype(np.uint8)
        if self.mode == "linear":
            return q, q.astype(_F32) * scale + a
        if self.mode == "linear_symmetric":
            return q, q.astype(_F32) * p["scale"] + p["bias"]
        return q, self.lut[q]


def make_grid(weights: np.ndarray, mode: str, nbits: int, lut: np.ndarray | None = None) -> Grid:
    """The grid of ``mode`` for a stored tensor (output channels on axis 0), from its original
    weights exactly as round-to-nearest computes it. For ``kmeans_lut`` pass the fixed ``lut``
    (default: quantizer's plain k-means LUT)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    nbits = int(nbits)
    if not 1 <= nbits <= 8 or (mode == "linear_symmetric" and nbits < 2):
        raise ValueError(f"nbits must be 1-8 (2-8 for linear_symmetric), got {nbits}")
    w = np.ascontiguousarray(weights, dtype=_F32)
    shape = w.shape if w.ndim >= 2 else (1,) + w.shape
    if mode in ("linear", "linear_symmetric"):
        _, scale, bias = linear_quantize(w.reshape(-1), nbits, shape, 0, symmetric=mode == "linear_symmetric")
        scale, bias = scale.astype(_F32), bias.astype(_F32)
        mul = np.divide(_F32(1.0), scale, out=np.zeros_like(scale), where=scale > 0)
        return Grid(mode, nbits, scale=scale, bias=bias, _mul=mul)
    if mode == "linear_lut":
        _, scale, bias = linear_quantize(w.reshape(-1), nbits, (w.size,), 0)
        scale, bias = scale.astype(_F32), bias.astype(_F32)
        mul = np.divide(_F32(1.0), scale, out=np.zeros_like(scale), where=scale > 0)
        table = (np.arange(1 << nbits) * np.float64(scale[0]) + np.float64(bias[0])).astype(_F32)
        return Grid(mode, nbits, scale=scale, bias=bias, lut=table, _mul=mul)
    if lut is None:
        lut, _ = kmeans_lut(w.reshape(-1), nbits)
    return lut_grid(lut, nbits)


def lut_grid(lut: np.ndarray, nbits: int) -> Grid:
    """A nearest-entry grid over a fixed table of ``2^nbits`` values (any order)."""
    table = np.asarray(lut, dtype=np.float64).reshape(-1)
    if table.size != 1 << nbits or not np.isfinite(table).all():
        raise ValueError(f"a {nbits}-bit LUT needs {1 << nbits} finite entries, got {table.size}")
    t32 = table.astype(_F32)
    order = np.argsort(t32, kind="stable").astype(np.uint8)
    srt = t32[order].astype(np.float64)
    mids = (0.5 * (srt[:-1] + srt[1:])).astype(_F32)
    return Grid("kmeans_lut", nbits, lut=t32, _mids=mids, _order=order)


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A tensor quantized to a Core ML storage format.

    ``indices``: uint8, one per weight, row-major in the stored ``shape``.
    ``scale``/``bias``: float32 per output channel (``linear``, ``linear_symmetric``);
    ``lut``: float32 ``[2^n]`` (``linear_lut``, ``kmeans_lut``). ``info``: what the
    algorithm did (damping used, order, blocks, ...), for the per-layer record.
    """

    mode: str
    nbits: int
    shape: tuple[int, ...]
    indices: np.ndarray
    scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    lut: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def dequantize(self) -> np.ndarray:
        """The float32 weights a runtime decodes (same arithmetic as ``quantizer.decode_weights``)."""
        q = self.indices.reshape(self.shape)
        if self.lut is not None:
            return self.lut[q]
        b = (-1,) + (1,) * (len(self.shape) - 1)
        return (q.astype(_F32) * self.scale.reshape(b) + self.bias.reshape(b)).astype(_F32)

    def encoded(self) -> Encoded:
        """quantizer's stored form: write it with ``Encoded.write(wp)`` (same WeightParams layout
        as round-to-nearest: ``rawValue`` + ``linearQuantization`` or ``lookupTableQuantization``)."""
        data = pack(self.indices, self.nbits)
        if self.lut is not None:
            return Encoded("lut", self.nbits, data, lut=self.lut.astype(_F32))
        return Encoded("linear", self.nbits, data, scale=self.scale.astype(_F32), bias=self.bias.astype(_F32))


def rtn(weights: np.ndarray, mode: str, nbits: int, lut: np.ndarray | None = None) -> QuantizedTensor:
    """Round-to-nearest on the same grid (for comparison and fallback): equals quantizer's codec
    for the linear modes and its k-means LUT codec when ``lut`` is None."""
    w = np.ascontiguousarray(weights, dtype=_F32)
    grid = make_grid(w, mode, nbits, lut)
    rows = np.arange(w.shape[0] if w.ndim >= 2 else 1)[:, None]
    w2 = w.reshape(rows.shape[0], -1)
    q, _ = grid.quantize(w2, grid.row_params(np.broadcast_to(rows, w2.shape)))
    return grid_result(grid, w.shape, q.reshape(-1), {"algorithm": "rtn"})


def grid_result(grid: Grid, shape: tuple[int, ...], indices: np.ndarray, info: dict[str, Any]) -> QuantizedTensor:
    if grid.mode in ("linear", "linear_symmetric"):
        return QuantizedTensor(grid.mode, grid.nbits, tuple(shape), indices, scale=grid.scale, bias=grid.bias, info=info)
    return QuantizedTensor(grid.mode, grid.nbits, tuple(shape), indices, lut=grid.lut, info=info)
