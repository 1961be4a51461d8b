"""Unit tests of the numpy executor's sequence, control-flow, embedding and ND tensor ops.

Each op is run on internal blobs ``(N, *per-sample shape)`` through the real
runner (:func:`compile_network`) and compared with a reference written here
independently: numpy formulas from NeuralNetwork.proto, and for the recurrent
layers a plain per-sample, per-step float64 loop. Every test uses several
samples so that vectorisation over the sample axis is exercised; the
recurrent and control-flow tests also check batched == sample-by-sample.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.errors import ExecutorError
from harness.executors import NumpyExecutor
from harness.executors.runner import BuildContext, compile_network
from tests.executors.executor_specs import INT32, layer, net, weights

RNG = np.random.default_rng(20240611)
N = 3  # samples per test batch


def f32(*shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def run(nn, blobs: dict, legacy: bool = False) -> dict:
    """Compile the layers of ``nn`` and run them over a copy of ``blobs`` (internal layout)."""
    network = compile_network(nn, BuildContext(legacy=legacy))
    out = {k: np.asarray(v, np.float32) for k, v in blobs.items()}
    return network.run(out)


def one(kind: str, inputs: dict, setup=None, outputs=("y",)) -> dict:
    """Run a single layer of type ``kind`` over ``inputs``; ``setup(params)`` fills its params."""
    _, nn = net({}, [])
    p = layer(nn, kind, kind, list(inputs), list(outputs))
    if setup:
        setup(p)
    return run(nn, inputs)


def close(got, ref, tol=1e-5):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"shape {got.shape} != {ref.shape}"
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * max(1.0, float(np.abs(ref).max(initial=0))))


# =============================================================================
# Recurrent layers: references written from the proto, one sample/batch/step at a time
# =============================================================================

def sig(v):
    return 1.0 / (1.0 + np.exp(-v))


ACTS = {  # recurrent-layer activations (fixed parameters, proto)
    "sigmoid": sig,
    "tanh": np.tanh,
    "ReLU": lambda v: np.maximum(v, 0.0),
    "linear": lambda v: v,
    "scaledTanh": lambda v: 1.7159 * np.tanh(2.0 / 3.0 * v),
    "sigmoidHard": lambda v: np.minimum(np.maximum(0.2 * v + 0.5, 0.0), 1.0),
}


def clip50(v):
    return np.minimum(np.maximum(v, -50.0), 50.0)


def set_act(msg, kind: str) -> None:
    getattr(msg, kind).SetInParent()


def lstm_ref(x, W, R, b, p, acts, h0, c0, *, clip, coupled, forget_bias, reverse):
    """One direction, one sequence ``x (S, X)``; W/R/b dicts keyed i, f, z, o. Returns ys (processing order), h, c."""
    f, g, hh = (ACTS[a] for a in acts)
    h, c = h0.astype(np.float64), c0.astype(np.float64)
    bf = b["f"] + (1.0 if forget_bias else 0.0)
    ys = []
    steps = range(len(x) - 1, -1, -1) if reverse else range(len(x))
    for t in steps:
        xt = x[t].astype(np.float64)
        pi = p["i"] * c if p else 0.0
        pf = p["f"] * c if p else 0.0
        i = f(clip50(W["i"] @ xt + R["i"] @ h + pi + b["i"]))
        ft = f(clip50(W["f"] @ xt + R["f"] @ h + pf + bf))
        z = g(clip50(W["z"] @ xt + R["z"] @ h + b["z"]))
        c = c * (1.0 - i) + i * z if coupled else c * ft + i * z
        c = np.minimum(np.maximum(c, -clip), clip)
        po = p["o"] * c if p else 0.0
        o = f(clip50(W["o"] @ xt + R["o"] @ h + po + b["o"]))
        h = hh(c) * o
        ys.append(h)
    return np.stack(ys), h, c


GATE_FIELDS = {"i": "inputGate", "f": "forgetGate", "z": "blockInput", "o": "outputGate"}


def fill_lstm(wp, X, H, *, bias: bool, peep: bool):
    W = {g: f32(H, X) for g in "ifzo"}
    R = {g: f32(H, H) for g in "ifzo"}
    b = {g: f32(H) if bias else np.zeros(H, np.float32) for g in "ifzo"}
    p = {g: f32(H) for g in "ifo"} if peep else None
    for g, name in GATE_FIELDS.items():
        weights(getattr(wp, f"{name}WeightMatrix"), W[g])
        weights(getattr(wp, f"{name}RecursionMatrix"), R[g])
        if bias:
            weights(getattr(wp, f"{name}BiasVector"), b[g])
        if peep and g != "z":
            weights(getattr(wp, f"{name}PeepholeVector"), p[g])
    as64 = lambda d: {k: v.astype(np.float64) for k, v in d.items()}  # noqa: E731
    return as64(W), as64(R), as64(b), (as64(p) if p else None)


def set_lstm_params(lp, *, seq, bias, peep, coupled, forget_bias, clip):
    lp.sequenceOutput, lp.hasBiasVectors, lp.hasPeepholeVectors = seq, bias, peep
    lp.coupledInputAndForgetGate, lp.forgetBias, lp.cellClipThreshold = coupled, forget_bias, clip


LSTM_CASES = {
    # name: (acts, seq, bias, peep, coupled, forget_bias, clip, reverse, with_states)
    "plain": (("sigmoid", "tanh", "tanh"), True, True, False, False, False, 500.0, False, True),
    # the compiled cell (sigmoid, tanh, tanh, no peepholes) with its clip active
    "plain_clip_reverse": (("sigmoid", "tanh", "tanh"), True, True, False, False, True, 0.4, True, True),
    "peephole_coupled_clip_reverse": (("sigmoidHard", "scaledTanh", "linear"), False, False, True, True, True, 0.3,
                                      True, False),
    "relu_forgetbias_default_clip": (("sigmoid", "ReLU", "tanh"), True, True, True, False, True, 0.0, False, True),
}


@pytest.mark.parametrize("case", list(LSTM_CASES))
def test_unidirectional_lstm_matches_step_reference(case):
    acts, seq, bias, peep, coupled, fb, clip, reverse, states = LSTM_CASES[case]
    S, B, X, H = 5, 2, 4, 3
    _, nn = net({}, [])
    ins = ["x", "h0", "c0"] if states else ["x"]
    p = layer(nn, "uniDirectionalLSTM", "lstm", ins, ["y", "h", "c"])
    p.inputVectorSize, p.outputVectorSize, p.reverseInput = X, H, reverse
    for a in acts:
        set_act(p.activations.add(), a)
    set_lstm_params(p.params, seq=seq, bias=bias, peep=peep, coupled=coupled, forget_bias=fb, clip=clip)
    W, R, b, pp = fill_lstm(p.weightParams, X, H, bias=bias, peep=peep)
    x = f32(N, S, B, X, 1, 1, low=-2, high=2)
    blobs = {"x": x}
    h0 = np.zeros((N, 1, B, H, 1, 1), np.float32)
    c0 = np.zeros_like(h0)
    if states:
        h0, c0 = f32(N, 1, B, H, 1, 1), f32(N, 1, B, H, 1, 1)
        blobs.update(h0=h0, c0=c0)
    out = run(nn, blobs)
    S_out = S if seq else 1
    assert out["y"].shape == (N, S_out, B, H, 1, 1) and out["h"].shape == out["c"].shape == (N, 1, B, H, 1, 1)
    for n in range(N):
        for bb in range(B):
            ys, h, c = lstm_ref(x[n, :, bb, :, 0, 0], W, R, b, pp, acts, h0[n, 0, bb, :, 0, 0], c0[n, 0, bb, :, 0, 0],
                                clip=clip or 50.0, coupled=coupled, forget_bias=fb, reverse=reverse)
            close(out["y"][n, :, bb, :, 0, 0], ys if seq else ys[-1:])
            close(out["h"][n, 0, bb, :, 0, 0], h)
            close(out["c"][n, 0, bb, :, 0, 0], c)
    # batched == sample by sample
    for n in range(N):
        single = run(nn, {k: v[n:n + 1] for k, v in blobs.items()})
        close(single["y"], out["y"][n:n + 1], 1e-6)


@pytest.mark.parametrize("seq", [True, False])
def test_bidirectional_lstm_aligns_backward_outputs(seq):
    S, B, X, H = 4, 1, 3, 2
    _, nn = net({}, [])
    p = layer(nn, "biDirectionalLSTM", "bi", ["x", "hf", "cf", "hb", "cb"], ["y", "hf_o", "cf_o", "hb_o", "cb_o"])
    p.inputVectorSize, p.outputVectorSize = X, H
    for a in ("sigmoid", "tanh", "tanh"):
        set_act(p.activationsForwardLSTM.add(), a)
        set_act(p.activationsBackwardLSTM.add(), a)
    set_lstm_params(p.params, seq=seq, bias=True, peep=False, coupled=False, forget_bias=False, clip=500.0)
    fw = fill_lstm(p.weightParams.add(), X, H, bias=True, peep=False)
    bw = fill_lstm(p.weightParams.add(), X, H, bias=True, peep=False)
    x = f32(N, S, B, X, 1, 1)
    st = {k: f32(1, 1, B, H, 1, 1) for k in ("hf", "cf", "hb", "cb")}  # constants: sample axis 1
    out = run(nn, {"x": x, **st})
    acts = ("sigmoid", "tanh", "tanh")
    for n in range(N):
        xs = x[n, :, 0, :, 0, 0]
        yf, hf, cf = lstm_ref(xs, *fw, acts, st["hf"][0, 0, 0, :, 0, 0], st["cf"][0, 0, 0, :, 0, 0], clip=500.0,
                              coupled=False, forget_bias=False, reverse=False)
        yb, hb, cb = lstm_ref(xs, *bw, acts, st["hb"][0, 0, 0, :, 0, 0], st["cb"][0, 0, 0, :, 0, 0], clip=500.0,
                              coupled=False, forget_bias=False, reverse=True)
        # proto: output step t is [yf_t, yb_t], yb_t having seen x_S .. x_t
        want = np.concatenate([yf, yb[::-1]], axis=1) if seq else np.concatenate([yf[-1], yb[-1]])[None]
        close(out["y"][n, :, 0, :, 0, 0], want)
        for name, v in (("hf_o", hf), ("cf_o", cf), ("hb_o", hb), ("cb_o", cb)):
            close(out[name][n, 0, 0, :, 0, 0], v)


def gru_ref(x, W, R, b, acts, h0, reverse):
    f, g = (ACTS[a] for a in acts)
    h = h0.astype(np.float64)
    ys = []
    for t in (range(len(x) - 1, -1, -1) if reverse else range(len(x))):
        xt = x[t].astype(np.float64)
        z = f(clip50(W["z"] @ xt + R["z"] @ h + b["z"]))
        r = f(clip50(W["r"] @ xt + R["r"] @ h + b["r"]))
        o = g(clip50(W["o"] @ xt + R["o"] @ (h * r) + b["o"]))
        h = (1.0 - z) * o + z * h
        ys.append(h)
    return np.stack(ys), h


@pytest.mark.parametrize("reverse", [False, True])
def test_gru_matches_step_reference(reverse):
    S, B, X, H = 6, 2, 3, 4
    _, nn = net({}, [])
    p = layer(nn, "gru", "gru", ["x", "h0"], ["y", "h"])
    p.inputVectorSize, p.outputVectorSize, p.sequenceOutput, p.hasBiasVectors, p.reverseInput = X, H, True, True, reverse
    acts = ("sigmoidHard", "tanh")
    for a in acts:
        set_act(p.activations.add(), a)
    names = {"z": "update", "r": "reset", "o": "output"}
    W = {g: f32(H, X) for g in names}
    R = {g: f32(H, H) for g in names}
    b = {g: f32(H) for g in names}
    for g, nm in names.items():
        weights(getattr(p, f"{nm}GateWeightMatrix"), W[g])
        weights(getattr(p, f"{nm}GateRecursionMatrix"), R[g])
        weights(getattr(p, f"{nm}GateBiasVector"), b[g])
    x, h0 = f32(N, S, B, X, 1, 1, low=-2, high=2), f32(N, 1, B, H, 1, 1)
    out = run(nn, {"x": x, "h0": h0})
    for n in range(N):
        for bb in range(B):
            ys, h = gru_ref(x[n, :, bb, :, 0, 0], W, R, b, acts, h0[n, 0, bb, :, 0, 0], reverse)
            close(out["y"][n, :, bb, :, 0, 0], ys)
            close(out["h"][n, 0, bb, :, 0, 0], h)


def test_simple_recurrent_and_missing_initial_state():
    S, X, H = 5, 3, 4
    _, nn = net({}, [])
    p = layer(nn, "simpleRecurrent", "rnn", ["x"], ["y", "h"])
    p.inputVectorSize, p.outputVectorSize, p.sequenceOutput, p.hasBiasVector = X, H, False, True
    set_act(p.activation, "tanh")
    W, R, bias = f32(H, X), f32(H, H), f32(H)
    weights(p.weightMatrix, W), weights(p.recursionMatrix, R), weights(p.biasVector, bias)
    x = f32(N, S, 1, X, 1, 1)
    out = run(nn, {"x": x})
    for n in range(N):
        h = np.zeros(H)
        for t in range(S):
            h = np.tanh(clip50(W @ x[n, t, 0, :, 0, 0] + R @ h + bias))
        close(out["y"][n, 0, 0, :, 0, 0], h)
        close(out["h"][n, 0, 0, :, 0, 0], h)


def test_recurrent_errors_name_the_layer():
    _, nn = net({}, [])
    p = layer(nn, "gru", "my_gru", ["x"], ["y"])
    p.inputVectorSize, p.outputVectorSize = 3, 2
    set_act(p.activations.add(), "sigmoid")
    set_act(p.activations.add(), "ELU")
    with pytest.raises(ExecutorError, match="'my_gru'.*ELU"):
        run(nn, {"x": f32(1, 2, 1, 3, 1, 1)})
    _, nn = net({}, [])
    p = layer(nn, "simpleRecurrent", "my_rnn", ["x"], ["y"])
    p.inputVectorSize, p.outputVectorSize = 3, 2
    set_act(p.activation, "tanh")
    weights(p.weightMatrix, f32(2, 3)), weights(p.recursionMatrix, f32(2, 2))
    with pytest.raises(ExecutorError, match=r"'my_rnn'.*\(Seq, Batch, 3, 1, 1\)"):
        run(nn, {"x": f32(1, 2, 4)})


# =============================================================================
# Control flow
# =============================================================================

def _const(nn, name, value, shape=(1,)):
    p = layer(nn, "loadConstantND", name, [], [name])
    p.shape.extend(shape)
    weights(p.data, np.full(shape, value, np.float32))


def test_for_loop_runs_max_iterations_over_outer_blobs():
    _, nn = net({}, [])
    lp = layer(nn, "loop", "lp", [], [])
    lp.maxLoopIterations = 4
    body = lp.bodyNetwork
    layer(body, "multiply", "dbl", ["acc"], ["acc2"]).alpha = 2.0
    layer(body, "copy", "back", ["acc2"], ["acc"])
    x = f32(N, 2, 3)
    out = run(nn, {"acc": x})
    close(out["acc"], x * 16)


def _counting_while(nn, limit_blob: str):
    """while i < limit: acc += x; i += 1   (i starts at 0; the converter's pattern)."""
    _const(nn, "zero", 0.0)
    layer(nn, "copy", "init_i", ["zero"], ["i"])
    layer(nn, "copy", "init_acc", ["x"], ["acc"])
    lp = layer(nn, "loop", "while", [], [])
    lp.conditionVar = "go"
    layer(lp.conditionNetwork, "lessThan", "cmp", ["i", limit_blob], ["go"])
    layer(lp.bodyNetwork, "add", "acc_add", ["acc", "x"], ["acc_new"])
    layer(lp.bodyNetwork, "add", "inc", ["i"], ["i_new"]).alpha = 1.0
    layer(lp.bodyNetwork, "copy", "c1", ["acc_new"], ["acc"])
    layer(lp.bodyNetwork, "copy", "c2", ["i_new"], ["i"])


def test_while_loop_with_uniform_condition():
    _, nn = net({}, [])
    _const(nn, "limit", 3.0)
    _counting_while(nn, "limit")
    x = f32(N, 4)
    out = run(nn, {"x": x})
    close(out["acc"], 4 * x)
    assert out["i"].reshape(-1).tolist() == [3.0]


def test_while_loop_with_per_sample_condition_masks_finished_samples():
    _, nn = net({}, [])
    _counting_while(nn, "limit")
    x = f32(4, 2)
    limit = np.array([[0.0], [1.0], [3.0], [2.0]], np.float32)
    out = run(nn, {"x": x, "limit": limit})
    close(out["acc"], x * (1 + limit))
    close(out["i"], limit)
    for n in range(4):  # batched == per sample
        single = run(nn, {"x": x[n:n + 1], "limit": limit[n:n + 1]})
        close(single["acc"], out["acc"][n:n + 1], 1e-6)


def test_loop_count_from_input_and_joint_condition():
    _, nn = net({}, [])
    _counting_while(nn, "limit")
    nn.layers[-1].input.append("count")  # joint: while i < limit and iteration < count
    x = f32(3, 2)
    limit = np.full((3, 1), 5.0, np.float32)
    count = np.array([[1.0], [2.0], [9.0]], np.float32)
    out = run(nn, {"x": x, "limit": limit, "count": count})
    close(out["acc"], x * (1 + np.minimum(count, limit)))


def test_loop_break_and_continue_in_uniform_branch():
    # for it in range(10): i += 1; if i >= 3: break   -> i == 3
    _, nn = net({}, [])
    _const(nn, "zero", 0.0)
    layer(nn, "copy", "init", ["zero"], ["i"])
    lp = layer(nn, "loop", "lp", [], [])
    lp.maxLoopIterations = 10
    layer(lp.bodyNetwork, "add", "inc", ["i"], ["i1"]).alpha = 1.0
    layer(lp.bodyNetwork, "copy", "c", ["i1"], ["i"])
    layer(lp.bodyNetwork, "greaterEqual", "ge", ["i"], ["stop"]).alpha = 3.0
    br = layer(lp.bodyNetwork, "branch", "br", ["stop"], [])
    layer(br.ifBranch, "loopBreak", "brk", [], [])
    out = run(nn, {"x": f32(N, 1)})
    assert out["i"].reshape(-1).tolist() == [3.0]

    # continue skips the rest of the body: acc counts only iterations where i > 2
    _, nn = net({}, [])
    _const(nn, "zero", 0.0)
    layer(nn, "copy", "init_i", ["zero"], ["i"])
    layer(nn, "copy", "init_acc", ["zero"], ["acc"])
    lp = layer(nn, "loop", "lp", [], [])
    lp.maxLoopIterations = 5
    body = lp.bodyNetwork
    layer(body, "add", "inc", ["i"], ["i1"]).alpha = 1.0
    layer(body, "copy", "c", ["i1"], ["i"])
    layer(body, "lessEqual", "le", ["i"], ["skip"]).alpha = 2.0
    br = layer(body, "branch", "br", ["skip"], [])
    layer(br.ifBranch, "loopContinue", "cont", [], [])
    layer(body, "add", "acc_inc", ["acc"], ["acc1"]).alpha = 1.0
    layer(body, "copy", "c2", ["acc1"], ["acc"])
    out = run(nn, {})
    assert out["i"].reshape(-1).tolist() == [5.0] and out["acc"].reshape(-1).tolist() == [3.0]


def test_loop_break_outside_a_loop_is_an_error():
    _, nn = net({}, [])
    layer(nn, "loopBreak", "stray_break", [], [])
    with pytest.raises(ExecutorError, match="'stray_break'.*outside"):
        run(nn, {})


def _branch_net():
    _, nn = net({}, [])
    br = layer(nn, "branch", "br", ["cond"], [])
    layer(br.ifBranch, "multiply", "m", ["x"], ["y"]).alpha = 2.0
    layer(br.elseBranch, "add", "a", ["x"], ["y"]).alpha = 10.0
    return nn


def test_branch_uniform_and_per_sample_conditions():
    nn = _branch_net()
    x = f32(4, 3)
    close(run(nn, {"x": x, "cond": np.ones((1, 1))})["y"], 2 * x)
    close(run(nn, {"x": x, "cond": np.zeros((1, 1))})["y"], x + 10)
    cond = np.array([[1.0], [0.0], [1e-7], [-3.0]], np.float32)  # |c| <= 1e-6 is False
    got = run(nn, {"x": x, "cond": cond})["y"]
    close(got, np.where(np.abs(cond) > 1e-6, 2 * x, x + 10))


def test_branch_condition_must_be_scalar():
    nn = _branch_net()
    with pytest.raises(ExecutorError, match="'br'.*scalar"):
        run(nn, {"x": f32(2, 3), "cond": np.ones((2, 2))})


# =============================================================================
# Embeddings
# =============================================================================

def test_embedding_nd_float_and_int32_ids_through_the_executor():
    V, E = 7, 4
    W, b = f32(E, V), f32(E)
    for dtype in (None, INT32):
        spec, nn = net({"ids": (1, 5)}, ["y"], dtypes={"ids": dtype} if dtype else None)
        layer(nn, "expandDims", "ex", ["ids"], ["ids3"]).axes.append(-1)
        p = layer(nn, "embeddingND", "emb", ["ids3"], ["y"])
        p.vocabSize, p.embeddingSize, p.hasBias = V, E, True
        weights(p.weights, W), weights(p.bias, b)
        ids = RNG.integers(0, V, size=(N, 5))
        feed = ids.astype(np.int32) if dtype else ids.astype(np.float32)
        got = NumpyExecutor(spec).predict({"ids": feed})["y"]
        close(got, W.T[ids] + b)
        with pytest.raises(ExecutorError, match=r"'emb'.*\[7\].*0\.\.6"):
            NumpyExecutor(spec).predict({"ids": np.full((1, 5), 7, feed.dtype)})


def test_legacy_embedding_rank5():
    V, C = 6, 3
    _, nn = net({}, [])
    p = layer(nn, "embedding", "emb", ["ids"], ["y"])
    p.inputDim, p.outputChannels = V, C
    W = f32(C, V)
    weights(p.weights, W)
    ids = RNG.integers(0, V, size=(N, 4, 1, 1, 1, 1)).astype(np.float32)  # (N, S, B, 1, 1, 1)
    y = run(nn, {"ids": ids}, legacy=True)["y"]
    close(y, W.T[ids[:, :, 0, 0, 0, 0].astype(int)][:, :, None, :, None, None])


# =============================================================================
# ND tensor manipulation
# =============================================================================

def test_transpose_expand_squeeze():
    x = f32(N, 2, 3, 4)
    close(one("transpose", {"x": x}, lambda p: p.axes.extend([2, 0, 1]))["y"], x.transpose(0, 3, 1, 2))
    close(one("expandDims", {"x": x}, lambda p: p.axes.extend([0, -1]))["y"], x.reshape(N, 1, 2, 3, 4, 1))
    z = f32(N, 1, 3, 1)
    close(one("squeeze", {"x": z}, lambda p: p.axes.extend([-1]))["y"], z.reshape(N, 1, 3))
    close(one("squeeze", {"x": z}, lambda p: setattr(p, "squeezeAll", True))["y"], z.reshape(N, 3))
    close(one("squeeze", {"x": f32(N, 1)}, lambda p: p.axes.append(0))["y"].shape, (N, 1))
    with pytest.raises(ExecutorError, match="'squeeze'.*size is not 1"):
        one("squeeze", {"x": z}, lambda p: p.axes.append(1))


def test_slice_static_dynamic_by_size_and_legacy():
    x = f32(N, 4, 6, 5)

    def static(p):
        p.beginIds.extend([1, 0, -1]), p.endIds.extend([3, 0, 0]), p.strides.extend([1, 2, -2])
        p.beginMasks.extend([False, True, False]), p.endMasks.extend([False, True, True])
        p.squeezeMasks.extend([False, False, False])

    close(one("sliceStatic", {"x": x}, static)["y"], x[:, 1:3, ::2, ::-2])

    def squeeze(p):
        p.beginIds.extend([2, 0, 0]), p.endIds.extend([3, 6, 5]), p.strides.extend([1, 1, 1])
        p.squeezeMasks.extend([True, False, False])

    close(one("sliceStatic", {"x": x}, squeeze)["y"], x[:, 2])
    begin = np.array([[0, 1, 2]], np.float32)
    end = np.array([[4, 5, 5]], np.float32)
    close(one("sliceDynamic", {"x": x, "b": begin, "e": end}, lambda p: p.strides.extend([2, 1, 1]))["y"],
          x[:, 0:4:2, 1:5, 2:5])
    starts = np.array([[0], [2], [1]], np.float32)  # a different begin per sample

    def by_size(p):
        p.size, p.axis = 3, -1

    got = one("sliceBySize", {"x": x, "b": starts}, by_size)["y"]
    close(got, np.stack([x[n, :, :, int(starts[n, 0]):int(starts[n, 0]) + 3] for n in range(N)]))

    def legacy(p):
        p.startIndex, p.endIndex, p.stride, p.axis = 1, -1, 2, 0  # CHANNEL = axis -3

    close(one("slice", {"x": x}, legacy)["y"], x[:, 1:-1:2])


def test_split_concat_stack_tile():
    x = f32(N, 2, 7)
    ys = one("splitND", {"x": x}, lambda p: (setattr(p, "axis", -1), p.splitSizes.extend([2, 4, 1])),
             outputs=("a", "b", "c"))
    for k, part in zip("abc", np.split(x, [2, 6], axis=2)):
        close(ys[k], part)
    ys = one("splitND", {"x": f32(N, 4, 2)}, lambda p: setattr(p, "numSplits", 2), outputs=("a", "b"))
    assert ys["a"].shape == ys["b"].shape == (N, 2, 2)
    a, k = f32(N, 2, 3), f32(1, 2, 1)  # k is a constant: sample axis 1
    close(one("concatND", {"a": a, "k": k}, lambda p: setattr(p, "axis", -1))["y"],
          np.concatenate([a, np.broadcast_to(k, (N, 2, 1))], axis=2))
    b = f32(N, 2, 3)
    inter = one("concatND", {"a": a, "b": b}, lambda p: (setattr(p, "axis", 1), setattr(p, "interleave", True)))["y"]
    close(inter[:, :, 0::2], a)
    close(inter[:, :, 1::2], b)
    close(one("stack", {"a": a, "b": b}, lambda p: setattr(p, "axis", -1))["y"], np.stack([a, b], axis=-1))
    close(one("tile", {"x": a}, lambda p: p.reps.extend([2, 1]))["y"], np.tile(a, (1, 2, 1)))


def test_gather_family_per_sample_indices():
    data = f32(N, 5, 3)
    idx = np.array([[4, 0], [1, -1], [2, 2]], np.float32)  # per-sample, negative wraps
    got = one("gather", {"d": data, "i": idx}, lambda p: setattr(p, "axis", 0))["y"]
    close(got, np.stack([data[n][idx[n].astype(int)] for n in range(N)]))
    table = f32(1, 5, 3)  # constant data, per-sample ids (an embedding done with gather)
    close(one("gather", {"d": table, "i": idx}, lambda p: setattr(p, "axis", 0))["y"],
          np.stack([table[0][idx[n].astype(int)] for n in range(N)]))
    close(one("gather", {"d": data, "i": np.array([[2.0]])}, lambda p: setattr(p, "axis", 1))["y"],
          data[:, :, [2]])
    with pytest.raises(ExecutorError, match="'gather'.*out of range"):
        one("gather", {"d": data, "i": np.array([[5.0]])})
    nd_idx = np.array([[[0, 1], [4, 2]]] * N, np.float32)
    close(one("gatherND", {"d": data, "i": nd_idx})["y"], data[:, [0, 4], [1, 2]])
    ga = RNG.integers(0, 5, size=(N, 2, 3)).astype(np.float32)
    close(one("gatherAlongAxis", {"d": data, "i": ga}, lambda p: setattr(p, "axis", 0))["y"],
          np.take_along_axis(data, ga.astype(int), axis=1))


def test_scatter_into_a_one_sample_container_is_c_ordered_and_gathers_back():
    """The converter's GRU loop scatters each step's state (one per sample) into a buffer that starts as a
    constant (one sample): the copy is C-ordered (np.array's order K would keep the broadcast sample axis
    innermost, and every later gather would pay for it), and what the next step gathers is what was written."""
    data = f32(1, 5, 1, 3)  # a constant: sample axis 1
    upd = f32(N, 1, 1, 3)
    got = one("scatter", {"d": data, "i": np.array([[2.0]]), "u": upd},
              lambda p: (setattr(p, "axis", 0), setattr(p, "mode", 0)))["y"]
    assert got.shape == (N, 5, 1, 3) and got.flags.c_contiguous
    want = np.repeat(data, N, axis=0)
    want[:, 2] = upd[:, 0]
    assert np.array_equal(got, want)
    back = one("gather", {"d": got, "i": np.array([[2.0]])}, lambda p: setattr(p, "axis", 0))["y"]
    assert np.array_equal(back, upd)


def test_scatter_family_modes():
    data = f32(N, 4, 2)
    idx = np.array([[1, 3, 1]], np.float32)  # repeated index accumulates
    upd = f32(N, 3, 2)

    def mode(m, axis=0):
        return lambda p: (setattr(p, "axis", axis), setattr(p, "mode", m))

    got = one("scatter", {"d": data, "i": idx, "u": upd}, mode(1))["y"]  # SCATTER_ADD
    want = data.astype(np.float64).copy()
    for n in range(N):
        for j, t in enumerate(idx[0].astype(int)):
            want[n, t] += upd[n, j]
    close(got, want)
    got = one("scatter", {"d": data, "i": np.array([[2.0]]), "u": f32(N, 1, 2)}, mode(0))["y"]  # UPDATE
    assert np.array_equal(got[:, [0, 1, 3]], data[:, [0, 1, 3]])
    col = f32(N, 4, 1)
    got = one("scatter", {"d": data, "i": np.array([[0.0]]), "u": col}, mode(5, axis=1))["y"]  # MAX on axis 1
    close(got[:, :, 0], np.maximum(data[:, :, 0], col[:, :, 0]))
    close(got[:, :, 1], data[:, :, 1])
    nd_idx = np.array([[[0, 1], [3, 0]]], np.float32)
    nd_upd = f32(N, 2)
    got = one("scatterND", {"d": data, "i": nd_idx, "u": nd_upd}, lambda p: setattr(p, "mode", 3))["y"]  # MUL
    want = data.copy()
    want[:, 0, 1] *= nd_upd[:, 0]
    want[:, 3, 0] *= nd_upd[:, 1]
    close(got, want)
    ai = RNG.integers(0, 4, size=(N, 1, 2)).astype(np.float32)
    au = f32(N, 1, 2)
    got = one("scatterAlongAxis", {"d": data, "i": ai, "u": au}, mode(0))["y"]
    want = data.copy()
    np.put_along_axis(want, ai.astype(int), au, axis=1)
    close(got, want)


def test_reshapes_broadcasts_fills_ranges_shapes():
    x = f32(N, 2, 6)
    shape = np.array([[3, 4]], np.float32)
    close(one("reshapeDynamic", {"x": x, "s": shape})["y"], x.reshape(N, 3, 4))
    close(one("reshapeLike", {"x": x, "r": f32(1, 4, 3)})["y"], x.reshape(N, 4, 3))
    close(one("rankPreservingReshape", {"x": x}, lambda p: p.targetShape.extend([0, -1]))["y"], x)
    close(one("rankPreservingReshape", {"x": x}, lambda p: p.targetShape.extend([4, -1]))["y"], x.reshape(N, 4, 3))
    close(one("flattenTo2D", {"x": f32(N, 2, 3, 4)}, lambda p: setattr(p, "axis", -1))["y"].shape, (N, 6, 4))
    v = f32(N, 3, 1)
    close(one("broadcastToStatic", {"x": v}, lambda p: p.targetShape.extend([2, 3, 5]))["y"],
          np.broadcast_to(v[:, None], (N, 2, 3, 5)))
    close(one("broadcastToLike", {"x": v, "r": f32(1, 3, 4)})["y"], np.broadcast_to(v, (N, 3, 4)))
    close(one("broadcastToDynamic", {"x": v, "s": np.array([[3, 2]], np.float32)})["y"],
          np.broadcast_to(v, (N, 3, 2)))
    close(one("getShape", {"x": x})["y"], [[2, 6]])
    close(one("fillLike", {"x": x}, lambda p: setattr(p, "value", 2.5))["y"], np.full((1, 2, 6), 2.5))
    close(one("fillStatic", {}, lambda p: (setattr(p, "value", -1.0), p.targetShape.extend([2, 2])))["y"],
          np.full((1, 2, 2), -1.0))
    close(one("fillDynamic", {"s": shape}, lambda p: setattr(p, "value", 3.0))["y"], np.full((1, 3, 4), 3.0))

    def rng_static(p):
        p.startValue, p.endValue, p.stepSizeValue = 1.0, 2.0, 0.25

    close(one("rangeStatic", {}, rng_static)["y"], [np.arange(1.0, 2.0, 0.25)])
    close(one("rangeDynamic", {"e": np.array([[7.0]]), "s": np.array([[1.0]])},
              lambda p: setattr(p, "stepSizeValue", 2.0))["y"], [[1, 3, 5]])
    with pytest.raises(ExecutorError, match="'reshapeDynamic'.*differs between the samples"):
        one("reshapeDynamic", {"x": f32(2, 12), "s": np.array([[3, 4], [4, 3]], np.float32)})


def test_index_valued_ops():
    x = f32(N, 4, 5)
    close(one("argMax", {"x": x}, lambda p: setattr(p, "axis", -1))["y"], np.argmax(x, axis=2)[:, :, None])
    close(one("argMin", {"x": x}, lambda p: (setattr(p, "axis", 0), setattr(p, "removeDim", True)))["y"],
          np.argmin(x, axis=1))
    close(one("argSort", {"x": x}, lambda p: (setattr(p, "axis", 1), setattr(p, "descending", True)))["y"],
          np.argsort(-x, axis=2))
    r = one("topK", {"x": x}, lambda p: (setattr(p, "axis", -1), setattr(p, "K", 2)), outputs=("v", "i"))
    order = np.argsort(-x, axis=2)[:, :, :2]
    close(r["i"], order)
    close(r["v"], np.take_along_axis(x, order, axis=2))
    rb = one("topK", {"x": x, "k": np.array([[3.0]])}, lambda p: (setattr(p, "axis", -1), setattr(p, "useBottomK", True)),
             outputs=("v", "i"))
    close(rb["v"], np.sort(x, axis=2)[:, :, :3])
    ids = np.array([[0, 2], [1, 1], [3, 0]], np.float32)

    def oh(p):
        p.oneHotVectorSize, p.axis, p.onValue, p.offValue = 4, -1, 5.0, -1.0

    close(one("oneHot", {"i": ids}, oh)["y"], np.where(np.eye(4)[ids.astype(int)] > 0, 5.0, -1.0))
    close(one("cumSum", {"x": x}, lambda p: setattr(p, "axis", 1))["y"], np.cumsum(x, axis=2))

    def excl_rev(p):
        p.axis, p.excludeFinalSum, p.reverse = 0, True, True

    close(one("cumSum", {"x": x}, excl_rev)["y"], np.flip(np.cumsum(np.flip(x, 1), axis=1), 1) - x)
    m = np.array([[1, 0, 2], [0, 0, 3]], np.float32)[None].repeat(2, 0)
    close(one("whereNonZero", {"x": m})["y"], np.broadcast_to(np.argwhere(m[0]), (2, 3, 2)))


def test_masks_reverse_windows():
    x = f32(N, 4, 4)
    close(one("lowerTriangular", {"x": x}, lambda p: setattr(p, "k", -1))["y"], np.tril(x, -1))
    close(one("upperTriangular", {"x": x}, lambda p: setattr(p, "k", 1))["y"], np.triu(x, 1))
    close(one("matrixBandPart", {"x": x}, lambda p: (setattr(p, "numLower", 1), setattr(p, "numUpper", 0)))["y"],
          np.triu(np.tril(x, 0), -1))
    close(one("reverse", {"x": x}, lambda p: p.reverseDim.extend([False, True]))["y"], x[:, :, ::-1])
    lens = np.array([[2, 4, 0, 1]], np.float32)  # per batch row (axis 0), reverse along axis 1
    got = one("reverseSeq", {"x": x, "l": lens}, lambda p: (setattr(p, "batchAxis", 0), setattr(p, "sequenceAxis", 1)))["y"]
    want = x.copy()
    for bb, L in enumerate(lens[0].astype(int)):
        want[:, bb, :L] = x[:, bb, :L][:, ::-1]
    close(got, want)
    s = f32(N, 7, 2)
    got = one("slidingWindows", {"x": s}, lambda p: (setattr(p, "axis", 0), setattr(p, "windowSize", 3),
                                                     setattr(p, "step", 2)))["y"]
    close(got, np.stack([s[:, i:i + 3] for i in (0, 2, 4)], axis=1))


# =============================================================================
# Comparisons, logic, unary math, reductions, normalization, matmul
# =============================================================================

def test_comparisons_logical_where():
    a, b = f32(N, 2, 3), f32(1, 3)  # b: a constant of lower rank, broadcast right-aligned
    b[0, 0] = a[0, 0, 0]  # an exact tie
    fns = {"equal": np.equal, "notEqual": np.not_equal, "lessThan": np.less, "lessEqual": np.less_equal,
           "greaterThan": np.greater, "greaterEqual": np.greater_equal}
    for kind, fn in fns.items():
        close(one(kind, {"a": a, "b": b})["y"], fn(a, b[:, None]).astype(np.float32))
        close(one(kind, {"a": a}, lambda p: setattr(p, "alpha", 0.25))["y"], fn(a, np.float32(0.25)))
    p, q = (RNG.random((N, 5)) > 0.5).astype(np.float32) * 3, (RNG.random((N, 5)) > 0.5).astype(np.float32)
    close(one("logicalAnd", {"p": p, "q": q})["y"], np.logical_and(p, q))
    close(one("logicalOr", {"p": p, "q": q})["y"], np.logical_or(p, q))
    close(one("logicalXor", {"p": p, "q": q})["y"], np.logical_xor(p, q))
    close(one("logicalNot", {"p": p})["y"], p == 0)
    close(one("whereBroadcastable", {"c": p, "a": a[:, :1, :1], "b": f32(1, 1)})["y"].shape, (N, 1, 5))


def test_unary_nd_family_and_gelu():
    x = f32(N, 4, 6, low=-3, high=3)
    u = f32(N, 4, 6, low=-0.9, high=0.9)
    refs = {"ceil": np.ceil, "floor": np.floor, "round": np.round, "sign": np.sign, "exp2": np.exp2,
            "sin": np.sin, "cos": np.cos, "tan": np.tan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
            "asinh": np.arcsinh, "atan": np.arctan}
    for kind, fn in refs.items():
        close(one(kind, {"x": x})["y"], fn(x.astype(np.float64)))
    for kind, fn in {"asin": np.arcsin, "acos": np.arccos, "atanh": np.arctanh}.items():
        close(one(kind, {"x": u})["y"], fn(u.astype(np.float64)))
    close(one("acosh", {"x": x + 4})["y"], np.arccosh(x.astype(np.float64) + 4))
    erf = np.vectorize(math.erf)
    xd = x.astype(np.float64)
    close(one("erf", {"x": x})["y"], erf(xd))
    gelu_refs = {
        0: 0.5 * xd * (1 + erf(xd / math.sqrt(2))),
        1: 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd ** 3))),
        2: xd / (1 + np.exp(-1.702 * xd)),
    }
    for mode, ref in gelu_refs.items():
        close(one("gelu", {"x": x}, lambda p: setattr(p, "mode", mode))["y"], ref)
    close(one("clampedReLU", {"x": x}, lambda p: (setattr(p, "alpha", 0.1), setattr(p, "beta", 2.0)))["y"],
          np.minimum(np.where(xd >= 0, xd, 0.1 * xd), 2.0))


REDUCE_REFS = {
    "reduceSum": np.sum, "reduceMean": np.mean, "reduceProd": np.prod, "reduceMax": np.max, "reduceMin": np.min,
    "reduceL1": lambda v, **k: np.sum(np.abs(v), **k),
    "reduceL2": lambda v, **k: np.sqrt(np.sum(v * v, **k)),
    "reduceSumSquare": lambda v, **k: np.sum(v * v, **k),
    "reduceLogSum": lambda v, **k: np.log(np.sum(v, **k)),
    "reduceLogSumExp": lambda v, **k: np.log(np.sum(np.exp(v), **k)),
}


@pytest.mark.parametrize("kind", list(REDUCE_REFS))
def test_reduce_nd(kind):
    x = f32(N, 2, 3, 4, low=0.5, high=1.5)
    xd, fn = x.astype(np.float64), REDUCE_REFS[kind]
    close(one(kind, {"x": x}, lambda p: (p.axes.extend([-1, 0]), setattr(p, "keepDims", True)))["y"],
          fn(xd, axis=(1, 3), keepdims=True))
    close(one(kind, {"x": x}, lambda p: p.axes.append(1))["y"], fn(xd, axis=2))
    close(one(kind, {"x": x}, lambda p: setattr(p, "reduceAll", True))["y"], fn(xd, axis=(1, 2, 3)).reshape(N, 1))


def test_mvn_and_layer_normalization():
    x = f32(N, 2, 3, 4, low=-2, high=2)
    xd = x.astype(np.float64)

    def norm(v, axes, eps):
        d = v - v.mean(axis=axes, keepdims=True)
        return d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + eps)

    close(one("mvn", {"x": x}, lambda p: (setattr(p, "normalizeVariance", True), setattr(p, "epsilon", 1e-5)))["y"],
          norm(xd, (2, 3), 1e-5), 1e-4)
    close(one("mvn", {"x": x}, lambda p: (setattr(p, "acrossChannels", True), setattr(p, "normalizeVariance", True)))["y"],
          norm(xd, (1, 2, 3), 1e-6), 1e-4)
    close(one("mvn", {"x": x})["y"], xd - xd.mean(axis=(2, 3), keepdims=True))
    g, b = f32(3, 4), f32(3, 4)

    def ln(p):
        p.normalizedShape.extend([3, 4])
        p.eps = 1e-3
        weights(p.gamma, g), weights(p.beta, b)

    close(one("layerNormalization", {"x": x}, ln)["y"], norm(xd, (2, 3), 1e-3) * g + b, 1e-4)


def test_batched_matmul_two_inputs_broadcasting_and_transposes():
    a, b = f32(N, 2, 1, 3, 4), f32(1, 5, 4, 2)  # batch dims (2, 1) x (5,) broadcast to (2, 5)
    close(one("batchedMatmul", {"a": a, "b": b})["y"], np.matmul(a, b[:, None]))
    at, bt = f32(N, 4, 3), f32(N, 2, 4)
    close(one("batchedMatmul", {"a": at, "b": bt}, lambda p: (setattr(p, "transposeA", True),
                                                            setattr(p, "transposeB", True)))["y"],
          np.matmul(at.transpose(0, 2, 1), bt.transpose(0, 2, 1)))
    v, m = f32(N, 4), f32(N, 4, 3)  # rank-1 a -> (1, 4): output keeps rank 2
    close(one("batchedMatmul", {"a": v, "b": m})["y"], np.matmul(v[:, None], m))
    close(one("batchedMatmul", {"a": m.transpose(0, 2, 1), "b": v})["y"], np.matmul(m.transpose(0, 2, 1), v[:, :, None]))


def test_batched_matmul_weights_follow_coremltools_storage():
    """One input: W is [X1, X2] stored column-major; use coremltools' own builder to store it."""
    from quantizer.coremltools_quiet import coremltools

    coremltools()  # imports coremltools quietly
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    X1, X2 = 5, 3
    W, bias = f32(X1, X2), f32(X2)
    builder = NeuralNetworkBuilder([("x", datatypes.Array(2, X1))], [("y", None)], disable_rank5_shape_mapping=True)
    builder.add_batched_mat_mul("bmm", ["x"], "y", weight_matrix_rows=X1, weight_matrix_columns=X2, W=W, bias=bias)
    x = f32(N, 2, X1)
    got = NumpyExecutor(builder.spec).predict({"x": x})["y"]
    close(got, x @ W + bias)
    # 8-bit linear quantized weights (builder stores W.T flattened; per-X2-channel scale)
    q = RNG.integers(0, 256, size=(X1, X2)).astype(np.uint8)
    scale, qbias = f32(X2, low=0.01, high=0.1), f32(X2)
    builder = NeuralNetworkBuilder([("x", datatypes.Array(2, X1))], [("y", None)], disable_rank5_shape_mapping=True)
    builder.add_batched_mat_mul("bmm", ["x"], "y", weight_matrix_rows=X1, weight_matrix_columns=X2, W=q.tobytes(),
                                is_quantized_weight=True, quantization_type="linear", nbits=8,
                                quant_scale=scale, quant_bias=qbias)
    got = NumpyExecutor(builder.spec).predict({"x": x})["y"]
    close(got, x @ (q * scale + qbias), 1e-4)


def test_load_constant_nd_broadcasts_against_samples():
    _, nn = net({}, [])
    _const(nn, "k", 2.0, shape=(1, 3))
    layer(nn, "addBroadcastable", "add", ["x", "k"], ["y"])
    x = f32(N, 1, 3)
    out = run(nn, {"x": x})
    assert out["k"].shape == (1, 1, 3)
    close(out["y"], x + 2)


def test_constant_pad_amounts_and_output_size_mode():
    x = f32(N, 2, 3)

    def amounts(p):
        p.value = -2.0
        p.padAmounts.extend([1, 0, 2, 1])

    close(one("constantPad", {"x": x}, amounts)["y"], np.pad(x, [(0, 0), (1, 0), (2, 1)], constant_values=-2.0))

    def to_size(p):
        p.padToGivenOutputSizeMode = True
        p.padAmounts.extend([0, 4, 5, 0])  # axis 0: after, to size 4; axis 1: before, to size 5

    close(one("constantPad", {"x": x}, to_size)["y"], np.pad(x, [(0, 0), (0, 2), (2, 0)]))
    close(one("constantPad", {"x": x, "p": np.array([[0, 1, 1, 0]], np.float32)})["y"],
          np.pad(x, [(0, 0), (0, 1), (1, 0)]))
