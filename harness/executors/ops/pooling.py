"""Spatial pooling (the ``pooling`` layer): MAX, AVERAGE, L2; global; valid/same/includeLastPixel padding."""
from __future__ import annotations

import numpy as np

from harness.executors.ops import _parallel as par
from harness.executors.ops.base import F32, Op, f32
from harness.executors.ops.conv import pad_hw, pair, same_pads, valid_pads
from harness.executors.registry import register

MAX, AVERAGE, L2 = 0, 1, 2


@register("pooling")
class Pooling(Op):
    """Pooling over the last two axes of ``(..., C, H, W)``.

    AVERAGE divides by the window size, or with ``avgPoolExcludePadding`` by
    the number of input pixels in the window. L2 is ``sqrt(sum x^2)``.
    Computed as one vectorised max/add per kernel offset over strided views.
    """

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.kind = int(params.type)
        if self.kind not in (MAX, AVERAGE, L2):
            raise self.error(f"pooling type {self.kind} is not supported")
        self.kh, self.kw = pair(params.kernelSize, 3)
        self.sh, self.sw = pair(params.stride, 1)
        self.exclude = bool(params.avgPoolExcludePadding)
        self.glob = bool(params.globalPooling)
        self.padding = params.WhichOneof("PoolingPaddingType") or "valid"
        if self.padding == "valid":
            self.pads = valid_pads(params.valid)
        elif self.padding == "includeLastPixel":
            ph, pw = pair(params.includeLastPixel.paddingAmounts, 0)
            self.pads = (ph, ph, pw, pw)
        else:
            self.pads = None
            self.tlh = params.same.asymmetryMode == 1

    def run(self, x):
        if x.ndim < 4:
            raise self.error(f"needs an input of rank >= 3 (C, H, W); got Core ML shape {tuple(x.shape[1:])}")
        x = f32(x)
        if self.glob:
            ax = (-2, -1)
            if self.kind == MAX:
                return x.max(axis=ax, keepdims=True)
            if self.kind == AVERAGE:
                return x.mean(axis=ax, keepdims=True, dtype=F32)
            return np.sqrt(np.square(x).sum(axis=ax, keepdims=True))
        h, w = x.shape[-2:]
        kh, kw, sh, sw = self.kh, self.kw, self.sh, self.sw
        if self.padding == "same":
            pt, pb = same_pads(h, kh, sh, self.tlh)
            pl, pr = same_pads(w, kw, sw, self.tlh)
            ho, wo = -(-h // sh), -(-w // sw)
        elif self.padding == "includeLastPixel":
            pt, _, pl, _ = self.pads
            ho, wo = _include_last(h, kh, sh, pt, pl), _include_last(w, kw, sw, pl, pt)
            # windows may run past the padded input: extend the end padding
            pb, pr = max(pt, (ho - 1) * sh + kh - h - pt), max(pl, (wo - 1) * sw + kw - w - pl)
        else:
            pt, pb, pl, pr = self.pads
            ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
        if ho <= 0 or wo <= 0:
            raise self.error(f"the {kh}x{kw} window does not fit the padded {h}x{w} input")
        pads = (pt, pb, pl, pr)
        lead = x.shape[:-3]
        xm = x.reshape((-1,) + x.shape[-3:])
        m = xm.shape[0]
        t = par.threads()
        if t > 1 and m > 1 and x.size * kh * kw >= par.GRAIN:  # blocks of samples on the pool
            out = np.empty((m, x.shape[-3], ho, wo), F32)

            def run(s: int, e: int) -> None:
                out[s:e] = self._window(xm[s:e], h, w, pads, ho, wo)
            par.for_chunks(run, m, -(-m // (2 * t)), n_threads=t)
        else:
            out = self._window(xm, h, w, pads, ho, wo)
        return out.reshape(lead + out.shape[1:])

    def _window(self, x: np.ndarray, h: int, w: int, pads: tuple[int, int, int, int], ho: int, wo: int) -> np.ndarray:
        """The pooled ``(M, C, Ho, Wo)`` of samples ``x (M, C, H, W)``."""
        kh, kw, sh, sw = self.kh, self.kw, self.sh, self.sw
        pt, pb, pl, pr = pads
        fill = -np.inf if self.kind == MAX else 0.0
        src = np.square(x) if self.kind == L2 else x
        xp = pad_hw(src, pt, pb, pl, pr, fill)
        hs, ws = (ho - 1) * sh + 1, (wo - 1) * sw + 1
        acc = None
        for i in range(kh):
            for j in range(kw):
                v = xp[..., i: i + hs: sh, j: j + ws: sw]
                if acc is None:
                    acc = np.copy(v, order="K")
                elif self.kind == MAX:
                    np.maximum(acc, v, out=acc)
                else:
                    acc += v
        if self.kind == MAX:
            return acc
        if self.kind == L2:
            return np.sqrt(acc)
        return acc / self._counts(h, w, pt, pb, pl, pr, ho, wo)

    def _counts(self, h, w, pt, pb, pl, pr, ho, wo) -> np.ndarray:
        """Denominator per output pixel (window size, or real pixels with excludePadding)."""
        kh, kw, sh, sw = self.kh, self.kw, self.sh, self.sw
        if not self.exclude and self.padding != "includeLastPixel":
            return np.float32(kh * kw)
        if self.exclude:
            rows, cols = np.ones(h, F32), np.ones(w, F32)
        else:  # includeLastPixel: count the declared padding, not the extension past it
            rows = np.ones(h + 2 * self.pads[0], F32)
            cols = np.ones(w + 2 * self.pads[2], F32)
            pt, pb, pl, pr = 0, pb - self.pads[0], 0, pr - self.pads[2]
        rows = np.pad(rows, (pt, pb))
        cols = np.pad(cols, (pl, pr))
        rc = np.array([rows[i * sh: i * sh + kh].sum() for i in range(ho)], F32)
        cc = np.array([cols[j * sw: j * sw + kw].sum() for j in range(wo)], F32)
        return np.maximum(np.outer(rc, cc), F32(1))


def _include_last(size: int, k: int, s: int, pad: int, other_pad: int) -> int:
    out = -(-(size + 2 * pad - k) // s) + 1
    if (pad > 0 or other_pad > 0) and (out - 1) * s >= size + pad:
        out -= 1
    return out
