"""Resemblyzer's speaker encoder (GE2E, 3-layer LSTM 40->256, linear 256, ReLU, L2 norm) as a plain module.

The weights ship in the ``resemblyzer`` 0.1.4 wheel (``resemblyzer/pretrained.pt``,
Apache-2.0). ``SpeakerEncoder`` is ``resemblyzer.VoiceEncoder.forward`` without
the device/IO code; ``SpeakerID`` adds a GE2E-style speaker-identification head:
``softmax(w * cos(embedding, centroid_k) + b)`` over enrolled speakers, with the
checkpoint's own ``similarity_weight`` / ``similarity_bias``.
"""
from __future__ import annotations

import sys
import types

import torch
import torch.nn as nn

from harness.zoo._build import package_file


def weights_path() -> str:
    """``resemblyzer/pretrained.pt`` of the installed wheel (not imported: its audio module needs webrtcvad)."""
    return str(package_file("resemblyzer", "pretrained.pt"))


def import_resemblyzer():
    """The ``resemblyzer`` package, with ``webrtcvad`` stubbed: only its ``trim_long_silences`` uses it, and
    the wheel's dependency on it is skipped (installed with --no-deps)."""
    sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))
    import resemblyzer

    return resemblyzer


def checkpoint(path: str | None = None) -> dict:
    return torch.load(path or weights_path(), map_location="cpu", weights_only=False)["model_state"]


class SpeakerEncoder(nn.Module):
    """mels (B, frames, 40) (mel power, not log) -> L2-normalised embedding (B, 256)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    def load_resemblyzer(self, path: str | None = None) -> "SpeakerEncoder":
        sd = {k: v for k, v in checkpoint(path).items() if not k.startswith("similarity_")}
        self.load_state_dict(sd, strict=True)
        return self.eval()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        e = torch.relu(self.linear(hidden[-1]))
        return e / torch.sqrt((e * e).sum(dim=1, keepdim=True))


class SpeakerID(nn.Module):
    """mels -> (embedding (B, 256), speaker_probs (B, K)) over ``centroids`` (K, 256, unit rows)."""

    def __init__(self, encoder: SpeakerEncoder, centroids: torch.Tensor, path: str | None = None):
        super().__init__()
        self.encoder = encoder
        sd = checkpoint(path)
        w, b = float(sd["similarity_weight"]), float(sd["similarity_bias"])
        self.head = nn.Linear(centroids.shape[1], centroids.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(centroids * w)
            self.head.bias.fill_(b)
        self.eval()

    def forward(self, mels: torch.Tensor):
        e = self.encoder(mels)
        return e, torch.softmax(self.head(e), dim=1)
