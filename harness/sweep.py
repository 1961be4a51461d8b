"""One qsweep run: the wiring from a composed config to the run directory.

:func:`run_sweep` is what the ``qsweep`` command calls with the composed
config; it can be called from Python with a config built by
``hydra.compose`` (see the tests). Everything a user can get wrong (model,
data, metric, search space and options, other runs the options name, storage)
is checked before the first trial, and so is the run directory (it must be
writable). The parts it wires together:
:mod:`harness.inputs` (model and test data), :mod:`harness.search` (the
strategy), :mod:`harness.study` (the shared study and the worker loop),
:mod:`harness.trial` (one trial), :mod:`harness.progress` (the bar) and the
run-directory writer (:mod:`harness.outputs`), then the tracking hook
(:mod:`harness.tracking`, ``tracking=mlflow``). What a later rebuild of the run
directory from the study alone needs (:mod:`harness.rebuild`) is recorded in
the study by the first worker.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import optuna

from harness import secrets, tracking
from harness.errors import ConfigError, QsweepError
from harness.evaluate import Evaluator
from harness.inputs import CalibrationInput, ModelInput, load_calibration, load_dataset, load_model
from harness.metric_choice import MetricRequest
from harness.outputs import SweepResult, write_run
from harness.progress import Progress
from harness.rebuild import record_run
from harness.search import SearchContext, strategy_class
from harness.space import SearchSpace, build_plan
from harness.study import Worker, masked_url, open_storage, open_study
from harness.trial import TrialRunner
from harness.writes import DiskWatch, check_writable

log = logging.getLogger("qsweep")

EXECUTOR_KINDS = ("numpy", "coreml", "auto")


# -- the run --------------------------------------------------------------------------------
def _study_name(model: ModelInput, kind: str, experiment: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(experiment, sort_keys=True).encode()).hexdigest()[:10]
    return f"{model.label}-{kind}-{digest}"


def load_option_runs(search: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The run directories that ``search.options.<name>`` name, loaded, keyed by the option's value.

    Raises:
        ConfigError: a value that is not a qsweep run directory (names the option).
    """
    from harness.analysis import load_run

    runs: dict[str, Any] = {}
    options = search.get("options") or {}
    for name in names:
        value = options.get(name)
        if value is None or str(value) in runs:
            continue
        try:
            runs[str(value)] = load_run(str(value))
        except QsweepError as e:
            raise ConfigError(f"search.options.{name}={str(value)!r}: {e}") from None
    return runs


def run_sweep(cfg: Any, run_dir: str | Path) -> SweepResult:
    """Run the sweep described by ``cfg`` (a composed qsweep config) and write ``run_dir``.

    Raises:
        QsweepError / QuantizerError: bad model, data, config or storage (before any trial).
    """
    t_start = time.time()
    secrets.install_log_masking()
    run_dir = Path(run_dir)
    check_writable(run_dir)

    # 1. Everything the user can get wrong, before any work.
    executor_kind = str(cfg.executor.kind)
    if executor_kind not in EXECUTOR_KINDS:
        raise ConfigError(f"executor.kind={executor_kind!r}; choose one of {', '.join(EXECUTOR_KINDS)}.")
    if cfg.search.max_accuracy_drop is not None and cfg.search.max_accuracy_drop < 0:
        raise ConfigError(f"search.max_accuracy_drop must be >= 0, got {cfg.search.max_accuracy_drop}.")
    model = load_model(cfg.model)
    log.info("model: %s (%s, %d bytes)", model.label, model.path, model.path.stat().st_size)
    dataset = load_dataset(cfg.data, model)
    log.info("data: %s, %d samples, %s", dataset.name, dataset.n,
             "with labels" if dataset.labels is not None else "no labels")
    calib = load_calibration(cfg.calibration, cfg.data, model, dataset)
    dataset = calib.test
    if calib.dataset is not None:
        log.info("calibration: %s, %d samples (test figures on %d samples)", calib.dataset.name, calib.dataset.n,
                 dataset.n)
    request = MetricRequest.from_config(cfg.metric)
    tracking.check(cfg.tracking)
    space = SearchSpace.from_config(cfg.search.space, cfg.selector)
    check_calibration(space, calib)
    seed = int(cfg.seed)
    kind = strategy_class(str(cfg.search.kind))
    # The float model on the test set: binds the metric to an output (refusals happen here, before the storage).
    evaluator = Evaluator(model.spec, dataset, executor=executor_kind, metric=request,
                          batch_size=int(cfg.executor.batch_size), seed=seed, evaluation=cfg.get("evaluation"))
    metric = evaluator.metric
    baseline = evaluator.baseline
    lo, hi = evaluator.ci_names
    log.info("float baseline: %s %.4f (95%% interval %.4f .. %.4f on %d samples), %d bytes", metric.name,
             baseline[metric.name], baseline[lo], baseline[hi], dataset.n, baseline["size_bytes"])
    gptq = gptq_options(cfg.calibration.gptq)
    stats = calibration_stats(cfg, space, model, calib)  # once per run; every calibrated plan reads them
    ctx = SearchContext(cfg=cfg.search, space=space, model=model.spec, seed=seed,
                        build_plan=lambda s: build_plan(model.spec, s, space.lut_function, fuse=bool(cfg.search.fuse),
                                                        calibration=stats, algorithm_options=gptq),
                        runs=load_option_runs(cfg.search, kind.run_options))
    strategy = kind(ctx)

    storage = open_storage(cfg.storage)
    experiment = {"model_sha256": model.sha256, "data_sha256": dataset.sha256, "metric": evaluator.record(),
                  "search": strategy.describe(), "seed": seed, "executor": executor_kind,
                  "fuse": bool(cfg.search.fuse), "racing": evaluator.racing_record()}
    if stats is not None:  # the plans read these statistics (their digests are in the plan hashes too)
        experiment["calibration"] = {"sha256": calib.record["sha256"], "stats": stats.digest(), "gptq": gptq}
    name = str(cfg.study.name) if cfg.study.name else _study_name(model, str(cfg.search.kind), experiment)

    db, created = open_study(storage, name, ["minimize", metric.direction], experiment=experiment,
                             sampler=strategy.sampler(), metric_names=["size_bytes", metric.name])
    study = db.study
    n_before = len(db.trials(states=(optuna.trial.TrialState.COMPLETE,)))
    log.info("study %r in %s: %s", name, masked_url(storage.url),
             "created" if created else f"resumed ({n_before} complete trial(s) kept)")
    record_run(db, cfg, model, dataset, evaluator)
    tracker = tracking.open_tracker(cfg, name)  # tracking=mlflow: the parent run (failures warn, never stop)
    strategy.prepare(db)

    # 2. Trials.
    runner = TrialRunner(db, strategy, evaluator, model.spec, fuse=bool(cfg.search.fuse))
    progress = Progress(db, strategy.total(), metric, baseline[metric.name], cfg.search.max_accuracy_drop,
                        bool(cfg.progress))
    desc = strategy.progress_desc()  # e.g. the cost of a sensitivity run
    if progress.bar is not None and desc is not None:
        progress.bar.set_description_str(desc)
    disk = DiskWatch(run_dir)
    worker = Worker(db, strategy, runner, timeout=cfg.search.timeout,
                    wait_for_others=bool(cfg.search.wait_for_others), on_progress=progress.update,
                    should_stop=disk.problem)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with disk, logging_redirect_tqdm(loggers=[logging.getLogger()]):
            loop = worker.run()
    finally:
        progress.close()
        evaluator.cache.close()
    if loop.interrupted:
        back = (f"trial(s) {', '.join(map(str, loop.requeued))} put back in the queue" if loop.requeued
                else "no trial was in flight")
        log.warning("%s: writing the results of the finished trials; %s. Run the same command again to resume.",
                    loop.stopped_by, back)

    # 3. The run directory (a disk problem seen mid-run is reported once it is written, or fails to be).
    record = calibration_record(calib, stats)
    try:
        result = write_run(run_dir, cfg, study=study, storage_url=storage.url, strategy=strategy,
                           evaluator=evaluator, model=model, dataset=dataset, experiment=experiment,
                           created=created, loop=loop, t_start=t_start, calibration=record)
        tracker.finish(result, study)
    finally:
        if stats is not None:
            stats.close()
    disk.raise_problem()
    return result


def gptq_options(node: Any) -> dict[str, Any]:
    """``calibration.gptq`` as GPTQ's options, checked (ConfigError naming the key)."""
    from quantizer.algorithms.calibrated import resolve_options
    from quantizer.errors import QuantizerError

    options = dict(node)
    try:
        resolve_options("gptq", False, options)
    except QuantizerError as e:
        raise ConfigError(f"calibration.gptq: {e}") from None
    return options


def check_calibration(space: SearchSpace, calib: CalibrationInput) -> None:
    """Raise :class:`ConfigError` naming ``calibration`` for a calibrated search dimension without data."""
    if space.calibrated and calib.dataset is None:
        raise ConfigError(
            f"search.space.algorithm={list(space.algorithms)} / bias_correction={list(space.bias_corrections)} need "
            "calibration data, but calibration=none: set calibration=split (hold out part of the test data), or "
            "calibration=npz / calibration=csv with calibration.path=<file> (never the test file).")


def calibration_stats(cfg: Any, space: SearchSpace, model: ModelInput, calib: CalibrationInput) -> Any:
    """The run's calibration statistics (once per run), or None when no point of the space reads them.

    Raises:
        ConfigError: a calibrated search dimension without calibration data (names ``calibration``).
    """
    from harness.calibration import collect_stats

    check_calibration(space, calib)
    if not space.calibrated:
        if calib.dataset is not None:
            log.info("calibration: search.space has no calibration-aware point (algorithm=[rtn], "
                     "bias_correction=[false]); no statistics collected")
        return None
    c = cfg.calibration
    if c.batch_size < 1 or c.memory_mb < 1:
        raise ConfigError(f"calibration.batch_size and calibration.memory_mb must be >= 1, got {c.batch_size}, "
                          f"{c.memory_mb}.")
    stats = collect_stats(model.spec, calib.dataset.feeds, batch_size=int(c.batch_size),
                          memory_bytes=int(c.memory_mb) << 20, progress=log.info)
    log.info("calibration: statistics of %d layer(s) from %d samples in %.1f s (%.1f MiB, %.1f MiB in memory)",
             len(stats), stats.samples, stats.seconds, stats.nbytes / 2**20, stats.resident_bytes / 2**20)
    return stats


def calibration_record(calib: CalibrationInput, stats: Any) -> dict[str, Any]:
    """What environment.json and summary.json record about the calibration data and statistics."""
    record = dict(calib.record)
    if stats is not None:
        record["statistics"] = stats.record()
        record["seconds"] = round(stats.seconds, 3)
    return record
