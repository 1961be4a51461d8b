"""Real worker processes: three qsweep workers on a PostgreSQL 15 server, SIGKILL + resume, Ctrl-C.

The PostgreSQL server is started by the test on loopback in a temp dir with
``initdb``/``pg_ctl`` (as the ``postgres`` system user when the test runs as
root: the server refuses root). Skipped, with the reason, only when the
server binaries are absent.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from harness.bench.pgserver import as_postgres, missing, pg_bin
from tests.sweep.support import cli_command, cli_env, finished, free_port, frame, grid_points

#: 5 nbits x 3 modes on digits_mlp = 15 points; the three 16-bit ones share one plan.
WORKER_GRID = ["model=digits_mlp", "selector=all", "search.space.nbits=[16,8,4,2,1]",
               "search.space.mode=[linear,kmeans_lut,linear_lut]", "progress=false", "report.enabled=false",
               "storage.heartbeat_interval=1", "storage.grace_period=4"]
WORKER_POINTS = 15
#: Slower trials (digits_cnn) for the kill / Ctrl-C tests, so the signal lands mid-run: 10 points.
KILL_GRID = ["model=digits_cnn", "selector=all", "search.space.nbits=[8,6,4,2,1]",
             "search.space.mode=[linear,kmeans_lut]", "progress=false", "report.enabled=false",
             "storage.heartbeat_interval=1", "storage.grace_period=4"]
KILL_POINTS = 10


@pytest.fixture(scope="module")
def postgres_url():
    why = missing()  # no server binaries, or root without a 'postgres' user or runuser
    if why:
        pytest.skip(why)
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="qsweep-pg-"))
    if os.geteuid() == 0:
        pg_user = pwd.getpwnam("postgres")
        os.chown(base, pg_user.pw_uid, pg_user.pw_gid)
    prefix = as_postgres()
    data, port = base / "data", free_port()
    subprocess.run(prefix + [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, timeout=180)
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    subprocess.run(prefix + [pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "-t", "120",
                             "start"], check=True, capture_output=True, timeout=180)
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE qsweep")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/qsweep"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def _start(args, cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cli_command(args), cwd=cwd, env=cli_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True)


def _done(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE trials and those racing stopped (PRUNED with ``dominated_by``)."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE or "dominated_by" in t.user_attrs]


def _complete_points(study: optuna.Study) -> list[tuple[int, str]]:
    return [(t.params["nbits"], t.params["mode"]) for t in _done(study)]


def _check_study(study: optuna.Study, n_points: int = WORKER_POINTS) -> None:
    """Every grid point finished exactly once; every plan evaluated by exactly one trial."""
    points = _complete_points(study)
    assert len(points) == n_points and len(set(points)) == n_points, Counter(points).most_common(3)
    done = _done(study)
    evaluated = [t.user_attrs["plan_hash"] for t in done if "reused_from" not in t.user_attrs]
    assert len(evaluated) == len(set(evaluated)) == len({t.user_attrs["plan_hash"] for t in done})
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,
                                                       optuna.trial.TrialState.RUNNING))
    assert waiting == []


@pytest.mark.postgres
def test_three_workers_share_one_grid_on_postgresql(postgres_url, tmp_path):
    args = WORKER_GRID + [f"storage.url={postgres_url}", "study.name=shared"]
    procs = [_start(args + [f"hydra.run.dir={tmp_path / f'w{i}'}"], tmp_path, tmp_path / f"w{i}.log")
             for i in range(3)]
    for p in procs:
        p.wait(timeout=900)
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(3)]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n\n".join(logs)
    from tests.sweep.support import storage as _storage

    study = optuna.load_study(study_name="shared", storage=_storage(postgres_url))
    _check_study(study)
    assert len(study.trials) == WORKER_POINTS  # no failed or repeated trial at all
    # each worker waited for the others, so each run directory holds the whole study
    for i in range(3):
        df = frame(tmp_path / f"w{i}")
        assert sorted(grid_points(df)) == sorted(_complete_points(study))
    workers = Counter(t.system_attrs["qsweep:worker"] for t in study.trials)
    print("trials per worker:", sorted(workers.values(), reverse=True))


def test_sigkill_mid_run_then_resume_completes_without_duplicates(tmp_path):
    from tests.sweep.support import storage as _storage

    url = f"sqlite:///{tmp_path / 'qsweep.db'}"
    args = KILL_GRID + [f"storage.url={url}", "study.name=killed"]
    proc = _start(args + [f"hydra.run.dir={tmp_path / 'first'}"], tmp_path, tmp_path / "first.log")
    storage = None
    deadline = time.monotonic() + 600
    killed_running: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            storage = storage or _storage(url)
            study = optuna.load_study(study_name="killed", storage=storage)
        except Exception:  # the worker has not created the study yet
            continue
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if len(done) >= 2 and running:
            proc.send_signal(signal.SIGKILL)
            killed_running = [t.number for t in running]
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    study = optuna.load_study(study_name="killed", storage=storage)
    assert len(_complete_points(study)) < KILL_POINTS  # it really stopped mid-run
    still_running = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]

    second = subprocess.run(cli_command(args + [f"hydra.run.dir={tmp_path / 'second'}"]), cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    study = optuna.load_study(study_name="killed", storage=storage)
    _check_study(study, KILL_POINTS)
    df = frame(tmp_path / "second")
    assert sorted(grid_points(df)) == sorted(_complete_points(study))
    # the trial killed mid-flight is FAIL, says so, and was retried by another trial
    for number in still_running:
        row = df[df["trial"] == number].iloc[0]
        assert row["state"] == "FAIL" and "retried as trial" in row["error"]
        retry = df[df["retry_of"] == number]
        assert len(retry) == 1 and finished(retry).iloc[0]
    assert killed_running, "the worker was not caught mid-trial"


def test_ctrl_c_writes_results_and_the_rerun_finishes(tmp_path):
    url = f"sqlite:///{tmp_path / 'qsweep.db'}"
    args = KILL_GRID + [f"storage.url={url}", "study.name=interrupted"]
    from tests.sweep.support import storage as _storage

    proc = _start(args + [f"hydra.run.dir={tmp_path / 'first'}"], tmp_path, tmp_path / "first.log")
    storage, deadline = None, time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            storage = storage or _storage(url)
            study = optuna.load_study(study_name="interrupted", storage=storage)
        except Exception:
            continue
        if len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) >= 2:
            proc.send_signal(signal.SIGINT)
            break
    proc.wait(timeout=300)
    log = (tmp_path / "first.log").read_text()
    assert proc.returncode == 130, log
    assert "interrupted" in log and "Traceback" not in log
    first = frame(tmp_path / "first")  # results of the finished trials were written
    assert 2 <= (first["state"] == "COMPLETE").sum() < KILL_POINTS
    second = subprocess.run(cli_command(args + [f"hydra.run.dir={tmp_path / 'second'}"]), cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    _check_study(optuna.load_study(study_name="interrupted", storage=storage), KILL_POINTS)
