"""Rebuilding a lost run directory from the study alone (``qsweep-report --study NAME --storage URL OUT_DIR``).

A real sweep of the user's own model file (a copy of the zoo's digits_mlp) on
a SQLite study; its run directory is deleted and rebuilt. The tables and the
summary come back the same, the Pareto models byte for byte; the float model
must be at its recorded path or given with ``--model`` (sha256 checked); a saved
model whose bytes differ from the sha256 recorded in the study names its trial.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.sweep.support import cli_env, run_cli

GRID = ["selector=all", "search.space.nbits=[16,8,4,2]", "search.space.mode=[linear,kmeans_lut]", "progress=false",
        "data=sklearn", "data.name=digits", "study.name=lost"]


def _report(args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.report", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=600)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lost_run(tmp_path_factory):
    """``(folder, url, original run dir copy, model path)`` of a finished sweep whose run directory was deleted."""
    from harness import zoo

    folder = tmp_path_factory.mktemp("rebuild")
    model = folder / "my.mlmodel"
    shutil.copy(zoo.path("digits_mlp"), model)
    url = f"sqlite:///{folder / 'qsweep.db'}"
    proc = run_cli(GRID + [f"model.path={model}", f"storage.url={url}", f"hydra.run.dir={folder / 'run'}"],
                   cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    keep = folder / "original"
    shutil.copytree(folder / "run", keep)
    shutil.rmtree(folder / "run")
    return folder, url, keep, model


def test_the_run_records_each_saved_models_sha256(lost_run):
    _, _, original, _ = lost_run
    trials = pd.read_csv(original / "trials.csv")
    saved = trials[trials["model_file"].notna()]
    assert len(saved) >= 2
    for _, row in saved.iterrows():
        assert _sha(original / row["model_file"]) == row["model_sha256"]
    complete = trials[trials["state"] == "COMPLETE"]
    assert complete["model_sha256"].notna().all()  # recorded for every evaluated model, when it was evaluated
    summary = json.loads((original / "summary.json").read_text())
    assert all(r["model_sha256"] for r in summary["pareto_front"])


def test_rebuild_gives_back_the_run_directory(lost_run):
    folder, url, original, _ = lost_run
    out = folder / "rebuilt"
    proc = _report(["--study", "lost", "--storage", url, str(out)], folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("trials.csv", "pareto.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / name), pd.read_csv(original / name), check_like=False)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (original, out))
    for key in ("pareto_front", "baseline", "target", "trials", "search", "metric", "direction", "model", "data"):
        assert a[key] == b[key], key
    assert b["worker"]["stopped_by"] == "rebuilt from the study"
    raced = [{k: v for k, v in d["racing"].items() if k != "activation_cache"} for d in (a, b)]
    assert raced[0] == raced[1] and b["racing"]["activation_cache"] == {}  # a rebuild evaluates nothing
    models = sorted(p.relative_to(original) for p in (original / "models").iterdir())
    assert models and models == sorted(p.relative_to(out) for p in (out / "models").iterdir())
    for rel in models:
        assert (out / rel).read_bytes() == (original / rel).read_bytes(), rel
    for name in ("pareto.png", "layers.png", "report.html", "config.yaml", "environment.json"):
        assert (out / name).is_file(), name
    from harness.analysis import load_run

    assert load_run(out).best_within(0.05) is not None  # a readable run directory


def test_rebuild_needs_the_model_file_and_checks_it(lost_run):
    from harness import zoo

    folder, url, original, model = lost_run
    moved = folder / "elsewhere.mlmodel"
    shutil.move(model, moved)
    try:
        proc = _report(["--study", "lost", "--storage", url, str(folder / "no-model")], folder)
        assert proc.returncode == 2
        assert str(model) in proc.stderr and "--model" in proc.stderr and "Traceback" not in proc.stderr
        proc = _report(["--study", "lost", "--storage", url, "--model", str(zoo.path("digits_cnn")),
                        str(folder / "wrong-model")], folder)
        assert proc.returncode == 2 and "sha256" in proc.stderr, proc.stderr
        out = folder / "with-model"
        proc = _report(["--study", "lost", "--storage", url, "--model", str(moved), "--no-report", str(out)], folder)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for p in (original / "models").iterdir():
            assert (out / "models" / p.name).read_bytes() == p.read_bytes()
    finally:
        shutil.move(moved, model)


def test_a_model_that_is_not_byte_identical_names_its_trial(lost_run, tmp_path):
    folder, url, original, _ = lost_run
    db = tmp_path / "tampered.db"
    shutil.copy(folder / "qsweep.db", db)
    front = pd.read_csv(original / "pareto.csv")
    number = int(front.iloc[0]["trial"])
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        changed = conn.execute(sa.text(
            "UPDATE trial_user_attributes SET value_json = :v WHERE key = 'model_sha256' AND trial_id = "
            "(SELECT trial_id FROM trials WHERE number = :n)"), {"v": json.dumps("0" * 64), "n": number}).rowcount
    assert changed == 1
    proc = _report(["--study", "lost", "--storage", f"sqlite:///{db}", str(tmp_path / "out")], folder)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"trial {number}:" in proc.stderr and "byte for byte" in proc.stderr, proc.stderr


def test_rebuild_errors_name_what_is_wrong(lost_run, tmp_path):
    folder, url, _, _ = lost_run
    proc = _report(["--study", "nope", "--storage", url, str(tmp_path / "o")], folder)
    assert proc.returncode == 2 and "no study 'nope'" in proc.stderr and "lost" in proc.stderr, proc.stderr
    proc = _report(["--study", "lost", str(tmp_path / "o")], folder)
    assert proc.returncode == 2 and "--storage" in proc.stderr
