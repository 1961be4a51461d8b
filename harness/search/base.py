"""The interface every search strategy implements, what it is given, and what it returns.

A strategy turns trial parameters into a :class:`Candidate` (the columns to
record and the :class:`quantizer.QuantPlan` to apply) and decides which trial
runs next. Evaluation, plan-hash deduplication, heartbeats and the run directory
are the driver's (:mod:`harness.sweep`), so a new kind of search only has to answer:

* :meth:`SearchStrategy.setup` — read ``ctx`` (options, space, model) once.
* :meth:`SearchStrategy.prepare` — one-off set-up in the shared study (e.g.
  queue the grid), called by every worker; must be idempotent and safe with
  concurrent workers (use :meth:`harness.study.StudyDB.lock`).
* :meth:`SearchStrategy.next_trial` — the next trial to run, or None when this
  worker should stop starting trials.
* :meth:`SearchStrategy.candidate` — parameters (from ``trial.params`` or the
  sampler) -> Candidate; :meth:`SearchStrategy.suggest` does this for a live trial.
* :meth:`SearchStrategy.finish` (optional) — summary entries and tables of its
  own (:class:`StrategyResult`); the run-directory writer writes them.

What every kind shares is done here, once: ``search.sampler`` / ``search.options``
belonging to another kind are refused, ``search.options`` becomes the kind's
options dataclass, the budget and the space are checked, and the sampler is built.
"""
from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import optuna
import pandas as pd

from harness.config import options_record, search_options
from harness.errors import ConfigError
from harness.search.raced import RacedTrialsSampler
from harness.space import SearchSpace
from harness.study import StudyDB, budget_used, mark_running


class SkipTrial(Exception):
    """The sampled parameters are not a valid setting (recorded as PRUNED, not counted)."""


@dataclass
class Candidate:
    """What one trial tries: record ``attrs`` as columns, apply ``plan``.

    ``label`` names the saved model file (``trial_0012_<label>.mlmodel``). ``race=False``: a
    measurement the search itself reads (a sensitivity cell, a mixed probe or greedy point) is
    evaluated on every sample, never stopped by racing.
    """

    attrs: dict[str, Any]
    plan: Any
    label: str
    race: bool = True


@dataclass
class SearchContext:
    """Everything a strategy may use.

    Attributes:
        cfg: the ``search`` config node.
        space: the validated search space.
        model: the float model spec (do not modify).
        seed: the run's seed (samplers are seeded with it).
        build_plan: setting -> QuantPlan for ``model`` (uniform settings).
        runs: other run directories the strategy's options name
            (:attr:`SearchStrategy.run_options`), loaded by the driver, keyed by
            the option's value (``RunData`` of :func:`harness.analysis.load_run`).
    """

    cfg: Any
    space: SearchSpace
    model: Any
    seed: int
    build_plan: Callable[[Any], Any]
    runs: dict[str, Any] = field(default_factory=dict)


@dataclass
class StrategyResult:
    """What a strategy adds to the run directory.

    ``summary`` entries are merged into summary.json (top-level keys);
    ``tables[name]`` is written as ``<name>.csv`` by the run-directory writer.
    """

    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


class SearchStrategy(abc.ABC):
    """Base class of the search kinds (see module docstring)."""

    #: The dataclass of this kind's ``search.options`` (:mod:`harness.config`); None: it has none.
    options_type: type | None = None
    #: Options naming another run directory; the driver loads them into ``ctx.runs``.
    run_options: tuple[str, ...] = ()
    #: Whether ``search.sampler`` passes keyword arguments to this kind's sampler.
    sampler_options: bool = False
    #: Whether the kind needs ``search.n_trials`` or ``search.timeout`` (a sampler never runs out).
    needs_budget: bool = False
    #: What ``search.n_trials=null`` means for this kind (shown in the n_trials message), if allowed.
    all_trials: str | None = None

    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        self.kind = str(ctx.cfg.kind)
        self._refuse_foreign_settings()
        self.options: Any = (search_options(ctx.cfg.get("options"), self.options_type, self.kind)
                             if self.options_type is not None else None)
        self._check_budget()
        self._check_space()
        self.setup()
        self._sampler = self._build_sampler()

    # -- the checks every kind shares --------------------------------------------------------
    def _refuse_foreign_settings(self) -> None:
        for key, used in (("sampler", self.sampler_options), ("options", self.options_type is not None)):
            value = self.ctx.cfg.get(key)
            if value and not used:
                raise ConfigError(f"search.{key}={dict(value)!r} is not used by search={self.kind}; remove it "
                                  "(it belongs to another search kind).")

    def _check_budget(self) -> None:
        n_trials, timeout = self.ctx.cfg.n_trials, self.ctx.cfg.timeout
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"search.timeout must be a positive number of seconds, got {timeout}.")
        if self.needs_budget and n_trials is None and timeout is None:
            raise ConfigError(f"search={self.kind} needs a budget: set search.n_trials and/or search.timeout.")
        if n_trials is not None and n_trials < 1:
            also = f" (or null for {self.all_trials})" if self.all_trials else ""
            raise ConfigError(f"search.n_trials must be at least 1{also}, got {n_trials}.")

    def _check_space(self) -> None:
        space = self.ctx.space
        points, dropped = space.grid()
        if not points:
            raise ConfigError(
                "The search space is empty: every (nbits, mode) combination of search.space.nbits="
                f"{list(space.nbits)} and search.space.mode={list(space.modes)} is invalid ("
                + "; ".join(sorted({d.reason for d in dropped})) + ").")

    def _build_sampler(self) -> optuna.samplers.BaseSampler:
        given = dict(self.ctx.cfg.get("sampler") or {})
        kwargs = {**given}
        kwargs.setdefault("seed", self.ctx.seed)
        for k, v in self.sampler_defaults().items():
            kwargs.setdefault(k, v)
        cls = self.sampler_class()
        try:
            with warnings.catch_warnings():
                # constraints_func is deprecated in Optuna 5 in favour of Trial.set_constraint, which must
                # be called before the driver tells the result; constraints_func works on Optuna 4 and 5.
                warnings.filterwarnings("ignore", message=".*constraints_func.*deprecated", category=FutureWarning)
                return RacedTrialsSampler(cls(**kwargs))
        except TypeError as e:
            raise ConfigError(f"search.sampler={given!r} does not fit {cls.__name__}: {e}") from None

    # -- what a kind defines -----------------------------------------------------------------
    def setup(self) -> None:
        """Read the context once (after the shared checks, before the sampler is built)."""

    def sampler_class(self) -> type[optuna.samplers.BaseSampler]:
        """The Optuna sampler class of the study (default: random, for kinds that queue every trial)."""
        return optuna.samplers.RandomSampler

    def sampler_defaults(self) -> dict[str, Any]:
        """Keyword arguments for the sampler that ``search.sampler`` may override (besides ``seed``)."""
        return {}

    def sampler(self) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of the study (wrapped: trials racing stopped read as finished at their best
        reachable figure, :mod:`harness.search.raced`)."""
        return self._sampler

    def describe(self) -> dict[str, Any]:
        """JSON-able description of what is searched (part of the study's experiment record)."""
        return {"kind": self.kind, "space": self.ctx.space.describe()}

    def options_record(self) -> dict[str, Any]:
        """The options as plain values (for :meth:`describe` and summary.json)."""
        return options_record(self.options) if self.options is not None else {}

    def total(self) -> int | None:
        """The number of trials the study should end with (progress bar total), if known."""
        return self.ctx.cfg.n_trials

    def progress_desc(self) -> str | None:
        """What the progress bar shows before the counts (None: ``trials``)."""
        return None

    def prepare(self, db: StudyDB) -> None:
        """One-off set-up in the shared study (idempotent, concurrency-safe)."""

    @abc.abstractmethod
    def next_trial(self, db: StudyDB) -> optuna.Trial | None:
        """A RUNNING trial for this worker, or None to stop starting trials."""

    @abc.abstractmethod
    def suggest(self, trial: optuna.Trial) -> Candidate:
        """Read or sample the parameters of ``trial``; raise :class:`SkipTrial` if invalid."""

    @abc.abstractmethod
    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        """The candidate of finished parameters (to rebuild a Pareto-optimal model)."""

    def finish(self, table: pd.DataFrame, summary: dict[str, Any], evaluator: Any) -> StrategyResult:
        """Summary entries and tables of this kind, from the trials table (``trials.csv`` as a
        DataFrame) and the summary so far (read only)."""
        return StrategyResult()

    # -- helpers -----------------------------------------------------------------------------
    def budget_reached(self, db: StudyDB) -> bool:
        """True when the study-wide ``search.n_trials`` is used up (queued trials do not count yet)."""
        n_trials = self.ctx.cfg.n_trials
        return n_trials is not None and budget_used(db.trials()) >= n_trials

    def ask(self, db: StudyDB) -> optuna.Trial:
        """A new trial from the study's sampler (a queued one first), marked as this worker's."""
        trial = db.ask()
        mark_running(db, trial)
        return trial
