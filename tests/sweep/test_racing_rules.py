"""Racing's rules without a model: exact never changes a front, the confident bound's coverage, the order.

The property test draws random candidates (sizes with ties, correlated per-sample rows with exact
duplicates) for four metrics, races them with :class:`harness.racing.Bounds` and
:func:`harness.racing.dominator` as the trial runner does, and checks that the Pareto front
(:func:`harness.pareto.front`) and the smallest model within a drop (:func:`harness.pareto.best_within`)
of the trials that finished are those of every trial run to the end.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import pareto
from harness.config import Racing
from harness.heads import Head
from harness.racing import (Bounds, Finished, SampleOrder, chunk_size, difficulty_strata,
                            dominator)
from harness.scores import Accuracy, Cosine, Fidelity, Regression

KINDS = ("accuracy", "cosine", "rmse", "r2", "mae")


def _metric(kind: str):
    if kind == "accuracy":
        return Accuracy(Head("p", "binary", 1))
    if kind == "cosine":
        return Cosine(Head("v", "vector", 3))
    return Regression(kind, Head("y", "vector", 1))


def _rows(kind: str, rng: np.random.Generator, m: int, n: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Per-sample rows of ``m`` correlated candidates (some exact copies of another: ties)."""
    labels = None
    out: list[np.ndarray] = []
    if kind == "accuracy":
        base = rng.random(n) < rng.uniform(0.3, 0.95)
    elif kind == "cosine":
        base = rng.uniform(0.2, 1.0, n)
    else:
        labels = rng.normal(0, 3, n).round(1)
        base = rng.normal(0, 1, n)
    for i in range(m):
        if out and rng.random() < 0.3:
            out.append(out[int(rng.integers(len(out)))].copy())
            continue
        q = rng.uniform(0, 0.6)
        if kind == "accuracy":
            flip = rng.random(n) < q * rng.uniform(0, 1, n)
            out.append((base ^ flip).astype(np.float64)[:, None])
        elif kind == "cosine":
            out.append(np.clip(base - q * rng.random(n), -1, 1)[:, None])
        else:
            err = base * q + rng.normal(0, q, n)
            loss = np.abs(err) if kind == "mae" else err * err
            out.append(np.stack([loss, labels], axis=1))
    return out, labels


def race(metric, rows, sizes, order, labels, mode, candidate_order):
    """Evaluate candidates one after another (trial number = position), stopping dominated ones."""
    bounds = Bounds(metric, order, labels, mode, 0.99)
    finished: list[Finished] = []
    complete, seen = set(), 0
    for number, c in enumerate(candidate_order):
        r = rows[c][order.order]
        stopped = False
        for end in order.ends[:-1]:
            if dominator(sizes[c], number, bounds.reach(r[:end]), finished, maximize=metric.maximize):
                stopped, seen = True, seen + end
                break
        if not stopped:
            seen += order.n
            complete.add(number)
            finished.append(Finished(number, int(sizes[c]), metric.aggregate(rows[c])))
    return complete, seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), m=st.integers(2, 12), n=st.integers(6, 90), seed=st.integers(0, 2**31 - 1),
       chunk=st.integers(1, 40), by_size=st.booleans())
def test_exact_racing_never_changes_the_front_or_the_best_within(kind, m, n, seed, chunk, by_size):
    rng = np.random.default_rng(seed)
    metric = _metric(kind)
    rows, labels = _rows(kind, rng, m, n)
    sizes = rng.integers(1, 5, m) * 10  # few distinct sizes: ties on size
    strata = rng.integers(0, 3, n) if kind == "accuracy" else np.zeros(n, dtype=int)
    _, strata = np.unique(strata, return_inverse=True)
    order = SampleOrder.build(strata, seed, min(chunk, n))
    cands = list(np.argsort(sizes, kind="stable")) if by_size else list(rng.permutation(m))
    complete, seen = race(metric, rows, sizes, order, labels, Racing.exact, cands)
    values = [metric.aggregate(rows[c]) for c in cands]
    base = max(values) if metric.maximize else min(values)
    table = pd.DataFrame({"trial": range(m), "size_bytes": [int(sizes[c]) for c in cands], "m": values,
                          "m_drop": [metric.drop(base, v) for v in values]})
    raced = table[table["trial"].isin(complete)]
    off_front = pareto.front(table, "m", maximize=metric.maximize)
    assert pareto.front(raced, "m", maximize=metric.maximize)["trial"].tolist() == off_front["trial"].tolist()
    for drop in (0.0, 0.01, 0.05, 0.2, 1.0, 10.0):
        a, b = pareto.best_within(table, "m_drop", drop), pareto.best_within(raced, "m_drop", drop)
        assert (a is None and b is None) or int(a["trial"]) == int(b["trial"])
    assert seen <= m * n


def test_exact_reach_is_the_best_completion_and_counts_exactly():
    metric = _metric("accuracy")
    order = SampleOrder.build(np.zeros(10, dtype=int), 0, 3)
    b = Bounds(metric, order, None, Racing.exact, 0.99)
    seen = np.array([[1.0], [0.0], [0.0]])
    assert b.reach(seen) == 8 / 10  # one right, seven unseen that could all be right
    assert b.reach(np.ones((10, 1))) == 1.0
    # regression: the unseen samples' best case is zero loss; r2 uses every label
    y = np.arange(10, dtype=float)
    r2 = Bounds(_metric("r2"), order, y, Racing.exact, 0.99)
    seen = np.stack([np.full(3, 4.0), y[order.order[:3]]], axis=1)
    expected = 1 - 12.0 / np.sum((y - y.mean()) ** 2)
    assert r2.reach(seen) == pytest.approx(expected, rel=1e-8) and r2.reach(seen) >= expected
    rmse = Bounds(_metric("rmse"), order, y, Racing.exact, 0.99)
    assert rmse.reach(seen) <= math.sqrt(12.0 / 10)


def test_unbounded_and_off_never_stop():
    order = SampleOrder.build(np.zeros(20, dtype=int), 0, 5)
    snr = Fidelity("snr_db", Head("v", "vector", 3), ["v"])
    assert not Bounds(snr, order, None, Racing.exact, 0.99).stops  # no best case per sample: exact never stops
    assert Bounds(snr, order, None, Racing.exact, 0.99).reach(np.full((5, 1), 20.0)) is None
    conf = Bounds(snr, order, None, Racing.confident, 0.99)
    assert conf.stops and math.isfinite(conf.reach(np.random.default_rng(0).normal(20, 2, (5, 1))))
    off = Bounds(_metric("accuracy"), order, None, Racing.off, 0.99)
    assert not off.stops and off.reach(np.ones((5, 1))) is None


def test_dominator_follows_the_fronts_tie_break():
    d = Finished(number=3, size=100, value=0.9)
    assert dominator(100, 5, 0.9, [d], maximize=True) == d  # same size and figure, lower number: d represents
    assert dominator(100, 2, 0.9, [d], maximize=True) is None  # same size and figure, but the candidate is older
    assert dominator(120, 2, 0.9, [d], maximize=True) == d  # larger and no better
    assert dominator(80, 5, 0.5, [d], maximize=True) is None  # smaller: never dominated by a larger trial
    assert dominator(100, 5, 0.91, [d], maximize=True) is None  # might still beat it
    assert dominator(100, 5, 2.0, [Finished(3, 90, 1.5)], maximize=False) == Finished(3, 90, 1.5)  # rmse
    assert dominator(100, 5, None, [d], maximize=True) is None


def test_confident_bound_is_the_stratified_normal_bound():
    """Seen hits + per-stratum estimate of the unseen ones + z x the standard error of their sum (by hand)."""
    from scipy.stats import norm

    strata = np.array([0] * 40 + [1] * 60)
    order = SampleOrder.build(strata, 3, 10, phase=20)
    b = Bounds(_metric("accuracy"), order, None, Racing.confident, 0.9)
    pos = strata[order.order]
    hits = (np.arange(100) % 3 != 0).astype(float)[:, None]  # any rows
    n = 20
    seen = hits[:n]
    expected_mean, var = seen.sum(), 0.0
    for s_, size in ((0, 40), (1, 60)):
        ns, ks = (pos[:n] == s_).sum(), seen[pos[:n] == s_, 0].sum()
        rest, p = size - ns, (ks + 1) / (ns + 2)
        expected_mean += rest * ks / ns
        var += size * rest * p * (1 - p) / ns * size / (size - 1)
    z = norm.ppf(1 - 0.1 / order.looks)
    bound = min(seen.sum() + 80, expected_mean + z * math.sqrt(var)) / 100
    assert b.reach(seen) == pytest.approx(bound, rel=1e-12)
    exact = Bounds(_metric("accuracy"), order, None, Racing.exact, 0.9)
    assert b.reach(seen) <= exact.reach(seen)
    # a stratum not seen yet: all its unseen samples count as hits (no rate to extrapolate from)
    hard_first = SampleOrder.build(strata, 3, 10, phase=0)
    c = Bounds(_metric("accuracy"), hard_first, None, Racing.confident, 0.9)
    assert c.reach(np.zeros((10, 1))) >= 60 / 100


def test_confident_stop_is_wrong_at_most_one_minus_confidence_of_the_time():
    """Over random orders of one population, the chance that any look's bound falls below the final figure."""
    rng = np.random.default_rng(1)
    n = 240
    rows = (rng.random(n) < 0.6).astype(float)[:, None]
    strata = np.where(rng.random(n) < 0.3, 0, 1)
    metric = _metric("accuracy")
    final = metric.aggregate(rows)
    misses = 0
    for s in range(400):
        order = SampleOrder.build(strata, s, 24)
        b = Bounds(metric, order, None, Racing.confident, 0.9)
        r = rows[order.order]
        if any(b.reach(r[:end]) < final for end in order.ends[:-1]):
            misses += 1
        exact = Bounds(metric, order, None, Racing.exact, 0.9)
        assert all(b.reach(r[:e]) <= exact.reach(r[:e]) for e in order.ends[:-1])
    assert misses / 400 <= 0.1  # Bonferroni over strata and looks: at most 1 - confidence


def test_order_is_seeded_proportional_first_then_hardest_first():
    rows = np.array([1.0] * 70 + [0.0] * 30)[:, None]
    head = Head("p", "binary", 1)
    probs = {"p": np.linspace(0.5, 1, 100)[:, None]}
    strata = difficulty_strata(Accuracy(head), rows, probs)
    assert (strata[70:] == 0).all() and set(strata[:70]) == {1, 2, 3, 4, 5}  # wrong first, then margin bins
    a, b = SampleOrder.build(strata, 7, 10), SampleOrder.build(strata, 7, 10)
    assert (a.order == b.order).all() and sorted(a.order) == list(range(100))
    assert not (SampleOrder.build(strata, 8, 10).order == a.order).all()
    first = strata[a.order[:a.phase]]
    assert a.phase == 10 and abs((first == 0).sum() - 3) <= 1  # 30% of the first chunk
    after = strata[a.order[a.phase:]]
    assert (np.diff(after) >= 0).all()  # then the strata, hardest first
    assert a.ends[-1] == 100 and a.ends[0] == 10 and a.chunk == 10  # half a chunk (5) is too few for a first look
    c = SampleOrder.build(strata, 7, 16)
    assert c.ends[:3] == (8, 16, 32) and c.ends[-1] == 100 and c.looks == len(c.ends) - 1
    assert c.describe()["chunk"] == 16 and c.describe()["first_look"] == 8
    assert chunk_size(1024) == 16 and chunk_size(450) == 16 and chunk_size(4096) == 64
    assert chunk_size(10_000) == 160 and chunk_size(20_000) == 256 and chunk_size(10) == 10
    assert chunk_size(1024, 100) == 100


def test_the_dominating_set_is_read_once_per_candidate_and_refreshed_while_it_runs(monkeypatch):
    """Each read loads every complete trial: a candidate reads it at its first look, again only after
    DOMINATING_REFRESH_S (other workers' trials), and a new candidate reads it afresh."""
    from types import SimpleNamespace

    import optuna

    from harness import trial as trial_mod
    from harness.scores import Accuracy

    study = optuna.create_study(directions=["minimize", "maximize"])
    study.add_trial(optuna.trial.create_trial(values=[90.0, 0.9], user_attrs={"evaluated_samples": 64}))
    reads = []

    class DB:
        def trials(self, states=None):
            reads.append(1)
            return study.get_trials(deepcopy=False, states=states)

    evaluator = SimpleNamespace(metric=Accuracy(Head("p", "binary", 1)), dataset=SimpleNamespace(n=64))
    runner = trial_mod.TrialRunner(DB(), None, evaluator, None, fuse=False)
    clock = [100.0]
    monkeypatch.setattr(trial_mod.time, "monotonic", lambda: clock[0])
    assert runner._dominated(5, 100, 0.95, 32) is None  # reach above the finished trial's 0.9: not dominated
    assert runner._dominated(5, 100, 0.95, 40) is None and len(reads) == 1
    study.add_trial(optuna.trial.create_trial(values=[80.0, 0.97], user_attrs={"evaluated_samples": 64}))
    assert runner._dominated(5, 100, 0.95, 48) is None and len(reads) == 1  # the read is fresh enough
    clock[0] += trial_mod.DOMINATING_REFRESH_S
    stop = runner._dominated(5, 100, 0.95, 56)  # refreshed: the new trial dominates
    assert stop is not None and stop.dominated_by.number == 1 and len(reads) == 2
    assert runner._dominated(6, 100, 0.95, 32) is not None and len(reads) == 3  # a new candidate reads afresh
