"""Bias correction and activation-weighted k-means."""
import numpy as np
import pytest

from quantizer.algorithms import GramAccumulator, LayerStats, activation_weighted_lut, bias_correction, element_weights, gptq, rtn
from quantizer.algorithms import weighted_kmeans as wk
from quantizer.algorithms.weighted_kmeans import weighted_error, weighted_kmeans_1d, weighted_kmeans_lut
from quantizer.kmeans import kmeans_lut

rng = np.random.default_rng(0)


def stats_of(x, **kw):
    acc = GramAccumulator(x.shape[-1], dtype=np.float64, **kw)
    acc.add(x)
    return acc.stats()


def test_bias_correction_sign_and_zero_mean_error():
    x = rng.normal(size=(500, 30)) + 2.0
    st = stats_of(x)
    w = rng.normal(size=(12, 30)).astype(np.float32)
    b = rng.normal(size=12)
    wh = rtn(w, "linear", 2).dequantize()
    delta = bias_correction(w, wh, st)
    y = x @ w.T.astype(np.float64) + b
    yq = x @ wh.T.astype(np.float64) + (b + delta)
    np.testing.assert_allclose((yq - y).mean(axis=0), 0, atol=1e-9)
    assert np.sum((yq - y) ** 2) < np.sum((x @ wh.T.astype(np.float64) + b - y) ** 2)
    np.testing.assert_allclose(bias_correction(w, wh, x.mean(axis=0)), delta)  # a plain mean works too


def test_bias_correction_grouped_conv():
    g, r, cg = 3, 4, 2
    w = rng.normal(size=(g * r, cg, 3, 3)).astype(np.float32)
    x = rng.normal(size=(g, 200, cg * 9)) + 1.0
    st = stats_of(x, groups=g)
    wh = rtn(w, "linear", 3).dequantize()
    delta = bias_correction(w, wh, st).reshape(g, r)
    for gi in range(g):
        e = x[gi] @ (w[gi * r:(gi + 1) * r].reshape(r, -1) - wh[gi * r:(gi + 1) * r].reshape(r, -1)).T
        np.testing.assert_allclose(e.mean(axis=0), delta[gi], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError):
        bias_correction(w, wh[:-1], st)


def brute_force(values, weights, k):
    """Exact weighted optimum over all contiguous partitions of the sorted distinct values."""
    import itertools

    u = np.unique(values)
    c = np.array([weights[values == v].sum() for v in u])
    best = np.inf
    for cuts in itertools.combinations(range(1, u.size), k - 1):
        edges = (0,) + cuts + (u.size,)
        cost = 0.0
        for a, b in zip(edges[:-1], edges[1:]):
            m = np.average(u[a:b], weights=c[a:b])
            cost += float((c[a:b] * (u[a:b] - m) ** 2).sum())
        best = min(best, cost)
    return best


def wcost(values, weights, cent, labels):
    return float((weights * (values - cent[labels]) ** 2).sum())


def test_weighted_kmeans_is_optimal_on_small_data():
    for seed in range(5):
        r = np.random.default_rng(seed)
        v = np.round(r.normal(size=40), 1).astype(np.float32)
        wts = r.gamma(0.5, size=40)
        cent, lab = weighted_kmeans_1d(v, wts, 3)
        assert wcost(v, wts, cent, lab) == pytest.approx(brute_force(v, wts, 3), rel=1e-9, abs=1e-12)


def test_weighted_kmeans_large_paths(monkeypatch):
    v = (rng.standard_t(4, size=200_000) * 0.05).astype(np.float32)
    wts = rng.gamma(1.0, size=v.size)
    exact = weighted_kmeans_1d(v, wts, 16)  # distinct values, Lloyd from the coarse optimum
    monkeypatch.setattr(wk, "EXACT_ATOM_VALUES", 1000)  # force the histogram path
    binned = weighted_kmeans_1d(v, wts, 16)
    ce, cb = wcost(v, wts, *exact), wcost(v, wts, *binned)
    assert abs(ce - cb) / ce < 1e-3
    plain_c, plain_l = kmeans_lut(v, 4)
    assert ce < wcost(v, wts, plain_c, plain_l.astype(np.int64))


def test_zero_weights_and_few_values():
    v = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
    cent, lab = weighted_kmeans_1d(v, np.array([1.0, 0.0, 0.0, 1.0]), 2)
    np.testing.assert_allclose(cent, [0.0, 3.0])
    assert lab.tolist() == [0, 0, 1, 1]
    lut, idx = weighted_kmeans_lut(v, np.zeros(4), 1)  # all weights zero: plain k-means
    assert lut.size == 2 and idx.max() <= 1
    lut, idx = weighted_kmeans_lut(np.array([1.0, 1.0, 2.0], np.float32), np.ones(3), 3)
    assert lut.size == 8 and lut[-1] == 2.0 and sorted(set(lut[idx].tolist())) == [1.0, 2.0]
    with pytest.raises(ValueError, match="weights"):
        weighted_kmeans_1d(v, -np.ones(4), 2)


def test_activation_weighted_lut_matches_element_weights():
    w = rng.normal(size=(16, 3, 3, 3)).astype(np.float32)
    x = rng.normal(size=(300, 27)) * rng.gamma(1.0, size=27)
    st = stats_of(x)
    lut, idx = activation_weighted_lut(w, st, 3)
    lut2, idx2 = weighted_kmeans_lut(w, element_weights(w, st), 3)
    np.testing.assert_allclose(lut, lut2)
    np.testing.assert_array_equal(idx, idx2)
    plain, pidx = kmeans_lut(w.reshape(-1), 3)
    assert weighted_error(w, lut[idx].reshape(w.shape), st) < weighted_error(w, plain[pidx].reshape(w.shape), st)
    res = gptq(w, st, "kmeans_lut", 3, lut=lut)
    np.testing.assert_array_equal(res.lut, lut.astype(np.float32))
