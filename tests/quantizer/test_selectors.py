"""Selectors: coremltools' meaning (and its own instances) honoured, its mistakes fixed."""
from __future__ import annotations

import contextlib
import io

import pytest

import quantizer
from quantizer import AdvancedQuantizedLayerSelector, MatrixMultiplyLayerSelector, QuantizedLayerSelector, build_plan
from quantizer.coremltools_quiet import coremltools
from quantizer.errors import InvalidArgumentError
from tests.nn_models import LAYER_MODELS

ct = coremltools()
from coremltools.models.neural_network import quantization_utils as ct_qu  # noqa: E402

Model = ct.proto.Model_pb2.Model


def _multi() -> Model:
    """conv (4->8, 3x3: 288 weights), depthwise conv, deconv, innerProduct, batchnorm, embedding."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder
    import numpy as np

    rng = np.random.default_rng(0)
    b = NeuralNetworkBuilder([("data", datatypes.Array(4, 6, 6))], [("out", None)])
    b.add_convolution("conv", 4, 8, 3, 3, 1, 1, "same", 1, rng.standard_normal((3, 3, 4, 8)).astype("f4"),
                      rng.standard_normal(8).astype("f4"), True, input_name="data", output_name="c1")
    b.add_convolution("dw", 1, 8, 3, 3, 1, 1, "same", 8, rng.standard_normal((3, 3, 1, 8)).astype("f4"),
                      rng.standard_normal(8).astype("f4"), True, input_name="c1", output_name="c2")
    b.add_convolution("deconv", 8, 8, 2, 2, 1, 1, "valid", 4, rng.standard_normal((2, 2, 8, 2)).astype("f4"),
                      None, False, is_deconv=True, output_shape=(7, 7), input_name="c2", output_name="c3")
    b.add_batchnorm("bn", 8, *(rng.uniform(0.5, 1.5, 8).astype("f4") for _ in range(4)), input_name="c3", output_name="c4")
    b.add_flatten("flat", 0, "c4", "f")
    b.add_inner_product("fc", rng.standard_normal((5, 392)).astype("f4"), rng.standard_normal(5).astype("f4"),
                        392, 5, True, input_name="f", output_name="out")
    return b.spec


def _layers(plan) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for layer, field in plan:
        out.setdefault(layer, set()).add(field)
    return out


def test_default_selector_takes_every_weight():
    plan = build_plan(_multi(), 8, fuse=False)
    assert _layers(plan) == {
        "conv": {"weights", "bias"}, "dw": {"weights", "bias"}, "deconv": {"weights"},
        "bn": {"gamma", "beta", "mean", "variance"}, "fc": {"weights", "bias"},
    }
    assert QuantizedLayerSelector().do_quantize(_multi().neuralNetwork.layers[0])


def test_advanced_selector_thresholds_skip_types_and_bias():
    sel = AdvancedQuantizedLayerSelector(skip_layer_types=["batchnorm", "bias"], minimum_conv_kernel_channels=4,
                                         minimum_conv_weight_count=200)
    assert _layers(build_plan(_multi(), 8, selector=sel, fuse=False)) == {
        "conv": {"weights"},  # 288 weights, 4 kernel channels: kept; its bias skipped ("bias")
        "fc": {"weights"},
    }  # dw: 1 kernel channel; deconv: 8*2*2*2=64 real weights < 200
    sel = AdvancedQuantizedLayerSelector(skip_layer_types=["depthwiseConv"], minimum_conv_kernel_channels=1,
                                         minimum_conv_weight_count=0)
    assert set(_layers(build_plan(_multi(), 8, selector=sel, fuse=False))) == {"conv", "deconv", "bn", "fc"}


def test_advanced_selector_counts_real_deconvolution_weights():
    deconv = _multi().neuralNetwork.layers[2]  # Cin 8, Cout 8, groups 4, 2x2: 8 * 2 * 2 * 2 = 64 weights
    assert AdvancedQuantizedLayerSelector(minimum_conv_kernel_channels=1, minimum_conv_weight_count=64).do_quantize(deconv)
    assert not AdvancedQuantizedLayerSelector(minimum_conv_kernel_channels=1, minimum_conv_weight_count=65).do_quantize(deconv)
    # coremltools multiplies by Cout instead of Cout/groups and keeps it at 256
    ct_sel = ct_qu.AdvancedQuantizedLayerSelector(minimum_conv_kernel_channels=1, minimum_conv_weight_count=65)
    assert ct_sel.do_quantize(deconv)


def test_advanced_selector_does_not_treat_every_layer_as_innerproduct():
    lstm = LAYER_MODELS["uniDirectionalLSTM"]().neuralNetwork.layers[0]
    bn = _multi().neuralNetwork.layers[3]
    ours = AdvancedQuantizedLayerSelector()
    assert ours.do_quantize(lstm, weight_param="weightParams.inputGateWeightMatrix")
    assert ours.do_quantize(bn, weight_param="gamma")
    ct_sel = ct_qu.AdvancedQuantizedLayerSelector()
    with pytest.raises(ValueError, match="Unrecognized quantization weight field"):
        ct_sel.do_quantize(bn, weight_param="gamma")


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.AdvancedQuantizedLayerSelector(skip_layer_types=["batchnorm", "bias", "depthwiseConv"],
                                                   minimum_conv_kernel_channels=4, minimum_conv_weight_count=100),
        lambda m: m.AdvancedQuantizedLayerSelector(skip_layer_types=["innerProduct"], minimum_conv_kernel_channels=1,
                                                   minimum_conv_weight_count=1),
        lambda m: m.QuantizedLayerSelector(),
    ],
)
def test_selectors_give_coremltools_bytes_and_coremltools_instances_work(make):
    spec = LAYER_MODELS["convolution"]()  # conv(4->8) 288 weights + bias
    spec2 = LAYER_MODELS["innerProduct"]()
    for model in (spec, spec2):
        with contextlib.redirect_stdout(io.StringIO()):
            theirs = ct_qu.quantize_weights(ct.models.MLModel(model), 8, "linear", selector=make(ct_qu)).get_spec()
        ours = quantizer.quantize_weights(model, 8, "linear", selector=make(quantizer))
        ours_with_ct_selector = quantizer.quantize_weights(model, 8, "linear", selector=make(ct_qu))
        assert ours.SerializeToString() == theirs.SerializeToString()
        assert ours_with_ct_selector.SerializeToString() == theirs.SerializeToString()


def test_seed_style_custom_selector_subclass():
    class MyLayerSelector(QuantizedLayerSelector):
        def do_quantize(self, layer, **kwargs):
            ret = super().do_quantize(layer)
            return ret and layer.name != "fc"

    plan = build_plan(_multi(), 8, selector=MyLayerSelector(), fuse=False)
    assert "fc" not in _layers(plan) and "conv" in _layers(plan)


def test_matrix_multiply_selector():
    spec = _multi()
    assert _layers(build_plan(spec, 8, selector=MatrixMultiplyLayerSelector(), fuse=False)) == {"fc": {"weights", "bias"}}
    assert len(build_plan(spec, 8, selector=MatrixMultiplyLayerSelector(minimum_weight_count=2000), fuse=False)) == 0
    assert len(build_plan(spec, 8, selector=MatrixMultiplyLayerSelector(maximum_output_channels=4), fuse=False)) == 0
    named = MatrixMultiplyLayerSelector(include_layers_with_names=["fc"])
    assert named.include_layers_with_names == ["fc"]
    assert "fc" in _layers(build_plan(spec, 8, selector=named, fuse=False))
    assert len(build_plan(spec, 8, selector=MatrixMultiplyLayerSelector(include_layers_with_names=["other"]), fuse=False)) == 0
    # coremltools never stores the names it is given
    with pytest.raises(AttributeError):
        ct_qu.MatrixMultiplyLayerSelector(include_layers_with_names=["fc"])
    # loop bodies are searched
    loop = LAYER_MODELS["loop"]()
    assert len(build_plan(loop, 8, selector=MatrixMultiplyLayerSelector(), fuse=False)) > 0


def test_rejected_loop_skips_its_body():
    class NoLoops(QuantizedLayerSelector):
        def do_quantize(self, layer, weight_param=None, **kw):
            return layer.WhichOneof("layer") != "loop" and super().do_quantize(layer)

    loop = LAYER_MODELS["loop"]()
    assert len(build_plan(loop, 8, fuse=False)) > 0
    assert len(build_plan(loop, 8, selector=NoLoops(), fuse=False)) == 0


@pytest.mark.parametrize(
    "make,msg",
    [
        (lambda: AdvancedQuantizedLayerSelector(skip_layer_types=["conv"]), "not quantizable layer types"),
        (lambda: AdvancedQuantizedLayerSelector(minimum_conv_weight_count=-1), "non-negative integer"),
        (lambda: MatrixMultiplyLayerSelector(include_layers_with_names="fc"), "list/tuple"),
        (lambda: MatrixMultiplyLayerSelector(minimum_weight_count=1.5), "non-negative integer"),
    ],
)
def test_selector_arguments_are_validated(make, msg):
    with pytest.raises(InvalidArgumentError, match=msg):
        make()
    with pytest.raises(ValueError):  # still a ValueError, as coremltools raises
        make()
