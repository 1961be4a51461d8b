"""Convolution and deconvolution (the ``convolution`` layer) as matrix multiplies.

Input ``(..., C, H, W)`` (Core ML rank >= 4; leading dims are batch). Weights:
convolution ``[Cout, Cin/groups, kH, kW]``; deconvolution ``[Cin, Cout/groups,
kH, kW]``. Padding: ``valid`` with ``paddingAmounts`` or ``same``
(BOTTOM_RIGHT_HEAVY / TOP_LEFT_HEAVY); dilation; deconvolution
``outputShape``.

Implementation: dense convolutions use im2col (a strided view of the padded
input, copied once into a ``(M*Ho*Wo, Cin*kH*kW)`` matrix in channels-last
order) and one GEMM per cache-sized block; 1x1 convolutions skip im2col; depthwise
convolutions are one compiled channels-last loop (:mod:`._jit`); deconvolution is one GEMM
followed by a col2im scatter-add per kernel offset.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from harness.executors.ops import _parallel as par
from harness.executors.ops.base import F32, Op, f32
from harness.executors.registry import register

#: Bytes of one im2col block: samples (or, for a large image, bands of output rows of one sample)
#: are copied and multiplied this much at a time, each thread its own block, so the columns the
#: copy writes are still in cache when the GEMM reads them. digits_resnet's convolutions at 1 thread
#: (batch 256, fastest of 10 runs): 159-172 ms with 64 MiB blocks, 142-144 with 8 MiB, 125-126 with
#: 1 MiB, 134 with 512 KiB; at 2 threads 84 ms with 32 MiB per thread, 74 with 1 MiB.
_COLS_BLOCK = 1 << 20


def pair(values, default: int) -> tuple[int, int]:
    """A length-2 ``[H, W]`` param (empty -> default)."""
    v = [int(x) for x in values]
    if not v:
        return default, default
    if len(v) == 1:
        return v[0], v[0]
    return v[0], v[1]


def valid_pads(valid) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a ValidPadding message."""
    b = valid.paddingAmounts.borderAmounts
    if len(b) == 0:
        return 0, 0, 0, 0
    if len(b) != 2:
        raise ValueError(f"paddingAmounts must have 2 entries [H, W], got {len(b)}")
    return int(b[0].startEdgeSize), int(b[0].endEdgeSize), int(b[1].startEdgeSize), int(b[1].endEdgeSize)


def same_pads(size: int, k: int, s: int, top_left_heavy: bool) -> tuple[int, int]:
    """(start, end) padding of SamePadding along one axis (k = effective kernel size)."""
    out = -(-size // s)
    total = max(0, (out - 1) * s + k - size)
    small = total // 2
    return (total - small, small) if top_left_heavy else (small, total - small)


def empty_like_layout(x: np.ndarray, shape: tuple[int, ...], dtype=F32) -> np.ndarray:
    """An uninitialised array of ``shape`` whose memory order of axes follows ``x``'s strides.

    Ops that produce channels-last data return NCHW-shaped *views* of it; keeping
    that memory order through padding and pooling makes the copies contiguous.
    """
    order = sorted(range(x.ndim), key=lambda a: (-abs(x.strides[a]) if x.shape[a] > 1 else 0, a))
    if order == list(range(x.ndim)):
        return np.empty(shape, dtype=dtype)
    buf = np.empty([shape[a] for a in order], dtype=dtype)
    return buf.transpose(np.argsort(order))


def pad_hw(x: np.ndarray, pt: int, pb: int, pl: int, pr: int, value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of ``x`` with a constant (no copy when no padding; keeps x's memory order)."""
    if not (pt or pb or pl or pr):
        return x
    h, w = x.shape[-2:]
    out = empty_like_layout(x, x.shape[:-2] + (h + pt + pb, w + pl + pr), x.dtype)
    if pt:
        out[..., :pt, :] = value
    if pb:
        out[..., pt + h:, :] = value
    if pl:
        out[..., pt:pt + h, :pl] = value
    if pr:
        out[..., pt:pt + h, pl + w:] = value
    out[..., pt:pt + h, pl:pl + w] = x
    return out


def windows(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, ho: int, wo: int) -> np.ndarray:
    """Strided view ``(..., kh, kw, ho, wo)`` of the kernel windows of ``xp`` (..., H, W)."""
    st = xp.strides
    return as_strided(
        xp, xp.shape[:-2] + (kh, kw, ho, wo),
        st[:-2] + (st[-2] * dh, st[-1] * dw, st[-2] * sh, st[-1] * sw), writeable=False)


@register("convolution")
class Convolution(Op):
    """2-D convolution / transposed convolution with groups, dilation and padding."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.cout = int(params.outputChannels)
        self.kc = int(params.kernelChannels)
        self.groups = max(1, int(params.nGroups))
        self.kh, self.kw = pair(params.kernelSize, 3)
        self.sh, self.sw = pair(params.stride, 1)
        self.dh, self.dw = pair(params.dilationFactor, 1)
        self.deconv = bool(params.isDeconvolution)
        self.out_shape = tuple(int(v) for v in params.outputShape)
        self.padding = params.WhichOneof("ConvolutionPaddingType") or "valid"
        self.tlh = self.padding == "same" and params.same.asymmetryMode == 1
        self.pads = valid_pads(params.valid) if self.padding == "valid" else None
        g = self.groups
        if self.cout % g:
            raise self.error(f"outputChannels={self.cout} is not divisible by nGroups={g}")
        if self.deconv:
            w = self.weights("weights", (self.kc, self.cout // g, self.kh, self.kw), 1)
            cin = self.kc
            if cin % g:
                raise self.error(f"kernelChannels={cin} is not divisible by nGroups={g}")
            # (g, Cin/g, Cout/g*kh*kw): per group, input channels -> output columns
            self.wd = np.ascontiguousarray(w.reshape(g, cin // g, (self.cout // g) * self.kh * self.kw))
            self.cin = cin
        else:
            w = self.weights("weights", (self.cout, self.kc, self.kh, self.kw), 0)
            self.cin = self.kc * g
            self.depthwise = g > 1 and self.kc == 1
            if self.depthwise:
                # (kh, kw, Cout): output channel co reads input channel co // (Cout/g)
                self.wdw = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
            else:
                # channels-last im2col columns (kh, kw, Cin/g) per group -> (g, kh*kw*Cin/g, Cout/g)
                cg = self.cout // g
                wg = w.reshape(g, cg, self.kc, self.kh, self.kw).transpose(0, 3, 4, 2, 1)
                self.wmat = np.ascontiguousarray(wg.reshape(g, self.kh * self.kw * self.kc, cg))
                self.wrows = np.ascontiguousarray(w.reshape(self.cout, -1)) if g == 1 else None
        self.b = self.weights("bias", (self.cout,), 0) if params.hasBias else None

    # -- helpers -------------------------------------------------------------
    def _pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        if self.pads is not None:
            return self.pads
        ekh, ekw = (self.kh - 1) * self.dh + 1, (self.kw - 1) * self.dw + 1
        pt, pb = same_pads(h, ekh, self.sh, self.tlh)
        pl, pr = same_pads(w, ekw, self.sw, self.tlh)
        return pt, pb, pl, pr

    def run(self, x):
        if x.ndim < 4:
            raise self.error(f"needs an input of rank >= 3 (C, H, W); got Core ML shape {tuple(x.shape[1:])}")
        lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
        if c != self.cin:
            raise self.error(f"input has {c} channels, the weights expect {self.cin}")
        xm = f32(x).reshape((-1, c, h, w))
        y = self._deconv(xm) if self.deconv else self._conv(xm)
        return y.reshape(lead + y.shape[1:])

    def _conv(self, x: np.ndarray) -> np.ndarray:
        m, c, h, w = x.shape
        pt, pb, pl, pr = self._pads(h, w)
        ekh, ekw = (self.kh - 1) * self.dh + 1, (self.kw - 1) * self.dw + 1
        ho = (h + pt + pb - ekh) // self.sh + 1
        wo = (w + pl + pr - ekw) // self.sw + 1
        if ho <= 0 or wo <= 0:
            raise self.error(f"the kernel ({self.kh}x{self.kw}, dilation {self.dh}x{self.dw}) does not fit the padded input {h}x{w}")
        if self.depthwise:
            return self._depthwise(x, (pt, pb, pl, pr), ho, wo)
        if c < 4 and self.groups == 1:
            return self._conv_cols_nchw(pad_hw(x, pt, pb, pl, pr), ho, wo)
        return self._conv_cols_nhwc(x, (pt, pb, pl, pr), ho, wo)

    def _conv_cols_nhwc(self, x: np.ndarray, pads: tuple[int, int, int, int], ho: int, wo: int) -> np.ndarray:
        """im2col in channels-last order + one GEMM per cache-sized block (:data:`_COLS_BLOCK`).

        With several threads, blocks of samples run concurrently, each doing its own padding, im2col
        copy and single-threaded GEMM (the copies are a large share of a ResNet's convolution time,
        and one thread did them all: digits_resnet at 2 threads 242 -> 175 ms, digits_cnn 12.0 ->
        8.5 ms); otherwise one thread copies and the GEMMs are split
        (:func:`~harness.executors.ops._parallel.matmul`). The sums over K are the same either way;
        BLAS may round a block differently from the whole (float32 rounding of the sum)."""
        m, c = x.shape[:2]
        k = self.kh * self.kw * c
        out = np.empty((m, ho, wo, self.cout), dtype=F32)
        t = par.threads()
        if t > 1 and m > 1 and m * ho * wo * k * self.cout >= par.SPLIT_MATMUL:
            grain = -(-m // (2 * t))  # two blocks of samples per thread

            def run(s: int, e: int) -> None:
                self._nhwc_block(x[s:e], pads, ho, wo, out[s:e], np.matmul)
            par.for_chunks(run, m, grain, n_threads=t)
        else:
            self._nhwc_block(x, pads, ho, wo, out, par.matmul)
        return out.transpose(0, 3, 1, 2)

    def _nhwc_block(self, x: np.ndarray, pads: tuple[int, int, int, int], ho: int, wo: int, out: np.ndarray,
                    matmul) -> None:
        """Samples ``x`` into ``out (m, Ho, Wo, Cout)``, one im2col block (:data:`_COLS_BLOCK`) at a time:
        several samples, or bands of output rows of one sample when one sample's columns are larger."""
        m, c, h, w = x.shape
        pt, pb, pl, pr = pads
        g, kc, kh, kw = self.groups, self.kc, self.kh, self.kw
        xn = np.zeros((m, h + pt + pb, w + pl + pr, c), dtype=F32)
        xn[:, pt:pt + h, pl:pl + w, :] = x.transpose(0, 2, 3, 1)
        st = xn.strides
        k = kh * kw * c
        row_bytes = wo * k * 4  # the columns of one output row
        step = max(1, _COLS_BLOCK // (ho * row_bytes))
        band = ho if step > 1 else max(1, min(ho, _COLS_BLOCK // row_bytes))
        for lo in range(0, m, step):
            hi = min(m, lo + step)
            v = as_strided(xn[lo:hi], (hi - lo, ho, wo, kh, kw, c),
                           (st[0], st[1] * self.sh, st[2] * self.sw, st[1] * self.dh, st[2] * self.dw, st[3]), writeable=False)
            for y0 in range(0, ho, band):  # one band (all rows) unless one sample is larger than a block
                y1 = min(ho, y0 + band)
                cols = np.ascontiguousarray(v[:, y0:y1]).reshape(-1, k)
                dst = out[lo:hi, y0:y1].reshape(-1, self.cout)  # contiguous: all rows, or one sample
                if g == 1:
                    matmul(cols, self.wmat[0], out=dst)
                else:
                    cg = cols.reshape(-1, kh * kw, g, kc).transpose(2, 0, 1, 3).reshape(g, -1, kh * kw * kc)
                    dst[...] = np.matmul(cg, self.wmat).transpose(1, 0, 2).reshape(-1, self.cout)
                if self.b is not None:
                    dst += self.b  # while the block is in cache

    def _conv_cols_nchw(self, xp: np.ndarray, ho: int, wo: int) -> np.ndarray:
        """Few input channels: im2col rows (C, kh, kw) x columns (M, Ho, Wo), one GEMM per block of samples
        (:data:`_COLS_BLOCK` of columns, blocks on the executor's threads); the result is
        ``(Cout, M, Ho, Wo)`` in memory, returned as an NCHW view. (crepe_tiny's first layer, 1 channel,
        kernel 512, batch 256: 134 ms at 1 thread with one 134 MB column matrix, 107-108 ms in blocks.)"""
        m, c = xp.shape[:2]
        win = windows(xp, self.kh, self.kw, self.sh, self.sw, self.dh, self.dw, ho, wo)  # (M, C, kh, kw, Ho, Wo)
        rows, per = c * self.kh * self.kw, ho * wo
        y = np.empty((self.cout, m * per), dtype=F32)
        step = max(1, _COLS_BLOCK // (rows * per * 4))

        def run(s: int, e: int) -> None:
            for lo in range(s, e, step):
                hi = min(e, lo + step)
                cols = np.ascontiguousarray(win[lo:hi].transpose(1, 2, 3, 0, 4, 5)).reshape(rows, (hi - lo) * per)
                dst = y[:, lo * per:hi * per]
                np.matmul(self.wrows, cols, out=dst)
                if self.b is not None:
                    dst += self.b[:, None]  # while the block is in cache
        t = par.threads()
        if t > 1 and m > 1 and m * per * rows * self.cout >= par.SPLIT_MATMUL:
            par.for_chunks(run, m, -(-m // (2 * t)), n_threads=t)
        else:
            run(0, m)
        return y.reshape(self.cout, m, ho, wo).transpose(1, 0, 2, 3)

    def _depthwise(self, x: np.ndarray, pads: tuple[int, int, int, int], ho: int, wo: int) -> np.ndarray:
        """Channels-last: one padding copy into ``(M, Hp, Wp, C)`` (a plain copy when ``x`` is a view of
        channels-last data, as a convolution's output is), then the compiled loop of
        :func:`~harness.executors.ops._jit.depthwise_nhwc` over blocks of samples on the executor's threads.
        Returns an NCHW view of channels-last memory. (The per-offset numpy passes it replaces took 18 ms
        for mobilenetv2's 64-channel 8x8 layer at batch 256, 1 thread.)"""
        from harness.executors.ops import _jit

        m, c, h, w = x.shape
        pt, pb, pl, pr = pads
        mult = self.cout // c
        xn = np.zeros((m, h + pt + pb, w + pl + pr, self.cout), dtype=F32)
        xt = x.transpose(0, 2, 3, 1)
        xn[:, pt:pt + h, pl:pl + w, :] = xt if mult == 1 else np.repeat(xt, mult, axis=3)
        out = np.empty((m, ho, wo, self.cout), dtype=F32)
        b = np.zeros(self.cout, F32) if self.b is None else self.b
        grain = max(1, par.GRAIN // max(1, ho * wo * self.cout * self.kh * self.kw))
        par.for_compiled(_jit.depthwise_chunks, m, grain, xn, self.wdw, b, self.sh, self.sw, self.dh, self.dw, out)
        return out.transpose(0, 3, 1, 2)

    def _deconv(self, x: np.ndarray) -> np.ndarray:
        m, c, h, w = x.shape
        g, cg, kh, kw = self.groups, self.cout // self.groups, self.kh, self.kw
        # columns: (M, H*W, Cout/g*kh*kw) per group
        xg = x.reshape(m, g, c // g, h * w).transpose(1, 0, 3, 2).reshape(g, m * h * w, c // g)
        cols = par.matmul(xg[0], self.wd[0])[None] if g == 1 else np.matmul(xg, self.wd)  # (g, M*H*W, Cout/g*kh*kw)
        cols = cols.reshape(g, m, h, w, cg, kh, kw).transpose(1, 0, 4, 5, 6, 2, 3).reshape(m, self.cout, kh, kw, h, w)
        hf = (h - 1) * self.sh + (kh - 1) * self.dh + 1
        wf = (w - 1) * self.sw + (kw - 1) * self.dw + 1
        full = np.zeros((m, self.cout, hf, wf), dtype=F32)
        hs, ws = (h - 1) * self.sh + 1, (w - 1) * self.sw + 1
        for i in range(kh):
            for j in range(kw):
                full[:, :, i * self.dh: i * self.dh + hs: self.sh, j * self.dw: j * self.dw + ws: self.sw] += cols[:, :, i, j]
        if self.out_shape:
            oh, ow = self.out_shape[-2:]
            pt, pl = (self.pads[0], self.pads[2]) if self.pads is not None else (
                self._deconv_same(hf, h * self.sh)[0], self._deconv_same(wf, w * self.sw)[0])
        elif self.pads is not None:
            pt, pb, pl, pr = self.pads
            oh, ow = hf - pt - pb, wf - pl - pr
        else:
            oh, ow = h * self.sh, w * self.sw
            pt, pl = self._deconv_same(hf, oh)[0], self._deconv_same(wf, ow)[0]
        if oh <= 0 or ow <= 0:
            raise self.error(f"output size {oh}x{ow} is not positive")
        y = full[:, :, pt: pt + oh, pl: pl + ow]
        if y.shape[-2:] != (oh, ow):  # outputShape beyond the computed extent: zeros
            y = pad_hw(y, 0, oh - y.shape[-2], 0, ow - y.shape[-1])
        if self.b is not None:
            y = y + self.b.reshape(1, -1, 1, 1)
        return np.ascontiguousarray(y)

    def _deconv_same(self, full: int, out: int) -> tuple[int, int]:
        total = max(0, full - out)
        small = total // 2
        return (total - small, small) if self.tlh else (small, total - small)
