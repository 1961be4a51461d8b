"""harness.data.model_inputs: the one model-input contract (batch convention, dtypes, errors).

The data loaders (``conform_feeds`` / ``check_feeds``) and the executors
(``Executor.predict``) read feeds with the same rules: the agreement tests at the
end feed both sides the same candidates and require the same verdict.
"""
from __future__ import annotations

import numpy as np
import pytest

from harness import zoo
from harness.data import check_feeds, conform_feeds, expected_inputs, feed_problems
from harness.data.model_inputs import split_feeds
from harness.errors import DataError
from harness.executors import NumpyExecutor
from tests.data._data_models import builder_model, image_model, rng_array


def _conformed_shapes(spec, feeds) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (v.shape, v.dtype.name) for k, v in conform_feeds(spec, feeds).items()}


def test_rank5_builder_model_declares_one_sample():
    spec = builder_model({"x": (64,), "img": (1, 8, 8)})
    x, img = expected_inputs(spec)
    assert (x.sample_shape, img.sample_shape) == ((64,), (1, 8, 8))
    assert not x.exact_mapping and x.dtype == np.float32
    feeds = {"x": rng_array((5, 64), dtype=np.float64), "img": rng_array((5, 1, 8, 8))}
    out = conform_feeds(spec, feeds)
    assert _conformed_shapes(spec, feeds) == {"x": ((5, 64), "float32"), "img": ((5, 1, 8, 8), "float32")}
    np.testing.assert_array_equal(out["x"], feeds["x"].astype(np.float32))
    assert feed_problems(spec, feeds) == []


def test_exact_mapping_leading_one_is_the_batch_dim():
    spec = zoo.load_spec("digits_cnn")  # converted: [1, 1, 8, 8]
    (inp,) = expected_inputs(spec)
    assert inp.exact_mapping and inp.declared_shape == (1, 1, 8, 8) and inp.sample_shape == (1, 8, 8)
    assert inp.describe() == "'image': float32 array (N, 1, 8, 8) [multiArray FLOAT32 declared [1, 1, 8, 8], exact mapping]"
    assert _conformed_shapes(spec, {"image": rng_array((7, 1, 8, 8))}) == {"image": ((7, 1, 8, 8), "float32")}
    split, n = split_feeds(expected_inputs(spec), {"image": rng_array((7, 1, 8, 8))})
    assert n == 7 and split["image"].x.shape == (7, 1, 1, 8, 8) and not split["image"].one_sample
    with pytest.raises(DataError, match=r"'image' has shape \(7, 64\), the model takes \(N, 1, 8, 8\)"):
        check_feeds(spec, {"image": rng_array((7, 64))})


def test_exact_mapping_without_leading_one_prepends_n():
    spec = builder_model({"x": (3, 4)}, exact=True)
    (inp,) = expected_inputs(spec)
    assert inp.sample_shape == (3, 4)
    assert _conformed_shapes(spec, {"x": rng_array((2, 3, 4))}) == {"x": ((2, 3, 4), "float32")}
    assert "also (3, 4) for one sample" in inp.describe() and "sequences" not in inp.describe()


def test_one_sample_without_n_gets_a_leading_one():
    spec = builder_model({"x": (3, 4)}, exact=True)
    x = rng_array((3, 4))
    out = conform_feeds(spec, {"x": x})
    assert out["x"].shape == (1, 3, 4)
    np.testing.assert_array_equal(out["x"][0], x)
    split, n = split_feeds(expected_inputs(spec), {"x": x})
    assert n == 1 and split["x"].one_sample


def test_legacy_sequences_are_taken_by_data_and_executor_alike():
    spec = builder_model({"x": (4,)})
    (inp,) = expected_inputs(spec)
    assert "also (4,) for one sample, (N, S, 4) for N sequences of S steps" in inp.describe()
    seq = rng_array((3, 5, 4))  # 3 samples, each 5 steps of 4 values
    assert feed_problems(spec, {"x": seq}) == []
    out = conform_feeds(spec, {"x": seq})
    assert out["x"].shape == (3, 5, 4)
    split, n = split_feeds([inp], out)
    assert (n, split["x"].s) == (3, 5)
    y = NumpyExecutor(spec).predict(out)["out_x"]
    assert y.shape == (3, 5, 4)  # (N, S, C): H = W = 1 dropped
    np.testing.assert_allclose(y, seq, rtol=1e-6)


def test_image_inputs_take_pil_layout():
    rgb = image_model("RGB", 4, 5)
    (inp,) = expected_inputs(rgb)
    assert inp.kind == "image" and inp.sample_shape == (4, 5, 3) and inp.declared_shape == (3, 4, 5)
    assert _conformed_shapes(rgb, {"img": rng_array((2, 4, 5, 3))}) == {"img": ((2, 4, 5, 3), "float32")}
    assert _conformed_shapes(rgb, {"img": rng_array((4, 5, 3))}) == {"img": ((1, 4, 5, 3), "float32")}
    with pytest.raises(DataError, match=r"takes \(N, 4, 5, 3\)"):
        check_feeds(rgb, {"img": rng_array((2, 3, 4, 5))})  # channels first is not the image layout
    gray = image_model("GRAYSCALE", 4, 5)
    assert _conformed_shapes(gray, {"img": rng_array((2, 4, 5))}) == {"img": ((2, 4, 5), "float32")}
    assert _conformed_shapes(gray, {"img": rng_array((2, 4, 5, 1))}) == {"img": ((2, 4, 5, 1), "float32")}
    assert _conformed_shapes(gray, {"img": rng_array((4, 5))}) == {"img": ((1, 4, 5), "float32")}
    fed = conform_feeds(gray, {"img": np.arange(40, dtype=np.uint8).reshape(2, 4, 5)})
    assert fed["img"].dtype == np.float32 and fed["img"].max() == 39.0


def test_int32_inputs():
    spec = builder_model({"ids": (6,)}, int_inputs=("ids",))
    (inp,) = expected_inputs(spec)
    assert inp.is_integer and inp.type_name == "INT32"
    assert feed_problems(spec, {"ids": np.arange(12).reshape(2, 6)}) == []
    with pytest.raises(DataError, match=r"'ids' has dtype float32, the model takes INT32"):
        check_feeds(spec, {"ids": rng_array((2, 6))})
    out = conform_feeds(spec, {"ids": np.arange(12, dtype=np.float64).reshape(2, 6)})
    assert out["ids"].dtype == np.int32
    np.testing.assert_array_equal(out["ids"], np.arange(12).reshape(2, 6))
    with pytest.raises(DataError, match="non-integer numbers"):
        conform_feeds(spec, {"ids": np.full((2, 6), 0.5)})
    with pytest.raises(DataError, match="outside the INT32 range"):
        check_feeds(spec, {"ids": np.full((1, 6), 2**40)})


def test_optional_input_may_be_absent():
    spec = builder_model({"x": (4,), "mask": (4,)}, optional=("mask",))
    assert _conformed_shapes(spec, {"x": rng_array((3, 4))}) == {"x": ((3, 4), "float32")}
    with pytest.raises(DataError, match=r"missing input\(s\) 'x'"):
        check_feeds(spec, {"mask": rng_array((3, 4))})


def test_flexible_shape_range():
    spec = builder_model({"x": (1, 5)}, exact=True)
    t = spec.description.input[0].type.multiArrayType
    for lo, hi in ((1, 1), (2, 10)):
        r = t.shapeRange.sizeRanges.add()
        r.lowerBound, r.upperBound = lo, hi
    (inp,) = expected_inputs(spec)
    assert inp.ranges == ((2, 10),) and inp.feed_shape_text() == "(N, 2..10)"
    assert _conformed_shapes(spec, {"x": rng_array((3, 7))}) == {"x": ((3, 7), "float32")}
    assert NumpyExecutor(spec).predict({"x": rng_array((3, 7))})["out_x"].shape == (3, 7)
    with pytest.raises(DataError, match=r"takes \(N, 2\.\.10\)"):
        check_feeds(spec, {"x": rng_array((3, 11))})


def test_check_feeds_names_every_problem_and_the_expectation():
    spec = builder_model({"a": (4,), "b": (2, 3, 3)})
    with pytest.raises(DataError) as e:
        check_feeds(spec, {"a": rng_array((5, 3)), "c": rng_array((5, 4))}, source="test.npz")
    msg = str(e.value)
    assert msg.startswith("Test data from test.npz does not fit the model: ")
    assert "missing input(s) 'b'" in msg and "unknown input name(s) 'c'" in msg
    assert "'a' has shape (5, 3), the model takes (N, 4)" in msg
    assert "The model expects:" in msg and "'b': float32 array (N, 2, 3, 3)" in msg
    assert "Given:" in msg and "'c': float32 array (5, 4)" in msg


@pytest.mark.parametrize("feeds, match", [
    ({"a": rng_array((5, 4)), "b": rng_array((6, 2, 3, 3))}, "disagree on the number of samples N"),
    ({"a": rng_array((0, 4)), "b": rng_array((0, 2, 3, 3))}, r"holds no samples \(N = 0\)"),
    ({"a": np.full((2, 4), np.nan, np.float32), "b": rng_array((2, 2, 3, 3))}, "contains 8 NaN"),
    ({"a": np.array([["x"] * 4]), "b": rng_array((1, 2, 3, 3))}, "dtype str"),
    ({"a": [[1.0, 2.0], [3.0]], "b": rng_array((1, 2, 3, 3))}, "'a' is not an array"),
])
def test_check_feeds_rejects(feeds, match):
    with pytest.raises(DataError, match=match):
        check_feeds(builder_model({"a": (4,), "b": (2, 3, 3)}), feeds)


def test_array_likes_are_conformed_to_arrays():
    out = conform_feeds(builder_model({"a": (4,)}), {"a": [[1, 2, 3, 4], [5, 6, 7, 8]]})
    assert out["a"].dtype == np.float32 and out["a"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_non_array_input_type_is_reported():
    spec = builder_model({"x": (4,)})
    t = spec.description.input[0].type
    t.ClearField("multiArrayType")
    t.stringType.SetInParent()
    with pytest.raises(DataError, match="'x' is of type stringType"):
        expected_inputs(spec)


def test_model_from_path_and_bad_path(tmp_path):
    p = zoo.path("digits_mlp")
    (inp,) = expected_inputs(str(p))
    assert (inp.name, inp.sample_shape, inp.exact_mapping) == ("pixels", (64,), False)
    from harness.errors import USER_ERRORS

    with pytest.raises(USER_ERRORS, match="nope.mlmodel"):
        expected_inputs(str(tmp_path / "nope.mlmodel"))


# -- the data side and the executor agree -------------------------------------------

AGREEMENT_MODELS = {
    "legacy C": lambda: builder_model({"x": (4,)}),
    "legacy CHW, C = 1": lambda: builder_model({"x": (1, 3, 2)}),
    "legacy CHW": lambda: builder_model({"x": (2, 3, 2)}),
    "exact, batch dim 1": lambda: builder_model({"x": (1, 3, 2)}, exact=True),
    "exact, no batch dim": lambda: builder_model({"x": (3, 2)}, exact=True),
    "INT32": lambda: builder_model({"x": (4,)}, int_inputs=("x",)),
    "RGB image": lambda: image_model("RGB", 3, 2),
    "grayscale image": lambda: image_model("GRAYSCALE", 3, 2),
}


def _candidate_shapes(inp) -> list[tuple[int, ...]]:
    """Shapes around an input's declaration: every form of the convention and near misses."""
    d, s = inp.declared_shape, inp.sample_shape
    bodies = {d, s, d[1:], s[1:], s + (1,), s[:-1] + (s[-1] + 1,), (int(np.prod(s)),)}
    return sorted({lead + b for lead in ((), (1,), (3,), (3, 2), (3, 2, 1)) for b in bodies if lead + b})


def _executor_verdict(ex, feeds):
    try:
        return ex.predict(feeds)
    except DataError:
        return None


@pytest.mark.parametrize("model", sorted(AGREEMENT_MODELS))
def test_data_and_executor_accept_the_same_feed_shapes(model):
    spec = AGREEMENT_MODELS[model]()
    (inp,) = expected_inputs(spec)
    ex = NumpyExecutor(spec)
    rng = np.random.default_rng(0)
    accepted = 0
    for shape in _candidate_shapes(inp):
        x = rng.integers(0, 9, size=shape).astype(np.int32 if inp.is_integer else np.float32)
        feeds = {inp.name: x}
        data_ok = feed_problems(spec, feeds) == []
        out = _executor_verdict(ex, feeds)
        assert data_ok == (out is not None), f"{model}: shape {shape}: data {data_ok}, executor {out is not None}"
        if data_ok:
            accepted += 1
            conformed = conform_feeds(spec, feeds)
            again = ex.predict(conformed)  # what a loader stores runs the same, sample for sample
            assert sorted(again) == sorted(out)
            for k in out:
                np.testing.assert_array_equal(again[k], out[k], err_msg=f"{model}: shape {shape}: output {k}")
    assert accepted >= 2, f"{model}: only {accepted} candidate shapes fit"


@pytest.mark.parametrize("dtype, ok", [(np.float32, True), (np.float64, True), (np.int64, True), (np.uint8, True),
                                       (np.bool_, True), (np.complex64, False), (np.str_, False), (object, False)])
def test_data_and_executor_accept_the_same_dtypes(dtype, ok):
    for model in ("legacy C", "INT32"):
        spec = AGREEMENT_MODELS[model]()
        x = np.ones((2, 4), dtype=dtype)
        data_ok = feed_problems(spec, {"x": x}) == []
        assert data_ok == (_executor_verdict(NumpyExecutor(spec), {"x": x}) is not None) == ok, (model, dtype)
    half = {"x": np.full((2, 4), 0.5)}  # fractions: fine for a float input, not for an INT32 one
    assert feed_problems(AGREEMENT_MODELS["legacy C"](), half) == []
    assert feed_problems(AGREEMENT_MODELS["INT32"](), half) != []
    assert _executor_verdict(NumpyExecutor(AGREEMENT_MODELS["INT32"]()), half) is None


def test_only_test_data_must_be_finite():
    spec = builder_model({"x": (4,)})
    x = np.array([[np.nan, 1, 2, 3]], np.float32)
    assert feed_problems(spec, {"x": x}) == ["'x' contains 1 NaN or infinite value(s)"]
    assert np.isnan(NumpyExecutor(spec).predict({"x": x})["out_x"][0, 0])


def test_the_candidates_reach_every_form():
    """The agreement test's candidates include every form of the convention, so it covers them all."""
    def forms(shape):
        inp = expected_inputs(builder_model({"x": shape}))[0]
        return {(f.n, f.s, f.one_sample, f.x.shape == a.shape)
                for a in map(np.zeros, _candidate_shapes(inp)) for f in [inp.split(a)] if f}

    # legacy (1, 3, 2): (N, 3, 2) with the 1 left out
    assert (3, 1, False, False) in forms((1, 3, 2))
    # legacy (2, 3, 2): exactly (2, 3, 2), (N, 2, 3, 2), (N, S, 2, 3, 2)
    assert {(1, 1, True, False), (3, 1, False, True), (3, 2, False, True)} <= forms((2, 3, 2))
