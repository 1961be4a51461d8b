"""Convolution inputs as patch rows (im2col) in the column order of :mod:`quantizer.algorithms.stats`, chunk by chunk.

A convolution ``[Cout, Cin/g, kH, kW]`` computes, for group ``gi``, every
output position and sample, ``W_gi @ p`` where ``p`` is the patch of input
channels ``[gi*Cin/g, (gi+1)*Cin/g)`` flattened in ``(c, kh, kw)`` row-major
order (zero padding included). :func:`conv_patch_rows` yields those patches as
``(G, n, (Cin/g)*kH*kW)`` arrays, a few samples at a time so that no chunk
exceeds ``max_bytes``; :func:`hwc_to_chw_order` reorders patches built
channels-last ``(kh, kw, c)`` (as the numpy executor's im2col does).

>>> import numpy as np
>>> x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
>>> rows = np.concatenate(list(conv_patch_rows(x, ConvGeometry((2, 2)))), axis=1)
>>> rows[0].tolist()
[[0.0, 1.0, 3.0, 4.0], [1.0, 2.0, 4.0, 5.0], [3.0, 4.0, 6.0, 7.0], [4.0, 5.0, 7.0, 8.0]]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["ConvGeometry", "conv_patch_rows", "hwc_to_chw_order", "same_padding"]

#: Upper bound (bytes) of one chunk of patch rows.
MAX_PATCH_BYTES = 32 << 20


def _pair(v, name: str) -> tuple[int, int]:
    t = tuple(int(a) for a in (v if isinstance(v, (tuple, list)) else (v, v)))
    if len(t) != 2 or min(t) < 1:
        raise ValueError(f"{name} must be one or two positive integers, got {v!r}")
    return t


@dataclass(frozen=True)
class ConvGeometry:
    """A convolution's window: ``kernel (kH, kW)``, ``stride``, ``dilation``, explicit
    ``padding (top, bottom, left, right)`` (resolve ``same`` padding with
    :func:`same_padding` first) and ``groups``."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", _pair(self.kernel, "kernel"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation"))
        pad = tuple(int(p) for p in self.padding)
        if len(pad) != 4 or min(pad) < 0:
            raise ValueError(f"padding must be (top, bottom, left, right) >= 0, got {self.padding!r}")
        object.__setattr__(self, "padding", pad)
        if int(self.groups) < 1:
            raise ValueError(f"groups must be >= 1, got {self.groups!r}")
        object.__setattr__(self, "groups", int(self.groups))

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        pt, pb, pl, pr = self.padding
        ho = (h + pt + pb - ((kh - 1) * dh + 1)) // sh + 1
        wo = (w + pl + pr - ((kw - 1) * dw + 1)) // sw + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"kernel {self.kernel} (dilation {self.dilation}) does not fit a padded {h}x{w} input")
        return ho, wo

    def columns(self, in_channels: int) -> int:
        """``(Cin/g) * kH * kW``: the columns of each group's matrix."""
        if in_channels % self.groups:
            raise ValueError(f"{in_channels} input channels are not divisible into {self.groups} groups")
        return (in_channels // self.groups) * self.kernel[0] * self.kernel[1]


def same_padding(h: int, w: int, kernel, stride=(1, 1), dilation=(1, 1), top_left_heavy: bool = False) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of Core ML ``same`` padding (BOTTOM_RIGHT_HEAVY unless
    ``top_left_heavy``), as the executor resolves it."""
    out = []
    for size, k, s, d in zip((h, w), _pair(kernel, "kernel"), _pair(stride, "stride"), _pair(dilation, "dilation")):
        ek = (k - 1) * d + 1
        total = max(0, (-(-size // s) - 1) * s + ek - size)
        small = total // 2
        out += [total - small, small] if top_left_heavy else [small, total - small]
    return tuple(out)


def conv_patch_rows(x: np.ndarray, geometry: ConvGeometry, *, dtype=np.float32,
                    max_bytes: int = MAX_PATCH_BYTES) -> Iterator[np.ndarray]:
    """Yield the patch rows of input ``x`` ``(..., Cin, H, W)`` (leading axes are samples) as
    ``(G, n, (Cin/g)*kH*kW)`` arrays of ``dtype``, rows ordered (sample, ho, wo), columns
    ``(c, kh, kw)``; each chunk holds whole samples and at most ~``max_bytes``."""
    x = np.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"a convolution input must be (..., C, H, W), got shape {x.shape}")
    c, h, w = x.shape[-3:]
    x = x.reshape((-1, c, h, w))
    g = geometry.groups
    cols = geometry.columns(c)
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    pt, pb, pl, pr = geometry.padding
    ho, wo = geometry.output_size(h, w)
    per_sample = ho * wo * g * cols * np.dtype(dtype).itemsize
    step = max(1, int(max_bytes // max(1, per_sample)))
    for lo in range(0, x.shape[0], step):
        xs = x[lo:lo + step]
        m = xs.shape[0]
        xp = np.zeros((m, c, h + pt + pb, w + pl + pr), dtype=dtype)
        xp[:, :, pt:pt + h, pl:pl + w] = xs
        st = xp.strides
        # (m, ho, wo, C, kh, kw): a strided view of the windows
        v = as_strided(xp, (m, ho, wo, c, kh, kw),
                       (st[0], st[2] * sh, st[3] * sw, st[1], st[2] * dh, st[3] * dw), writeable=False)
        v = v.reshape(m * ho * wo, g, cols) if g == 1 else np.ascontiguousarray(v).reshape(m * ho * wo, g, cols)
        yield np.ascontiguousarray(v.transpose(1, 0, 2))


def hwc_to_chw_order(kernel, channels: int) -> np.ndarray:
    """Column permutation ``p`` such that ``patches_hwc[..., p]`` is in ``(c, kh, kw)`` order, for
    patches flattened channels-last ``(kh, kw, c)`` (``channels`` = Cin/g)."""
    kh, kw = _pair(kernel, "kernel")
    c, i, j = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    return ((i * kw + j) * channels + c).reshape(-1)
