"""The trial protocol: one trial from its parameters to the values told to the study.

Per trial (:class:`TrialRunner`): setting -> QuantPlan -> plan hash claimed in
the study database -> quantized model -> evaluation -> Optuna values
``(size_bytes, metric)`` and user attributes. A trial whose plan another trial
already owns waits for that result and copies it (``reused_from``, zero
``evaluated_samples``); if the owner's worker died, it takes the plan over. A
trial that raises is recorded as FAIL with the error (the sweep goes on); an
invalid sampled combination is PRUNED (skipped, not counted).

Racing (:mod:`harness.racing`): after each chunk the evaluation asks whether a
fully evaluated trial of the study dominates the candidate's reach; if one does,
the trial is PRUNED with the figures of the samples it saw, ``evaluated_samples``,
``dominated_by``, ``best_reachable`` and ``drop_lower_bound`` (a trial reusing its
plan copies them and is PRUNED too).
"""
from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import optuna
from optuna.trial import TrialState

from harness import rundir
from harness.errors import USER_ERRORS, StorageError
from harness.evaluate import Evaluator, TaskMetric
from harness.racing import DOMINATED_ATTR, DROP_BOUND_ATTR, EVALUATED_ATTR, REACH_ATTR, Stop, dominator, \
    finished_trials
from harness.outputs import model_file
from harness.search import SearchStrategy, SkipTrial
from harness.study import FAILURE_ATTR, StudyDB, reap

log = logging.getLogger("qsweep")

#: Seconds a candidate's read of the study's fully evaluated trials is reused before it is read again (each
#: read loads every complete trial: 0.2 s for 100 trials on SQLite under load, more than a chunk's run).
DOMINATING_REFRESH_S = 2.0

#: User attributes a trial copies from the trial whose plan it shares (besides every figure of
#: ``Evaluator.figure_keys``: the task metric, its interval, drop and p-value, the per-output SNR).
COPIED_ATTRS = ("size_bytes", "size_kb", "compression_ratio", "agreement", "snr_db", "psnr_db", "encodings",
                "layer_encodings", "model_sha256", DOMINATED_ATTR, REACH_ATTR, DROP_BOUND_ATTR)


def encoding_summary(spec: Any) -> tuple[str, dict[str, str]]:
    """``('lut4 x6, fp32 x2', {'layer.field': 'lut4', ...})`` for a model's weight tensors."""
    import quantizer

    per: dict[str, str] = {}
    for t in quantizer.weight_tensors(spec):
        per[f"{t.layer}.{t.field}"] = quantizer.encoding_label(t.encoding, t.nbits)
    counts: dict[str, int] = {}
    for v in per.values():
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in counts.items()), per


def layer_algorithms(plan: Any) -> dict[str, str] | None:
    """Per layer, what chose its stored values (:func:`quantizer.algorithms.support.applied_algorithms`),
    or None for a plan without any calibration-aware codec or fallback note (plain round-to-nearest)."""
    from quantizer.algorithms.support import applied_algorithms

    if not any(c is not None and (c.calibrated or c.note) for c in plan.values()):
        return None
    return applied_algorithms(plan)


class TrialRunner:
    """Evaluate one trial (or reuse the result of the trial that owns its plan) and tell the study."""

    def __init__(self, db: StudyDB, strategy: SearchStrategy, evaluator: Evaluator, model: Any, *, fuse: bool,
                 poll: float = 0.5):
        self.db, self.strategy, self.evaluator = db, strategy, evaluator
        self.model, self.fuse, self.poll = model, fuse, poll
        self.metric: TaskMetric = evaluator.metric
        #: The dominating set as last read from the study: (trial it was read for, monotonic time, trials).
        self._finished: tuple[int, float, list[Any]] | None = None

    def __call__(self, trial: optuna.Trial) -> None:
        try:
            self._run(trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was declared dead by another worker meanwhile (no heartbeat); its result is "
                        "dropped and its retry runs instead", trial.number)

    def _set(self, trial: optuna.Trial, key: str, value: Any) -> None:
        self.db.set_user_attr(trial, key, value)

    def _run(self, trial: optuna.Trial) -> None:
        try:
            cand = self.strategy.suggest(trial)
        except SkipTrial as e:
            self._set(trial, "skipped", str(e))
            self._tell(trial, state=TrialState.PRUNED)
            log.info("trial %d skipped: %s", trial.number, e)
            return
        except StorageError:  # the study database failed (not the trial): the worker stops and says so
            raise
        except Exception as e:  # noqa: BLE001 - recorded on the trial, the sweep goes on
            self._fail(trial, e)
            return
        params = trial.params
        for k, v in cand.attrs.items():
            if k not in params or params[k] != v:  # parameters are recorded already
                self._set(trial, k, v)
        if "setting" not in cand.attrs:  # what the trial tries, readable in optuna-dashboard (e.g. linear-8bit)
            self._set(trial, "setting", cand.label)
        try:
            digest = cand.plan.digest()
        except Exception as e:  # noqa: BLE001
            self._fail(trial, e)
            return
        self._set(trial, "plan_hash", digest)
        algorithms = layer_algorithms(cand.plan)
        if algorithms is not None:
            self._set(trial, "layer_algorithms", algorithms)
        owner = self.db.claim_plan(digest, trial.number)
        last_reap = time.monotonic()
        while owner != trial.number:
            other = self.db.get_trial(owner)
            if other.state == TrialState.COMPLETE or (other.state == TrialState.PRUNED
                                                      and DOMINATED_ATTR in other.user_attrs):
                self._copy(trial, other)
                return
            if other.state == TrialState.FAIL:
                if other.user_attrs.get(FAILURE_ATTR) == "error":
                    self._set(trial, "reused_from", other.number)
                    self._fail(trial, None, f"same plan as trial {other.number}, which failed: "
                                            f"{other.user_attrs.get('error', '')}")
                    return
                if not self.db.take_over(digest, owner, trial.number):
                    owner = self.db.plan_owner(digest) or owner
                    continue
                log.info("trial %d: takes over plan %s from trial %d (its worker stopped)", trial.number,
                         digest[:12], owner)
                owner = trial.number
                break
            time.sleep(self.poll)
            if time.monotonic() - last_reap > 5:
                reap(self.db)
                last_reap = time.monotonic()
        self._evaluate(trial, cand)

    def _evaluate(self, trial: optuna.Trial, cand: Any) -> None:
        import quantizer

        try:
            t0 = time.perf_counter()
            qspec = quantizer.apply_plan(self.model, cand.plan, fuse=self.fuse)
            t1 = time.perf_counter()
            size, digest, data = model_file(qspec)  # the saved file's bytes and sha256 (checked when re-created)
            check = None
            if cand.race:
                check = lambda reach, seen: self._dominated(trial.number, size, reach, seen)  # noqa: E731
            measured = self.evaluator.measure(qspec, check, data=data)
            t2 = time.perf_counter()
            summary, per_layer = encoding_summary(qspec)
        except Exception as e:  # noqa: BLE001
            self._fail(trial, e)
            return
        figures = measured.figures
        for k, v in figures.items():
            self._set(trial, k, v)
        self._set(trial, rundir.SIZE_KB_ATTR, round(figures["size_bytes"] / 1024, 2))
        self._set(trial, EVALUATED_ATTR, measured.seen)
        self._set(trial, "quantize_s", round(t1 - t0, 4))
        self._set(trial, "evaluate_s", round(t2 - t1, 4))
        self._set(trial, "encodings", summary)
        self._set(trial, "layer_encodings", per_layer)
        self._set(trial, "model_sha256", digest)
        stop = measured.stop
        if stop is not None:
            self._set(trial, DOMINATED_ATTR, stop.dominated_by.number)
            self._set(trial, REACH_ATTR, stop.reach)
            self._set(trial, DROP_BOUND_ATTR, self.metric.drop(self.evaluator.baseline[self.metric.name], stop.reach))
            log.debug("trial %d: stopped after %d of %d samples, dominated by trial %d (%s at most %.4f)",
                      trial.number, stop.seen, self.evaluator.dataset.n, stop.dominated_by.number,
                      self.metric.name, stop.reach)
            self._tell(trial, state=TrialState.PRUNED)
            return
        self._tell(trial, values=[figures["size_bytes"], figures[self.metric.name]])

    def _dominated(self, number: int, size: int, reach: float | None, seen: int) -> Stop | None:
        """The racing stop rule: a fully evaluated trial of the study (every worker's) dominates ``reach``."""
        if reach is None:
            return None
        d = dominator(size, number, reach, self._dominating_set(number), maximize=self.metric.maximize)
        return None if d is None else Stop(d, float(reach), seen)

    def _dominating_set(self, number: int) -> list[Any]:
        """The study's fully evaluated trials, read once per candidate and again every
        :data:`DOMINATING_REFRESH_S` (other workers' trials finishing meanwhile). A complete trial stays
        complete, so an older read is a subset of the study's set: it may stop a candidate later, never wrongly."""
        now = time.monotonic()
        cached = self._finished
        if cached is None or cached[0] != number or now - cached[1] >= DOMINATING_REFRESH_S:
            trials = finished_trials(self.db.trials(states=(TrialState.COMPLETE,)), self.evaluator.dataset.n)
            self._finished = cached = (number, now, trials)
        return cached[2]

    def _copy(self, trial: optuna.Trial, other: Any) -> None:
        for k in dict.fromkeys(COPIED_ATTRS + tuple(self.evaluator.figure_keys)):  # + interval, p, snr_db:<out>
            if k in other.user_attrs:
                self._set(trial, k, other.user_attrs[k])
        self._set(trial, EVALUATED_ATTR, 0)
        self._set(trial, "reused_from", other.number)
        log.debug("trial %d: same plan as trial %d, result reused", trial.number, other.number)
        if other.state == TrialState.PRUNED:
            self._tell(trial, state=TrialState.PRUNED)
            return
        self._tell(trial, values=list(other.values))

    def _fail(self, trial: optuna.Trial, exc: BaseException | None, message: str | None = None) -> None:
        if message is None:
            assert exc is not None
            message = str(exc) if isinstance(exc, USER_ERRORS) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, USER_ERRORS):
                log.warning("trial %d raised:\n%s", trial.number, "".join(traceback.format_exception(exc)).rstrip())
        self._set(trial, "error", message)
        self._set(trial, FAILURE_ATTR, "error")
        log.warning("trial %d failed: %s", trial.number, message)
        self._tell(trial, state=TrialState.FAIL)

    def _tell(self, trial: optuna.Trial, **kwargs: Any) -> None:
        self.db.tell(trial, **kwargs)
