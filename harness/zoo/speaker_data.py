"""A reproducible speaker-identification test set: espeak-ng voices as speakers, Resemblyzer's mel frames.

Each of ``K`` speakers is a fixed espeak-ng voice (language, variant, pitch,
speed; :mod:`harness.zoo.espeak`) drawn from the seed. Per speaker, 4 enrollment
utterances give the speaker's centroid (through the ``embed`` function the
build script passes: Resemblyzer's ``embed_utterance`` procedure), and 6 more
utterances (never used for enrollment) give 4 windows each of 80 active mel
frames: the test samples, labelled with the speaker index. An utterance is 8-13
random words plus faint white noise, normalised to -30 dBFS as Resemblyzer's
``preprocess_wav`` does; mel frames are ``resemblyzer.audio.wav_to_mel_spectrogram``
(librosa: 25 ms window, 10 ms hop, 40 bands, power). Mel values are rounded to
12 significant bits (:func:`round_mantissa`) so the test set compresses well.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from harness.zoo import espeak

K = 20
N_ENROLL, N_TEST_UTTS, WINDOWS_PER_UTT = 4, 6, 4
FRAMES = 80
MANTISSA_BITS = 11  # + the implicit bit = 12 significant bits


def round_mantissa(x: np.ndarray, bits: int = MANTISSA_BITS) -> np.ndarray:
    """Round float32 values to ``bits`` explicit mantissa bits (round half away from zero on the bit pattern)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    drop = 23 - bits
    u = ((u + np.uint32(1 << (drop - 1))) >> np.uint32(drop)) << np.uint32(drop)
    return u.view(np.float32)


def speakers(rng, k: int = K) -> list[tuple[str, str, int, int]]:
    """``k`` distinct (language, variant, pitch, speed) espeak-ng voices."""
    out: list[tuple[str, str, int, int]] = []
    while len(out) < k:
        s = (str(rng.choice(espeak.LANGS)), str(rng.choice(espeak.VARIANTS)), int(rng.integers(25, 75)),
             int(rng.integers(130, 220)))
        if all((s[0], s[1]) != (o[0], o[1]) for o in out):
            out.append(s)
    return out


def utterance(rng, spk, audio) -> np.ndarray:
    """One utterance of speaker ``spk`` at 16 kHz (``audio``: the ``resemblyzer.audio`` module)."""
    words = rng.choice(espeak.WORDS, size=int(rng.integers(8, 14)))
    w = espeak.espeak(" ".join(words), f"{spk[0]}+{spk[1]}", spk[3], spk[2]).astype(np.float32)
    w = w + rng.standard_normal(len(w)).astype(np.float32) * np.float32(10 ** (rng.uniform(-70, -55) / 20))
    return audio.normalize_volume(w, -30, increase_only=True).astype(np.float32)


def active_windows(mel: np.ndarray, rng, n: int) -> list[np.ndarray]:
    """``n`` windows of FRAMES frames whose every 10-frame block has speech energy (within 20 dB of the peak)."""
    energy = mel.sum(1)
    block = np.convolve(energy, np.ones(10) / 10, mode="valid")
    ok = block >= np.percentile(block, 95) * 10 ** (-20 / 10)
    starts = [s for s in range(0, len(mel) - FRAMES + 1, 5) if ok[s:s + FRAMES - 9].all()]
    if not starts:
        return []
    pick = rng.choice(starts, size=min(n, len(starts)), replace=False)
    return [mel[s:s + FRAMES] for s in sorted(pick)]


def build(seed: int, audio, embed: Callable[[np.ndarray], np.ndarray]):
    """Return ``(x (n, 80, 40) float32, y (n,) int64, centroids (K, 256), speakers)``, shuffled with the seed.

    ``audio`` is ``resemblyzer.audio``; ``embed(wav)`` the unit-norm utterance embedding used for enrollment.
    """
    rng = np.random.default_rng(seed)
    spk = speakers(rng)
    centroids, xs, ys = [], [], []
    per_speaker = N_TEST_UTTS * WINDOWS_PER_UTT
    for k, s in enumerate(spk):
        e = np.mean([embed(utterance(rng, s, audio)) for _ in range(N_ENROLL)], axis=0)
        centroids.append(e / np.linalg.norm(e))
        got = 0
        while got < per_speaker:
            win = active_windows(audio.wav_to_mel_spectrogram(utterance(rng, s, audio)), rng,
                                 min(WINDOWS_PER_UTT, per_speaker - got))
            xs.extend(win)
            ys.extend([k] * len(win))
            got += len(win)
    x = round_mantissa(np.stack(xs).astype(np.float32))
    y = np.asarray(ys, dtype=np.int64)
    order = rng.permutation(len(y))
    return x[order], y[order], np.stack(centroids), spk
