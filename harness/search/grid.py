"""``search=grid``: every valid point of the space exactly once, across any number of workers.

Optuna's GridSampler repeats points when workers run concurrently (its
documentation says so). Here the grid is queued in the study instead
(:class:`~harness.search.queued.QueuedSearch`); each trial carries its point as
the user attribute ``grid_point``.

Points that compile to a plan seen earlier in the grid are queued after all
distinct plans, so their trials find the result ready to reuse.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Mapping

import optuna

from harness.search.base import Candidate
from harness.search.queued import QueuedSearch
from harness.search.uniform import algorithm_result, setting_candidate, suggest_setting
from harness.space import Setting

log = logging.getLogger(__name__)


def point_key(params: Mapping[str, Any]) -> str:
    """A stable text key of a grid point's parameters, e.g. ``nbits=4,mode=kmeans_lut,skip_layer_types=none,...``."""
    return ",".join(f"{k}={v}" for k, v in params.items())


def _dropped_name(d: Any) -> str:
    extra = ("" if d.algorithm == "rtn" else f"/{d.algorithm}") + ("/bc" if d.bias_correction else "")
    return f"{d.mode}/{d.nbits}{extra}"


class GridSearch(QueuedSearch):
    """Queue the whole grid once; workers pop points until none is left."""

    point_attr = "grid_point"
    all_trials = "the whole grid"

    def setup(self) -> None:
        space = self.ctx.space
        points, dropped = space.grid()
        self.dropped = dropped
        if dropped:
            per_codec = space.grid_size() // space.codec_count()
            reasons = Counter(d.reason for d in dropped)
            log.info("grid: dropped %d of %d point(s), invalid (nbits, mode%s) combinations: %s",
                     len(dropped) * per_codec, space.grid_size(), ", algorithm" if space.calibrated else "",
                     "; ".join(", ".join(_dropped_name(d) for d in dropped if d.reason == r) + f" ({r})"
                               for r in reasons))
        self.settings: list[Setting] = points
        n_trials = self.ctx.cfg.n_trials
        log.info("grid: %d point(s)%s", len(points),
                 f", run until {n_trials} trial(s) exist (search.n_trials)" if n_trials else "")

    def n_points(self) -> int:
        return len(self.settings)

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """Grid order with points whose plan repeats an earlier one moved to the end."""
        seen: set[str] = set()
        first, repeats = [], []
        for s in self.settings:
            try:
                digest = self.ctx.build_plan(s).digest()
            except Exception:  # the trial itself will report the problem
                first.append(s)
                continue
            (repeats if digest in seen else first).append(s)
            seen.add(digest)
        space = self.ctx.space
        return [(point_key(space.params(s)), space.params(s)) for s in first + repeats]

    def suggest(self, trial: optuna.Trial) -> Candidate:
        return self.candidate(suggest_setting(trial, self.ctx.space).params())

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        return setting_candidate(self.ctx, params)

    def finish(self, table: Any, summary: Any, evaluator: Any) -> Any:
        """With calibration-aware points: the hypervolume of every trial vs the round-to-nearest ones."""
        return algorithm_result(self.ctx, table, evaluator)
