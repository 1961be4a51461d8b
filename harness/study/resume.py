"""Create a study or join (resume) the existing one of the same name, for the same experiment only.

The experiment (model and data hashes, metric, search description, seed, ...)
is recorded with the study when it is created; a worker whose experiment differs
is refused with the list of differences, so two configs never mix trials.
"""
from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

import optuna

from harness.errors import ConfigError, StorageError
from harness.study.db import EXPERIMENT_ATTR, StudyDB
from harness.study.storage import masked_url


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
               metric_names: Sequence[str] | None = None, wait: float = 60.0) -> tuple[StudyDB, bool]:
    """Create study ``name`` or join the existing one; return ``(db, created)``.

    ``experiment`` (JSON-able) describes what the trials measure (model and data
    hashes, metric, search space, seed); joining a study recorded with another
    experiment raises a :class:`ConfigError` listing the differences.

    Example:
        >>> import tempfile
    >>> from omegaconf import OmegaConf
        >>> from harness.config import StorageConfig
        >>> from harness.study import open_storage
        >>> storage = open_storage(OmegaConf.structured(StorageConfig(url=f"sqlite:///{tempfile.mkdtemp()}/demo.db")))
        >>> db, created = open_study(storage, "demo", ["minimize", "maximize"], experiment={"a": 1})
        >>> created
        True
    """
    experiment = json.loads(json.dumps(experiment))
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=list(directions), sampler=sampler)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        created = False
    db = StudyDB(study)
    if created:
        db.forget_claims()
        if metric_names:
            db.set_metric_names(metric_names)
        db.set_study_attr(EXPERIMENT_ATTR, experiment)
        return db, True
    deadline = time.monotonic() + wait
    while True:
        recorded = db.study_attrs().get(EXPERIMENT_ATTR)
        if recorded is not None:
            break
        if time.monotonic() > deadline:
            if not db.trials():
                # An empty study without a record: its creator died (or its commit's answer was lost in an
                # outage, so it was this worker itself) before recording the experiment. Adopt it.
                db.forget_claims()
                if metric_names:
                    db.set_metric_names(metric_names)
                db.set_study_attr(EXPERIMENT_ATTR, experiment)
                return db, True
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
    return db, False
