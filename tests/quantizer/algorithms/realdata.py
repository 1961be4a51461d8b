"""Real layers for the tests: zoo weights (quantizer.load + weight_tensors + decode_weights) and their real
inputs (the numpy executor run over digits samples: calibration rows from the training split, evaluation
rows from the test split)."""
from __future__ import annotations

import functools

import numpy as np

import quantizer
from quantizer.algorithms import ConvGeometry, conv_patch_rows, dense_rows, same_padding
from quantizer.tensors import layer_weights
from quantizer.walk import iter_layers


class RealLayer:
    def __init__(self, model: str, layer, weights: np.ndarray, calib: np.ndarray, test: np.ndarray):
        self.model, self.layer, self.name = model, layer, layer.name
        self.kind = layer.WhichOneof("layer")
        self.weights = weights  # stored shape
        p = getattr(layer, self.kind)
        self.has_bias = bool(p.hasBias)
        self.groups = max(1, int(p.nGroups)) if self.kind == "convolution" else 1
        self.calib = self.rows(calib)  # (G, n, C) float32
        self.test = self.rows(test)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.name}"

    def geometry(self, h: int, w: int) -> ConvGeometry:
        p = self.layer.convolution
        k = tuple(p.kernelSize) or (3, 3)
        s = tuple(p.stride) or (1, 1)
        d = tuple(p.dilationFactor) or (1, 1)
        if p.WhichOneof("ConvolutionPaddingType") == "same":
            pads = same_padding(h, w, k, s, d, p.same.asymmetryMode == 1)
        else:
            b = p.valid.paddingAmounts.borderAmounts
            pads = (b[0].startEdgeSize, b[0].endEdgeSize, b[1].startEdgeSize, b[1].endEdgeSize) if len(b) else (0, 0, 0, 0)
        return ConvGeometry(k, s, d, pads, max(1, int(p.nGroups)))

    def rows(self, blob: np.ndarray) -> np.ndarray:
        if self.kind == "convolution":
            geo = self.geometry(*blob.shape[-2:])
            return np.concatenate(list(conv_patch_rows(blob, geo)), axis=1)
        return dense_rows(blob, self.weights.shape[1])[None]

    def matrix(self, w: np.ndarray | None = None) -> np.ndarray:
        w = self.weights if w is None else w
        return w.reshape(self.groups, w.shape[0] // self.groups, -1)

    def output_error(self, w_hat: np.ndarray, delta: np.ndarray | None = None, rows: str = "test") -> float:
        """sum over rows and channels of (W x - (W_hat x + delta))^2 (float64)."""
        x = self.test if rows == "test" else self.calib
        d = (self.matrix().astype(np.float64) - self.matrix(w_hat))
        total = 0.0
        for g in range(self.groups):
            e = x[g].astype(np.float64) @ d[g].T  # (n, R)
            if delta is not None:
                e -= delta.reshape(self.groups, -1)[g][None, :]
            total += float(np.einsum("ij,ij->", e, e))
        return total


def _inputs(model: str, part: str, n: int) -> dict[str, np.ndarray]:
    from harness import zoo
    from harness.executors.numpy_executor import NumpyExecutor

    spec = zoo.load_spec(model)
    data = zoo.load_data(model, spec, part=part)
    feeds = {k: v[:n] for k, v in data.feeds.items()}
    return NumpyExecutor(spec).trace(feeds)


@functools.lru_cache(maxsize=None)
def real_layers(model: str, n_calib: int = 256, n_test: int = 256, names: tuple[str, ...] | None = None) -> list[RealLayer]:
    from harness import zoo

    spec = zoo.load_spec(model)
    calib, test = _inputs(model, "train", n_calib), _inputs(model, "test", n_test)
    out = []
    for layer in iter_layers(spec):
        kind = layer.WhichOneof("layer")
        if kind not in ("convolution", "innerProduct") or (names is not None and layer.name not in names):
            continue
        if kind == "convolution" and layer.convolution.isDeconvolution:
            continue
        wp, shape, axis = layer_weights(layer)["weights"]
        w = quantizer.decode_weights(wp, shape, axis)
        out.append(RealLayer(model, layer, w, calib[layer.input[0]], test[layer.input[0]]))
    return out
