"""The Optuna study qsweep's workers share: storage, open/resume, dead workers, heartbeats, the worker loop.

One concept per module:

* :mod:`.storage` — :func:`open_storage` opens any Optuna RDB URL (SQLite by
  default, PostgreSQL for several machines) with heartbeats switched on, or
  raises a :class:`~harness.errors.StorageError` naming the masked URL.
* :mod:`.retry` — :func:`is_transient` and :class:`Retry`: every storage call
  rides out a database outage for up to ``storage.retry_s`` seconds.
* :mod:`.rdb` — :class:`RetryingRDBStorage`, Optuna's RDB storage with every
  call retried and no trial created or finished twice by a retry.
* :mod:`.resume` — :func:`open_study` creates the study or joins the existing
  one with the same name, refusing one created for a different experiment.
* :mod:`.db` — :class:`StudyDB`, the handle every worker reads and writes the
  study through (trials, attributes, claims, locks).
* :mod:`.reap` — :func:`reap` fails the trials of dead workers and queues each
  again (:class:`RetryDeadTrial`); :func:`requeue` after Ctrl-C.
* :mod:`.heartbeat` — :class:`Heartbeat`, the per-trial heartbeat thread.
* :mod:`.worker` — :class:`Worker`, the trial loop, and :func:`pop_waiting`.
* :mod:`.budget` — which trials count against ``search.n_trials``.
* :mod:`.identity` — :func:`worker_id` (``machine#pid``).

Example:
    >>> import tempfile
    >>> from omegaconf import OmegaConf
    >>> from harness.config import StorageConfig
    >>> storage = open_storage(OmegaConf.structured(StorageConfig(url=f"sqlite:///{tempfile.mkdtemp()}/demo.db")))
    >>> db, created = open_study(storage, "demo", ["minimize", "maximize"], experiment={"a": 1})
    >>> created, db.name
    (True, 'demo')
"""
from __future__ import annotations

import optuna

from harness.study.budget import budget_used, counted_rows, counted_trials, retried_numbers
from harness.study.db import (
    EXPERIMENT_ATTR, FAILURE_ATTR, KEPT_ON_RETRY, RUN_ATTR, WORKER_ATTR, StudyDB, quiet_optuna,
)
from harness.study.heartbeat import Heartbeat
from harness.study.identity import MACHINE, worker_id
from harness.study.reap import RetryDeadTrial, reap, requeue
from harness.study.resume import open_study
from harness.study.rdb import RetryingRDBStorage
from harness.study.retry import Retry, is_transient
from harness.study.storage import masked_url, normalize_url, open_storage, storage_url
from harness.study.worker import LoopState, Worker, mark_running, pop_waiting

optuna.logging.set_verbosity(optuna.logging.WARNING)

__all__ = [
    "EXPERIMENT_ATTR", "FAILURE_ATTR", "KEPT_ON_RETRY", "MACHINE", "RUN_ATTR", "WORKER_ATTR", "Heartbeat", "LoopState",
    "Retry", "RetryDeadTrial", "RetryingRDBStorage", "StudyDB", "Worker", "budget_used", "counted_rows",
    "counted_trials", "is_transient", "mark_running", "masked_url", "normalize_url", "open_storage", "open_study",
    "pop_waiting", "quiet_optuna", "reap", "requeue", "retried_numbers", "storage_url", "worker_id",
]
