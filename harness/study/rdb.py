"""Optuna's RDB storage with every database call retried through an outage, and no write done twice.

:class:`RetryingRDBStorage` is what :func:`harness.study.open_storage` returns.
Every method of :class:`optuna.storages.RDBStorage` that talks to the
database — also those Optuna itself calls from ``study.ask``/``study.tell``
and its trial cache, the heartbeat and the stale-trial check — runs through
:class:`harness.study.retry.Retry`. Reads and upserts (attributes, parameters,
heartbeats) may simply run again. The two writes that must not happen twice
record a marker in the same transaction, so that after a failure whose outcome
is unknown (the server committed, the answer was lost) the retry first looks:

* a new trial carries :data:`CREATE_ATTR` (a fresh token): if a trial with the
  token exists, it is returned instead of creating a second one (no grid point
  or retry is queued twice);
* a state change writes :data:`TRANSITION_ATTR` (a fresh token) with the new
  state: if the trial holds it, the change was ours (a WAITING trial taken, a
  result told, a dead trial failed — exactly once).

A trial that becomes RUNNING here also gets its worker (``qsweep:worker``) and a
first heartbeat in that transaction, so a worker that dies before its heartbeat
thread starts is still noticed. Right after an outage this process saw, no
heartbeat counts as stale (:meth:`RetryingRDBStorage.reap_paused`): every
worker's heartbeats stopped because the database was away, and the live ones
beat again within a grace period. This module and :mod:`harness.study.db` are the
only code that touches Optuna's private API.
"""
from __future__ import annotations

import copy
import functools
import json
import time
import uuid
from datetime import datetime
from typing import Any, Callable, Sequence

import optuna
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc as sa_exc

from harness.study.db import WORKER_ATTR
from harness.study.identity import worker_id
from harness.study.retry import BACKOFF_MAX, Retry

#: System attribute of every trial created by qsweep: the token of its creation.
CREATE_ATTR = "qsweep:created"
#: System attribute written with every state change: the token of the last change.
TRANSITION_ATTR = "qsweep:transition"

#: RDBStorage methods that only read, or write idempotently (an upsert, an insert that ignores
#: duplicates): retried as they are.
RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "set_trial_param", "_set_trial_param",
    "get_trial_param", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id", "get_trial", "get_all_trials",
    "_get_trials", "get_best_trial", "_get_best_trial_id", "record_heartbeat", "get_n_trials",
)


def _token() -> str:
    return f"{worker_id()}/{uuid.uuid4().hex}"


def _retried(name: str) -> Callable[..., Any]:
    base = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(base)
    def method(self: "RetryingRDBStorage", *args: Any, **kwargs: Any) -> Any:
        return self.retry.call(base, self, *args, **kwargs)

    return method


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """:class:`optuna.storages.RDBStorage` whose database calls ride out outages (see module docstring).

    Args:
        url, **kwargs: as :class:`optuna.storages.RDBStorage`.
        retry: the retry policy (``storage.retry_s``); opening the storage is not retried here.
    """

    def __init__(self, url: str, *, retry: Retry, **kwargs: Any):
        self.retry = retry
        #: Storage ids of the trials this process made RUNNING and nobody has finished through it yet.
        self.running_here: set[int] = set()
        super().__init__(url, **kwargs)

    def _note(self, trial_id: int, state: TrialState) -> None:
        if state == TrialState.RUNNING:
            self.running_here.add(trial_id)
        elif state.is_finished():
            self.running_here.discard(trial_id)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("retry", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        self.retry = Retry(120.0, state.get("url", ""))
        self.running_here = set()
        super().__setstate__(state)

    # -- stale heartbeats ----------------------------------------------------------------------
    def reap_paused(self) -> bool:
        """True during an outage and for a grace period (+ a beat and the longest backoff) after it."""
        grace = float(self.grace_period or 2 * (self.heartbeat_interval or 5))
        hold_off = grace + float(self.heartbeat_interval or 0) + BACKOFF_MAX
        return self.retry.down or time.monotonic() - self.retry.back_at < hold_off

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = self.retry.call(optuna.storages.RDBStorage._get_stale_trial_ids, self, study_id)
        return [] if self.reap_paused() else stale  # decided after the call: it may have waited out an outage

    # -- trials are created once ---------------------------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._create_new_trial(study_id, template_trial)._trial_id

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        token = _token()
        if template_trial is None:  # study.ask(): a new RUNNING trial of this worker
            template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                                   datetime_complete=None, params={}, distributions={}, user_attrs={},
                                   system_attrs={WORKER_ATTR: worker_id()}, intermediate_values={}, trial_id=-1)
        else:
            template = copy.deepcopy(template_trial)
        template.system_attrs[CREATE_ATTR] = token

        def create() -> FrozenTrial:
            with _create_scoped_session(self.scoped_session) as session:
                models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
                trial = self._get_prepared_new_trial(study_id, template, session)
                if template.state == TrialState.RUNNING:
                    session.add(models.TrialHeartbeatModel(trial_id=trial.trial_id))
                frozen = copy.deepcopy(template)
                frozen.number, frozen.datetime_start = trial.number, trial.datetime_start
                frozen._trial_id = trial.trial_id
            self._note(frozen._trial_id, frozen.state)
            return frozen

        def created() -> tuple[bool, Any]:
            with _create_scoped_session(self.scoped_session) as session:
                row = session.query(models.TrialSystemAttributeModel).filter(
                    models.TrialSystemAttributeModel.key == CREATE_ATTR,
                    models.TrialSystemAttributeModel.value_json == json.dumps(token)).one_or_none()
                trial_id = None if row is None else row.trial_id
            if trial_id is None:
                return False, None
            self._note(trial_id, template.state)
            return True, optuna.storages.RDBStorage.get_trial(self, trial_id)

        return self.retry.call(create, check=created)

    # -- state changes happen once ---------------------------------------------------------------
    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        token = _token()

        def change() -> bool:
            try:
                with _create_scoped_session(self.scoped_session) as session:
                    trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                    self.check_trial_is_updatable(trial_id, trial.state)
                    if state == TrialState.RUNNING and trial.state != TrialState.WAITING:
                        return False
                    if values is not None:
                        for objective, v in enumerate(values):
                            self._set_trial_value_without_commit(session, trial, objective, v)
                    attr = models.TrialSystemAttributeModel
                    self._set_trial_attr_without_commit(session, attr, trial_id, TRANSITION_ATTR, token)
                    if state == TrialState.RUNNING:
                        self._set_trial_attr_without_commit(session, attr, trial_id, WORKER_ATTR, worker_id())
                        if models.TrialHeartbeatModel.where_trial_id(trial_id, session) is None:
                            session.add(models.TrialHeartbeatModel(trial_id=trial_id))
                        trial.datetime_start = datetime.now()
                    trial.state = state
                    if state.is_finished():
                        trial.datetime_complete = datetime.now()
            except sa_exc.IntegrityError:
                return False
            self._note(trial_id, state)
            return True

        def changed() -> tuple[bool, Any]:
            attrs = optuna.storages.RDBStorage.get_trial_system_attrs(self, trial_id)
            if attrs.get(TRANSITION_ATTR) != token:
                return False, None
            self._note(trial_id, state)
            return True, True

        return self.retry.call(change, check=changed)


for _name in RETRIED:
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retried(_name))
