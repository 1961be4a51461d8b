"""Helpers of the fault tests: start real qsweep workers, watch their study, check the study at the end."""
from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import optuna
from optuna.trial import TrialState

from tests.sweep.support import cli_command, cli_env, storage as open_test_storage

#: digits_cnn (slow enough for a fault to land mid-run), 4 nbits x 3 modes = 12 points; the plans are distinct.
#: Without racing: every trial runs the whole test set, as the fault windows these tests time (three workers
#: opening the study before an outage, a trial in flight) were tuned for.
CNN_GRID = ["model=digits_cnn", "selector=all", "search.space.nbits=[8,6,4,2]",
            "search.space.mode=[linear,kmeans_lut,linear_lut]", "progress=false", "report.enabled=false",
            "storage.heartbeat_interval=1", "storage.grace_period=4",
            "evaluation.racing=off"]
CNN_POINTS = 12


def start_worker(args: Sequence[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m harness ARGS`` in the background, stdout and stderr into ``log``."""
    return subprocess.Popen(cli_command(args), cwd=cwd, env=env or cli_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True)


def load(url: str, name: str) -> optuna.Study | None:
    """The study, or None while it does not exist (or the server is away)."""
    try:
        return optuna.load_study(study_name=name, storage=open_test_storage(url))
    except Exception:  # noqa: BLE001 - not created yet / server restarting
        return None


def wait_for(url: str, name: str, ready: Callable[[optuna.Study], bool], procs: Sequence[subprocess.Popen],
             timeout: float = 600) -> optuna.Study:
    """Poll the study until ``ready(study)``; fail if every worker exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = load(url, name)
        if study is not None and ready(study):
            return study
        if all(p.poll() is not None for p in procs):
            raise AssertionError(f"the workers exited before the study was ready: {[p.returncode for p in procs]}")
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the study")


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that are done: COMPLETE, or stopped early by racing (PRUNED with ``dominated_by``)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if t.state == TrialState.COMPLETE or t.user_attrs.get("dominated_by") is not None]


def n_complete(study: optuna.Study) -> int:
    """How many trials are done (:func:`finished`)."""
    return len(finished(study))


def check_grid(study: optuna.Study, n_points: int) -> None:
    """Every grid point finished (COMPLETE, or stopped by racing) exactly once, every plan evaluated by exactly
    one trial, nothing left over."""
    done = finished(study)
    points = [t.user_attrs["grid_point"] for t in done]
    assert len(points) == n_points and len(set(points)) == n_points, Counter(points).most_common(3)
    check_plans(study)
    left = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    assert left == [], [(t.number, t.state.name) for t in left]


def check_plans(study: optuna.Study) -> None:
    """No plan evaluated twice: one evaluating trial per plan hash; every other trial with it reused it."""
    done = finished(study)
    evaluated = [t.user_attrs["plan_hash"] for t in done if "reused_from" not in t.user_attrs]
    assert len(evaluated) == len(set(evaluated)), Counter(evaluated).most_common(3)
    assert set(evaluated) == {t.user_attrs["plan_hash"] for t in done}


def workers_started(study: optuna.Study) -> int:
    """How many distinct workers have started a trial (each opened the storage already)."""
    from harness.study import WORKER_ATTR

    return len({t.system_attrs.get(WORKER_ATTR) for t in study.get_trials(deepcopy=False)} - {None})


def logs(paths: Sequence[Path]) -> list[str]:
    return [p.read_text() for p in paths]


def raising_lut(nbits: int, weights):
    """A custom_lut function with a bug: it raises (its trial fails with the traceback in the log)."""
    raise RuntimeError("this lookup-table function always fails " + "(a long message to fill the log) " * 20)
