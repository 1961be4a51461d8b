"""Mean/variance normalizations: ``mvn`` (legacy, used for layer norm by the converter) and ``layerNormalization``.

Both compute ``(x - mean) / sqrt(var + eps)`` with the biased variance over
the normalized axes (two-pass, float32), which is what PyTorch's
``layer_norm`` computes; the converter turns ``nn.LayerNorm`` into
``reshapeStatic -> mvn -> scale -> reshapeStatic``.
"""
from __future__ import annotations

import numpy as np

from harness.executors.ops import _kernels
from harness.executors.ops.base import F32, Op, f32, rank
from harness.executors.registry import register


def normalize(x: np.ndarray, axes: tuple[int, ...], eps: float, variance: bool = True,
              gamma: np.ndarray | None = None, beta: np.ndarray | None = None) -> np.ndarray:
    """Subtract the mean over numpy ``axes`` and (if ``variance``) divide by ``sqrt(var + eps)``;
    then ``* gamma + beta`` (flat vectors over the normalized trailing axes; trailing axes only)."""
    x = f32(x)
    axes = tuple(sorted(a % x.ndim for a in axes))
    if axes == tuple(range(x.ndim - len(axes), x.ndim)):  # trailing axes: row-wise chunked kernel
        return _kernels.normalize_rows(x, len(axes), eps, variance, gamma, beta)
    d = x - x.mean(axis=axes, keepdims=True, dtype=F32)
    if not variance:
        return d
    var = np.mean(d * d, axis=axes, keepdims=True, dtype=F32)
    return (d / np.sqrt(var + F32(eps))).astype(F32)


@register("mvn")
class MVN(Op):
    """Normalize over (H, W) per channel, or over (C, H, W) with ``acrossChannels``; eps defaults to 1e-6."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.across = bool(params.acrossChannels)
        self.variance = bool(params.normalizeVariance)
        self.eps = float(params.epsilon) or 1e-6
        self.scale = None  # a following ``scale`` op folded in by harness.executors.fusion
        self._affine: dict[tuple[int, ...], tuple] = {}
        self._rows: dict[tuple[int, ...], tuple | None] = {}  # input shape -> (k, gamma, beta) of the row kernel

    def absorb_scale(self, scale: Op) -> None:
        """Compute ``scale`` (the only reader of this op's output) in the same pass: layer norm."""
        self.scale = scale
        self.outputs = list(scale.outputs)

    def run(self, x):
        rows = self._rows.get(x.shape, False)
        if rows is False:
            rows = self._rows[x.shape] = self._row_plan(x)
        if rows is not None:  # the common case, decided once per input shape (ops of 10 us: the checks showed)
            return _kernels.normalize_rows(f32(x), rows[0], self.eps, self.variance, rows[1], rows[2])
        # scale/bias vary along an axis the mvn does not normalize
        return self.scale.run(normalize(x, self._axes(x), self.eps, self.variance))

    def _axes(self, x: np.ndarray) -> tuple[int, ...]:
        return tuple(a % x.ndim for a in ((-3, -2, -1) if self.across else (-2, -1)))

    def _row_plan(self, x: np.ndarray) -> tuple | None:
        """``(k, gamma, beta)`` for the row kernel over the last k axes, or None when the folded scale
        must run after the normalization (raises the layer's error for an input of rank < 3)."""
        if rank(x) < 3:
            raise self.error(f"needs an input of rank >= 3 (..., C, H, W), got rank {rank(x)}")
        k = 3 if self.across else 2
        if self.scale is None:
            return k, None, None
        affine = self._affine_rows(x)
        return None if affine is None else (k, *affine)

    def _affine_rows(self, x: np.ndarray) -> tuple | None:
        """The folded scale's (gamma, beta) as flat vectors over the normalized axes, per input shape."""
        chw = tuple(x.shape[-3:])
        if chw not in self._affine:
            k = 3 if self.across else 2
            rows = []
            for v in (self.scale.s, self.scale.b):
                if v is None:
                    rows.append(None)
                    continue
                full = np.broadcast_to(v, chw).reshape((-1,) + chw[3 - k:])  # (lead, normalized...)
                rows.append(full[0].reshape(-1) if (full == full[:1]).all() else False)
            ok = all(r is not False for r in rows) and self.scale.s.size and self._fits(chw)
            self._affine[chw] = tuple(np.ascontiguousarray(r, F32) if r is not None else None for r in rows) if ok else None
        return self._affine[chw]

    def _fits(self, chw: tuple[int, ...]) -> bool:
        from harness.executors.ops.elementwise import _check_3d

        fake = np.empty((1,) + chw, F32)
        try:
            _check_3d(self.scale, fake, self.scale.s, "scale")
            if self.scale.b is not None:
                _check_3d(self.scale, fake, self.scale.b, "bias")
        except Exception:
            return False  # the unfused path raises the scale layer's own error
        return True


@register("layerNormalization")
class LayerNormalization(Op):
    """Normalize over the trailing ``normalizedShape`` axes, then ``* gamma + beta`` (both of that shape)."""

    n_inputs = 1

    def build(self, params, ctx) -> None:
        self.shape = tuple(int(s) for s in params.normalizedShape)
        if not self.shape or any(s <= 0 for s in self.shape):
            raise self.error(f"normalizedShape {list(self.shape)} must be a non-empty list of positive sizes")
        self.eps = float(params.eps)
        self.gamma = self.weights("gamma", self.shape, 0) if self.has_weights("gamma") else None
        self.beta = self.weights("beta", self.shape, 0) if self.has_weights("beta") else None

    def run(self, x):
        k = len(self.shape)
        if rank(x) < k or tuple(x.shape[-k:]) != self.shape:
            raise self.error(f"the input's trailing dims {tuple(x.shape[1:])} do not end in normalizedShape {self.shape}")
        y = normalize(x, tuple(range(x.ndim - k, x.ndim)), self.eps)
        if self.gamma is not None:
            y = y * self.gamma
        if self.beta is not None:
            y = y + self.beta
        return y.astype(F32)
