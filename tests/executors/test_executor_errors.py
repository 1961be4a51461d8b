"""Errors the executors raise for problems a user can cause, and what they say."""
from __future__ import annotations

import re

import numpy as np
import pytest

from harness.errors import ConfigError, DataError, ExecutorError, UnsupportedLayerError
from harness.executors import NumpyExecutor, make_executor
from harness.executors.factory import coreml_available
from tests.executors.executor_specs import INT32, layer, net, weights


def _mlp():
    spec, nn = net({"x": (1, 4)}, ["y"])
    p = layer(nn, "innerProduct", "fc", ["x"], ["y"])
    p.inputChannels, p.outputChannels = 4, 2
    weights(p.weights, np.arange(8, dtype=np.float32))
    return spec


def test_unsupported_layer_named_at_build_time():
    spec, nn = net({"x": (1, 4)}, ["y"])
    layer(nn, "activation", "relu", ["x"], ["h"]).ReLU.SetInParent()
    p = layer(nn, "custom", "my_custom_op", ["h"], ["y"])
    p.className = "Foo"
    with pytest.raises(UnsupportedLayerError) as e:
        NumpyExecutor(spec)
    msg = str(e.value)
    assert "'my_custom_op'" in msg and "'custom'" in msg
    assert "Supported layer types:" in msg and "innerProduct" in msg and "convolution" in msg


def test_unsupported_layer_inside_loop_body_found_at_build_time():
    spec, nn = net({"x": (1, 4)}, ["x"])
    loop = layer(nn, "loop", "lp", [], [])
    loop.maxLoopIterations = 2
    body = loop.bodyNetwork.layers.add()
    body.name = "inner_custom"
    body.custom.className = "Bar"
    with pytest.raises(UnsupportedLayerError, match="'inner_custom'.*'custom'"):
        NumpyExecutor(spec)


def test_output_not_produced_is_reported():
    spec, nn = net({"x": (1, 4)}, ["nowhere"])
    layer(nn, "activation", "relu", ["x"], ["h"]).ReLU.SetInParent()
    with pytest.raises(ExecutorError, match="'nowhere'"):
        NumpyExecutor(spec)


EXPECTS = r"The model expects:\n  'x': float32 array \(N, 4\) \[multiArray FLOAT32 declared \[1, 4\], exact mapping\]"


@pytest.mark.parametrize(
    "feeds,pattern",
    [
        ({"z": np.zeros((1, 4))}, r"missing input\(s\) 'x'; unknown input name\(s\) 'z'"),
        ({}, r"missing input\(s\) 'x'\."),
        ({"x": np.zeros((4,))}, r"'x' has shape \(4,\), the model takes \(N, 4\)"),
        ({"x": np.zeros((2, 5))}, r"'x' has shape \(2, 5\), the model takes \(N, 4\)"),
        ({"x": np.zeros((2, 3, 4, 1))}, r"'x' has shape \(2, 3, 4, 1\)"),
        ({"x": np.array([["a", "b", "c", "d"]])}, r"'x' has dtype str32, the model takes FLOAT32 \(a numeric array\)"),
        ([np.zeros((1, 4))], r"feeds must be a dict of input name -> array, got a list"),
    ],
)
def test_bad_feeds_state_what_the_model_expects(feeds, pattern):
    ex = NumpyExecutor(_mlp())
    with pytest.raises(DataError, match=r"^model: the feeds do not fit the model: " + ".*" + pattern) as e:
        ex.predict(feeds)
    if isinstance(feeds, dict):
        assert re.search(EXPECTS + r"\nGiven:\n", str(e.value)), str(e.value)


def test_inputs_disagreeing_on_n():
    spec, nn = net({"a": (1, 3), "b": (1, 3)}, ["y"])
    layer(nn, "addBroadcastable", "add", ["a", "b"], ["y"])
    with pytest.raises(DataError, match="disagree on the number of samples"):
        NumpyExecutor(spec).predict({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))})


def test_int32_input_rejects_fractions_and_accepts_integers():
    spec, nn = net({"ids": (1, 3)}, ["y"], dtypes={"ids": INT32})
    layer(nn, "activation", "lin", ["ids"], ["y"]).linear.alpha = 2.0
    ex = NumpyExecutor(spec)
    with pytest.raises(DataError, match="INT32.*non-integer"):
        ex.predict({"ids": np.array([[0.5, 1, 2]])})
    out = ex.predict({"ids": np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)})
    np.testing.assert_array_equal(out["y"], [[2, 4, 6], [8, 10, 12]])


def test_runtime_shape_mismatch_names_layer_and_shapes():
    spec, nn = net({"x": (1, 5)}, ["y"])
    p = layer(nn, "innerProduct", "fc1", ["x"], ["y"])
    p.inputChannels, p.outputChannels = 4, 2
    weights(p.weights, np.zeros(8))
    with pytest.raises(ExecutorError, match=r"'fc1' \(innerProduct\).*5 channels.*inputChannels=4"):
        NumpyExecutor(spec).predict({"x": np.zeros((1, 5))})


def test_weight_count_mismatch_names_layer_and_field():
    spec, nn = net({"x": (1, 4)}, ["y"])
    p = layer(nn, "innerProduct", "fc_bad", ["x"], ["y"])
    p.inputChannels, p.outputChannels = 4, 2
    weights(p.weights, np.zeros(7))
    with pytest.raises(ExecutorError, match=r"fc_bad.*weights"):
        NumpyExecutor(spec)


def test_make_executor_kinds():
    assert make_executor("numpy", _mlp()).kind == "numpy"
    with pytest.raises(ConfigError, match="executor.*'gpu'.*auto, numpy, coreml"):
        make_executor("gpu", _mlp())
    auto = make_executor("auto", _mlp())
    assert auto.kind == ("coreml" if coreml_available() else "numpy")


@pytest.mark.skipif(coreml_available(), reason="Core ML prediction is available on this machine")
def test_coreml_where_unavailable_says_so():
    with pytest.raises(ExecutorError, match="Core ML prediction is not available.*macOS.*executor=numpy"):
        make_executor("coreml", _mlp())


def test_missing_model_file(tmp_path):
    from quantizer.errors import QuantizerError

    with pytest.raises(QuantizerError, match="nope.mlmodel"):
        NumpyExecutor(tmp_path / "nope.mlmodel")
