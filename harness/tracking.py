"""Experiment tracking: a sweep and its trials logged to MLflow (``tracking=mlflow``).

:func:`open_tracker` is called by the run wiring (:func:`harness.sweep.run_sweep`) once the study is
open, and :meth:`Tracker.finish` once the run directory is written. With ``tracking.kind=mlflow``
(``pip install "qsweep[mlflow]"``):

* the sweep is one **parent run** per study (tag ``qsweep.study``): the resolved config as params
  (masked, as in ``config.yaml``), the float baseline and the trial counts as metrics, and as
  artifacts the run directory's files (``config.yaml``, ``environment.json``, ``summary.json``,
  ``trials.csv``, ``pareto.csv``, the report) and the Pareto-optimal models (``models/``), plus the
  Pareto table (``pareto_table.json``, MLflow's table view);
* each evaluated trial (COMPLETE, or PRUNED with figures) is a **child run**: its setting as params;
  size, size in KB, compression ratio, the task metric with its 95% interval, drop and p-value, the
  SNRs and the timings as metrics; plan hash, study name, state and ``reused_from`` as tags.

Each run carries a deterministic key tag (``qsweep.key``: the study's digest, and ``/<trial>`` for a
trial). Before logging, the runs of the study are searched and only trials without a run are
logged, so a resumed sweep and several workers of one study log every trial once; two workers that
race to log the same key keep the same one (the earliest, then the smallest run id) and delete the
others. The default tracking URI is ``sqlite:///<working folder>/mlruns/mlflow.db`` with artifacts
in ``mlruns/artifacts`` (a local folder next to ``outputs/``: nothing to start;
``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``). A tracking failure (an unreachable
server, a full disk) is warned about once and tracking stops; the sweep never does.

Example:
    >>> default_uri("/work/project")
    'sqlite:////work/project/mlruns/mlflow.db'
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pandas as pd

from harness import rundir
from harness.errors import ConfigError
from harness.secrets import mask, mask_data

log = logging.getLogger("qsweep")

KINDS = ("none", "mlflow")
#: Tags every qsweep run carries (the key is what makes logging idempotent).
TAG_KEY, TAG_KIND, TAG_STUDY, TAG_TRIAL = "qsweep.key", "qsweep.kind", "qsweep.study", "qsweep.trial"
PARENT_TAG = "mlflow.parentRunId"
#: The run directory's files logged as artifacts of the parent run (when present).
RUN_FILES = (rundir.CONFIG, rundir.ENVIRONMENT, rundir.SUMMARY, rundir.TRIALS, rundir.PARETO, rundir.REPORT_HTML,
             rundir.PARETO_PNG, rundir.LAYERS_PNG, rundir.SENSITIVITY_PNG)
#: The Pareto table as an MLflow table artifact of the parent run.
PARETO_TABLE = "pareto_table.json"
#: Trial figures besides :func:`harness.rundir.figure_columns` logged as metrics.
EXTRA_METRICS = ("quantize_s", "evaluate_s", "evaluated_samples")  # the last: racing runs
#: Trial columns logged as tags of a child run.
TRIAL_TAGS = ("plan_hash", "state", "reused_from", "model_file", "encodings", "worker", "setting")
#: MLflow's request settings as the user set them before this module was imported.
_USER_ENV = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")}
_MAX_BATCH = 100  # MLflow's limit of params per log_batch call (metrics: 1000)


def default_uri(folder: str | Path | None = None) -> str:
    """The local tracking store in ``folder`` (default: the working folder): ``mlruns/mlflow.db``."""
    return f"sqlite:///{Path(folder or os.getcwd()).resolve() / 'mlruns' / 'mlflow.db'}"


def study_key(study_name: str) -> str:
    """The deterministic key of a study's parent run (a digest: safe in MLflow filter strings)."""
    return hashlib.sha256(study_name.encode()).hexdigest()[:20]


def check(tracking: Any) -> None:
    """Refuse an unknown ``tracking.kind`` or ``tracking=mlflow`` without MLflow installed, before any trial.

    Raises:
        ConfigError: names the key, or the extra to install.
    """
    kind = str(tracking.kind)
    if kind not in KINDS:
        raise ConfigError(f"tracking.kind={kind!r}; choose one of {', '.join(KINDS)}.")
    if kind == "mlflow":
        try:
            import mlflow  # noqa: F401 - an optional extra, not one of the project's own modules
        except ImportError:
            raise ConfigError('tracking=mlflow needs MLflow, which is not installed: pip install "qsweep[mlflow]" '
                              "(or run without tracking=mlflow).") from None


def open_tracker(cfg: Any, study_name: str) -> "Tracker":
    """The tracker of ``cfg.tracking`` for ``study_name``: opens (or finds) the parent run now."""
    check(cfg.tracking)
    if str(cfg.tracking.kind) == "none":
        return Tracker()
    tracker = MlflowTracker(cfg, study_name)
    tracker.guard("open the parent run", tracker.start)
    return tracker


class Tracker:
    """No tracking (``tracking=none``): every call does nothing."""

    enabled = False

    def finish(self, result: Any, study: Any) -> None:
        """Log the finished run (``result``: :class:`harness.outputs.SweepResult`; ``study``: the Optuna study)."""


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _flat(data: Any, prefix: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(data, Mapping):
        for k, v in data.items():
            yield from _flat(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], mask(data)[:6000]


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ms(ts: Any) -> int | None:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return None
    return int(pd.Timestamp(ts).timestamp() * 1000)


class MlflowTracker(Tracker):
    """The sweep as an MLflow parent run, each evaluated trial as a child run (see the module docstring)."""

    enabled = True

    def __init__(self, cfg: Any, study_name: str):
        t = cfg.tracking
        self.cfg, self.study_name, self.key = cfg, study_name, study_key(study_name)
        self.uri = str(t.uri) if t.uri else default_uri()
        self.experiment_name = str(t.experiment)
        # An unreachable server fails in about timeout_s, not after MLflow's minutes of retries (the user's
        # own MLFLOW_HTTP_REQUEST_* settings, made before qsweep started, win).
        for name, value in (("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1.0, float(t.timeout_s))))),
                            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")):
            if _USER_ENV.get(name) is None:
                os.environ[name] = value
        self.client: Any = None  # opened by start() (MLflow creates a new store's tables there)
        self.experiment_id: str | None = None
        self.parent_id: str | None = None

    # -- failures: warn once, then stop tracking -----------------------------------------------
    def guard(self, what: str, fn: Any, *args: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - tracking never stops the sweep
            self.enabled = False
            log.warning("tracking: could not %s in MLflow at %s (%s: %s); tracking is off for this run, the sweep "
                        "goes on (its run directory and study are complete; re-run with the server reachable to "
                        "log it)", what, mask(self.uri), type(e).__name__, mask(str(e).splitlines()[0] if str(e)
                                                                                else ""))
            return None

    # -- the parent run ------------------------------------------------------------------------
    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the local database, not in the working folder
            location = (Path(self.uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:  # another worker created it meanwhile
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    def _runs(self, kind: str) -> list[Any]:
        """Every active run of this study of ``kind`` (sweep | trial)."""
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], f"tags.`{TAG_STUDY}_key` = '{self.key}' and tags.`{TAG_KIND}` = '{kind}'",
                max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _dedupe(self, runs: list[Any]) -> dict[str, Any]:
        """One run per key: the earliest start, then the smallest run id (every worker keeps the same one)."""
        keep: dict[str, Any] = {}
        for r in sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id)):
            k = r.data.tags.get(TAG_KEY)
            if k in keep:
                self.client.delete_run(r.info.run_id)
            else:
                keep[k] = r
        return keep

    def _tags(self, kind: str, key: str) -> dict[str, str]:
        return {TAG_KEY: key, TAG_KIND: kind, TAG_STUDY: self.study_name, f"{TAG_STUDY}_key": self.key}

    def _local_lock(self) -> contextlib.AbstractContextManager[Any]:
        """For a local SQLite store: a file lock beside it, so workers starting together create its tables and
        the experiment once (MLflow's own creation is not safe against a concurrent one)."""
        if not self.uri.startswith("sqlite:///"):
            return contextlib.nullcontext()
        Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return _flock(Path(self.uri[len("sqlite:///"):]).parent / ".qsweep-tracking.lock")

    def start(self) -> None:
        from harness.outputs import config_record

        from mlflow import MlflowClient

        with self._local_lock():
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment()
        parents = self._dedupe(self._runs("sweep"))
        if self.key in parents:
            self.parent_id = parents[self.key].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            log.info("tracking: MLflow run %s (experiment %r at %s), resumed", self.parent_id, self.experiment_name,
                     mask(self.uri))
            return
        run = self.client.create_run(self.experiment_id, tags=self._tags("sweep", self.key),
                                     run_name=self.study_name)
        parents = self._dedupe(self._runs("sweep"))  # a worker that raced us: keep one parent
        self.parent_id = parents[self.key].info.run_id
        if self.parent_id == run.info.run_id:  # params are immutable: the resolved config, once, by its creator
            params = list(_flat(mask_data(config_record(self.cfg))))
            for i in range(0, len(params), _MAX_BATCH):
                self._batch(self.parent_id, params=params[i:i + _MAX_BATCH])
        log.info("tracking: MLflow run %s (experiment %r at %s)", self.parent_id, self.experiment_name, mask(self.uri))

    def _batch(self, run_id: str, metrics: Mapping[str, float] | None = None,
               params: Iterable[tuple[str, str]] = (), tags: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = _ms(pd.Timestamp.now(tz="UTC"))
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in (metrics or {}).items()],
                              params=[Param(k, v) for k, v in params],
                              tags=[RunTag(k, v) for k, v in (tags or {}).items()])

    # -- the end of the run --------------------------------------------------------------------
    def finish(self, result: Any, study: Any) -> None:
        if not self.enabled or self.parent_id is None:
            return
        n = self.guard("log the trials", self._log_trials, result, study)
        self.guard("log the run's files", self._log_parent, result)
        if self.enabled:
            log.info("tracking: logged %d new trial run(s) to MLflow run %s", n or 0, self.parent_id)

    def _log_trials(self, result: Any, study: Any) -> int:
        logged = {r.data.tags.get(TAG_KEY) for r in self._runs("trial")}
        metric = str(result.summary["metric"])
        figures = rundir.figure_columns(metric, result.summary["evaluation"]["snr_outputs"])
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        n = 0
        for _, row in result.trials.iterrows():
            key = f"{self.key}/{int(row['trial'])}"
            if key in logged or row["state"] not in (rundir.COMPLETE, rundir.PRUNED) or pd.isna(row["size_bytes"]):
                continue  # logged already, or not evaluated (failed, running, skipped)
            t = by_number[int(row["trial"])]
            tags = {**self._tags("trial", key), PARENT_TAG: self.parent_id, TAG_TRIAL: str(t.number)}
            tags.update({k: str(row[k]) for k in TRIAL_TAGS if k in row.index and not pd.isna(row[k])})
            setting = row.get("setting") if "setting" in row.index and not pd.isna(row.get("setting")) else \
                " ".join(f"{k}={v}" for k, v in t.params.items())
            run = self.client.create_run(self.experiment_id, start_time=_ms(t.datetime_start), tags=tags,
                                         run_name=f"trial {t.number}: {setting}"[:250])
            values = {c: _finite(row[c]) for c in (*figures, *EXTRA_METRICS) if c in row.index}
            values["size_kb"] = float(row["size_bytes"]) / 1024
            self._batch(run.info.run_id, metrics={k: v for k, v in values.items() if v is not None},
                        params=[(k, mask(v)) for k, v in t.params.items()])
            self.client.set_terminated(run.info.run_id, status="FINISHED" if t.state.name == "COMPLETE" else "KILLED",
                                       end_time=_ms(t.datetime_complete))
            n += 1
        self._dedupe(self._runs("trial"))  # another worker logging the same trials at the same moment
        return n

    def _log_parent(self, result: Any) -> None:
        run_dir, summary, front = Path(result.run_dir), result.summary, result.front
        metric = str(summary["metric"])
        base = summary["baseline"]
        trials = summary["trials"]
        values = {f"float_{metric}": _finite(base.get(metric)), "float_size_kb": float(base["size_bytes"]) / 1024,
                  "trials": trials["total"], "trials_complete": trials.get("complete", 0),
                  "trials_reused": trials.get("reused", 0), "pareto_size": len(front)}
        best = (summary.get("target") or {}).get("best")
        if best:
            values.update({"best_size_kb": float(best["size_bytes"]) / 1024, f"best_{metric}": _finite(best[metric]),
                           "best_compression_ratio": _finite(best["compression_ratio"])})
        self._batch(self.parent_id, metrics={k: float(v) for k, v in values.items() if v is not None},
                    tags={"qsweep.model": str(summary["model"]["name"]), "qsweep.metric": metric,
                          "qsweep.search": str(summary["search"].get("kind", "")),
                          "qsweep.run_dir": str(run_dir.resolve())})
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.parent_id, str(run_dir / name))
        if (run_dir / rundir.MODELS).is_dir() and any((run_dir / rundir.MODELS).iterdir()):
            self.client.log_artifacts(self.parent_id, str(run_dir / rundir.MODELS), rundir.MODELS)
        if not front.empty:  # MLflow's table view; log_table would append to the table of an earlier run
            table = front.astype(object).where(front.notna(), None)
            if any(a.path == PARETO_TABLE for a in self.client.list_artifacts(self.parent_id)):
                self.client.log_text(self.parent_id, table.to_json(orient="split", index=False, date_format="iso"),
                                     PARETO_TABLE)
            else:
                self.client.log_table(self.parent_id, table, PARETO_TABLE)
        self.client.set_terminated(self.parent_id, status="KILLED" if result.interrupted else "FINISHED")
