"""ReLU statistics (per output channel sum relu(y)^2 and E[y] of layers feeding a ReLU) and the ReLU-aware
channel choice of GPTQ (relu_off): statistics against the executor's outputs, which layers get them, the
switched-off channels in a plain file, identity and the option turned off."""
import numpy as np

import quantizer
from harness.calibration import collect_stats
from harness.calibration.collect import relu_followed
from harness.executors.interface import ModelIO
from harness.executors.numpy_executor import NumpyExecutor
from quantizer.algorithms import LayerStats
from quantizer.algorithms.relu_off import row_errors
from quantizer.tensors import layer_weights
from tests.nn_models import _builder, _f32, rng_for


def _relu_model(shift=None, second_reader=False):
    """conv -> ReLU, and innerProduct -> flatten -> ReLU; ``shift``: a bias added to conv channels (dead ones)."""
    rng = rng_for("relu_model")
    b = _builder([("data", (3, 6, 6))], outputs=(("out", None), ("out2", None)) if second_reader else (("out", None),))
    bias = rng.standard_normal(5)
    if shift is not None:
        bias = bias + shift
    b.add_convolution("conv", 3, 5, 3, 3, 1, 1, "valid", 1, _f32(rng.standard_normal((3, 3, 3, 5))), _f32(bias), True,
                      input_name="data", output_name="c")
    b.add_activation("r", "RELU", "c", "rc")
    if second_reader:
        b.add_activation("s", "SIGMOID", "c", "out2")
    b.add_flatten("fl", 0, "rc", "f")
    b.add_inner_product("ip", _f32(rng.standard_normal((4, 80))), _f32(rng.standard_normal(4)), 80, 4, True, "f", "i")
    b.add_flatten("fl2", 0, "i", "i2")
    b.add_activation("r2", "RELU", "i2", "out")
    return b.spec


def _feeds(n=30, seed=0):
    return {"data": np.random.default_rng(seed).normal(size=(n, 3, 6, 6)).astype(np.float32)}


def test_relu_statistics_equal_the_executors_pre_activations():
    spec = _relu_model()
    assert relu_followed(ModelIO(spec).nn) == {"conv", "ip"}
    feeds = _feeds()
    stats = collect_stats(spec, feeds, batch_size=7)
    blobs = NumpyExecutor(spec).trace(feeds)
    y = blobs["c"].astype(np.float64)  # (N, C, H, W)
    y = np.moveaxis(y.reshape((-1,) + y.shape[-3:]), 1, -1).reshape(-1, 5)
    np.testing.assert_allclose(stats["conv"].relu[0], (np.maximum(y, 0) ** 2).sum(axis=0), rtol=1e-4)
    np.testing.assert_allclose(stats["conv"].relu[1], y.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["conv"].relu[2], (y > 0).mean(axis=0))
    yi = blobs["i"].astype(np.float64).reshape(-1, 4)
    np.testing.assert_allclose(stats["ip"].relu[0], (np.maximum(yi, 0) ** 2).sum(axis=0), rtol=1e-4)


def test_a_layer_read_by_anything_else_gets_no_relu_statistics():
    spec = _relu_model(second_reader=True)
    assert relu_followed(ModelIO(spec).nn) == {"ip"}
    stats = collect_stats(spec, _feeds())
    assert stats["conv"].relu is None and stats["ip"].relu is not None


def test_relu_statistics_are_part_of_the_digest_and_survive_files(tmp_path):
    g, m = np.eye(2) * 3.0, np.array([0.5, 1.0])
    plain = LayerStats(g, m, 10)
    with_relu = LayerStats(g, m, 10, relu=np.array([[1.0, 2.0], [0.1, -0.2], [0.3, 0.0]]))
    assert plain.digest() == LayerStats(g, m, 10).digest() != with_relu.digest()
    back = LayerStats.open(with_relu.save(tmp_path / "s"))
    assert back.digest() == with_relu.digest()
    np.testing.assert_array_equal(back.relu, with_relu.relu)
    assert LayerStats.open(plain.save(tmp_path / "p")).relu is None


def test_row_errors_are_the_summed_squared_output_errors():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)) + 0.2
    dw = rng.normal(size=(3, 6))
    d = rng.normal(size=3)
    st = LayerStats(x.T @ x, x.mean(axis=0), 50)
    direct = ((-x @ dw.T + d) ** 2).sum(axis=0)
    np.testing.assert_allclose(row_errors(dw, st, d), direct, rtol=1e-10)
    np.testing.assert_allclose(row_errors(dw, LayerStats(x.T @ x, x.mean(axis=0), 50), None), ((x @ dw.T) ** 2).sum(0))


def test_dead_channels_are_switched_off_in_a_plain_file(tmp_path):
    """Two conv channels pushed far below zero never fire: GPTQ stores them as zero rows with a bias <= 0,
    their ReLU output stays exactly 0, coremltools loads the file; relu_off=False is the plain GPTQ."""
    spec = _relu_model(shift=np.array([-40.0, -40.0, 0, 0, 0]))
    feeds = _feeds()
    stats = collect_stats(spec, feeds)
    assert (stats["conv"].relu[0][:2] == 0).all()
    q = quantizer.quantize_weights(spec, 2, "linear", algorithm="gptq", bias_correction=True, calibration=stats)
    conv = [layer for layer in q.neuralNetwork.layers if layer.name == "conv"][0]
    w = quantizer.decode_weights(*layer_weights(conv)["weights"])
    b = quantizer.decode_weights(*layer_weights(conv)["bias"])
    assert (w[:2] == 0).all() and (b[:2] <= 0).all()
    assert NumpyExecutor(q).trace(feeds)["rc"][..., :2, :, :].max() == 0
    path = quantizer.save(q, tmp_path / "q.mlmodel")
    from quantizer.coremltools_quiet import coremltools

    coremltools().models.MLModel(str(path))
    plain = quantizer.quantize_weights(spec, 2, "linear", algorithm="gptq", bias_correction=True, calibration=stats,
                                       algorithm_options={"relu_off": False})
    assert quantizer.io.serialize(plain) != quantizer.io.serialize(q)
    token = quantizer.Codec("linear", 2, algorithm="gptq", stats=stats["conv"]).token()
    assert "relu_off=0.03" in token


def test_only_almost_never_active_channels_are_switched_off():
    """A channel firing on more rows than relu_off (a share) keeps its quantized row, whatever the costs."""
    from quantizer.algorithms.grids import rtn
    from quantizer.algorithms.relu_off import off_channels

    st = LayerStats(np.eye(3) * 100, np.zeros(3), 100, relu=np.array([[0.0, 0.0], [-3.0, -3.0], [0.0, 0.2]]))
    w = np.array([[1.0, -2.0, 0.25], [1.0, -2.0, 0.25]], np.float32)
    _, _, off = off_channels(w, rtn(w, "linear", 1), None, st)
    assert off.tolist() == [True, False]
    _, _, off = off_channels(w, rtn(w, "linear", 1), None, st, max_activity=0.5)
    assert off.tolist() == [True, True]
    _, _, off = off_channels(w, rtn(w, "kmeans_lut", 1), None, st)
    assert not off.any()  # a LUT cannot store an exact zero row
