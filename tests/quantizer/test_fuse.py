"""quantizer.fuse: batchnorm/scale/bias folding, checked against coremltools and numerically.

* the fused float model computes the same outputs as the unfused one (float64
  numpy reference in ``tests/nn_models.py`` and the numpy executor);
* where coremltools 9.0's ``_optimize_nn`` is right, our fused floats are
  byte-identical to its output; where it crashes or is wrong, this file shows
  that it is (so the exclusions in the conformance suite stay honest);
* folds that would change the network are not made (model outputs, blobs read
  elsewhere, nested bodies, stale reads, non-float32 weights, updatable
  layers, run-time statistics, exact-shape innerProducts);
* the input is never modified.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

import quantizer
from quantizer.coremltools_quiet import coremltools
from quantizer.fusion import Fusion, fuse_in_place
from quantizer.weightparams import write_float16, write_float32
from tests.nn_models import FUSION_MODELS, LAYER_MODELS, _chain, reference_predict, rng_for, spec_diff

ct = coremltools()
Model = ct.proto.Model_pb2.Model


def _copy(spec):
    out = Model()
    out.CopyFrom(spec)
    return out


def _ct_optimize(spec):
    """coremltools' fusion pass on a copy (its prints silenced)."""
    from coremltools.models.neural_network.optimization_utils import _optimize_nn

    theirs = _copy(spec)
    with contextlib.redirect_stdout(io.StringIO()):
        _optimize_nn(theirs.neuralNetwork.layers)
    return theirs


def _feeds(case, n=3):
    x = rng_for("feeds").standard_normal((n,) + case.input_shape)
    return {"data": x}


def _max_rel(a: dict, b: dict) -> float:
    worst = 0.0
    for k in a:
        x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64).reshape(np.shape(a[k]))
        worst = max(worst, float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12)))
    return worst


@pytest.mark.parametrize("name", sorted(FUSION_MODELS))
def test_fused_model_computes_the_same_outputs(name):
    case = FUSION_MODELS[name]
    spec = case.build()
    fused = quantizer.fuse(spec)
    removed = len(spec.neuralNetwork.layers) - len(fused.neuralNetwork.layers)
    assert removed == case.folds, f"{name}: expected {case.folds} folds, made {removed}"
    feeds = _feeds(case)
    # float64 reference: the only differences are float32 rounding of folded weights
    assert _max_rel(reference_predict(spec, feeds), reference_predict(fused, feeds)) < 1e-6
    # the same through the project's numpy executor (float32 arithmetic)
    from harness.executors import NumpyExecutor

    x32 = {k: v.astype(np.float32) for k, v in feeds.items()}
    assert _max_rel(NumpyExecutor(spec).predict(x32), NumpyExecutor(fused).predict(x32)) < 1e-5


@pytest.mark.parametrize("name", sorted(n for n, c in FUSION_MODELS.items() if c.coremltools == "ok"))
def test_fused_floats_are_byte_identical_to_coremltools(name):
    spec = FUSION_MODELS[name].build()
    ours = quantizer.fuse(spec)
    theirs = _ct_optimize(spec)
    assert spec_diff(ours, theirs) == []
    assert ours.SerializeToString() == theirs.SerializeToString()


@pytest.mark.parametrize("name", sorted(n for n, c in FUSION_MODELS.items() if c.coremltools == "crash"))
def test_coremltools_fusion_crashes_where_we_say(name):
    """If this fails, coremltools was fixed: move the case to "ok" (byte conformance)."""
    from coremltools.models.neural_network import quantization_utils

    model = ct.models.MLModel(FUSION_MODELS[name].build())
    with pytest.raises(Exception), contextlib.redirect_stdout(io.StringIO()):
        quantization_utils.quantize_weights(model, 8)


@pytest.mark.parametrize("name", sorted(n for n, c in FUSION_MODELS.items() if c.coremltools == "wrong"))
def test_coremltools_fusion_is_wrong_where_we_say(name):
    """coremltools' fused float model computes something else (or loses an output); ours does not."""
    case = FUSION_MODELS[name]
    spec = case.build()
    theirs = _ct_optimize(spec)
    feeds = _feeds(case)
    want = reference_predict(spec, feeds)
    try:
        got = reference_predict(theirs, feeds)
    except KeyError:  # a model output blob no longer exists
        got = None
    assert got is None or _max_rel(want, got) > 1e-3
    assert _max_rel(want, reference_predict(quantizer.fuse(spec), feeds)) < 1e-6


def test_fuse_does_not_mutate_its_input_and_accepts_paths_and_mlmodels(tmp_path):
    spec = FUSION_MODELS["conv+bn+scale"].build()
    before = spec.SerializeToString()
    fused = quantizer.fuse(spec)
    assert spec.SerializeToString() == before
    assert len(fused.neuralNetwork.layers) == 1
    path = tmp_path / "m.mlmodel"
    path.write_bytes(before)
    assert quantizer.fuse(str(path)).SerializeToString() == fused.SerializeToString()
    mlmodel = ct.models.MLModel(spec)
    assert quantizer.fuse(mlmodel).SerializeToString() == fused.SerializeToString()
    assert mlmodel.get_spec().SerializeToString() == before


def test_fuse_in_place_reports_each_fold_in_order():
    spec = FUSION_MODELS["conv+bn+scale"].build()
    done = fuse_in_place(spec)
    assert done == [
        Fusion("first", "convolution", "bn0", "batchnorm"),
        Fusion("first", "convolution", "scale1", "scale"),
    ]
    layer = spec.neuralNetwork.layers[0]
    assert list(layer.output) == ["out"] and layer.convolution.hasBias
    deconv = FUSION_MODELS["deconv_grouped+scale"].build()
    assert fuse_in_place(deconv) == [Fusion("first", "deconvolution", "scale0", "scale")]


@pytest.mark.parametrize("name", sorted(LAYER_MODELS))
def test_models_without_fusable_pairs_are_unchanged(name):
    spec = LAYER_MODELS[name]()
    assert quantizer.fuse(spec).SerializeToString() == spec.SerializeToString()


def test_deconvolution_scale_multiplies_output_channels():
    """Deconvolution weights [Cin, Cout/g, kH, kW]: a scale on output channel o
    = g*(Cout/g)+j multiplies slice [g*Cin/g:(g+1)*Cin/g, j]."""
    spec = FUSION_MODELS["deconv_grouped+scale"].build()
    conv, scale = spec.neuralNetwork.layers[0], spec.neuralNetwork.layers[1]
    w = np.array(conv.convolution.weights.floatValue, np.float32).reshape(4, 3, 3, 3)
    s = np.array(scale.scale.scale.floatValue, np.float32)
    fused = quantizer.fuse(spec).neuralNetwork.layers[0]
    got = np.array(fused.convolution.weights.floatValue, np.float32).reshape(4, 3, 3, 3)
    for cin in range(4):
        g = cin // 2
        for j in range(3):
            np.testing.assert_array_equal(got[cin, j], w[cin, j] * s[g * 3 + j])


# ----------------------------------------------------------------------------- folds that must not happen


def _layer(spec, name):
    return next(layer for layer in spec.neuralNetwork.layers if layer.name == name)


def test_no_fold_when_a_layer_between_reads_the_folded_output():
    """data -> conv -> c; add(y, data) -> z; scale(c) -> y  (y is also an input):
    moving the write of y before the add would change z."""
    spec = _chain("stale", "conv", "scale", outputs=(("out", None), ("z", None)))
    nn = spec.neuralNetwork
    scale = nn.layers[1]
    mid = nn.layers.add()
    mid.CopyFrom(scale)
    mid.name = "reader"
    mid.ClearField("input")
    mid.ClearField("output")
    mid.input.append("out")  # reads the scale's output name before the scale writes it
    mid.output.append("z")
    # order: conv, reader, scale
    nn.layers[1].CopyFrom(mid)
    nn.layers[2].CopyFrom(scale)
    inp = spec.description.input.add()
    inp.CopyFrom(spec.description.input[0])
    inp.name = "out_seed"
    assert fuse_in_place(_copy(spec)) == []


def test_no_fold_of_weights_that_are_not_float32():
    spec = FUSION_MODELS["conv+scale"].build()
    conv = spec.neuralNetwork.layers[0].convolution
    write_float16(conv.weights, np.array(conv.weights.floatValue, np.float32))
    assert fuse_in_place(_copy(spec)) == []
    spec2 = FUSION_MODELS["conv+bias"].build()
    b = spec2.neuralNetwork.layers[1].bias
    write_float16(b.bias, np.array(b.bias.floatValue, np.float32))
    assert fuse_in_place(spec2) == []


def test_no_fold_into_updatable_layers():
    spec = FUSION_MODELS["ip+scale"].build()
    spec.neuralNetwork.layers[0].isUpdatable = True
    assert fuse_in_place(spec) == []


def test_no_fold_of_a_second_weight_input():
    spec = FUSION_MODELS["conv+bias"].build()
    conv = spec.neuralNetwork.layers[0]
    conv.input.append("w_blob")
    conv.convolution.ClearField("weights")
    assert fuse_in_place(spec) == []


def test_no_fold_of_spatial_scale_or_bias():
    spec = FUSION_MODELS["conv+bias"].build()
    bias = spec.neuralNetwork.layers[1].bias
    del bias.shape[:]
    bias.shape.extend([6, 3, 3])
    write_float32(bias.bias, np.ones(54, np.float32))
    assert fuse_in_place(spec) == []


def test_no_fold_when_the_blob_is_the_classifier_probability_blob():
    spec = FUSION_MODELS["ip+bias"].build()
    layers = list(_copy(spec).neuralNetwork.layers)
    spec.neuralNetworkClassifier.layers.extend(layers)  # switches the model type (oneof)
    spec.neuralNetworkClassifier.labelProbabilityLayerName = "b0"
    assert spec.WhichOneof("Type") == "neuralNetworkClassifier"
    assert fuse_in_place(_copy(spec)) == []
    spec.neuralNetworkClassifier.labelProbabilityLayerName = "out"
    assert [f.removed for f in fuse_in_place(spec)] == ["bias0"]


def test_innerproduct_per_channel_folds_only_with_rank5_mapping():
    """With exact ND shapes an innerProduct on [x1, x2, Cin] puts channels last while
    scale/bias act on axis -3: only a single-value scale/bias may be folded."""
    spec = FUSION_MODELS["ip+scale"].build()
    spec.neuralNetwork.arrayInputShapeMapping = 1  # EXACT_ARRAY_MAPPING
    assert fuse_in_place(_copy(spec)) == []
    scalar = _chain("ip+scalar", "ip", "scale", scalar=True)
    scalar.neuralNetwork.arrayInputShapeMapping = 1
    assert [f.removed for f in fuse_in_place(scalar)] == ["scale0"]


def _loop_with_body(outer_reads_mid: bool):
    spec = LAYER_MODELS["loop"]()
    body = spec.neuralNetwork.layers[1].loop.bodyNetwork
    # body: ip1(x)->ip1_out, relu, ip2, copy ; insert a bias layer after ip1
    relu = body.layers[1]
    rng = rng_for("loop_bias")
    new = ct.proto.NeuralNetwork_pb2.NeuralNetworkLayer()
    new.name = "body_bias"
    new.input.append("ip1_out")
    new.output.append("biased")
    new.bias.shape.append(8)
    write_float32(new.bias.bias, rng.standard_normal(8).astype(np.float32))
    relu.input[0] = "biased"
    layers = list(body.layers)
    del body.layers[:]
    body.layers.extend([layers[0], new] + layers[1:])
    if outer_reads_mid:
        spec.neuralNetwork.layers[2].input[0] = "ip1_out"  # copy_out reads the body blob
    return spec


def test_folds_inside_loop_bodies():
    spec = _loop_with_body(outer_reads_mid=False)
    done = fuse_in_place(_copy(spec))
    assert done == [Fusion("body_ip1", "innerProduct", "body_bias", "bias")]
    x = rng_for("loopx").standard_normal((2, 8))
    fused = quantizer.fuse(spec)
    assert _max_rel(reference_predict(spec, {"data": x}), reference_predict(fused, {"data": x})) < 1e-6
    from harness.executors import NumpyExecutor  # runs loop layers

    x32 = {"data": x.astype(np.float32)}
    float_out, fused_out = NumpyExecutor(spec).predict(x32), NumpyExecutor(fused).predict(x32)
    assert set(float_out) == set(fused_out) == {o.name for o in spec.description.output}
    assert _max_rel(float_out, fused_out) < 1e-5


def test_no_fold_of_a_body_blob_read_by_the_outer_network():
    assert fuse_in_place(_loop_with_body(outer_reads_mid=True)) == []


def test_folds_inside_a_pipeline():
    inner = FUSION_MODELS["conv+scale"].build()
    spec = Model()
    spec.specificationVersion = inner.specificationVersion
    spec.description.CopyFrom(inner.description)
    spec.pipeline.models.add().CopyFrom(inner)
    fused = quantizer.fuse(spec)
    assert len(fused.pipeline.models[0].neuralNetwork.layers) == 1
    assert spec_diff(fused.pipeline.models[0], _ct_optimize(inner)) == []


def test_batchnorm_with_zero_variance_and_zero_epsilon_is_not_folded():
    spec = FUSION_MODELS["conv+bn"].build()
    bn = spec.neuralNetwork.layers[1].batchnorm
    write_float32(bn.variance, np.zeros(6, np.float32))
    bn.epsilon = 0.0
    assert fuse_in_place(spec) == []


def test_no_fold_of_a_blob_read_inside_a_later_loop_body():
    """conv -> scale at top level, and a loop body after them also reads the conv output:
    coremltools' per-list analysis would fold it away; we count reads at every depth."""
    spec = FUSION_MODELS["ip+scale"].build()
    loop = spec.neuralNetwork.layers.add()
    loop.name = "loop"
    loop.loop.maxLoopIterations = 1
    reader = loop.loop.bodyNetwork.layers.add()
    reader.name = "body_reader"
    reader.input.append("b0")
    reader.output.append("side")
    reader.activation.ReLU.SetInParent()
    assert fuse_in_place(spec) == []


def test_no_fold_of_a_width_shaped_scale():
    """A [1, 1, W] scale (the converter's layer-norm form) varies along width, not channels."""
    spec = FUSION_MODELS["conv+scale"].build()
    s = spec.neuralNetwork.layers[1].scale
    for field in ("shapeScale", "shapeBias"):
        del getattr(s, field)[:]
        getattr(s, field).extend([1, 1, 3])
    write_float32(s.scale, np.array([1.0, 2.0, 3.0], np.float32))
    write_float32(s.bias, np.array([0.5, 0.0, -0.5], np.float32))
    assert fuse_in_place(_copy(spec)) == []
    feeds = _feeds(FUSION_MODELS["conv+scale"])
    assert _max_rel(reference_predict(spec, feeds), reference_predict(quantizer.fuse(spec), feeds)) == 0
