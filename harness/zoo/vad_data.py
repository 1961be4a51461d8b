"""A reproducible labelled voice-activity test set: synthetic speech vs real-world-like non-speech.

Speech is synthesised with Debian's ``espeak-ng`` (:mod:`harness.zoo.espeak`)
from random word sequences, with many languages' phonetics, voice variants,
speeds and pitches, at 16 kHz (or 8 kHz for the 8 kHz model). Non-speech (noise colours, hum, tones, chirps,
notes, clicks, modulated "engine" noise, near-silence) is generated with numpy
from a fixed seed. Speech windows are mixed with such backgrounds at a random
SNR. Every window is quantised to 16-bit PCM (stored as float32 in [-1, 1)).

Label 1 = the window is speech throughout (every 512-sample chunk of the clean
speech is active), 0 = no speech at all. Everything is a function of the seed.
"""
from __future__ import annotations

import numpy as np

from harness.zoo.espeak import LANGS, SR, VARIANTS, WORDS, espeak


def _colored(rng, n, alpha, sr=SR):
    """Noise with power spectrum ~ 1/f^alpha (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    f[0] = f[1]
    spec *= f ** (-alpha / 2)
    return np.fft.irfft(spec, n)


def _bandpass_noise(rng, n, sr=SR):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    lo = np.exp(rng.uniform(np.log(60), np.log(min(4000, 0.4 * sr))))
    hi = lo * np.exp(rng.uniform(np.log(1.3), np.log(6)))
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, n)


def _harmonic(rng, t, f0, n_harm, decay, sr=SR):
    out = np.zeros_like(t)
    for h in range(1, n_harm + 1):
        if f0 * h < sr / 2:
            out += decay ** (h - 1) * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
    return out


def nonspeech(rng: np.random.Generator, n: int, kind: str, sr: int = SR) -> np.ndarray:
    """One non-speech signal of ``n`` samples at ``sr`` Hz (unnormalised)."""
    t = np.arange(n) / sr
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        return _colored(rng, n, 1.0, sr)
    if kind == "brown":
        return _colored(rng, n, 2.0, sr)
    if kind == "band":
        return _bandpass_noise(rng, n, sr)
    if kind == "hum":
        return _harmonic(rng, t, rng.choice([50.0, 60.0]) * rng.uniform(0.98, 1.02), int(rng.integers(3, 15)),
                         rng.uniform(0.5, 0.9), sr) + 0.05 * rng.standard_normal(n)
    if kind == "tones":
        out = np.zeros(n)
        for _ in range(int(rng.integers(1, 4))):
            f = np.exp(rng.uniform(np.log(80), np.log(min(5000, 0.45 * sr))))
            fm = rng.uniform(0, 8) * np.sin(2 * np.pi * rng.uniform(0.5, 8) * t)
            am = 1 + rng.uniform(0, 0.8) * np.sin(2 * np.pi * rng.uniform(0.5, 12) * t)
            out += am * np.sin(2 * np.pi * f * t + fm + rng.uniform(0, 2 * np.pi))
        return out
    if kind == "chirp":
        f0, f1 = np.exp(rng.uniform(np.log(100), np.log(min(6000, 0.45 * sr)), size=2))
        k = (f1 - f0) / t[-1]
        return np.sin(2 * np.pi * (f0 * t + 0.5 * k * t * t))
    if kind == "notes":  # instrument-like notes: harmonic tones with percussive envelopes
        out = np.zeros(n)
        onsets = np.sort(rng.uniform(-0.1, t[-1], size=int(rng.integers(1, 5))))
        for on in onsets:
            f0 = 440 * 2 ** ((rng.integers(36, 90) - 69) / 12)
            env = np.where(t >= on, np.exp(-(t - on) * rng.uniform(2, 20)), 0.0)
            out += env * _harmonic(rng, t, f0, int(rng.integers(1, 10)), rng.uniform(0.3, 0.8), sr)
        return out
    if kind == "clicks":
        out = np.zeros(n)
        rate = rng.uniform(5, 60)
        for on in np.arange(rng.uniform(0, 1 / rate), t[-1], 1 / rate):
            i = int(on * sr)
            m = min(n - i, 400)
            out[i:i + m] += rng.standard_normal(m) * np.exp(-np.arange(m) / rng.uniform(10, 80))
        return out
    if kind == "engine":
        f = rng.uniform(5, 60)
        return _colored(rng, n, rng.uniform(0.5, 2), sr) * (1 + rng.uniform(0.3, 0.9) * np.sin(2 * np.pi * f * t))
    if kind == "silence":
        return rng.standard_normal(n) * 10 ** (rng.uniform(-75, -50) / 20)
    raise ValueError(kind)


NONSPEECH_KINDS = ["white", "pink", "brown", "band", "hum", "tones", "chirp", "notes", "clicks", "engine", "silence"]
BACKGROUND_KINDS = ["white", "pink", "brown", "band", "hum", "tones", "notes", "clicks", "engine"]


def _rms(x):
    return float(np.sqrt(np.mean(x * x) + 1e-20))


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    return (np.clip(np.round(x * 32768), -32768, 32767) / 32768).astype(np.float32)


def speech_pool(rng: np.random.Generator, n_utts: int, sr: int = SR) -> list[np.ndarray]:
    """``n_utts`` synthesised utterances with random voice, speed, pitch and words."""
    out = []
    for _ in range(n_utts):
        words = rng.choice(WORDS, size=int(rng.integers(6, 16)))
        voice = f"{rng.choice(LANGS)}+{rng.choice(VARIANTS)}"
        out.append(espeak(" ".join(words), voice, int(rng.integers(110, 260)), int(rng.integers(15, 85)), sr))
    return out


def active_offsets(speech: np.ndarray, length: int, chunk: int, context: int, rel_db: float) -> np.ndarray:
    """Window starts at which every chunk of the window is active speech.

    A chunk is active when its RMS is within ``rel_db`` of the utterance's
    95th-percentile chunk RMS (computed on hops of a quarter chunk).
    """
    hop = chunk // 4
    n_frames = (len(speech) - chunk) // hop
    if n_frames < 1 or len(speech) < length:
        return np.zeros(0, dtype=int)
    frame_rms = np.array([_rms(speech[i * hop: i * hop + chunk]) for i in range(n_frames)])
    ref = np.percentile(frame_rms, 95)
    active = frame_rms >= ref * 10 ** (-rel_db / 20)
    n_chunks = (length - context) // chunk
    starts = []
    for s in range(0, (len(speech) - length) // hop + 1):
        idx = [(s * hop + context + c * chunk) // hop for c in range(n_chunks)]
        if all(i < n_frames and active[i] for i in idx):
            starts.append(s * hop)
    return np.array(starts, dtype=int)


def build(n_pos: int, n_neg: int, length: int, seed: int = 0, *, chunk: int = 512, context: int = 64,
          snr_db: tuple[float, float] = (-5.0, 20.0), rel_db: float = 15.0,
          level_dbfs: tuple[float, float] = (-40.0, -10.0), windows_per_utt: int = 3, sr: int = SR):
    """Return ``(x (n, length) float32, y (n,) int64, info)``; order is shuffled with the seed."""
    rng = np.random.default_rng(seed)
    xs, ys, info = [], [], []
    n_utts = int(np.ceil(n_pos / windows_per_utt * 1.5)) + 10
    pool = speech_pool(rng, n_utts, sr)
    u = 0
    while sum(ys) < n_pos:
        sp = pool[u % len(pool)]
        u += 1
        starts = active_offsets(sp, length, chunk, context, rel_db)
        if len(starts) == 0:
            continue
        for s in rng.choice(starts, size=min(windows_per_utt, len(starts)), replace=False):
            if sum(ys) >= n_pos:
                break
            clean = sp[s:s + length]
            kind = str(rng.choice(BACKGROUND_KINDS))
            bg = nonspeech(rng, length, kind, sr)
            snr = rng.uniform(*snr_db)
            bg *= _rms(clean) / _rms(bg) * 10 ** (-snr / 20)
            x = clean + bg
            x *= 10 ** (rng.uniform(*level_dbfs) / 20) / _rms(x)
            xs.append(_to_pcm16(x))
            ys.append(1)
            info.append(f"speech+{kind}@{snr:.1f}dB")
    for _ in range(n_neg):
        kind = str(rng.choice(NONSPEECH_KINDS))
        x = nonspeech(rng, length, kind, sr)
        if kind != "silence":
            x *= 10 ** (rng.uniform(*level_dbfs) / 20) / _rms(x)
        xs.append(_to_pcm16(x))
        ys.append(0)
        info.append(kind)
    order = rng.permutation(len(xs))
    return (np.stack(xs)[order], np.asarray(ys, dtype=np.int64)[order], np.asarray(info)[order])
