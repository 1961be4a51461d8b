"""Silero VAD v6 (16 kHz) as a plain traceable torch module over a fixed window.

The weights are those of the package's default model, ``load_silero_vad()`` =
TorchScript ``silero_vad/data/silero_vad.jit`` shipped in the silero-vad wheel (its
16 kHz branch ``_model``, or the 8 kHz branch ``_model_8k`` with every size
halved). (The wheel's ``silero_vad_16k.safetensors`` holds different weights and
is not used.) The architecture, as in that TorchScript
(and ``silero_vad/tinygrad_model.py``):
per 512-sample chunk (+64 samples of context) a reflect-padded STFT as a
convolution (258 kernels of 256, hop 128), magnitude, four conv1d+ReLU layers, an
LSTM cell carried over chunks, ReLU, a 1x1 conv and a sigmoid.

``SileroWindow`` runs ``T`` chunks of one window from a zero LSTM state (the
cell unrolled as ``nn.LSTM``, which the converter maps to ``uniDirectionalLSTM``)
and outputs one speech probability per window.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.zoo._build import package_file

CHUNK = 512
CONTEXT = 64


def weights_path() -> str:
    """``silero_vad/data/silero_vad.jit`` of the installed silero-vad wheel."""
    return str(package_file("silero_vad", "data", "silero_vad.jit"))


def jit_state_dict(path: str | None = None, sample_rate: int = 16000) -> dict[str, torch.Tensor]:
    """The 16 kHz (or 8 kHz) weights of the TorchScript model, keyed as in ``tinygrad_model.py``."""
    jm = torch.jit.load(path or weights_path(), map_location="cpu")
    m = jm._model if sample_rate == 16000 else jm._model_8k
    sd = {"stft_conv.weight": m.stft.forward_basis_buffer}
    for i in range(4):
        c = getattr(m.encoder, str(i)).reparam_conv
        sd[f"conv{i + 1}.weight"], sd[f"conv{i + 1}.bias"] = c.weight, c.bias
    r = m.decoder.rnn
    sd.update({"lstm_cell.weight_ih": r.weight_ih, "lstm_cell.weight_hh": r.weight_hh,
               "lstm_cell.bias_ih": r.bias_ih, "lstm_cell.bias_hh": r.bias_hh})
    d = getattr(m.decoder.decoder, "2")
    sd["final_conv.weight"], sd["final_conv.bias"] = d.weight, d.bias
    return {k: v.detach().clone() for k, v in sd.items()}


class SileroWindow(nn.Module):
    """wav (1, 64 + 512*T) -> speech probability (1, 1) of the last chunk (at 8 kHz: 32 + 256*T samples)."""

    def __init__(self, n_chunks: int, sample_rate: int = 16000):
        super().__init__()
        self.n_chunks = n_chunks
        self.sample_rate = sample_rate
        k = 1 if sample_rate == 16000 else 2  # the 8 kHz branch: everything halved
        self.chunk, self.context, n_fft = CHUNK // k, CONTEXT // k, 256 // k
        self.cutoff = n_fft // 2 + 1
        self.stft_conv = nn.Conv1d(1, 2 * self.cutoff, kernel_size=n_fft, stride=n_fft // 2, padding=0, bias=False)
        self.conv1 = nn.Conv1d(self.cutoff, 128, kernel_size=3, stride=1, padding=1)
        self.conv2 = nn.Conv1d(128, 64, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, kernel_size=3, stride=1, padding=1)
        self.lstm = nn.LSTM(128, 128, batch_first=True)
        self.final = nn.Linear(128, 1)

    def load_silero(self, path: str | None = None) -> "SileroWindow":
        sd = jit_state_dict(path, self.sample_rate)
        mine = {
            "stft_conv.weight": sd["stft_conv.weight"],
            "lstm.weight_ih_l0": sd["lstm_cell.weight_ih"],
            "lstm.weight_hh_l0": sd["lstm_cell.weight_hh"],
            "lstm.bias_ih_l0": sd["lstm_cell.bias_ih"],
            "lstm.bias_hh_l0": sd["lstm_cell.bias_hh"],
            "final.weight": sd["final_conv.weight"].reshape(1, 128),
            "final.bias": sd["final_conv.bias"],
        }
        for i in range(1, 5):
            mine[f"conv{i}.weight"] = sd[f"conv{i}.weight"]
            mine[f"conv{i}.bias"] = sd[f"conv{i}.bias"]
        self.load_state_dict(mine, strict=True)
        return self.eval()

    def chunk_features(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (1, 64 + 512*T) -> (T, 128) encoder features, one per chunk."""
        c, ctx = self.chunk, self.context
        chunks = [wav[:, t * c: t * c + c + ctx] for t in range(self.n_chunks)]
        x = torch.cat(chunks, dim=0)                       # (T, 576)
        x = F.pad(x.unsqueeze(1), (0, ctx), mode="reflect")  # (T, 1, 640)
        x = self.stft_conv(x)                              # (T, 258, 4)
        re, im = x[:, :self.cutoff, :], x[:, self.cutoff:, :]
        x = torch.sqrt(re * re + im * im)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))                          # (T, 128, 1)
        return x.reshape(self.n_chunks, 128)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        f = self.chunk_features(wav).unsqueeze(0)          # (1, T, 128)
        h, _ = self.lstm(f)                                # (1, T, 128)
        p = torch.sigmoid(self.final(F.relu(h)))           # (1, T, 1)
        return p[:, -1, :]                                 # (1, 1)
