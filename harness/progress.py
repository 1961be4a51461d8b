"""The progress bar of a sweep: finished trials of the study / total, the best size within the target.

The "best within the target" is :func:`harness.pareto.best_within` (the one
definition of "the smallest model within a drop") over the study's complete
trials, with the target ``search.max_accuracy_drop`` (0.01 when unset).
"""
from __future__ import annotations

import pandas as pd
from optuna.trial import TrialState

from harness import pareto
from harness.evaluate import TaskMetric
from harness.study import StudyDB, counted_trials


class Progress:
    """tqdm bar: finished trials of the study / total, best size within the target, elapsed."""

    def __init__(self, db: StudyDB, total: int | None, metric: TaskMetric, baseline: float,
                 max_drop: float | None, enabled: bool):
        self.db, self.metric, self.baseline, self.max_drop = db, metric, baseline, max_drop
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="trials", unit="trial", dynamic_ncols=True,
                            bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| [{elapsed}<{remaining}]{postfix}")
            self.update()

    def update(self) -> None:
        if self.bar is None:
            return
        trials = counted_trials(self.db.trials())
        done = [t for t in trials if t.state.is_finished()]
        ok = [t for t in done if t.state == TrialState.COMPLETE]
        post = ""
        target = self.max_drop if self.max_drop is not None else 0.01
        table = pd.DataFrame({"trial": [t.number for t in ok], "size_bytes": [t.values[0] for t in ok],
                              "drop": [self.metric.drop(self.baseline, t.values[1]) for t in ok],
                              "reused_from": [t.user_attrs.get("reused_from") for t in ok]})
        best = pareto.best_within(table, "drop", target)
        if best is not None:
            post = (f"best within {self.metric.name} drop {target:g}: {best['size_bytes'] / 1024:.1f} KB "
                    f"(trial {int(best['trial'])})")
        elif ok:
            post = f"none within {self.metric.name} drop {target:g} yet"
        failed = sum(1 for t in done if t.state == TrialState.FAIL)
        if failed:
            post += f", {failed} failed"
        self.bar.n = len(done)
        self.bar.set_postfix_str(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.update()
            self.bar.close()
