"""Batchnorm layers under calibration-aware quantization: their input statistics, the joint ``affine`` fit of their
four vectors (never worse than round-to-nearest on the statistics, much better on real ones), its codec identity and
fallbacks, both apply paths and the cache, and the files it writes (plain models equal to their dequantized network)."""
import numpy as np
import pytest

import quantizer
from harness.calibration import collect_stats
from harness.executors.numpy_executor import NumpyExecutor
from quantizer import Codec, CodecCache, InvalidArgumentError
from quantizer.algorithms.affine import (BATCHNORM_FIELDS, batchnorm_error, fit_batchnorm, grid_levels, vector_grid,
                                         window_candidates)
from quantizer.algorithms.stats import LayerStats
from quantizer.algorithms.support import applied_algorithms
from quantizer.apply import apply_copying, apply_in_place
from quantizer.io import fresh_spec
from quantizer.tensors import layer_weights
from quantizer.walk import iter_layers
from tests.calibration.test_collect import CALIBRATED_CASES, _feeds, assert_plain_file_equal_to_dequantized
from tests.nn_models import _builder, _f32, rng_for

MODES = ("linear", "linear_symmetric", "linear_lut", "kmeans_lut")


def _conv_relu_bn(compute_mean_var=False):
    """conv -> ReLU -> batchnorm -> conv, as in crepe_tiny: nothing folds the batchnorm (it follows the ReLU)."""
    rng = rng_for("conv_relu_bn")
    c = 12
    b = _builder([("data", (3, 8, 8))])
    b.add_convolution("conv1", 3, c, 3, 3, 1, 1, "valid", 1, _f32(rng.standard_normal((3, 3, 3, c))),
                      _f32(rng.standard_normal(c)), True, input_name="data", output_name="c1")
    b.add_activation("relu", "RELU", "c1", "r1")
    b.add_batchnorm("bn", c, _f32(rng.uniform(0.5, 2.0, c)), _f32(rng.standard_normal(c)),
                    _f32(rng.uniform(0.0, 3.0, c)), _f32(rng.uniform(0.5, 9.0, c)), "r1", "b1",
                    compute_mean_var=compute_mean_var, instance_normalization=compute_mean_var, epsilon=1e-3)
    b.add_convolution("conv2", c, 4, 1, 1, 1, 1, "valid", 1, _f32(rng.standard_normal((1, 1, c, 4))),
                      _f32(rng.standard_normal(4)), True, input_name="b1", output_name="out")
    return b.spec


def _bn_values(spec, name="bn"):
    lay = next(lay for lay in iter_layers(spec) if lay.name == name)
    return {f: quantizer.decode_weights(wp, shape, axis).astype(np.float64)
            for f, (wp, shape, axis) in layer_weights(lay).items()}


def _random_stats(c, seed=0):
    r = np.random.default_rng(seed)
    m = r.normal(size=c) * 2
    var = r.uniform(0.1, 4.0, c)
    n = 500
    return LayerStats(((var + m * m) * n).reshape(c, 1, 1), m.reshape(c, 1), n)


# ----------------------------------------------------------------------------- statistics
def test_batchnorm_statistics_are_the_per_channel_moments_of_its_input():
    spec = _conv_relu_bn()
    feeds = _feeds(spec, n=30)
    stats = collect_stats(spec, feeds, batch_size=7)
    x = NumpyExecutor(spec).trace(feeds)["r1"].astype(np.float64)  # the batchnorm's input
    rows = np.moveaxis(x.reshape((-1,) + x.shape[-3:]), 1, 0).reshape(12, -1)
    st = stats["bn"]
    assert (st.groups, st.columns, st.rows) == (12, 1, rows.shape[1])
    np.testing.assert_allclose(st.mean[:, 0], rows.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st.gram[:, 0, 0], (rows * rows).sum(axis=1), rtol=1e-5)
    assert "bn" not in collect_stats(_conv_relu_bn(compute_mean_var=True), feeds)  # nothing to fit there


# ----------------------------------------------------------------------------- the fit
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nbits", [2, 3, 4, 8])
def test_fit_is_never_worse_than_round_to_nearest_on_the_statistics(mode, nbits):
    r = np.random.default_rng(nbits)
    c = 40
    vals = {"gamma": r.uniform(0.2, 2, c), "beta": r.normal(size=c), "mean": r.normal(size=c),
            "variance": r.uniform(0.05, 5, c)}
    st = _random_stats(c, nbits)
    cols, cand = {}, {}
    for f, v in vals.items():
        lv = grid_levels(vector_grid(v, mode, nbits))
        cols[f] = window_candidates(v, lv)
        cand[f] = lv[cols[f]]
    pick = fit_batchnorm(vals, cand, 1e-3, st)
    rows = np.arange(c)
    got = {f: cand[f][rows, pick[f]] for f in BATCHNORM_FIELDS}
    near = {f: cand[f][:, 0] for f in BATCHNORM_FIELDS}
    e, e_rtn = batchnorm_error(vals, got, 1e-3, st), batchnorm_error(vals, near, 1e-3, st)
    assert (e <= e_rtn * (1 + 1e-12) + 1e-15).all()
    if nbits <= 4:
        assert e.sum() < 0.5 * e_rtn.sum()  # the joint choice is worth it where the grids are coarse
    # brute force on a few channels: the fit finds the best of every combination
    for ch in range(3):
        best = min(batchnorm_error({f: vals[f][ch:ch + 1] for f in vals}, dict(zip(BATCHNORM_FIELDS, combo)), 1e-3,
                                   LayerStats(st.gram[ch:ch + 1], st.mean[ch:ch + 1], st.rows))[0]
                   for combo in _combos({f: cand[f][ch, :4] for f in BATCHNORM_FIELDS}))
        sub = fit_batchnorm({f: vals[f][ch:ch + 1] for f in vals}, {f: cand[f][ch:ch + 1, :4] for f in vals}, 1e-3,
                            LayerStats(st.gram[ch:ch + 1], st.mean[ch:ch + 1], st.rows))
        found = batchnorm_error({f: vals[f][ch:ch + 1] for f in vals},
                                {f: cand[f][ch:ch + 1, sub[f]].reshape(1) for f in vals}, 1e-3,
                                LayerStats(st.gram[ch:ch + 1], st.mean[ch:ch + 1], st.rows))[0]
        assert found <= best * (1 + 1e-9) + 1e-15


def _combos(c):
    import itertools

    for g, b, m, v in itertools.product(*(c[f] for f in BATCHNORM_FIELDS)):
        yield np.array([g]), np.array([b]), np.array([m]), np.array([v])


def test_fit_skips_variance_levels_the_runtime_cannot_use():
    """linear_symmetric grids reach below zero: a variance + eps <= 0 candidate is never chosen."""
    vals = {"gamma": np.array([1.0]), "beta": np.array([0.0]), "mean": np.array([0.0]), "variance": np.array([0.01])}
    cand = {f: v[:, None] for f, v in vals.items()}
    cand["variance"] = np.array([[-1.0, 0.01]])
    pick = fit_batchnorm(vals, cand, 1e-3, _random_stats(1))
    assert pick["variance"].tolist() == [1]


# ----------------------------------------------------------------------------- plans and identity
@pytest.mark.parametrize("algorithm,bc", [("gptq", False), ("gptq", True), ("rtn", True)])
def test_every_calibrated_request_gives_batchnorm_the_affine_codec(algorithm, bc):
    spec = _conv_relu_bn()
    stats = collect_stats(spec, _feeds(spec))
    plan = quantizer.build_plan(spec, 4, "linear", algorithm=algorithm, bias_correction=bc, calibration=stats)
    bn = [plan[("bn", f)] for f in BATCHNORM_FIELDS]
    assert all(c.algorithm == "affine" and not c.bias_correction and c.stats_digest == stats["bn"].digest() for c in bn)
    assert bn[0].token() == f"linear:4|affine(window=16)@{stats['bn'].digest()}" and bn[0].label == "linear-4bit-affine"
    assert applied_algorithms(plan)["bn"] == "affine"
    other = collect_stats(spec, _feeds(spec, seed=1))
    assert plan.digest() != quantizer.build_plan(spec, 4, "linear", algorithm=algorithm, bias_correction=bc,
                                                 calibration={**stats, "bn": other["bn"]}).digest()
    assert quantizer.build_plan(spec, 4, "linear", calibration=stats) == quantizer.build_plan(spec, 4, "linear")


def test_batchnorm_fallbacks_are_noted(caplog):
    spec = _conv_relu_bn()
    stats = collect_stats(spec, _feeds(spec))
    no_stats = {k: v for k, v in stats.items() if k != "bn"}
    with caplog.at_level("INFO", logger="quantizer"):
        plan = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration=no_stats)
    assert "no calibration statistics" in plan[("bn", "gamma")].note and not plan[("bn", "gamma")].calibrated
    assert applied_algorithms(plan)["bn"].startswith("rtn (fallback: gptq: no calibration statistics")
    inst = _conv_relu_bn(compute_mean_var=True)
    plan = quantizer.build_plan(inst, 4, "linear", algorithm="gptq", calibration=collect_stats(inst, _feeds(inst)))
    assert "computing its mean and variance" in plan[("bn", "gamma")].note
    with pytest.raises(InvalidArgumentError, match="another model"):
        quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration={**stats, "bn": stats["conv2"]})
    assert any("round-to-nearest" in r.getMessage() for r in caplog.records)


def test_affine_codec_validation():
    st = _random_stats(4)
    assert Codec("linear", 4, algorithm="affine", stats=st, options={"window": 8}).token().startswith(
        "linear:4|affine(window=8)@")
    for kwargs, match in [({"bias_correction": True}, "no bias_correction"), ({"options": {"window": 0}}, "window"),
                          ({"options": {"damp": 0.1}}, "unknown affine option")]:
        with pytest.raises(InvalidArgumentError, match=match):
            Codec("linear", 4, algorithm="affine", stats=st, **kwargs)
    with pytest.raises(InvalidArgumentError, match="apply_plan"):
        Codec("linear", 4, algorithm="affine", stats=st).encode(np.ones(4, np.float32), (4,))
    with pytest.raises(InvalidArgumentError, match="unknown algorithm"):
        quantizer.build_plan(_conv_relu_bn(), 4, "linear", algorithm="affine", calibration={})


# ----------------------------------------------------------------------------- applying
def test_both_apply_paths_and_the_cache_give_the_same_bytes_and_a_better_layer():
    spec = _conv_relu_bn()
    feeds = _feeds(spec, n=60)
    stats = collect_stats(spec, feeds)
    plan = quantizer.build_plan(spec, 3, "linear", algorithm="gptq", calibration=stats)
    cache = CodecCache()
    copied = apply_copying(spec, plan, cache=cache)
    again = apply_copying(spec, plan, cache=cache)
    assert cache.stats()["hits"] >= 4 and again.SerializeToString() == copied.SerializeToString()
    inplace = fresh_spec(spec)
    apply_in_place(inplace, plan, cache=CodecCache())
    assert inplace.SerializeToString() == copied.SerializeToString()
    # only the batchnorm's fields differ from round-to-nearest's, and its output error is lower
    rtn_bn = quantizer.apply_plan(spec, plan.replace({("bn", f): Codec("linear", 3) for f in BATCHNORM_FIELDS}))
    fl, fit, near = _bn_values(spec), _bn_values(copied), _bn_values(rtn_bn)
    assert all(len(layer_weights(lay)["gamma"][0].rawValue) for lay in iter_layers(copied) if lay.name == "bn")
    e_fit = batchnorm_error(fl, fit, 1e-3, stats["bn"]).sum()
    e_rtn = batchnorm_error(fl, near, 1e-3, stats["bn"]).sum()
    assert e_fit < 0.5 * e_rtn
    # a field kept float by the plan enters the fit as it is
    partial = plan.replace({("bn", "mean"): None})
    kept = _bn_values(quantizer.apply_plan(spec, partial))
    np.testing.assert_array_equal(kept["mean"], fl["mean"])


@pytest.mark.parametrize("nbits,mode,algorithm,bc", CALIBRATED_CASES)
def test_calibrated_files_with_batchnorm_are_plain_models_equal_to_their_dequantized_network(tmp_path, nbits, mode,
                                                                                             algorithm, bc):
    spec = _conv_relu_bn()
    stats = collect_stats(spec, _feeds(spec, n=50))
    q = quantizer.quantize_weights(spec, nbits, mode, algorithm=algorithm, bias_correction=bc, calibration=stats)
    assert applied_algorithms(quantizer.build_plan(spec, nbits, mode, algorithm=algorithm, bias_correction=bc,
                                                   calibration=stats))["bn"] == "affine"
    assert_plain_file_equal_to_dequantized(q, tmp_path / f"bn-{mode}-{algorithm}.mlmodel", _feeds(spec, n=9, seed=3))
