"""One qsweep run: the wiring from a composed config to the run directory.

:func:`run_sweep` is what the ``qsweep`` command calls with the composed
config; it can be called from Python with a config built by
``hydra.compose`` (see the tests). Everything a user can get wrong (model,
data, metric, search space and options, other runs the options name, storage)
is checked before the first trial. The parts it wires together:
:mod:`harness.inputs` (model and test data), :mod:`harness.search` (the
strategy), :mod:`harness.study` (the shared study and the worker loop),
:mod:`harness.trial` (one trial), :mod:`harness.progress` (the bar) and the
run-directory writer below.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from harness import outputs, pareto
from harness.errors import ConfigError, QsweepError
from harness.evaluate import Evaluator, ModelTask, choose_metric
from harness.inputs import ModelInput, load_dataset, load_model
from harness.progress import Progress
from harness.search import SearchContext, SearchStrategy, strategy_class
from harness.space import SearchSpace, build_plan
from harness.study import Worker, masked_url, open_storage, open_study, worker_id
from harness.trial import TrialRunner

log = logging.getLogger("qsweep")

EXECUTOR_KINDS = ("numpy", "coreml", "auto")


@dataclass
class SweepResult:
    """What a run produced (paths are inside ``run_dir``)."""

    run_dir: Path
    study_name: str
    trials: pd.DataFrame
    front: pd.DataFrame
    summary: dict[str, Any]
    interrupted: bool = False
    files: dict[str, Path] = field(default_factory=dict)


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
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

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
    metric = choose_metric(str(cfg.metric), ModelTask.of(model.spec), dataset.labels)
    space = SearchSpace.from_config(cfg.search.space, cfg.selector)
    seed = int(cfg.seed)
    kind = strategy_class(str(cfg.search.kind))
    ctx = SearchContext(cfg=cfg.search, space=space, model=model.spec, seed=seed,
                        build_plan=lambda s: build_plan(model.spec, s, space.lut_function, fuse=bool(cfg.search.fuse)),
                        runs=load_option_runs(cfg.search, kind.run_options))
    strategy = kind(ctx)

    storage = open_storage(cfg.storage)
    experiment = {"model_sha256": model.sha256, "data_sha256": dataset.sha256, "metric": metric.name,
                  "search": strategy.describe(), "seed": seed, "executor": executor_kind,
                  "fuse": bool(cfg.search.fuse)}
    name = str(cfg.study.name) if cfg.study.name else _study_name(model, str(cfg.search.kind), experiment)

    evaluator = Evaluator(model.spec, dataset, executor=executor_kind, metric=metric.name,
                          batch_size=int(cfg.executor.batch_size))
    baseline = evaluator.baseline
    log.info("float baseline: %s %.4f, %d bytes", metric.name, baseline[metric.name], baseline["size_bytes"])

    db, created = open_study(storage, name, ["minimize", metric.direction], experiment=experiment,
                             sampler=strategy.sampler(), metric_names=["size_bytes", metric.name])
    study = db.study
    n_before = len(db.trials(states=(optuna.trial.TrialState.COMPLETE,)))
    log.info("study %r in %s: %s", name, masked_url(storage.url),
             "created" if created else f"resumed ({n_before} complete trial(s) kept)")
    strategy.prepare(db)

    # 2. Trials.
    runner = TrialRunner(db, strategy, evaluator, model.spec, fuse=bool(cfg.search.fuse))
    progress = Progress(db, strategy.total(), metric, baseline[metric.name], cfg.search.max_accuracy_drop,
                        bool(cfg.progress))
    desc = strategy.progress_desc()  # e.g. the cost of a sensitivity run
    if progress.bar is not None and desc is not None:
        progress.bar.set_description_str(desc)
    worker = Worker(db, strategy, runner, timeout=cfg.search.timeout,
                    wait_for_others=bool(cfg.search.wait_for_others), on_progress=progress.update)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm(loggers=[logging.getLogger()]):
            loop = worker.run()
    finally:
        progress.close()
    if loop.interrupted:
        log.warning("interrupted: writing the results of the finished trials; the trial in flight was put back "
                    "in the queue. Run the same command again to resume.")

    # 3. The run directory.
    return write_run(run_dir, cfg, study=study, storage_url=storage.url, strategy=strategy, evaluator=evaluator,
                     model=model, dataset=dataset, experiment=experiment, created=created, loop=loop,
                     t_start=t_start)


def _save_front_models(run_dir: Path, front: pd.DataFrame, study: optuna.Study, strategy: SearchStrategy,
                       model: ModelInput, fuse: bool) -> dict[int, str]:
    """Rebuild and save each Pareto-optimal model; return trial number -> relative path."""
    import quantizer

    out: dict[int, str] = {}
    if front.empty:
        return out
    models_dir = run_dir / "models"
    models_dir.mkdir(exist_ok=True)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for _, row in front.iterrows():
        t = by_number[int(row["trial"])]
        cand = strategy.candidate(t.params)
        if cand.plan.digest() != row["plan_hash"]:
            log.warning("trial %d: its plan rebuilt now differs from the one evaluated (%s != %s); model not saved",
                        t.number, cand.plan.digest()[:12], str(row["plan_hash"])[:12])
            continue
        qspec = quantizer.apply_plan(model.spec, cand.plan, fuse=fuse)
        size = quantizer.model_size(qspec)
        if size != int(row["size_bytes"]):
            log.warning("trial %d: rebuilt model has %d bytes, evaluated %d; model not saved", t.number, size,
                        int(row["size_bytes"]))
            continue
        rel = f"models/trial_{t.number:04d}_{cand.label}.mlmodel"
        quantizer.save(qspec, run_dir / rel)
        out[t.number] = rel
    return out


def write_run(run_dir: Path, cfg: Any, *, study: optuna.Study, storage_url: str, strategy: SearchStrategy,
              evaluator: Evaluator, model: ModelInput, dataset: Any, experiment: dict[str, Any], created: bool,
              loop: Any, t_start: float) -> SweepResult:
    """Write config.yaml, environment.json, trials.csv, pareto.csv, summary.json and models/."""
    metric = evaluator.metric
    baseline = evaluator.baseline
    trials = study.get_trials(deepcopy=False)
    table = outputs.trials_frame(trials, metric.name)
    complete = table[table["state"] == "COMPLETE"]
    front = pareto.front(complete, metric.name, maximize=metric.maximize)
    files: dict[str, Path] = {}
    if bool(cfg.output.save_models):
        saved = _save_front_models(run_dir, front, study, strategy, model, bool(cfg.search.fuse))
        table["model_file"] = table["model_file"].astype(object)
        for number, rel in saved.items():
            table.loc[table["trial"] == number, "model_file"] = rel
        front = table.loc[front.index]
    files["config"] = outputs.write_config(run_dir, cfg)
    files["environment"] = outputs.write_json(run_dir / "environment.json", outputs.environment(
        model={"name": model.label, "path": str(model.path), "sha256": model.sha256, "zoo": model.zoo},
        data={"name": dataset.name, "description": dataset.description, "n": dataset.n, "sha256": dataset.sha256},
        seed=int(cfg.seed), executor=evaluator.executor_name,
        storage=masked_url(storage_url), study=study.study_name, worker=worker_id()))
    files["trials"], files["pareto"] = outputs.write_tables(run_dir, table, front)

    max_drop = cfg.search.max_accuracy_drop
    target: dict[str, Any] = {"max_accuracy_drop": max_drop, "metric": metric.name}
    if max_drop is not None:
        best = pareto.best_within(complete.assign(model_file=table.loc[complete.index, "model_file"]),
                                  metric.drop_name, float(max_drop))
        if best is None:
            target["best"] = None
            target["message"] = (f"No trial is within {metric.name} drop {max_drop:g} of the float model "
                                 f"({baseline[metric.name]:.4f}); the most accurate trial is on the Pareto front.")
        else:
            target["best"] = outputs.records(best.to_frame().T)[0]
            target["message"] = (f"Smallest model within {metric.name} drop {max_drop:g}: trial {best['trial']}, "
                                 f"{best['size_bytes']} bytes ({best['compression_ratio']:.2f}x smaller), "
                                 f"{metric.name} {best[metric.name]:.4f}.")
    states = table["state"].value_counts().to_dict()
    summary = {
        "study": {"name": study.study_name, "storage": masked_url(storage_url), "created_by_this_run": created},
        "model": {"name": model.label, "path": str(model.path), "sha256": model.sha256},
        "data": {"name": dataset.name, "n": dataset.n, "sha256": dataset.sha256},
        "metric": metric.name,
        "direction": metric.direction,
        "search": {**strategy.describe(), "total": strategy.total(),
                   "dropped": [vars(d) for d in getattr(strategy, "dropped", [])]},
        "baseline": baseline,
        "trials": {"total": len(table), **{k.lower(): int(v) for k, v in states.items()},
                   "reused": int(complete["reused_from"].notna().sum())},
        "pareto_front": outputs.records(front),
        "target": target,
        "worker": {"id": worker_id(), "trials_started": len(loop.started), "stopped_by": loop.stopped_by,
                   "elapsed_s": round(time.time() - t_start, 2)},
    }
    # A strategy's own summary entries and tables (e.g. sensitivity -> sensitivity.csv), before summary.json.
    extra = strategy.finish(table, summary, evaluator)
    summary.update(extra.summary)
    target = summary["target"]
    for table_name, frame in extra.tables.items():
        files[table_name] = run_dir / f"{table_name}.csv"
        frame.to_csv(files[table_name], index=False)
    files["summary"] = outputs.write_json(run_dir / "summary.json", summary)

    n_reused = int(complete["reused_from"].notna().sum())
    counts = table["state"].value_counts()
    parts = [f"{len(complete) - n_reused} evaluated", f"{n_reused} reused the result of an identical plan",
             f"{int(counts.get('FAIL', 0))} failed"]
    if counts.get("PRUNED", 0):
        parts.append(f"{int(counts['PRUNED'])} skipped (invalid combination)")
    if counts.get("RUNNING", 0) or counts.get("WAITING", 0):
        parts.append(f"{int(counts.get('RUNNING', 0) + counts.get('WAITING', 0))} not finished")
    print(f"\n{len(table)} trial(s) in study {study.study_name!r}: " + ", ".join(parts) + ".")
    print(f"Pareto front ({len(front)} of {len(complete)} complete trials):")
    print(outputs.front_table(front, baseline, metric.name))
    if max_drop is not None:
        print(target["message"])
    print(f"Run directory: {run_dir}")
    _report(run_dir, cfg)
    return SweepResult(run_dir, study.study_name, table, front, summary, interrupted=loop.interrupted, files=files)


def _report(run_dir: Path, cfg: Any) -> None:
    """Call ``harness.report.write_report(run_dir)`` when enabled."""
    if not bool(cfg.report.enabled):
        return
    from harness import report

    try:
        written = report.write_report(run_dir)
        log.info("report: wrote %s", ", ".join(str(Path(p).name) for p in (written or {}).values()))
    except Exception as e:  # noqa: BLE001 - the sweep's own files are already written
        log.warning("report: failed (%s: %s); the sweep's tables are complete", type(e).__name__, e)
