"""Dead workers: fail the trials they left RUNNING and queue each again, so nothing is lost.

A trial is dead when its heartbeat is older than the storage's grace period
(Optuna's rule, any machine), or when it runs on this machine in a process that
no longer exists (noticed at once). :class:`RetryDeadTrial` queues a dead trial
again (state WAITING, same parameters); :func:`requeue` does the same for the
trial a worker cannot finish because it was stopped (Ctrl-C, SIGTERM, SIGHUP).

Right after a database outage every heartbeat is stale because the database was
away, not because the workers died: a worker that saw the outage (or whose
stale-trial query waited one out) reaps nobody by heartbeat for a grace period
(:meth:`StudyDB.reap_paused`), so the live workers beat again first and no trial
in flight is evaluated twice.
"""
from __future__ import annotations

import logging
import os

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.study.db import FAILURE_ATTR, KEPT_ON_RETRY, WORKER_ATTR, StudyDB
from harness.study.identity import MACHINE, pid_alive

log = logging.getLogger(__name__)


class RetryDeadTrial:
    """Queue a trial again (state WAITING, same parameters) after its worker died.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback`` (same ``failed_trial`` and
    ``retry_history`` system attributes), but the copy keeps only the trial's
    parameters and grid point, not half-written results or the dead worker's id.
    It is also the storage's heartbeat-stale callback (:func:`harness.study.open_storage`).
    """

    def __init__(self, max_retry: int | None, reason: str = "its worker stopped sending heartbeats"):
        self.max_retry = max_retry
        self.reason = reason

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
        # Not the dead worker's id nor qsweep's bookkeeping (creation and transition tokens).
        system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith("qsweep:")}
        system_attrs.update(failed_trial=history[0], retry_history=history)
        # The runner records the setting again from the parameters; only the grid identity carries over.
        user_attrs = {k: v for k, v in trial.user_attrs.items() if k in KEPT_ON_RETRY}
        if self.max_retry is not None and len(history) > self.max_retry:
            log.warning("trial %d: %s; not retried (storage.max_retry=%d reached)", trial.number, self.reason,
                        self.max_retry)
            return
        frozen = optuna.create_trial(state=TrialState.WAITING, params=dict(trial.params),
                                     distributions=dict(trial.distributions), user_attrs=user_attrs,
                                     system_attrs=system_attrs)
        # Through the storage (not study.add_trial) to learn the new trial's number.
        number = StudyDB(study).create_trial(frozen)
        log.warning("trial %d: %s; queued again as trial %d", trial.number, self.reason, number)


def reap(db: StudyDB) -> list[int]:
    """Fail (and queue again) the running trials whose worker died; return their numbers."""
    reaped: list[int] = []
    before = {t.number for t in db.trials(states=(TrialState.RUNNING,))}
    db.fail_stale_trials()  # none while the storage is paused after an outage (StudyDB.reap_paused)
    running = db.trials(states=(TrialState.RUNNING,))
    reaped += sorted(before - {t.number for t in running})
    callback = db.stale_trial_callback()
    me = os.getpid()
    for t in running:
        w = t.system_attrs.get(WORKER_ATTR)
        if not w or "#" not in w:
            continue
        machine, _, pid = w.rpartition("#")
        if machine != MACHINE or int(pid) == me or pid_alive(int(pid)):
            continue
        if not db.try_set_state(db.trial_id(t), TrialState.FAIL):
            continue
        reaped.append(t.number)
        if callback is not None:
            RetryDeadTrial(getattr(callback, "max_retry", None), reason=f"its worker (pid {pid}) died")(
                db.study, db.frozen(db.trial_id(t)))
    return reaped


def requeue(db: StudyDB, trial_id: int, reason: str) -> None:
    """Fail a trial this worker cannot finish (stopped by a signal) and queue its setting again."""
    try:
        db.set_user_attr(trial_id, FAILURE_ATTR, "interrupted")
        db.set_user_attr(trial_id, "error", reason)
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    if not db.try_set_state(trial_id, TrialState.FAIL):
        return
    RetryDeadTrial(None, reason=reason)(db.study, db.frozen(trial_id))
