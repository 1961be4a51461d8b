"""Train and convert the zoo's ``digits_cnn``: conv + batchnorm + pooling CNN on digits.

Input ``image``: (1, 1, 8, 8) float32 (pixels scaled to [0, 1]); output ``probs``:
softmax probabilities over the digits 0..9 (plain ``neuralNetwork``; the label
of column i is digit i). Trained with PyTorch on the seeded digits training split,
converted with ``coremltools.convert(..., convert_to="neuralnetwork")`` (the
converter folds the batchnorms into the convolutions). The recorded accuracy is
PyTorch's, on the test split, at training time.

Needs the torch extra. Run: ``python -m harness.zoo.train_digits_cnn``
"""
from __future__ import annotations

from torch import nn

from harness.data import prepared
from harness.zoo import _torch as T
from harness.zoo._record import accuracy, record_digits_classifier

NAME = "digits_cnn"
SEED = 0
TRANSFORMS = ["scale01", "image"]
EPOCHS = 40


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def build() -> nn.Module:
    return nn.Sequential(
        conv_bn(1, 32), conv_bn(32, 32), nn.MaxPool2d(2),          # 32 x 4 x 4
        conv_bn(32, 64), nn.MaxPool2d(2),                          # 64 x 2 x 2
        nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10),
    )


def main() -> None:
    T.seed_everything(SEED)
    data = prepared("digits", SEED, TRANSFORMS)
    net = build()
    train = T.train_classifier(net, data.x_train, data.y_train, epochs=EPOCHS, lr=3e-3, weight_decay=1e-4, seed=SEED)
    model = T.WithSoftmax(net).eval()
    probs = T.predict(model, data.x_test)
    acc = accuracy(probs.argmax(1), data.y_test)
    spec = T.convert(model, "image", (1, 8, 8), "probs", "CNN (conv+BN+pool) on scikit-learn digits, softmax output")
    record_digits_classifier(
        spec, NAME, input_description="8x8 digit image (1, 1, 8, 8), pixels scaled to [0, 1]",
        description="CNN on scikit-learn digits as 1x8x8 images: 3 conv+batchnorm+ReLU blocks with max "
                    "pooling, 2 dense layers, softmax; converted from PyTorch (batchnorm folded).",
        transforms=TRANSFORMS, seed=SEED, n_test=len(data.y_test), accuracy=acc, training=train)


if __name__ == "__main__":
    main()
