"""Errors of the plan API (build_plan / apply_plan / selectors): project exceptions whose
messages name the argument, layer and field and say what to do.

(``tests/test_quantizer_badinput.py`` covers files and ``quantize_weights`` arguments.)
"""
from __future__ import annotations

import numpy as np
import pytest

import quantizer
from quantizer import Codec, QuantPlan, apply_plan, build_plan
from quantizer.coremltools_quiet import coremltools
from quantizer.errors import InvalidArgumentError, InvalidWeightsError, QuantizerError, UnsupportedModelError
from tests.nn_models import LAYER_MODELS

ct = coremltools()
Model = ct.proto.Model_pb2.Model


def _spec(name: str = "innerProduct") -> Model:
    return LAYER_MODELS[name]()


@pytest.mark.parametrize(
    "args,kw,exc,msg",
    [
        ((12, "linear"), {}, InvalidArgumentError, "nbits must be 16 .* from 1 to 8, got 12"),
        ((0, "linear"), {}, InvalidArgumentError, "nbits must be"),
        ((8, "kmeans++"), {}, InvalidArgumentError, "unknown quantization_mode 'kmeans\\+\\+'.*kmeans_lut"),
        ((1, "linear_symmetric"), {}, InvalidArgumentError, "at least 2 bits"),
        ((4, "custom_lut"), {}, InvalidArgumentError, "needs lut_function"),
        ((4, "linear"), {"selector": object()}, InvalidArgumentError, "do_quantize"),
    ],
)
def test_build_plan_argument_errors(args, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        build_plan(_spec(), *args, **kw)


def test_plan_naming_missing_tensors_lists_them():
    plan = {("innerProduct", "weights"): Codec("linear", 8), ("dense_9", "weights"): Codec("linear", 8),
            ("innerProduct", "gamma"): Codec("linear", 8)}
    with pytest.raises(InvalidArgumentError) as info:
        apply_plan(_spec(), plan)
    text = str(info.value)
    assert "2 tensor(s)" in text and "'dense_9'" in text and "'gamma'" in text and "weight_table" in text


def test_plan_on_a_float_only_parameter_is_refused():
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder([("data", datatypes.Array(3, 2, 2))], [("out", None)])
    b.add_activation("prelu", "PRELU", "data", "out", params=np.array([0.1, 0.2, 0.3], np.float32))
    table = quantizer.weight_table(b.spec)
    field = table.field.iloc[0]
    assert len(build_plan(b.spec, 8)) == 0  # coremltools does not touch it either
    with pytest.raises(InvalidArgumentError, match=f"layer 'prelu' field '{field}' cannot be quantized"):
        apply_plan(b.spec, {("prelu", field): Codec("linear", 8)})


def test_apply_plan_rejects_non_plans():
    with pytest.raises(InvalidArgumentError, match="QuantPlan or a mapping"):
        apply_plan(_spec(), [("innerProduct", "weights")])


def test_nan_weights_via_plan_name_layer_and_field():
    spec = _spec("convolution")
    spec.neuralNetwork.layers[0].convolution.bias.floatValue[3] = float("nan")
    with pytest.raises(InvalidWeightsError, match="layer 'convolution' field 'bias' has 1 NaN"):
        apply_plan(spec, {("convolution", "bias"): Codec("kmeans", 2)})
    # a plan that keeps that tensor works
    apply_plan(spec, {("convolution", "weights"): Codec("kmeans", 2)})


def test_inconsistent_tensor_length_is_reported():
    spec = _spec()
    del spec.neuralNetwork.layers[0].innerProduct.weights.floatValue[-1]
    with pytest.raises(InvalidWeightsError, match="layer 'innerProduct' field 'weights' holds 159 values"):
        quantizer.quantize_weights(spec, 8)


def test_custom_lut_errors_name_the_tensor_in_plans():
    def bad(nbits, w):
        return np.zeros(2**nbits + 1), np.zeros(w.size, int)

    with pytest.raises(InvalidArgumentError, match="layer 'innerProduct' field 'bias'.*exactly 8 entries") as info:
        apply_plan(_spec(), {("innerProduct", "bias"): Codec("custom_lut", 3, bad)})
    assert isinstance(info.value, QuantizerError)


def test_a_failing_selector_is_reported_with_the_layer():
    class Broken:
        def do_quantize(self, layer, weight_param=None):
            if weight_param == "bias":
                raise KeyError("no bias rule")
            return True

    with pytest.raises(InvalidArgumentError, match="Broken.do_quantize failed on layer 'innerProduct'.*weight_param='bias'"):
        build_plan(_spec(), 8, selector=Broken())


def test_duplicate_layer_names_selected_differently_are_refused():
    spec = _spec()
    second = spec.neuralNetwork.layers.add()
    second.CopyFrom(spec.neuralNetwork.layers[0])
    second.input[:] = ["out"]
    second.output[:] = ["out2"]
    second.innerProduct.hasBias = True

    class FirstOnly:
        seen = 0

        def do_quantize(self, layer, weight_param=None):
            FirstOnly.seen += 1
            return FirstOnly.seen == 1 or weight_param is not None

    with pytest.raises(UnsupportedModelError, match="two layers are named 'innerProduct'"):
        build_plan(spec, 8, selector=FirstOnly(), fuse=False)
    # selected alike: one entry serves both
    plan = build_plan(spec, 8, fuse=False)
    assert set(plan) == {("innerProduct", "weights"), ("innerProduct", "bias")}
    out = apply_plan(spec, plan)
    assert all(lay.innerProduct.weights.quantization.numberOfBits == 8 for lay in out.neuralNetwork.layers)


def test_errors_are_project_errors_and_value_errors():
    for call in (lambda: Codec("linear", 99), lambda: QuantPlan({"x": None}), lambda: build_plan(_spec(), 8, "nope")):
        with pytest.raises(QuantizerError):
            call()
        with pytest.raises(ValueError):
            call()
