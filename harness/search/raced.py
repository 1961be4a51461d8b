"""How Optuna's samplers see the trials racing stopped: as finished, at the best figure they could reach.

A trial racing stops is PRUNED (:mod:`harness.racing`). Left alone, Optuna's samplers read a
PRUNED multi-objective trial poorly: NSGA-II (``optuna.samplers.NSGAIISampler``) builds its
populations from COMPLETE trials only, so it never learns from one (and a generation takes as many
more trials as were stopped); multi-objective TPE (``optuna.samplers.TPESampler``) puts every
PRUNED trial without intermediate values into its "above" (bad) group whatever it showed, once
enough trials are complete (``_split_trials``: pruned trials only fill the "below" group while there
are fewer complete trials than it needs).

What a stopped trial did learn is a point it can no longer beat: its size and
``best_reachable``, the best final figure it could still have reached -- which a finished trial
dominates. :class:`RacedTrialsSampler` wraps the study's sampler and shows it each stopped trial
as COMPLETE with the values ``(size_bytes, best_reachable)``: NSGA-II ranks it in its
non-dominated sorting (behind the trial dominating it) and counts it in its generation, and TPE
splits it with the complete trials by non-domination rank, so its parameters weigh against that
region as a dominated point would. Skipped trials (invalid combinations) stay PRUNED. The
trials themselves are not changed: only the sampler's view of the study.

Example:
    >>> import optuna
    >>> sampler = RacedTrialsSampler(optuna.samplers.NSGAIISampler(seed=0))
    >>> study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
    >>> isinstance(study.sampler, optuna.samplers.BaseSampler)
    True
"""
from __future__ import annotations

import copy
from typing import Any, Container, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from harness.rundir import DOMINATED_COLUMN, REACH_COLUMN

__all__ = ["RacedTrialsSampler", "as_observed"]


def as_observed(trial: FrozenTrial) -> FrozenTrial:
    """A stopped trial as the sampler sees it (COMPLETE at ``(size_bytes, best_reachable)``); others unchanged."""
    attrs = trial.user_attrs
    if trial.state != TrialState.PRUNED or attrs.get(DOMINATED_COLUMN) is None or attrs.get(REACH_COLUMN) is None:
        return trial
    seen = copy.copy(trial)
    seen.state = TrialState.COMPLETE
    seen.values = [float(attrs["size_bytes"]), float(attrs[REACH_COLUMN])]
    return seen


class _StudyView:
    """The study as a sampler reads it: :func:`as_observed` applied to its trials, everything else the study's."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = [as_observed(t) for t in self._study._get_trials(deepcopy=False, states=None, use_cache=use_cache)]
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class RacedTrialsSampler(optuna.samplers.BaseSampler):
    """Wrap ``sampler`` so that it reads stopped trials as finished at their best reachable figure."""

    def __init__(self, sampler: optuna.samplers.BaseSampler):
        self.sampler = sampler

    def __getattr__(self, name: str) -> Any:  # the wrapped sampler's own attributes (e.g. _constraints_func)
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(_StudyView(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.sampler.sample_relative(_StudyView(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.sampler.sample_independent(_StudyView(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
