"""Held-out racing cases for ``python -m harness.bench sweep --held-out N``: synthetic sweeps built to be hard.

Each case is a sweep of 40 candidates on 1 024 samples of a binary task, made the way a weight
sweep looks but harder for a confident stop: a float model right on a fraction of the samples,
with a margin per sample; candidates that flip the float model's prediction, more often on
low-margin samples, with flip rates spread from zero (near-ties of the float model, many of them)
to 60%; sizes that shrink with the flip rate, with noise and repeated sizes; one candidate in five
an exact copy of another (a tie). Every case is raced offline (:mod:`harness.bench._race`: the sample
order of the float model's strata, smallest candidate first) in ``exact`` and ``confident`` mode and
compared with ``racing=off``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.bench._race import add, race, tally
from harness.heads import Head
from harness.racing import SampleOrder, chunk_size, difficulty_strata
from harness.scores import Accuracy


def _case(rng: np.random.Generator, n: int = 1024, m: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Float rows, float probabilities, candidate rows (m, n) and sizes of one synthetic sweep."""
    right = rng.random(n) < rng.uniform(0.55, 0.98)
    margin = rng.beta(0.7, 1.5, n) * 0.5
    prob = np.where(right, 0.5 + margin, 0.5 - margin)  # label 1 everywhere: right means prob > 0.5
    rows, sizes = [], []
    for i in range(m):
        if rows and rng.random() < 0.2:
            j = int(rng.integers(len(rows)))
            rows.append(rows[j].copy())
            sizes.append(sizes[j] if rng.random() < 0.5 else sizes[j] + int(rng.integers(-2, 3)))
            continue
        q = min(0.6, rng.exponential(0.05))
        flip = rng.random(n) < q * np.exp(-margin / 0.1) * 2
        rows.append((right ^ flip).astype(np.float64))
        sizes.append(max(1, int(1000 * (1 - q) + rng.normal(0, 60))) // 10 * 10)
    return right.astype(np.float64), prob, np.array(rows), np.array(sizes)


def held_out(cases: int, seed: int = 0) -> dict[str, Any]:
    """Race ``cases`` synthetic sweeps; front and best-within changes, wrong stops and sample evaluations."""
    rng = np.random.default_rng(seed)
    metric = Accuracy(Head("p", "binary", 1))
    out = tally()
    full = 0
    for case in range(cases):
        float_rows, prob, rows, sizes = _case(rng)
        strata = difficulty_strata(metric, float_rows[:, None], {"p": prob[:, None]})
        order = SampleOrder.build(strata, case, chunk_size(rows.shape[1]))
        full += rows.size
        for mode, o in out.items():
            add(o, race(metric, rows, sizes, order, mode), float(float_rows.mean()))
    for o in out.values():
        o["ratio"] = o["evaluations"] / full
    return {"cases": cases, **out}
