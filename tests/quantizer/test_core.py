"""Core of the quantizer: model I/O, bit packing, tensor enumeration, decoding."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

import quantizer
from quantizer.coremltools_quiet import coremltools
from quantizer.errors import ModelLoadError, UnsupportedModelError
from quantizer.packing import pack_bits, unpack_bits
from quantizer.tensors import layer_weights
from quantizer.walk import iter_layers
from quantizer.weightparams import write_float32, write_quantized

ct = coremltools()
from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402
from coremltools.models.neural_network import quantization_utils as qu  # noqa: E402


def _conv_deconv_ip_model():
    rng = np.random.default_rng(0)
    b = NeuralNetworkBuilder([("x", datatypes.Array(3, 8, 8))], [("y", None)])
    W = rng.standard_normal((3, 3, 3, 6)).astype(np.float32)  # builder layout (kh, kw, Cin, Cout)
    b.add_convolution("c1", 3, 6, 3, 3, 1, 1, "valid", 1, W, rng.standard_normal(6), True, input_name="x", output_name="c")
    Wd = rng.standard_normal((2, 2, 2, 6)).astype(np.float32)  # (kh, kw, Cout/g, Cin)
    b.add_convolution("d1", 6, 4, 2, 2, 2, 2, "valid", 2, Wd, None, False, is_deconv=True, input_name="c", output_name="d")
    b.add_activation("a", "RELU", "d", "a")
    b.add_flatten("f", 0, "a", "fl")
    b.add_inner_product("ip", rng.standard_normal((5, 576)).astype(np.float32), rng.standard_normal(5), 576, 5, True, "fl", "y")
    return b.spec


def _ct_quantize(spec, nbits, mode):
    s = copy.deepcopy(spec)
    with contextlib.redirect_stdout(io.StringIO()):
        return qu._quantize_spec_weights(s, nbits, mode)


def _layer(spec, name):
    return next(l for l in iter_layers(spec) if l.name == name)


@pytest.mark.parametrize(
    "values,nbits,hexstr",
    [([1, 2, 3], 2, "6c"), ([5, 1, 7], 3, "a780"), ([1], 1, "80"), ([255, 0], 8, "ff00"), ([], 4, "00")],
)
def test_pack_bits_examples(values, nbits, hexstr):
    assert pack_bits(np.array(values, np.uint8), nbits).hex() == hexstr


@pytest.mark.parametrize("nbits", range(1, 9))
def test_pack_bits_matches_coremltools_and_round_trips(nbits):
    rng = np.random.default_rng(nbits)
    for n in (1, 7, 8, 9, 33, 1000):
        q = rng.integers(0, 1 << nbits, n).astype(np.uint8)
        packed = pack_bits(q, nbits)
        assert len(packed) == max(1, -(-n * nbits // 8))
        if nbits < 8:
            assert packed == qu._convert_array_to_nbit_quantized_bytes(q, nbits).tobytes()
        np.testing.assert_array_equal(unpack_bits(packed, nbits, n), q)


def test_pack_bits_rejects_values_too_large():
    with pytest.raises(quantizer.InvalidArgumentError, match="below 2\\*\\*3"):
        pack_bits(np.array([8], np.uint8), 3)


def test_weight_table_lists_shapes_axes_and_bytes():
    spec = _conv_deconv_ip_model()
    df = quantizer.weight_table(spec)
    assert list(df["layer"]) == ["c1", "c1", "d1", "ip", "ip"]
    assert list(df["field"]) == ["weights", "bias", "weights", "weights", "bias"]
    d1 = df[df.layer == "d1"].iloc[0]
    assert d1["shape"] == (6, 2, 2, 2) and d1["channel_axis"] == 1  # [Cin, Cout/groups, kH, kW]
    assert (df["encoding"] == "float32").all()
    assert (df["stored_bytes"] == 4 * df["count"]).all()


@pytest.mark.parametrize(
    "nbits,mode,encoding",
    [
        (16, "_linear_quantization", "float16"),
        (8, "_linear_quantization", "linear"),
        (5, "_linear_quantization", "linear"),
        (1, "_linear_quantization", "linear"),
        (8, "_linear_quantization_symmetric", "linear"),
        (2, "_lookup_table_quantization_linear", "lut"),
    ],
)
def test_decode_matches_coremltools_dequantization(nbits, mode, encoding):
    spec = _conv_deconv_ip_model()
    q = _ct_quantize(spec, nbits, mode)
    deq = copy.deepcopy(q)
    if nbits < 16:  # coremltools' own dequantizer raises IndexError on fp16 models
        with contextlib.redirect_stdout(io.StringIO()):
            qu._dequantize_nn_spec(deq.neuralNetwork)
    for t in quantizer.weight_tensors(q):
        assert t.encoding == encoding and (t.nbits == nbits or encoding == "float16")
        wp_q = layer_weights(_layer(q, t.layer))[t.field][0]
        mine = quantizer.decode_weights(wp_q, t.shape, t.channel_axis)
        orig = quantizer.decode_weights(layer_weights(_layer(spec, t.layer))[t.field][0], t.shape, t.channel_axis)
        if nbits == 16:
            np.testing.assert_array_equal(mine, orig.astype(np.float16).astype(np.float32))
        else:
            theirs = quantizer.decode_weights(layer_weights(_layer(deq, t.layer))[t.field][0], t.shape, t.channel_axis)
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
            assert np.abs(mine - orig).max() <= (orig.max() - orig.min()) / ((1 << nbits) - 1) + 1e-5


def test_decode_length_one_scale_broadcasts_and_int8():
    wp = ct.proto.NeuralNetwork_pb2.WeightParams()
    write_quantized(wp, pack_bits(np.array([0, 1, 2, 3], np.uint8), 2), 2, scale=[0.5], bias=[-1.0])
    np.testing.assert_allclose(quantizer.decode_weights(wp, (2, 2)), [[-1, -0.5], [0, 0.5]])
    wp2 = ct.proto.NeuralNetwork_pb2.WeightParams()
    wp2.int8RawValue = np.array([-2, 3], np.int8).tobytes()
    wp2.quantization.numberOfBits = 8
    wp2.quantization.linearQuantization.scale.append(0.25)
    np.testing.assert_allclose(quantizer.decode_weights(wp2, (2,)), [-0.5, 0.75])


def test_write_float32_fast_path_round_trips():
    wp = ct.proto.NeuralNetwork_pb2.WeightParams()
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    write_float32(wp, x)
    assert len(wp.floatValue) == 1000 and not wp.rawValue
    np.testing.assert_array_equal(np.array(wp.floatValue, np.float32), x)


def test_load_save_size_and_no_mutation(tmp_path):
    spec = _conv_deconv_ip_model()
    path = quantizer.save(spec, tmp_path / "m.mlmodel")
    assert quantizer.model_size(spec) == path.stat().st_size == quantizer.model_size(path)
    loaded = quantizer.load(path)
    assert loaded == spec and loaded is not spec
    from_mlmodel = quantizer.load(ct.models.MLModel(spec))
    assert from_mlmodel == spec


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        quantizer.load(tmp_path / "missing.mlmodel")
    empty = tmp_path / "empty.mlmodel"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        quantizer.load(empty)
    junk = tmp_path / "junk.mlmodel"
    junk.write_bytes(b"this is not a model at all \xff\xfe")
    with pytest.raises(ModelLoadError, match="not a Core ML model"):
        quantizer.load(junk)
    prog = ct.proto.Model_pb2.Model()
    prog.specificationVersion = 7
    prog.mlProgram.version = 1
    with pytest.raises(UnsupportedModelError, match="coremltools.optimize.coreml"):
        quantizer.load(prog)
    other = ct.proto.Model_pb2.Model()
    other.specificationVersion = 1
    other.glmRegressor.SetInParent()
    with pytest.raises(UnsupportedModelError, match="glmRegressor"):
        quantizer.load(other)
