"""Which trials use up a study's trial budget (``search.n_trials``): one rule, for live trials and tables.

A trial counts unless it was skipped (PRUNED: an invalid sampled combination)
or it is a dead trial that another trial re-ran. A trial racing stopped early is
PRUNED too but it was evaluated, so it counts: it carries ``dominated_by`` (the
trials.csv column of the same name). Retries are recognised from the
structured retry record, never from message text: every retry carries
``failed_trial`` (the first trial of its chain) as a system attribute, which
``trials.csv`` holds as the column ``retry_of``. A chain (the dead trial, its
retry, the retry's retry, ...) is created in number order, so each member but
the last was retried by the next.

Example:
    >>> import pandas as pd
    >>> table = pd.DataFrame({"trial": [0, 1, 2, 3], "state": ["FAIL", "PRUNED", "COMPLETE", "FAIL"],
    ...                       "retry_of": [None, None, 0, None]})
    >>> counted_rows(table)["trial"].tolist()
    [2, 3]
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from harness.rundir import DOMINATED_COLUMN


def retry_successors(chains: Iterable[tuple[int, Any]]) -> dict[int, int]:
    """Dead trial number -> number of the trial that re-ran it, from ``(number, retry_of)`` pairs.

    ``retry_of`` is the first trial of the number's retry chain (None or NaN for a trial
    that is no retry).
    """
    members: dict[int, list[int]] = {}
    for number, root in chains:
        if root is None or pd.isna(root):
            continue
        members.setdefault(int(root), [int(root)]).append(int(number))
    out: dict[int, int] = {}
    for chain in members.values():
        chain = sorted(set(chain))
        out.update(zip(chain[:-1], chain[1:]))
    return out


#: The attribute (and column) of a trial racing stopped.
RACED = DOMINATED_COLUMN


def _counts(number: int, state: str, retried: dict[int, int], raced: bool = False) -> bool:
    if state == TrialState.PRUNED.name:
        return raced
    return not (state == TrialState.FAIL.name and number in retried)


def retried_numbers(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """Dead trial number -> number of the trial that retried it."""
    return retry_successors((t.number, t.system_attrs.get("failed_trial")) for t in trials)


def counted_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use up budget (any state but a skipped PRUNED one, and not a retried dead trial)."""
    retried = retried_numbers(trials)
    return [t for t in trials if _counts(t.number, t.state.name, retried, t.user_attrs.get(RACED) is not None)]


def counted_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a trials table (``trials.csv``) that use up budget: the rule of :func:`counted_trials`."""
    if table.empty:
        return table
    roots = table["retry_of"] if "retry_of" in table.columns else [None] * len(table)
    retried = retry_successors(zip(table["trial"], roots))
    raced = table[RACED].notna() if RACED in table.columns else [False] * len(table)
    keep = [_counts(int(n), str(s), retried, bool(r)) for n, s, r in zip(table["trial"], table["state"], raced)]
    return table[keep]


def budget_used(trials: Sequence[FrozenTrial]) -> int:
    """Trials counted against the budget that are not merely queued (WAITING trials have not run yet)."""
    return sum(1 for t in counted_trials(trials) if t.state != TrialState.WAITING)
