"""Build the ``silero_vad_8k`` (bundled) or ``silero_vad`` (16 kHz, built on demand) zoo model and its test set.

Model: Silero VAD v6 (the 8 kHz branch ``_model_8k`` or the 16 kHz branch
``_model`` of ``silero_vad/data/silero_vad.jit`` in the ``silero-vad`` 6.2.3
wheel, MIT licence), rewritten as a plain torch module
(:class:`harness.zoo.silero_torch.SileroWindow`) over one fixed 132 ms window of
4 chunks + context (8 kHz: 32 + 4 x 256 samples; 16 kHz: 64 + 4 x 512) from a zero
LSTM state; output ``speech_prob`` (1, 1), the speech probability the streaming
VAD gives at the end of the window. The rewrite is checked against the package's
own TorchScript model streamed chunk by chunk.

Test set (:mod:`harness.zoo.vad_data`): 512 speech windows (espeak-ng speech over
generated backgrounds at 5-30 dB SNR) + 512 non-speech windows (noise colours,
hum, tones, chirps, notes, clicks, engine noise, near-silence), levels -30..-6
dBFS, 16-bit PCM values as float32, seed 0: ``audio`` (1024, 1056) at 8 kHz or
(1024, 2112) at 16 kHz, ``y`` 1 = speech / 0 = none. Metric: accuracy of
``speech_prob > 0.5``.

    python -m harness.zoo.build_silero_vad --sample-rate 8000     # silero_vad_8k, into harness/zoo/
    python -m harness.zoo.build_silero_vad --sample-rate 16000    # silero_vad, into the built-model folder

Needs the zoo build environment (torch 2.13.0, silero-vad 6.2.3 with --no-deps,
scipy) and Debian's espeak-ng 1.51 on PATH.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from harness.zoo import _build, espeak, vad_data
from harness.zoo._record import record_pretrained, sha256_file
from harness.zoo._torch import convert_module
from harness.zoo.silero_torch import CHUNK, CONTEXT, SileroWindow, weights_path

N_CHUNKS = 4
SEED = 0
N_POS = N_NEG = 512
PACKAGES = ("torch", "coremltools", "numpy", "scipy", "silero-vad")
#: The 16 kHz model is not shipped: how to build it (quoted when it is absent).
ON_DEMAND = {"command": "python -m harness.zoo.build_silero_vad --sample-rate 16000",
             "reason": "1.2 MB model + 5.2 MB test set; the 8 kHz silero_vad_8k is bundled",
             "needs": "torch 2.13.0, silero-vad 6.2.3, scipy; espeak-ng"}


def reference_probs(x: np.ndarray, sr: int) -> np.ndarray:
    """The package's own TorchScript model, streamed chunk by chunk over each window."""
    import silero_vad

    ref = silero_vad.load_silero_vad()
    out = np.empty(len(x), dtype=np.float32)
    xt = torch.from_numpy(x)
    chunk, context = (CHUNK, CONTEXT) if sr == 16000 else (CHUNK // 2, CONTEXT // 2)
    with torch.no_grad():
        for i in range(len(x)):
            ref.reset_states()
            ref._context = xt[i:i + 1, :context].clone()  # the window's own context samples
            for c in range(N_CHUNKS):
                p = ref(xt[i:i + 1, context + chunk * c: context + chunk * (c + 1)], sr)
            out[i] = float(p)
    return out


def main(argv=None) -> None:
    ap = _build.parser(__doc__)
    ap.add_argument("--sample-rate", type=int, default=8000, choices=[8000, 16000],
                    help="8000: silero_vad_8k (bundled, default); 16000: silero_vad (built on demand)")
    args = ap.parse_args(argv)
    sr = args.sample_rate
    name = "silero_vad" if sr == 16000 else "silero_vad_8k"
    k = 16000 // sr
    chunk, context = CHUNK // k, CONTEXT // k
    length = context + chunk * N_CHUNKS  # 2112 samples at 16 kHz, 1056 at 8 kHz
    on_demand = ON_DEMAND if sr == 16000 else None
    out = _build.out_dir(args.out, on_demand=on_demand is not None)
    torch.manual_seed(0)
    torch.set_num_threads(1)

    t0 = time.time()
    x, y, info = vad_data.build(N_POS, N_NEG, length, seed=SEED, chunk=chunk, context=context, snr_db=(5.0, 30.0),
                                level_dbfs=(-30.0, -6.0), sr=sr)
    print(f"test set: {x.shape} in {time.time() - t0:.1f} s")
    _build.save_npz(out / f"{name}.npz", {"audio": x, "y": y})

    model = SileroWindow(N_CHUNKS, sample_rate=sr).load_silero()
    with torch.no_grad():
        p_torch = np.concatenate([model(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))]).ravel()
    rewrite_err = _build.check("rewrite vs silero_vad.load_silero_vad() streamed", _build.max_abs(
        p_torch, reference_probs(x, sr)), 1e-4)

    spec = convert_module(model, {"audio": np.zeros((1, length), np.float32)}, ["speech_prob"])
    spec.description.input[0].shortDescription = (f"{sr // 1000} kHz mono audio in [-1, 1): {context} context + "
                                                   f"4 x {chunk} samples")
    spec.description.output[0].shortDescription = "speech probability of the window's last 512-sample chunk"
    spec.description.metadata.shortDescription = (f"Silero VAD v6 (silero-vad 6.2.3, MIT), {sr // 1000} kHz, fixed "
                                                  "132 ms window from a zero LSTM state")
    spec.description.metadata.license = "MIT (Silero VAD, snakers4/silero-vad)"

    p_np = _build.predict(spec, {"audio": x})["speech_prob"].ravel()
    exec_err = _build.check("numpy executor vs torch", _build.max_abs(p_np, p_torch), 1e-4)
    acc = float(((p_np > 0.5) == y).mean())
    print(f"accuracy: torch {float(((p_torch > 0.5) == y).mean()):.4f}, numpy executor {acc:.4f}")
    tool = espeak.version()
    record_pretrained(
        spec, name, out,
        description=(f"Silero VAD v6 ({sr // 1000} kHz branch): STFT as conv ({2 * model.cutoff}x{2 * chunk // 4}, "
                     f"hop {chunk // 4}), 4 conv1d+ReLU, LSTM(128), 1x1 conv + sigmoid; one 132 ms window "
                     f"({context} context + 4 x {chunk} samples) from a zero state; output = speech probability "
                     "of the last chunk."),
        task="binary", outputs={"probability_output": "speech_prob"},
        metric={"name": "accuracy", "output": "speech_prob", "threshold": 0.5, "value": acc,
                "rule": "speech_prob > 0.5 vs y (1 = speech)", "measured_with": _build.MEASURED},
        source={"package": "silero-vad", "version": "6.2.3", "file": "silero_vad/data/silero_vad.jit",
                "branch": "_model" if sr == 16000 else "_model_8k", "file_sha256": sha256_file(weights_path()),
                "licence": "MIT", "upstream": "snakers4/silero-vad"},
        dataset={"file": f"{name}.npz", "sample_rate": sr, "positives": int(y.sum()), "seed": SEED,
                 "labels": "y: 1 = speech throughout the window, 0 = no speech",
                 "generator": "harness/zoo/vad_data.py (speech: harness/zoo/espeak.py)",
                 "composition": _build.composition(info, lambda s: s.split("@")[0]),
                 "tools": {"espeak-ng": tool, "scipy": f"resample_poly 22050 -> {sr} Hz"},
                 "licence": ("generated by the build script (the project's licence); speech synthesised by "
                             "espeak-ng (GPL-3.0+, which does not cover the audio it produces)")},
        build={"script": "harness/zoo/build_silero_vad.py",
               "command": f"python -m harness.zoo.build_silero_vad --sample-rate {sr}",
               "checks": {"rewrite_vs_package_max_abs": rewrite_err, "executor_vs_torch_max_abs": exec_err},
               "espeak-ng": tool},
        packages=PACKAGES,
        on_demand=on_demand)


if __name__ == "__main__":
    main()
