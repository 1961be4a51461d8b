"""optuna-dashboard over a finished study: the real server on loopback, read through its HTTP API.

The README's ``optuna-dashboard sqlite:///outputs/qsweep.db``: the study's objective names are set
(``size_bytes`` and the task metric) and each trial's setting, size in KB, task metric and plan hash
are user attributes with those names.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.sweep.support import SMALL_GRID, free_port, restored_logging, run, sqlite_url


def _dashboard() -> str:
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
    if exe is None:
        pytest.skip("optuna-dashboard is not installed (pip install optuna-dashboard; part of the dev extra)")
    return exe


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_dashboard_shows_the_study_and_its_trials(tmp_path):
    exe = _dashboard()
    with restored_logging():
        result = run(tmp_path, SMALL_GRID)
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    server = subprocess.Popen([exe, sqlite_url(tmp_path), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                studies = _get(f"{base}/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "dashboard.log").read_text()
                time.sleep(0.5)
        [summary] = [s for s in studies if s["study_name"] == result.study_name]
        assert summary["directions"] == ["minimize", "maximize"]
        study = _get(f"{base}/studies/{summary['study_id']}?after=0")
        assert study["objective_names"] == ["size_bytes", "accuracy"]
        trials = pd.read_csv(result.run_dir / "trials.csv").set_index("trial")
        assert len(study["trials"]) == len(trials)
        for t in study["trials"]:
            row = trials.loc[t["number"]]
            attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
            params = {p["name"]: p["param_external_value"] for p in t["params"]}
            assert t["state"] == {"COMPLETE": "Complete", "PRUNED": "Pruned"}[row["state"]]  # pruned: racing
            assert params["nbits"] == str(row["nbits"]) and params["mode"] == row["mode"]
            assert attrs["setting"] == row["setting"] == f"{row['mode']}-{row['nbits']}bit"
            assert float(attrs["size_kb"]) == pytest.approx(row["size_bytes"] / 1024, abs=0.005)
            assert float(attrs["accuracy"]) == pytest.approx(row["accuracy"])
            assert float(attrs["accuracy_ci_low"]) == pytest.approx(row["accuracy_ci_low"])
            assert attrs["plan_hash"] == row["plan_hash"]
            if row["state"] == "COMPLETE":
                assert [float(v) for v in t["values"]] == pytest.approx([row["size_bytes"], row["accuracy"]])
        front = {t["number"] for t in study["best_trials"]}
        assert front == set(result.front["trial"])  # the dashboard's Pareto front is the run's
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
