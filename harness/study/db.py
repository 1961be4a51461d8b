"""The study database handle: every read and write a qsweep worker makes to the study goes through it.

:class:`StudyDB` wraps an :class:`optuna.Study` on an RDB storage together
with qsweep's claims table (:class:`harness.claims.Claims`, same database).
It and :mod:`harness.study.rdb` are the only code that touches Optuna's private
attributes (``_storage``, ``_study_id``, ``_trial_id``), and every storage call
passes through :meth:`StudyDB._call`, where transient database errors are
handled: :class:`harness.study.retry.Retry` retries the call through an outage
(``storage.retry_s``). Optuna's own calls inside ``ask``/``tell`` and the trial
cache go through the retrying storage (:class:`harness.study.rdb.RetryingRDBStorage`),
which makes the writes that must not happen twice safe to retry, so ``_call``
retries only calls that may simply run again. (Parameters a strategy suggests on
a live trial go through Optuna's ``Trial.suggest_*``; the sampler needs that API.)

It also names the attributes qsweep records in the study.

Example:
    >>> import optuna
    >>> study = optuna.create_study(storage="sqlite://", directions=["minimize", "maximize"])
    >>> db = StudyDB(study)
    >>> db.enqueue({"nbits": 4}, user_attrs={"grid_point": "nbits=4"})
    >>> [t.user_attrs for t in db.trials()]
    [{'grid_point': 'nbits=4'}]
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.claims import Claims
from harness.secrets import mask
from harness.study.identity import worker_id
from harness.study.retry import Retry

#: System attribute of a running trial: the ``machine#pid`` of the worker running it.
WORKER_ATTR = "qsweep:worker"
#: Study system attribute: the experiment the study's trials measure (see :func:`harness.study.open_study`).
EXPERIMENT_ATTR = "qsweep:experiment"
#: Study system attribute: what rebuilding the run directory from the study needs (see :mod:`harness.rebuild`).
RUN_ATTR = "qsweep:run"
#: User attribute of a FAIL trial: ``"error"`` (it raised) or ``"interrupted"`` (Ctrl-C, SIGTERM, SIGHUP).
FAILURE_ATTR = "failure"
#: User attributes a retried trial inherits from the dead one.
KEPT_ON_RETRY = ("grid_point",)

T = TypeVar("T")


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's notes on the experimental APIs qsweep relies on on purpose (heartbeats,
    stale-trial failing, metric names) and its advice to use heartbeats only with ``optimize``
    (qsweep runs its own ask/tell loop with its own heartbeat thread)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used", category=UserWarning)
        yield


class StudyDB:
    """One study in its database: trials, study attributes, claims and locks, heartbeats.

    Args:
        study: an Optuna study on an RDB storage (:func:`harness.study.open_storage`).
    """

    def __init__(self, study: optuna.Study):
        self.study = study
        #: Optuna's storage of the study (on an RDB storage, its trial cache in front of the database).
        self.storage: optuna.storages.BaseStorage = study._storage
        self.study_id: int = study._study_id
        rdb = self.storage if isinstance(self.storage, optuna.storages.RDBStorage) else self.storage._backend
        if not isinstance(rdb, optuna.storages.RDBStorage):
            raise TypeError(f"qsweep studies live in an RDB storage, not {type(rdb).__name__}")
        #: The RDB storage itself (its SQLAlchemy engine also holds qsweep's claims table).
        self.rdb: optuna.storages.RDBStorage = rdb
        #: How storage calls ride out an outage (the storage's own policy when it is qsweep's).
        self.retry: Retry = getattr(rdb, "retry", None) or Retry(120.0, rdb.url)

    def _call(self, fn: Callable[..., T], *args: Any, idempotent: bool = True, **kwargs: Any) -> T:
        """Run one storage operation (the single place every call of this handle goes through).

        An ``idempotent`` call is retried through an outage as a whole; any other (``ask``,
        ``tell``, creating a trial) is not, because each database write inside it is retried
        by the storage on its own, exactly once (:mod:`harness.study.rdb`).
        """
        if idempotent:
            return self.retry.call(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    @functools.cached_property
    def claims(self) -> Claims:
        """qsweep's claims table in the study's database."""
        return self._call(Claims, self.rdb.engine, retry=self.retry)

    def in_flight(self) -> list[int]:
        """Storage ids of the trials this process took (RUNNING) that it has not finished."""
        return sorted(getattr(self.rdb, "running_here", ()))

    def reap_paused(self) -> bool:
        """True during and shortly after a database outage this process saw: other workers' heartbeats are
        stale because the database was away, not because they died (see :mod:`harness.study.rdb`)."""
        paused = getattr(self.rdb, "reap_paused", None)
        return bool(paused()) if paused is not None else False

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def url(self) -> str:
        """The storage URL, password masked (for messages)."""
        return mask(self.rdb.url)

    @staticmethod
    def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
        """The storage id of a live or frozen trial."""
        return trial._trial_id

    # -- reading ----------------------------------------------------------------------------
    def trials(self, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        """The study's trials (not copied: do not modify), in number order."""
        return self._call(self.storage.get_all_trials, self.study_id, deepcopy=False,
                          states=None if states is None else tuple(states))

    def get_trial(self, number: int) -> FrozenTrial:
        """The trial numbered ``number``."""
        tid = self._call(self.storage.get_trial_id_from_study_id_trial_number, self.study_id, number)
        return self.frozen(tid)

    def frozen(self, trial_id: int) -> FrozenTrial:
        """The trial with storage id ``trial_id``."""
        return self._call(self.storage.get_trial, trial_id)

    def number_of(self, trial_id: int) -> int:
        """The number (within the study) of the trial with storage id ``trial_id``."""
        return self._call(self.storage.get_trial_number_from_id, trial_id)

    def study_attrs(self) -> dict[str, Any]:
        """The study's system attributes."""
        return self._call(self.storage.get_study_system_attrs, self.study_id)

    def heartbeat_interval(self) -> int | None:
        """The storage's heartbeat interval in seconds (a setting, no database call)."""
        return self.storage.get_heartbeat_interval()

    def stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        """What the storage does with a trial whose heartbeat went stale (:class:`harness.study.RetryDeadTrial`)."""
        return self.storage.get_heartbeat_stale_trial_callback()

    # -- writing ----------------------------------------------------------------------------
    def set_study_attr(self, key: str, value: Any) -> None:
        self._call(self.storage.set_study_system_attr, self.study_id, key, value)

    def set_metric_names(self, names: Sequence[str]) -> None:
        with quiet_optuna():
            self._call(self.study.set_metric_names, list(names))

    def enqueue(self, params: Mapping[str, Any], user_attrs: Mapping[str, Any] | None = None, *,
                skip_if_exists: bool = False) -> None:
        """Queue a trial with fixed parameters (state WAITING)."""
        self._call(self.study.enqueue_trial, dict(params), user_attrs=dict(user_attrs or {}),
                   skip_if_exists=skip_if_exists, idempotent=False)

    def create_trial(self, template: FrozenTrial) -> int:
        """Add a trial made from ``template`` (e.g. a WAITING retry); return its number."""
        tid = self._call(self.storage.create_new_trial, self.study_id, template_trial=template, idempotent=False)
        return self.number_of(tid)

    def try_set_state(self, trial_id: int, state: TrialState) -> bool:
        """Move a trial to ``state``; False when another worker changed it first or it is finished."""
        try:
            return bool(self._call(self.storage.set_trial_state_values, trial_id, state=state, idempotent=False))
        except optuna.exceptions.UpdateFinishedTrialError:
            return False

    def set_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(self.storage.set_trial_system_attr, trial_id, key, value)

    def set_user_attr(self, trial: optuna.Trial | int, key: str, value: Any) -> None:
        """Set a user attribute of a live trial (or of the trial with that storage id)."""
        if isinstance(trial, int):
            self._call(self.storage.set_trial_user_attr, trial, key, value)
        else:
            self._call(trial.set_user_attr, key, value)

    def record_heartbeat(self, trial_id: int) -> None:
        self._call(self.storage.record_heartbeat, trial_id)

    def fail_stale_trials(self) -> None:
        """Optuna's rule: fail the running trials whose heartbeat is older than the grace period."""
        with quiet_optuna():
            self._call(optuna.storages.fail_stale_trials, self.study, idempotent=False)

    # -- live trials ------------------------------------------------------------------------
    def live_trial(self, trial_id: int) -> optuna.Trial:
        """The live (running) trial with storage id ``trial_id``."""
        return self._call(optuna.Trial, self.study, trial_id)

    def ask(self) -> optuna.Trial:
        """A new trial from the study's sampler (a WAITING trial first, as Optuna does)."""
        with quiet_optuna():
            return self._call(self.study.ask, idempotent=False)

    def tell(self, trial: optuna.Trial, **kwargs: Any) -> None:
        """Finish a trial (``values=`` or ``state=``, as :meth:`optuna.Study.tell`).

        Raises:
            optuna.exceptions.UpdateFinishedTrialError: another worker finished it meanwhile
                (it was declared dead and queued again).
        """
        try:
            self._call(self.study.tell, trial, idempotent=False, **kwargs)
        except ValueError as e:  # Optuna's "Cannot tell a FAIL trial." for a trial finished elsewhere
            if not str(e).startswith("Cannot tell a"):
                raise
            raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial.number}: {e}") from None

    # -- claims and locks -------------------------------------------------------------------
    def claim_plan(self, plan_hash: str, number: int) -> int:
        """Claim ``plan_hash`` for trial ``number``; return the owner (``number`` if it won)."""
        return self._call(self.claims.claim_plan, self.study_id, plan_hash, number)

    def plan_owner(self, plan_hash: str) -> int | None:
        return self._call(self.claims.plan_owner, self.study_id, plan_hash)

    def take_over(self, plan_hash: str, old: int, new: int) -> bool:
        """Move the claim of ``plan_hash`` from dead trial ``old`` to ``new`` (False if another did)."""
        return self._call(self.claims.take_over, self.study_id, plan_hash, old, new)

    def forget_claims(self) -> None:
        """Delete every claim of this study id (for a newly created study)."""
        self._call(self.claims.forget_study, self.study_id)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the study's lease lock ``name`` for the ``with`` body (one-off set-up across workers)."""
        with self.claims.lock(self.study_id, name, worker_id()):  # each of its database calls is retried
            yield
