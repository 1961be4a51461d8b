"""Train and convert the zoo's ``digits_lstm``: an LSTM reading each digit as 8 rows of 8 pixels.

Input ``rows``: (1, 8, 8) float32 — a sequence of 8 time steps (image rows) of
8 features (pixels scaled to [0, 1]); a one-layer LSTM (hidden size 64,
batch-first) reads it, its last hidden state feeds a dense layer and a softmax.
Output ``probs``: probabilities of the digits 0..9 (column i = digit i).
Trained with PyTorch on the seeded digits training split; converted with
``convert_to="neuralnetwork"``. The recorded accuracy is PyTorch's on the test
split at training time.

Needs the torch extra. Run: ``python -m harness.zoo.train_digits_lstm``
"""
from __future__ import annotations

from torch import nn

from harness.data import prepared
from harness.zoo import _torch as T
from harness.zoo._record import accuracy, record_digits_classifier

NAME = "digits_lstm"
SEED = 0
TRANSFORMS = ["scale01", "rows"]
EPOCHS = 60
HIDDEN = 64


class RowLSTM(nn.Module):
    def __init__(self, hidden: int = HIDDEN, classes: int = 10):
        super().__init__()
        self.lstm = nn.LSTM(input_size=8, hidden_size=hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :])


def main() -> None:
    T.seed_everything(SEED)
    data = prepared("digits", SEED, TRANSFORMS)
    net = RowLSTM()
    train = T.train_classifier(net, data.x_train, data.y_train, epochs=EPOCHS, lr=1e-2, seed=SEED)
    model = T.WithSoftmax(net).eval()
    probs = T.predict(model, data.x_test)
    acc = accuracy(probs.argmax(1), data.y_test)
    spec = T.convert(model, "rows", (8, 8), "probs", "LSTM reading scikit-learn digits as 8 rows of 8 pixels")
    record_digits_classifier(
        spec, NAME, input_description="(1, 8, 8): 8 image rows (time steps) of 8 pixels scaled to [0, 1]",
        description="One-layer LSTM (hidden 64) reading each scikit-learn digit as a sequence of 8 rows of "
                    "8 pixels; last hidden state -> dense -> softmax; converted from PyTorch.",
        transforms=TRANSFORMS, seed=SEED, n_test=len(data.y_test), accuracy=acc,
        training={"hidden_size": HIDDEN, **train})


if __name__ == "__main__":
    main()
