"""Which trials use up a study's trial budget (``search.n_trials``): one rule, for live trials and tables.

A trial counts unless it was skipped (PRUNED: an invalid sampled combination)
or it is a dead trial that another trial re-ran. Retries are recognised from the
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


def _counts(number: int, state: str, retried: dict[int, int]) -> bool:
    return state != TrialState.PRUNED.name and not (state == TrialState.FAIL.name and number in retried)


def retried_numbers(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """Dead trial number -> number of the trial that retried it."""
    return retry_successors((t.number, t.system_attrs.get("failed_trial")) for t in trials)


def counted_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use up budget (any state but PRUNED, and not a retried dead trial)."""
    retried = retried_numbers(trials)
    return [t for t in trials if _counts(t.number, t.state.name, retried)]


def counted_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a trials table (``trials.csv``) that use up budget: the rule of :func:`counted_trials`."""
    if table.empty:
        return table
    roots = table["retry_of"] if "retry_of" in table.columns else [None] * len(table)
    retried = retry_successors(zip(table["trial"], roots))
    keep = [_counts(int(n), str(s), retried) for n, s in zip(table["trial"], table["state"])]
    return table[keep]


def budget_used(trials: Sequence[FrozenTrial]) -> int:
    """Trials counted against the budget that are not merely queued (WAITING trials have not run yet)."""
    return sum(1 for t in counted_trials(trials) if t.state != TrialState.WAITING)
