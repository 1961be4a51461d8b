"""The worker loop: take or ask trials from a search strategy and run them, with heartbeats, until done.

:class:`Worker` runs trials until the strategy has nothing left for this worker,
the timeout is reached, ``should_stop()`` says why to stop (e.g. the run
directory's disk is full), or a stop signal arrives — Ctrl-C, SIGTERM or SIGHUP
(:class:`harness.shutdown.Stopped`): then every trial this process took and
did not finish goes back to the queue. Between trials it reaps the trials of
dead workers. A database outage longer than ``storage.retry_s`` ends the loop
with :class:`~harness.errors.StorageUnavailableError`.
:func:`pop_waiting` is how queued trials (a grid, sensitivity pairs) are taken:
atomically, so concurrent workers never run one twice.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from harness import shutdown
from harness.shutdown import Stopped
from harness.study.db import WORKER_ATTR, StudyDB
from harness.study.heartbeat import Heartbeat
from harness.study.identity import worker_id
from harness.study.reap import reap, requeue

log = logging.getLogger(__name__)


def pop_waiting(db: StudyDB) -> optuna.Trial | None:
    """Atomically take the oldest WAITING trial (RUNNING from now on), or None.

    Safe with concurrent workers: the WAITING -> RUNNING transition succeeds for
    exactly one of them (row lock on PostgreSQL, write lock on SQLite).
    """
    for t in db.trials(states=(TrialState.WAITING,)):
        tid = db.trial_id(t)
        if not db.try_set_state(tid, TrialState.RUNNING):
            continue
        db.set_system_attr(tid, WORKER_ATTR, worker_id())
        return db.live_trial(tid)
    return None


def mark_running(db: StudyDB, trial: optuna.Trial) -> None:
    """Record this worker on a trial it started (so a dead process is noticed at once)."""
    db.set_system_attr(db.trial_id(trial), WORKER_ATTR, worker_id())


@dataclass
class LoopState:
    """What :class:`Worker` did in this process."""

    started: list[int] = field(default_factory=list)
    interrupted: bool = False
    stopped_by: str = ""
    #: The stop signal that ended the loop (None: it was not stopped by a signal).
    signal: Stopped | None = None
    #: Trials put back in the queue when the loop was stopped, and those it could not put back.
    requeued: list[int] = field(default_factory=list)
    not_requeued: list[int] = field(default_factory=list)


class Worker:
    """Run trials of the study from ``strategy`` with heartbeats until done.

    ``run_trial(trial)`` evaluates one trial and tells the study its outcome
    (it must not raise for a failed trial: it records FAIL itself).
    ``on_progress()`` is called after every trial and while waiting; ``should_stop()``
    before each trial returns why to stop starting trials (or None).
    """

    #: Seconds a stopped worker waits for the database to put its trials back in the queue.
    STOP_PATIENCE = 10.0

    def __init__(self, db: StudyDB, strategy: Any, run_trial: Callable[[optuna.Trial], None], *,
                 timeout: float | None, wait_for_others: bool, on_progress: Callable[[], None] = lambda: None,
                 poll: float = 1.0, should_stop: Callable[[], str | None] = lambda: None):
        self.db, self.strategy, self.run_trial = db, strategy, run_trial
        self.timeout, self.wait_for_others, self.on_progress, self.poll = timeout, wait_for_others, on_progress, poll
        self.should_stop = should_stop

    def run(self) -> LoopState:
        state = LoopState()
        t0 = time.monotonic()
        waiting_logged = False
        reap_every = max(1.0, float(self.db.heartbeat_interval() or 5))
        last_reap = -math.inf
        current: optuna.Trial | None = None
        try:
            while True:
                if time.monotonic() - last_reap >= reap_every:
                    reap(self.db)
                    last_reap = time.monotonic()
                if self.timeout is not None and time.monotonic() - t0 >= self.timeout:
                    state.stopped_by = f"search.timeout={self.timeout:g} s reached"
                    break
                why = self.should_stop()
                if why:
                    state.stopped_by = why
                    break
                current = self.strategy.next_trial(self.db)
                if current is None:
                    running = self.db.trials(states=(TrialState.RUNNING,))
                    if running and self.wait_for_others:
                        if not waiting_logged:
                            log.info("nothing left to start; waiting for %d trial(s) running elsewhere (%s)",
                                     len(running), ", ".join(str(t.number) for t in running[:8]))
                            waiting_logged = True
                        self.on_progress()
                        time.sleep(self.poll)
                        continue
                    state.stopped_by = "done"
                    break
                waiting_logged = False
                state.started.append(current.number)
                with Heartbeat(self.db, self.db.trial_id(current)):
                    self.run_trial(current)
                current = None
                shutdown.check()  # a stop signal Python swallowed in a finalizer
                self.on_progress()
        except KeyboardInterrupt as e:
            stop = Stopped.of(e)
            state.interrupted, state.signal, state.stopped_by = True, stop, stop.description
            in_flight = set(self.db.in_flight())
            if current is not None:
                in_flight.add(self.db.trial_id(current))
            self._requeue(sorted(in_flight), stop, state)
        return state

    def _requeue(self, trial_ids: list[int], stop: Stopped, state: LoopState) -> None:
        """Put the trials this worker did not finish back in the queue (waiting briefly for the database)."""
        for tid in trial_ids:
            try:
                with self.db.retry.patience(self.STOP_PATIENCE):
                    number = self.db.number_of(tid)
                    if self.db.frozen(tid).state == TrialState.RUNNING:
                        requeue(self.db, tid, stop.description)
                        state.requeued.append(number)
            except Exception as e:  # noqa: BLE001 - stopping: say what is left and go on
                log.warning("could not put trial id %d back in the queue (%s); a heartbeat reaper of any worker "
                            "will queue it again", tid, e)
                state.not_requeued.append(tid)
