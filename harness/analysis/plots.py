"""Plots of loaded runs on a caller's matplotlib axes: size vs metric (with 95% intervals), metric vs nbits, heatmaps.

Each ``plot_*`` draws on the ``ax`` it is given and returns the image (for a
colour bar) where there is one; :mod:`harness.report` and the notebooks make
the figures.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from harness import rundir
from harness.analysis.runs import RunData, complete_trials
from harness.analysis.tables import metric_by_nbits, sensitivity_matrix

__all__ = ["plot_pareto", "plot_metric_vs_nbits", "plot_layer_encodings", "plot_sensitivity"]

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


def _yerr(rows: Any, metric: str) -> np.ndarray | None:
    """Error bars (below, above) of the metric's 95% interval (:func:`harness.rundir.ci_columns`), or None."""
    lo_col, hi_col = rundir.ci_columns(metric)
    get = rows.get if hasattr(rows, "get") else (lambda k: None)
    lo, hi, v = get(lo_col), get(hi_col), get(metric)
    if lo is None or hi is None or v is None:
        return None
    lo, hi, v = (np.atleast_1d(np.asarray(x, dtype=float)) for x in (lo, hi, v))
    if not np.isfinite(lo).any():
        return None
    return np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])


def plot_pareto(ax: Any, run: RunData, *, label_prefix: str = "", front_color: str = "black", show_trials: bool = True) -> None:
    """Size (KB, log axis) vs task metric: trials coloured by mode and shaped by
    nbits with their 95% intervals as error bars, the Pareto front as a step line,
    the float baseline (with its interval) and the target."""
    from matplotlib.lines import Line2D

    metric = run.metric
    done = complete_trials(run.trials)
    handles: list[Any] = []
    if show_trials and not done.empty:
        modes = done["mode"].fillna("?").astype(str)
        nbits = done["nbits"]
        colors = _mode_colors(modes)
        for (mode, nb), grp in done.groupby([modes, nbits.fillna(-1)], sort=True):
            err = _yerr(grp, metric)
            if err is not None:
                ax.errorbar(grp["size_bytes"] / 1024, grp[metric], yerr=err, fmt="none", ecolor=colors[mode],
                            elinewidth=0.8, alpha=0.45, capsize=0)
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
    base_m = run.baseline[metric]
    base_s = run.baseline["size_bytes"]
    if not run.pareto.empty:
        f = run.pareto.sort_values("size_bytes")
        xs = list(f["size_bytes"] / 1024) + [base_s / 1024]
        ys = list(f[metric])
        ys.append(ys[-1])
        (line,) = ax.step(xs, ys, where="post", color=front_color, lw=1.5, label=f"{label_prefix}Pareto front")
        handles.append(line)
        err = _yerr(f, metric)
        if err is not None:
            bars = ax.errorbar(f["size_bytes"] / 1024, f[metric], yerr=err, fmt="none", ecolor=front_color,
                               elinewidth=1.0, capsize=3, label=f"{label_prefix}95% interval (front)")
            handles.append(bars)
    err = _yerr(run.baseline, metric)
    if err is not None and err.any():
        ax.errorbar([base_s / 1024], [base_m], yerr=err, fmt="none", ecolor="darkgoldenrod", elinewidth=1.2,
                    capsize=4, zorder=4)
    h = ax.scatter([base_s / 1024], [base_m], marker="*", s=220, color="gold", edgecolors="black", zorder=5,
                   label=f"{label_prefix}float baseline")
    handles.append(h)
    if run.max_accuracy_drop is not None:
        t = ax.axhline(base_m - run.max_accuracy_drop, color="crimson", ls="--", lw=1,
                       label=f"target: drop <= {run.max_accuracy_drop:g}")
        handles.append(t)
    ax.set_xscale("log")
    ax.set_xlabel("model size (KB, log scale)")
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="lower right", ncol=2)


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
    ax.axhline(run.baseline[metric], color="gold", ls="-", lw=2, label="float baseline")
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
    """Heatmap units x codecs of ``value`` (metric drop by default), annotated."""
    drop = rundir.sensitivity_drop_column(sens.columns)
    value = value or drop
    is_drop = value == drop
    mat = sensitivity_matrix(sens, value)
    data = mat.to_numpy(dtype=float)
    finite = data[np.isfinite(data)]
    vmax = max(float(finite.max()) if finite.size else 0.0, 1e-6)
    if is_drop:
        # Drops: white at no change, red as the metric falls (improvements stay white).
        im = ax.imshow(data, cmap="Reds", vmin=0.0, vmax=vmax, aspect="auto")
    else:
        im = ax.imshow(data, cmap="viridis", aspect="auto")
    if data.size <= 600:
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = data[i, j]
                if np.isfinite(v):
                    dark = is_drop and v > 0.6 * vmax
                    ax.text(j, i, f"{v:.3f}" if is_drop else f"{v:.0f}", ha="center", va="center",
                            fontsize=6, color="white" if dark else "black")
    ax.set_xticks(range(len(mat.columns)))
    ax.set_xticklabels(mat.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(mat.index)))
    ax.set_yticklabels(mat.index, fontsize=7)
    ax.set_xlabel("codec")
    ax.set_ylabel("layer")
    return im
