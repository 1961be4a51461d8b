"""Calibration data: the seeded split, files read with the test data's conventions, and the refusals."""
import numpy as np
import pandas as pd
import pytest

from harness.data import Dataset
from harness.data.calibration import check_disjoint, load_calibration_file, same_file, split_dataset
from harness.errors import ConfigError, DataError


def toy(n=20, dup=()):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    for i, j in dup:
        x[j] = x[i]
    return Dataset.create("toy", {"x": x}, np.arange(n) % 2)


def test_split_is_seeded_disjoint_and_keeps_the_rest_in_order():
    ds = toy()
    cal, rest, rec = split_dataset(ds, 0.25, seed=3)
    again, _, rec2 = split_dataset(ds, 0.25, seed=3)
    other, _, rec3 = split_dataset(ds, 0.25, seed=4)
    assert cal.n == 5 and rest.n == 15 and cal.labels is None and rest.labels is not None
    assert cal.sha256 == again.sha256 and rec == rec2 and rec3["calibration_indices_sha256"] != rec["calibration_indices_sha256"]
    rows = {tuple(r) for r in ds.feeds["x"]}
    assert {tuple(r) for r in cal.feeds["x"]} | {tuple(r) for r in rest.feeds["x"]} == rows
    assert not {tuple(r) for r in cal.feeds["x"]} & {tuple(r) for r in rest.feeds["x"]}
    first = rest.feeds["x"][:, 0] / 3
    assert np.all(np.diff(first) > 0)  # original order
    np.testing.assert_array_equal(rest.labels, (first.astype(int)) % 2)
    assert rec["calibration_n"] == 5 and rec["test_n"] == 15 and rec["seed"] == 3 and rec["source_sha256"] == ds.sha256
    check_disjoint(cal, rest)


def test_duplicate_samples_stay_on_one_side():
    ds = toy(20, dup=[(0, i) for i in range(1, 8)])  # 8 copies of one sample
    for seed in range(6):
        cal, rest, _ = split_dataset(ds, 0.3, seed=seed)
        check_disjoint(cal, rest)


def test_calibration_samples_in_the_test_set_are_refused():
    ds = toy()
    shared = Dataset.create("cal", {"x": ds.feeds["x"][[2, 11]] + np.float32([[0, 0, 0], [0, 0, 1]])}, None)
    with pytest.raises(ConfigError, match=r"calibration: 1 of the 2 calibration samples also appear in the test set"):
        check_disjoint(shared, ds)
    with pytest.raises(ConfigError, match="calibration.fraction"):
        split_dataset(ds, 1.0)


def test_calibration_files_use_the_test_datas_conventions(tmp_path):
    from harness import zoo

    spec, test = zoo.load("digits_mlp")
    x = test.feeds["input"][:30] if "input" in test.feeds else next(iter(test.feeds.values()))[:30]
    name = next(iter(test.feeds))
    np.savez(tmp_path / "cal.npz", **{name: x + 0.01, "y": np.zeros(30, np.int64)})
    cal = load_calibration_file("npz", tmp_path / "cal.npz", spec)
    assert cal.n == 30 and cal.labels is None and name in cal.feeds
    df = pd.DataFrame(x.reshape(30, -1) + 0.02, columns=[f"f{i}" for i in range(x[0].size)])
    df["label"] = 3
    df.to_csv(tmp_path / "cal.csv", index=False)
    cal_csv = load_calibration_file("csv", tmp_path / "cal.csv", spec)  # the label column is not a feature
    assert cal_csv.n == 30 and cal_csv.feeds[name].shape == x.shape
    with pytest.raises(ConfigError, match="calibration.path"):
        load_calibration_file("npz", tmp_path / "missing.npz", spec)
    np.savez(tmp_path / "bad.npz", nope=x)
    with pytest.raises(DataError, match="calibration.path"):
        load_calibration_file("npz", tmp_path / "bad.npz", spec)


def test_same_file(tmp_path):
    a = tmp_path / "a.npz"
    np.savez(a, x=np.zeros(3))
    b = tmp_path / "b.npz"
    b.write_bytes(a.read_bytes())
    (tmp_path / "link.npz").symlink_to(a)
    c = tmp_path / "c.npz"
    np.savez(c, x=np.ones(3))
    assert same_file(a, a) and same_file(a, tmp_path / "link.npz") and same_file(a, b) and not same_file(a, c)
