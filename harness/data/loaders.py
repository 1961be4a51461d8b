"""Loaders: test data from scikit-learn, ``.npz`` and CSV files, fitted to a model.

Every loader returns a :class:`~harness.data.Dataset` whose feeds passed
:func:`~harness.data.check_feeds` (names, shapes, dtypes) and whose labels passed
:func:`~harness.data.match_labels`, so nothing is evaluated on data that does
not fit the model.
"""
from __future__ import annotations

import logging
import os
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

from harness.data.dataset import Dataset
from harness.data.labels import match_labels
from harness.data.model_inputs import (
    InputSpec, as_spec, conform_feeds, describe_inputs, expected_inputs,
)
from harness.data import sklearn_sets
from harness.errors import DataError

log = logging.getLogger(__name__)


def _single_input(inputs: list[InputSpec], input_name: str | None, source: str) -> InputSpec:
    if input_name is not None:
        for inp in inputs:
            if inp.name == input_name:
                return inp
        raise DataError(
            f"input_name={input_name!r} is not an input of the model; its inputs are "
            + ", ".join(f"'{i.name}'" for i in inputs) + "."
        )
    if len(inputs) != 1:
        raise DataError(
            f"{source} provides one feature array but the model has {len(inputs)} inputs:\n"
            + "\n".join("  " + i.describe() for i in inputs)
            + "\nUse a .npz file with one array per input name."
        )
    return inputs[0]


def load_sklearn(name: str, model: Any, *, transforms: Sequence[str] | str | None = None, seed: int = 0,
                 part: str = "test", input_name: str | None = None, label_mode: str = "auto") -> Dataset:
    """A bundled scikit-learn dataset's test (or train) part, fitted to the model's input.

    Args:
        name: ``digits``, ``iris``, ``wine``, ``breast_cancer`` or ``diabetes``.
        model: a spec, ``MLModel`` or path; must have one input (or pass ``input_name``).
        transforms: named transforms (see :mod:`harness.data.sklearn_sets`), e.g.
            ``["scale01", "image"]`` or ``"scale01+image"``.
        seed: the split seed (the zoo records the one its model was trained with).
        part: ``"test"`` (default) or ``"train"``.
        input_name: the input the features feed, for a model with several inputs.
        label_mode: how to read labels for a classifier (see :mod:`harness.data.labels`).

    Example:
        >>> from harness import zoo
        >>> spec, _ = zoo.load("digits_mlp")
        >>> ds = load_sklearn("digits", spec, transforms="scale01")
        >>> ds.n
        450
    """
    if part not in ("test", "train"):
        raise DataError(f"part must be 'test' or 'train', got {part!r}.")
    spec = as_spec(model)
    s = sklearn_sets.prepared(name, seed, transforms)
    x, y = (s.x_test, s.y_test) if part == "test" else (s.x_train, s.y_train)
    dname = sklearn_sets.dataset_name(name, seed, transforms, part)
    source = f"scikit-learn {dname}"
    inp = _single_input(expected_inputs(spec), input_name, source)
    if len(expected_inputs(spec)) != 1:
        raise DataError(f"{source} feeds only input '{inp.name}' but the model needs all of:\n{describe_inputs(spec)}")
    feeds = conform_feeds(spec, {inp.name: x}, source)
    labels = match_labels(spec, y, x.shape[0], label_mode=label_mode, source=source)
    t = sklearn_sets.transforms_text(transforms)
    desc = (f"scikit-learn '{name}' {part} split (test_size={sklearn_sets.TEST_SIZE}, seed={seed}"
            + (", stratified" if s.task == "classification" else "") + ")"
            + (f", transforms {t}" if t else ""))
    return Dataset.create(dname, feeds, labels, desc)


def load_npz(path: str | os.PathLike, model: Any, *, keys: Mapping[str, str] | None = None,
             label_key: str | None = "y", label_mode: str = "auto") -> Dataset:
    """Test data from a ``.npz`` file: one array per model input plus the labels.

    Which key feeds which input: an explicit ``keys`` mapping (input name -> npz
    key) wins; otherwise each input reads the key equal to its name, and a
    single-input model also accepts the key ``x``. Labels are read from
    ``label_key`` (default ``y``); when that key is absent the data has no
    labels (pass ``label_key=None`` to ignore labels in the file). Keys used for
    nothing are reported in a warning.

    Raises:
        DataError: missing/unreadable file, a needed key absent (lists the keys in
            the file), shapes/dtypes that do not fit, or labels that do not match.
    """
    p = os.fspath(path)
    source = f"{p!r}"
    try:
        npz = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"Test data file {p!r} does not exist.") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"Cannot read test data {p!r} as a .npz file: {e}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{p!r} holds a single array (.npy); save the data with numpy.savez(..., x=..., y=...).")
    with npz:
        present = list(npz.files)
        spec = as_spec(model)
        inputs = expected_inputs(spec)
        keys = dict(keys or {})
        unknown = [k for k in keys if k not in {i.name for i in inputs}]
        if unknown:
            raise DataError(
                f"keys maps {', '.join(repr(u) for u in unknown)}, which are not model inputs; the model's inputs are "
                + ", ".join(f"'{i.name}'" for i in inputs) + "."
            )
        feeds: dict[str, np.ndarray] = {}
        used: set[str] = set()
        for inp in inputs:
            key = keys.get(inp.name)
            if key is None:
                if inp.name in present:
                    key = inp.name
                elif len(inputs) == 1 and "x" in present:
                    key = "x"
            if key is None or key not in present:
                wanted = repr(key) if key is not None else (
                    f"'{inp.name}'" + (" or 'x'" if len(inputs) == 1 else ""))
                raise DataError(
                    f"{source} has no array {wanted} for model input '{inp.name}'. Keys in the file: "
                    f"{present}. The model expects:\n{describe_inputs(spec)}\n"
                    "Name each array after its input (or pass keys={input: key})."
                )
            try:
                feeds[inp.name] = npz[key]
            except ValueError as e:  # object arrays need pickle
                raise DataError(f"{source}: array {key!r} cannot be read without pickle ({e}); save numeric arrays.") from None
            used.add(key)
        y = None
        if label_key is not None:
            if label_key in present:
                try:
                    y = npz[label_key]
                except ValueError as e:  # object arrays need pickle
                    raise DataError(f"{source}: label array {label_key!r} cannot be read without pickle ({e}); "
                                    "save labels as numbers or fixed-width strings (numpy.str_).") from None
                used.add(label_key)
            elif label_key != "y":
                raise DataError(f"{source} has no label array {label_key!r}. Keys in the file: {present}.")
        ignored = [k for k in present if k not in used and not (label_key is None and k == "y")]  # y: ignored labels
        if ignored:
            log.warning("%s: arrays %s are not used (not model inputs or labels)", p, ignored)
    feeds = conform_feeds(spec, feeds, source)
    n = next(iter(feeds.values())).shape[0]
    labels = match_labels(spec, y, n, label_mode=label_mode, source=source)
    name = os.path.basename(p)
    return Dataset.create(name, feeds, labels, f"npz file {p}")


def load_csv(path: str | os.PathLike, model: Any, *, feature_columns: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
             label_column: str | None = "auto", label_mode: str = "auto", **read_csv_kwargs: Any) -> Dataset:
    """Test data from a CSV file (read with pandas): one row per sample.

    Args:
        path: the CSV file (with a header row).
        model: a spec, ``MLModel`` or path.
        feature_columns: the columns holding features, in the order the model
            reads them; default: every column except the label column. For a
            model with several inputs, a mapping input name -> columns. Each row's
            values are reshaped (row-major) to the input's per-sample shape,
            e.g. 64 columns -> (1, 8, 8).
        label_column: the column with labels; ``"auto"`` (default) uses a column
            named ``label`` or ``y`` when present (no labels otherwise); None: no labels.
        label_mode: how to read classifier labels (see :mod:`harness.data.labels`).
        **read_csv_kwargs: passed to :func:`pandas.read_csv` (``sep``, ``comment``, ...).

    Raises:
        DataError: missing file, unknown columns (lists the file's columns), non-numeric
            or empty feature cells (names the column), or data that do not fit.
    """
    import pandas as pd

    p = os.fspath(path)
    source = f"{p!r}"
    try:
        df = pd.read_csv(p, **read_csv_kwargs)
    except FileNotFoundError:
        raise DataError(f"Test data file {p!r} does not exist.") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"Cannot read test data {p!r} as CSV: {e}") from None
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if df.shape[0] == 0:
        raise DataError(f"{source} has a header but no data rows.")
    if label_column == "auto":
        found = [c for c in ("label", "y") if c in columns]
        if len(found) > 1:
            raise DataError(f"{source} has both 'label' and 'y' columns; pass label_column= to say which holds labels.")
        label_column = found[0] if found else None
    if label_column is not None and label_column not in columns:
        raise DataError(f"{source} has no label column {label_column!r}; its columns are {columns}.")
    spec = as_spec(model)
    inputs = expected_inputs(spec)
    if isinstance(feature_columns, Mapping):
        mapping = {k: list(v) for k, v in feature_columns.items()}
    else:
        cols = list(feature_columns) if feature_columns is not None else [c for c in columns if c != label_column]
        inp = _single_input(inputs, None, source)
        mapping = {inp.name: cols}
    feeds = {}
    for input_name, cols in mapping.items():
        missing = [c for c in cols if c not in columns]
        if missing:
            raise DataError(f"{source} has no column(s) {missing}; its columns are {columns}.")
        if not cols:
            raise DataError(f"{source}: no feature columns for input '{input_name}'.")
        block = df[cols]
        bad = [c for c in cols if not pd.api.types.is_numeric_dtype(block[c]) or pd.api.types.is_bool_dtype(block[c])]
        if bad:
            raise DataError(f"{source}: feature column(s) {bad} are not numeric; convert or exclude them.")
        empty = {c: int(n) for c, n in block.isna().sum().items() if n}
        if empty:
            raise DataError(f"{source}: feature column(s) have empty cells (column: count) {empty}.")
        arr = block.to_numpy()
        spec_inp = next((i for i in inputs if i.name == input_name), None)
        if spec_inp is not None and int(np.prod(spec_inp.sample_shape)) == arr.shape[1] and spec_inp.enumerated is None \
                and spec_inp.ranges is None:
            arr = arr.reshape((arr.shape[0],) + spec_inp.sample_shape)
        feeds[input_name] = arr
    feeds = conform_feeds(spec, feeds, source)
    y = None
    if label_column is not None:
        col = df[label_column]
        if col.isna().any():
            raise DataError(f"{source}: label column {label_column!r} has {int(col.isna().sum())} empty cell(s).")
        y = col.to_numpy()
        if y.dtype == object:
            y = y.astype(str)
    labels = match_labels(spec, y, df.shape[0], label_mode=label_mode, source=source)
    return Dataset.create(os.path.basename(p), feeds, labels, f"CSV file {p}")
