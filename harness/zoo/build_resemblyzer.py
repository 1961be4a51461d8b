"""Build the ``resemblyzer`` zoo model (speaker encoder + enrolled speaker-ID head, built on demand) and its test set.

Model: Resemblyzer's pretrained GE2E speaker encoder (``resemblyzer`` 0.1.4 wheel,
``resemblyzer/pretrained.pt``, Apache-2.0; :mod:`harness.zoo.resemblyzer_torch`):
3-layer LSTM (40 -> 256) over mel frames, linear 256 -> 256, ReLU, L2 norm ->
``embedding`` (1, 256). A speaker-identification head is appended:
``speaker_probs`` (1, K) = softmax(w cos(e, c_k) + b) over K = 20 enrolled
speakers, c_k = the float encoder's L2-normalised mean embedding of 4 enrollment
utterances per speaker (the package's own ``embed_utterance`` procedure), w, b =
the checkpoint's GE2E ``similarity_weight`` / ``similarity_bias``. Outputs in
order: ``speaker_probs``, ``embedding``. The encoder is checked against
``resemblyzer.VoiceEncoder``.

Input ``mels`` (1, 80, 40): 80 frames (0.8 s) of the package's mel spectrogram of
16 kHz audio. Test set (:mod:`harness.zoo.speaker_data`): 20 espeak-ng voices, 6
held-out utterances per speaker, 4 windows each -> 480 samples, ``y`` = speaker
index; seed 0. Metric: speaker-ID accuracy (argmax of ``speaker_probs``); the
embedding is scored by cosine to the float model (``metric.output=embedding``).

    python -m harness.zoo.build_resemblyzer [--out DIR]      # into the built-model folder

Needs the zoo build environment (torch 2.13.0, resemblyzer 0.1.4 with --no-deps:
its ``webrtcvad`` import is stubbed, only ``trim_long_silences`` uses it;
librosa 0.11, scipy) and Debian's espeak-ng 1.51 on PATH.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.zoo import _build, espeak, speaker_data
from harness.zoo._record import record_pretrained, sha256_file
from harness.zoo._torch import convert_module
from harness.zoo.resemblyzer_torch import SpeakerEncoder, SpeakerID, import_resemblyzer, weights_path

NAME = "resemblyzer"
SEED = 0
PACKAGES = ("torch", "coremltools", "numpy", "scipy", "librosa", "resemblyzer")
#: Not shipped: how to build it (quoted when it is absent).
ON_DEMAND = {"command": "python -m harness.zoo.build_resemblyzer", "reason": "5.7 MB model + 4.0 MB test set",
             "needs": "torch 2.13.0, resemblyzer 0.1.4, librosa; espeak-ng"}


class Ordered(torch.nn.Module):
    """``SpeakerID`` with its outputs as the zoo model orders them: speaker_probs (the class scores), embedding."""

    def __init__(self, m: SpeakerID):
        super().__init__()
        self.m = m

    def forward(self, mels):
        e, p = self.m(mels)
        return p, e


def embed_utterance(enc: SpeakerEncoder, wav: np.ndarray) -> np.ndarray:
    """``resemblyzer.VoiceEncoder.embed_utterance`` (rate 1.3, min_coverage 0.75) with our module."""
    pkg = import_resemblyzer()
    wav_slices, mel_slices = pkg.VoiceEncoder.compute_partial_slices(len(wav), 1.3, 0.75)
    if wav_slices[-1].stop >= len(wav):
        wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
    mel = pkg.audio.wav_to_mel_spectrogram(wav)
    with torch.no_grad():
        e = enc(torch.from_numpy(np.array([mel[s] for s in mel_slices]))).numpy().mean(0)
    return e / np.linalg.norm(e)


def main(argv=None) -> None:
    args = _build.parser(__doc__).parse_args(argv)
    out = _build.out_dir(args.out, on_demand=True)
    pkg = import_resemblyzer()
    espeak.require()
    torch.set_num_threads(1)

    enc = SpeakerEncoder().load_resemblyzer()
    x, y, centroids, spk = speaker_data.build(SEED, pkg.audio, lambda wav: embed_utterance(enc, wav))
    _build.save_npz(out / f"{NAME}.npz", {"mels": x, "y": y})
    print(f"test set: {x.shape}, {len(spk)} speakers")

    model = SpeakerID(enc, torch.tensor(centroids, dtype=torch.float32))
    with torch.no_grad():
        e_t, p_t = (t.numpy() for t in model(torch.from_numpy(x)))
        e_pkg = pkg.VoiceEncoder("cpu", verbose=False)(torch.from_numpy(x)).numpy()
    rewrite_err = _build.check("rewrite vs resemblyzer.VoiceEncoder", _build.max_abs(e_t, e_pkg), 1e-5)

    spec = convert_module(Ordered(model), {"mels": x[:1]}, ["speaker_probs", "embedding"])
    spec.description.input[0].shortDescription = "80 frames x 40 mel bands (power) of 16 kHz audio, 10 ms hop"
    spec.description.output[0].shortDescription = f"softmax over {len(spk)} enrolled speakers"
    spec.description.output[1].shortDescription = "L2-normalised speaker embedding"
    spec.description.metadata.shortDescription = "Resemblyzer GE2E speaker encoder (0.1.4, Apache-2.0) + speaker-ID head"
    spec.description.metadata.license = "Apache-2.0 (Resemblyzer, resemble-ai/Resemblyzer)"

    o = _build.predict(spec, {"mels": x})
    exec_err = {"embedding": _build.max_abs(o["embedding"], e_t), "speaker_probs": _build.max_abs(o["speaker_probs"], p_t)}
    _build.check("numpy executor vs torch (worst of speaker_probs, embedding)", max(exec_err.values()), 1e-3)
    acc = float((o["speaker_probs"].reshape(len(y), -1).argmax(1) == y).mean())
    print(f"speaker-ID accuracy: {acc:.4f}")
    tool = espeak.version()
    record_pretrained(
        spec, NAME, out,
        description="Resemblyzer GE2E speaker encoder: LSTM(40->256) x3, linear 256, ReLU, L2 norm; plus a "
                    f"speaker-ID head (cosine to {len(spk)} enrolled centroids x GE2E weight + bias, softmax).",
        task="classification", outputs={"probability_output": "speaker_probs", "embedding_output": "embedding"},
        metric={"name": "accuracy", "output": "speaker_probs", "value": acc,
                "rule": "argmax of speaker_probs == y (speaker index)", "measured_with": _build.MEASURED},
        source={"package": "resemblyzer", "version": "0.1.4", "file": "resemblyzer/pretrained.pt",
                "file_sha256": sha256_file(weights_path()), "licence": "Apache-2.0",
                "upstream": "resemble-ai/Resemblyzer"},
        dataset={"file": f"{NAME}.npz", "classes": len(spk), "seed": SEED,
                 "labels": "y: speaker index (column of speaker_probs)",
                 "generator": "harness/zoo/speaker_data.py (speech: harness/zoo/espeak.py)",
                 "speakers": [{"voice": f"{s[0]}+{s[1]}", "pitch": s[2], "speed": s[3]} for s in spk],
                 "tools": {"espeak-ng": tool, "librosa": "resemblyzer.audio.wav_to_mel_spectrogram"},
                 "licence": ("generated by the build script (the project's licence); speech synthesised by "
                             "espeak-ng (GPL-3.0+, which does not cover the audio it produces)")},
        build={"script": "harness/zoo/build_resemblyzer.py", "command": "python -m harness.zoo.build_resemblyzer",
               "checks": {"rewrite_vs_package_max_abs": rewrite_err, "executor_vs_torch_max_abs": exec_err},
               "espeak-ng": tool},
        packages=PACKAGES,
        on_demand=ON_DEMAND)


if __name__ == "__main__":
    main()
