"""The size-versus-metric Pareto front of a sweep, and the best model within an accuracy target.

A trial is on the front when no other trial is at most as large *and* at least
as good with one of the two strictly better. Among trials with identical
(size, metric) the first (lowest trial number) represents them, and a trial
that reused another's result (``reused_from``) never appears: its original does.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"trial": [0, 1, 2], "size_bytes": [100, 50, 60], "accuracy": [0.9, 0.8, 0.7]})
    >>> front(df, "accuracy")["trial"].tolist()
    [1, 0]
"""
from __future__ import annotations

import math

import pandas as pd


def front(trials: pd.DataFrame, metric: str, *, maximize: bool = True, size: str = "size_bytes") -> pd.DataFrame:
    """Rows of ``trials`` on the Pareto front (small ``size``, good ``metric``), sorted by size.

    Rows without a size or metric value, and rows with ``reused_from`` set, are ignored.
    """
    if trials.empty:
        return trials.copy()
    d = trials[trials[size].notna() & trials[metric].notna()]
    if "reused_from" in d.columns:
        d = d[d["reused_from"].isna()]
    sign = 1.0 if maximize else -1.0
    order = d.assign(_good=sign * d[metric].astype(float))
    keys = [size, "_good"] + (["trial"] if "trial" in d.columns else [])
    order = order.sort_values(keys, ascending=[True, False] + [True] * (len(keys) - 2), kind="mergesort")
    keep, best = [], -math.inf
    for idx, good in zip(order.index, order["_good"]):
        if good > best:
            keep.append(idx)
            best = good
    return d.loc[keep]


def best_within(trials: pd.DataFrame, drop_column: str, max_drop: float, *,
                size: str = "size_bytes") -> pd.Series | None:
    """The smallest model within a metric drop: THE rule (the summary, the report, the notebooks,
    the progress bar and the mixed search all call this).

    Among the rows whose ``drop_column`` (metric drop from the float model, positive = worse) is at
    most ``max_drop`` (+1e-12), and that did not reuse another trial's result (``reused_from``), the
    one with the smallest ``size``, then the smallest drop, then the lowest ``trial`` number.
    Returns None when no row qualifies.

    Example:
        >>> df = pd.DataFrame({"trial": [0, 1, 2], "size_bytes": [60, 50, 50], "accuracy_drop": [0.0, 0.02, 0.01]})
        >>> int(best_within(df, "accuracy_drop", 0.015)["trial"])
        2
    """
    if trials.empty:
        return None
    ok = trials[trials[drop_column].notna() & (trials[drop_column] <= max_drop + 1e-12)]
    if "reused_from" in ok.columns:
        ok = ok[ok["reused_from"].isna()]
    if ok.empty:
        return None
    keys = [size, drop_column] + (["trial"] if "trial" in ok.columns else [])
    return ok.sort_values(keys, kind="mergesort").iloc[0]
