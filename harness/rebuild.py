"""Rebuild a run directory from the study alone: trials.csv, pareto.csv, summary.json, the report and the models.

The first worker of a study records what a rebuild needs as the study system
attribute ``qsweep:run`` (:func:`record_run`): the resolved config (secrets
masked), the model's path, zoo name and sha256, the test data's name, size and
sha256, the float baseline and the executor. Each trial records the plan hash it
evaluated and the sha256 of its quantized model (``model_sha256``).

:func:`rebuild` (``qsweep-report --study NAME --storage URL OUT_DIR``) reads the
study, rebuilds the search strategy from the recorded config, and writes the run
directory through the same writer as a sweep (:func:`harness.outputs.write_run`).
Each Pareto-optimal model is re-created from the float model and the trial's
parameters and must match the recorded plan hash, size and sha256 byte for byte
(a mismatch is an error naming the trial). It needs the float model: the file
must still exist at the recorded path, or be given with ``model_path``
(``--model``); its sha256 is checked against the study's. The test data is not
needed (the baseline is recorded), except by a calibration-aware run: its
plans read calibration statistics, which are collected again from the
recorded calibration data (``calibration=split`` reads the test data it was
split from) and must have the study's digest.

Example:
    >>> rebuild("digits_mlp-grid-0123abcd", "sqlite:///outputs/qsweep.db", "rebuilt/")  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf

from harness.config import QsweepConfig, StorageConfig
from harness.errors import ConfigError, StorageError
from harness.scores import TaskMetric
from harness.inputs import ModelInput
from harness.outputs import SweepResult, config_record, write_run
from harness.secrets import install_log_masking, mask
from harness.study import EXPERIMENT_ATTR, RUN_ATTR, LoopState, StudyDB, open_storage
from harness.writes import check_writable

log = logging.getLogger("qsweep")

__all__ = ["RecordedEvaluation", "RecordedData", "record_run", "rebuild"]


@dataclass(frozen=True)
class RecordedMetric:
    """What the writer needs of the task metric, as recorded in the study."""

    name: str
    maximize: bool
    drop_test: str | None

    # the task metric's own rules (they read ``name`` and ``maximize`` only)
    direction = TaskMetric.direction
    drop_name = TaskMetric.drop_name
    drop = TaskMetric.drop


@dataclass
class RecordedEvaluation:
    """What the writer needs of an evaluator, as recorded in the study."""

    metric: RecordedMetric
    baseline: dict[str, Any]
    executor_name: str
    snr_outputs: list[str]
    evaluation: dict[str, Any]
    #: The experiment record's ``racing`` (mode, confidence, chunk, strata, stops).
    racing: dict[str, Any] = field(default_factory=dict)
    #: A rebuild evaluates nothing: no activation cache.
    cache: None = None

    def evaluation_entry(self) -> dict[str, Any]:
        """``summary["evaluation"]`` as the sweep wrote it."""
        return dict(self.evaluation)

    def racing_record(self) -> dict[str, Any]:
        """How the study's trials were raced, as the experiment record holds it."""
        return dict(self.racing)


@dataclass
class RecordedData:
    """What the writer needs of the test set, as recorded in the study."""

    name: str
    description: str
    n: int
    sha256: str


def run_record(cfg: Any, model: ModelInput, dataset: Any, evaluator: Any) -> dict[str, Any]:
    """The ``qsweep:run`` record of a sweep (JSON-able, secrets masked)."""
    from harness.outputs import _json_safe

    config = config_record(cfg)
    config.pop("storage", None)  # a rebuild is told its storage; nothing of the connection is kept
    return _json_safe({
        "config": config,
        "model": {"name": model.label, "path": str(model.path), "sha256": model.sha256, "zoo": model.zoo},
        "data": {"name": dataset.name, "description": dataset.description, "n": dataset.n,
                 "sha256": dataset.sha256},
        "metric": {"name": evaluator.metric.name, "maximize": evaluator.metric.maximize,
                   "drop_test": evaluator.metric.drop_test},
        "baseline": evaluator.baseline,
        "executor": evaluator.executor_name,
        "snr_outputs": list(evaluator.snr_outputs),
        "evaluation": evaluator.evaluation_entry(),
    })


def record_run(db: StudyDB, cfg: Any, model: ModelInput, dataset: Any, evaluator: Any) -> None:
    """Record :func:`run_record` in the study unless a worker already did."""
    if RUN_ATTR not in db.study_attrs():
        db.set_study_attr(RUN_ATTR, run_record(cfg, model, dataset, evaluator))


def _study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in storage.get_all_studies())
        raise StorageError(f"There is no study {name!r} in {mask(storage.url)}; its studies: "
                           f"{', '.join(names) or 'none'}.") from None


def _model(record: dict[str, Any], expected_sha: str, model_path: str | Path | None) -> ModelInput:
    import quantizer

    path = Path(model_path).expanduser() if model_path else Path(record["path"])
    given = "--model" if model_path else "the model path recorded in the study"
    if not path.is_file():
        raise ConfigError(f"The float model is needed to re-create the saved models, but {given} {path} does not "
                          f"exist. Give the model file with --model PATH (its sha256 must be {expected_sha}).")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != expected_sha:
        raise ConfigError(f"{given} {path} has sha256 {sha}, but the study's trials were made from a model with "
                          f"sha256 {expected_sha}: give that model file with --model PATH.")
    return ModelInput(quantizer.load(path), str(record["name"]), path.resolve(), sha, record.get("zoo"))


def _calibration(cfg: Any, model: ModelInput, experiment: dict[str, Any]) -> tuple[Any, dict[str, Any], Any]:
    """``(statistics, GPTQ options, calibration record)`` of a calibration-aware run, collected again from the
    recorded calibration data (``(None, {}, None)`` for a round-to-nearest run).

    Raises:
        ConfigError: the calibration data cannot be read again, or gives other statistics (names ``calibration``).
    """
    recorded = experiment.get("calibration")
    if not recorded:
        return None, {}, None
    from harness.errors import QsweepError
    from harness.inputs import load_calibration, load_dataset
    from harness.space import SearchSpace
    from harness.sweep import calibration_record, calibration_stats

    log.info("the study's plans read calibration statistics: collecting them again from the recorded calibration "
             "data (calibration=%s)", cfg.calibration.kind)
    try:
        calib = load_calibration(cfg.calibration, cfg.data, model, load_dataset(cfg.data, model))
    except QsweepError as e:
        raise ConfigError(f"This study's models were made with calibration statistics, which a rebuild collects "
                          f"again from the recorded calibration data (calibration={cfg.calibration.kind}), but it "
                          f"cannot be read: {e}") from None
    stats = calibration_stats(cfg, SearchSpace.from_config(cfg.search.space, cfg.selector), model, calib)
    if stats is None or stats.digest() != recorded["stats"]:
        got = stats.digest() if stats is not None else "none"
        if stats is not None:
            stats.close()
        raise ConfigError(f"calibration: the recorded calibration data gives statistics {got}, but the study's "
                          f"plans read {recorded['stats']} (the calibration file or the data it was split from "
                          "changed): give the same calibration data.")
    return stats, dict(recorded.get("gptq") or {}), calibration_record(calib, stats)


def _strategy(cfg: Any, spec: Any, stats: Any = None, gptq: dict[str, Any] | None = None) -> Any:
    from harness.search import SearchContext, strategy_class
    from harness.space import SearchSpace, build_plan
    from harness.sweep import load_option_runs

    kind = strategy_class(str(cfg.search.kind))
    space = SearchSpace.from_config(cfg.search.space, cfg.selector)
    ctx = SearchContext(cfg=cfg.search, space=space, model=spec, seed=int(cfg.seed),
                        build_plan=lambda s: build_plan(spec, s, space.lut_function, fuse=bool(cfg.search.fuse),
                                                        calibration=stats, algorithm_options=gptq or {}),
                        runs=load_option_runs(cfg.search, kind.run_options))
    return kind(ctx)


def rebuild(study_name: str, storage_url: str, out_dir: str | Path, *, model_path: str | Path | None = None,
            report: bool = True, retry_s: float = 120.0) -> SweepResult:
    """Write the run directory of study ``study_name`` in ``storage_url`` into ``out_dir`` (see module docstring).

    Raises:
        StorageError: the storage cannot be opened or has no such study.
        ConfigError: the study has no run record (made by an older qsweep: run one worker of the same
            config to record it), or the float model is missing / not the study's (sha256).
        OutputError: ``out_dir`` cannot be written, or a model cannot be re-created byte for byte.
    """
    t_start = time.time()
    install_log_masking()
    out_dir = Path(out_dir)
    check_writable(out_dir)
    storage = open_storage(OmegaConf.structured(StorageConfig(url=str(storage_url), retry_s=float(retry_s))))
    study = _study(storage, study_name)
    db = StudyDB(study)
    attrs = db.study_attrs()
    record, experiment = attrs.get(RUN_ATTR), attrs.get(EXPERIMENT_ATTR)
    if record is None or experiment is None:
        raise ConfigError(f"Study {study_name!r} has no run record (it was made by an older qsweep): run one worker "
                          "of the same config against it once (it records what a rebuild needs), then rebuild.")
    cfg = OmegaConf.merge(OmegaConf.structured(QsweepConfig), record["config"])
    cfg.storage.url = mask(storage.url)
    cfg.report.enabled = bool(report)
    cfg.output.save_models = True
    model = _model(record["model"], str(experiment["model_sha256"]), model_path)
    stats, gptq, calibration = _calibration(cfg, model, experiment)
    strategy = _strategy(cfg, model.spec, stats, gptq)
    m = record["metric"]
    metric = RecordedMetric(str(m["name"]), bool(m["maximize"]), m.get("drop_test"))
    evaluation = RecordedEvaluation(metric, dict(record["baseline"]), str(record["executor"]),
                                    list(record["snr_outputs"]), dict(record["evaluation"]),
                                    dict(experiment.get("racing") or {}))
    data = RecordedData(**record["data"])
    log.info("rebuilding study %r of %s into %s from the study alone", study_name, mask(storage.url), out_dir)
    loop = LoopState(stopped_by="rebuilt from the study")
    try:
        return write_run(out_dir, cfg, study=study, storage_url=storage.url, strategy=strategy,
                         evaluator=evaluation, model=model, dataset=data, experiment=experiment, created=False,
                         loop=loop, t_start=t_start, strict_models=True, calibration=calibration)
    finally:
        if stats is not None:
            stats.close()
