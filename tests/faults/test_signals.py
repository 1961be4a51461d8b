"""SIGTERM and SIGHUP stop a real qsweep worker like Ctrl-C: results written, trial requeued, 143 / 129.

Modelled on the Ctrl-C test of ``tests/sweep/test_workers.py``: a real
subprocess on a SQLite study, the signal sent once two trials are complete.
"""
from __future__ import annotations

import signal
import subprocess
import time

import pytest
from optuna.trial import TrialState

from tests.faults.support import CNN_GRID, CNN_POINTS, check_grid, load, n_complete, start_worker, wait_for
from tests.sweep.support import cli_command, cli_env, frame


@pytest.mark.parametrize("signum, code, said", [(signal.SIGTERM, 143, "terminated by SIGTERM"),
                                                (signal.SIGHUP, 129, "hung up (SIGHUP)")])
def test_signal_writes_results_requeues_the_trial_and_the_rerun_finishes(tmp_path, signum, code, said):
    url = f"sqlite:///{tmp_path / 'qsweep.db'}"
    args = CNN_GRID + [f"storage.url={url}", "study.name=signalled"]
    log = tmp_path / "first.log"
    proc = start_worker(args + [f"hydra.run.dir={tmp_path / 'first'}"], tmp_path, log)
    study = wait_for(url, "signalled", lambda s: n_complete(s) >= 2 and bool(
        s.get_trials(deepcopy=False, states=(TrialState.RUNNING,))), [proc])
    proc.send_signal(signum)
    proc.wait(timeout=300)
    text = log.read_text()
    assert proc.returncode == code, text
    assert "Traceback" not in text
    closing = [line for line in text.splitlines() if line.startswith(f"qsweep: {said}:")]
    assert len(closing) == 1, text
    assert "finished trial(s)" in closing[0] and "put back in the queue" in closing[0] and "resume" in closing[0]

    first = frame(tmp_path / "first")  # the finished trials were written
    complete = first[(first["state"] == "COMPLETE") | first["dominated_by"].notna()]  # or stopped by racing
    assert 2 <= len(complete) < CNN_POINTS
    stopped = first[first["error"].fillna("").str.contains(said, regex=False)]
    assert len(stopped) == 1 and stopped.iloc[0]["state"] == "FAIL", first[["trial", "state", "error"]]
    study = load(url, "signalled")
    assert study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) == []  # nothing left RUNNING
    retry = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
             if t.system_attrs.get("failed_trial") == int(stopped.iloc[0]["trial"])]
    assert len(retry) == 1  # queued again, once

    second = subprocess.run(cli_command(args + [f"hydra.run.dir={tmp_path / 'second'}"]), cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    check_grid(load(url, "signalled"), CNN_POINTS)


def test_sigterm_before_the_trials_is_a_clean_stop(tmp_path):
    url = f"sqlite:///{tmp_path / 'qsweep.db'}"
    log = tmp_path / "w.log"
    proc = start_worker(CNN_GRID + [f"storage.url={url}", "study.name=early", f"hydra.run.dir={tmp_path / 'w'}"],
                        tmp_path, log)
    deadline = time.monotonic() + 300
    while "model: digits_cnn" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    text = log.read_text()
    assert proc.returncode == 143, text
    assert "Traceback" not in text and "qsweep: terminated by SIGTERM" in text, text
    study = load(url, "early")
    if study is not None:  # stopped after the study was opened: nothing is left RUNNING
        assert study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) == []


def test_a_signal_swallowed_in_a_finalizer_is_raised_at_the_next_check(monkeypatch):
    """Python ignores an exception raised in ``__del__`` or a weakref callback, so a stop signal handled
    there would be lost (seen: SIGTERM during SQLAlchemy's garbage-collection callback, and the run
    carried on to the end); :func:`harness.shutdown.check` raises it at the next batch or trial, and
    the "Exception ignored in ..." traceback Python would print for it is not shown (CI saw it in
    the worker's log). Any other exception ignored in a finalizer still reaches the previous hook."""
    import sys

    from harness import shutdown

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    class SignalledWhileCollected:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # the handler runs here and its Stopped is ignored

    class FailsWhileCollected:
        def __del__(self):
            raise ValueError("a real bug in a finalizer")

    with shutdown.handle_signals():
        obj = SignalledWhileCollected()
        del obj  # nothing raised here, and nothing printed
        assert unraisable == []
        obj = FailsWhileCollected()
        del obj
        assert [type(u.exc_value) for u in unraisable] == [ValueError]  # still reported
        with pytest.raises(shutdown.Stopped) as raised:
            shutdown.check()
        assert raised.value.exit_code == 143
        shutdown.Stopped.of(raised.value)  # caught and handled: nothing more to raise
        shutdown.check()
    assert sys.unraisablehook == unraisable.append  # restored
    shutdown.check()  # outside a run: nothing pending
