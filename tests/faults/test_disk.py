"""Disk trouble in the run directory: an unwritable folder fails before the sweep; a full disk mid-run stops with
a message naming the file, and the study keeps every finished trial.

The run directory is on a small tmpfs the test mounts (root only; skipped
otherwise) — read-only, or filled to the last byte while the worker runs. The
study lives on the normal disk.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from optuna.trial import TrialState

from tests.faults.support import CNN_GRID, CNN_POINTS, check_grid, load, n_complete, start_worker, wait_for
from tests.sweep.support import cli_command, cli_env, run_cli


@contextlib.contextmanager
def tmpfs(size: str = "1m") -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted on a temp folder (skip the test when it cannot be mounted)."""
    where = Path(tempfile.mkdtemp(prefix="qsweep-tmpfs-"))
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        with contextlib.suppress(OSError):
            where.rmdir()


def _remount(where: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(where)], check=True, capture_output=True)


def _fill(where: Path) -> None:
    """Write zeros into ``where`` until its filesystem is full."""
    with open(where / "filler", "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 10, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * chunk)


def _one_error(text: str) -> str:
    errors = [line for line in text.splitlines() if line.startswith("qsweep: error:")]
    assert len(errors) == 1, text
    assert "Traceback" not in text, text
    return errors[0]


@pytest.mark.parametrize("existing", [False, True])
def test_an_unwritable_run_directory_fails_before_the_sweep(tmp_path, existing):
    with tmpfs() as mnt:
        run_dir = mnt / "runs" / "one"
        if existing:
            run_dir.mkdir(parents=True)
        _remount(mnt, "ro")
        proc = run_cli(["model=digits_mlp", "progress=false", f"hydra.run.dir={run_dir}",
                        f"storage.url=sqlite:///{tmp_path / 'qsweep.db'}"], cwd=tmp_path)
    assert proc.returncode == 74, proc.stdout + proc.stderr
    line = _one_error(proc.stderr)
    assert str(run_dir) in line and "Read-only file system" in line, line
    assert "model:" not in proc.stdout  # before any work
    assert not (tmp_path / "qsweep.db").exists()


def test_a_full_disk_at_the_end_names_the_file_and_the_study_keeps_the_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'qsweep.db'}"
    args = CNN_GRID + [f"storage.url={url}", "study.name=full"]
    with tmpfs("2m") as mnt:
        run_dir = mnt / "run"
        log = tmp_path / "w.log"
        proc = start_worker(args + [f"hydra.run.dir={run_dir}"], tmp_path, log)
        wait_for(url, "full", lambda s: n_complete(s) >= 2, [proc])
        _fill(mnt)
        proc.wait(timeout=900)
        text = log.read_text()
        assert proc.returncode == 74, text
        line = _one_error(text)
        assert f"Cannot write {run_dir}/" in line and "No space left on device" in line, line
        assert "The study keeps every finished trial" in line
        check_grid(load(url, "full"), CNN_POINTS)  # every trial finished and kept
        (mnt / "filler").unlink()
        again = subprocess.run(cli_command(args + [f"hydra.run.dir={mnt / 'again'}"]), cwd=tmp_path, env=cli_env(),
                               capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        assert (mnt / "again" / "trials.csv").is_file()


def test_a_log_that_cannot_be_written_mid_run_stops_the_worker(tmp_path):
    """Every other trial fails (a custom LUT function that raises: its traceback is logged), so the log is
    written during the trials."""
    url = f"sqlite:///{tmp_path / 'qsweep.db'}"
    args = [a for a in CNN_GRID if not a.startswith("search.space.")] + [
        "search.space.nbits=[8,7,6,5,4,3,2,1]", "search.space.mode=[kmeans_lut,custom_lut]",
        "search.space.lut_function=tests.faults.support.raising_lut", f"storage.url={url}", "study.name=stopped"]
    total = 16
    with tmpfs("2m") as mnt:
        log = tmp_path / "w.log"
        proc = start_worker(args + [f"hydra.run.dir={mnt / 'run'}"], tmp_path, log)
        wait_for(url, "stopped", lambda s: len([t for t in s.trials if t.state.is_finished()]) >= 2, [proc])
        _fill(mnt)
        proc.wait(timeout=900)
        text = log.read_text()
        assert proc.returncode == 74, text
        assert f"qsweep: cannot write {mnt / 'run' / 'qsweep.log'}" in text, text  # noticed mid-run, said once
        line = _one_error(text)
        assert str(mnt) in line and "No space left on device" in line, line
        study = load(url, "stopped")
        finished = [t for t in study.trials if t.state.is_finished()]
        assert len(finished) < total, "the worker did not stop early"
        assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))  # it stopped between trials
        (mnt / "filler").unlink()
        again = subprocess.run(cli_command(args + [f"hydra.run.dir={mnt / 'again'}"]), cwd=tmp_path, env=cli_env(),
                               capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stdout + again.stderr
    study = load(url, "stopped")
    points = {t.user_attrs["grid_point"] for t in study.trials if t.state.is_finished()}
    assert len(points) == total and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
