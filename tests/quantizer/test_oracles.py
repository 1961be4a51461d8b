"""Oracle numbers from coremltools' own tests, checked with numpy only.

coremltools' ``test/neural_network/test_quantization.py`` and
``test_nn_builder.py`` need macOS (Core ML prediction) to run. Their expected
figures -- byte lengths after 16/8/5-bit quantization, k-means LUT properties,
and hand-computed outputs of quantized layers -- are reproduced here: models are
built exactly as in those tests, quantized by ``quantizer`` or stored
pre-quantized by the builder, decoded with ``quantizer.decode_weights`` and
evaluated with numpy (and with the project's numpy executor).
"""
from __future__ import annotations

import numpy as np
import pytest

import quantizer
from quantizer.coremltools_quiet import coremltools
from quantizer.packing import pack_bits, unpack_bits
from quantizer.tensors import layer_weights

ct = coremltools()
from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402


def _pack(values, nbits: int) -> bytes:
    """Pack like coremltools' ``_convert_array_to_nbit_quantized_bytes`` (checked equal below)."""
    return pack_bits(np.asarray(values, np.uint8).ravel(), nbits)


def _quantize(spec, nbits, mode="linear"):
    out = quantizer.quantize_weights(spec, nbits, mode)
    return out.get_spec() if hasattr(out, "get_spec") else out


def _weights(layer) -> dict[str, np.ndarray]:
    return {f: quantizer.decode_weights(wp, shape, axis) for f, (wp, shape, axis) in layer_weights(layer).items()}


def _executor_output(spec, feeds, name):
    from harness.executors import NumpyExecutor

    return np.asarray(NumpyExecutor(spec).predict(feeds)[name], np.float64)


def test_pack_bits_matches_coremltools_packer():
    from coremltools.models.neural_network.quantization_utils import _convert_array_to_nbit_quantized_bytes

    rng = np.random.default_rng(0)
    for nbits in range(1, 9):
        q = rng.integers(0, 2 ** nbits, 37).astype(np.uint8)
        assert _pack(q, nbits) == _convert_array_to_nbit_quantized_bytes(q, nbits).tobytes()


# ----------------------------------------------------------------------------- test_quantization.py


def test_embedding_nd_byte_lengths():
    """TestQuantizeWeightsAPI.test_embeddingND_quantize: vocab 300, size 20."""
    builder = NeuralNetworkBuilder([("data", datatypes.Array(10, 1))], [("output", None)],
                                   disable_rank5_shape_mapping=True)
    builder.add_embedding_nd("embedding_nd", "data", "output", vocab_size=300, embedding_size=20,
                             W=np.random.default_rng(1).random((20, 300)))
    spec = builder.spec
    assert len(spec.neuralNetwork.layers[0].embeddingND.weights.floatValue) == 6000
    w16 = _quantize(spec, 16).neuralNetwork.layers[0].embeddingND.weights
    assert len(w16.floatValue) == 0 and len(w16.float16Value) == 2 * 6000
    w8 = _quantize(spec, 8).neuralNetwork.layers[0].embeddingND.weights
    assert len(w8.floatValue) == 0 and len(w8.float16Value) == 0 and len(w8.rawValue) == 6000
    w5 = _quantize(spec, 5).neuralNetwork.layers[0].embeddingND.weights
    assert len(w5.floatValue) == 0 and len(w5.float16Value) == 0 and len(w5.rawValue) == 3750  # 5*6000/8


def test_load_constant_nd_byte_lengths():
    """TestQuantizeWeightsAPI.test_loadConstantND_quantize: a [10, 10] constant."""
    builder = NeuralNetworkBuilder([("data", datatypes.Array(10, 1))], [("output", None)],
                                   disable_rank5_shape_mapping=True)
    value = np.random.default_rng(2).integers(0, 200, (10, 10)).astype(np.float32)
    builder.add_load_constant_nd("load_constant_nd", "constant", value, [10, 10])
    builder.add_broadcast_to_dynamic("broadcast_to_dynamic", ["constant", "data"], "output")
    spec = builder.spec
    assert len(spec.neuralNetwork.layers[0].loadConstantND.data.floatValue) == 100
    d16 = _quantize(spec, 16).neuralNetwork.layers[0].loadConstantND.data
    assert len(d16.floatValue) == 0 and len(d16.float16Value) == 2 * 100
    d8 = _quantize(spec, 8).neuralNetwork.layers[0].loadConstantND.data
    assert len(d8.floatValue) == 0 and len(d8.float16Value) == 0 and len(d8.rawValue) == 100
    d5 = _quantize(spec, 5).neuralNetwork.layers[0].loadConstantND.data
    assert len(d5.floatValue) == 0 and len(d5.float16Value) == 0 and len(d5.rawValue) == 63  # ceil(5*100/8)
    # 8-bit linear: every value within half a step of (max - min) / 255
    decoded = _weights(_quantize(spec, 8).neuralNetwork.layers[0])["data"].reshape(10, 10)
    step = (value.max() - value.min()) / 255
    assert np.abs(decoded - value).max() <= step / 2 * (1 + 1e-5)


@pytest.mark.parametrize("shape", [(20, 20), (120, 120)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_kmeans_lookup(shape, dtype):
    """TestKMeansLookup.test_kmeans_lookup: 4-bit LUT of rand(shape): 16 entries, every
    index < 16, reconstruction error below 0.1 everywhere."""
    nbits = 4
    w = np.random.default_rng(3).random(shape).astype(dtype)
    enc = quantizer.Codec("kmeans_lut", nbits).encode(w, shape)
    assert enc.lut is not None and len(enc.lut) == 2 ** nbits
    idx = unpack_bits(enc.data, nbits, w.size)
    assert idx.shape == (w.size,)
    assert len(np.unique(idx)) <= len(enc.lut)
    assert np.abs(w.astype(np.float32).ravel() - enc.lut[idx]).max() < 0.1


def test_kmeans_exact_values():
    """TestKMeansLookup.test_kmeans1d_exact_value: 13 distinct values, 16 entries:
    every value is represented exactly (coremltools' LUT: the sorted distinct values)."""
    w = np.array([[12.0, 11.0, 12.0, 33.0, 32.0, 99.0, 0.0, 34.0, 40.0],
                  [41.0, 34.0, 98.0, 75.1, 89.0, 99.0, 0.0, 10.0, 41.0]], np.float32)
    enc = quantizer.Codec("kmeans_lut", 4).encode(w, w.shape)
    idx = unpack_bits(enc.data, 4, w.size)
    np.testing.assert_array_equal(enc.lut[idx], w.ravel())
    expected_values = [0.0, 10.0, 11.0, 12.0, 32.0, 33.0, 34.0, 40.0, 41.0, 75.1, 89.0, 98.0, 99.0]
    assert set(np.float32(expected_values)) <= set(enc.lut.tolist())


# ----------------------------------------------------------------------------- test_nn_builder.py


def _quant_conv(W: bytes, quantization_type, nbits, quant_scale=None, quant_bias=None, quant_lut=None,
                output_channels=2):
    """BasicNumericCorrectnessTest_1014NewLayers.build_quant_conv_layer."""
    builder = NeuralNetworkBuilder([("data", datatypes.Array(1, 2, 2))], [("out", datatypes.Array(2, 1, 1))])
    builder.add_convolution("conv", 1, output_channels, 2, 2, 1, 1, "valid", 1, W, None, False,
                            input_name="data", output_name="out", quantization_type=quantization_type,
                            nbits=nbits, quant_scale=quant_scale, quant_bias=quant_bias, quant_lut=quant_lut)
    return builder.spec


def _conv_ones_input(spec) -> np.ndarray:
    """The 2x2 'valid' convolution of a ones(1, 2, 2) input = the sum of each output channel's kernel."""
    layer = spec.neuralNetwork.layers[0]
    w = _weights(layer)["weights"]  # [Cout, 1, 2, 2]
    ours = w.reshape(w.shape[0], -1).sum(axis=1).astype(np.float64)
    ex = _executor_output(spec, {"data": np.ones((1, 1, 2, 2), np.float32)}, "out").ravel()
    np.testing.assert_allclose(ex, ours, rtol=1e-6)
    return ours


def test_linear_quant_convolution_8bit_scalar_scale():
    W = np.ones((2, 2, 1, 2), dtype=np.uint8)
    W[:, :, :, 1] = 2
    spec = _quant_conv(W.flatten().tobytes(), "linear", 8, quant_scale=[4.0], quant_bias=[-2.0])
    np.testing.assert_allclose(_conv_ones_input(spec), [8, 24])


def test_linear_quant_convolution_8bit_vector_scale_and_bias():
    W = np.ones((2, 2, 1, 2), dtype=np.uint8)
    W[:, :, :, 1] = 2
    spec = _quant_conv(W.flatten().tobytes(), "linear", 8, quant_scale=[4.0, 5.0], quant_bias=[-2.0, 1.0])
    np.testing.assert_allclose(_conv_ones_input(spec), [8, 44])


def test_linear_quant_convolution_8bit_float_scale_and_bias():
    W = np.array([[[[1, 248], [248, 248]]]], dtype=np.uint8)
    spec = _quant_conv(W.flatten().tobytes(), "linear", 8, quant_scale=[15], quant_bias=[-3913], output_channels=1)
    np.testing.assert_allclose(_conv_ones_input(spec), [-4477])  # 15*(1+3*248) + 4*(-3913)


def test_lut_quant_convolution_2bit():
    W = np.zeros((2, 2, 1, 2), dtype=np.uint8)
    W[:, :, :, 1] = 2
    spec = _quant_conv(_pack(W.flatten(), 2), "lut", 2, quant_lut=[10.0, 11.0, -3.0, -1.0])
    np.testing.assert_allclose(_conv_ones_input(spec), [40, -12])


def _quant_inner_product(W, nbits, quantization_type, **kw):
    builder = NeuralNetworkBuilder([("data", datatypes.Array(3))], [("probs", None)])
    builder.add_inner_product("ip1", _pack(W.flatten(), nbits), None, 3, 2, False, "data", "probs",
                              is_quantized_weight=True, quantization_type=quantization_type, nbits=nbits, **kw)
    spec = builder.spec
    data = np.array([1.0, 3.0, 5.0])
    ours = _weights(spec.neuralNetwork.layers[0])["weights"].astype(np.float64) @ data
    ex = _executor_output(spec, {"data": data[None].astype(np.float32)}, "probs").ravel()
    np.testing.assert_allclose(ex, ours, rtol=1e-6)
    return ours


def test_linear_quant_inner_product_3bit():
    W = np.reshape(np.arange(6), (2, 3)).astype(np.uint8)
    out = _quant_inner_product(W, 3, "linear", quant_scale=[11.0, 2.0], quant_bias=[-2.0, 10.0])
    np.testing.assert_allclose(out, [125, 170])


def test_lut_quant_inner_product_1bit():
    W = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    out = _quant_inner_product(W, 1, "lut", quant_lut=[5.0, -3.0])
    np.testing.assert_allclose(out, [-19, 37])


def test_linear_quant_batched_matmul_5bit():
    """BasicNumericCorrectnessTest_1015NewLayers.test_linear_quant_batchedmatmul_5bit.

    W_unquantized = [[308, 30, 39], [8, -10, 30]]; out = data @ W_unquantized + bias."""
    W = np.array([[31, 20, 11], [1, 0, 8]], dtype=np.uint8)
    builder = NeuralNetworkBuilder([("data", datatypes.Array(2, 2))], [("out", None)], disable_rank5_shape_mapping=True)
    builder.add_batched_mat_mul("batched_matmul", ["data"], "out", weight_matrix_rows=2, weight_matrix_columns=3,
                                W=_pack(W.flatten(), 5), bias=np.array([1.0, 2.0, 3.0]), is_quantized_weight=True,
                                quantization_type="linear", nbits=5, quant_scale=np.array([10.0, 2.0, 3.0]),
                                quant_bias=np.array([-2.0, -10.0, 6.0]))
    spec = builder.spec
    weights = _weights(spec.neuralNetwork.layers[0])
    stored = weights["weights"].astype(np.float64)  # [X2, X1]: the transpose of W
    np.testing.assert_array_equal(stored.T, [[308, 30, 39], [8, -10, 30]])
    data = np.array([[5.0, 6.0], [10.0, 12.0]])
    out = data @ stored.T + weights["bias"]
    np.testing.assert_allclose(out, [[1589, 92, 378], [3177, 182, 753]])
    ex = _executor_output(spec, {"data": data.astype(np.float32)}, "out").reshape(2, 3)
    np.testing.assert_allclose(ex, out, rtol=1e-6)


def test_lut_quant_embedding_nd_2bit():
    W = np.zeros((2, 3), dtype=np.uint8)
    W[:, 0] = [1, 0]
    W[:, 1] = [0, 1]
    W[:, 2] = [3, 2]
    bias = np.array([1.0, 2.0])
    lut = np.array([34.0, 12.0, -6.0, 6.0])
    builder = NeuralNetworkBuilder([("data", datatypes.Array(4, 1))], [("out", None)], disable_rank5_shape_mapping=True)
    builder.add_embedding_nd("embedding_nd", "data", "out", vocab_size=3, embedding_size=2, W=_pack(W.flatten(), 2),
                             b=bias, is_quantized_weight=True, quantization_type="lut", nbits=2, quant_lut=lut)
    spec = builder.spec
    weights = _weights(spec.neuralNetwork.layers[0])
    table = weights["weights"].astype(np.float64)  # [embeddingSize, vocabSize]
    ids = np.array([2, 2, 1, 0])
    out = table[:, ids].T + weights["bias"]
    expected = np.array([[6.0 + 1, -6.0 + 2], [6.0 + 1, -6.0 + 2], [34.0 + 1, 12.0 + 2], [12.0 + 1, 34.0 + 2]])
    np.testing.assert_allclose(out, expected)
    ex = _executor_output(spec, {"data": ids.reshape(4, 1).astype(np.float32)}, "out").reshape(4, 2)
    np.testing.assert_allclose(ex, expected, rtol=1e-6)


def test_linear_quant_embedding_7bit():
    """test_linear_quant_embedding_7bit: out[i] = scale*W[:, id] + qbias + bias."""
    W = np.zeros((2, 3), dtype=np.uint8)
    W[:, 0] = [100, 127]
    W[:, 1] = [20, 40]
    W[:, 2] = [90, 1]
    builder = NeuralNetworkBuilder([("data", datatypes.Array(4, 1, 1, 1))], [("out", None)],
                                   disable_rank5_shape_mapping=True)
    builder.add_embedding("embed", _pack(W.flatten(), 7), np.array([1.0, 2.0]), 3, 2, True, "data", "out",
                          is_quantized_weight=True, quantization_type="linear", nbits=7,
                          quant_scale=[10.0, 2.0], quant_bias=[-2.0, -10.0])
    weights = _weights(builder.spec.neuralNetwork.layers[0])
    table = weights["weights"].astype(np.float64) + weights["bias"][:, None]
    expected_table = np.array([[998.0 + 1, 198.0 + 1, 898.0 + 1], [244.0 + 2, 70.0 + 2, -8.0 + 2]])
    np.testing.assert_allclose(table, expected_table)
    ids = [2, 2, 1, 0]
    np.testing.assert_allclose(table[:, ids].T, expected_table[:, ids].T)
