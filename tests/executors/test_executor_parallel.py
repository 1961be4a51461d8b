"""The executor's fast paths: chunked float32 kernels, the thread pool, split matrix products, LSTM blocks.

Every kernel is checked against an independent float64 reference, with chunks
forced small (so rows and elements cross chunk boundaries) and with one and two
threads (so the pool, its shared counter and per-thread scratch buffers run).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf
from threadpoolctl import threadpool_limits

from harness.executors.ops import _kernels as K
from harness.executors.ops import _parallel as par
from harness.executors.ops import lstm as lstm_mod
from harness.executors.ops import matmul as mm
from tests.executors.executor_specs import layer, net
from tests.executors.test_executor_ops_seq import close, f32, fill_lstm, lstm_ref, run, set_act, set_lstm_params

RNG = np.random.default_rng(7)
THREADS = [1, 2]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few hundred elements, so every kernel runs many chunks on small test data."""
    monkeypatch.setattr(par, "PARALLEL_MIN", 64)
    real = par.for_chunks

    def tiny(fn, n, grain, n_threads=None, errstate=None):
        return real(fn, n, min(grain, max(1, n // 7)), n_threads, errstate)
    monkeypatch.setattr(par, "for_chunks", tiny)
    real_compiled = par.for_compiled

    def tiny_compiled(driver, n, grain, *args, n_threads=None):
        return real_compiled(driver, n, min(grain, max(1, n // 7)), *args, n_threads=n_threads)
    monkeypatch.setattr(K, "for_compiled", tiny_compiled)


def gelu_exact64(x):
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


@pytest.mark.parametrize("threads", THREADS)
def test_gelu_exact_within_1e6_of_float64(threads, small_chunks):
    x = np.concatenate([np.linspace(-12, 12, 200_001), [0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0, 1e20, -1e20]]).astype(np.float32)
    with threadpool_limits(threads):
        y = K.gelu(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - gelu_exact64(x)).max() <= 1e-6


@pytest.mark.parametrize("mode,ref", [
    ("TANH_APPROXIMATION", lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
    ("SIGMOID_APPROXIMATION", lambda x: x / (1 + np.exp(-1.702 * x))),
])
def test_gelu_approximations(mode, ref, small_chunks):
    x = np.linspace(-9, 9, 30_000).astype(np.float32).reshape(3, -1)
    with threadpool_limits(2):
        y = K.gelu(x, mode)
    np.testing.assert_allclose(y, ref(x.astype(np.float64)), atol=2e-6, rtol=1e-6)


def softmax64(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("threads", THREADS)
def test_softmax_equals_per_row_max_softmax(threads, small_chunks):
    x = RNG.normal(0, 4, size=(6, 5, 37)).astype(np.float32)
    x[1, 2] -= 500.0  # a row far below its chunk's maximum: the per-row fallback
    x[2, :3] += 80.0  # rows far above the others
    x[3, 1, :10] = -1e4  # masked entries, as an attention mask makes them
    with threadpool_limits(threads):
        y = K.softmax_last(x)
    np.testing.assert_allclose(y, softmax64(x), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-6)


def test_softmax_non_finite_rows_stay_local(small_chunks):
    x = RNG.normal(size=(40, 16)).astype(np.float32)
    x[5, 3] = np.inf
    x[9, 0] = np.nan
    with np.errstate(invalid="ignore"):
        ref = softmax64(x)
    y = K.softmax_last(x)
    ok = np.isfinite(ref).all(axis=1)
    np.testing.assert_allclose(y[ok], ref[ok], rtol=2e-6, atol=1e-7)
    assert np.isnan(y[9]).all() and not np.isfinite(y[5]).all()


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("k,variance", [(1, True), (2, True), (3, False)])
def test_normalize_rows_matches_two_pass_float64(threads, k, variance, small_chunks):
    x = (RNG.normal(3.0, 2.0, size=(4, 7, 3, 5, 6))).astype(np.float32)
    axes = tuple(range(x.ndim - k, x.ndim))
    x64 = x.astype(np.float64)
    d = x64 - x64.mean(axis=axes, keepdims=True)
    ref = d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + 1e-5) if variance else d
    with threadpool_limits(threads):
        y = K.normalize_rows(x, k, 1e-5, variance)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", THREADS)
def test_binary_split_equals_ufunc(threads, small_chunks):
    a = RNG.normal(size=(9, 4, 5)).astype(np.float32)
    for b in (RNG.normal(size=(9, 4, 5)).astype(np.float32), RNG.normal(size=(1, 1, 5)).astype(np.float32),
              np.float32(0.25)):
        for ufunc in (np.add, np.multiply, np.maximum):
            with threadpool_limits(threads):
                got = par.binary(ufunc, a, b)
            np.testing.assert_array_equal(got, ufunc(a, b))
    c = RNG.normal(size=(1, 4, 5)).astype(np.float32)  # constant (sample axis 1) first
    with threadpool_limits(threads):
        np.testing.assert_array_equal(par.binary(np.subtract, c, a), c - a)


def test_for_chunks_covers_every_item_once_and_propagates_errors():
    seen = np.zeros(1000, int)

    def mark(s, e):
        seen[s:e] += 1
    with threadpool_limits(2):
        par.for_chunks(mark, 1000, 37)
    assert (seen == 1).all()

    def boom(s, e):
        if s > 500:
            raise ValueError("chunk failed")
    with threadpool_limits(2), pytest.raises(ValueError, match="chunk failed"):
        par.for_chunks(boom, 1000, 37)


def test_owned_threads_hold_blas_at_one_and_restore_the_count():
    blas = par._numpy_blas()
    with threadpool_limits(2):
        before = par.threads()
        with par.owned_threads() as n:
            assert n == par.threads() == before  # the pool keeps the count BLAS had on entry
            assert blas.get_num_threads() == 1  # OpenBLAS's own workers never wake (never spin)
            with par.owned_threads():  # nested: still owned
                assert blas.get_num_threads() == 1 and par.threads() == before
            assert blas.get_num_threads() == 1
        assert par.threads() == before and blas.get_num_threads() == before


def test_owned_threads_hold_every_loaded_blas_at_one():
    """numba's np.dot (the compiled LSTM's recurrent products) calls scipy's OpenBLAS, a second library
    with its own threads: it is held at one thread too, and restored."""
    from harness.executors.ops import _jit  # noqa: F401  loads scipy's BLAS and rescans

    libs = par._blas_libs()
    if len(libs) < 2:
        pytest.skip("numpy and scipy share one BLAS library here")
    with threadpool_limits(2):
        with par.owned_threads():
            assert all(c.get_num_threads() == 1 for c in libs)
        assert all(c.get_num_threads() == 2 for c in libs)


def test_network_run_owns_the_threads_while_ops_run(monkeypatch):
    """Inside a run every op sees BLAS at one thread and the pool at the caller's count; an observer
    (calibration's Gram products) sees BLAS's own count."""
    from harness.executors import NumpyExecutor
    from harness.executors.ops.dense import InnerProduct
    from tests.executors.executor_specs import weights

    spec, nn = net({"x": (8,)}, ["y"])
    p = layer(nn, "innerProduct", "fc", ["x"], ["y"])
    p.inputChannels, p.outputChannels = 8, 4
    weights(p.weights, RNG.normal(size=(4, 8)).astype(np.float32))
    ex = NumpyExecutor(spec)
    blas, seen = par._numpy_blas(), []
    real = InnerProduct.run
    monkeypatch.setattr(InnerProduct, "run", lambda self, x: (seen.append(("op", blas.get_num_threads(), par.threads())), real(self, x))[1])
    with threadpool_limits(2):
        ex.predict({"x": f32(3, 8)})
        ex.network.run(ex.input_blobs({"x": f32(3, 8)}), observer=lambda op, b: seen.append(("obs", blas.get_num_threads(), par.threads())))
        assert blas.get_num_threads() == 2
    assert seen == [("op", 1, 2), ("obs", 2, 2), ("op", 1, 2)]


@pytest.mark.parametrize("shape", [(4096, 384, 384), (300, 64, 1500), (1000, 77, 40), (33, 129, 31)])
def test_split_matmul_equals_one_blas_call(shape, monkeypatch):
    """Row blocks (M >= N) or column blocks (N > M) over the pool: the same sums over K as one product."""
    monkeypatch.setattr(par, "SPLIT_MATMUL", 1)
    m, k, n = shape
    a = RNG.normal(size=(m, k)).astype(np.float32)
    b = RNG.normal(size=(k, n)).astype(np.float32)
    with threadpool_limits(1):
        want = a @ b
    with threadpool_limits(2):
        got = par.matmul(a, b)
        out = np.zeros((m, n + 3), np.float32)
        par.matmul(a, np.asfortranarray(b), out=out[:, 1:n + 1])  # strided output, transposed operand
    bound = 2 * np.finfo(np.float32).eps * k * (np.abs(a) @ np.abs(b))  # float32 rounding of a sum over K
    assert (np.abs(got - want) <= bound).all()
    assert (np.abs(out[:, 1:n + 1] - want) <= bound).all()
    assert not out[:, 0].any() and not out[:, n + 1:].any()


@pytest.mark.parametrize("threads", THREADS)
def test_stacked_matmul_split_equals_matmul(threads, monkeypatch):
    monkeypatch.setattr(par, "SPLIT_MATMUL", 1)  # split even these small stacks
    q = RNG.normal(size=(6, 1, 7, 3, 4)).astype(np.float32).transpose(0, 1, 3, 2, 4)  # transposed views
    k = RNG.normal(size=(6, 1, 7, 3, 4)).astype(np.float32).transpose(0, 1, 3, 4, 2)
    kc = np.ascontiguousarray(k[:1])  # one side a constant (sample axis 1)
    with threadpool_limits(threads):
        np.testing.assert_allclose(mm.stacked_matmul(q, k), np.matmul(q, k), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(mm.stacked_matmul(q, kc), np.matmul(q, kc), rtol=1e-6, atol=1e-6)


def test_a_small_stack_is_one_matmul_call(monkeypatch):
    """Below SPLIT_MATMUL multiply-adds the stack is one np.matmul, never handed to the pool."""
    def no_pool(*args, **kwargs):
        raise AssertionError("a small stack was split over the pool")
    monkeypatch.setattr(par, "for_chunks", no_pool)
    q = RNG.normal(size=(32, 4, 16, 8)).astype(np.float32)
    k = RNG.normal(size=(32, 4, 8, 16)).astype(np.float32)
    with threadpool_limits(2):
        np.testing.assert_allclose(mm.stacked_matmul(q, k), np.matmul(q, k), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("same_acts,peep", [(True, True), (False, True), (True, False)])
def test_bidirectional_lstm_blocks_and_groups(threads, same_acts, peep, monkeypatch):
    """Many sequences (several column blocks), an active cell clip; the two directions in lockstep
    (same activations) or run separately (different ones); with peepholes (numpy steps) or without
    (sigmoid/tanh/tanh: the compiled cell); 1 or 2 threads."""
    monkeypatch.setattr(lstm_mod, "MIN_BLOCK", 4)
    monkeypatch.setattr(lstm_mod, "MIN_TASK_WORK", 1)
    monkeypatch.setattr(lstm_mod, "MIN_TASK_WORK_COMPILED", 1)
    S, B, X, H, n = 6, 3, 4, 5, 7
    acts_f = ("sigmoid", "tanh", "tanh")
    acts_b = acts_f if same_acts else ("sigmoidHard", "scaledTanh", "tanh")
    _, nn = net({}, [])
    p = layer(nn, "biDirectionalLSTM", "bi", ["x"], ["y", "hf", "cf", "hb", "cb"])
    p.inputVectorSize, p.outputVectorSize = X, H
    for a, b in zip(acts_f, acts_b):
        set_act(p.activationsForwardLSTM.add(), a)
        set_act(p.activationsBackwardLSTM.add(), b)
    set_lstm_params(p.params, seq=True, bias=True, peep=peep, coupled=False, forget_bias=True, clip=0.7)
    fw = fill_lstm(p.weightParams.add(), X, H, bias=True, peep=peep)
    bw = fill_lstm(p.weightParams.add(), X, H, bias=True, peep=peep)
    x = f32(n, S, B, X, 1, 1, low=-3, high=3)
    with threadpool_limits(threads):
        out = run(nn, {"x": x})
    zero = np.zeros(H)
    for i in range(n):
        for bb in range(B):
            xs = x[i, :, bb, :, 0, 0]
            yf, hf, cf = lstm_ref(xs, *fw, acts_f, zero, zero, clip=0.7, coupled=False, forget_bias=True, reverse=False)
            yb, hb, cb = lstm_ref(xs, *bw, acts_b, zero, zero, clip=0.7, coupled=False, forget_bias=True, reverse=True)
            close(out["y"][i, :, bb, :, 0, 0], np.concatenate([yf, yb[::-1]], axis=1))
            for name, v in (("hf", hf), ("cf", cf), ("hb", hb), ("cb", cb)):
                close(out[name][i, 0, bb, :, 0, 0], v)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("reverse,seq", [(True, True), (False, True), (True, False)])
def test_compiled_lstm_writes_the_output_order_from_each_block(threads, reverse, seq, monkeypatch):
    """The compiled sequence writes a unidirectional layer's output in the layer's order (sequences first,
    steps in processing order, also when the input is read backwards), each column block its own rows;
    one block or several, 1 or 2 threads, B > 1 sequences per sample; the states come out as before."""
    monkeypatch.setattr(lstm_mod, "MIN_BLOCK", 4)
    monkeypatch.setattr(lstm_mod, "MIN_TASK_WORK_COMPILED", 1)
    S, B, X, H, n = 5, 2, 3, 4, 9
    acts = ("sigmoid", "tanh", "tanh")
    _, nn = net({}, [])
    p = layer(nn, "uniDirectionalLSTM", "uni", ["x"], ["y", "h", "c"])
    p.inputVectorSize, p.outputVectorSize, p.reverseInput = X, H, reverse
    for a in acts:
        set_act(p.activations.add(), a)
    set_lstm_params(p.params, seq=seq, bias=True, peep=False, coupled=False, forget_bias=False, clip=0.0)
    W, R, b, pp = fill_lstm(p.weightParams, X, H, bias=True, peep=False)
    x = f32(n, S, B, X, 1, 1, low=-2, high=2)
    with threadpool_limits(threads):
        out = run(nn, {"x": x})
    zero = np.zeros(H)
    assert out["y"].shape == (n, S if seq else 1, B, H, 1, 1)
    for i in range(n):
        for bb in range(B):
            ys, h, c = lstm_ref(x[i, :, bb, :, 0, 0], W, R, b, pp, acts, zero, zero, clip=50.0, coupled=False,
                                forget_bias=False, reverse=reverse)
            close(out["y"][i, :, bb, :, 0, 0], ys if seq else ys[-1:])
            close(out["h"][i, 0, bb, :, 0, 0], h)
            close(out["c"][i, 0, bb, :, 0, 0], c)


def test_lstm_cell_clip_skipped_only_when_provably_idle():
    g = lstm_mod.Group.__new__(lstm_mod.Group)
    g.acts = ("sigmoid", "tanh", "tanh")
    c0 = np.zeros((4, 3), np.float32)
    assert not g.cell_clip_needed([c0], steps=10, clip=50.0, coupled=False)
    assert g.cell_clip_needed([c0], steps=60, clip=50.0, coupled=False)
    assert g.cell_clip_needed([c0 + 45], steps=10, clip=50.0, coupled=False)
    g.acts = ("sigmoid", "ReLU", "tanh")  # unbounded block input: always clip
    assert g.cell_clip_needed([c0], steps=1, clip=50.0, coupled=False)


@pytest.mark.parametrize("mode,fn", [(1, np.add), (3, np.multiply), (5, np.maximum)])
def test_scatter_unique_indices_fast_path_equals_accumulation(mode, fn):
    """Distinct indices take one gather-compute-scatter instead of ufunc.at; the result is the same."""
    from tests.executors.test_executor_ops_seq import one

    n = 4
    data = f32(n, 5, 3)
    idx = np.array([[3.0, 0.0], [1.0, 4.0], [2.0, 1.0], [0.0, 3.0]], np.float32)  # per sample, distinct
    upd = f32(n, 2, 3)
    got = one("scatter", {"d": data, "i": idx, "u": upd}, lambda p: (setattr(p, "axis", 0), setattr(p, "mode", mode)))["y"]
    want = data.astype(np.float64).copy()
    for s in range(n):
        for j, t in enumerate(idx[s].astype(int)):
            want[s, t] = fn(want[s, t], upd[s, j])
    close(got, want)


def _layernorm_model(scale_shape, across: bool, extra_reader: bool = False):
    from harness.executors import NumpyExecutor
    from tests.executors.executor_specs import weights

    C, H, W = 3, 4, 6
    spec, nn = net({"x": (C, H, W)}, ["y"] + (["n"] if extra_reader else []))
    m = layer(nn, "mvn", "mvn", ["x"], ["n"])
    m.acrossChannels, m.normalizeVariance, m.epsilon = across, True, 1e-5
    p = layer(nn, "scale", "scale", ["n"], ["y"])
    p.shapeScale.extend(scale_shape)
    p.shapeBias.extend(scale_shape)
    p.hasBias = True
    s = RNG.uniform(0.5, 2, size=scale_shape).astype(np.float32)
    b = RNG.uniform(-1, 1, size=scale_shape).astype(np.float32)
    weights(p.scale, s)
    weights(p.bias, b)
    return NumpyExecutor(spec), s, b, (C, H, W)


@pytest.mark.parametrize("scale_shape,across,folded", [
    ((1, 4, 6), False, True),   # varies over the normalized (H, W) only: folded into the pass
    ((1,), False, True),        # one shared value
    ((3,), False, False),       # per channel, which this mvn does not normalize over: scale runs after
    ((3, 4, 6), True, True),    # across channels: everything is normalized together
])
def test_mvn_scale_fusion_equals_the_two_layers(scale_shape, across, folded):
    ex, s, b, chw = _layernorm_model(scale_shape, across)
    assert ex.fused == {"scale": "mvn"} and [op.type for op in ex.network.ops] == ["mvn"]
    x = RNG.normal(2.0, 3.0, size=(5,) + chw).astype(np.float32)
    axes = (1, 2, 3) if across else (2, 3)
    x64 = x.astype(np.float64)
    d = x64 - x64.mean(axis=axes, keepdims=True)
    norm = d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + 1e-5)
    shp = scale_shape if len(scale_shape) == 3 else (scale_shape[0], 1, 1)
    want = norm * s.reshape(shp) + b.reshape(shp)
    close(ex.predict({"x": x})["y"], want)
    assert (ex.network.ops[0]._affine_rows(x) is not None) == folded
    assert "n" in ex.trace({"x": x})  # trace runs the unfused network: every layer's output is there


def test_mvn_output_read_elsewhere_is_not_fused():
    ex, *_ = _layernorm_model((1, 4, 6), False, extra_reader=True)
    assert ex.fused == {} and [op.type for op in ex.network.ops] == ["mvn", "scale"]


@pytest.mark.parametrize("threads", THREADS)
def test_matmul_writes_the_layout_its_transpose_wants(threads):
    """attention's (a @ v) -> transpose -> reshapeStatic: the product is laid out so that the reshape
    copies nothing; values equal the unfused network's."""
    from harness.executors import NumpyExecutor

    spec, nn = net({"a": (1, 3, 5, 5), "v": (1, 3, 5, 4)}, ["y"])
    layer(nn, "batchedMatmul", "mm", ["a", "v"], ["p"])
    layer(nn, "transpose", "tr", ["p"], ["t"]).axes.extend([0, 2, 1, 3])
    layer(nn, "reshapeStatic", "rs", ["t"], ["y"]).targetShape.extend([1, 5, 12])
    ex = NumpyExecutor(spec)
    assert ex.network.ops[0].out_axes == [0, 2, 1, 3]
    feeds = {"a": f32(6, 1, 3, 5, 5), "v": f32(6, 1, 3, 5, 4)}
    with threadpool_limits(threads):
        got = ex.predict(feeds)["y"]
        blobs = {k: v for k, v in feeds.items()}
        ex.network.run(blobs)
    want = np.matmul(feeds["a"], feeds["v"]).transpose(0, 1, 3, 2, 4).reshape(6, 5, 12)
    close(got, want, 1e-6)
    assert blobs["t"].flags.c_contiguous and np.shares_memory(blobs["t"], blobs["y"])


def _pool_spec(kind: str, padding: str, exclude: bool):
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder([("data", datatypes.Array(8, 16, 16))], [("out", None)])
    b.add_pooling("pool", 3, 3, 2, 2, kind, padding, "data", "out", exclude_pad_area=exclude)
    return b.spec


@pytest.mark.parametrize("what", ["conv", "conv_groups", "max_same", "average_same_exclude", "l2_valid"])
def test_sample_blocks_on_the_pool_equal_one_thread(what):
    """Convolutions (channels-last im2col) and pooling run blocks of samples concurrently with 2 threads:
    pooling is bit-identical to the 1-thread run, a convolution within float32 rounding of its sums."""
    from harness.executors import NumpyExecutor
    from tests.nn_models import _conv

    if what.startswith("conv"):
        spec = _conv("conv_blocks", cin=8, cout=16, k=3, groups=2 if what == "conv_groups" else 1, hw=16)
    else:
        kind, padding, *excl = what.split("_")
        spec = _pool_spec(kind.upper(), padding.upper(), bool(excl))
    ex = NumpyExecutor(spec)
    x = RNG.standard_normal((64, 8, 16, 16)).astype(np.float32)
    outs = []
    for t in (1, 2):
        with threadpool_limits(t):
            outs.append(ex.predict({"data": x})["out"])
    assert outs[0].shape[0] == 64
    if what.startswith("conv"):  # |error| <= 2 eps K sum|w x|, K = 3*3*cin/groups (a generous |w x| ~ 4 each)
        np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=2 * np.finfo(np.float32).eps * 72 * 72 * 4)
    else:
        np.testing.assert_array_equal(outs[0], outs[1])
