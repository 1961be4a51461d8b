"""Calibration statistics from the numpy executor: the observer hook, H and E[x] of every layer kind checked
against the executor's own outputs, passes and file-backed statistics, loop bodies, sequential statistics."""
import numpy as np
import pytest

import quantizer
from harness.calibration import collect_stats, sequential_stats, stats_layers
from harness.calibration.collect import prefix_model
from harness.executors.numpy_executor import NumpyExecutor
from quantizer.tensors import layer_weights
from quantizer.walk import iter_layers
from tests.nn_models import LAYER_MODELS, _builder, _f32, rng_for


def _rank3_inner_product():
    """innerProduct on a rank-3 input (EXACT mapping): rows are flattened over the leading axes."""
    rng = rng_for("ip_rank3")
    b = _builder([("data", (1, 5, 12))], rank5=False)
    b.add_inner_product("ip", _f32(rng.standard_normal((7, 12))), _f32(rng.standard_normal(7)), 12, 7, True, "data", "out")
    return b.spec


def _strided_same_conv():
    """A strided, dilated convolution with same padding after a ReLU (a layer in front of it)."""
    rng = rng_for("conv_same")
    b = _builder([("data", (3, 9, 8))])
    b.add_activation("relu", "RELU", "data", "r")
    b.add_convolution("conv", 3, 6, 3, 3, 2, 2, "same", 1, _f32(rng.standard_normal((3, 3, 3, 6))),
                      _f32(rng.standard_normal(6)), True, dilation_factors=[2, 1], input_name="r", output_name="out")
    return b.spec


MODELS = {"convolution": LAYER_MODELS["convolution"], "convolution_grouped": LAYER_MODELS["convolution_grouped"],
          "convolution_depthwise": LAYER_MODELS["convolution_depthwise"], "innerProduct": LAYER_MODELS["innerProduct"],
          "batchedMatmul": LAYER_MODELS["batchedMatmul"], "ip_rank3": _rank3_inner_product,
          "conv_same": _strided_same_conv}


def _feeds(spec, n=40, seed=0):
    from harness.data import expected_inputs

    rng = np.random.default_rng(seed)
    return {i.name: rng.normal(size=(n,) + tuple(i.sample_shape)).astype(np.float32) + 0.3 for i in expected_inputs(spec)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_statistics_reproduce_the_executors_outputs(name):
    """For every layer: W H W^T == sum over rows of (y - b)(y - b)^T and W E[x] + b == E[y], with y the
    executor's own output of the layer -- so patches, padding, groups and row flattening are right."""
    spec = MODELS[name]()
    feeds = _feeds(spec)
    stats = collect_stats(spec, feeds, batch_size=7)
    blobs = NumpyExecutor(spec).trace(feeds)
    targets, _ = stats_layers(spec)
    assert {t.name for t in targets} == set(stats) and stats.samples == 40
    for t in targets:
        st = stats[t.name]
        wp, shape, axis = layer_weights(t.layer)["weights"]
        w = quantizer.decode_weights(wp, shape, axis).astype(np.float64)
        b = quantizer.decode_weights(*layer_weights(t.layer)["bias"]).astype(np.float64)
        g = st.groups
        wm = w.reshape(g, w.shape[0] // g, -1)
        y = blobs[t.layer.output[0]].astype(np.float64)
        if t.kind == "convolution":  # (N, [..,] C, H, W) -> rows (N*H*W, C) per group
            y = np.moveaxis(y.reshape((-1,) + y.shape[-3:]), 1, -1).reshape(-1, w.shape[0])
        else:
            y = y.reshape(-1, w.shape[0])
        y = (y - b).reshape(-1, g, w.shape[0] // g)
        assert st.rows == y.shape[0]
        for gi in range(g):
            np.testing.assert_allclose(wm[gi] @ st.dense()[gi] @ wm[gi].T, y[:, gi].T @ y[:, gi], rtol=2e-4, atol=1e-3)
            np.testing.assert_allclose(wm[gi] @ st.mean[gi], y[:, gi].mean(axis=0), rtol=1e-4, atol=1e-4)


def test_observer_hook_sees_every_layer_before_it_runs_and_changes_nothing():
    spec = _strided_same_conv()
    ex = NumpyExecutor(spec)
    feeds = _feeds(spec, 5)
    seen = []
    blobs = ex.network.run(ex.input_blobs(feeds), observer=lambda op, b: seen.append((op.name, op.inputs[0] in b)))
    assert seen == [("relu", True), ("conv", True)]
    plain = ex.network.run(ex.input_blobs(feeds))
    np.testing.assert_array_equal(blobs["out"], plain["out"])


def test_passes_and_file_backed_statistics_are_the_same_statistics(tmp_path):
    from harness import zoo

    spec, test = zoo.load("digits_cnn")
    train = zoo.load_data("digits_cnn", spec, part="train")
    feeds = {k: v[:64] for k, v in train.feeds.items()}
    whole = collect_stats(spec, feeds)
    split = collect_stats(spec, feeds, memory_bytes=1, spill_dir=tmp_path)  # one layer per pass, all on disk
    assert list(whole) == list(split) and whole.digest() == split.digest()
    assert all(s.file_backed for s in split.values()) and not any(s.file_backed for s in whole.values())
    assert split.resident_bytes < whole.resident_bytes and any(tmp_path.iterdir())
    a = quantizer.quantize_weights(spec, 3, "linear", algorithm="gptq", calibration=whole)
    b = quantizer.quantize_weights(spec, 3, "linear", algorithm="gptq", calibration=split)
    assert a.SerializeToString() == b.SerializeToString()
    split.close()
    assert not any(tmp_path.iterdir())


def test_prefix_model_keeps_what_the_layers_need():
    spec = _strided_same_conv()
    sub = prefix_model(spec, ["conv"])
    kinds = [(lay.name, lay.WhichOneof("layer")) for lay in sub.neuralNetwork.layers]
    assert kinds == [("relu", "activation"), ("conv", "activation")]  # the observed conv: a weightless stand-in
    assert [o.name for o in sub.description.output] == ["out"]
    assert [lay.name for lay in prefix_model(spec, ["relu"]).neuralNetwork.layers] == ["relu"]


def test_layers_in_loop_bodies_are_skipped_and_fall_back(caplog):
    spec = LAYER_MODELS["loop"]()
    stats = collect_stats(spec, _feeds(spec, 8))
    assert len(stats) == 0 and set(stats.skipped) == {"body_ip1", "body_ip2"}
    plan = quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration=stats)
    assert all("no calibration statistics" in c.note for (lay, f), c in plan.items() if f == "weights")


def test_sequential_statistics_read_the_partly_quantized_model():
    from harness import zoo

    spec, _ = zoo.load("digits_mlp")
    feeds = {k: v[:64] for k, v in zoo.load_data("digits_mlp", spec, part="train").feeds.items()}
    plain = collect_stats(spec, feeds)

    def plan_for(s):
        return quantizer.build_plan(spec, 2, "linear", algorithm="gptq", calibration=s)

    seq = sequential_stats(spec, feeds, plan_for)
    assert list(seq) == list(plain) and seq.source == "sequential"
    first = next(iter(plain))
    assert seq[first].digest() == plain[first].digest()  # the first layer sees the float input either way
    assert all(seq[n].digest() != plain[n].digest() for n in list(plain)[1:])


def test_statistics_of_a_model_with_two_layers_of_one_name_are_refused():
    from harness.errors import DataError

    spec = LAYER_MODELS["innerProduct"]()
    dup = spec.neuralNetwork.layers.add()
    dup.CopyFrom(spec.neuralNetwork.layers[0])
    dup.input[0], dup.output[0] = "out", "out2"
    with pytest.raises(DataError, match="two layers are named"):
        stats_layers(spec)


def test_calibrated_files_are_plain_models_equal_to_their_dequantized_network(tmp_path):
    """coremltools loads the saved files, quantizer.load decodes them, and the executor's outputs equal those of the
    same network with the dequantized weights written as float32."""
    from harness import zoo

    spec, test = zoo.load("digits_cnn")
    feeds = {k: v[:64] for k, v in zoo.load_data("digits_cnn", spec, part="train").feeds.items()}
    stats = collect_stats(spec, feeds)
    for nbits, mode, algo, bc in CALIBRATED_CASES:
        q = quantizer.quantize_weights(spec, nbits, mode, algorithm=algo, bias_correction=bc, calibration=stats)
        assert_plain_file_equal_to_dequantized(q, tmp_path / f"{mode}-{algo}.mlmodel", test.feeds)


#: (nbits, mode, algorithm, bias correction) of the plain-file checks.
CALIBRATED_CASES = [(4, "linear", "gptq", False), (3, "linear_symmetric", "gptq", True), (2, "kmeans_lut", "gptq", True),
                    (3, "kmeans_lut", "awkm", False), (4, "linear_lut", "rtn", True)]


def assert_plain_file_equal_to_dequantized(q, path, feeds):
    """``q`` saved to ``path``: coremltools reads it, quantizer.load decodes it, it stores quantized tensors, and
    the executor's outputs on ``feeds`` equal those of the same network with the dequantized weights as float32."""
    from quantizer.coremltools_quiet import coremltools
    from quantizer.weightparams import write_float32

    path = quantizer.save(q, path)
    loaded = coremltools().models.MLModel(str(path), skip_model_load=True)  # coremltools reads the file
    assert loaded.get_spec() == q
    back = quantizer.load(path)
    assert back == q and path.read_bytes() == quantizer.io.serialize(back)
    assert {t.encoding for t in quantizer.weight_tensors(back)} - {"float32"}  # stored quantized
    deq = quantizer.load(path)
    for lay in iter_layers(deq):
        for field, (wp, shape, axis) in layer_weights(lay).items():
            values = quantizer.decode_weights(wp, shape, axis)  # the executor's decoder
            assert np.isfinite(values).all()
            write_float32(wp, values)
    assert all(t.encoding == "float32" for t in quantizer.weight_tensors(deq))
    a = NumpyExecutor(back).predict(feeds)
    b = NumpyExecutor(deq).predict(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    ref = quantizer.quantize_weights(back, None, "dequantization")  # quantizer's own dequantization
    c = NumpyExecutor(ref).predict(feeds)
    for k in a:
        np.testing.assert_allclose(a[k], c[k], rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(c[k]).max())))
