"""The inputs of a sweep: the float model, the test data and the calibration data, from the config.

:func:`load_model` reads ``model.path`` or a bundled zoo model;
:func:`load_dataset` builds the test set the ``data`` group describes (the zoo
model's own, scikit-learn, ``.npz`` or ``.csv``) and checks it fits the model;
:func:`load_calibration` reads the ``calibration`` group (a file, a split of
the test data, or a zoo model's training split) and refuses samples shared
with the test set. Every problem raises a :class:`~harness.errors.QsweepError`
naming the key or file.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError


@dataclass
class ModelInput:
    """The float model: its spec, a file-name-safe label, the file it came from, its sha256, its zoo name."""

    spec: Any
    label: str
    path: Path
    sha256: str
    zoo: str | None


def load_model(cfg: Any) -> ModelInput:
    """The float model from ``model.path`` or the zoo (``model.name``)."""
    import quantizer
    from harness import zoo

    if cfg.path:
        path = Path(str(cfg.path)).expanduser()
        spec = quantizer.load(path)
        label, zoo_name = path.stem, None
    else:
        if not cfg.name:
            raise ConfigError("No model given: set model.path=my.mlmodel, or model=<zoo model> "
                              f"({', '.join(zoo.names())}).")
        zoo_name = str(cfg.name)
        path = zoo.path(zoo_name)
        spec = zoo.load_spec(zoo_name)
        label = zoo_name
    return ModelInput(spec, re.sub(r"[^A-Za-z0-9_.-]+", "_", label), path.resolve(),
                      hashlib.sha256(path.read_bytes()).hexdigest(), zoo_name)


def load_dataset(cfg: Any, model: ModelInput) -> Any:
    """The test set from the ``data`` config, fitted to the model (checked by the loaders)."""
    from harness import data as hdata
    from harness import zoo

    kind = str(cfg.kind)
    labels = None if cfg.labels is None else str(cfg.labels)
    if kind == "zoo":
        if model.zoo is None:
            raise ConfigError(
                f"data=zoo is the test set of a bundled zoo model, but model.path={str(model.path)!r} is your own "
                "model: choose its test data, e.g. data=npz data.path=test.npz (or data=csv / "
                "data=sklearn data.name=digits).")
        ds = zoo.load_data(model.zoo, model.spec)
        if labels is None:
            ds = hdata.Dataset.create(ds.name, ds.feeds, None, ds.description + " (labels ignored)")
    elif kind == "sklearn":
        if not cfg.name:
            raise ConfigError(f"data=sklearn needs data.name ({', '.join(hdata.SKLEARN_DATASETS)}).")
        ds = hdata.load_sklearn(str(cfg.name), model.spec, transforms=cfg.transforms, seed=int(cfg.seed),
                                label_mode=str(cfg.label_mode))
        if labels is None:
            ds = hdata.Dataset.create(ds.name, ds.feeds, None, ds.description + " (labels ignored)")
    elif kind in ("npz", "csv"):
        if not cfg.path:
            raise ConfigError(f"data={kind} needs data.path=<file.{kind}>.")
        path = Path(str(cfg.path)).expanduser()
        if kind == "npz":
            key = "y" if labels == "auto" else labels
            ds = hdata.load_npz(path, model.spec, keys=dict(cfg.inputs or {}), label_key=key,
                                label_mode=str(cfg.label_mode))
        else:
            ds = hdata.load_csv(path, model.spec, feature_columns=list(cfg.feature_columns) if cfg.feature_columns
                                else None, label_column=labels, label_mode=str(cfg.label_mode))
    else:
        raise ConfigError(f"data.kind={kind!r} is not a data source; choose zoo, sklearn, npz or csv.")
    if cfg.limit is not None:
        if cfg.limit < 1:
            raise ConfigError(f"data.limit must be at least 1 (or null for all samples), got {cfg.limit}.")
        if cfg.limit < ds.n:
            ds = hdata.Dataset.create(ds.name + f"[:{cfg.limit}]", {k: v[:cfg.limit] for k, v in ds.feeds.items()},
                                      None if ds.labels is None else ds.labels[:cfg.limit],
                                      ds.description + f" (first {cfg.limit} samples)")
    return ds


CALIBRATION_KINDS = ("none", "split", "npz", "csv", "zoo")


@dataclass
class CalibrationInput:
    """The calibration samples (None for ``calibration=none``), the test set the figures are computed
    on (the rest of a split), and the record written to environment.json / summary.json."""

    dataset: Any
    test: Any
    record: dict[str, Any] = field(default_factory=dict)


def load_calibration(cfg: Any, data_cfg: Any, model: ModelInput, test: Any) -> CalibrationInput:
    """The ``calibration`` group: samples for the calibration-aware algorithms, never test samples.

    Raises:
        ConfigError: an unknown kind, a missing path, the test file itself, or calibration samples
            that also appear in the test set (the message names ``calibration``).
    """
    from harness import data as hdata
    from harness import zoo
    from harness.data import calibration as hcal

    kind = str(cfg.kind)
    if kind not in CALIBRATION_KINDS:
        raise ConfigError(f"calibration.kind={kind!r} is not a calibration source; choose one of "
                          f"{', '.join(CALIBRATION_KINDS)} (e.g. calibration=split).")
    if kind == "none":
        return CalibrationInput(None, test, {"kind": "none"})
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"calibration.limit must be at least 1 (or null for every sample), got {cfg.limit}.")
    record: dict[str, Any] = {"kind": kind}
    if kind == "split":
        cal, test, split = hdata.calibration.split_dataset(test, float(cfg.fraction), int(cfg.seed))
        record["split"] = split
    elif kind == "zoo":
        if model.zoo is None or zoo.info(model.zoo)["dataset"].get("source") != "sklearn":
            raise ConfigError("calibration=zoo reads a zoo model's training split, which this model "
                              f"({model.label}) does not have: use calibration=split, or calibration=npz/csv "
                              "with calibration.path=...")
        train = zoo.load_data(model.zoo, model.spec, part="train")
        cal = hdata.Dataset.create(train.name, train.feeds, None, train.description + " (labels ignored)")
    else:
        if not cfg.path:
            raise ConfigError(f"calibration={kind} needs calibration.path=<file.{kind}>.")
        data_path = data_cfg.get("path") if str(data_cfg.kind) in ("npz", "csv") else None
        if data_path and hcal.same_file(str(cfg.path), str(data_path)):
            raise ConfigError(f"calibration.path={str(cfg.path)!r} is the test data file (data.path): calibrating on "
                              "the test set is refused. Give other samples, or use calibration=split.")
        cal = hcal.load_calibration_file(kind, str(cfg.path), model.spec, inputs=dict(cfg.inputs or data_cfg.get(
            "inputs") or {}), feature_columns=cfg.feature_columns or data_cfg.get("feature_columns"))
        record["path"] = str(Path(str(cfg.path)).expanduser().resolve())
    hcal.check_disjoint(cal, test)
    available = cal.n
    if cfg.limit is not None and cal.n > cfg.limit:
        cal = cal.take(int(cfg.limit))
    record.update(name=cal.name, sha256=cal.sha256, available=available, samples=cal.n)
    return CalibrationInput(cal, test, record)
