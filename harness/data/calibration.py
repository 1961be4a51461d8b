"""Calibration data: unlabelled samples for calibration-aware quantization, never the test set.

* :func:`split_dataset` holds a seeded fraction of a dataset out (``calibration=split``):
  the calibration part, the rest (the test figures are computed on it) and a record.
* :func:`load_calibration_file` reads an ``.npz`` / ``.csv`` file with the test data's
  conventions (:func:`~harness.data.load_npz`, :func:`~harness.data.load_csv`), labels ignored.
* :func:`check_disjoint` refuses calibration data that shares a sample with the test set
  (every sample's feeds are hashed row by row), naming ``calibration``.

Example:
    >>> import numpy as np
    >>> from harness.data import Dataset
    >>> ds = Dataset.create("toy", {"x": np.arange(20, dtype=np.float32).reshape(10, 2)}, np.arange(10))
    >>> cal, rest, rec = split_dataset(ds, 0.3, seed=0)
    >>> cal.n, rest.n, rec["calibration_n"], cal.labels is None
    (3, 7, 3, True)
    >>> check_disjoint(cal, rest)
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from harness.data.dataset import Dataset
from harness.data.loaders import load_csv, load_npz
from harness.errors import ConfigError, DataError

__all__ = ["split_dataset", "load_calibration_file", "check_disjoint", "sample_hashes", "same_file"]


def sample_hashes(feeds: Mapping[str, np.ndarray]) -> list[bytes]:
    """One sha256 per sample over every feed's row (in input-name order, dtype and shape included)."""
    names = sorted(feeds)
    arrays = [np.ascontiguousarray(feeds[k]) for k in names]
    n = arrays[0].shape[0]
    heads = [f"{k}:{a.dtype.str}:{a.shape[1:]}\n".encode() for k, a in zip(names, arrays)]
    out = []
    for i in range(n):
        h = hashlib.sha256()
        for head, a in zip(heads, arrays):
            h.update(head)
            h.update(a[i].tobytes())
        out.append(h.digest())
    return out


def check_disjoint(calibration: Dataset, test: Dataset) -> None:
    """Raise :class:`ConfigError` naming ``calibration`` when a calibration sample is also a test sample."""
    if set(calibration.feeds) != set(test.feeds):
        return  # different inputs: no sample can be shared
    if any(calibration.feeds[k].shape[1:] != test.feeds[k].shape[1:] for k in test.feeds):
        return
    test_rows = set(sample_hashes(test.feeds))
    shared = [i for i, h in enumerate(sample_hashes(calibration.feeds)) if h in test_rows]
    if shared:
        shown = ", ".join(str(i) for i in shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        raise ConfigError(
            f"calibration: {len(shared)} of the {calibration.n} calibration samples also appear in the test set "
            f"(calibration sample(s) {shown}): calibrating on test samples would inflate every calibrated result. "
            "Use samples the test set does not contain (calibration=npz/csv with another file), or "
            "calibration=split to hold a fraction of the data out of the test set.")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths are one file (same path, a link to it, or identical bytes)."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if not (pa.is_file() and pb.is_file()):
        return False
    if pa.resolve() == pb.resolve() or os.path.samefile(pa, pb):
        return True
    if pa.stat().st_size != pb.stat().st_size:
        return False
    return hashlib.sha256(pa.read_bytes()).digest() == hashlib.sha256(pb.read_bytes()).digest()


def split_dataset(ds: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """``(calibration, rest, record)``: a seeded random ``fraction`` of ``ds`` (at least one sample,
    at most all but one) held out as unlabelled calibration data; ``rest`` keeps its order and labels.

    Raises:
        ConfigError: ``fraction`` outside (0, 1), or a dataset too small to split (names calibration.fraction).
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"calibration.fraction must be between 0 and 1 (exclusive), got {fraction!r}.")
    if ds.n < 2:
        raise ConfigError(f"calibration=split needs at least 2 samples, the data has {ds.n}.")
    k = min(ds.n - 1, max(1, int(round(float(fraction) * ds.n))))
    # samples with identical feeds go to the same side, so no calibration sample is also a test sample
    groups: dict[bytes, list[int]] = {}
    for i, h in enumerate(sample_hashes(ds.feeds)):
        groups.setdefault(h, []).append(i)
    members = list(groups.values())
    taken: list[int] = []
    for g in np.random.default_rng(int(seed)).permutation(len(members)):
        if len(taken) >= k:
            break
        if len(taken) + len(members[g]) < ds.n:
            taken += members[g]
    cal_idx = np.sort(np.array(taken, dtype=np.int64))
    test_idx = np.setdiff1d(np.arange(ds.n), cal_idx)
    k = int(cal_idx.size)
    if k == 0:
        raise ConfigError(f"calibration=split: every sample of {ds.name} is identical; nothing can be held out.")
    cal = Dataset.create(f"{ds.name}[calibration split]", {n: v[cal_idx] for n, v in ds.feeds.items()}, None,
                         f"{k} of {ds.n} samples of {ds.name} held out for calibration (seed {seed})")
    rest = Dataset.create(f"{ds.name}[test split]", {n: v[test_idx] for n, v in ds.feeds.items()},
                          None if ds.labels is None else ds.labels[test_idx],
                          ds.description + f" (the {ds.n - k} samples not held out for calibration, seed {seed})")
    record = {"kind": "split", "fraction": float(fraction), "seed": int(seed), "source": ds.name,
              "source_sha256": ds.sha256, "source_n": ds.n, "calibration_n": k, "test_n": ds.n - k,
              "calibration_indices_sha256": hashlib.sha256(cal_idx.astype("<i8").tobytes()).hexdigest()}
    return cal, rest, record


def _csv_feature_columns(path: Path, given: Sequence[str] | None) -> list[str] | None:
    """The feature columns of a calibration CSV: ``given``, else every column but ``label``/``y``."""
    if given:
        return list(given)
    import pandas as pd

    try:
        cols = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"calibration: cannot read {str(path)!r} as CSV: {e}") from None
    return [c for c in cols if c not in ("label", "y")]


def load_calibration_file(kind: str, path: str | os.PathLike, model: Any, *, inputs: Mapping[str, str] | None = None,
                          feature_columns: Sequence[str] | None = None) -> Dataset:
    """Calibration samples from ``path`` (``kind`` ``npz`` or ``csv``), read with the test data's
    conventions and fitted to ``model``; labels in the file are ignored.

    Raises:
        DataError / ConfigError: a missing or unreadable file, or data that do not fit the model
            (the message names calibration.path).
    """
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ConfigError(f"calibration.path={str(path)!r} does not exist (calibration={kind} reads a .{kind} file).")
    try:
        if kind == "npz":
            ds = load_npz(p, model, keys=dict(inputs or {}), label_key=None)
        elif kind == "csv":
            ds = load_csv(p, model, feature_columns=_csv_feature_columns(p, feature_columns), label_column=None)
        else:
            raise ConfigError(f"calibration={kind!r} does not read files; use npz or csv.")
    except DataError as e:
        raise DataError(f"calibration.path={str(path)!r}: {e}") from None
    return Dataset.create(f"{ds.name}[calibration]", ds.feeds, None, f"calibration samples from {p}")
