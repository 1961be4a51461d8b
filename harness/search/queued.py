"""Strategies whose trials are a fixed list: queued once in the study, taken by any number of workers.

Under a lease lock in the study database (:meth:`harness.study.StudyDB.lock`),
the first worker enqueues every point that is not in the study yet (each trial
carries its point's key as a user attribute), and every worker takes queued
trials with an atomic WAITING -> RUNNING transition
(:func:`harness.study.pop_waiting`). A point whose worker dies is queued again
by the heartbeat machinery, so it still runs once to completion. The sampler is
never consulted: every trial's parameters are fixed when it is queued.
"""
from __future__ import annotations

import abc
import logging
from typing import Any

import optuna

from harness.search.base import SearchStrategy
from harness.study import StudyDB, pop_waiting

log = logging.getLogger(__name__)


class QueuedSearch(SearchStrategy):
    """Queue :meth:`points` once; workers pop them until none is left (or the budget is used)."""

    #: User attribute holding a queued trial's point key (e.g. ``grid_point``).
    point_attr: str = "queued_point"
    #: How the log names what was queued.
    point_noun: str = "point(s)"

    @abc.abstractmethod
    def n_points(self) -> int:
        """How many points the full list has."""

    @abc.abstractmethod
    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """``(key, params)`` of every point, in queue order."""

    def total(self) -> int:
        n = self.n_points()
        return min(n, self.ctx.cfg.n_trials) if self.ctx.cfg.n_trials else n

    def prepare(self, db: StudyDB) -> None:
        with db.lock(self.kind):
            present = {t.user_attrs.get(self.point_attr) for t in db.trials()}
            missing = [(key, params) for key, params in self.points() if key not in present]
            for key, params in missing:
                db.enqueue(params, user_attrs={self.point_attr: key})
        if missing:
            log.info("%s: queued %d %s in the study", self.kind, len(missing), self.point_noun)

    def next_trial(self, db: StudyDB) -> optuna.Trial | None:
        if self.budget_reached(db):
            return None
        return pop_waiting(db)
