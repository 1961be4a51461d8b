"""Bad input fails before the sweep with one clear message, no traceback, exit status 2.

Each case runs the real ``qsweep`` entry point (``harness.cli.main``) in-process;
one runs it as a separate process to check what a shell user sees.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.sweep.support import free_port, restored_logging, run_cli


def _qsweep(argv, capsys, cwd: Path, monkeypatch):
    from harness import cli

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["qsweep", *argv, f"hydra.run.dir={cwd / 'run'}", "progress=false",
                                      "report.enabled=false"])
    with pytest.raises(SystemExit) as exc, restored_logging():
        cli.main()
    return exc.value.code, capsys.readouterr().err


def _check(code, err, *needles):
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if l.startswith("qsweep: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


@pytest.fixture
def mlp(tmp_path):
    """The zoo's digits_mlp as the user's own model file (input 'pixels' of 64 values, classes 0-9)."""
    from harness import zoo

    dst = tmp_path / "my.mlmodel"
    shutil.copy(zoo.path("digits_mlp"), dst)
    return dst


def _npz(tmp_path, **arrays):
    p = tmp_path / "test.npz"
    np.savez(p, **arrays)
    return p


def _no_sweep_started(cwd: Path):
    assert not (cwd / "outputs" / "qsweep.db").exists(), "the study storage was opened before the input check"


def test_missing_model_file(tmp_path, capsys, monkeypatch):
    code, err = _qsweep([f"model.path={tmp_path / 'nope.mlmodel'}", "data=npz", f"data.path={tmp_path / 'x.npz'}"],
                        capsys, tmp_path, monkeypatch)
    _check(code, err, "nope.mlmodel", "does not exist")
    _no_sweep_started(tmp_path)


def test_model_file_that_is_not_a_neural_network(tmp_path, capsys, monkeypatch):
    from quantizer.coremltools_quiet import coremltools

    spec = coremltools().proto.Model_pb2.Model()
    spec.specificationVersion = 1
    spec.glmRegressor.offset.append(0.0)
    p = tmp_path / "glm.mlmodel"
    p.write_bytes(spec.SerializeToString())
    code, err = _qsweep([f"model.path={p}", "data=npz", f"data.path={tmp_path / 'x.npz'}"], capsys, tmp_path, monkeypatch)
    _check(code, err, "glm.mlmodel", "not a neural network")
    (tmp_path / "empty.mlmodel").write_bytes(b"")
    code, err = _qsweep([f"model.path={tmp_path / 'empty.mlmodel'}", "data=npz", f"data.path={tmp_path / 'x.npz'}"],
                        capsys, tmp_path, monkeypatch)
    _check(code, err, "empty.mlmodel", "is empty")
    _no_sweep_started(tmp_path)


def test_data_whose_shape_does_not_fit_says_what_the_model_expects(tmp_path, mlp, capsys, monkeypatch):
    p = _npz(tmp_path, x=np.zeros((20, 10), np.float32), y=np.zeros(20, np.int64))
    code, err = _qsweep([f"model.path={mlp}", "data=npz", f"data.path={p}"], capsys, tmp_path, monkeypatch)
    _check(code, err, "pixels", "64")
    _no_sweep_started(tmp_path)


def test_data_whose_feature_names_do_not_match(tmp_path, mlp, capsys, monkeypatch):
    p = _npz(tmp_path, image=np.zeros((20, 64), np.float32), y=np.zeros(20, np.int64))
    code, err = _qsweep([f"model.path={mlp}", "data=npz", f"data.path={p}"], capsys, tmp_path, monkeypatch)
    _check(code, err, "'pixels'", "image")
    _no_sweep_started(tmp_path)


def test_labels_that_are_not_the_model_classes(tmp_path, mlp, capsys, monkeypatch):
    p = _npz(tmp_path, pixels=np.zeros((20, 64), np.float32), y=np.full(20, 42, np.int64))
    code, err = _qsweep([f"model.path={mlp}", "data=npz", f"data.path={p}"], capsys, tmp_path, monkeypatch)
    _check(code, err, "42")
    _no_sweep_started(tmp_path)


def test_own_model_with_the_zoo_test_set(tmp_path, mlp, capsys, monkeypatch):
    code, err = _qsweep([f"model.path={mlp}"], capsys, tmp_path, monkeypatch)
    _check(code, err, "data=zoo", "data=npz data.path=")
    _no_sweep_started(tmp_path)


def test_metric_the_model_cannot_give(tmp_path, capsys, monkeypatch):
    code, err = _qsweep(["model=digits_mlp", "metric=r2"], capsys, tmp_path, monkeypatch)  # the old spelling
    _check(code, err, "metric=r2 is now spelled metric.name=r2", "metric.name=r2", "classifier")
    code, err = _qsweep(["model=digits_mlp", "metric.name=f1"], capsys, tmp_path, monkeypatch)
    _check(code, err, "metric.name='f1' is not a task metric")
    _no_sweep_started(tmp_path)


def test_unreachable_storage_url(tmp_path, capsys, monkeypatch):
    url = f"postgresql://qsweep:secret@127.0.0.1:{free_port()}/qsweep"
    code, err = _qsweep(["model=digits_mlp", f"storage.url={url}"], capsys, tmp_path, monkeypatch)
    _check(code, err, "Cannot open the study storage", f"127.0.0.1:")
    assert "secret" not in err  # the password is masked
    code, err = _qsweep(["model=digits_mlp", "storage.url=nosuchdb://x/y"], capsys, tmp_path, monkeypatch)
    _check(code, err, "nosuchdb://x/y")


def test_empty_search_space(tmp_path, capsys, monkeypatch):
    code, err = _qsweep(["model=digits_mlp", "search.space.nbits=[1]", "search.space.mode=[linear_symmetric]"],
                        capsys, tmp_path, monkeypatch)
    _check(code, err, "The search space is empty", "needs at least 2 bits")
    code, err = _qsweep(["model=digits_mlp", "search.space.mode=[]"], capsys, tmp_path, monkeypatch)
    _check(code, err, "search.space.mode is empty")
    _no_sweep_started(tmp_path)


def test_study_created_for_another_experiment(tmp_path, capsys, monkeypatch):
    from tests.sweep.support import run

    run(tmp_path, ["model=digits_mlp", "selector=all", "search.space.nbits=[8]", "search.space.mode=[linear]",
                   "study.name=shared"])
    code, err = _qsweep(["model=digits_mlp", "selector=all", "search.space.nbits=[8,4]", "search.space.mode=[linear]",
                         "study.name=shared", f"storage.url=sqlite:///{tmp_path / 'qsweep.db'}"],
                        capsys, tmp_path, monkeypatch)
    _check(code, err, "Study 'shared'", "search.space.nbits: [8] in the study, [8, 4] now")


def test_a_shell_user_sees_one_line(tmp_path):
    proc = run_cli(["model.path=missing.mlmodel", "data=npz", "data.path=test.npz"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "qsweep: error: model file 'missing.mlmodel' does not exist: check the path"


def test_storage_password_never_reaches_the_run_directory(tmp_path):
    from harness.outputs import write_config
    from tests.sweep.support import compose

    cfg = compose(["storage.url=postgresql://me:hunter2@db.example:5432/qsweep"])
    text = write_config(tmp_path, cfg).read_text()
    assert "hunter2" not in text and "postgresql://me:***@db.example:5432/qsweep" in text
