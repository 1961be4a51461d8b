"""GPTQ: equals round-to-nearest when H = I, equals a textbook implementation, beats RTN, stays in range."""
import numpy as np
import pytest

import importlib

gptq_mod = importlib.import_module("quantizer.algorithms.gptq")  # the package exports the function under the same name
from quantizer.algorithms import GramAccumulator, LayerStats, gptq, rtn
from quantizer.algorithms.grids import MODES
from quantizer.codecs import Codec
from quantizer.weightparams import decode_weights
from tests.quantizer.algorithms.reference import reference_gptq

rng = np.random.default_rng(0)
BITS = (2, 3, 4, 8)


def correlated(n, c, seed=0):
    r = np.random.default_rng(seed)
    return r.normal(size=(n, c)) @ r.normal(size=(c, c)) + r.normal(size=c)


def out_err(w, wh, x):
    return float(np.sum(((w.reshape(w.shape[0], -1).astype(np.float64) - wh.reshape(w.shape[0], -1)) @ x.T) ** 2))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nbits", BITS)
@pytest.mark.parametrize("shape,groups", [((24, 40), 1), ((12, 3, 3, 3), 1), ((8, 2, 3, 3), 4), ((6, 1, 3, 3), 6)])
def test_identity_hessian_is_round_to_nearest(mode, nbits, shape, groups):
    w = rng.normal(size=shape).astype(np.float32)
    c = int(np.prod(shape[1:]))
    h = np.broadcast_to(np.eye(c), (groups, c, c))
    res = gptq(w, h, mode, nbits, act_order=True, block_size=5)
    enc = Codec(mode, nbits).encode(w, shape)  # quantizer's round-to-nearest, byte-identical to coremltools
    ours = res.encoded()
    assert ours.data == enc.data
    if enc.lut is not None:
        np.testing.assert_array_equal(ours.lut, enc.lut)
    else:
        np.testing.assert_array_equal(ours.scale, enc.scale)
        np.testing.assert_array_equal(ours.bias, enc.bias)
    np.testing.assert_array_equal(res.indices, rtn(w, mode, nbits).indices)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("act_order", [True, False])
@pytest.mark.parametrize("block_size", [128, 7, 1])
def test_equals_reference_implementation(mode, act_order, block_size, monkeypatch):
    monkeypatch.setattr(gptq_mod, "_PANEL_ELEMS", 50)  # chunked lazy-batch updates too
    for seed in range(3):
        r = np.random.default_rng(seed)
        rows, cols = int(r.integers(3, 20)), int(r.integers(5, 60))
        w = r.normal(size=(rows, cols)).astype(np.float32)
        x = correlated(300, cols, seed)
        x[:, r.integers(0, cols, 2)] = 0  # dead inputs
        h = x.T @ x
        got = gptq(w, h, mode, 3, act_order=act_order, block_size=block_size, dtype=np.float64)
        ref = reference_gptq(w, h, mode, 3, act_order=act_order)
        np.testing.assert_array_equal(got.indices.reshape(rows, cols), ref)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nbits", (2, 3, 4))
def test_beats_round_to_nearest_on_random_layers(mode, nbits):
    w = (rng.normal(size=(32, 96)) * rng.gamma(2.0, size=(32, 1))).astype(np.float32)
    x = correlated(1000, 96, 3)
    res = gptq(w, x.T @ x, mode, nbits)
    q = res.indices
    assert q.dtype == np.uint8 and q.size == w.size and q.max() < 2 ** nbits
    assert out_err(w, res.dequantize(), x) < out_err(w, rtn(w, mode, nbits).dequantize(), x)


def test_grouped_equals_per_group():
    g, r, cg = 3, 4, 2
    w = rng.normal(size=(g * r, cg, 3, 3)).astype(np.float32)
    xs = [correlated(200, cg * 9, s) for s in range(g)]
    h = np.stack([x.T @ x for x in xs])
    lut = np.linspace(-2, 2, 8)
    for mode, kw in (("linear", {}), ("linear_symmetric", {}), ("kmeans_lut", {"lut": lut})):
        whole = gptq(w, h, mode, 3, **kw).indices.reshape(g, r, -1)
        for gi in range(g):
            part = gptq(w[gi * r:(gi + 1) * r], h[gi], mode, 3, **kw).indices.reshape(r, -1)
            np.testing.assert_array_equal(whole[gi], part)


@pytest.mark.parametrize("act_order", [True, False])
@pytest.mark.parametrize("cols,block", [(48, 16), (50, 16)])  # exact blocks and a zero-padded last block
def test_block_diagonal_equals_full_on_block_diagonal_h(act_order, cols, block):
    w = rng.normal(size=(10, cols)).astype(np.float32)
    x = correlated(400, cols, 5)
    acc = GramAccumulator(cols, block=block, dtype=np.float64)
    acc.add(x)
    st = acc.stats()
    for mode in MODES:
        blocked = gptq(w, st, mode, 3, act_order=act_order, dtype=np.float64)
        full = gptq(w, st.dense(), mode, 3, act_order=act_order, dtype=np.float64)  # the same H, stored full
        np.testing.assert_array_equal(blocked.indices, full.indices)
        assert blocked.info["hessian_block"] == block


def test_encoded_decodes_to_dequantized():
    from quantizer.coremltools_quiet import coremltools

    w = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    x = correlated(300, 36, 1)
    for mode in MODES:
        res = gptq(w, x.T @ x, mode, 3)
        wp = coremltools().proto.NeuralNetwork_pb2.WeightParams()
        res.encoded().write(wp)
        np.testing.assert_array_equal(decode_weights(wp, w.shape), res.dequantize())


def test_dead_columns_and_degenerate_input():
    w = rng.normal(size=(5, 6)).astype(np.float32)
    res = gptq(w, np.zeros((6, 6)), "linear", 4)  # no live input at all: round to nearest
    np.testing.assert_array_equal(res.indices, rtn(w, "linear", 4).indices)
    assert res.info["dead_columns"] == 6 and res.info["rtn_fallbacks"] == 0
    const = np.ones((5, 6), np.float32)  # zero-range channels: scale 0
    x = correlated(100, 6)
    np.testing.assert_array_equal(gptq(const, x.T @ x, "linear", 4).dequantize(), const)


def test_singular_hessian_is_dampened():
    x = correlated(3, 20)  # rank 3
    w = rng.normal(size=(4, 20)).astype(np.float32)
    res = gptq(w, x.T @ x, "linear", 4, damp=1e-6)
    assert res.info["rtn_fallbacks"] == 0 and res.indices.max() < 16


def test_centered_needs_stats_and_helps_after_bias_correction():
    from quantizer.algorithms import bias_correction

    x = correlated(2000, 40, 7) + 5.0  # large common mean
    acc = GramAccumulator(40, dtype=np.float64)
    acc.add(x)
    st = acc.stats()
    w = rng.normal(size=(16, 40)).astype(np.float32)
    with pytest.raises(ValueError, match="centered"):
        gptq(w, st.gram[0], "linear", 3, centered=True)
    errs = {}
    for centered in (False, True):
        wh = gptq(w, st, "linear", 3, centered=centered).dequantize()
        delta = bias_correction(w, wh, st)
        errs[centered] = float(np.sum(((w - wh) @ x.T - delta[:, None]) ** 2))
    assert errs[True] < errs[False]


def test_float32_work_close_to_float64():
    x = correlated(3000, 300, 2)
    w = rng.normal(size=(64, 300)).astype(np.float32)
    h = x.T @ x
    e32 = out_err(w, gptq(w, h, "linear", 4, dtype=np.float32).dequantize(), x)
    e64 = out_err(w, gptq(w, h, "linear", 4, dtype=np.float64).dequantize(), x)
    assert abs(e32 - e64) / e64 < 0.01


def test_validation():
    w = rng.normal(size=(4, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="columns"):
        gptq(w, np.eye(5), "linear", 4)
    with pytest.raises(ValueError, match="mode"):
        gptq(w, np.eye(6), "fp16", 4)
    with pytest.raises(ValueError, match="nbits"):
        gptq(w, np.eye(6), "linear_symmetric", 1)
    with pytest.raises(ValueError, match="damp"):
        gptq(w, np.eye(6), "linear", 4, damp=0)
    with pytest.raises(ValueError, match="LUT"):
        gptq(w, np.eye(6), "kmeans_lut", 2, lut=np.zeros(3))


@pytest.mark.parametrize("block", [None, 16])
def test_centered_equals_gptq_on_centred_statistics(block):
    x = correlated(500, 40, 9) + 3.0
    acc = GramAccumulator(40, block=block, dtype=np.float64)
    acc.add(x)
    st = acc.stats()
    w = rng.normal(size=(6, 40)).astype(np.float32)
    for mode in MODES:
        a = gptq(w, st, mode, 3, centered=True, dtype=np.float64)
        b = gptq(w, st.centered(), mode, 3, dtype=np.float64)
        np.testing.assert_array_equal(a.indices, b.indices)
