"""QuantPlan as a value, build_plan/apply_plan semantics, and the (tensor digest, codec) cache."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import quantizer
from quantizer import Codec, CodecCache, QuantPlan, apply_plan, build_plan
from quantizer.coremltools_quiet import coremltools
from quantizer.errors import InvalidArgumentError
from quantizer.packing import unpack_bits
from quantizer.tensors import layer_weights
from quantizer.walk import iter_layers
from tests.nn_models import FUSION_MODELS, LAYER_MODELS

ct = coremltools()
Model = ct.proto.Model_pb2.Model


def _spec(name: str) -> Model:
    if name in LAYER_MODELS:
        return LAYER_MODELS[name]()
    return FUSION_MODELS[name].build()


def _weights(spec, layer: str, field: str):
    for lay in iter_layers(spec):
        if lay.name == layer:
            return layer_weights(lay)[field][0]
    raise KeyError(layer)


# -- the plan value ---------------------------------------------------------------------------
def test_plan_equality_hash_and_digest_ignore_keep_entries():
    a = QuantPlan({("fc", "weights"): Codec("linear", 8), ("fc", "bias"): None})
    b = QuantPlan({("fc", "weights"): ("linear", 8)})
    c = QuantPlan({("fc", "weights"): Codec("linear", 4)})
    assert a == b and hash(a) == hash(b) and a.digest() == b.digest()
    assert a != c and a.digest() != c.digest()
    assert len(a) == 2 and a[("fc", "bias")] is None and list(a) == [("fc", "weights"), ("fc", "bias")]
    assert len({a, b, c}) == 2
    assert a.summary() == {"linear:8": 1} and a.codecs == {Codec("linear", 8)}
    assert a.quantizes and not QuantPlan({("fc", "weights"): Codec("fp16")}).quantizes
    assert a.to_records() == [{"layer": "fc", "field": "weights", "mode": "linear", "nbits": 8}]
    d = a.replace({("fc", "bias"): Codec("fp16")})
    assert d[("fc", "bias")] == Codec("fp16") and a[("fc", "bias")] is None  # a is unchanged
    assert "digest" in repr(a)


def test_plan_digest_is_stable_across_processes():
    code = (
        "from quantizer import QuantPlan, Codec;"
        "print(QuantPlan({('conv1','weights'): Codec('kmeans',4), ('fc','bias'): Codec('fp16')}).digest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=".")
    here = QuantPlan({("fc", "bias"): Codec("fp16"), ("conv1", "weights"): Codec("kmeans_lut", 4)}).digest()
    assert out.stdout.strip() == here


@pytest.mark.parametrize(
    "entries,msg",
    [
        ({"fc": Codec("linear", 8)}, "string pairs"),
        ({("fc", "weights"): "linear"}, "must be a Codec"),
        ({("fc", "weights"): ("linear", 12)}, "nbits must be 16"),
    ],
)
def test_plan_rejects_bad_entries(entries, msg):
    with pytest.raises(InvalidArgumentError, match=msg):
        QuantPlan(entries)


# -- build_plan ---------------------------------------------------------------------------------
def test_build_plan_selects_like_coremltools_and_follows_fusion():
    spec = _spec("conv_nobias+bn")  # conv without bias, then batchnorm: fusion gives the conv a bias
    conv, bn = (lay.name for lay in spec.neuralNetwork.layers[:2])
    fused = build_plan(spec, 4, "linear")
    assert set(fused) == {(conv, "weights"), (conv, "bias")}
    unfused = build_plan(spec, 4, "linear", fuse=False)
    assert set(unfused) == {(conv, "weights")} | {(bn, f) for f in ("gamma", "beta", "mean", "variance")}
    half = build_plan(spec, 16)  # fp16: coremltools does not fuse
    assert set(half) == set(unfused) and half.codecs == {Codec("fp16")}


def test_build_plan_skips_non_float32_tensors_and_dequantization_takes_them():
    spec = _spec("innerProduct")
    half = quantizer.quantize_weights(spec, 16)
    assert len(build_plan(half, 8, "linear")) == 0  # as coremltools: float16 tensors are left alone
    deq = build_plan(half, None, "dequantization")
    assert set(deq) == {("innerProduct", "weights"), ("innerProduct", "bias")}
    assert len(build_plan(spec, None, "dequantization")) == 0


# -- apply_plan ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,nbits", [("linear", 8), ("linear", 3), ("linear_lut", 2), ("kmeans_lut", 4), ("linear", 16)])
@pytest.mark.parametrize("name", ["convolution", "conv+scale", "loop", "biDirectionalLSTM", "deconvolution_grouped"])
def test_apply_plan_of_built_plan_equals_quantize_weights(name, mode, nbits):
    spec = _spec(name)
    before = spec.SerializeToString()
    via_plan = apply_plan(spec, build_plan(spec, nbits, mode))
    direct = quantizer.quantize_weights(spec, nbits, mode)
    assert spec.SerializeToString() == before  # input untouched
    assert via_plan.SerializeToString() == direct.SerializeToString()


def test_mixed_plan_applies_each_codec_and_bumps_version(tmp_path):
    spec = _spec("convolution")
    spec.specificationVersion = 1
    plan = QuantPlan({("convolution", "weights"): Codec("kmeans", 3), ("convolution", "bias"): Codec("fp16")})
    out = apply_plan(spec, plan)
    wp, bias = _weights(out, "convolution", "weights"), _weights(out, "convolution", "bias")
    assert wp.quantization.numberOfBits == 3 and len(wp.quantization.lookupTableQuantization.floatValue) == 8
    assert len(bias.float16Value) == 2 * 8 and not len(bias.floatValue)
    assert out.specificationVersion == 3
    only_half = apply_plan(spec, {("convolution", "bias"): Codec("fp16")})
    assert only_half.specificationVersion == 2
    assert _weights(only_half, "convolution", "weights").floatValue  # untouched: still float32
    # the file loads back in coremltools
    path = quantizer.save(out, tmp_path / "mixed.mlmodel")
    ct.models.MLModel(str(path))


def test_apply_plan_returns_the_kind_it_was_given(tmp_path):
    spec = _spec("innerProduct")
    plan = build_plan(spec, 8)
    path = quantizer.save(spec, tmp_path / "ip.mlmodel")
    mlmodel = ct.models.MLModel(spec)
    from_spec, from_path, from_ml = apply_plan(spec, plan), apply_plan(str(path), plan), apply_plan(mlmodel, plan)
    assert isinstance(from_spec, Model) and isinstance(from_path, Model)
    assert isinstance(from_ml, ct.models.MLModel)
    assert from_spec.SerializeToString() == from_path.SerializeToString() == from_ml.get_spec().SerializeToString()
    assert isinstance(quantizer.quantize_weights(mlmodel, 8), ct.models.MLModel)


def test_apply_plan_ignores_entries_of_layers_removed_by_fusion():
    spec = _spec("conv+bn")
    conv, bn = (lay.name for lay in spec.neuralNetwork.layers[:2])
    plan = build_plan(spec, 8, fuse=False)  # addresses the batchnorm too
    assert (bn, "gamma") in plan
    out = apply_plan(spec, plan)  # fuses: the batchnorm is gone, its entries are moot
    assert [lay.name for lay in out.neuralNetwork.layers] == [conv]
    assert _weights(out, conv, "weights").quantization.numberOfBits == 8
    assert _weights(out, conv, "bias").quantization.numberOfBits == 8


def test_apply_plan_requantizes_explicitly_planned_non_float_tensors():
    spec = _spec("innerProduct")
    w = np.array(_weights(spec, "innerProduct", "weights").floatValue, np.float32)
    half = quantizer.quantize_weights(spec, 16)
    out = apply_plan(half, {("innerProduct", "weights"): Codec("linear", 8)})
    got = quantizer.decode_weights(_weights(out, "innerProduct", "weights"), (10, 16))
    assert np.abs(got.ravel() - w).max() < np.ptp(w) / 255
    back = apply_plan(out, {("innerProduct", "weights"): Codec("dequantization")})
    # dequantization computes q * scale + bias in float64 and rounds once, as coremltools does
    wq = _weights(out, "innerProduct", "weights")
    q = unpack_bits(wq.rawValue, 8, 160).reshape(10, 16).astype(np.float64)
    lq = wq.quantization.linearQuantization
    want = q * np.array(lq.scale, np.float64)[:, None] + np.array(lq.bias, np.float64)[:, None]
    got_back = np.array(_weights(back, "innerProduct", "weights").floatValue, np.float32)
    assert np.array_equal(got_back, want.astype(np.float32).ravel())
    np.testing.assert_allclose(got_back, got.ravel(), rtol=0, atol=4 * np.finfo(np.float32).eps * np.abs(w).max())


def test_dequantizing_int8_dynamic_layers_clears_the_flag():
    from coremltools.models.neural_network.quantization_utils import activate_int8_int8_matrix_multiplications

    spec = _spec("innerProduct")
    w = np.array(_weights(spec, "innerProduct", "weights").floatValue, np.float32)
    int8 = Model()
    int8.CopyFrom(spec)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        activate_int8_int8_matrix_multiplications(int8)
    assert int8.neuralNetwork.layers[0].innerProduct.int8DynamicQuantize
    out = quantizer.quantize_weights(int8, None, "dequantization")
    assert not out.neuralNetwork.layers[0].innerProduct.int8DynamicQuantize
    got = np.array(_weights(out, "innerProduct", "weights").floatValue, np.float32)
    wq = _weights(int8, "innerProduct", "weights")
    want = (np.frombuffer(wq.int8RawValue, np.int8).astype(np.float64) * wq.quantization.linearQuantization.scale[0])
    assert np.array_equal(got, want.astype(np.float32))
    assert np.abs(got - w).max() <= np.abs(w).max() / 127 + 1e-6


def test_is_updatable_and_other_weightparams_fields_survive():
    spec = _spec("innerProduct_updatable")
    out = quantizer.quantize_weights(spec, 4, "kmeans")
    for field in ("weights", "bias"):
        assert _weights(out, "innerProduct_updatable", field).isUpdatable


def test_pipeline_versions_are_raised_on_every_network_and_wrapper():
    inner = _spec("innerProduct")
    inner.specificationVersion = 1
    pipe = Model()
    pipe.specificationVersion = 1
    pipe.description.CopyFrom(inner.description)
    pipe.pipeline.models.add().CopyFrom(inner)
    out = quantizer.quantize_weights(pipe, 8)
    assert out.specificationVersion == 3 and out.pipeline.models[0].specificationVersion == 3
    assert out.pipeline.models[0].neuralNetwork.layers[0].innerProduct.weights.quantization.numberOfBits == 8


@pytest.mark.parametrize("name", ["loop", "branch", "biDirectionalLSTM", "classifier", "gru", "embeddingND",
                                  "innerProduct_updatable", "deconvolution_grouped"])
@pytest.mark.parametrize("codec", [Codec("linear", 3), Codec("kmeans", 2), Codec("fp16")])
def test_copying_and_in_place_application_agree(name, codec):
    from quantizer.apply import apply_copying, apply_in_place
    from quantizer.io import fresh_spec

    spec = _spec(name)
    before = spec.SerializeToString()
    plan = QuantPlan({(t.layer, t.field): codec for t in quantizer.weight_tensors(spec) if t.quantizable})
    copied = apply_copying(spec, plan, cache=CodecCache())
    in_place = fresh_spec(spec)
    apply_in_place(in_place, plan, cache=CodecCache())
    assert spec.SerializeToString() == before
    assert copied.SerializeToString() == in_place.SerializeToString()


def test_fusion_possible_is_conservative():
    from quantizer.fusion import fuse_in_place, fusion_possible

    assert fusion_possible(_spec("conv+bn")) and fusion_possible(_spec("conv+scale"))
    assert not fusion_possible(_spec("convolution")) and not fusion_possible(_spec("loop"))
    assert not fuse_in_place(quantizer.load(_spec("convolution")))


# -- the cache ----------------------------------------------------------------------------------
def test_cache_never_encodes_the_same_tensor_the_same_way_twice():
    cache = CodecCache()
    spec = _spec("convolution")
    first = apply_plan(spec, build_plan(spec, 4, "kmeans"), cache=cache)
    s1 = cache.stats()
    assert s1["misses"] == 2 and s1["hits"] == 0 and s1["entries"] == 2 and s1["bytes"] > 0
    second = apply_plan(spec, build_plan(spec, 4, "kmeans"), cache=cache)
    s2 = cache.stats()
    assert s2["misses"] == 2 and s2["hits"] == 2
    assert first.SerializeToString() == second.SerializeToString()
    # a different plan sharing one (tensor, codec) pair reuses it
    apply_plan(spec, {("convolution", "weights"): Codec("kmeans", 4), ("convolution", "bias"): Codec("linear", 8)},
               cache=cache)
    s3 = cache.stats()
    assert s3["hits"] == 3 and s3["misses"] == 3


def test_single_cast_codecs_bypass_the_cache():
    # fp16 and dequantization are one cast each: cheaper than the digest a lookup needs
    cache = CodecCache()
    spec = _spec("convolution")
    half = apply_plan(spec, build_plan(spec, 16), cache=cache)
    apply_plan(half, build_plan(half, None, "dequantization"), cache=cache)
    assert cache.stats()["misses"] == cache.stats()["hits"] == cache.stats()["entries"] == 0
    assert not Codec("fp16").cacheable and not Codec("dequantization").cacheable and Codec("linear", 8).cacheable


def test_cache_key_includes_values_shape_axis_and_codec():
    cache = CodecCache()
    a, b = _spec("convolution"), _spec("convolution_nobias")
    apply_plan(a, build_plan(a, 8), cache=cache)
    apply_plan(b, build_plan(b, 8), cache=cache)  # other values: misses
    apply_plan(a, build_plan(a, 7), cache=cache)  # other codec: misses
    assert cache.stats()["hits"] == 0 and cache.stats()["misses"] == 5


def test_cache_is_a_bounded_lru():
    spec = _spec("convolution")
    plan = build_plan(spec, 8)
    cache = CodecCache(max_bytes=10_000)
    apply_plan(spec, plan, cache=cache)
    full = cache.stats()["bytes"]
    cache.resize(full - 1)  # one entry must go
    s = cache.stats()
    assert s["evictions"] >= 1 and s["bytes"] <= full - 1 and s["max_bytes"] == full - 1
    tiny = CodecCache(max_bytes=10)  # nothing fits: still correct, nothing stored
    out = apply_plan(spec, plan, cache=tiny)
    assert tiny.stats()["entries"] == 0 and out.SerializeToString() == apply_plan(spec, plan, cache=CodecCache()).SerializeToString()
    cache.clear()
    assert cache.stats() == {"hits": 0, "misses": 0, "evictions": 0, "entries": 0, "bytes": 0, "max_bytes": full - 1}


def test_default_cache_is_exposed():
    assert isinstance(quantizer.codec_cache, CodecCache)
    assert set(quantizer.codec_cache.stats()) >= {"hits", "misses", "evictions", "entries", "bytes"}


def _lut_scaled(nbits, weights, factor=1.0):
    """A custom LUT function with a parameter: a linear LUT over the range, times ``factor``."""
    import numpy as _np

    lo, hi = float(weights.min()), float(weights.max())
    lut = _np.linspace(lo, hi, 1 << nbits) * factor
    idx = _np.abs(weights.reshape(-1, 1) - lut.reshape(1, -1)).argmin(1).astype(_np.uint8)
    return lut, idx


def test_lut_function_identity_tells_partials_closures_and_objects_apart():
    import functools

    from quantizer.codecs import Codec as _Codec

    def token(fn):
        return _Codec("custom_lut", 4, fn).token()

    # partials: same function, different captured arguments -> different plans
    assert token(functools.partial(_lut_scaled, factor=1.0)) != token(functools.partial(_lut_scaled, factor=0.5))
    assert token(functools.partial(_lut_scaled, factor=0.5)) == token(functools.partial(_lut_scaled, factor=0.5))

    # closures: same code, different cell contents
    def make(factor):
        def lut(nbits, weights):
            return _lut_scaled(nbits, weights, factor)

        return lut

    assert token(make(1.0)) != token(make(2.0))
    assert token(make(2.0)) == token(make(2.0))

    # callable objects: same class, different state
    class Lut:
        def __init__(self, factor):
            self.factor = factor

        def __call__(self, nbits, weights):
            return _lut_scaled(nbits, weights, self.factor)

    assert token(Lut(1.0)) != token(Lut(3.0))
    assert token(Lut(3.0)) == token(Lut(3.0))
