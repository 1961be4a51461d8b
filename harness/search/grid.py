"""``search=grid``: every valid point of the space exactly once, across any number of workers.

Optuna's GridSampler repeats points when workers run concurrently (its
documentation says so). Here the grid is queued in the study instead: under a
lease lock in the study database (:meth:`harness.claims.Claims.lock`), the
first worker enqueues every point that is not in the study yet (each trial
carries its point as the user attribute ``grid_point``), and every worker takes
queued trials with an atomic WAITING -> RUNNING transition
(:func:`harness.study.pop_waiting`). A point whose worker dies is queued again
by the heartbeat machinery, so it still runs once to completion.

Points that compile to a plan seen earlier in the grid are queued after all
distinct plans, so their trials find the result ready to reuse.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Mapping

import optuna

from harness.errors import ConfigError
from harness.search.base import Candidate, SearchContext, SearchStrategy
from harness.space import Setting
from harness.study import counted_trials, pop_waiting, worker_id

log = logging.getLogger(__name__)


def point_key(setting: Setting) -> str:
    """A stable text key of a grid point, e.g. ``nbits=4,mode=kmeans_lut,skip_layer_types=none,...``."""
    return ",".join(f"{k}={v}" for k, v in setting.params().items())


class GridSearch(SearchStrategy):
    """Queue the whole grid once; workers pop points until none is left."""

    uses = ()

    def __init__(self, ctx: SearchContext):
        super().__init__(ctx)
        points, dropped = ctx.space.grid()
        self.dropped = dropped
        if dropped:
            per_pair = ctx.space.grid_size() // (len(ctx.space.nbits) * len(ctx.space.modes))
            reasons = Counter(d.reason for d in dropped)
            log.info("grid: dropped %d of %d point(s), invalid (nbits, mode) combinations: %s",
                     len(dropped) * per_pair, ctx.space.grid_size(),
                     "; ".join(", ".join(f"{d.mode}/{d.nbits}" for d in dropped if d.reason == r) + f" ({r})"
                               for r in reasons))
        if not points:
            raise ConfigError(
                "The search space is empty: every (nbits, mode) combination of search.space.nbits="
                f"{list(ctx.space.nbits)} and search.space.mode={list(ctx.space.modes)} is invalid ("
                + "; ".join(sorted({d.reason for d in dropped})) + ").")
        self.points: list[Setting] = points
        n_trials = ctx.cfg.n_trials
        if n_trials is not None and n_trials < 1:
            raise ConfigError(f"search.n_trials must be at least 1 (or null for the whole grid), got {n_trials}.")
        log.info("grid: %d point(s)%s", len(points),
                 f", run until {n_trials} trial(s) exist (search.n_trials)" if n_trials else "")

    def sampler(self) -> optuna.samplers.BaseSampler:
        # Never consulted: every grid trial's parameters are fixed when it is queued.
        return optuna.samplers.RandomSampler(seed=self.ctx.seed)

    def total(self) -> int:
        n = len(self.points)
        return min(n, self.ctx.cfg.n_trials) if self.ctx.cfg.n_trials else n

    def _ordered(self) -> list[Setting]:
        """Grid order with points whose plan repeats an earlier one moved to the end."""
        seen: set[str] = set()
        first, repeats = [], []
        for s in self.points:
            try:
                digest = self.ctx.build_plan(s).digest()
            except Exception:  # the trial itself will report the problem
                first.append(s)
                continue
            (repeats if digest in seen else first).append(s)
            seen.add(digest)
        return first + repeats

    def prepare(self, study: optuna.Study) -> None:
        with self.ctx.claims.lock(study._study_id, "grid", worker_id()):
            present = {t.user_attrs.get("grid_point") for t in study.get_trials(deepcopy=False)}
            missing = [s for s in self._ordered() if point_key(s) not in present]
            for s in missing:
                study.enqueue_trial(s.params(), user_attrs={"grid_point": point_key(s)})
        if missing:
            log.info("grid: queued %d point(s) in the study", len(missing))

    def next_trial(self, study: optuna.Study) -> optuna.Trial | None:
        if self.ctx.cfg.n_trials is not None:
            if len(counted_trials(study.get_trials(deepcopy=False))) - self._waiting(study) >= self.ctx.cfg.n_trials:
                return None
        return pop_waiting(study)

    @staticmethod
    def _waiting(study: optuna.Study) -> int:
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))

    def suggest(self, trial: optuna.Trial) -> Candidate:
        dims = self.ctx.space.dimensions()
        params = {name: trial.suggest_categorical(name, choices) for name, choices in dims.items()}
        return self.candidate(params)

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        s = Setting.from_params(params)
        return Candidate(attrs=s.params(), plan=self.ctx.build_plan(s), label=s.label)
