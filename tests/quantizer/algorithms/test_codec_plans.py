"""Calibration-aware codecs in quantizer's plans: identity (token, equality, digests), validation, fallbacks,
bias correction written into the model, and the codec cache's exactness."""
import numpy as np
import pytest

import quantizer
from quantizer import Codec, CodecCache, InvalidArgumentError, QuantPlan
from quantizer.algorithms import GramAccumulator, LayerStats, bias_correction
from quantizer.algorithms.support import applied_algorithms
from quantizer.tensors import layer_weights
from quantizer.walk import iter_layers


def stats_for(columns, groups=1, seed=0, rows=200):
    r = np.random.default_rng(seed)
    acc = GramAccumulator(columns, groups=groups, dtype=np.float64)
    x = r.normal(size=(groups, rows, columns)) + 0.5
    acc.add(x if groups > 1 else x[0])
    return acc.stats()


def layer(spec, name):
    return next(lay for lay in iter_layers(spec) if lay.name == name)


def weights(spec, name, field="weights"):
    wp, shape, axis = layer_weights(layer(spec, name))[field]
    return quantizer.decode_weights(wp, shape, axis)


def model_stats(spec, seed=0):
    """Random statistics with the right columns for every convolution / innerProduct / batchedMatmul."""
    out = {}
    for lay in iter_layers(spec):
        kind = lay.WhichOneof("layer")
        p = getattr(lay, kind)
        if kind == "convolution" and not p.isDeconvolution:
            kh, kw = (list(p.kernelSize) + [3, 3])[:2]
            out[lay.name] = stats_for(p.kernelChannels * kh * kw, max(1, p.nGroups), seed)
        elif kind == "innerProduct":
            out[lay.name] = stats_for(p.inputChannels, 1, seed)
        elif kind == "batchedMatmul" and len(lay.input) == 1:
            out[lay.name] = stats_for(p.weightMatrixFirstDimension, 1, seed)
    return out


# ----------------------------------------------------------------------------- identity
def test_round_to_nearest_identity_is_unchanged():
    assert Codec("linear", 4).token() == "linear:4"
    assert Codec("linear", 4, algorithm="rtn", bias_correction=False) == Codec("linear", 4)
    assert not Codec("kmeans", 3).calibrated and Codec("kmeans", 3).label == "kmeans_lut-3bit"


def test_calibrated_identity_is_algorithm_options_and_statistics_digest():
    st = stats_for(12)
    same = LayerStats(np.array(st.gram), np.array(st.mean), st.rows)  # equal values, another object
    other = stats_for(12, seed=1)
    a = Codec("linear", 4, algorithm="gptq", stats=st)
    assert a == Codec("linear", 4, algorithm="gptq", stats=same) and hash(a) == hash(Codec("linear", 4, algorithm="gptq", stats=same))
    assert a == Codec("linear", 4, algorithm="gptq", stats=st, options={"damp": 0.01, "act_order": True})
    differs = [Codec("linear", 4, algorithm="gptq", stats=other), Codec("linear", 4, algorithm="gptq", stats=st,
               options={"damp": 0.02}), Codec("linear", 4, algorithm="gptq", bias_correction=True, stats=st),
               Codec("linear", 4, bias_correction=True, stats=st), Codec("linear", 3, algorithm="gptq", stats=st),
               Codec("linear", 4), Codec("linear", 4, algorithm="gptq", stats=st, options={"relu_off": 0})]
    assert all(d != a for d in differs) and len({d.token() for d in differs} | {a.token()}) == 8
    assert a.token().startswith("linear:4|gptq(act_order=1,block_size=128,centered=0,damp=0.01,lut=plain,"
                                "relu_off=0.03)@")
    assert a.token().endswith(st.digest()) and a.stats_digest == st.digest()
    assert a.label == "linear-4bit-gptq" and Codec("kmeans_lut", 2, algorithm="awkm", bias_correction=True,
                                                    stats=st).label == "kmeans_lut-2bit-awkm-bc"
    assert "stats=" in repr(a) and st.digest()[:12] in repr(a)


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "linear", "nbits": 4, "algorithm": "gptq"}, "calibration statistics"),
    ({"mode": "linear", "nbits": 16, "algorithm": "gptq", "stats": "S"}, "n-bit"),
    ({"mode": "linear", "nbits": 4, "algorithm": "awkm", "stats": "S"}, "kmeans_lut"),
    ({"mode": "custom_lut", "nbits": 4, "algorithm": "gptq", "stats": "S", "lut_function": lambda n, w: None},
     "custom_lut"),
    ({"mode": "linear", "nbits": 4, "options": {"damp": 0.1}}, "plain rtn"),
    ({"mode": "linear", "nbits": 4, "algorithm": "gptq", "stats": "S", "options": {"dampp": 0.1}}, "dampp"),
    ({"mode": "linear", "nbits": 4, "algorithm": "gptq", "stats": "S", "options": {"damp": 0}}, "damp"),
    ({"mode": "linear", "nbits": 4, "algorithm": "adaround", "stats": "S"}, "unknown algorithm"),
])
def test_codec_validation(kwargs, match):
    kwargs = {k: (stats_for(4) if v == "S" else v) for k, v in kwargs.items()}
    with pytest.raises(InvalidArgumentError, match=match):
        Codec(**kwargs)


# ----------------------------------------------------------------------------- plans
@pytest.mark.parametrize("name", ["convolution", "convolution_grouped", "convolution_depthwise", "innerProduct",
                                  "batchedMatmul"])
def test_plan_digest_includes_the_statistics(nn_model, name):
    spec = nn_model(name)
    st, st2 = model_stats(spec, 0), model_stats(spec, 1)
    rtn = quantizer.build_plan(spec, 4, "linear")
    g = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration=st)
    assert g.digest() != rtn.digest() and g.digest() == quantizer.build_plan(spec, 4, "linear", algorithm="gptq",
                                                                              calibration=dict(st)).digest()
    assert g.digest() != quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration=st2).digest()
    assert quantizer.build_plan(spec, 4, "linear", calibration=st).digest() == rtn.digest()  # rtn reads nothing
    w = [c for (lay, f), c in g.items() if f == "weights"]
    assert w and all(c.algorithm == "gptq" and c.stats_digest == st[name].digest() for c in w)
    assert all(not c.calibrated for (lay, f), c in g.items() if f == "bias")
    assert applied_algorithms(g) == {name: "gptq"}
    bc = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", bias_correction=True, calibration=st)
    assert (name, "bias") not in bc and bc[(name, "weights")].bias_correction  # the corrected bias stays float


def test_round_to_nearest_with_statistics_is_todays_bytes(nn_model):
    spec = nn_model("convolution")
    st = model_stats(spec)
    for mode in ("linear", "kmeans_lut", "linear_lut"):
        today = quantizer.quantize_weights(spec, 3, mode).SerializeToString()
        assert quantizer.quantize_weights(spec, 3, mode, algorithm="rtn", calibration=st).SerializeToString() == today


@pytest.mark.parametrize("name,reason", [("gru", "recurrent gate"),
                                         ("simpleRecurrent", "recurrent weight matrix"),
                                         ("deconvolution", "deconvolution"), ("embeddingND", "embedding table"),
                                         ("scale", "not a matrix multiply"), ("bias", "not a matrix multiply"),
                                         ("batchnorm", "no calibration statistics")])
def test_layers_no_algorithm_handles_fall_back_with_a_note(nn_model, name, reason, caplog):
    spec = nn_model(name)
    with caplog.at_level("INFO", logger="quantizer"):
        plan = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration={})
    rtn = quantizer.build_plan(spec, 4, "linear")
    assert plan.digest() == rtn.digest()  # the same experiment: dedupe stays exact
    assert all(reason in c.note for (_, f), c in plan.items() if c is not None and f != "bias")
    record = applied_algorithms(plan)
    assert record and all(v.startswith("rtn (fallback: gptq: ") and reason in v for v in record.values())
    assert quantizer.apply_plan(spec, plan).SerializeToString() == quantizer.apply_plan(spec, rtn).SerializeToString()
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("quantizer")]
    assert any("round-to-nearest" in m and reason in m for m in logged), logged


def test_lstm_gates_without_statistics_fall_back_and_peepholes_always_do(nn_model):
    """LSTM gate matrices are calibrated (tests/calibration/test_lstm.py); without their statistics they fall back
    with a note, and their peepholes fall back whatever the statistics."""
    spec = nn_model("uniDirectionalLSTM")
    plan = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration={})
    assert plan.digest() == quantizer.build_plan(spec, 4, "linear").digest()
    notes = {f: c.note for (_, f), c in plan.items()}
    assert "no calibration statistics" in notes["weightParams.forgetGateRecursionMatrix"]
    assert "only its gate matrices" in notes["weightParams.outputGatePeepholeVector"]
    assert notes["weightParams.forgetGateBiasVector"] == ""


def test_missing_and_mismatched_statistics(nn_model):
    spec = nn_model("innerProduct")
    plan = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration={"other": stats_for(16)})
    assert "no calibration statistics" in plan[("innerProduct", "weights")].note
    with pytest.raises(InvalidArgumentError, match="another model"):
        quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration={"innerProduct": stats_for(15)})
    with pytest.raises(InvalidArgumentError, match="calibration statistics"):
        quantizer.quantize_weights(spec, 4, "linear", algorithm="gptq")
    with pytest.raises(InvalidArgumentError, match="bias_correction"):
        quantizer.quantize_weights(spec, 4, "linear", bias_correction=True)


# ----------------------------------------------------------------------------- bias correction
@pytest.mark.parametrize("name", ["innerProduct", "innerProduct_nobias", "convolution_nobias", "convolution_grouped"])
@pytest.mark.parametrize("algorithm", ["rtn", "gptq"])
def test_bias_correction_is_written_into_the_bias(nn_model, name, algorithm):
    spec = nn_model(name)
    st = model_stats(spec)
    q = quantizer.quantize_weights(spec, 3, "linear", algorithm=algorithm, bias_correction=True, calibration=st)
    lay = layer(q, name)
    p = getattr(lay, lay.WhichOneof("layer"))
    w, wq = weights(spec, name), weights(q, name)
    delta = bias_correction(w, wq, st[name])
    old = weights(spec, name, "bias") if getattr(getattr(layer(spec, name), lay.WhichOneof("layer")), "hasBias") \
        else np.zeros(delta.size, np.float32)
    assert p.hasBias and len(p.bias.floatValue) == delta.size  # float32, corrected
    np.testing.assert_allclose(np.array(p.bias.floatValue), (old + delta).astype(np.float32), rtol=1e-6, atol=1e-6)


def test_bias_correction_after_fusion_and_in_a_user_plan(nn_model):
    spec = nn_model("conv_nobias+bn")  # the fused convolution gains the batchnorm's bias
    st = model_stats(spec)
    fused = quantizer.fuse(spec)
    first = next(lay.name for lay in iter_layers(fused) if lay.WhichOneof("layer") == "convolution")
    q = quantizer.quantize_weights(spec, 4, "linear", algorithm="gptq", bias_correction=True, calibration=st)
    delta = bias_correction(weights(fused, first), weights(q, first), st[first])
    np.testing.assert_allclose(weights(q, first, "bias"), weights(fused, first, "bias") + delta, rtol=1e-5, atol=1e-5)
    # a plan that asks for the bias too: the corrected bias is encoded with the plan's codec
    plan = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", bias_correction=True, calibration=st)
    plan = plan.replace({(first, "bias"): Codec("linear", 8)})
    lay = layer(quantizer.apply_plan(spec, plan), first)
    assert lay.convolution.bias.quantization.numberOfBits == 8


def test_codec_cache_is_exact_on_statistics(nn_model):
    spec = nn_model("innerProduct")
    cache = CodecCache()
    st, st2 = model_stats(spec, 0), model_stats(spec, 1)
    a = quantizer.quantize_weights(spec, 4, "linear", algorithm="gptq", calibration=st, cache=cache)
    b = quantizer.quantize_weights(spec, 4, "linear", algorithm="gptq", calibration=dict(st), cache=cache)
    assert cache.stats()["hits"] >= 1 and a.SerializeToString() == b.SerializeToString()
    misses = cache.stats()["misses"]
    c = quantizer.quantize_weights(spec, 4, "linear", algorithm="gptq", calibration=st2, cache=cache)
    assert cache.stats()["misses"] > misses and c.SerializeToString() != a.SerializeToString()


def test_plan_of_a_mixed_assignment_carries_each_algorithm(nn_model):
    spec = nn_model("innerProduct")
    st = model_stats(spec)
    g = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration=st)
    mixed = QuantPlan({("innerProduct", "weights"): g[("innerProduct", "weights")],
                       ("innerProduct", "bias"): Codec("linear", 8)})
    assert applied_algorithms(mixed) == {"innerProduct": "gptq"}
    assert mixed.digest() != QuantPlan({("innerProduct", "weights"): Codec("linear", 4),
                                        ("innerProduct", "bias"): Codec("linear", 8)}).digest()
