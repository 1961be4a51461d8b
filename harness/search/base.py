"""The interface every search strategy implements, and what it is given.

A strategy turns trial parameters into a :class:`Candidate` (the columns to
record and the :class:`quantizer.QuantPlan` to apply) and decides which trial
runs next. Evaluation, plan-hash deduplication, heartbeats and outputs are the
driver's (:mod:`harness.sweep`), so a new kind of search only has to answer:

* :meth:`SearchStrategy.prepare` — one-off set-up in the shared study (e.g.
  queue the grid), called by every worker; must be idempotent and safe with
  concurrent workers (use ``ctx.claims.lock``).
* :meth:`SearchStrategy.next_trial` — the next trial to run, or None when this
  worker should stop starting trials.
* :meth:`SearchStrategy.candidate` — parameters (from ``trial.params`` or the
  sampler) -> Candidate; :meth:`SearchStrategy.suggest` does this for a live trial.
* :meth:`SearchStrategy.finish` (optional) — a :class:`StrategyResult` at the
  end of the run: summary entries and tables, which the run-directory writer
  (:mod:`harness.outputs`) writes. A strategy writes no file itself.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import optuna
import pandas as pd

from harness.space import SearchSpace


class SkipTrial(Exception):
    """The sampled parameters are not a valid setting (recorded as PRUNED, not counted)."""


@dataclass
class Candidate:
    """What one trial tries: record ``attrs`` as columns, apply ``plan``.

    ``label`` names the saved model file (``trial_0012_<label>.mlmodel``).
    """

    attrs: dict[str, Any]
    plan: Any
    label: str


@dataclass
class StrategyResult:
    """What a strategy adds to the run directory at the end of a run.

    ``summary`` entries are merged into summary.json; each ``tables[name]`` is
    written as ``<name>.csv`` (e.g. ``sensitivity`` -> ``sensitivity.csv``).
    """

    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass
class SearchContext:
    """Everything a strategy may use.

    Attributes:
        cfg: the ``search`` config node.
        space: the validated search space.
        model: the float model spec (do not modify).
        seed: the run's seed (samplers are seeded with it).
        build_plan: setting -> QuantPlan for ``model`` (uniform settings).
        claims: the study database's claims table (locks), set by the driver.
        extra: free-form values for strategies that need more (e.g. the evaluator).
    """

    cfg: Any
    space: SearchSpace
    model: Any
    seed: int
    build_plan: Callable[[Any], Any]
    claims: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class SearchStrategy(abc.ABC):
    """Base class of the search kinds (see module docstring)."""

    #: Which of ``search.sampler`` / ``search.options`` this kind reads; a non-empty one it
    #: does not read is refused (it belongs to another kind). Subclasses narrow it.
    uses: tuple[str, ...] = ("sampler", "options")

    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        for key in ("sampler", "options"):
            value = ctx.cfg.get(key) if hasattr(ctx.cfg, "get") else getattr(ctx.cfg, key, None)
            if value and key not in self.uses:
                from harness.errors import ConfigError

                raise ConfigError(f"search.{key}={dict(value)!r} is not used by search={ctx.cfg.kind}; remove it "
                                  "(it belongs to another search kind).")

    @abc.abstractmethod
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of the study."""

    def describe(self) -> dict[str, Any]:
        """JSON-able description of what is searched (part of the study's experiment record)."""
        return {"kind": str(self.ctx.cfg.kind), "space": self.ctx.space.describe()}

    def total(self) -> int | None:
        """The number of trials the study should end with (progress bar total), if known."""
        return None

    def prepare(self, study: optuna.Study) -> None:
        """One-off set-up in the shared study (idempotent, concurrency-safe)."""

    @abc.abstractmethod
    def next_trial(self, study: optuna.Study) -> optuna.Trial | None:
        """A RUNNING trial for this worker, or None to stop starting trials."""

    @abc.abstractmethod
    def suggest(self, trial: optuna.Trial) -> Candidate:
        """Read or sample the parameters of ``trial``; raise :class:`SkipTrial` if invalid."""

    @abc.abstractmethod
    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        """The candidate of finished parameters (to rebuild a Pareto-optimal model)."""

    def finish(self, table: pd.DataFrame, summary: dict[str, Any], evaluator: Any) -> StrategyResult:
        """Summary entries and tables of this strategy (the writer writes them; see :class:`StrategyResult`).

        ``table`` is trials.csv as a DataFrame and ``summary`` the summary.json
        the writer built (both copies: changing them changes nothing).
        """
        return StrategyResult()
