"""One qsweep run: validate inputs, open the study, run trials, write the run directory.

:func:`run_sweep` is what the ``qsweep`` command calls with the composed
config; it can be called from Python with a config built by
``hydra.compose`` (see the tests). Everything a user can get wrong (model,
data, metric, search space, storage) is checked before the first trial.

Per trial (:class:`TrialRunner`): setting -> QuantPlan -> plan hash claimed in
the study database -> quantized model -> evaluation -> Optuna values
``(size_bytes, metric)`` and user attributes. A trial whose plan another trial
already owns waits for that result and copies it (``reused_from``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.claims import Claims
from harness.errors import USER_ERRORS, ConfigError
from harness.evaluate import Evaluator, ModelTask, TaskMetric, choose_metric
from harness.outputs import SweepResult, write_run
from harness.search import SearchContext, SearchStrategy, SkipTrial, make_strategy
from harness.space import SearchSpace, build_plan
from harness.study import FAILURE_ATTR, Worker, counted_trials, masked_url, open_storage, open_study, reap

log = logging.getLogger("qsweep")

EXECUTOR_KINDS = ("numpy", "coreml", "auto")
COPIED_ATTRS = ("size_bytes", "compression_ratio", "agreement", "snr_db", "psnr_db", "encodings", "layer_encodings")


# -- inputs ---------------------------------------------------------------------------------
@dataclass
class ModelInput:
    spec: Any
    label: str
    path: Path
    sha256: str
    zoo: str | None


def load_model(cfg: Any) -> ModelInput:
    """The float model from ``model.path`` or the zoo (``model.name``)."""
    import quantizer
    from harness import zoo

    if cfg.path:
        path = Path(str(cfg.path)).expanduser()
        spec = quantizer.load(path)
        label, zoo_name = path.stem, None
    else:
        if not cfg.name:
            raise ConfigError("No model given: set model.path=my.mlmodel, or model=<zoo model> "
                              f"({', '.join(zoo.names())}).")
        zoo_name = str(cfg.name)
        path = zoo.path(zoo_name)
        spec = zoo.load_spec(zoo_name)
        label = zoo_name
    return ModelInput(spec, re.sub(r"[^A-Za-z0-9_.-]+", "_", label), path.resolve(),
                      hashlib.sha256(path.read_bytes()).hexdigest(), zoo_name)


def load_dataset(cfg: Any, model: ModelInput) -> Any:
    """The test set from the ``data`` config, fitted to the model (checked by the loaders)."""
    from harness import data as hdata
    from harness import zoo

    kind = str(cfg.kind)
    labels = None if cfg.labels is None else str(cfg.labels)
    if kind == "zoo":
        if model.zoo is None:
            raise ConfigError(
                f"data=zoo is the test set of a bundled zoo model, but model.path={str(model.path)!r} is your own "
                "model: choose its test data, e.g. data=npz data.path=test.npz (or data=csv / "
                "data=sklearn data.name=digits).")
        ds = zoo.load_data(model.zoo, model.spec)
        if labels is None:
            ds = hdata.Dataset.create(ds.name, ds.feeds, None, ds.description + " (labels ignored)")
    elif kind == "sklearn":
        if not cfg.name:
            raise ConfigError(f"data=sklearn needs data.name ({', '.join(hdata.SKLEARN_DATASETS)}).")
        ds = hdata.load_sklearn(str(cfg.name), model.spec, transforms=cfg.transforms, seed=int(cfg.seed),
                                label_mode=str(cfg.label_mode))
        if labels is None:
            ds = hdata.Dataset.create(ds.name, ds.feeds, None, ds.description + " (labels ignored)")
    elif kind in ("npz", "csv"):
        if not cfg.path:
            raise ConfigError(f"data={kind} needs data.path=<file.{kind}>.")
        path = Path(str(cfg.path)).expanduser()
        if kind == "npz":
            key = "y" if labels == "auto" else labels
            ds = hdata.load_npz(path, model.spec, keys=dict(cfg.inputs or {}), label_key=key,
                                label_mode=str(cfg.label_mode))
        else:
            ds = hdata.load_csv(path, model.spec, feature_columns=list(cfg.feature_columns) if cfg.feature_columns
                                else None, label_column=labels, label_mode=str(cfg.label_mode))
    else:
        raise ConfigError(f"data.kind={kind!r} is not a data source; choose zoo, sklearn, npz or csv.")
    if cfg.limit is not None:
        if cfg.limit < 1:
            raise ConfigError(f"data.limit must be at least 1 (or null for all samples), got {cfg.limit}.")
        if cfg.limit < ds.n:
            ds = hdata.Dataset.create(ds.name + f"[:{cfg.limit}]", {k: v[:cfg.limit] for k, v in ds.feeds.items()},
                                      None if ds.labels is None else ds.labels[:cfg.limit],
                                      ds.description + f" (first {cfg.limit} samples)")
    return ds


# -- one trial ------------------------------------------------------------------------------
def _label(enc: str, nbits: int) -> str:
    from harness.analysis import encoding_label

    return encoding_label(enc, nbits)


def encoding_summary(spec: Any) -> tuple[str, dict[str, str]]:
    """``('lut4 x6, fp32 x2', {'layer.field': 'lut4', ...})`` for a model's weight tensors."""
    import quantizer

    per: dict[str, str] = {}
    for t in quantizer.weight_tensors(spec):
        per[f"{t.layer}.{t.field}"] = _label(t.encoding, t.nbits)
    counts: dict[str, int] = {}
    for v in per.values():
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in counts.items()), per


class TrialRunner:
    """Evaluate one trial (or reuse the result of the trial that owns its plan) and tell the study."""

    def __init__(self, study: optuna.Study, strategy: SearchStrategy, evaluator: Evaluator, claims: Claims,
                 model: Any, *, fuse: bool, poll: float = 0.5):
        self.study, self.strategy, self.evaluator, self.claims = study, strategy, evaluator, claims
        self.model, self.fuse, self.poll = model, fuse, poll
        self.metric: TaskMetric = evaluator.metric

    def __call__(self, trial: optuna.Trial) -> None:
        try:
            self._run(trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was declared dead by another worker meanwhile (no heartbeat); its result is "
                        "dropped and its retry runs instead", trial.number)

    def _run(self, trial: optuna.Trial) -> None:
        try:
            cand = self.strategy.suggest(trial)
        except SkipTrial as e:
            trial.set_user_attr("skipped", str(e))
            self._tell(trial, state=TrialState.PRUNED)
            log.info("trial %d skipped: %s", trial.number, e)
            return
        except Exception as e:  # noqa: BLE001 - recorded on the trial, the sweep goes on
            self._fail(trial, e)
            return
        params = trial.params
        for k, v in cand.attrs.items():
            if k not in params or params[k] != v:  # parameters are recorded already
                trial.set_user_attr(k, v)
        try:
            digest = cand.plan.digest()
        except Exception as e:  # noqa: BLE001
            self._fail(trial, e)
            return
        trial.set_user_attr("plan_hash", digest)
        sid = self.study._study_id
        owner = self.claims.claim_plan(sid, digest, trial.number)
        last_reap = time.monotonic()
        while owner != trial.number:
            other = self.study._storage.get_trial(
                self.study._storage.get_trial_id_from_study_id_trial_number(sid, owner))
            if other.state == TrialState.COMPLETE:
                self._copy(trial, other)
                return
            if other.state == TrialState.FAIL:
                if other.user_attrs.get(FAILURE_ATTR) == "error":
                    trial.set_user_attr("reused_from", other.number)
                    self._fail(trial, None, f"same plan as trial {other.number}, which failed: "
                                            f"{other.user_attrs.get('error', '')}")
                    return
                if not self.claims.take_over(sid, digest, owner, trial.number):
                    owner = self.claims.plan_owner(sid, digest) or owner
                    continue
                log.info("trial %d: takes over plan %s from trial %d (its worker stopped)", trial.number,
                         digest[:12], owner)
                owner = trial.number
                break
            time.sleep(self.poll)
            if time.monotonic() - last_reap > 5:
                reap(self.study)
                last_reap = time.monotonic()
        self._evaluate(trial, cand)

    def _evaluate(self, trial: optuna.Trial, cand: Any) -> None:
        import quantizer

        try:
            t0 = time.perf_counter()
            qspec = quantizer.apply_plan(self.model, cand.plan, fuse=self.fuse)
            t1 = time.perf_counter()
            figures = self.evaluator.evaluate(qspec)
            t2 = time.perf_counter()
            summary, per_layer = encoding_summary(qspec)
        except Exception as e:  # noqa: BLE001
            self._fail(trial, e)
            return
        for k, v in figures.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr("quantize_s", round(t1 - t0, 4))
        trial.set_user_attr("evaluate_s", round(t2 - t1, 4))
        trial.set_user_attr("encodings", summary)
        trial.set_user_attr("layer_encodings", per_layer)
        self._tell(trial, values=[figures["size_bytes"], figures[self.metric.name]])

    def _copy(self, trial: optuna.Trial, other: Any) -> None:
        for k in COPIED_ATTRS + (self.metric.name, self.metric.drop_name):
            if k in other.user_attrs:
                trial.set_user_attr(k, other.user_attrs[k])
        trial.set_user_attr("reused_from", other.number)
        log.debug("trial %d: same plan as trial %d, result reused", trial.number, other.number)
        self._tell(trial, values=list(other.values))

    def _fail(self, trial: optuna.Trial, exc: BaseException | None, message: str | None = None) -> None:
        if message is None:
            assert exc is not None
            message = str(exc) if isinstance(exc, USER_ERRORS) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, USER_ERRORS):
                log.warning("trial %d raised:\n%s", trial.number, "".join(traceback.format_exception(exc)).rstrip())
        trial.set_user_attr("error", message)
        trial.set_user_attr(FAILURE_ATTR, "error")
        log.warning("trial %d failed: %s", trial.number, message)
        self._tell(trial, state=TrialState.FAIL)

    def _tell(self, trial: optuna.Trial, **kwargs: Any) -> None:
        self.study.tell(trial, **kwargs)


# -- progress -------------------------------------------------------------------------------
class Progress:
    """tqdm bar: finished trials of the study / total, best size within the target, elapsed."""

    def __init__(self, study: optuna.Study, total: int | None, metric: TaskMetric, baseline: float,
                 max_drop: float | None, enabled: bool):
        self.study, self.metric, self.baseline, self.max_drop = study, metric, baseline, max_drop
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="trials", unit="trial", dynamic_ncols=True,
                            bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| [{elapsed}<{remaining}]{postfix}")
            self.update()

    def update(self) -> None:
        if self.bar is None:
            return
        trials = counted_trials(self.study.get_trials(deepcopy=False))
        done = [t for t in trials if t.state.is_finished()]
        ok = [t for t in done if t.state == TrialState.COMPLETE]
        post = ""
        target = self.max_drop if self.max_drop is not None else 0.01
        within = [t for t in ok if self.metric.drop(self.baseline, t.values[1]) <= target + 1e-12]
        if within:
            best = min(within, key=lambda t: t.values[0])
            post = f"best within {self.metric.name} drop {target:g}: {best.values[0] / 1024:.1f} KB (trial {best.number})"
        elif ok:
            post = f"none within {self.metric.name} drop {target:g} yet"
        failed = sum(1 for t in done if t.state == TrialState.FAIL)
        if failed:
            post += f", {failed} failed"
        self.bar.n = len(done)
        self.bar.set_postfix_str(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.update()
            self.bar.close()


# -- the run --------------------------------------------------------------------------------
def _study_name(model: ModelInput, kind: str, experiment: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(experiment, sort_keys=True).encode()).hexdigest()[:10]
    return f"{model.label}-{kind}-{digest}"


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
    if cfg.search.timeout is not None and cfg.search.timeout <= 0:
        raise ConfigError(f"search.timeout must be a positive number of seconds, got {cfg.search.timeout}.")
    model = load_model(cfg.model)
    log.info("model: %s (%s, %d bytes)", model.label, model.path, model.path.stat().st_size)
    dataset = load_dataset(cfg.data, model)
    log.info("data: %s, %d samples, %s", dataset.name, dataset.n,
             "with labels" if dataset.labels is not None else "no labels")
    metric = choose_metric(str(cfg.metric), ModelTask.of(model.spec), dataset.labels)
    space = SearchSpace.from_config(cfg.search.space, cfg.selector)
    seed = int(cfg.seed)
    ctx = SearchContext(cfg=cfg.search, space=space, model=model.spec, seed=seed,
                        build_plan=lambda s: build_plan(model.spec, s, space.lut_function, fuse=bool(cfg.search.fuse)))
    strategy = make_strategy(ctx)

    storage = open_storage(cfg.storage)
    experiment = {"model_sha256": model.sha256, "data_sha256": dataset.sha256, "metric": metric.name,
                  "search": strategy.describe(), "seed": seed, "executor": executor_kind,
                  "fuse": bool(cfg.search.fuse)}
    name = str(cfg.study.name) if cfg.study.name else _study_name(model, str(cfg.search.kind), experiment)

    evaluator = Evaluator(model.spec, dataset, executor=executor_kind, metric=metric.name,
                          batch_size=int(cfg.executor.batch_size))
    baseline = evaluator.baseline
    log.info("float baseline: %s %.4f, %d bytes", metric.name, baseline[metric.name], baseline["size_bytes"])

    study, created = open_study(storage, name, ["minimize", metric.direction], experiment=experiment,
                                sampler=strategy.sampler(), metric_names=["size_bytes", metric.name])
    claims = Claims(storage.engine)
    ctx.claims = claims
    n_before = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    log.info("study %r in %s: %s", name, masked_url(storage.url),
             "created" if created else f"resumed ({n_before} complete trial(s) kept)")
    strategy.prepare(study)

    # 2. Trials.
    runner = TrialRunner(study, strategy, evaluator, claims, model.spec, fuse=bool(cfg.search.fuse))
    progress = Progress(study, strategy.total(), metric, baseline[metric.name], cfg.search.max_accuracy_drop,
                        bool(cfg.progress))
    if progress.bar is not None and hasattr(strategy, "progress_desc"):  # hook: e.g. the cost of a sensitivity run
        progress.bar.set_description_str(strategy.progress_desc())
    worker = Worker(study, strategy, runner, timeout=cfg.search.timeout,
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
