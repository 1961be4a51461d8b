"""``search=tpe|nsga2|random``: Optuna samplers over the same space.

The budget ``search.n_trials`` is study-wide: it counts the trials of every
worker and earlier (resumed) runs, except skipped ones (sampled combinations
that are invalid, recorded as PRUNED with the reason) and dead ones that were
retried (:mod:`harness.study.budget`). ``search.timeout`` bounds the seconds
this worker spends starting trials. ``search.sampler`` passes keyword arguments
to the sampler class.
"""
from __future__ import annotations

from typing import Any, Mapping

import optuna

from harness.errors import ConfigError
from harness.search.base import Candidate, SearchStrategy, SkipTrial
from harness.search.uniform import algorithm_result, setting_candidate, suggest_setting
from harness.study import StudyDB

SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "random": optuna.samplers.RandomSampler,
}


class SamplerSearch(SearchStrategy):
    """Ask the study's sampler for each trial's setting."""

    sampler_options = True
    needs_budget = True

    def setup(self) -> None:
        if self.kind not in SAMPLERS:
            raise ConfigError(f"search.kind={self.kind!r} has no sampler; choose one of {', '.join(SAMPLERS)}.")

    def sampler_class(self) -> type[optuna.samplers.BaseSampler]:
        return SAMPLERS[self.kind]

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["sampler"] = {k: v for k, v in dict(self.ctx.cfg.sampler or {}).items()}
        return d

    def next_trial(self, db: StudyDB) -> optuna.Trial | None:
        if self.budget_reached(db):
            return None
        return self.ask(db)

    def suggest(self, trial: optuna.Trial) -> Candidate:
        setting = suggest_setting(trial, self.ctx.space)
        problem = self.ctx.space.problem(setting)
        if problem is not None:
            raise SkipTrial(f"{setting.mode} at {setting.nbits} bits: {problem}")
        return self.candidate(setting.params())

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        return setting_candidate(self.ctx, params)

    def finish(self, table: Any, summary: Any, evaluator: Any) -> Any:
        """With calibration-aware points: the hypervolume of every trial vs the round-to-nearest ones."""
        return algorithm_result(self.ctx, table, evaluator)
