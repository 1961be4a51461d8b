"""harness.data loaders: scikit-learn splits and transforms, .npz and CSV files, Dataset."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from harness.data import Dataset, SKLEARN_DATASETS, load_csv, load_npz, load_sklearn, prepared, split, transform
from harness.errors import DataError
from tests.data._data_models import builder_model, rng_array

FEATURES = {"digits": 64, "iris": 4, "wine": 13, "breast_cancer": 30, "diabetes": 10}
SIZES = {"digits": 1797, "iris": 150, "wine": 178, "breast_cancer": 569, "diabetes": 442}


@pytest.mark.parametrize("name", sorted(SKLEARN_DATASETS))
def test_split_is_seeded_disjoint_and_complete(name):
    a, b, c = split(name, 0), split(name, 0), split(name, 1)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    n = SIZES[name]
    assert a.x_train.shape[0] + a.x_test.shape[0] == n and a.x_test.shape[0] == int(np.ceil(0.25 * n))
    import sklearn.datasets

    x_all = getattr(sklearn.datasets, SKLEARN_DATASETS[name][0])(return_X_y=True)[0].astype(np.float64)
    # train + test is exactly the dataset, row for row (a partition of the multiset of rows)
    assert sorted(r.tobytes() for r in np.vstack([a.x_train, a.x_test])) == sorted(r.tobytes() for r in x_all)
    if a.task == "classification":  # stratified: class shares within one sample of the full share
        for k in np.unique(a.y_train):
            assert abs(np.sum(a.y_test == k) - np.sum(np.r_[a.y_train, a.y_test] == k) * 0.25) <= 1


@pytest.mark.parametrize("name", sorted(SKLEARN_DATASETS))
def test_load_sklearn_every_dataset(name):
    f = FEATURES[name]
    if name == "diabetes":
        model = builder_model({"features": (f,)}, mode="regressor")
    else:
        k = len(np.unique(split(name).y_train))
        model = builder_model({"features": (f,)}, mode="classifier", class_labels=list(range(k)))
    ds = load_sklearn(name, model, transforms="standardize")
    assert ds.feeds["features"].shape == (int(np.ceil(SIZES[name] * 0.25)), f)
    assert ds.feeds["features"].dtype == np.float32
    assert ds.labels.shape == (ds.n,)
    assert ds.name == f"{name}[test,seed=0,standardize]"
    train = split(name).x_train
    np.testing.assert_allclose(ds.feeds["features"], transform(split(name).x_test, ["standardize"], train), rtol=1e-6)


def test_transforms_shapes_and_statistics():
    s = prepared("digits", 0, ["scale01"])
    assert s.x_train.min() == 0.0 and s.x_train.max() == 1.0
    np.testing.assert_allclose(s.x_test, split("digits").x_test / 16.0)
    img = prepared("digits", 0, "scale01+image").x_test
    assert img.shape == (450, 1, 8, 8)
    up = prepared("digits", 0, ["scale01", "image", "upsample32"]).x_test
    assert up.shape == (450, 1, 32, 32)
    np.testing.assert_array_equal(up[:, :, ::4, ::4], img)
    np.testing.assert_array_equal(up[:, :, 3::4, 3::4], img)
    rows = prepared("digits", 0, ["rows"]).x_test
    np.testing.assert_array_equal(rows[5, 2], split("digits").x_test[5, 16:24])
    st = prepared("wine", 0, ["standardize"])
    np.testing.assert_allclose(st.x_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(st.x_train.std(0), 1, atol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: split("mnist"), "Unknown scikit-learn dataset 'mnist'; available: breast_cancer, diabetes"),
    (lambda: split("digits", seed="0"), "seed must be an integer"),
    (lambda: prepared("digits", 0, ["flip"]), "Unknown transform 'flip'; available: scale01"),
    (lambda: prepared("digits", 0, ["upsample32"]), "apply 'image' before it"),
    (lambda: prepared("iris", 0, ["image"]), r"needs samples of shape \(64,\), got \(4,\)"),
])
def test_sklearn_errors(call, match):
    with pytest.raises(DataError, match=match):
        call()


def test_load_sklearn_shape_mismatch_names_the_fix():
    model = builder_model({"image": (1, 8, 8)})
    with pytest.raises(DataError, match=r"'image' has shape \(450, 64\), the model takes \(N, 1, 8, 8\)"):
        load_sklearn("digits", model)
    assert load_sklearn("digits", model, transforms="scale01+image").feeds["image"].shape == (450, 1, 8, 8)


def test_load_sklearn_labels_checked_against_classes():
    model = builder_model({"x": (4,)}, mode="classifier", class_labels=["setosa", "versicolor", "virginica"])
    ds = load_sklearn("iris", model)
    assert set(ds.labels.tolist()) == {"setosa", "versicolor", "virginica"}  # indices -> class labels
    wrong = builder_model({"x": (4,)}, mode="classifier", class_labels=[0, 1])
    with pytest.raises(DataError, match=r"value\(s\) \[2\] are neither class labels nor class indices 0\.\.1"):
        load_sklearn("iris", wrong)


# --- npz -------------------------------------------------------------------------------------

def test_npz_by_input_name_and_x(tmp_path):
    model = builder_model({"pixels": (64,)}, mode="classifier", class_labels=list(range(10)))
    x, y = rng_array((6, 64)), np.arange(6)
    np.savez(tmp_path / "named.npz", pixels=x, y=y)
    np.savez(tmp_path / "x.npz", x=x.astype(np.float64), y=y)
    a, b = load_npz(tmp_path / "named.npz", model), load_npz(tmp_path / "x.npz", model)
    assert a.sha256 == b.sha256 and a.n == 6 and a.labels.tolist() == list(range(6))
    assert a.feeds["pixels"].dtype == np.float32
    np.savez(tmp_path / "nolabels.npz", x=x)
    assert load_npz(tmp_path / "nolabels.npz", model).labels is None
    assert load_npz(tmp_path / "named.npz", model, label_key=None).labels is None


def test_npz_multi_input_and_key_mapping(tmp_path, caplog):
    model = builder_model({"ids": (5,), "mask": (5,)}, int_inputs=("ids",))
    np.savez(tmp_path / "m.npz", tokens=np.arange(10).reshape(2, 5), mask=np.ones((2, 5)), labels=[0, 1],
             extra=np.zeros(3))
    with caplog.at_level(logging.WARNING):
        ds = load_npz(tmp_path / "m.npz", model, keys={"ids": "tokens"}, label_key="labels")
    assert ds.feeds["ids"].dtype == np.int32 and ds.feeds["mask"].dtype == np.float32
    assert "['extra'] are not used" in caplog.text
    with pytest.raises(DataError, match=r"has no array 'ids' for model input 'ids'. Keys in the file: "
                                        r"\['tokens', 'mask', 'labels', 'extra'\]"):
        load_npz(tmp_path / "m.npz", model)


def _save_npy(path, arr) -> None:
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to the name
        np.save(f, arr)


@pytest.mark.parametrize("setup, kwargs, match", [
    (lambda p: p.write_bytes(b"not a zip"), {}, "Cannot read test data"),
    (lambda p: None, {}, "does not exist"),
    (lambda p: _save_npy(p, np.zeros(3)), {}, "holds a single array"),
    (lambda p: np.savez(p, x=np.zeros((3, 8))), {}, r"'pixels' has shape \(3, 8\), the model takes \(N, 64\)"),
    (lambda p: np.savez(p, other=np.zeros((3, 64))), {}, r"no array 'pixels' or 'x'"),
    (lambda p: np.savez(p, x=np.zeros((3, 64))), {"label_key": "target"}, "has no label array 'target'"),
    (lambda p: np.savez(p, x=np.zeros((3, 64))), {"keys": {"img": "x"}}, "'img', which are not model inputs"),
    (lambda p: np.savez(p, x=np.zeros((3, 64)), y=[1, 2, 3, 4]), {}, "4 values but the feeds hold N = 3"),
    (lambda p: np.savez(p, x=np.zeros((3, 64)), y=[1, 2, 11]), {}, r"\[11\] are neither class labels"),
    (lambda p: np.savez(p, x=np.zeros((3, 64)), y=np.array([1, "a", None], dtype=object)), {},
     "label array 'y' cannot be read without pickle"),
])
def test_npz_errors(tmp_path, setup, kwargs, match):
    model = builder_model({"pixels": (64,)}, mode="classifier", class_labels=list(range(10)))
    p = tmp_path / "data.npz"
    setup(p)
    with pytest.raises(DataError, match=match):
        load_npz(p, model, **kwargs)


# --- csv -------------------------------------------------------------------------------------

def test_csv_features_label_and_reshape(tmp_path):
    model = builder_model({"image": (1, 2, 2)}, mode="classifier", class_labels=["a", "b"])
    df = pd.DataFrame({"p0": [0.0, 1.0], "p1": [2.0, 3.0], "p2": [4.0, 5.0], "p3": [6.0, 7.0], "label": ["b", "a"]})
    df.to_csv(tmp_path / "d.csv", index=False)
    ds = load_csv(tmp_path / "d.csv", model)
    np.testing.assert_array_equal(ds.feeds["image"][1, 0], [[1.0, 3.0], [5.0, 7.0]])
    assert ds.labels.tolist() == ["b", "a"]
    df.rename(columns={"label": "cls"}).to_csv(tmp_path / "e.csv", index=False)
    ds2 = load_csv(tmp_path / "e.csv", model, feature_columns=["p0", "p1", "p2", "p3"], label_column="cls")
    assert ds2.sha256 == ds.sha256


def test_csv_multi_input_mapping(tmp_path):
    model = builder_model({"a": (2,), "b": (1,)})
    pd.DataFrame({"x1": [1, 2], "x2": [3, 4], "z": [5, 6], "y": [0, 1]}).to_csv(tmp_path / "m.csv", index=False)
    ds = load_csv(tmp_path / "m.csv", model, feature_columns={"a": ["x1", "x2"], "b": ["z"]})
    assert ds.feeds["a"].tolist() == [[1, 3], [2, 4]] and ds.labels.tolist() == [0, 1]


@pytest.mark.parametrize("content, kwargs, match", [
    ("f1,f2,label\n1,2,0\n3,x,1\n", {}, r"column\(s\) \['f2'\] are not numeric"),
    ("f1,f2,label\n1,2,0\n3,,1\n", {}, r"empty cells \(column: count\) \{'f2': 1\}"),
    ("f1,f2,label\n", {}, "no data rows"),
    ("f1,f2,f3\n1,2,0\n", {}, r"'x' has shape \(1, 3\), the model takes \(N, 2\)"),
    ("f1,f2,label\n1,2,0\n", {"feature_columns": ["f1", "g"]}, r"no column\(s\) \['g'\]; its columns are"),
    ("f1,f2,label\n1,2,0\n", {"label_column": "target"}, "no label column 'target'"),
    ("f1,f2,label,y\n1,2,0,0\n", {}, "both 'label' and 'y' columns"),
    ("f1,f2,label\n1,2,\n", {}, "label column 'label' has 1 empty cell"),
])
def test_csv_errors(tmp_path, content, kwargs, match):
    p = tmp_path / "d.csv"
    p.write_text(content)
    with pytest.raises(DataError, match=match):
        load_csv(p, builder_model({"x": (2,)}), **kwargs)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "none.csv", builder_model({"x": (2,)}))


# --- Dataset -----------------------------------------------------------------------------------

def test_dataset_hash_readonly_take_and_batches():
    feeds = {"b": rng_array((4, 2)), "a": np.arange(4, dtype=np.int32)[:, None]}
    ds = Dataset.create("t", feeds, np.array([0, 1, 0, 1]))
    same = Dataset.create("other name", dict(reversed(list(feeds.items()))), np.array([0, 1, 0, 1]))
    assert ds.sha256 == same.sha256 and len(ds.sha256) == 64
    assert Dataset.create("t", feeds, np.array([0, 1, 1, 1])).sha256 != ds.sha256
    assert Dataset.create("t", feeds, None).sha256 != ds.sha256
    assert Dataset.create("t", {"b": feeds["b"].astype(np.float64), "a": feeds["a"]}, ds.labels).sha256 != ds.sha256
    with pytest.raises(ValueError):
        ds.feeds["b"][0, 0] = 1.0
    feeds["b"][0, 0] = 99.0  # the dataset copied its arrays
    assert ds.feeds["b"][0, 0] != 99.0
    head = ds.take(3)
    assert head.n == 3 and head.labels.tolist() == [0, 1, 0] and head.name == "t[:3]"
    assert [len(y) for _, y in ds.batches(3)] == [3, 1]
    strs = Dataset.create("s", {"x": np.zeros((2, 1))}, np.array(["a", "b"]))
    assert strs.sha256 != Dataset.create("s", {"x": np.zeros((2, 1))}, np.array(["a", "c"])).sha256


@pytest.mark.parametrize("feeds, labels, match", [
    ({}, None, "has no feeds"),
    ({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))}, None, "share one leading sample count"),
    ({"a": np.zeros((2, 1))}, np.zeros(3), r"labels must have shape \(2,\)"),
])
def test_dataset_create_errors(feeds, labels, match):
    with pytest.raises(DataError, match=match):
        Dataset.create("t", feeds, labels)
