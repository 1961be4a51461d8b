"""Bad input to ``quantizer.load`` / ``quantizer.quantize_weights``: clear project exceptions.

Each case checks the exception type (a :class:`quantizer.QuantizerError`
subclass, never a bare protobuf/numpy error) and that the message names what is
wrong (the file, the argument, the layer and field) and what to do. Also:
degenerate tensors (constant, all zero, fewer values than 2**nbits) quantize
without NaN.
"""
from __future__ import annotations

import numpy as np
import pytest

import quantizer
from quantizer import InvalidArgumentError, InvalidWeightsError, ModelLoadError, QuantizerError, UnsupportedModelError
from quantizer.coremltools_quiet import coremltools
from quantizer.tensors import get_weight_params, layer_weights
from quantizer.weightparams import write_float32
from tests.nn_models import LAYER_MODELS

ct = coremltools()
Model = ct.proto.Model_pb2.Model


def _spec(name="innerProduct"):
    return LAYER_MODELS[name]()


def _q(model, nbits, mode="linear", **kw):
    out = quantizer.quantize_weights(model, nbits, mode, **kw)
    return out.get_spec() if hasattr(out, "get_spec") else out


# ----------------------------------------------------------------------------- files


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mlmodel"
    for call in (lambda: quantizer.load(str(path)), lambda: quantizer.quantize_weights(str(path), 8)):
        with pytest.raises(ModelLoadError, match="nope.mlmodel") as info:
            call()
        assert "does not exist" in str(info.value)


@pytest.mark.parametrize("content,why", [
    (b"", "empty"),
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not a Core ML model"),
    (b"PK\x03\x04 this is a zip, not a model", "not a Core ML model"),
    (b"\x08\x04", "not a Core ML model"),  # parses as protobuf (specificationVersion=4) but no model type
])
def test_file_that_is_not_a_core_ml_model(tmp_path, content, why):
    path = tmp_path / "bad.mlmodel"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="bad.mlmodel") as info:
        quantizer.quantize_weights(str(path), 8)
    assert why in str(info.value)


def test_directory_is_not_a_model_file(tmp_path):
    with pytest.raises(ModelLoadError, match="directory"):
        quantizer.load(str(tmp_path))


def test_model_file_bytes_load_like_the_file(tmp_path):
    spec = _spec()
    data = quantizer.io.serialize(spec)
    loaded, kept = quantizer.io.load_with_bytes(data)
    assert loaded == spec and kept == data
    assert quantizer.io.load_with_bytes(spec)[1] == data  # a spec's copy is parsed from its file bytes
    path = quantizer.save(spec, tmp_path / "m.mlmodel")
    assert quantizer.io.load_with_bytes(str(path))[1] == data
    with pytest.raises(ModelLoadError, match="the given model bytes is not a Core ML model"):
        quantizer.load(b"not a model")
    with pytest.raises(UnsupportedModelError, match="the given model bytes is an ML Program"):
        quantizer.load(quantizer.io.serialize(_ml_program()))  # parses, but no neural network


def test_wrong_python_object():
    with pytest.raises(ModelLoadError, match="dict"):
        quantizer.quantize_weights({"layers": []}, 8)


def _ml_program() -> Model:
    spec = Model()
    spec.specificationVersion = 7
    spec.mlProgram.version = 1
    spec.description.input.add().name = "x"
    return spec


def test_ml_program_spec_says_use_coremltools_optimize():
    for call in (lambda: quantizer.load(_ml_program()), lambda: quantizer.quantize_weights(_ml_program(), 8)):
        with pytest.raises(UnsupportedModelError) as info:
            call()
        msg = str(info.value)
        assert "mlProgram" in msg or "ML Program" in msg
        assert "coremltools.optimize.coreml" in msg


def test_ml_program_file_and_mlpackage(tmp_path):
    path = tmp_path / "prog.mlmodel"
    path.write_bytes(_ml_program().SerializeToString())
    with pytest.raises(UnsupportedModelError, match="coremltools.optimize.coreml"):
        quantizer.quantize_weights(str(path), 4)
    package = tmp_path / "model.mlpackage"
    package.mkdir()
    (package / "Manifest.json").write_text("{}")
    with pytest.raises(UnsupportedModelError, match="coremltools.optimize.coreml"):
        quantizer.load(str(package))


def test_non_neural_network_model():
    spec = Model()
    spec.specificationVersion = 1
    spec.glmRegressor.offset.append(0.5)
    with pytest.raises(UnsupportedModelError) as info:
        quantizer.quantize_weights(spec, 8)
    assert "glmRegressor" in str(info.value) and "neural" in str(info.value)


def test_pipeline_without_neural_network():
    spec = Model()
    spec.specificationVersion = 4
    sub = spec.pipeline.models.add()
    sub.specificationVersion = 1
    sub.glmRegressor.offset.append(0.5)
    with pytest.raises(UnsupportedModelError, match="pipeline"):
        quantizer.quantize_weights(spec, 8)


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("nbits", [0, 9, 12, 15, 17, 32, -1, 2.5, "8", None, True])
def test_nbits_out_of_range(nbits):
    with pytest.raises(InvalidArgumentError) as info:
        quantizer.quantize_weights(_spec(), nbits)
    assert "nbits" in str(info.value) and "16" in str(info.value) and "1 to 8" in str(info.value)


@pytest.mark.parametrize("mode", ["kmeans++", "LINEAR", "lut", "", None, 8])
def test_unknown_mode(mode):
    with pytest.raises(InvalidArgumentError) as info:
        quantizer.quantize_weights(_spec(), 8, mode)
    msg = str(info.value)
    assert repr(mode) in msg and "linear_symmetric" in msg and "kmeans_lut" in msg


def test_linear_symmetric_one_bit():
    with pytest.raises(InvalidArgumentError, match="linear_symmetric") as info:
        quantizer.quantize_weights(_spec(), 1, "linear_symmetric")
    assert "2" in str(info.value)


def test_custom_lut_without_function():
    with pytest.raises(InvalidArgumentError, match="lut_function"):
        quantizer.quantize_weights(_spec(), 4, "custom_lut")
    with pytest.raises(InvalidArgumentError, match="callable"):
        quantizer.quantize_weights(_spec(), 4, "custom_lut", lut_function=[0.0] * 16)


def test_lut_function_with_another_mode_is_refused():
    with pytest.raises(InvalidArgumentError, match="custom_lut"):
        quantizer.quantize_weights(_spec(), 4, "linear", lut_function=lambda n, w: None)


def _good_lut(nbits, w):
    lut = np.linspace(w.min(), w.max(), 2 ** nbits)
    return lut, np.abs(w.reshape(-1, 1) - lut).argmin(axis=1)


@pytest.mark.parametrize("bad,words", [
    (lambda n, w: (np.zeros(2 ** n + 1), _good_lut(n, w)[1]), ["LUT", "entries"]),
    (lambda n, w: (np.zeros((2 ** n, 2)), _good_lut(n, w)[1]), ["LUT", "shape"]),
    (lambda n, w: (_good_lut(n, w)[0], _good_lut(n, w)[1][:-1]), ["indices"]),
    (lambda n, w: (_good_lut(n, w)[0], _good_lut(n, w)[1] + 2 ** n), ["indices"]),
    (lambda n, w: (_good_lut(n, w)[0], _good_lut(n, w)[1] - 1), ["indices"]),
    (lambda n, w: (_good_lut(n, w)[0], _good_lut(n, w)[1] + 0.5), ["non-integer"]),
    (lambda n, w: (np.full(2 ** n, np.nan), _good_lut(n, w)[1]), ["NaN"]),
    (lambda n, w: _good_lut(n, w)[0], ["(lut, indices)"]),
    (lambda n, w: 1 / 0, ["ZeroDivisionError"]),
])
def test_custom_lut_with_wrong_output_names_the_tensor(bad, words):
    with pytest.raises(InvalidArgumentError) as info:
        quantizer.quantize_weights(_spec(), 3, "custom_lut", lut_function=bad)
    msg = str(info.value)
    assert "innerProduct" in msg and "weights" in msg, msg
    for word in words:
        assert word in msg, msg


def test_custom_lut_good_function_works():
    out = _q(_spec(), 3, "custom_lut", lut_function=_good_lut)
    wp = out.neuralNetwork.layers[0].innerProduct.weights
    assert len(wp.quantization.lookupTableQuantization.floatValue) == 8


# ----------------------------------------------------------------------------- weights


def _with_value(name, field, index, value):
    spec = _spec(name)
    layer = spec.neuralNetwork.layers[0]
    wp = get_weight_params(layer, field)
    values = np.array(wp.floatValue, np.float32)
    values[index] = value
    write_float32(wp, values)
    return spec, layer.name


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mode,nbits", [("linear", 8), ("linear", 3), ("linear_symmetric", 8), ("linear_lut", 4),
                                        ("kmeans_lut", 4), ("linear", 16)])
@pytest.mark.parametrize("name,field", [("innerProduct", "weights"), ("convolution", "bias"),
                                        ("gru", "resetGateRecursionMatrix"),
                                        ("biDirectionalLSTM", "weightParams.1.forgetGateBiasVector")])
def test_nan_or_inf_weights_name_layer_and_field(name, field, mode, nbits, value):
    spec, layer = _with_value(name, field, 1, value)
    with pytest.raises(InvalidWeightsError) as info:
        quantizer.quantize_weights(spec, nbits, mode)
    msg = str(info.value)
    assert layer in msg and field in msg, msg
    assert ("NaN" in msg) or ("Inf" in msg) or ("inf" in msg), msg


def test_nan_in_a_layer_the_selector_skips_is_left_alone():
    spec, layer = _with_value("convolution", "bias", 0, np.nan)

    class SkipBias(quantizer.QuantizedLayerSelector):
        def do_quantize(self, layer, weight_param=None):
            return super().do_quantize(layer) and weight_param != "bias"

    out = _q(spec, 8, selector=SkipBias())
    assert np.isnan(out.neuralNetwork.layers[0].convolution.bias.floatValue[0])


def test_fp16_overflow_names_layer_and_field():
    spec, layer = _with_value("innerProduct", "weights", 3, 1e6)
    with pytest.raises(InvalidWeightsError) as info:
        quantizer.quantize_weights(spec, 16)
    assert layer in str(info.value) and "weights" in str(info.value)


_DEGENERATE_MODES = [("linear", n) for n in (1, 2, 8)] + [("linear_symmetric", n) for n in (2, 8)] + [
    ("linear_lut", n) for n in (1, 4, 8)] + [("kmeans_lut", n) for n in (1, 4, 8)] + [("linear", 16)]


@pytest.mark.parametrize("mode,nbits", _DEGENERATE_MODES)
@pytest.mark.parametrize("fill", [0.0, 0.37, -2.5, 1e-30])
def test_constant_tensor_has_no_nan(mode, nbits, fill):
    spec = _spec("innerProduct")
    ip = spec.neuralNetwork.layers[0].innerProduct
    write_float32(ip.weights, np.full(160, fill, np.float32))
    out = _q(spec, nbits, mode)
    for field, (wp, shape, axis) in layer_weights(out.neuralNetwork.layers[0]).items():
        q = wp.quantization
        stored = list(q.linearQuantization.scale) + list(q.linearQuantization.bias) + list(
            q.lookupTableQuantization.floatValue)
        assert np.isfinite(stored).all(), f"{field}: NaN/Inf in quantization parameters {stored}"
        decoded = quantizer.decode_weights(wp, shape, axis)
        assert np.isfinite(decoded).all()
        if field == "weights":
            tol = 0 if mode != "linear_symmetric" else abs(fill) / (2 ** (nbits - 1) - 1) / 2 * 1.0001
            if nbits == 16:  # float16 rounding (1e-30 underflows to 0)
                tol = abs(float(np.float16(fill)) - fill)
            assert np.abs(decoded - fill).max() <= tol, (field, decoded.ravel()[:4], fill)


@pytest.mark.parametrize("mode,nbits", _DEGENERATE_MODES)
def test_tensor_smaller_than_lut_has_no_nan(mode, nbits):
    """A 3-value bias and a 6-value batchnorm vector at up to 8 bits (256 levels)."""
    for name in ("convolution_depthwise", "batchnorm"):
        spec = _spec(name)
        out = _q(spec, nbits, mode)
        src = {f: t for f, t in layer_weights(spec.neuralNetwork.layers[0]).items()}
        for field, (wp, shape, axis) in layer_weights(out.neuralNetwork.layers[0]).items():
            decoded = quantizer.decode_weights(wp, shape, axis)
            assert np.isfinite(decoded).all(), (name, field)
            orig = np.array(src[field][0].floatValue, np.float32).reshape(shape)
            if mode == "kmeans_lut" and orig.size <= 2 ** nbits:
                np.testing.assert_array_equal(decoded, orig, err_msg=f"{name}.{field}")


def test_every_error_is_a_quantizer_error():
    """The exception classes users catch: all derive from QuantizerError (and ValueError
    for argument/weight problems, as a numpy user would expect)."""
    for exc in (ModelLoadError, UnsupportedModelError, InvalidArgumentError, InvalidWeightsError):
        assert issubclass(exc, QuantizerError)
    assert issubclass(InvalidArgumentError, ValueError) and issubclass(InvalidWeightsError, ValueError)
