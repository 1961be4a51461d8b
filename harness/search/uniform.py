"""Uniform settings as trial parameters: suggest one from the space, turn one into a candidate.

Shared by ``search=grid`` and the sampled kinds, whose trials are both uniform
settings (:class:`harness.space.Setting`): the parameters are the setting's
scalars, the candidate's columns the same, its plan the setting's plan.
"""
from __future__ import annotations

from typing import Any, Mapping

import optuna

from harness.search.base import Candidate, SearchContext, StrategyResult
from harness.space import SearchSpace, Setting


def suggest_setting(trial: optuna.Trial, space: SearchSpace) -> Setting:
    """Read (queued trial) or sample (sampler) every dimension of ``space`` on ``trial``."""
    params = {name: trial.suggest_categorical(name, choices) for name, choices in space.dimensions().items()}
    return Setting.from_params(params)


def algorithm_result(ctx: SearchContext, table: Any, evaluator: Any) -> StrategyResult:
    """summary.json ``hypervolume`` of a uniform sweep with calibration-aware points (all trials vs its
    round-to-nearest trials, :func:`harness.search.mixed_summary.algorithm_hypervolumes`); nothing otherwise."""
    from harness.search.mixed_summary import algorithm_hypervolumes

    if not ctx.space.calibrated or table.empty:
        return StrategyResult()
    return StrategyResult(summary={"hypervolume": algorithm_hypervolumes(table, evaluator.metric, evaluator.baseline)})


def setting_candidate(ctx: SearchContext, params: Mapping[str, Any]) -> Candidate:
    """The candidate of a uniform setting's parameters."""
    s = Setting.from_params(params)
    # With calibration-aware points the round-to-nearest ones are the reference front (summary.json
    # hypervolume): they are evaluated on every sample, never stopped by a calibrated trial.
    reference = ctx.space.calibrated and s.algorithm == "rtn" and not s.bias_correction
    return Candidate(attrs=s.params(), plan=ctx.build_plan(s), label=s.label, race=not reference)
