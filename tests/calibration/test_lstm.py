"""LSTM gate matrices under calibration-aware quantization: the step-input and hidden-state statistics checked
against the executor's own per-step values, GPTQ on the gates vs round-to-nearest on a real LSTM
(silero_vad_8k), bias correction of the gate biases, records, digests and plain files."""
import numpy as np
import pytest

import quantizer
from harness import zoo
from harness.calibration import collect_stats, stats_layers
from harness.executors.numpy_executor import NumpyExecutor
from quantizer.algorithms.support import applied_algorithms, stats_key
from quantizer.tensors import layer_weights
from tests.nn_models import LAYER_MODELS

GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


def _w(layer, field):
    wp, shape, axis = layer_weights(layer)[field]
    return quantizer.decode_weights(wp, shape, axis).astype(np.float64)


def _check(st, rows):
    rows = rows.astype(np.float64)
    assert st.rows == rows.shape[0] and st.groups == 1 and st.block is None
    np.testing.assert_allclose(st.gram[0], rows.T @ rows, rtol=2e-4, atol=1e-3)
    np.testing.assert_allclose(st.mean[0], rows.mean(axis=0), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def silero():
    spec, test = zoo.load("silero_vad_8k")
    feeds = {k: v[:512:2] for k, v in test.feeds.items()}  # calibration samples (1024 steps)
    held = {k: v[1:385:2] for k, v in test.feeds.items()}  # other samples, for the output error
    return spec, feeds, held, collect_stats(spec, feeds, batch_size=16)


def _lstm(spec):
    return next(layer for layer in spec.neuralNetwork.layers if layer.WhichOneof("layer") == "uniDirectionalLSTM")


def test_unidirectional_statistics_are_the_executors_step_inputs_and_hidden_states(silero):
    """W_* see x_t at every step of every sample; R_* see h_{t-1} (h_0, then the layer's own outputs y_0..y_{S-2})."""
    spec, feeds, _, stats = silero
    layer = _lstm(spec)
    assert layer.uniDirectionalLSTM.params.sequenceOutput
    blobs = NumpyExecutor(spec).trace(feeds)
    x = blobs[layer.input[0]]  # (N, S, B, X, 1, 1)
    y = blobs[layer.output[0]]  # (N, S, B, H, 1, 1): h_t of every step
    h0 = np.broadcast_to(blobs[layer.input[1]], (y.shape[0], 1) + y.shape[2:])
    assert x.shape[1] > 1  # several steps per sample
    hs = int(layer.uniDirectionalLSTM.outputVectorSize)
    _check(stats[stats_key(layer.name, "weightParams.forgetGateWeightMatrix")], x.reshape(-1, x.shape[3]))
    _check(stats[stats_key(layer.name, "weightParams.blockInputRecursionMatrix")],
           np.concatenate([h0, y[:, :-1]], axis=1).reshape(-1, hs))
    targets, _ = stats_layers(spec)
    lstm = next(t for t in targets if t.name == layer.name)
    assert lstm.keys == [f"{layer.name}|weightParams.x", f"{layer.name}|weightParams.h"]


def test_bidirectional_statistics_per_direction():
    """Forward R_* see h_0, yf_0..yf_{S-2}; backward R_* see h_0, yb_{S-1}..yb_1 (the backward outputs are aligned
    with the input steps); both directions' W_* see every x_t."""
    spec = LAYER_MODELS["biDirectionalLSTM"]()
    layer = spec.neuralNetwork.layers[0]
    layer.biDirectionalLSTM.params.sequenceOutput = True
    rng = np.random.default_rng(3)
    feeds = {"data": rng.normal(size=(9, 6, 3)).astype(np.float32) + 0.2}  # 9 sequences of 6 steps
    stats = collect_stats(spec, feeds, batch_size=4)
    assert sorted(stats) == sorted(f"{layer.name}|weightParams.{d}.{p}" for d in (0, 1) for p in "xh")
    blobs = NumpyExecutor(spec).trace(feeds)
    y = blobs[layer.output[0]][:, :, 0, :, 0, 0]  # (N, S, 2H)
    hs = y.shape[-1] // 2
    zero = np.zeros((y.shape[0], 1, hs), np.float32)
    fwd = np.concatenate([zero, y[:, :-1, :hs]], axis=1)
    bwd = np.concatenate([zero, y[:, 1:, hs:]], axis=1)
    for d, h in ((0, fwd), (1, bwd)):
        _check(stats[stats_key(layer.name, f"weightParams.{d}.inputGateWeightMatrix")], feeds["data"].reshape(-1, 3))
        _check(stats[stats_key(layer.name, f"weightParams.{d}.outputGateRecursionMatrix")], h.reshape(-1, hs))


def _output_error(spec, plan, held, ref):
    out = NumpyExecutor(quantizer.apply_plan(spec, plan)).predict(held)
    return sum(float(np.sum((out[k].astype(np.float64) - ref[k]) ** 2)) for k in ref)


@pytest.mark.parametrize("nbits", [4, 3])
def test_gptq_on_the_gates_lowers_the_output_error_on_a_real_lstm(silero, nbits):
    """silero_vad_8k with only its LSTM quantized: GPTQ (alone, and with an explicit gate bias correction) gives a
    lower output error than round-to-nearest on samples not used for calibration."""
    spec, _, held, stats = silero
    name = _lstm(spec).name
    ref = NumpyExecutor(spec).predict(held)

    def lstm_only(**kw):
        plan = quantizer.build_plan(spec, nbits, "linear", calibration=stats, **kw)
        return quantizer.QuantPlan({k: c for k, c in plan.items() if k[0] == name})

    rtn = _output_error(spec, lstm_only(), held, ref)
    gptq = _output_error(spec, lstm_only(algorithm="gptq"), held, ref)
    gptq_bc = _output_error(spec, _gate_bc_plan(spec, lstm_only(algorithm="gptq"), stats, name), held, ref)
    assert gptq < 0.8 * rtn and gptq_bc < 0.8 * rtn, (rtn, gptq, gptq_bc)


def _gate_bc_plan(spec, plan, stats, name):
    """``plan`` with every gate matrix of LSTM ``name`` given an explicit bias-correcting GPTQ codec (a plan-wide
    bias_correction leaves the gates uncorrected) and the gate biases left out, as selection does."""
    out = {}
    for (lay, field), c in plan.items():
        if lay == name and field.endswith("BiasVector"):
            continue
        if lay == name and field.endswith(("WeightMatrix", "RecursionMatrix")):
            c = quantizer.Codec(c.mode, c.nbits, algorithm="gptq", bias_correction=True,
                                stats=stats[stats_key(name, field)])
        out[(lay, field)] = c
    return quantizer.QuantPlan(out)


def test_gate_records_digests_and_bias_correction(silero):
    spec, feeds, _, stats = silero
    layer = _lstm(spec)
    name = layer.name
    rtn = quantizer.build_plan(spec, 4, "linear")
    g = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration=stats)
    bc = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", bias_correction=True, calibration=stats)
    assert applied_algorithms(g)[name] == "gptq"
    assert applied_algorithms(bc)[name] == "gptq (fallback: bias correction: not applied to LSTM gate matrices " \
                                           "(measured harmful))"
    assert applied_algorithms(bc)["conv_0"] == "gptq+bc"
    for gate in GATES:
        for kind, part in (("WeightMatrix", "x"), ("RecursionMatrix", "h")):
            c = g[(name, f"weightParams.{gate}{kind}")]
            assert c.algorithm == "gptq" and c.stats_digest == stats[f"{name}|weightParams.{part}"].digest()
            assert c.token() == bc[(name, f"weightParams.{gate}{kind}")].token()  # the same experiment for the gates
        assert not g[(name, f"weightParams.{gate}BiasVector")].calibrated  # the biases keep their own codec
        assert bc[(name, f"weightParams.{gate}BiasVector")] == rtn[(name, f"weightParams.{gate}BiasVector")]
    assert len({rtn.digest(), g.digest(), bc.digest()}) == 3
    rtn_bc = quantizer.build_plan(spec, 4, "linear", bias_correction=True, calibration=stats)
    assert applied_algorithms(rtn_bc)[name].startswith("rtn (fallback: rtn+bc: bias correction: not applied")
    assert all(rtn_bc[k] == c for k, c in rtn.items() if k[0] == name)
    # an explicit bias-correcting codec on the gates: b_g' = b_g + (W_g - W_g^) E[x] + (R_g - R_g^) E[h], per gate
    explicit = _gate_bc_plan(spec, g, stats, name)
    assert applied_algorithms(explicit)[name] == "gptq+bc"
    q = _lstm(quantizer.apply_plan(spec, explicit))
    ex, eh = stats[f"{name}|weightParams.x"].mean[0], stats[f"{name}|weightParams.h"].mean[0]
    for gate in GATES:
        want = _w(layer, f"weightParams.{gate}BiasVector")
        want = want + (_w(layer, f"weightParams.{gate}WeightMatrix") - _w(q, f"weightParams.{gate}WeightMatrix")) @ ex
        want = want + (_w(layer, f"weightParams.{gate}RecursionMatrix") - _w(q, f"weightParams.{gate}RecursionMatrix")) @ eh
        assert layer_weights(q)[f"weightParams.{gate}BiasVector"][0].floatValue  # stored float32
        np.testing.assert_allclose(_w(q, f"weightParams.{gate}BiasVector"), want, rtol=1e-5, atol=1e-6)


def test_lstm_without_biases_gets_float_bias_vectors():
    """A bias-correcting gate codec on an LSTM without biases writes float32 bias vectors for every gate and sets
    hasBiasVectors; peepholes fall back to round-to-nearest with a note."""
    spec = LAYER_MODELS["uniDirectionalLSTM"]()
    layer = spec.neuralNetwork.layers[0]
    lp = layer.uniDirectionalLSTM
    lp.params.hasBiasVectors = False
    for gate in GATES:
        getattr(lp.weightParams, f"{gate}BiasVector").Clear()
    rng = np.random.default_rng(5)
    feeds = {"data": rng.normal(size=(16, 5, 3)).astype(np.float32) + 0.5}
    stats = collect_stats(spec, feeds)
    plan = quantizer.build_plan(spec, 3, "linear", algorithm="gptq", calibration=stats)
    assert "only its gate matrices" in plan[(layer.name, "weightParams.inputGatePeepholeVector")].note
    q = quantizer.apply_plan(spec, _gate_bc_plan(spec, plan, stats, layer.name))
    ql = q.neuralNetwork.layers[0]
    assert ql.uniDirectionalLSTM.params.hasBiasVectors
    for gate in GATES:
        b = _w(ql, f"weightParams.{gate}BiasVector")
        assert b.shape == (5,) and np.abs(b).sum() > 0
    NumpyExecutor(q).predict(feeds)  # runs


def test_calibrated_lstm_files_are_plain_models_equal_to_their_dequantized_network(silero, tmp_path):
    from quantizer.coremltools_quiet import coremltools
    from quantizer.walk import iter_layers
    from quantizer.weightparams import write_float32

    spec, _, held, stats = silero
    name = _lstm(spec).name
    for nbits, mode, bc in [(4, "linear", True), (3, "kmeans_lut", False)]:
        q = quantizer.quantize_weights(spec, nbits, mode, algorithm="gptq", bias_correction=bc, calibration=stats)
        path = quantizer.save(q, tmp_path / f"{mode}.mlmodel")
        loaded = coremltools().models.MLModel(str(path), skip_model_load=True)
        assert loaded.get_spec() == q and q.WhichOneof("Type") == "neuralNetwork"
        back = quantizer.load(path)
        enc = {t.field: t.encoding for t in quantizer.weight_tensors(back) if t.layer == name}
        assert all(enc[f"weightParams.{g}{k}"] != "float32" for g in GATES for k in ("WeightMatrix", "RecursionMatrix"))
        deq = quantizer.load(path)
        for lay in iter_layers(deq):
            for field, (wp, shape, axis) in layer_weights(lay).items():
                write_float32(wp, quantizer.decode_weights(wp, shape, axis))
        a, b = NumpyExecutor(back).predict(held), NumpyExecutor(deq).predict(held)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
