"""Small models of every output kind, built with coremltools' NeuralNetworkBuilder, and their test data.

Each builder returns ``(spec, feeds, labels)``: a real neuralnetwork model, the
feeds of a reproducible test set (seeded) and its labels (None where the kind
has none). The first layer of every model holds one large weight per output
channel on an input feature that is always 0 on the test data: invisible to the
float model, but it stretches the range of linear quantization so that
``linear`` at 2 bits collapses every other weight of the row — a model that is
really broken, while 8 bits are near-lossless.

* :func:`binary_model` — a voice-activity-like detector: one probability per sample
  (``prob``, a sigmoid), labels 0/1 (the float model gets about 97% right);
* :func:`embedding_model` — an 8-value embedding (``embedding``), no labels;
* :func:`three_output_model` — a face-detector-like model with outputs ``boxes`` (4),
  ``landmarks`` (10) and ``face_prob`` (a softmax over 2);
* :func:`constant_output_model` — outputs ``bias_only`` (the same for every sample) and ``score``;
* :func:`one_class_softmax_model` — a softmax over one value (always 1.0);
* :func:`map_softmax_model` — a softmax over the 2 channels of a 4 x 4 map (not one distribution per sample).

:func:`save` writes a model and its data for ``qsweep model.path=... data=npz data.path=...``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from quantizer.coremltools_quiet import coremltools

ct = coremltools()
from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402

__all__ = ["binary_model", "embedding_model", "three_output_model", "constant_output_model",
           "one_class_softmax_model", "map_softmax_model", "save", "N_FEATURES"]

N_FEATURES = 16
OUTLIER = 8.0


def _x(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(np.float32)
    x[:, 0] = 0.0  # the outlier weights' feature: silent on the test data
    return x


def _rows(n_out: int, seed: int, scale: float = 0.3) -> np.ndarray:
    """Weights ``(n_out, N_FEATURES)``: small informative values plus one large weight on feature 0."""
    w = (np.random.default_rng(seed).normal(size=(n_out, N_FEATURES)) * scale).astype(np.float32)
    w[:, 0] = OUTLIER
    return w


def _builder(outputs: list[tuple[str, int]]) -> NeuralNetworkBuilder:
    return NeuralNetworkBuilder([("x", datatypes.Array(N_FEATURES))],
                                [(name, datatypes.Array(k)) for name, k in outputs])


def binary_model(n: int = 400, seed: int = 0) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
    """``prob = sigmoid(4 * (relu(w.x) - relu(-w.x)))``; labels ``w.x > 0`` with 3% flipped."""
    rng = np.random.default_rng(seed + 1)
    w = _rows(1, seed)[0]
    b = _builder([("prob", 1)])
    W1 = np.stack([w, -w])
    W1[1, 0] = OUTLIER  # both rows keep the outlier (so both collapse at 2 bits)
    b.add_inner_product("dense1", W1, None, N_FEATURES, 2, False, "x", "h")
    b.add_activation("relu", "RELU", "h", "hr")
    b.add_inner_product("dense2", np.array([[4.0, -4.0]], np.float32), np.zeros(1, np.float32), 2, 1, True, "hr",
                        "logit")
    b.add_activation("sigmoid", "SIGMOID", "logit", "prob")
    x = _x(n, seed)
    y = (x @ w > 0).astype(np.int64)
    flip = rng.random(n) < 0.03
    y[flip] = 1 - y[flip]
    return b.spec, {"x": x}, y


def embedding_model(n: int = 300, seed: int = 0) -> tuple[Any, dict[str, np.ndarray], None]:
    """``embedding = W x + b``: 8 values per sample that are not class scores."""
    b = _builder([("embedding", 8)])
    b.add_inner_product("proj", _rows(8, seed), np.random.default_rng(seed).normal(size=8).astype(np.float32),
                        N_FEATURES, 8, True, "x", "embedding")
    return b.spec, {"x": _x(n, seed)}, None


def three_output_model(n: int = 300, seed: int = 0) -> tuple[Any, dict[str, np.ndarray], None]:
    """Outputs ``boxes`` (4 regressed values), ``landmarks`` (10) and ``face_prob`` (softmax over 2)."""
    b = _builder([("boxes", 4), ("landmarks", 10), ("face_prob", 2)])
    b.add_inner_product("trunk", _rows(12, seed), None, N_FEATURES, 12, False, "x", "t")
    b.add_activation("trunk_relu", "RELU", "t", "tr")
    r = np.random.default_rng(seed + 2)
    for name, k in (("boxes", 4), ("landmarks", 10)):
        b.add_inner_product(f"{name}_head", r.normal(size=(k, 12)).astype(np.float32), None, 12, k, False, "tr",
                            name)
    b.add_inner_product("face_head", r.normal(size=(2, 12)).astype(np.float32) * 2, None, 12, 2, False, "tr",
                        "face_logits")
    b.add_softmax("face_softmax", "face_logits", "face_prob")
    return b.spec, {"x": _x(n, seed)}, None


def constant_output_model(n: int = 200, seed: int = 0) -> tuple[Any, dict[str, np.ndarray], None]:
    """Outputs ``bias_only`` (zero weights plus a bias: the same for every sample) and ``score`` (3 values)."""
    b = _builder([("bias_only", 4), ("score", 3)])
    b.add_inner_product("dead", np.zeros((4, N_FEATURES), np.float32), np.arange(4, dtype=np.float32), N_FEATURES,
                        4, True, "x", "bias_only")
    b.add_inner_product("live", _rows(3, seed), None, N_FEATURES, 3, False, "x", "score")
    return b.spec, {"x": _x(n, seed)}, None


def one_class_softmax_model(n: int = 100, seed: int = 0) -> tuple[Any, dict[str, np.ndarray], None]:
    """A softmax over a single value (always 1.0): argmax over one value."""
    b = _builder([("p", 1)])
    b.add_inner_product("dense", _rows(1, seed), None, N_FEATURES, 1, False, "x", "logit")
    b.add_softmax("softmax", "logit", "p")
    return b.spec, {"x": _x(n, seed)}, None


def map_softmax_model(n: int = 60, seed: int = 0) -> tuple[Any, dict[str, np.ndarray], None]:
    """A fully convolutional detector's face map: a softmax over 2 channels at each of 4 x 4 positions."""
    b = NeuralNetworkBuilder([("img", datatypes.Array(3, 4, 4))], [("face_map", datatypes.Array(2, 4, 4))])
    w = np.random.default_rng(seed).normal(size=(1, 1, 3, 2)).astype(np.float32)
    b.add_convolution("conv", 3, 2, 1, 1, 1, 1, "valid", 1, w, None, False, input_name="img", output_name="logits")
    b.add_softmax("softmax", "logits", "face_map")
    img = np.random.default_rng(seed + 1).normal(size=(n, 3, 4, 4)).astype(np.float32)
    return b.spec, {"img": img}, None


def save(folder: Path, name: str, spec: Any, feeds: dict[str, np.ndarray], labels: np.ndarray | None
         ) -> tuple[Path, Path]:
    """Write ``<name>.mlmodel`` and ``<name>.npz`` (feeds by input name, labels as ``y``) into ``folder``."""
    import quantizer

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / f"{name}.mlmodel"
    data = folder / f"{name}.npz"
    quantizer.save(spec, model)
    arrays = dict(feeds)
    if labels is not None:
        arrays["y"] = labels
    np.savez(data, **arrays)
    return model, data
