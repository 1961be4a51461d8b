"""The Optuna study: storage, creation/resume, heartbeats, dead workers, the trial loop.

* :func:`open_storage` opens any Optuna RDB URL (SQLite by default, PostgreSQL
  for several machines) with heartbeats switched on, or raises a
  :class:`~harness.errors.StorageError` naming the (password-masked) URL.
* :func:`open_study` creates the study or joins an existing one with the same
  name, refusing one that was created for a different experiment.
* :func:`reap` fails trials whose worker died (no heartbeat for
  ``grace_period`` seconds, or a dead process on this machine) and queues each
  again (:class:`RetryDeadTrial`), so a SIGKILL loses nothing finished and the
  killed point still runs.
* :class:`Worker` runs trials from a :class:`~harness.search.SearchStrategy`
  until the strategy has nothing left, the budget or timeout is reached, or
  the user presses Ctrl-C (the trial in flight goes back to the queue).

Example:
    >>> from omegaconf import OmegaConf
    >>> from harness.config import StorageConfig
    >>> storage = open_storage(OmegaConf.structured(StorageConfig(url="sqlite://")))
    >>> study, created = open_study(storage, "demo", ["minimize", "maximize"], experiment={"a": 1})
    >>> created
    True
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.claims import Claims
from harness.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

WORKER_ATTR = "qsweep:worker"
EXPERIMENT_ATTR = "qsweep:experiment"
FAILURE_ATTR = "failure"  # user attr on FAIL trials: "error" (raised) or "interrupted" (Ctrl-C)
KEPT_ON_RETRY = ("grid_point",)  # user attributes a retried trial inherits

optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's notes on the experimental APIs qsweep relies on on purpose (heartbeats,
    stale-trial failing, metric names) and its advice to use heartbeats only with ``optimize``
    (qsweep runs its own ask/tell loop with its own heartbeat thread)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used", category=UserWarning)
        yield


# -- identity ---------------------------------------------------------------------------------
def _machine_id() -> str:
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    return f"{socket.gethostname()}/{uuid.getnode():012x}/{boot}"


MACHINE = _machine_id()


def worker_id() -> str:
    """``machine/pid`` of this process (machine = host name, MAC address, boot id)."""
    return f"{MACHINE}#{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- storage ----------------------------------------------------------------------------------
def masked_url(url: str) -> str:
    """``url`` with its password hidden (for messages and files)."""
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def normalize_url(url: str) -> str:
    """Make a relative SQLite path absolute (under the working folder) and create its folder."""
    if url.startswith("sqlite:///"):
        rel = url[len("sqlite:///"):]
        if rel and rel != ":memory:" and not rel.startswith("file:"):
            path = Path(rel).expanduser()
            if not path.is_absolute():
                path = Path.cwd() / path
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageError(f"Cannot create the folder of the study storage {url!r}: {e}. "
                                   "Check storage.url.") from None
            return "sqlite:///" + str(path)
    return url


class RetryDeadTrial:
    """Queue a trial again (state WAITING, same parameters) after its worker died.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback`` (same ``failed_trial`` and
    ``retry_history`` system attributes), but the copy keeps only the trial's
    parameters and grid point, not half-written results or the dead worker's id.
    """

    def __init__(self, max_retry: int | None, reason: str = "its worker stopped sending heartbeats"):
        self.max_retry = max_retry
        self.reason = reason

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
        system_attrs = {k: v for k, v in trial.system_attrs.items() if k != WORKER_ATTR}
        system_attrs.update(failed_trial=history[0], retry_history=history)
        # The runner records the setting again from the parameters; only the grid identity carries over.
        user_attrs = {k: v for k, v in trial.user_attrs.items() if k in KEPT_ON_RETRY}
        storage = study._storage
        if self.max_retry is not None and len(history) > self.max_retry:
            log.warning("trial %d: %s; not retried (storage.max_retry=%d reached)", trial.number, self.reason,
                        self.max_retry)
            return
        # Through the storage (not study.add_trial) to learn the new trial's number.
        frozen = optuna.create_trial(state=TrialState.WAITING, params=dict(trial.params),
                                     distributions=dict(trial.distributions), user_attrs=user_attrs,
                                     system_attrs=system_attrs)
        new_id = storage.create_new_trial(study._study_id, template_trial=frozen)
        log.warning("trial %d: %s; queued again as trial %d", trial.number, self.reason,
                    storage.get_trial_number_from_id(new_id))


def retried_numbers(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """Dead trial number -> number of the trial that retried it."""
    out: dict[int, int] = {}
    for t in trials:
        history = t.system_attrs.get("retry_history") or []
        if history:
            out[int(history[-1])] = t.number
    return out


def _tune_sqlite(engine: Any) -> None:
    """Make SQLite safe and quick for qsweep's concurrent local workers.

    * ``BEGIN IMMEDIATE`` for every transaction (SQLAlchemy's documented pysqlite
      recipe): Python's sqlite3 module otherwise starts a transaction only at the
      first write, so two processes can both read a trial as WAITING and both mark
      it RUNNING — Optuna's ``for_update`` row lock is ignored on SQLite. With
      IMMEDIATE, the read and the write of a transaction hold the write lock.
    * WAL journal with ``synchronous=NORMAL``: a commit does not wait for fsync
      (a trial makes dozens) and readers do not block the writer.
    """
    import sqlalchemy

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # sqlite3 emits no BEGIN of its own
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(engine, "connect", on_connect)
    sqlalchemy.event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections opened before the listeners get replaced


def open_storage(cfg: Any) -> optuna.storages.RDBStorage:
    """Open the Optuna RDB storage ``cfg.url`` with heartbeats (``cfg``: StorageConfig).

    Raises:
        StorageError: the URL is malformed, its driver is missing, or the database
            cannot be reached (the message names the masked URL and the reason).
        ConfigError: a non-positive heartbeat setting.
    """
    import sqlalchemy
    from sqlalchemy import exc as sa_exc

    url = normalize_url(str(cfg.url))
    shown = masked_url(url)
    if cfg.heartbeat_interval <= 0:
        raise ConfigError(f"storage.heartbeat_interval must be a positive number of seconds, got {cfg.heartbeat_interval}.")
    if cfg.grace_period <= cfg.heartbeat_interval:
        raise ConfigError(f"storage.grace_period ({cfg.grace_period}) must exceed storage.heartbeat_interval "
                          f"({cfg.heartbeat_interval}) or live trials would be declared dead.")
    try:
        parsed = sqlalchemy.engine.make_url(url)
        backend = parsed.get_backend_name()
    except Exception as e:
        raise StorageError(f"storage.url={shown!r} is not a database URL ({e}). Use e.g. "
                           "sqlite:///outputs/qsweep.db or postgresql://user@host:5432/dbname.") from None
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; use psycopg2 when only it is installed.
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            url = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif backend == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        engine_kwargs["pool_pre_ping"] = True
    last: Exception | None = None
    for attempt in range(6):
        try:
            with quiet_optuna():
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs,
                    heartbeat_interval=int(cfg.heartbeat_interval), grace_period=int(cfg.grace_period),
                    heartbeat_stale_trial_callback=RetryDeadTrial(cfg.max_retry))
            if backend == "sqlite":
                _tune_sqlite(storage.engine)
            Claims(storage.engine)  # create qsweep's claims table now: fail here, not mid-sweep
            return storage
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError) as e:
            # Several workers creating the tables of a new database at once: try again.
            last = e
            time.sleep(0.3 + random.random() * 0.7)
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            reason = str(getattr(e, "orig", e) or e).strip().splitlines()[0] if str(getattr(e, "orig", e)).strip() else type(e).__name__
            raise StorageError(f"Cannot open the study storage {shown}: {reason}. Check storage.url and that the "
                               "database server is running and reachable.") from None
        except (ImportError, sa_exc.NoSuchModuleError, sa_exc.ArgumentError) as e:
            raise StorageError(f"Cannot open the study storage {shown}: {e}. Check storage.url (any Optuna RDB URL, "
                               "e.g. sqlite:///outputs/qsweep.db or postgresql://user@host:5432/dbname; "
                               "PostgreSQL needs psycopg2: pip install 'qsweep[postgres]').") from None
        except RuntimeError as e:  # optuna's schema version check
            raise StorageError(f"Cannot use the study storage {shown}: {e}") from None
    raise StorageError(f"Cannot initialise the study storage {shown}: {last}")


# -- study ------------------------------------------------------------------------------------
def _diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {json.dumps(va)} in the study, {json.dumps(vb)} now")
    return out


def open_study(storage: optuna.storages.RDBStorage, name: str, directions: Sequence[str], *,
               experiment: Mapping[str, Any], sampler: optuna.samplers.BaseSampler | None = None,
               metric_names: Sequence[str] | None = None, wait: float = 60.0) -> tuple[optuna.Study, bool]:
    """Create study ``name`` or join the existing one; return ``(study, created)``.

    ``experiment`` (JSON-able) describes what the trials measure (model and data
    hashes, metric, search space, seed); joining a study recorded with another
    experiment raises a :class:`ConfigError` listing the differences.
    """
    experiment = json.loads(json.dumps(experiment))
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=list(directions), sampler=sampler)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        created = False
    if created:
        Claims(storage.engine).forget_study(study._study_id)
        if metric_names:
            with quiet_optuna():
                study.set_metric_names(list(metric_names))
        storage.set_study_system_attr(study._study_id, EXPERIMENT_ATTR, experiment)
        return study, True
    deadline = time.monotonic() + wait
    while True:
        recorded = storage.get_study_system_attrs(study._study_id).get(EXPERIMENT_ATTR)
        if recorded is not None:
            break
        if time.monotonic() > deadline:
            raise StorageError(f"Study {name!r} in {masked_url(storage.url)} was not created by qsweep (it has no "
                               "experiment record). Choose another study.name.")
        time.sleep(0.2)
    if [d.name.lower() for d in study.directions] != [d.lower() for d in directions]:
        raise ConfigError(f"Study {name!r} optimises {[d.name.lower() for d in study.directions]}, this run "
                          f"{list(directions)}. Choose another study.name.")
    diffs = _diff(recorded, experiment)
    if diffs:
        raise ConfigError(
            f"Study {name!r} in {masked_url(storage.url)} was created for a different experiment:\n  "
            + "\n  ".join(diffs)
            + "\nUse another study.name (the default name is derived from the experiment), or the same config.")
    return study, False


# -- dead workers -----------------------------------------------------------------------------
def reap(study: optuna.Study) -> list[int]:
    """Fail (and queue again) the running trials whose worker died; return their numbers.

    A trial is dead when its heartbeat is older than the storage's grace period
    (Optuna's rule, any machine), or when it runs on this machine in a process
    that no longer exists (noticed at once, without waiting for the grace period).
    """
    storage = study._storage
    reaped: list[int] = []
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with quiet_optuna():
        optuna.storages.fail_stale_trials(study)
    after_running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    reaped += sorted(before - after_running)
    callback = storage.get_heartbeat_stale_trial_callback()
    me = os.getpid()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.system_attrs.get(WORKER_ATTR)
        if not w or "#" not in w:
            continue
        machine, _, pid = w.rpartition("#")
        if machine != MACHINE or int(pid) == me or _pid_alive(int(pid)):
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        reaped.append(t.number)
        if callback is not None:
            RetryDeadTrial(getattr(callback, "max_retry", None), reason=f"its worker (pid {pid}) died")(
                study, storage.get_trial(t._trial_id))
    return reaped


class Heartbeat:
    """Record a trial's heartbeat every ``interval`` seconds in a daemon thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.interval = storage.get_heartbeat_interval() or 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        if self.interval:
            self.storage.record_heartbeat(self.trial_id)
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.trial_id}", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as e:  # a lost connection must not kill the trial; the next beat retries
                log.debug("heartbeat of trial id %d failed: %s", self.trial_id, e)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def pop_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take the oldest WAITING trial (RUNNING from now on), or None.

    Safe with concurrent workers: ``set_trial_state_values(RUNNING)`` succeeds for
    exactly one of them (row lock on PostgreSQL, write lock on SQLite).
    """
    storage = study._storage
    for t in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        storage.set_trial_system_attr(t._trial_id, WORKER_ATTR, worker_id())
        return optuna.Trial(study, t._trial_id)
    return None


def mark_running(trial: optuna.Trial) -> None:
    """Record this worker on a trial it started (so a dead process is noticed at once)."""
    trial.storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, worker_id())


def requeue(study: optuna.Study, trial_id: int, reason: str) -> None:
    """Fail a trial this worker cannot finish (Ctrl-C) and queue its setting again."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial_id, FAILURE_ATTR, "interrupted")
        storage.set_trial_user_attr(trial_id, "error", reason)
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    RetryDeadTrial(None, reason=reason)(study, storage.get_trial(trial_id))


def counted_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that use up budget: all but skipped (PRUNED) ones and dead ones that were retried."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.state != TrialState.PRUNED
            and not (t.state == TrialState.FAIL and t.number in retried)]


@dataclass
class LoopState:
    """What :class:`Worker` did in this process."""

    started: list[int] = field(default_factory=list)
    interrupted: bool = False
    stopped_by: str = ""


class Worker:
    """Run trials of ``study`` from ``strategy`` with heartbeats until done.

    ``run_trial(trial)`` evaluates one trial and tells the study its outcome
    (it must not raise for a failed trial: it records FAIL itself).
    ``on_progress()`` is called after every trial and while waiting.
    """

    def __init__(self, study: optuna.Study, strategy: Any, run_trial: Callable[[optuna.Trial], None], *,
                 timeout: float | None, wait_for_others: bool, on_progress: Callable[[], None] = lambda: None,
                 poll: float = 1.0):
        self.study, self.strategy, self.run_trial = study, strategy, run_trial
        self.timeout, self.wait_for_others, self.on_progress, self.poll = timeout, wait_for_others, on_progress, poll

    def run(self) -> LoopState:
        state = LoopState()
        t0 = time.monotonic()
        waiting_logged = False
        reap_every = max(1.0, float(self.study._storage.get_heartbeat_interval() or 5))
        last_reap = -math.inf
        current: optuna.Trial | None = None
        try:
            while True:
                if time.monotonic() - last_reap >= reap_every:
                    reap(self.study)
                    last_reap = time.monotonic()
                if self.timeout is not None and time.monotonic() - t0 >= self.timeout:
                    state.stopped_by = f"search.timeout={self.timeout:g} s reached"
                    break
                current = self.strategy.next_trial(self.study)
                if current is None:
                    running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
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
                with Heartbeat(self.study._storage, current._trial_id):
                    self.run_trial(current)
                current = None
                self.on_progress()
        except KeyboardInterrupt:
            state.interrupted = True
            state.stopped_by = "interrupted (Ctrl-C)"
            if current is not None:
                requeue(self.study, current._trial_id, "interrupted by Ctrl-C")
        return state
