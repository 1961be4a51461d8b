"""harness.stats and the per-sample metrics of harness.scores: the formulas against scipy and by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, ttest_rel

from harness import metrics, stats
from harness.heads import Head
from harness.scores import Accuracy, Agreement, Cosine, Fidelity, Regression, TopK, UserMetric, cosine_rows
from harness.stats import Bootstrap


# ------------------------------------------------------------------------------------ Wilson
@pytest.mark.parametrize("n", [1, 2, 7, 30, 384, 450, 10_000])
def test_wilson_interval_is_scipys(n):
    for k in sorted({0, 1, n // 3, n // 2, max(n - 1, 0), n}):
        lo, hi = stats.wilson_interval(k, n)
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert lo == pytest.approx(ref.low, abs=1e-7) and hi == pytest.approx(ref.high, abs=1e-7), (k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_interval_closed_formula_with_z_1_959964():
    k, n, z = 437, 450, 1.959964
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert stats.wilson_interval(k, n) == pytest.approx((center - half, center + half), abs=1e-15)
    assert stats.Z95 == 1.959964
    assert stats.wilson_interval(0, 0) != stats.wilson_interval(0, 0)  # (nan, nan)


# ------------------------------------------------------------------------------------ McNemar
def _mcnemar_by_hand(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (0, 1), (3, 3), (10, 2), (2, 10), (0, 25), (40, 61), (173, 1)])
def test_exact_mcnemar_is_binomtest_and_the_formula(b, c):
    p = stats.mcnemar_p(b, c)
    assert p == pytest.approx(_mcnemar_by_hand(b, c), rel=1e-12, abs=1e-300)
    if b + c:
        assert p == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12, abs=1e-300)
    else:
        assert p == 1.0


def test_discordant_counts():
    float_ok = np.array([1, 1, 0, 0, 1, 0], bool)
    trial_ok = np.array([1, 0, 1, 0, 0, 0], bool)
    assert stats.discordant(float_ok, trial_ok) == (2, 1)


# ------------------------------------------------------------------------------------ paired t, bootstrap
def test_paired_t_is_scipys_ttest_rel():
    rng = np.random.default_rng(3)
    a = rng.normal(size=200) ** 2
    b = a + rng.normal(0.05, 0.2, size=200)
    assert stats.paired_t_p(b, a) == pytest.approx(ttest_rel(b, a).pvalue, rel=1e-12)
    assert stats.paired_t_p(a, a) == 1.0
    assert stats.paired_t_p(a + 1.0, a) == 0.0


def test_bootstrap_is_seeded_and_is_the_percentile_method():
    x = np.random.default_rng(0).normal(size=(250, 1))
    boot = Bootstrap(500, seed=7)
    lo, hi = boot.interval(x, lambda r: r[..., 0].mean(-1))
    idx = np.random.default_rng(7).integers(0, 250, size=(500, 250))
    ref = np.percentile(x[idx, 0].mean(axis=1), [2.5, 97.5])
    assert (lo, hi) == pytest.approx(tuple(ref), abs=1e-15)
    assert Bootstrap(500, seed=7).interval(x, lambda r: r[..., 0].mean(-1)) == (lo, hi)  # same seed, same figure
    assert Bootstrap(500, seed=8).interval(x, lambda r: r[..., 0].mean(-1)) != (lo, hi)
    d = boot.distribution(x, lambda r: r[..., 0].mean(-1))
    assert Bootstrap.paired_p(d, d) == 1.0 and Bootstrap.paired_p(d + 1.0, d) == 0.0


def test_bootstrap_resamples_do_not_depend_on_the_chunking(monkeypatch):
    x = np.arange(40, dtype=float)[:, None]
    whole = Bootstrap(300, seed=1).distribution(x, lambda r: r[..., 0].mean(-1))
    monkeypatch.setattr(stats, "_CHUNK", 40 * 7)  # 7 resamples per chunk
    assert np.array_equal(Bootstrap(300, seed=1).distribution(x, lambda r: r[..., 0].mean(-1)), whole)


# ------------------------------------------------------------------------------------ per-sample metrics
def _binary(threshold=0.5):
    return Head("prob", "binary", 1, threshold=threshold, in_unit_range=True)


def test_binary_accuracy_thresholds_one_value_and_never_takes_its_argmax():
    acc = Accuracy(_binary())
    probs = {"prob": np.array([[0.9], [0.2], [0.6], [0.4], [0.51]])}
    y = np.array([1, 0, 0, 0, 1])
    rows = acc.per_sample(probs, y, probs)
    assert rows[:, 0].tolist() == [1, 1, 0, 1, 1]
    assert acc.aggregate(rows) == 0.8
    # argmax over one value predicts column 0 for every sample: right only where the label is 0
    assert np.mean(np.argmax(probs["prob"], axis=1) == y) == 0.6
    assert Accuracy(_binary(0.95)).aggregate(Accuracy(_binary(0.95)).per_sample(probs, y, probs)) == 0.6
    agree = Agreement(_binary())
    other = {"prob": np.array([[0.1], [0.2], [0.6], [0.4], [0.49]])}
    assert agree.aggregate(agree.per_sample(other, None, probs)) == 0.6


def test_a_binary_outputs_description_names_its_threshold_only_where_a_metric_applies_it():
    head = Head("target", "binary", 1, threshold=0.5, why="one value per sample")
    assert head.describe() == "'target' (binary: one value per sample, value > 0.5)"
    assert head.describe(thresholded=False) == "'target' (binary: one value per sample)"  # r2 on a regressor


def test_accuracy_score_interval_and_mcnemar_from_the_rows():
    rng = np.random.default_rng(0)
    n = 384
    y = rng.integers(0, 4, n)
    float_scores = np.eye(4)[y] + rng.normal(0, 0.6, (n, 4))
    trial_scores = float_scores + rng.normal(0, 0.5, (n, 4))
    head = Head("s", "vector", 4)
    acc = Accuracy(head)
    boot = Bootstrap(100)
    ref = acc.score({"s": float_scores}, y, {"s": float_scores}, boot=boot)
    s = acc.score({"s": trial_scores}, y, {"s": float_scores}, boot=boot, reference=ref)
    ok_f = np.argmax(float_scores, 1) == y
    ok_t = np.argmax(trial_scores, 1) == y
    assert s.value == ok_t.mean() == metrics.top1_accuracy(trial_scores, y)
    ci = binomtest(int(ok_t.sum()), n).proportion_ci(method="wilson")
    assert (s.ci_low, s.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-7)
    b, c = int(np.sum(ok_f & ~ok_t)), int(np.sum(~ok_f & ok_t))
    assert b + c > 0 and s.drop_p == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)
    top2 = TopK(head, 2)
    t2 = top2.score({"s": trial_scores}, y, {"s": float_scores}, boot=boot)
    assert t2.value == metrics.topk_accuracy(trial_scores, y, 2) and top2.name == "top2_accuracy"


def test_cosine_rows_and_metric():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0], [1.0, 0.0], [-3.0, -4.0]])
    assert cosine_rows(a, b).tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0, -1.0])
    cos = Cosine(Head("e", "vector", 2))
    s = cos.score({"e": b}, None, {"e": a}, boot=Bootstrap(200))
    assert s.value == pytest.approx(0.2) and s.ci_low <= s.value <= s.ci_high and s.drop_p is None


def test_regression_metrics_and_their_paired_t_test():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(1)
    y = rng.normal(100, 20, 300)
    f = y + rng.normal(0, 5, 300)
    q = f + rng.normal(1, 3, 300)
    head = Head("t", "binary", 1)
    boot = Bootstrap(200)
    for name, ref_fn in (("rmse", lambda t, p: math.sqrt(mean_squared_error(t, p))),
                         ("mae", mean_absolute_error), ("r2", r2_score)):
        m = Regression(name, head)
        ref = m.score({"t": f[:, None]}, y, {"t": f[:, None]}, boot=boot)
        s = m.score({"t": q[:, None]}, y, {"t": f[:, None]}, boot=boot, reference=ref)
        assert s.value == pytest.approx(ref_fn(y, q), rel=1e-12)
        assert s.value == pytest.approx(getattr(metrics, name)(y, q), rel=1e-12)
        loss = np.abs if name == "mae" else np.square
        assert s.drop_p == pytest.approx(ttest_rel(loss(q - y), loss(f - y)).pvalue, rel=1e-10)
        assert s.ci_low <= s.value <= s.ci_high
        assert m.maximize == (name == "r2")
    # constant labels: scikit-learn's rule
    m = Regression("r2", head)
    yc = np.full(5, 3.0)
    assert m.aggregate(m.per_sample({"t": yc[:, None]}, yc, {})) == 1.0
    assert m.aggregate(m.per_sample({"t": yc[:, None] + 1}, yc, {})) == 0.0


def test_batched_reduce_equals_the_aggregate_of_each_resample():
    rng = np.random.default_rng(2)
    y = rng.normal(size=50)
    m = Regression("r2", Head("t", "binary", 1))
    rows = m.per_sample({"t": (y + rng.normal(0, 0.5, 50))[:, None]}, y, {})
    idx = rng.integers(0, 50, (6, 50))
    assert m.reduce(rows[idx]) == pytest.approx([m.aggregate(rows[i]) for i in idx], rel=1e-12)


def test_fidelity_is_the_worst_outputs_mean_snr():
    rng = np.random.default_rng(4)
    f = {"a": rng.normal(size=(40, 3)), "b": rng.normal(size=(40, 5))}
    q = {"a": f["a"] + rng.normal(0, 0.01, (40, 3)), "b": f["b"] + rng.normal(0, 0.3, (40, 5))}
    m = Fidelity("snr_db", Head("a", "vector", 3), ["a", "b"])
    s = m.score(q, None, f, boot=Bootstrap(200))
    assert s.value == pytest.approx(min(metrics.snr_db(f["a"], q["a"]), metrics.snr_db(f["b"], q["b"])), rel=1e-12)
    assert s.value == pytest.approx(metrics.snr_db(f["b"], q["b"]))


def mean_abs_gap(outputs, labels, float_outputs):
    return float(np.mean(np.abs(outputs["e"] - float_outputs["e"])))


def test_user_metric_bootstrap_and_paired_bootstrap():
    rng = np.random.default_rng(5)
    f = {"e": rng.normal(size=(60, 4))}
    q = {"e": f["e"] + rng.normal(0, 0.2, (60, 4))}
    m = UserMetric("gap", False, Head("e", "vector", 4), mean_abs_gap, "tests.data.test_stats.mean_abs_gap")
    boot = Bootstrap(200, seed=3)
    ref = m.score(f, None, f, boot=boot)
    s = m.score(q, None, f, boot=boot, reference=ref)
    assert ref.value == 0.0 and (ref.ci_low, ref.ci_high) == (0.0, 0.0)
    assert s.value == pytest.approx(mean_abs_gap(q, None, f)) and s.ci_low < s.value < s.ci_high
    assert s.drop_p == 0.0  # every resample's gap is above the float model's 0
    assert m.score(q, None, f, boot=boot).ci_low == s.ci_low  # seeded
