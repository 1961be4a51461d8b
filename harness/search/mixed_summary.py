"""What a mixed-precision run (or a calibrated uniform sweep) adds to summary.json: hypervolumes, and the accuracy-target note.

``hypervolume`` holds the 2-D hypervolume (size normalised by the float
model's size; reference point: float size, zero metric) and the smallest model
within 1 point of the float metric, for this run's trials, for its uniform
seeds, and -- with ``search.options.compare_to`` -- for that run's trials.
When no trial met ``search.max_accuracy_drop``, the target's message names the
best-effort model instead (:func:`target_note`). A uniform sweep whose space
has calibration-aware points records the same blocks for all its trials and
for its round-to-nearest trials alone (:func:`algorithm_hypervolumes`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from harness import pareto
from harness.errors import ConfigError
from harness.study import counted_rows

#: The trials-table column naming how a mixed trial was seeded (probe, uniform, greedy, refine, sampled).
SEED_ATTR = "mixed_seed"


def smallest_within(df: pd.DataFrame, metric: Any, baseline: float, drop: float) -> dict[str, Any] | None:
    """The smallest trial of ``df`` whose metric is within ``drop`` of ``baseline``
    (:func:`harness.pareto.best_within`), as ``{trial, size_bytes, <metric>}``."""
    if df.empty:
        return None
    drops = df[metric.name].astype(float).map(lambda v: metric.drop(baseline, v))
    rows = pd.DataFrame({"trial": df["trial"], "size_bytes": df["size_bytes"], "_drop": drops,
                         "reused_from": df["reused_from"] if "reused_from" in df.columns else None})
    best = pareto.best_within(rows, "_drop", drop)
    if best is None:
        return None
    row = df.loc[best.name]
    return {"trial": int(row["trial"]), "size_bytes": int(row["size_bytes"]), metric.name: float(row[metric.name])}


def hv_block(df: pd.DataFrame, metric: Any, baseline: Mapping[str, Any], n_trials: int | None = None) -> dict[str, Any]:
    """Hypervolume (normalised size; reference float size, zero metric) and the smallest model
    within 1 point of the float metric, for the complete trials in ``df``."""
    from harness.analysis import hypervolume

    ref = float(baseline["size_bytes"])
    base = float(baseline[metric.name])
    out: dict[str, Any] = {"trials": int(n_trials if n_trials is not None else len(df)),
                           "evaluated": int(df["reused_from"].isna().sum()) if "reused_from" in df.columns else len(df)}
    if metric.maximize:
        out["hypervolume"] = round(hypervolume(df["size_bytes"].astype(float), df[metric.name].astype(float), ref), 6)
    out["smallest_within_1_point"] = smallest_within(df, metric, base, 0.01)
    return out


def finished_budget(table: pd.DataFrame) -> int:
    """Trials that used budget and finished (COMPLETE, FAIL, or stopped by racing; not queued and left unrun)."""
    counted = counted_rows(table)
    return int(counted["state"].isin(["COMPLETE", "FAIL", "PRUNED"]).sum())


def mixed_summary(table: pd.DataFrame, metric: Any, baseline: Mapping[str, Any],
                  compare_to: tuple[str, Any] | None = None) -> dict[str, Any]:
    """The ``hypervolume`` block of a mixed run's summary.json (see module docstring).

    ``compare_to`` is ``(option value, RunData)`` of the run to compare with.
    """
    complete = table[table["state"] == "COMPLETE"]
    out: dict[str, Any] = {
        "reference": {"size_bytes": int(baseline["size_bytes"]), metric.name: 0.0,
                      "size": "normalised by the float model's size"},
        "mixed": hv_block(complete, metric, baseline, finished_budget(table)),
    }
    if SEED_ATTR in complete.columns:
        uni = complete[complete[SEED_ATTR] == "uniform"]
        out["uniform_seeds_in_this_run"] = hv_block(uni, metric, baseline)
    if compare_to is not None:
        from harness import analysis

        value, run = compare_to
        other_base = run.baseline or {}
        if other_base.get("size_bytes") != baseline["size_bytes"]:
            raise ConfigError(f"search.options.compare_to={value!r} is a run on another model "
                              f"(float size {other_base.get('size_bytes')} bytes, this one {baseline['size_bytes']}).")
        blk = hv_block(run.complete, metric, baseline, finished_budget(run.trials))
        blk["run_dir"] = str(Path(value).resolve())
        blk["search"] = analysis.search_kind(run)
        out["compare_to"] = blk
        if "hypervolume" in blk and "hypervolume" in out["mixed"]:
            out["mixed_minus_compare_to"] = round(out["mixed"]["hypervolume"] - blk["hypervolume"], 6)
    return out


def target_note(summary: Mapping[str, Any], metric: Any) -> dict[str, Any] | None:
    """The accuracy target naming the best-effort model when nothing met it (None: nothing to change)."""
    target = summary.get("target")
    if not isinstance(target, dict) or target.get("max_accuracy_drop") is None or target.get("best") is not None:
        return None
    front = summary.get("pareto_front") or []
    if not front:
        return None
    best = max(front, key=lambda r: (r.get(metric.name) if metric.maximize else -r.get(metric.name, 0), -r["size_bytes"]))
    where = f", saved as {best['model_file']}" if best.get("model_file") else ""
    message = (f"NO candidate met the target: none is within {metric.name} drop "
               f"{target['max_accuracy_drop']:g} of the float model. Best effort: trial {best['trial']}, "
               f"{best['size_bytes']} bytes, {metric.name} {best[metric.name]:.4f} "
               f"(drop {best.get(metric.drop_name, float('nan')):.4f}){where}.")
    return {**target, "best_effort": best, "message": message}


def algorithm_hypervolumes(table: pd.DataFrame, metric: Any, baseline: Mapping[str, Any]) -> dict[str, Any]:
    """The ``hypervolume`` block of a uniform sweep with calibration-aware points: every complete
    trial (``all_algorithms``) and its round-to-nearest ones (``round_to_nearest``: algorithm rtn,
    no bias correction), and the difference."""
    complete = table[table["state"] == "COMPLETE"]
    bc = complete["bias_correction"].map(lambda v: str(v).strip().lower() in ("true", "1"))
    rtn = complete[(complete["algorithm"].astype(str) == "rtn") & ~bc]
    out: dict[str, Any] = {
        "reference": {"size_bytes": int(baseline["size_bytes"]), metric.name: 0.0,
                      "size": "normalised by the float model's size"},
        "all_algorithms": hv_block(complete, metric, baseline),
        "round_to_nearest": hv_block(rtn, metric, baseline),
    }
    a, r = out["all_algorithms"], out["round_to_nearest"]
    if "hypervolume" in a and "hypervolume" in r:
        out["all_minus_round_to_nearest"] = round(a["hypervolume"] - r["hypervolume"], 6)
    out["round_to_nearest_front"] = dominated_points(pareto.front(rtn, metric.name, maximize=metric.maximize),
                                                     complete.drop(rtn.index), metric)
    return out


def dominated_points(front: pd.DataFrame, others: pd.DataFrame, metric: Any) -> dict[str, Any]:
    """How many points of ``front`` some row of ``others`` dominates (at most as large and at least as
    good, one of the two strictly), and which trials dominate them."""
    sign = 1.0 if metric.maximize else -1.0
    o = others[others["size_bytes"].notna() & others[metric.name].notna()]
    size, good = o["size_bytes"].astype(float).to_numpy(), sign * o[metric.name].astype(float).to_numpy()
    by: dict[str, int] = {}
    for _, row in front.iterrows():
        s, g = float(row["size_bytes"]), sign * float(row[metric.name])
        hit = (size <= s) & (good >= g) & ((size < s) | (good > g))
        if hit.any():
            best = o.iloc[int(np_argmax(hit, good))]
            by[str(int(row["trial"]))] = int(best["trial"])
    return {"points": int(len(front)), "dominated_by_calibrated": len(by), "dominating_trial": by}


def np_argmax(mask: Any, values: Any) -> int:
    """Index of the largest ``values`` entry where ``mask`` holds."""
    import numpy as np

    return int(np.flatnonzero(mask)[np.argmax(np.asarray(values)[mask])])
