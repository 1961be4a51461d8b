"""A reproducible labelled pitch test set: synthetic pitched sounds with known f0 (numpy, fixed seed).

Each sample is one 1024-sample frame at 16 kHz of a harmonic sound whose
fundamental sits on a CREPE bin centre (bin b: 1997.379 + 20 b cents re 10 Hz)
plus a jitter of at most +-4 cents: label = b (the class index of the model's
360 outputs). Timbres: harmonic series with random spectral tilt and
random harmonic dropouts, odd-harmonic (clarinet-like), vowel-like (harmonics
shaped by three random formants), and a share with a weak fundamental; random
phases, a slow amplitude envelope, optional vibrato of at most 8 cents, and white
or pink noise at 0-35 dB SNR. Levels -35..-6 dBFS, rounded to 16-bit PCM
(stored as float32 in [-1, 1)).
"""
from __future__ import annotations

import numpy as np

SR = 16000
WINDOW = 1024
CENTS_OFFSET = 1997.3794084376191


def bin_to_hz(b):
    return 10.0 * 2.0 ** ((20.0 * np.asarray(b, dtype=np.float64) + CENTS_OFFSET) / 1200.0)


def _pink(rng, n):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    return np.fft.irfft(spec / np.sqrt(f), n)


def _rms(x):
    return float(np.sqrt(np.mean(x * x) + 1e-20))


def tone(rng, f0: float, kind: str) -> np.ndarray:
    t = np.arange(WINDOW) / SR
    vib_depth = rng.uniform(0, 8) if rng.random() < 0.5 else 0.0  # cents
    vib_rate = rng.uniform(3, 7)
    phase_mod = (vib_depth / 1200 * np.log(2)) * f0 / vib_rate * np.sin(2 * np.pi * vib_rate * t + rng.uniform(0, 6.3))
    n_h = int(min(40, (SR / 2 - 200) // f0))
    k = np.arange(1, n_h + 1)
    if kind == "odd":
        amp = np.where(k % 2 == 1, 1.0 / k ** rng.uniform(0.8, 1.5), 0.0)
    else:
        amp = 1.0 / k ** rng.uniform(0.5, 2.0)
        amp *= rng.random(n_h) > rng.uniform(0, 0.3)  # random dropouts
        amp[0] = 1.0
    if kind == "vowel":
        formants = np.sort(rng.uniform([250, 700, 1800], [900, 2200, 3500]))
        env = sum(np.exp(-0.5 * ((k * f0 - fc) / (fc * 0.15)) ** 2) for fc in formants) + 0.1
        amp = amp * env
    if kind == "weak_f0":
        amp[0] *= rng.uniform(0.05, 0.3)
    x = np.zeros(WINDOW)
    for h in range(n_h):
        if amp[h]:
            x += amp[h] * np.sin(2 * np.pi * f0 * (h + 1) * t + (h + 1) * 2 * np.pi * phase_mod + rng.uniform(0, 2 * np.pi))
    env = 1 + rng.uniform(-0.3, 0.3) * np.linspace(-1, 1, WINDOW)
    return x * env


KINDS = ["harmonic", "odd", "vowel", "weak_f0"]


def build(n: int, seed: int = 0, bins: tuple[int, int] = (60, 330), snr_db: tuple[float, float] = (0.0, 35.0),
          level_dbfs: tuple[float, float] = (-35.0, -6.0)):
    """Return ``(x (n, 1024) float32, y (n,) int64 bin labels, info)``."""
    rng = np.random.default_rng(seed)
    xs, ys, info = [], [], []
    for i in range(n):
        b = int(rng.integers(bins[0], bins[1] + 1))
        f0 = float(bin_to_hz(b) * 2 ** (rng.uniform(-4, 4) / 1200))
        kind = KINDS[i % len(KINDS)]
        x = tone(rng, f0, kind)
        snr = rng.uniform(*snr_db)
        noise = rng.standard_normal(WINDOW) if rng.random() < 0.5 else _pink(rng, WINDOW)
        x = x + noise * (_rms(x) / _rms(noise) * 10 ** (-snr / 20))
        x *= 10 ** (rng.uniform(*level_dbfs) / 20) / _rms(x)
        xs.append(np.clip(np.round(x * 32768), -32768, 32767) / 32768)
        ys.append(b)
        info.append(f"{kind} f0={f0:.2f} snr={snr:.1f}")
    return np.stack(xs).astype(np.float32), np.asarray(ys, dtype=np.int64), np.asarray(info)
