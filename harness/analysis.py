"""Read a finished qsweep run directory and analyse it: tables, fronts, plots.

The functions here only read the files a run leaves behind (``trials.csv``,
``pareto.csv``, ``summary.json``, ``config.yaml``, ``models/``,
``sensitivity.csv``), so they work on a run from any machine. The report
(:mod:`harness.report`) and the notebooks in ``notebooks/`` are thin layers
over this module.

>>> from harness import analysis
>>> run = analysis.load_run("outputs/2024-01-01/12-00-00")        # doctest: +SKIP
>>> run.baseline                                                  # doctest: +SKIP
{'size_bytes': 331522, 'accuracy': 0.9694}
>>> run.best_within(0.01)                                        # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from harness.errors import QsweepError

__all__ = [
    "RunData",
    "load_run",
    "find_runs",
    "resolve_run_dirs",
    "newest_run",
    "complete_trials",
    "pareto_front",
    "best_within_drop",
    "hypervolume",
    "compare_runs",
    "layer_encodings",
    "encoding_label",
    "layer_encodings_from_column",
    "drop_column",
    "sensitivity_matrix",
    "sensitivity_ranking",
    "plot_pareto",
    "metric_by_nbits",
    "plot_metric_vs_nbits",
    "plot_layer_encodings",
    "plot_sensitivity",
]

#: Files that mark a directory as a qsweep run.
RUN_MARKERS = ("trials.csv", "sensitivity.csv")


# --------------------------------------------------------------------------- loading


@dataclass
class RunData:
    """Everything a run directory holds, loaded.

    Attributes:
        path: the run directory.
        trials: ``trials.csv`` (one row per trial; empty frame for a
            sensitivity-only run).
        pareto: ``pareto.csv`` (non-dominated trials sorted by size), or the
            front recomputed from ``trials`` when the file is absent.
        summary: ``summary.json`` as a dict (``{}`` when absent).
        config: ``config.yaml`` as a plain dict (``{}`` when absent).
        metric: name of the task-metric column (``accuracy`` unless the run
            used another metric).
        baseline: the float model's row: at least ``size_bytes`` and the metric.
        max_accuracy_drop: the accuracy target of the run, or None.
        sensitivity: ``sensitivity.csv`` when the run was a sensitivity run.
    """

    path: Path
    trials: pd.DataFrame
    pareto: pd.DataFrame
    summary: dict[str, Any]
    config: dict[str, Any]
    metric: str
    baseline: dict[str, Any]
    max_accuracy_drop: float | None
    sensitivity: pd.DataFrame | None = None
    maximize: bool = True

    @property
    def complete(self) -> pd.DataFrame:
        """The finished trials (see :func:`complete_trials`)."""
        return complete_trials(self.trials)

    def best_within(self, max_drop: float) -> pd.Series | None:
        """The smallest finished trial within ``max_drop`` of the float metric (None if none)."""
        if self.metric not in self.baseline:
            return None
        return best_within_drop(self.complete, self.metric, float(self.baseline[self.metric]), max_drop,
                                maximize=self.maximize)

    @property
    def name(self) -> str:
        """A short label for plots: the last two path parts (date/time under Hydra)."""
        parts = self.path.resolve().parts
        return "/".join(parts[-2:])

    @property
    def model_name(self) -> str:
        """The model the run swept (from the summary or config), or ``?``."""
        for src in (self.summary, self.summary.get("model") if isinstance(self.summary.get("model"), dict) else {}):
            if isinstance(src, dict):
                for key in ("model_name", "name"):
                    if isinstance(src.get(key), str):
                        return src[key]
        model = self.summary.get("model", self.config.get("model"))
        if isinstance(model, str):
            return model
        if isinstance(model, dict):
            for key in ("name", "zoo", "path"):
                if model.get(key):
                    return str(model[key])
        return "?"


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, pd.errors.ParserError) as exc:
        raise QsweepError(f"cannot read {path}: {exc}; is this a complete qsweep run directory?") from exc


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise QsweepError(f"cannot read {path}: {exc}; the file is not valid JSON") from exc
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
        data = OmegaConf.to_container(cfg, resolve=False)
    except Exception as exc:  # omegaconf raises several types
        raise QsweepError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _metric_name(summary: dict[str, Any], trials: pd.DataFrame) -> str:
    for key in ("metric", "metric_name", "task_metric"):
        val = summary.get(key)
        if isinstance(val, str) and val:
            return val
        if isinstance(val, dict) and isinstance(val.get("name"), str):
            return val["name"]
    if "accuracy" in trials.columns or trials.empty:
        return "accuracy"
    # A run whose metric is not accuracy names its column after it and has a
    # matching ``<metric>_drop`` column.
    for col in trials.columns:
        if col.endswith("_drop") and col[: -len("_drop")] in trials.columns:
            return col[: -len("_drop")]
    return "accuracy"


def _baseline(summary: dict[str, Any], metric: str) -> dict[str, Any]:
    base = summary.get("baseline")
    if not isinstance(base, dict):
        return {}
    out = dict(base)
    if metric not in out:
        for key in ("metric", "value", "task_metric"):
            if isinstance(out.get(key), (int, float)):
                out[metric] = out[key]
                break
    return out


def _target(summary: dict[str, Any], config: dict[str, Any]) -> float | None:
    for src in (summary, summary.get("target") if isinstance(summary.get("target"), dict) else {}):
        val = src.get("max_accuracy_drop") if isinstance(src, dict) else None
        if isinstance(val, (int, float)):
            return float(val)
    search = config.get("search")
    if isinstance(search, dict) and isinstance(search.get("max_accuracy_drop"), (int, float)):
        return float(search["max_accuracy_drop"])
    return None


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` holds the files of a qsweep run."""
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in RUN_MARKERS)


def load_run(path: str | Path) -> RunData:
    """Load a run directory written by ``qsweep`` (see :class:`RunData`).

    Raises:
        QsweepError: ``path`` is not a directory with ``trials.csv`` or
            ``sensitivity.csv`` (names the path and what was expected).
    """
    p = Path(path)
    if not p.is_dir():
        raise QsweepError(f"run directory {p} does not exist; pass the folder a qsweep run wrote (e.g. outputs/<date>/<time>)")
    if not is_run_dir(p):
        raise QsweepError(
            f"{p} is not a qsweep run directory: it has neither trials.csv nor sensitivity.csv "
            f"(found: {', '.join(sorted(x.name for x in p.iterdir())) or 'nothing'})"
        )
    trials = _read_csv(p / "trials.csv") if (p / "trials.csv").is_file() else pd.DataFrame()
    summary = _read_json(p / "summary.json")
    config = _read_yaml(p / "config.yaml")
    metric = _metric_name(summary, trials)
    if (p / "pareto.csv").is_file():
        pareto = _read_csv(p / "pareto.csv")
    elif not trials.empty and {"size_bytes", metric} <= set(trials.columns):
        pareto = pareto_front(complete_trials(trials), metric, maximize=summary.get("direction", "maximize") != "minimize")
    else:
        pareto = pd.DataFrame(columns=trials.columns)
    sens = _read_csv(p / "sensitivity.csv") if (p / "sensitivity.csv").is_file() else None
    baseline = _baseline(summary, metric)
    if not baseline and sens is not None and not sens.empty:
        for col, key in (("float_size_bytes", "size_bytes"), (f"float_{metric}", metric)):
            if col in sens.columns:
                baseline[key] = float(sens[col].iloc[0])
    return RunData(
        path=p,
        trials=trials,
        pareto=pareto,
        summary=summary,
        config=config,
        metric=metric,
        baseline=baseline,
        max_accuracy_drop=_target(summary, config),
        sensitivity=sens,
        maximize=summary.get("direction", "maximize") != "minimize",
    )


def find_runs(root: str | Path = "outputs") -> list[Path]:
    """Every run directory under ``root`` (recursively), oldest first (by mtime of its tables)."""
    r = Path(root)
    if not r.is_dir():
        return []
    runs = {f.parent for m in RUN_MARKERS for f in r.rglob(m)}

    def stamp(d: Path) -> float:
        return max((d / m).stat().st_mtime for m in RUN_MARKERS if (d / m).is_file())

    return sorted(runs, key=stamp)


def newest_run(root: str | Path = "outputs") -> Path:
    """The most recently written run directory under ``root``.

    Raises:
        QsweepError: no run directory exists there (says how to make one).
    """
    runs = find_runs(root)
    if not runs:
        raise QsweepError(f"no qsweep run directory under {Path(root).resolve()}; run `qsweep` first or set the run directory explicitly")
    return runs[-1]


def resolve_run_dirs(value: str | Path | Sequence[str | Path] | None, roots: Sequence[str | Path] = ("outputs", "../outputs")) -> list[Path]:
    """The run directories a notebook should read.

    ``value`` is one directory, several (a list, or one string joined with
    ``os.pathsep``), or None/empty for the newest run under the first existing
    folder of ``roots`` (``outputs/`` of the working folder, or of its parent
    when the notebook runs from ``notebooks/``).
    """
    import os

    if value is None or (isinstance(value, (str, Path)) and not str(value).strip()):
        for root in roots:
            if find_runs(root):
                return [newest_run(root)]
        raise QsweepError(f"no qsweep run directory under {', '.join(str(Path(r).resolve()) for r in roots)}; run `qsweep` first or set RUN_DIR")
    if isinstance(value, (str, Path)):
        parts = [x for x in str(value).split(os.pathsep) if x.strip()]
    else:
        parts = [str(x) for x in value]
    return [Path(x) for x in parts]


# --------------------------------------------------------------------------- tables


def complete_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that finished (state COMPLETE, or no state column), with a size."""
    df = trials
    if "state" in df.columns:
        df = df[df["state"].astype(str).str.upper().isin(["COMPLETE", "TRIALSTATE.COMPLETE"])]
    if "size_bytes" in df.columns:
        df = df[df["size_bytes"].notna()]
    return df


def pareto_front(df: pd.DataFrame, metric: str, size: str = "size_bytes", *, maximize: bool = True) -> pd.DataFrame:
    """Rows of ``df`` not dominated in (smaller ``size``, better ``metric``), sorted by size.

    The sweep's own rule (:func:`harness.pareto.front`): ties keep the lowest
    trial number, trials that reused another's result are left out.
    """
    from harness import pareto

    if df.empty:
        return df.copy()
    return pareto.front(df, metric, maximize=maximize, size=size)


def best_within_drop(
    df: pd.DataFrame, metric: str, baseline_metric: float, max_drop: float, size: str = "size_bytes",
    *, maximize: bool = True,
) -> pd.Series | None:
    """The smallest row whose ``metric`` is at most ``max_drop`` worse than ``baseline_metric`` (None if none)."""
    if df.empty:
        return None
    vals = df[metric].astype(float)
    drop = (baseline_metric - vals) if maximize else (vals - baseline_metric)
    ok = df[drop <= max_drop + 1e-12]
    if "reused_from" in ok.columns:
        ok = ok[ok["reused_from"].isna()]
    if ok.empty:
        return None
    keys = [size] + (["trial"] if "trial" in ok.columns else [])
    return ok.sort_values(keys, kind="mergesort").iloc[0]


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
        base_m = run.baseline.get(run.metric, np.nan)
        base_s = run.baseline.get("size_bytes", np.nan)
        row: dict[str, Any] = {
            "run": run.name,
            "model": run.model_name,
            "search": search_kind(run),
            "trials": len(done),
            "pareto_points": len(run.pareto),
            f"float_{run.metric}": base_m,
            "float_size_kb": base_s / 1024 if np.isfinite(base_s) else np.nan,
        }
        if np.isfinite(base_s) and not done.empty and run.maximize:
            row["hypervolume"] = hypervolume(done["size_bytes"], done[run.metric], base_s)
        for d in drops:
            best = best_within_drop(done, run.metric, base_m, d, maximize=run.maximize) if np.isfinite(base_m) else None
            row[f"smallest_kb_within_{d:g}"] = best["size_bytes"] / 1024 if best is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def search_kind(run: RunData) -> str:
    search = run.config.get("search")
    if isinstance(search, dict):
        for key in ("kind", "name", "type", "sampler"):
            if isinstance(search.get(key), str):
                return search[key]
    val = run.summary.get("search")
    if isinstance(val, str):
        return val
    if isinstance(val, dict) and isinstance(val.get("kind"), str):
        return val["kind"]
    return "?"


# --------------------------------------------------------------------------- per-layer encodings


def encoding_label(encoding: str, nbits: int) -> str:
    """Short cell label for an encoding: ``fp32``, ``fp16``, ``lin8``, ``lut4``, ``int8``."""
    import quantizer

    return quantizer.encoding_label(encoding, nbits)


def layer_encodings(model: Any) -> pd.DataFrame:
    """Per layer of a model: the encoding of its largest weight tensor.

    Returns a frame with columns ``layer, layer_type, encoding, nbits, label,
    tensors, stored_bytes, count`` in model layer order. ``label`` is
    :func:`encoding_label` and gets a ``*`` when the layer's tensors do not all
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
        row["labels"].add(encoding_label(t.encoding, t.nbits))
        row["tensors"] += 1
        row["stored_bytes"] += t.stored_bytes
        row["count"] += t.count
    out = []
    for row in rows.values():
        label = encoding_label(row["encoding"], row["nbits"])
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
    ``{"layer.field": "lut4", ...}``), when the model file is not at hand.

    A layer's label is that of its ``weights`` tensor (else its first one),
    with ``*`` when its tensors differ, as in :func:`layer_encodings`.
    """
    import re

    cols = ["layer", "nbits", "label"]
    if not isinstance(value, str) or not value.strip():
        return pd.DataFrame(columns=cols)
    try:
        per = json.loads(value)
    except json.JSONDecodeError:
        return pd.DataFrame(columns=cols)
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


def drop_column(sens: pd.DataFrame) -> str:
    """The metric-drop column of a sensitivity table (``<metric>_drop``)."""
    if "metric_drop" in sens.columns:
        return "metric_drop"
    for col in sens.columns:
        if col.endswith("_drop"):
            return col
    raise QsweepError(f"sensitivity table has no <metric>_drop column (columns: {', '.join(map(str, sens.columns))})")


def sensitivity_matrix(sens: pd.DataFrame, value: str | None = None) -> pd.DataFrame:
    """``sensitivity.csv`` pivoted to layers (rows, in file order) x codecs (columns, in file order)."""
    value = value or drop_column(sens)
    unit = "unit" if "unit" in sens.columns else "layer"
    rows = list(dict.fromkeys(sens[unit]))
    cols = list(dict.fromkeys(sens["codec"]))
    mat = sens.pivot_table(index=unit, columns="codec", values=value, aggfunc="first", sort=False)
    return mat.reindex(index=rows, columns=cols)


def sensitivity_ranking(sens: pd.DataFrame, value: str | None = None) -> pd.DataFrame:
    """Layers ranked from most to least sensitive.

    A layer's score is its mean ``value`` (metric drop) over codecs, ties
    broken by the worst (max) drop then by the lowest mean SNR.
    """
    value = value or drop_column(sens)
    unit = "unit" if "unit" in sens.columns else "layer"
    agg: dict[str, Any] = {value: ["mean", "max"]}
    if "snr_db" in sens.columns:
        agg["snr_db"] = "mean"
    g = sens.groupby(unit, sort=False).agg(agg)
    g.columns = ["mean_drop", "max_drop"] + (["mean_snr_db"] if "snr_db" in sens.columns else [])
    keys, asc = ["mean_drop", "max_drop"], [False, False]
    if "mean_snr_db" in g.columns:
        keys.append("mean_snr_db")
        asc.append(True)
    g = g.sort_values(keys, ascending=asc, kind="mergesort").reset_index()
    g.insert(0, "rank", np.arange(1, len(g) + 1))
    return g


# --------------------------------------------------------------------------- plots

_MARKERS = {16: "s", 8: "o", 7: "v", 6: "^", 5: "<", 4: "D", 3: ">", 2: "p", 1: "X"}


def _marker(nbits: Any) -> str:
    try:
        return _MARKERS.get(int(nbits), "h")
    except (TypeError, ValueError):
        return "*"


def _mode_colors(modes: Iterable[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(sorted(set(modes)))}


def plot_pareto(ax: Any, run: RunData, *, label_prefix: str = "", front_color: str = "black", show_trials: bool = True) -> None:
    """Size (KB, log axis) vs task metric: trials coloured by mode and shaped by
    nbits, the Pareto front as a step line, the float baseline and the target."""
    from matplotlib.lines import Line2D

    metric = run.metric
    done = complete_trials(run.trials)
    if show_trials and not done.empty:
        modes = done["mode"].fillna("?").astype(str) if "mode" in done.columns else pd.Series("?", index=done.index)
        nbits = done["nbits"] if "nbits" in done.columns else pd.Series(np.nan, index=done.index)
        colors = _mode_colors(modes)
        for (mode, nb), grp in done.groupby([modes, nbits.fillna(-1)], sort=True):
            ax.scatter(
                grp["size_bytes"] / 1024,
                grp[metric],
                color=colors[mode],
                marker=_marker(nb if nb != -1 else None),
                s=28,
                alpha=0.75,
                edgecolors="none",
            )
        handles = [Line2D([], [], color=c, marker="o", ls="", label=f"{label_prefix}{m}") for m, c in colors.items()]
        nb_vals = sorted({int(v) for v in nbits.dropna().unique()}, reverse=True)
        handles += [Line2D([], [], color="gray", marker=_marker(v), ls="", label=f"{v} bit") for v in nb_vals]
        if nbits.isna().any():
            handles.append(Line2D([], [], color="gray", marker="*", ls="", label="mixed"))
    else:
        handles = []
    front = run.pareto if not run.pareto.empty else pareto_front(done, metric, maximize=run.maximize)
    if not front.empty:
        f = front.sort_values("size_bytes")
        xs = list(f["size_bytes"] / 1024)
        ys = list(f[metric])
        base_s = run.baseline.get("size_bytes")
        if base_s:
            xs.append(base_s / 1024)
            ys.append(ys[-1])
        (line,) = ax.step(xs, ys, where="post", color=front_color, lw=1.5, label=f"{label_prefix}Pareto front")
        handles.append(line)
    base_m = run.baseline.get(metric)
    base_s = run.baseline.get("size_bytes")
    if base_m is not None and base_s:
        h = ax.scatter([base_s / 1024], [base_m], marker="*", s=220, color="gold", edgecolors="black", zorder=5, label=f"{label_prefix}float baseline")
        handles.append(h)
        if run.max_accuracy_drop is not None:
            t = ax.axhline(base_m - run.max_accuracy_drop, color="crimson", ls="--", lw=1, label=f"target: drop <= {run.max_accuracy_drop:g}")
            handles.append(t)
    ax.set_xscale("log")
    ax.set_xlabel("model size (KB, log scale)")
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="lower right", ncol=2)


def metric_by_nbits(run: RunData) -> pd.DataFrame:
    """Best task metric of the uniform trials: rows nbits (descending), columns mode."""
    done = complete_trials(run.trials)
    if done.empty or "nbits" not in done.columns or "mode" not in done.columns:
        return pd.DataFrame()
    d = done[done["nbits"].notna()]
    if d.empty:
        return pd.DataFrame()
    t = d.pivot_table(index="nbits", columns=d["mode"].astype(str), values=run.metric, aggfunc="max")
    t.index = t.index.astype(int)
    return t.sort_index(ascending=False)


def plot_metric_vs_nbits(ax: Any, run: RunData) -> None:
    """Best task metric per nbits, one line per mode (uniform trials only)."""
    table = metric_by_nbits(run)
    metric = run.metric
    if table.empty:
        ax.text(0.5, 0.5, "no uniform trials", ha="center", va="center", transform=ax.transAxes)
        return
    colors = _mode_colors(table.columns)
    for mode in table.columns:
        best = table[mode].dropna()
        ax.plot(best.index, best.values, marker="o", color=colors[mode], label=mode)
    base_m = run.baseline.get(metric)
    if base_m is not None:
        ax.axhline(base_m, color="gold", ls="-", lw=2, label="float baseline")
    ax.set_xlabel("nbits")
    ax.set_ylabel(f"best {metric}")
    ax.invert_xaxis()
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def plot_layer_encodings(ax: Any, encodings: pd.DataFrame, row_labels: Sequence[str]) -> Any:
    """Heatmap: one row per model, one column per layer, colour = bits, text = encoding label.

    ``encodings`` has one row per (model, layer) with columns ``model``
    (index into ``row_labels``), ``layer``, ``nbits`` and ``label``.
    """
    layers = list(dict.fromkeys(encodings["layer"]))
    n_models = len(row_labels)
    bits = np.full((n_models, len(layers)), np.nan)
    text = [["" for _ in layers] for _ in range(n_models)]
    col = {name: j for j, name in enumerate(layers)}
    for r in encodings.itertuples(index=False):
        j = col[r.layer]
        bits[r.model, j] = float(r.nbits)
        text[r.model][j] = r.label
    log_bits = np.log2(np.clip(bits, 1, 32))
    im = ax.imshow(log_bits, cmap="viridis", vmin=0, vmax=5, aspect="auto")
    for i in range(n_models):
        for j in range(len(layers)):
            if text[i][j]:
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=6, color="white" if log_bits[i, j] < 3.5 else "black")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n_models))
    ax.set_yticklabels(row_labels, fontsize=7)
    ax.set_xlabel("layer (encoding of its largest weight tensor; * = its tensors differ)")
    return im


def plot_sensitivity(ax: Any, sens: pd.DataFrame, value: str | None = None) -> Any:
    """Heatmap layers x codecs of ``value`` (metric drop by default), annotated."""
    value = value or drop_column(sens)
    mat = sensitivity_matrix(sens, value)
    data = mat.to_numpy(dtype=float)
    finite = data[np.isfinite(data)]
    vmax = max(float(finite.max()) if finite.size else 0.0, 1e-6)
    if value.endswith("_drop"):
        # Drops: white at no change, red as the metric falls (improvements stay white).
        im = ax.imshow(data, cmap="Reds", vmin=0.0, vmax=vmax, aspect="auto")
    else:
        im = ax.imshow(data, cmap="viridis", aspect="auto")
    if data.size <= 600:
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = data[i, j]
                if np.isfinite(v):
                    dark = value.endswith("_drop") and v > 0.6 * vmax
                    ax.text(j, i, f"{v:.3f}" if value.endswith("_drop") else f"{v:.0f}", ha="center", va="center",
                            fontsize=6, color="white" if dark else "black")
    ax.set_xticks(range(len(mat.columns)))
    ax.set_xticklabels(mat.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(mat.index)))
    ax.set_yticklabels(mat.index, fontsize=7)
    ax.set_xlabel("codec")
    ax.set_ylabel("layer")
    return im
