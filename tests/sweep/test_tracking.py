"""tracking=mlflow: real sweeps logged to a real MLflow store, read back with ``mlflow.search_runs``.

A local store (the default kind: SQLite + an artifact folder), a resumed sweep (nothing logged
twice), two worker processes of one study (every trial once, one parent), an unreachable server
(one warning, the sweep completes), MLflow missing (the error names the extra) and, marked slow,
an ``mlflow server`` on loopback started by the test.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest

from harness import tracking
from harness.errors import ConfigError
from tests.sweep.support import SMALL_GRID, cli_command, cli_env, free_port, restored_logging, run, sqlite_url

mlflow = pytest.importorskip("mlflow", reason='needs MLflow (pip install "qsweep[mlflow]", part of the dev extra)')

#: SMALL_GRID's four points: two of them are the Pareto front.
N_POINTS = 4


def _runs(uri: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["qsweep"])


def _check_store(uri: str, study: str, run_dir: Path, n_trials: int = N_POINTS) -> tuple[pd.Series, pd.DataFrame]:
    """One parent run for ``study`` and one child per trial (each trial's key once); returns them."""
    df = _runs(uri)
    df = df[df[f"tags.{tracking.TAG_STUDY}"] == study]
    parents = df[df[f"tags.{tracking.TAG_KIND}"] == "sweep"]
    children = df[df[f"tags.{tracking.TAG_KIND}"] == "trial"]
    assert len(parents) == 1, parents
    parent = parents.iloc[0]
    assert parent["status"] == "FINISHED"
    assert len(children) == n_trials
    assert Counter(children[f"tags.{tracking.TAG_KEY}"]).most_common(1)[0][1] == 1
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    trials = pd.read_csv(run_dir / "trials.csv")
    # every evaluated trial: COMPLETE, or PRUNED by racing with the figures of the samples it saw
    evaluated = trials[trials["state"].isin(["COMPLETE", "PRUNED"])].set_index("trial")
    assert sorted(children[f"tags.{tracking.TAG_TRIAL}"].astype(int)) == sorted(evaluated.index)
    for _, child in children.iterrows():
        row = evaluated.loc[int(child[f"tags.{tracking.TAG_TRIAL}"])]
        assert child["params.nbits"] == str(row["nbits"]) and child["params.mode"] == row["mode"]
        assert child["metrics.size_bytes"] == row["size_bytes"]
        assert child["metrics.size_kb"] == pytest.approx(row["size_bytes"] / 1024)
        for c in ("compression_ratio", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "accuracy_drop",
                  "snr_db", "snr_db:probs", "quantize_s", "evaluate_s"):
            assert child[f"metrics.{c}"] == pytest.approx(row[c], nan_ok=True), c  # a reused trial has no timings
        assert child["tags.plan_hash"] == row["plan_hash"] and child["tags.state"] == row["state"]
        assert child["status"] == ("FINISHED" if row["state"] == "COMPLETE" else "KILLED")
        assert child[f"tags.{tracking.TAG_STUDY}"] == study
    return parent, children


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    """A sweep logged to a local store, then the same command again (a resume: nothing new to log)."""
    folder = tmp_path_factory.mktemp("mlflow-local")
    uri = tracking.default_uri(folder)
    args = [*SMALL_GRID, "tracking=mlflow", f"tracking.uri={uri}"]
    with restored_logging():
        first = run(folder, args, run_dir="run1", report=True)
        before = _runs(uri)
        second = run(folder, args, run_dir="run2", report=True)
    return uri, first, second, before


def test_sweep_is_a_parent_run_with_one_child_per_trial(local_store):
    uri, first, _, before = local_store
    parent, children = _check_store(uri, first.study_name, first.run_dir)
    assert len(before) == N_POINTS + 1
    assert parent["params.search.kind"] == "grid" and parent["params.model.name"] == "digits_mlp"
    assert parent["params.storage.url"] == sqlite_url(Path(uri[len("sqlite:///"):]).parents[1])
    assert parent["metrics.float_accuracy"] == pytest.approx(first.summary["baseline"]["accuracy"])
    assert parent["metrics.pareto_size"] == len(first.front)
    client = mlflow.MlflowClient(uri)
    files = {a.path for a in client.list_artifacts(parent["run_id"])}
    assert {"config.yaml", "environment.json", "summary.json", "trials.csv", "pareto.csv", "report.html",
            "pareto.png", "layers.png", "pareto_table.json", "models"} <= files
    models = {Path(a.path).name for a in client.list_artifacts(parent["run_id"], "models")}
    assert models == {Path(p).name for p in first.front["model_file"]}
    table = client.load_table(parent["experiment_id"], "pareto_table.json", run_ids=[parent["run_id"]])
    assert sorted(table["trial"]) == sorted(first.front["trial"])
    assert list(table["accuracy_ci_low"]) == pytest.approx(list(first.front.set_index("trial").loc[
        table["trial"], "accuracy_ci_low"]))


def test_resume_logs_nothing_twice(local_store):
    uri, first, second, before = local_store
    after = _runs(uri)
    assert sorted(after["run_id"]) == sorted(before["run_id"])  # the same parent, no new child
    _check_store(uri, second.study_name, second.run_dir)
    parent = after[after[f"tags.{tracking.TAG_KIND}"] == "sweep"].iloc[0]
    assert parent["tags.qsweep.run_dir"] == str(second.run_dir.resolve())  # its files: the newest run's


def test_two_workers_log_each_trial_once(tmp_path):
    uri = tracking.default_uri(tmp_path)
    grid = ["model=digits_mlp", "selector=all", "search.space.nbits=[16,8,6,4,3,2,1]",
            "search.space.mode=[linear,kmeans_lut]", "progress=false", "report.enabled=false",
            f"storage.url={sqlite_url(tmp_path)}", "tracking=mlflow", f"tracking.uri={uri}"]

    def start(i: int) -> subprocess.Popen:
        return subprocess.Popen(cli_command([*grid, f"hydra.run.dir={tmp_path / f'w{i}'}"]), cwd=tmp_path,
                                env=cli_env(), stdout=(tmp_path / f"w{i}.log").open("w"), stderr=subprocess.STDOUT)

    # Optuna's SQLite storage cannot create its tables from two processes at once: the empty database is made
    # first; the two workers then start together, create or join the study and open the fresh tracking store.
    optuna.storages.RDBStorage(sqlite_url(tmp_path))
    procs = [start(0), start(1)]
    for p in procs:
        assert p.wait(timeout=600) == 0, [(tmp_path / f"w{i}.log").read_text()[-3000:] for i in range(2)]
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    assert "tracking: could not" not in logs, logs
    trials = pd.read_csv(tmp_path / "w1" / "trials.csv")
    assert trials["worker"].nunique() == 2  # both workers evaluated trials
    study = json.loads((tmp_path / "w1" / "summary.json").read_text())["study"]["name"]
    # 14 points; the two 16-bit ones share a plan: one is evaluated, the other reuses it (both are logged)
    parent, children = _check_store(uri, study, tmp_path / "w1", n_trials=14)
    reused = trials[trials["reused_from"].notna()]
    assert len(reused) == 1
    child = children[children[f"tags.{tracking.TAG_TRIAL}"] == str(int(reused["trial"].iloc[0]))].iloc[0]
    assert child["tags.reused_from"] == str(int(reused["reused_from"].iloc[0]))


def test_unreachable_server_warns_once_and_the_sweep_completes(tmp_path, caplog):
    uri = f"http://qsweep:s3cret-pw@127.0.0.1:{free_port()}"
    with restored_logging(), caplog.at_level(logging.WARNING, logger="qsweep"):
        result = run(tmp_path, [*SMALL_GRID, "tracking=mlflow", f"tracking.uri={uri}", "tracking.timeout_s=2"])
    warnings = [r.getMessage() for r in caplog.records if "tracking:" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "127.0.0.1" in warnings[0] and "the sweep goes on" in warnings[0]
    assert "s3cret-pw" not in caplog.text
    assert result.trials["state"].isin(["COMPLETE", "PRUNED"]).sum() == N_POINTS  # PRUNED: racing


def test_missing_mlflow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "qsweep\[mlflow\]"'):
        run(tmp_path, [*SMALL_GRID, "tracking=mlflow"])
    assert not (tmp_path / "qsweep.db").exists()  # refused before the study was opened


def test_unknown_tracking_kind_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="tracking.kind='wandb'"):
        run(tmp_path, [*SMALL_GRID, "tracking.kind=wandb"])


@pytest.mark.slow
def test_mlflow_server_on_loopback(tmp_path):
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if exe is None:
        pytest.skip("the mlflow command is not installed")
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server-artifacts")],
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(1)
        args = [*SMALL_GRID, "tracking=mlflow", f"tracking.uri={uri}"]
        with restored_logging():
            first = run(tmp_path, args, run_dir="run1", report=True)
            n_before = len(_runs(uri))
            second = run(tmp_path, args, run_dir="run2")
        assert len(_runs(uri)) == n_before == N_POINTS + 1
        parent, _ = _check_store(uri, second.study_name, second.run_dir)
        files = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(parent["run_id"])}
        assert {"report.html", "pareto.csv", "models"} <= files
        assert first.study_name == second.study_name
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
