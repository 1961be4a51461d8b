"""The bundled zoo: metadata, package files, test sets, and the recorded float metric reproduced
by the numpy executor."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

import quantizer
from harness import metrics, zoo
from harness.data import check_feeds, class_labels, split
from harness.errors import ConfigError

EXPECTED = ["diabetes_mlp", "digits_cnn", "digits_lstm", "digits_mlp", "digits_resnet"]
MODELS = [n for n in EXPECTED if n in zoo.names()]
MAX_BYTES = 12 * 1024 * 1024


def test_names_lists_the_bundled_models():
    assert zoo.names() == EXPECTED


def test_unknown_name_lists_available_models():
    with pytest.raises(ConfigError, match=r"Unknown zoo model 'resnet50'; available: diabetes_mlp, digits_cnn"):
        zoo.load("resnet50")
    with pytest.raises(ConfigError, match="Unknown zoo model"):
        zoo.info("")


@pytest.mark.parametrize("name", MODELS)
def test_metadata_describes_the_file(name):
    meta = zoo.info(name)
    data = zoo.path(name).read_bytes()
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["file_size"] == len(data) < MAX_BYTES
    spec = zoo.load_spec(name)
    assert meta["model_type"] == spec.WhichOneof("Type")
    assert [i["name"] for i in meta["inputs"]] == [f.name for f in spec.description.input]
    assert meta["outputs"] == [f.name for f in spec.description.output]
    assert meta["weight_count"] == sum(t.count for t in quantizer.weight_tensors(spec))
    assert meta["task"] in ("classification", "regression")
    assert meta["description"] and meta["training"]["script"] == f"harness/zoo/train_{name}.py"
    assert meta["metric"]["name"] in ("accuracy", "rmse")
    assert (zoo.path(name).parent / f"train_{name}.py").is_file()
    if meta["task"] == "classification":
        assert meta["metric"]["higher_is_better"] and meta["probability_output"] in meta["outputs"]
    # converted models: explicit, named outputs (no var_<n>)
    assert not any(o.startswith("var_") for o in meta["outputs"])


@pytest.mark.parametrize("name", MODELS)
def test_load_returns_the_held_out_test_set(name, zoo_model):
    spec, ds = zoo_model(name)
    meta = zoo.info(name)
    check_feeds(spec, ds.feeds)
    assert ds.sha256 == meta["dataset"]["sha256"]
    assert ds.n == meta["dataset"]["n"]
    s = split(meta["dataset"]["name"], meta["dataset"]["split_seed"])
    np.testing.assert_array_equal(ds.labels if class_labels(spec) is None else ds.labels.astype(s.y_test.dtype),
                                  s.y_test)


def test_the_realistic_size_model():
    meta = zoo.info("digits_resnet")
    assert 1_000_000 <= meta["weight_count"] <= 3_000_000
    assert meta["inputs"][0]["shape"] == [1, 1, 32, 32]
    assert zoo.info("digits_cnn")["metric"]["value"] >= 0.97


@pytest.mark.parametrize("name", MODELS)
def test_numpy_executor_reproduces_the_recorded_metric(name, zoo_model):
    from harness.executors import make_executor

    spec, ds = zoo_model(name)
    meta = zoo.info(name)
    ex = make_executor("numpy", spec)
    out = ex.predict(dict(ds.feeds))
    if meta["task"] == "classification":
        probs = out[meta["probability_output"]]
        acc = metrics.top1_accuracy(probs, ds.labels, class_labels=ex.class_labels)
        assert acc == meta["metric"]["value"]
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        if meta.get("label_output"):
            assert metrics.top1_accuracy(out[meta["label_output"]], ds.labels) == acc
    else:
        pred = out[meta["prediction_output"]]
        for m in ("rmse", "mae", "r2"):
            assert getattr(metrics, m)(ds.labels, pred) == pytest.approx(meta["metrics"][m], abs=1e-6)


def test_a_corrupted_model_file_is_refused(tmp_path, monkeypatch):
    import shutil

    from harness.errors import DataError

    for f in ("digits_mlp.mlmodel", "digits_mlp.json"):
        shutil.copy(zoo.ZOO_DIR / f, tmp_path / f)
    data = bytearray((tmp_path / "digits_mlp.mlmodel").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "digits_mlp.mlmodel").write_bytes(bytes(data))
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    assert zoo.names() == ["digits_mlp"]
    with pytest.raises(DataError, match=r"digits_mlp.mlmodel does not match its recorded sha256"):
        zoo.load("digits_mlp")


def test_runtime_modules_do_not_import_torch():
    """Only the training scripts (train_*.py, _torch.py) use torch; qsweep's runtime code never does."""
    import re
    from pathlib import Path

    import harness

    root = Path(harness.__file__).parent
    runtime = [root / "metrics.py", root / "zoo" / "__init__.py", root / "zoo" / "_record.py",
               *sorted((root / "data").glob("*.py"))]
    for f in runtime:
        assert not re.search(r"^\s*(import|from)\s+torch\b", f.read_text(), re.M), f


_OUTPUT_KEYS = ("label_output", "probability_output", "class_labels", "prediction_output")
_TORCH_TRAINED = ("digits_cnn", "digits_lstm", "digits_resnet")


@pytest.mark.parametrize("name", MODELS)
def test_the_record_helper_rebuilds_the_committed_metadata(name, tmp_path, monkeypatch, capsys):
    """Every train_<name>.py ends in one _record helper call; given the committed model and the figures
    it recorded, the helper writes the committed <name>.json again, byte for byte."""
    import json
    import platform

    from harness.zoo import _record

    meta = json.loads((zoo.ZOO_DIR / f"{name}.json").read_text())
    spec = zoo.load_spec(name)
    monkeypatch.setattr(_record, "ZOO_DIR", tmp_path)
    monkeypatch.setattr(_record, "versions", lambda *mods: {m: meta["training"]["versions"][m] for m in mods})
    monkeypatch.setattr(platform, "python_version", lambda: meta["training"]["python"])
    training = {k: v for k, v in meta["training"].items() if k not in ("script", "versions", "python")}
    ds, metric = meta["dataset"], meta["metric"]
    common = dict(transforms=ds["transforms"], seed=ds["split_seed"], n_test=ds["n"])
    if name in _TORCH_TRAINED:
        assert training.pop("seed") == ds["split_seed"]
        _record.record_digits_classifier(spec, name, description=meta["description"],
                                         input_description=spec.description.input[0].shortDescription,
                                         accuracy=metric["value"], training=training, **common)
    else:
        keys = list(meta)
        separate = keys.index("metrics") == keys.index("metric") + 1  # several metrics, recorded by the script
        _record.record(spec, name, description=meta["description"], task=meta["task"],
                       outputs={k: meta[k] for k in keys if k in _OUTPUT_KEYS}, dataset=ds["name"],
                       metric=metric["name"], value=metric["value"], measured_with=metric["measured_with"],
                       training=training, packages=list(meta["training"]["versions"]),
                       metrics=meta["metrics"] if separate else None, **common)
    written = json.loads((tmp_path / f"{name}.json").read_text())
    # protobuf map fields serialize in no fixed order, so a re-serialized converted model may hash differently
    assert written["sha256"] == hashlib.sha256((tmp_path / f"{name}.mlmodel").read_bytes()).hexdigest()
    if (tmp_path / f"{name}.mlmodel").read_bytes() != zoo.path(name).read_bytes():
        written["sha256"] = meta["sha256"]
        (tmp_path / f"{name}.json").write_text(json.dumps(written, indent=2) + "\n")
    assert (tmp_path / f"{name}.json").read_text() == (zoo.ZOO_DIR / f"{name}.json").read_text()
    assert capsys.readouterr().out.startswith(f"{name}: test ")
