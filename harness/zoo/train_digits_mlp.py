"""Train and build the zoo's ``digits_mlp``: an MLP classifier on scikit-learn digits.

Weights are trained with scikit-learn's ``MLPClassifier`` (64 -> 128 -> 64 -> 10,
ReLU) on the seeded training split, pixels scaled to [0, 1]; the network is then
written with coremltools' ``NeuralNetworkBuilder`` as a
``neuralNetworkClassifier`` with int64 class labels 0..9 (outputs ``classLabel``
and ``probs``). Needs no torch.

The recorded accuracy is measured on the test split with a float32 numpy
forward pass of exactly the weights stored in the model.

Run: ``python -m harness.zoo.train_digits_mlp``
"""
from __future__ import annotations

import numpy as np

from harness.data import prepared
from harness.zoo._record import NUMPY_MEASURED, SKLEARN_PACKAGES, accuracy, record
from quantizer.coremltools_quiet import coremltools

NAME = "digits_mlp"
SEED = 0
TRANSFORMS = ["scale01"]
HIDDEN = (128, 64)


def forward(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """Float32 forward pass (ReLU between layers, softmax at the end)."""
    h = x.astype(np.float32)
    for i, (w, b) in enumerate(weights):
        h = h @ w.T + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    from sklearn.neural_network import MLPClassifier

    ct = coremltools()
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    data = prepared("digits", SEED, TRANSFORMS)
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, activation="relu", alpha=1e-4, max_iter=400,
                        random_state=SEED)
    clf.fit(data.x_train, data.y_train)
    assert list(clf.classes_) == list(range(10))
    weights = [(w.T.astype(np.float32), b.astype(np.float32)) for w, b in zip(clf.coefs_, clf.intercepts_)]

    builder = NeuralNetworkBuilder([("pixels", datatypes.Array(64))], [("probs", None)], mode="classifier",
                                   use_float_arraytype=True)
    blob = "pixels"
    for i, (w, b) in enumerate(weights):
        out = f"dense{i + 1}"
        builder.add_inner_product(out, W=w, b=b, input_channels=w.shape[1], output_channels=w.shape[0],
                                  has_bias=True, input_name=blob, output_name=out)
        blob = out
        if i < len(weights) - 1:
            builder.add_activation(f"relu{i + 1}", "RELU", blob, f"relu{i + 1}")
            blob = f"relu{i + 1}"
    builder.add_softmax("softmax", blob, "probs")
    builder.set_class_labels(list(range(10)), predicted_feature_name="classLabel", prediction_blob="probs")
    spec = builder.spec
    spec.description.metadata.shortDescription = "MLP classifier (64-128-64-10) on scikit-learn digits"
    spec.description.input[0].shortDescription = "64 pixel values of an 8x8 digit image, scaled to [0, 1]"

    probs = forward(weights, data.x_test)
    acc = accuracy(probs.argmax(axis=1), data.y_test)
    record(spec, NAME, task="classification",
           description="MLP classifier (64-128-64-10, ReLU) on scikit-learn digits; built with "
                       "NeuralNetworkBuilder as a neuralNetworkClassifier with class labels 0-9.",
           outputs={"label_output": "classLabel", "probability_output": "probs"},
           dataset="digits", transforms=TRANSFORMS, seed=SEED, n_test=len(data.y_test),
           metric="accuracy", value=acc, measured_with=NUMPY_MEASURED,
           training={"trainer": "sklearn MLPClassifier", "hidden_layer_sizes": list(HIDDEN), "seed": SEED,
                     "iterations": int(clf.n_iter_),
                     "sklearn_test_accuracy": float(clf.score(data.x_test, data.y_test))},
           packages=SKLEARN_PACKAGES)


if __name__ == "__main__":
    main()
