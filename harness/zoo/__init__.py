"""The bundled model zoo: small Core ML neuralnetwork models trained on real data.

Each model ships as ``<name>.mlmodel`` with ``<name>.json`` (description, task,
inputs/outputs, dataset + transforms + split seed, the float metric recorded on
the test set at training time, weight count, file size, sha256) and the script
that trained it (``train_<name>.py``; the torch extra for the converted ones).

Example:
    >>> from harness import zoo
    >>> zoo.names()
    ['diabetes_mlp', 'digits_cnn', 'digits_lstm', 'digits_mlp', 'digits_resnet']
    >>> spec, test = zoo.load("digits_cnn")
    >>> test.n, zoo.info("digits_cnn")["metric"]["name"]
    (450, 'accuracy')
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, DataError

ZOO_DIR = Path(__file__).resolve().parent
log = logging.getLogger(__name__)

__all__ = ["names", "info", "path", "load", "load_spec", "load_data"]


def names() -> list[str]:
    """Names of the bundled models (those with both a ``.json`` and a ``.mlmodel`` file), sorted."""
    return sorted(p.stem for p in ZOO_DIR.glob("*.json") if (ZOO_DIR / f"{p.stem}.mlmodel").is_file())


def _check(name: str) -> None:
    if not isinstance(name, str) or name not in names():
        raise ConfigError(f"Unknown zoo model {name!r}; available: {', '.join(names()) or '(none)'}.")


@functools.lru_cache(maxsize=None)
def _info(name: str) -> dict[str, Any]:
    return json.loads((ZOO_DIR / f"{name}.json").read_text())


def info(name: str) -> dict[str, Any]:
    """The model's metadata (a copy): description, task, inputs, outputs, dataset, metric, sizes.

    Raises:
        ConfigError: ``name`` is not a zoo model (lists the available ones).
    """
    _check(name)
    return copy.deepcopy(_info(name))


def path(name: str) -> Path:
    """The ``.mlmodel`` file of a zoo model."""
    _check(name)
    return ZOO_DIR / _info(name)["file"]


def load_spec(name: str):
    """The model's spec (``Model_pb2.Model``), verified against the recorded sha256."""
    p = path(name)
    data = p.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != _info(name)["sha256"]:
        raise DataError(
            f"Zoo model file {p} does not match its recorded sha256 ({digest[:12]}… != "
            f"{_info(name)['sha256'][:12]}…); reinstall qsweep or re-run its training script."
        )
    from quantizer.coremltools_quiet import coremltools

    spec = coremltools().proto.Model_pb2.Model()
    spec.ParseFromString(data)
    return spec


def load_data(name: str, spec=None, part: str = "test"):
    """The model's test set (the held-out split it was trained against) as a Dataset."""
    from harness.data import load_sklearn

    meta = info(name)
    ds = meta["dataset"]
    if spec is None:
        spec = load_spec(name)
    data = load_sklearn(ds["name"], spec, transforms=ds.get("transforms"), seed=ds["split_seed"], part=part)
    if part == "test" and ds.get("sha256") and data.sha256 != ds["sha256"]:
        log.warning(
            "zoo model %s: the %s test set differs from the one recorded at training time "
            "(sha256 %s… != %s…; another scikit-learn version?); its recorded metric may not apply",
            name, ds["name"], data.sha256[:12], ds["sha256"][:12],
        )
    return data


def load(name: str):
    """``(spec, Dataset)``: the zoo model and its matching test set.

    Raises:
        ConfigError: unknown name (the message lists the available models).
    """
    spec = load_spec(name)
    return spec, load_data(name, spec)
