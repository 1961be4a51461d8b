"""harness.data.model_inputs: the batch convention and check_feeds' errors."""
from __future__ import annotations

import numpy as np
import pytest

from harness import zoo
from harness.data import check_feeds, conform_feeds, expected_inputs
from harness.errors import DataError
from tests._data_models import builder_model, image_model, rng_array


def test_rank5_builder_model_declares_one_sample():
    spec = builder_model({"x": (64,), "img": (1, 8, 8)})
    x, img = expected_inputs(spec)
    assert (x.sample_shape, img.sample_shape) == ((64,), (1, 8, 8))
    assert not x.exact_mapping and x.dtype == np.float32
    check_feeds(spec, {"x": rng_array((5, 64)), "img": rng_array((5, 1, 8, 8))})


def test_exact_mapping_leading_one_is_the_batch_dim():
    spec = zoo.load_spec("digits_cnn")  # converted: [1, 1, 8, 8]
    (inp,) = expected_inputs(spec)
    assert inp.exact_mapping and inp.declared_shape == (1, 1, 8, 8) and inp.sample_shape == (1, 8, 8)
    assert "(N, 1, 8, 8)" in inp.describe()
    check_feeds(spec, {"image": rng_array((7, 1, 8, 8))})
    with pytest.raises(DataError, match=r"'image' has shape \(7, 64\), the model takes \(N, 1, 8, 8\)"):
        check_feeds(spec, {"image": rng_array((7, 64))})


def test_exact_mapping_without_leading_one_prepends_n():
    spec = builder_model({"x": (3, 4)}, exact=True)
    (inp,) = expected_inputs(spec)
    assert inp.sample_shape == (3, 4)
    check_feeds(spec, {"x": rng_array((2, 3, 4))})


def test_image_inputs_take_pil_layout():
    rgb = image_model("RGB", 4, 5)
    (inp,) = expected_inputs(rgb)
    assert inp.kind == "image" and inp.sample_shape == (4, 5, 3) and inp.declared_shape == (3, 4, 5)
    check_feeds(rgb, {"img": rng_array((2, 4, 5, 3))})
    with pytest.raises(DataError, match=r"takes \(N, 4, 5, 3\)"):
        check_feeds(rgb, {"img": rng_array((2, 3, 4, 5))})  # channels first is not the image layout
    gray = image_model("GRAYSCALE", 4, 5)
    check_feeds(gray, {"img": rng_array((2, 4, 5))})
    check_feeds(gray, {"img": rng_array((2, 4, 5, 1))})
    fed = conform_feeds(gray, {"img": np.zeros((2, 4, 5), np.uint8)})
    assert fed["img"].dtype == np.float32


def test_int32_inputs():
    spec = builder_model({"ids": (6,)}, int_inputs=("ids",))
    (inp,) = expected_inputs(spec)
    assert inp.is_integer and inp.type_name == "INT32"
    check_feeds(spec, {"ids": np.arange(12).reshape(2, 6)})
    with pytest.raises(DataError, match=r"'ids' has dtype float32, the model takes INT32"):
        check_feeds(spec, {"ids": rng_array((2, 6))})
    out = conform_feeds(spec, {"ids": np.arange(12, dtype=np.float64).reshape(2, 6)})
    assert out["ids"].dtype == np.int32
    with pytest.raises(DataError, match="non-integer numbers"):
        conform_feeds(spec, {"ids": np.full((2, 6), 0.5)})
    with pytest.raises(DataError, match="outside the INT32 range"):
        check_feeds(spec, {"ids": np.full((1, 6), 2**40)})


def test_optional_input_may_be_absent():
    spec = builder_model({"x": (4,), "mask": (4,)}, optional=("mask",))
    check_feeds(spec, {"x": rng_array((3, 4))})


def test_flexible_shape_range():
    from quantizer.coremltools_quiet import coremltools

    ct = coremltools()
    spec = builder_model({"x": (1, 5)}, exact=True)
    t = spec.description.input[0].type.multiArrayType
    for lo, hi in ((1, 1), (2, 10)):
        r = t.shapeRange.sizeRanges.add()
        r.lowerBound, r.upperBound = lo, hi
    (inp,) = expected_inputs(spec)
    assert inp.feed_shape_text() == "(N, 2..10)"
    check_feeds(spec, {"x": rng_array((3, 7))})
    with pytest.raises(DataError, match=r"takes \(N, 2\.\.10\)"):
        check_feeds(spec, {"x": rng_array((3, 11))})
    assert ct is not None


def test_check_feeds_names_every_problem_and_the_expectation():
    spec = builder_model({"a": (4,), "b": (2, 3, 3)})
    with pytest.raises(DataError) as e:
        check_feeds(spec, {"a": rng_array((5, 3)), "c": rng_array((5, 4))}, source="test.npz")
    msg = str(e.value)
    assert "from test.npz" in msg
    assert "missing input(s) 'b'" in msg and "unknown input name(s) 'c'" in msg
    assert "'a' has shape (5, 3), the model takes (N, 4)" in msg
    assert "The model expects:" in msg and "'b': float32 array (N, 2, 3, 3)" in msg
    assert "Given:" in msg and "'c': float32 array (5, 4)" in msg


@pytest.mark.parametrize("feeds, match", [
    ({"a": rng_array((5, 4)), "b": rng_array((6, 2, 3, 3))}, "disagree on the number of samples N"),
    ({"a": rng_array((0, 4)), "b": rng_array((0, 2, 3, 3))}, r"holds no samples \(N = 0\)"),
    ({"a": np.full((2, 4), np.nan, np.float32), "b": rng_array((2, 2, 3, 3))}, "contains 8 NaN"),
    ({"a": np.array([["x"] * 4]), "b": rng_array((1, 2, 3, 3))}, "dtype str"),
    ({"a": [[1.0] * 4], "b": rng_array((1, 2, 3, 3))}, "is a list, not a numpy array"),
])
def test_check_feeds_rejects(feeds, match):
    with pytest.raises(DataError, match=match):
        check_feeds(builder_model({"a": (4,), "b": (2, 3, 3)}), feeds)


def test_non_array_input_type_is_reported():
    spec = builder_model({"x": (4,)})
    t = spec.description.input[0].type
    t.ClearField("multiArrayType")
    t.stringType.SetInParent()
    with pytest.raises(DataError, match="'x' is of type stringType"):
        expected_inputs(spec)


def test_model_from_path_and_bad_path(tmp_path):
    p = zoo.path("digits_mlp")
    assert expected_inputs(str(p))[0].name == "pixels"
    from harness.errors import USER_ERRORS

    with pytest.raises(USER_ERRORS, match="nope.mlmodel"):
        expected_inputs(str(tmp_path / "nope.mlmodel"))
