"""The size-versus-metric Pareto front of a sweep, the best model within an accuracy target, and its evidence.

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
from typing import Any, Mapping

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


#: How each drop test is named in messages (``summary["evaluation"]["drop_test"]``).
TEST_NAMES = {"mcnemar": "exact McNemar", "paired_t": "paired t-test", "paired_bootstrap": "paired bootstrap"}


def evidence(row: Mapping[str, Any], metric: str, baseline_value: float, max_drop: float) -> dict[str, Any]:
    """What the test set says about one trial's drop: THE rule of "distinguishable from the float model".

    A trial is distinguishable from the float model when its paired drop test (``<metric>_drop_p``,
    label metrics) gives p < :data:`harness.stats.ALPHA`; for a metric measured against the float
    model (agreement, cosine, SNR: no drop test, the float figure is exact) when the float model's
    value lies outside the trial's 95% interval. The test set resolves ``max_drop`` when that
    interval is at most ``max_drop`` wide.

    Returns:
        :class:`harness.rundir.Evidence`.
    """
    from harness import rundir, stats

    lo_col, hi_col = rundir.ci_columns(metric)
    lo, hi = float(row[lo_col]), float(row[hi_col])
    p = row.get(rundir.drop_p_column(metric))
    p = None if p is None or pd.isna(p) else float(p)
    if p is not None:
        distinct = p < stats.ALPHA
    else:
        distinct = not (lo - 1e-12 <= float(baseline_value) <= hi + 1e-12)
    width = hi - lo
    return {"trial": int(row["trial"]), "drop": float(row[rundir.drop_column(metric)]), "ci_low": lo, "ci_high": hi,
            "ci_width": width, "drop_p": p, "distinguishable": bool(distinct),
            "resolves_max_drop": bool(width <= max_drop + 1e-12)}


def _evidence_text(ev: Mapping[str, Any], metric: str, baseline_value: float, drop_test: str | None) -> str:
    if ev["drop_p"] is not None:
        test = f"{TEST_NAMES.get(drop_test or '', 'paired test')} p = {ev['drop_p']:.3g}"
    else:
        where = "outside" if ev["distinguishable"] else "inside"
        test = f"the float model's {baseline_value:.4f} is {where} its 95% interval"
    verdict = "distinguishable" if ev["distinguishable"] else "not distinguishable"
    return f"{verdict} from the float model ({test})"


def _resolution_text(ev: Mapping[str, Any], metric: str, max_drop: float, n: int) -> str:
    if ev["resolves_max_drop"]:
        return ""
    return (f" The test set ({n} samples) is too small to resolve a drop of {max_drop:g}: the 95% interval of "
            f"{metric} is {ev['ci_width']:.3g} wide; use more test samples or a larger search.max_accuracy_drop.")


def target(complete: pd.DataFrame, metric: str, baseline: Mapping[str, Any], max_drop: float, *, n: int,
           drop_test: str | None = None) -> tuple[pd.Series | None, dict[str, Any] | None, str]:
    """The accuracy target of a run: ``(best, evidence, message)``.

    ``best`` is :func:`best_within` of the complete trials; ``evidence`` is :func:`evidence` of
    ``best`` or, when no trial is within ``max_drop``, of the trial with the smallest drop (None
    when there is no trial); ``message`` says it in words: the point drop, whether it is
    distinguishable from the float model, and when the test set (``n`` samples) is too small to
    resolve ``max_drop``.
    """
    from harness import rundir

    drop_col = rundir.drop_column(metric)
    base = float(baseline[metric])
    best = best_within(complete, drop_col, max_drop)
    if best is None:
        msg = (f"No trial is within {metric} drop {max_drop:g} of the float model ({base:.4f}); the most accurate "
               "trial is on the Pareto front.")
        own = complete[complete[drop_col].notna()]
        if "reused_from" in own.columns:
            own = own[own["reused_from"].isna()]
        if own.empty:
            return None, None, msg
        closest = own.sort_values([drop_col, "size_bytes"], kind="mergesort").iloc[0]
        ev = evidence(closest, metric, base, max_drop)
        return None, ev, msg + _resolution_text(ev, metric, max_drop, n)
    ev = evidence(best, metric, base, max_drop)
    lo, hi = rundir.ci_columns(metric)
    msg = (f"Smallest model within {metric} drop {max_drop:g}: trial {best['trial']}, {best['size_bytes']} bytes "
           f"({best['compression_ratio']:.2f}x smaller), {metric} {best[metric]:.4f} (95% interval "
           f"{best[lo]:.4f} .. {best[hi]:.4f}), drop {ev['drop']:+.4f}: "
           f"{_evidence_text(ev, metric, base, drop_test)}.")
    return best, ev, msg + _resolution_text(ev, metric, max_drop, n)
