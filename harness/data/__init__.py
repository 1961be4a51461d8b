"""Test data for qsweep: model feeds (by input name, in the model's layout) and labels.

* :class:`Dataset` — feeds, labels and a content hash.
* loaders — :func:`load_sklearn` (bundled scikit-learn datasets with the seeded
  split the zoo was trained on), :func:`load_npz`, :func:`load_csv`.
* :mod:`~harness.data.model_inputs` — the one model-input contract (what a
  model declares, which feeds fit, how they are conformed), shared with the
  executors; :func:`check_feeds` reports name/shape/dtype mismatches before any
  evaluation, stating what the model expects.
* :func:`match_labels` — labels as a classifier's class labels or their indices.
* :mod:`~harness.data.calibration` — calibration samples (a seeded split, or a file read with
  the test data's conventions) and the check that none of them is a test sample.

Example:
    >>> from harness import zoo
    >>> from harness.data import load_sklearn
    >>> spec, _ = zoo.load("digits_cnn")
    >>> ds = load_sklearn("digits", spec, transforms="scale01+image")
    >>> ds.feeds["image"].shape
    (450, 1, 8, 8)
"""
from harness.data.dataset import Dataset, data_sha256
from harness.data.labels import LABEL_MODES, class_labels, label_indices, match_labels, task_of
from harness.data.loaders import load_csv, load_npz, load_sklearn
from harness.data.model_inputs import (
    Feed, InputSpec, as_spec, check_feeds, conform_feeds, describe_inputs, expected_inputs, feed_problems, split_feeds,
)
from harness.data.sklearn_sets import SKLEARN_DATASETS, TRANSFORMS, Split, prepared, split, transform

__all__ = [
    "Dataset", "data_sha256", "LABEL_MODES", "class_labels", "label_indices", "match_labels", "task_of",
    "load_csv", "load_npz", "load_sklearn", "Feed", "InputSpec", "as_spec", "check_feeds", "conform_feeds",
    "describe_inputs", "expected_inputs", "feed_problems", "split_feeds", "SKLEARN_DATASETS", "TRANSFORMS", "Split",
    "prepared", "split", "transform",
]
