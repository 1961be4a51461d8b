"""``search=tpe|nsga2|random``: Optuna samplers over the same space.

The budget ``search.n_trials`` is study-wide: it counts the trials of every
worker and earlier (resumed) runs, except skipped ones (sampled combinations
that are invalid, recorded as PRUNED with the reason) and dead ones that were
retried. ``search.timeout`` bounds the seconds this worker spends starting
trials. ``search.sampler`` passes keyword arguments to the sampler class.
"""
from __future__ import annotations

from typing import Any, Mapping

import optuna

from harness.errors import ConfigError
from harness.search.base import Candidate, SearchContext, SearchStrategy, SkipTrial
from harness.space import Setting
from harness.study import counted_trials, mark_running, quiet_optuna

SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "random": optuna.samplers.RandomSampler,
}


class SamplerSearch(SearchStrategy):
    """Ask the study's sampler for each trial's setting."""

    uses = ("sampler",)

    def __init__(self, ctx: SearchContext):
        super().__init__(ctx)
        kind = str(ctx.cfg.kind)
        if kind not in SAMPLERS:
            raise ConfigError(f"search.kind={kind!r} has no sampler; choose one of {', '.join(SAMPLERS)}.")
        self.kind = kind
        n_trials, timeout = ctx.cfg.n_trials, ctx.cfg.timeout
        if n_trials is None and timeout is None:
            raise ConfigError(f"search.kind={kind} needs a budget: set search.n_trials and/or search.timeout.")
        if n_trials is not None and n_trials < 1:
            raise ConfigError(f"search.n_trials must be at least 1, got {n_trials}.")
        points, dropped = ctx.space.grid()
        if not points:
            raise ConfigError(
                "The search space is empty: every (nbits, mode) combination is invalid ("
                + "; ".join(sorted({d.reason for d in dropped})) + ").")
        self._sampler = self._make_sampler()

    def _make_sampler(self) -> optuna.samplers.BaseSampler:
        kwargs = dict(self.ctx.cfg.sampler or {})
        kwargs.setdefault("seed", self.ctx.seed)
        try:
            return SAMPLERS[self.kind](**kwargs)
        except TypeError as e:
            raise ConfigError(f"search.sampler={kwargs!r} does not fit {SAMPLERS[self.kind].__name__}: {e}") from None

    def sampler(self) -> optuna.samplers.BaseSampler:
        return self._sampler

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["sampler"] = {k: v for k, v in dict(self.ctx.cfg.sampler or {}).items()}
        return d

    def total(self) -> int | None:
        return self.ctx.cfg.n_trials

    def next_trial(self, study: optuna.Study) -> optuna.Trial | None:
        n_trials = self.ctx.cfg.n_trials
        if n_trials is not None and len(counted_trials(study.get_trials(deepcopy=False))) >= n_trials:
            return None
        with quiet_optuna():
            trial = study.ask()
        mark_running(trial)
        return trial

    def suggest(self, trial: optuna.Trial) -> Candidate:
        dims = self.ctx.space.dimensions()
        params = {name: trial.suggest_categorical(name, choices) for name, choices in dims.items()}
        setting = Setting.from_params(params)
        problem = self.ctx.space.problem(setting)
        if problem is not None:
            raise SkipTrial(f"{setting.mode} at {setting.nbits} bits: {problem}")
        return self.candidate(params)

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        s = Setting.from_params(params)
        return Candidate(attrs=s.params(), plan=self.ctx.build_plan(s), label=s.label)
