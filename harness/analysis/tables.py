"""Table algorithms over loaded runs: hypervolume, run comparison, per-layer encodings, sensitivity.

Everything here takes :class:`~harness.analysis.runs.RunData` or its tables
and returns a DataFrame or a number; the Pareto front and "the smallest model
within a drop" are :mod:`harness.pareto`'s (one rule, called here).
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from harness import pareto, rundir
from harness.analysis.runs import RunData, complete_trials, search_kind
from harness.errors import QsweepError

__all__ = ["hypervolume", "compare_runs", "metric_by_nbits", "layer_encodings",
           "layer_encodings_from_column", "sensitivity_matrix", "sensitivity_ranking"]


def hypervolume(
    sizes: Sequence[float] | np.ndarray,
    metrics: Sequence[float] | np.ndarray,
    ref_size: float,
    ref_metric: float = 0.0,
) -> float:
    """2-D hypervolume of points (size to minimise, metric to maximise).

    Sizes are normalised by ``ref_size`` (the float model's size), so the
    reference point is ``(1, ref_metric)`` and the result lies in
    ``[0, max metric - ref_metric]``. Points outside the reference box
    (larger than the float model, or below ``ref_metric``) add nothing.
    """
    if ref_size <= 0:
        raise ValueError(f"ref_size must be positive, got {ref_size}")
    pts = sorted(
        (float(s) / ref_size, float(m))
        for s, m in zip(sizes, metrics)
        if np.isfinite(s) and np.isfinite(m) and s / ref_size < 1.0 and m > ref_metric
    )
    hv = 0.0
    best = ref_metric
    # Sweep from small to large size: each point adds the slab from its size to
    # the reference size, height = improvement over the best metric so far.
    for s, m in pts:
        if m > best:
            hv += (1.0 - s) * (m - best)
            best = m
    return hv


def compare_runs(runs: Iterable[RunData], drops: Sequence[float] = (0.0, 0.005, 0.01, 0.02)) -> pd.DataFrame:
    """One row per run: float baseline, Pareto size, hypervolume, smallest model within each drop.

    Hypervolumes use each run's own float size and zero metric as the
    reference point (normalised size), so runs on the same model compare.
    """
    rows = []
    for run in runs:
        done = complete_trials(run.trials)
        base_m = run.baseline[run.metric]
        base_s = run.baseline["size_bytes"]
        row: dict[str, Any] = {
            "run": run.name,
            "model": run.model_name,
            "search": search_kind(run),
            "trials": len(done),
            "pareto_points": len(run.pareto),
            f"float_{run.metric}": base_m,
            "float_size_kb": base_s / 1024,
        }
        if not done.empty and run.maximize:
            row["hypervolume"] = hypervolume(done["size_bytes"], done[run.metric], base_s)
        for d in drops:
            best = pareto.best_within(done, run.drop_column, d)
            row[f"smallest_kb_within_{d:g}"] = best["size_bytes"] / 1024 if best is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def metric_by_nbits(run: RunData) -> pd.DataFrame:
    """Best task metric of the uniform trials: rows nbits (descending), columns mode."""
    done = complete_trials(run.trials)
    d = done[done["nbits"].notna()]
    if d.empty:
        return pd.DataFrame()
    t = d.pivot_table(index="nbits", columns=d["mode"].astype(str), values=run.metric, aggfunc="max")
    t.index = t.index.astype(int)
    return t.sort_index(ascending=False)


# --------------------------------------------------------------------------- per-layer encodings


def layer_encodings(model: Any) -> pd.DataFrame:
    """Per layer of a model: the encoding of its largest weight tensor.

    Returns a frame with columns ``layer, layer_type, encoding, nbits, label,
    tensors, stored_bytes, count`` in model layer order. ``label`` is
    :func:`quantizer.encoding_label` and gets a ``*`` when the layer's tensors do not all
    share that encoding (e.g. a quantized weight with a float bias).
    """
    import quantizer

    rows: dict[str, dict[str, Any]] = {}
    for t in quantizer.weight_tensors(model):
        row = rows.get(t.layer)
        if row is None:
            row = rows[t.layer] = {
                "layer": t.layer,
                "layer_type": t.layer_type,
                "encoding": t.encoding,
                "nbits": t.nbits,
                "largest": t.count,
                "labels": set(),
                "tensors": 0,
                "stored_bytes": 0,
                "count": 0,
            }
        elif t.count > row["largest"]:
            row.update(encoding=t.encoding, nbits=t.nbits, largest=t.count)
        row["labels"].add(quantizer.encoding_label(t.encoding, t.nbits))
        row["tensors"] += 1
        row["stored_bytes"] += t.stored_bytes
        row["count"] += t.count
    out = []
    for row in rows.values():
        label = quantizer.encoding_label(row["encoding"], row["nbits"])
        out.append(
            {
                "layer": row["layer"],
                "layer_type": row["layer_type"],
                "encoding": row["encoding"],
                "nbits": row["nbits"],
                "label": label + ("*" if len(row["labels"]) > 1 else ""),
                "tensors": row["tensors"],
                "stored_bytes": row["stored_bytes"],
                "count": row["count"],
            }
        )
    return pd.DataFrame(out, columns=["layer", "layer_type", "encoding", "nbits", "label", "tensors", "stored_bytes", "count"])


def layer_encodings_from_column(value: Any) -> pd.DataFrame:
    """Per-layer encodings from a trials.csv ``layer_encodings`` cell (JSON
    ``{"layer.field": "lut4", ...}``; empty for a trial that was not evaluated),
    when the model file is not at hand.

    A layer's label is that of its ``weights`` tensor (else its first one),
    with ``*`` when its tensors differ, as in :func:`layer_encodings`.

    Raises:
        QsweepError: the cell is not a JSON object.
    """
    cols = ["layer", "nbits", "label"]
    if not isinstance(value, str):  # NaN: the trial has no encodings
        return pd.DataFrame(columns=cols)
    try:
        per = json.loads(value)
    except json.JSONDecodeError as exc:
        raise QsweepError(f"a layer_encodings cell of trials.csv is not JSON ({exc}): {value[:80]!r}") from exc
    if not isinstance(per, dict):
        raise QsweepError(f"a layer_encodings cell of trials.csv is not a JSON object: {value[:80]!r}")
    layers: dict[str, dict[str, str]] = {}
    for key, label in per.items():
        layer, _, fld = str(key).rpartition(".") if "." in str(key) else (str(key), "", "")
        # Field paths may hold dots (weightParams.0.x): split at the first known field start.
        m = re.match(r"^(.*?)\.((?:weightParams|activations|weights|bias|gamma|beta|mean|variance|scale|data).*)$", str(key))
        if m:
            layer, fld = m.group(1), m.group(2)
        layers.setdefault(layer, {})[fld] = str(label)
    rows = []
    for layer, fields in layers.items():
        label = fields.get("weights", next(iter(fields.values())))
        digits = re.findall(r"\d+", label)
        rows.append({"layer": layer, "nbits": int(digits[-1]) if digits else 32,
                     "label": label + ("*" if len(set(fields.values())) > 1 else "")})
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- sensitivity


def sensitivity_matrix(sens: pd.DataFrame, value: str | None = None) -> pd.DataFrame:
    """``sensitivity.csv`` pivoted to units (rows, in file order) x codecs (columns, in file order).

    ``value``: the column to show (default: the metric drop, :func:`harness.rundir.sensitivity_drop_column`).
    """
    value = value or rundir.sensitivity_drop_column(sens.columns)
    rows = list(dict.fromkeys(sens["unit"]))
    cols = list(dict.fromkeys(sens["codec"]))
    mat = sens.pivot_table(index="unit", columns="codec", values=value, aggfunc="first", sort=False)
    return mat.reindex(index=rows, columns=cols)


def sensitivity_ranking(sens: pd.DataFrame, value: str | None = None) -> pd.DataFrame:
    """Units (layers or tensors) ranked from most to least sensitive.

    A unit's score is its mean ``value`` (metric drop by default) over codecs,
    ties broken by the worst (max) drop then by the lowest mean SNR.
    """
    value = value or rundir.sensitivity_drop_column(sens.columns)
    g = sens.groupby("unit", sort=False).agg({value: ["mean", "max"], "snr_db": "mean"})
    g.columns = ["mean_drop", "max_drop", "mean_snr_db"]
    g = g.sort_values(["mean_drop", "max_drop", "mean_snr_db"], ascending=[False, False, True], kind="mergesort")
    g = g.reset_index()
    g.insert(0, "rank", np.arange(1, len(g) + 1))
    return g
