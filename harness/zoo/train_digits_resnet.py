"""Train and convert the zoo's ``digits_resnet``: a ResNet-style CNN on digits upsampled to 32x32.

The realistic-size benchmark model (about 1.2 million weights, ~5 MB in float32):
a ResNet-18-like layout with one basic block per stage — stem conv 3x3 (32) +
batchnorm + ReLU + max pool 3/2, four stages of widths 32, 64, 128, 256 (stride
2 from the second stage, 1x1 conv + batchnorm projection shortcuts), global
average pooling, a dense layer and a softmax.

Input ``image``: (1, 1, 32, 32) float32 (digits pixels scaled to [0, 1], each
pixel repeated 4x4); output ``probs``: probabilities of the digits 0..9 (column
i = digit i). Trained with PyTorch on the seeded digits training split with
random +-1 pixel (8x8 scale) shifts; converted with ``convert_to="neuralnetwork"``.
The recorded accuracy is PyTorch's on the test split at training time.

Needs the torch extra. Run: ``python -m harness.zoo.train_digits_resnet``
"""
from __future__ import annotations

import torch
from torch import nn

from harness.data import prepared
from harness.zoo import _torch as T
from harness.zoo._record import accuracy, record_digits_classifier

NAME = "digits_resnet"
SEED = 0
TRANSFORMS = ["scale01", "image", "upsample32"]
EPOCHS = 12
WIDTHS = (32, 64, 128, 256)


class BasicBlock(nn.Module):
    """Two 3x3 conv + batchnorm layers with an identity or 1x1-projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, widths=WIDTHS, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.blocks(self.stem(x)))))


def shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation of the batch by -4, 0 or 4 pixels (one 8x8 pixel) per axis, zero fill."""
    out = torch.zeros_like(x)
    dy, dx = (torch.randint(-1, 2, (2,), generator=gen) * 4).tolist()
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def main() -> None:
    T.seed_everything(SEED)
    data = prepared("digits", SEED, TRANSFORMS)
    net = ResNet()
    train = T.train_classifier(net, data.x_train, data.y_train, epochs=EPOCHS, lr=2e-3, weight_decay=1e-4,
                               seed=SEED, augment=shift)
    model = T.WithSoftmax(net).eval()
    probs = T.predict(model, data.x_test)
    acc = accuracy(probs.argmax(1), data.y_test)
    spec = T.convert(model, "image", (1, 32, 32), "probs",
                     "ResNet-style CNN (4 stages, ~1.2M weights) on scikit-learn digits upsampled to 32x32")
    record_digits_classifier(
        spec, NAME,
        input_description="digit image (1, 1, 32, 32): 8x8 pixels scaled to [0, 1], each repeated 4x4",
        description="ResNet-style CNN on scikit-learn digits upsampled to 32x32: stem conv+BN+ReLU+max pool, "
                    "4 basic residual blocks (widths 32/64/128/256, projection shortcuts), global average pool, "
                    "dense, softmax; converted from PyTorch. The realistic-size benchmark model.",
        transforms=TRANSFORMS, seed=SEED, n_test=len(data.y_test), accuracy=acc,
        training={"augmentation": "random shift", **train})


if __name__ == "__main__":
    main()
