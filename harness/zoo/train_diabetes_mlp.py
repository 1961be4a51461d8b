"""Train and build the zoo's ``diabetes_mlp``: a neuralNetworkRegressor on scikit-learn diabetes.

An MLP (10 -> 64 -> 32 -> 1, ReLU) trained with scikit-learn's ``MLPRegressor``
(L2 alpha 10) on the seeded training split, with features standardized and the
target standardized by training-set statistics; both standardizations are then
folded into the first and last dense layers, so the Core ML model takes the raw
scikit-learn features (input ``features``, 10 float32 values) and predicts the
disease progression in the original units (output ``target``). Written with
``NeuralNetworkBuilder`` as a ``neuralNetworkRegressor``. Needs no torch.

The recorded RMSE / MAE / R² are measured on the test split with a float32
numpy forward pass of exactly the weights stored in the model.

Run: ``python -m harness.zoo.train_diabetes_mlp``
"""
from __future__ import annotations

import numpy as np

from harness.data import split
from harness.zoo._record import NUMPY_MEASURED, SKLEARN_PACKAGES, record
from quantizer.coremltools_quiet import coremltools

NAME = "diabetes_mlp"
SEED = 0
HIDDEN = (64, 32)
ALPHA = 10.0


def forward(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """Float32 forward pass with ReLU between layers; returns (N,) predictions."""
    h = x.astype(np.float32)
    for i, (w, b) in enumerate(weights):
        h = h @ w.T + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    return h[:, 0]


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    err = pred.astype(np.float64) - y
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))),
            "r2": float(1 - np.sum(err ** 2) / np.sum((y - y.mean()) ** 2))}


def main() -> None:
    from sklearn.neural_network import MLPRegressor

    coremltools()
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    data = split("diabetes", SEED)
    x_mean, x_std = data.x_train.mean(axis=0), data.x_train.std(axis=0)
    y_mean, y_std = float(data.y_train.mean()), float(data.y_train.std())
    reg = MLPRegressor(hidden_layer_sizes=HIDDEN, activation="relu", alpha=ALPHA, max_iter=3000, random_state=SEED)
    reg.fit((data.x_train - x_mean) / x_std, (data.y_train - y_mean) / y_std)

    # fold the standardizations into the first and last layers (float64, then cast)
    layers = [(w.T.copy(), b.copy()) for w, b in zip(reg.coefs_, reg.intercepts_)]
    w0, b0 = layers[0]
    layers[0] = (w0 / x_std, b0 - (w0 / x_std) @ x_mean)
    wl, bl = layers[-1]
    layers[-1] = (wl * y_std, bl * y_std + y_mean)
    weights = [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]

    builder = NeuralNetworkBuilder([("features", datatypes.Array(10))], [("target", None)], mode="regressor",
                                   use_float_arraytype=True)
    blob = "features"
    for i, (w, b) in enumerate(weights):
        last = i == len(weights) - 1
        out = "target" if last else f"dense{i + 1}"
        builder.add_inner_product(f"dense{i + 1}", W=w, b=b, input_channels=w.shape[1], output_channels=w.shape[0],
                                  has_bias=True, input_name=blob, output_name=out)
        blob = out
        if not last:
            builder.add_activation(f"relu{i + 1}", "RELU", blob, f"relu{i + 1}")
            blob = f"relu{i + 1}"
    spec = builder.spec
    spec.description.predictedFeatureName = "target"
    spec.description.metadata.shortDescription = "MLP regressor (10-64-32-1) on scikit-learn diabetes"
    spec.description.input[0].shortDescription = "the 10 scikit-learn diabetes features (as load_diabetes returns them)"
    spec.description.output[0].shortDescription = "disease progression one year after baseline"

    metrics = regression_metrics(forward(weights, data.x_test), data.y_test)
    sk = reg.predict((data.x_test - x_mean) / x_std) * y_std + y_mean
    record(spec, NAME, task="regression",
           description="MLP regressor (10-64-32-1, ReLU) on scikit-learn diabetes; feature and target "
                       "standardization folded into the weights; built with NeuralNetworkBuilder as a "
                       "neuralNetworkRegressor.",
           outputs={"prediction_output": "target"},
           dataset="diabetes", transforms=[], seed=SEED, n_test=len(data.y_test),
           metric="rmse", value=metrics["rmse"], measured_with=NUMPY_MEASURED, metrics=metrics,
           training={"trainer": "sklearn MLPRegressor", "hidden_layer_sizes": list(HIDDEN), "alpha": ALPHA,
                     "seed": SEED, "iterations": int(reg.n_iter_),
                     "sklearn_test_rmse": regression_metrics(sk, data.y_test)["rmse"]},
           packages=SKLEARN_PACKAGES,
           summary=f"RMSE {metrics['rmse']:.3f}, MAE {metrics['mae']:.3f}, R2 {metrics['r2']:.4f}")


if __name__ == "__main__":
    main()
