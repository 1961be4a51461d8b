"""Codec math: byte-identical to coremltools' quantization_utils, k-means no worse than its
scikit-learn route, and the edge cases (constant, tiny, NaN, custom LUT) handled."""
from __future__ import annotations

import numpy as np
import pytest

from quantizer.coremltools_quiet import coremltools
from quantizer.codecs import Codec, Encoded, fp16_bytes, linear_lut, linear_quantize
from quantizer.errors import InvalidArgumentError, InvalidWeightsError
from quantizer.kmeans import kmeans_1d, kmeans_lut
from quantizer.packing import unpack_bits

ct = coremltools()
from coremltools.models import utils as ct_utils  # noqa: E402
from coremltools.models.neural_network import quantization_utils as qu  # noqa: E402

SHAPES = [((8, 5), 0), ((4, 6, 3, 3), 0), ((4, 6, 3, 3), 1), ((37,), 0), ((3, 300), 0)]


def _ct_bytes(qw: np.ndarray, nbits: int) -> bytes:
    q8 = np.uint8(qw).ravel()
    return q8.tobytes() if nbits == 8 else qu._convert_array_to_nbit_quantized_bytes(q8, nbits).tobytes()


def _as_ct(w: np.ndarray) -> np.ndarray:
    """What coremltools quantizes: ``np.array(wp.floatValue).reshape(shape)`` (float32 with protobuf 4+)."""
    wp = ct.proto.NeuralNetwork_pb2.WeightParams()
    wp.floatValue.extend(w.ravel().tolist())
    return np.array(wp.floatValue).reshape(w.shape)


def _decode(enc: Encoded, shape, axis=0) -> np.ndarray:
    n = int(np.prod(shape))
    q = unpack_bits(enc.data, enc.nbits, n).astype(np.float64)
    if enc.encoding == "lut":
        return enc.lut.astype(np.float64)[q.astype(int)].reshape(shape)
    c = enc.scale.size
    if len(shape) <= 1:
        return (q * enc.scale[0] + enc.bias[0]).reshape(shape)
    bshape = [1] * len(shape)
    bshape[axis] = c
    return q.reshape(shape) * enc.scale.reshape(bshape) + enc.bias.reshape(bshape)


@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("nbits", range(1, 9))
def test_linear_and_linear_lut_are_byte_identical_to_coremltools(shape, axis, nbits):
    rng = np.random.default_rng(nbits * 100 + len(shape))
    w = (rng.standard_normal(shape) * rng.uniform(0.01, 3)).astype(np.float32)
    qw, s, b = qu._quantize_channelwise_linear(_as_ct(w), nbits, axis=axis)
    enc = Codec("linear", nbits).encode(w, shape, axis)
    assert enc.data == _ct_bytes(qw, nbits)
    assert enc.scale.tobytes() == np.float32(s).tobytes()
    assert enc.bias.tobytes() == np.float32(b).tobytes()
    assert len(enc.data) == max(1, -(-w.size * nbits // 8))

    lut, ql = qu._get_linear_lookup_table_and_weight(nbits, _as_ct(w))
    enc = Codec("linear_lut", nbits).encode(w, shape, axis)
    assert enc.data == _ct_bytes(ql, nbits)
    assert enc.lut.tobytes() == np.float32(lut).tobytes()
    assert enc.lut.size == 2**nbits


@pytest.mark.parametrize("shape,axis", SHAPES)
def test_linear_symmetric_8bit_is_byte_identical_to_coremltools(shape, axis):
    w = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    qw, s, b = qu._quantize_channelwise_linear(_as_ct(w), 8, axis=axis, symmetric=True)
    enc = Codec("linear_symmetric", 8).encode(w, shape, axis)
    assert enc.data == _ct_bytes(qw, 8)
    assert enc.scale.tobytes() == np.float32(s).tobytes()
    assert enc.bias.tobytes() == np.float32(b).tobytes()


@pytest.mark.parametrize("nbits", range(2, 9))
def test_linear_symmetric_low_bits_round_trip_within_half_a_step(nbits):
    w = np.random.default_rng(nbits).standard_normal((6, 50)).astype(np.float32)
    enc = Codec("linear_symmetric", nbits).encode(w, w.shape)
    q = unpack_bits(enc.data, nbits, w.size)
    assert q.min() >= 1 and q.max() <= 2**nbits - 1  # symmetric levels: -r..r
    err = np.abs(_decode(enc, w.shape) - w)
    assert np.all(err <= enc.scale.astype(np.float64)[:, None] / 2 + 1e-6)
    np.testing.assert_allclose(enc.bias, -(2 ** (nbits - 1)) * enc.scale, rtol=1e-6)


def test_fp16_is_byte_identical_to_coremltools():
    w = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 100
    w[:3] = [0.0, -0.0, 65000.0]
    assert Codec("fp16").encode(w, w.shape).data == ct_utils._fp32_to_fp16_byte_array(_as_ct(w))
    enc = Codec("linear", 16).encode(w, w.shape)
    assert enc.encoding == "float16" and len(enc.data) == 2 * w.size


def test_fp16_overflow_names_the_tensor():
    with pytest.raises(InvalidWeightsError, match="layer 'fc' field 'weights'.*float16"):
        fp16_bytes(np.array([1.0, 70000.0], np.float32), "layer 'fc' field 'weights'")


def test_deconvolution_axis_gives_one_scale_per_axis1_channel():
    shape = (3, 4, 2, 2)  # [Cin, Cout/groups, kH, kW]
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    enc = Codec("linear", 8).encode(w, shape, 1)
    assert enc.scale.size == 4
    np.testing.assert_allclose(enc.bias, w.min(axis=(0, 2, 3)))
    assert np.abs(_decode(enc, shape, 1) - w).max() <= enc.scale.max() / 2 + 1e-6


@pytest.mark.parametrize("mode", ["linear", "linear_symmetric", "linear_lut", "kmeans_lut"])
@pytest.mark.parametrize("nbits", [2, 8])
def test_constant_and_tiny_tensors_quantize_without_nan(mode, nbits):
    for w in (np.full((4, 7), 0.25, np.float32), np.zeros((3, 3), np.float32), np.array([1.5], np.float32),
              np.array([-2.0, 3.0, 0.5], np.float32)):
        enc = Codec(mode, nbits).encode(w, w.shape)
        for arr in (enc.scale, enc.bias, enc.lut):
            assert arr is None or np.isfinite(arr).all()
        dec = _decode(enc, w.shape)
        assert np.isfinite(dec).all()
        if mode == "kmeans_lut":
            tol = 0.0  # at most 3 distinct values here: the LUT is exact
        elif mode == "linear_symmetric":
            tol = np.abs(w).max() / (2 ** (nbits - 1) - 1) / 2
        else:
            tol = np.ptp(w) / (2**nbits - 1) / 2
        assert np.abs(dec - w).max() <= tol + 1e-6


def test_tiny_range_channel_is_quantized_not_collapsed():
    # coremltools sets q=0 for a whole channel when its scale <= 1e-6; we quantize it properly.
    w = np.array([[0.0, 1e-5, 2e-5, 3e-5], [0.0, 1.0, 2.0, 3.0]], np.float32)
    enc = Codec("linear", 2).encode(w, w.shape)
    assert unpack_bits(enc.data, 2, 8).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert np.abs(_decode(enc, w.shape) - w).max() < 1e-9 + 1e-6 * 1e-5 + 1e-7


@pytest.mark.parametrize("mode", ["linear", "fp16", "kmeans_lut", "dequantization"])
def test_nan_and_inf_weights_are_rejected_with_the_tensor_named(mode):
    for bad in (np.nan, np.inf, -np.inf):
        w = np.array([1.0, bad, 2.0], np.float32)
        with pytest.raises(InvalidWeightsError, match="layer 'conv1' field 'bias'"):
            Codec(mode, 8 if mode in ("linear", "kmeans_lut") else None).encode(w, (3,), where="layer 'conv1' field 'bias'")


def test_shape_mismatch_is_reported():
    with pytest.raises(InvalidWeightsError, match="holds 6 values"):
        Codec("linear", 8).encode(np.zeros(6, np.float32), (2, 4), where="layer 'x' field 'weights'")


# -- k-means ----------------------------------------------------------------------------------
def _mse(lut, idx, w):
    return float(np.mean((np.asarray(lut, np.float32).ravel()[np.asarray(idx).ravel()].astype(np.float64) - w) ** 2))


@pytest.mark.parametrize("dist", ["normal", "laplace", "uniform", "sparse", "bimodal"])
@pytest.mark.parametrize("nbits", [2, 4, 6])
def test_kmeans_mse_no_higher_than_coremltools_sklearn_route(dist, nbits):
    rng = np.random.default_rng(nbits)
    n = 4000
    w = {
        "normal": rng.standard_normal(n) * 0.05,
        "laplace": rng.laplace(size=n),
        "uniform": rng.uniform(-1, 1, n),
        "sparse": rng.standard_normal(n) * (rng.random(n) < 0.3),
        "bimodal": np.concatenate([rng.normal(-1, 0.1, n // 2), rng.normal(2, 0.5, n - n // 2)]),
    }[dist].astype(np.float32)
    lut, idx = kmeans_lut(w, nbits)
    ref_lut, ref_idx = qu._get_kmeans_lookup_table_and_weight(nbits, w.reshape(-1))
    assert lut.shape == (2**nbits,) and idx.dtype == np.uint8 and idx.shape == w.shape
    assert _mse(lut, idx, w) <= _mse(ref_lut, ref_idx, w)


def test_kmeans_exact_when_few_distinct_values_and_constant():
    w = np.array([3, 1, 3, 2, 1, 1, 3], np.float32)
    lut, idx = kmeans_lut(w, 2)
    assert lut.tolist() == [1, 2, 3, 3] and np.array_equal(lut[idx], w)
    lut, idx = kmeans_lut(np.full(50, -0.5, np.float32), 8)
    assert lut.size == 256 and np.all(lut == -0.5) and np.all(idx == 0)
    lut, idx = kmeans_lut(np.array([0.5, -1.0], np.float32), 3)  # fewer elements than 2**nbits
    assert np.isfinite(lut).all() and np.array_equal(lut[idx], [0.5, -1.0])


def test_kmeans_labels_point_at_nearest_centroid_and_centroids_are_means():
    w = np.random.default_rng(5).standard_normal(3000).astype(np.float32)
    c, lab = kmeans_1d(w, 16)
    assert c.size == 16 and np.all(np.diff(c) > 0)
    for j in range(16):
        np.testing.assert_allclose(c[j], w[lab == j].astype(np.float64).mean(), rtol=1e-9, atol=1e-12)
    nearest = np.argmin(np.abs(w[:, None].astype(np.float64) - c[None, :]), axis=1)
    d_lab = np.abs(w - c[lab])
    d_near = np.abs(w - c[nearest])
    np.testing.assert_allclose(d_lab, d_near, atol=1e-12)


def test_kmeans_codec_packs_indices():
    w = np.random.default_rng(0).standard_normal((10, 30)).astype(np.float32)
    enc = Codec("kmeans", 3).encode(w, w.shape)
    assert enc.encoding == "lut" and enc.lut.size == 8 and len(enc.data) == -(-10 * 30 * 3 // 8)
    assert np.abs(_decode(enc, w.shape) - w).max() < np.ptp(w) / 4


# -- custom LUT -------------------------------------------------------------------------------
def test_custom_lut_accepts_coremltools_style_functions():
    w = np.random.default_rng(0).standard_normal((4, 9)).astype(np.float32)
    enc = Codec("custom_lut", 3, qu._get_linear_lookup_table_and_weight).encode(w, w.shape)
    ref = Codec("linear_lut", 3).encode(w, w.shape)
    assert enc.data == ref.data and np.array_equal(enc.lut, ref.lut)
    # coremltools' own k-means function returns a (2**n, 1) LUT: accepted
    enc = Codec("custom_lut", 2, qu._get_kmeans_lookup_table_and_weight).encode(w, w.shape)
    assert enc.lut.shape == (4,)


@pytest.mark.parametrize(
    "fn,msg",
    [
        (lambda n, w: (np.zeros(3), np.zeros(w.size, int)), "LUT of shape \\(3,\\).*exactly 4"),
        (lambda n, w: (np.zeros(4), np.zeros(w.size - 1, int)), "returned 35 indices.*holds 36"),
        (lambda n, w: (np.zeros(4), np.full(w.size, 4)), "must lie in \\[0, 3\\]"),
        (lambda n, w: (np.zeros(4), np.full(w.size, 0.5)), "non-integer"),
        (lambda n, w: (np.array([0, 1, np.nan, 2]), np.zeros(w.size, int)), "NaN"),
        (lambda n, w: np.zeros(4), "must return \\(lut, indices\\)"),
        (lambda n, w: 1 / 0, "lut_function failed.*ZeroDivisionError"),
    ],
)
def test_custom_lut_bad_output_names_layer_and_field(fn, msg):
    w = np.random.default_rng(0).standard_normal((4, 9)).astype(np.float32)
    with pytest.raises(InvalidArgumentError, match=msg) as info:
        Codec("custom_lut", 2, fn).encode(w, w.shape, where="layer 'dense_2' field 'weights'")
    assert "layer 'dense_2' field 'weights'" in str(info.value)


# -- the Codec value --------------------------------------------------------------------------
def test_codec_normalises_and_hashes():
    assert Codec("kmeans", 4) == Codec("kmeans_lut", 4)
    assert Codec("linear_lut", 16) == Codec("fp16") == Codec("fp16", 16)
    assert Codec("dequantization", 8) == Codec("dequantization")
    assert len({Codec("linear", 8), Codec("linear", 8), Codec("linear", 4)}) == 2
    assert Codec("linear", 8).token() == "linear:8" and Codec("fp16").token() == "fp16:16"
    assert Codec("linear", 4).quantizes and not Codec("fp16").quantizes
    assert Codec("linear", 4).min_spec_version == 3 and Codec("fp16").min_spec_version == 2

    def my_lut(nbits, w):
        return qu._get_linear_lookup_table_and_weight(nbits, w)

    tok = Codec("custom_lut", 4, my_lut).token()
    assert tok.startswith("custom_lut:4:") and "my_lut#" in tok
    assert tok == Codec("custom_lut", 4, my_lut).token()


@pytest.mark.parametrize(
    "args,msg",
    [
        (("linear", 0), "nbits must be 16"),
        (("linear", 9), "nbits must be 16"),
        (("linear", 32), "nbits must be 16"),
        (("linear", 4.0), "nbits must be 16"),
        (("linear", True), "nbits must be 16"),
        (("linear", None), "needs nbits"),
        (("cubic", 4), "unknown quantization_mode 'cubic'.*linear_symmetric"),
        (("linear_symmetric", 1), "at least 2 bits"),
        (("custom_lut", 4), "needs lut_function"),
        (("custom_lut", 4, 42), "must be callable"),
        (("linear", 4, len), "only used by quantization_mode 'custom_lut'"),
        (("fp16", 8), "stores 16 bits"),
    ],
)
def test_codec_rejects_bad_arguments(args, msg):
    with pytest.raises(InvalidArgumentError, match=msg):
        Codec(*args)


def test_linear_quantize_blocks_match_unblocked(monkeypatch):
    import quantizer.codecs as codecs

    rng = np.random.default_rng(0)
    cases = [((64, 50), 0), ((6, 10, 3, 3), 1), ((5000,), 0)]
    for shape, axis in cases:
        w = rng.standard_normal(shape).astype(np.float32)
        ref = linear_quantize(w, 5, shape, axis)
        monkeypatch.setattr(codecs, "_CHUNK", 7)
        got = linear_quantize(w, 5, shape, axis)
        monkeypatch.undo()
        for a, b in zip(ref, got):
            assert np.array_equal(a, b)
    w = rng.standard_normal(100).astype(np.float32)
    lut, q = linear_lut(w, 3)
    assert lut.size == 8 and q.max() <= 7
