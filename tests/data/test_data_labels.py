"""harness.data.labels: class labels vs indices, and the errors for labels that do not match."""
from __future__ import annotations

import numpy as np
import pytest

from harness.data import class_labels, label_indices, match_labels, task_of
from harness.errors import DataError
from tests.data._data_models import builder_model

INT_CLF = builder_model({"x": (3,)}, mode="classifier", class_labels=[3, 5, 7])
STR_CLF = builder_model({"x": (3,)}, mode="classifier", class_labels=["cat", "dog", "eel"])
DIGIT_STR_CLF = builder_model({"x": (3,)}, mode="classifier", class_labels=["1", "2", "3"])
PLAIN = builder_model({"x": (3,)})
REGRESSOR = builder_model({"x": (3,)}, mode="regressor")


def test_class_labels_and_task():
    np.testing.assert_array_equal(class_labels(INT_CLF), [3, 5, 7])
    assert class_labels(STR_CLF).tolist() == ["cat", "dog", "eel"]
    assert class_labels(PLAIN) is None
    assert (task_of(INT_CLF), task_of(REGRESSOR), task_of(PLAIN)) == ("classifier", "regressor", "neuralNetwork")


def test_int_labels_given_as_labels_or_indices():
    np.testing.assert_array_equal(match_labels(INT_CLF, [3, 7, 5, 3]), [3, 7, 5, 3])
    np.testing.assert_array_equal(match_labels(INT_CLF, [0, 2, 1, 0]), [3, 7, 5, 3])   # indices
    np.testing.assert_array_equal(match_labels(INT_CLF, np.array([3.0, 7.0])), [3, 7])  # whole floats
    assert match_labels(INT_CLF, [3, 7]).dtype == np.int64


def test_auto_prefers_labels_when_both_readings_fit():
    clf = builder_model({"x": (4,)}, mode="classifier", class_labels=[0, 1, 2, 5])
    np.testing.assert_array_equal(match_labels(clf, [2, 1, 0]), [2, 1, 0])
    np.testing.assert_array_equal(match_labels(clf, [2, 1, 0], label_mode="indices"), [2, 1, 0])
    np.testing.assert_array_equal(match_labels(clf, [3, 1], label_mode="indices"), [5, 1])
    with pytest.raises(DataError, match=r"not the model's class labels: unknown value\(s\) \[3\].*label_mode='indices'"):
        match_labels(clf, [3, 1], label_mode="labels")


def test_string_labels():
    assert match_labels(STR_CLF, np.array(["dog", "cat"])).tolist() == ["dog", "cat"]
    assert match_labels(STR_CLF, np.array([b"eel", b"dog"])).tolist() == ["eel", "dog"]  # bytes from npz
    assert match_labels(STR_CLF, [2, 0]).tolist() == ["eel", "cat"]                     # indices
    # whole numbers read as the text of string class labels first (CSV columns of digits)
    assert match_labels(DIGIT_STR_CLF, [1, 3]).tolist() == ["1", "3"]
    assert match_labels(DIGIT_STR_CLF, [0, 1], label_mode="indices").tolist() == ["1", "2"]


@pytest.mark.parametrize("model, labels, kwargs, match", [
    (INT_CLF, [3, 4, 9], {}, r"value\(s\) \[4, 9\] are neither class labels nor class indices 0\.\.2. "
                             r"The model's 3 class labels are \[3, 5, 7\]"),
    (STR_CLF, ["cat", "cow"], {}, r"value\(s\) \['cow'\] are neither"),
    (STR_CLF, [0, 3], {"label_mode": "indices"}, r"not class indices 0\.\.2: offending value\(s\) \[3\]"),
    (INT_CLF, [3.5, 5], {}, r"\[3\.5\]"),
    (INT_CLF, [3, 5], {"n": 3}, "hold 2 values but the feeds hold N = 3"),
    (INT_CLF, np.zeros((2, 2)), {}, r"shape \(N,\)"),
    (INT_CLF, [], {}, "empty"),
    (INT_CLF, [3], {"label_mode": "guess"}, "label_mode must be one of"),
    (PLAIN, ["a", "b"], {}, "declares no class labels"),
    (REGRESSOR, [1.0, np.nan], {}, "NaN"),
])
def test_bad_labels(model, labels, kwargs, match):
    with pytest.raises(DataError, match=match):
        match_labels(model, labels, source="test.npz", **kwargs)


def test_unlabelled_plain_and_regression():
    assert match_labels(INT_CLF, None) is None
    y = match_labels(PLAIN, np.array([0.0, 2.0, 1.0]))
    assert y.dtype == np.int64 and y.tolist() == [0, 2, 1]     # class indices of a probability output
    y = match_labels(REGRESSOR, np.array([[1.0], [2.0]]))        # (N, 1) targets
    assert y.dtype == np.float64 and y.tolist() == [1.0, 2.0]
    assert match_labels(REGRESSOR, [1, 2]).dtype == np.float64   # regression targets stay floats


def test_label_indices():
    np.testing.assert_array_equal(label_indices(np.array([7, 3, 5]), np.array([3, 5, 7])), [2, 0, 1])
    np.testing.assert_array_equal(label_indices(np.array(["b", "a"]), np.array(["b", "a"])), [0, 1])
    with pytest.raises(DataError):
        label_indices(np.array([4]), np.array([3, 5, 7]))
