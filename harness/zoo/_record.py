"""Helpers the zoo's training scripts share: save a model and write its metadata.

Not imported at qsweep run time; the training scripts use it (torch is never
imported here).
"""
from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

ZOO_DIR = Path(__file__).resolve().parent


def _weight_params_count(msg) -> int:
    """Number of stored weight values in every WeightParams below ``msg``."""
    total = 0
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        items = value if fd.is_repeated else [value]
        for item in items:
            if fd.message_type.name == "WeightParams":
                total += _wp_count(item)
            else:
                total += _weight_params_count(item)
    return total


def _wp_count(wp) -> int:
    if len(wp.floatValue):
        return len(wp.floatValue)
    if len(wp.float16Value):
        return len(wp.float16Value) // 2
    if wp.HasField("quantization"):
        nbits = wp.quantization.numberOfBits
        return len(wp.rawValue) * 8 // nbits
    return len(wp.rawValue) // 4 + len(wp.int8RawValue)


def weight_count(spec) -> int:
    """Number of weight values stored in the model's layers (float32 models: exact)."""
    kind = spec.WhichOneof("Type")
    return _weight_params_count(getattr(spec, kind))


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


def save_and_record(spec, name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Save ``spec`` as ``<name>.mlmodel`` in the zoo folder and write ``<name>.json``.

    ``meta`` holds description, task, dataset, metrics and training details; this adds
    the file name, inputs/outputs, model type, weight count, file size and sha256.
    """
    path = ZOO_DIR / f"{name}.mlmodel"
    data = spec.SerializeToString()
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
        metric["higher_is_better"] = metric["name"] in ("accuracy", "r2")
        record.setdefault("metrics", {metric["name"]: metric["value"]})
    ds = record.get("dataset", {})
    if ds.get("source") == "sklearn":
        from harness.data import load_sklearn

        test = load_sklearn(ds["name"], spec, transforms=ds.get("transforms"), seed=ds["split_seed"])
        ds["sha256"] = test.sha256
    record.setdefault("training", {})["python"] = platform.python_version()
    (ZOO_DIR / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return record


def versions(*modules: str) -> dict[str, str]:
    """Versions of the named packages (for the training record)."""
    from importlib.metadata import version

    return {m: version(m) for m in modules}


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(y)))
