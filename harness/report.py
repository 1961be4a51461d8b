"""Pictures and a self-contained HTML report of a finished qsweep run.

``write_report(run_dir)`` (also ``qsweep-report RUN_DIR`` or
``python -m harness.report RUN_DIR``) reads the files a run left in its
directory and writes, into the same directory (``qsweep-report --study NAME
--storage URL OUT_DIR`` rebuilds a whole run directory from the study alone,
:mod:`harness.rebuild`):

* ``pareto.png`` — model size (KB, log axis) vs the task metric: every trial
  a point coloured by mode and shaped by nbits, the Pareto front as a step
  line, the float baseline as a star, the accuracy target (if set) as a line;
* ``layers.png`` — for each Pareto-optimal model, the encoding each layer
  got (read from the saved models in ``models/``);
* ``sensitivity.png`` — for a sensitivity run, the units x codecs heatmap of
  ``sensitivity.csv`` (this module is the only one that draws it);
* ``report.html`` — one file with the figures inlined as base64 PNG: the answer
  first (float model, best within the target, trial counts), the run and its
  baseline, the best model within the accuracy target, the Pareto table, the
  per-layer encodings and every trial (evaluated, reused, pruned, failed); the
  sections are :mod:`harness.report_sections`.

>>> from harness.report import write_report
>>> paths = write_report("outputs/2024-01-01/12-00-00")    # doctest: +SKIP
>>> sorted(paths)                                           # doctest: +SKIP
['layers', 'pareto', 'report']
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

# matplotlib logs "generated new fontManager" at INFO the first time it runs on a machine (a fresh HOME),
# which the CLI's INFO log would show as if it were a step of the sweep; its warnings still show.
logging.getLogger("matplotlib").setLevel(logging.WARNING)
from matplotlib.figure import Figure  # noqa: E402

from harness import analysis, rundir
from harness import report_sections as html_sections
from harness.errors import USER_ERRORS
from harness.secrets import mask
from harness.writes import writing

__all__ = ["write_report", "main", "pareto_figure", "layers_figure", "sensitivity_figure", "resolve_model_file"]

log = logging.getLogger(__name__)

def resolve_model_file(run_dir: Path, value: Any) -> Path | None:
    """The saved model a ``model_file`` cell names (relative to the run directory,
    :func:`harness.rundir.model_file`), or None when the cell is empty or the file is gone."""
    if not isinstance(value, str):  # NaN: no model saved for this trial
        return None
    path = run_dir / value
    return path if path.is_file() else None


def _figure(figsize: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize, dpi=110)
    return fig, fig.subplots()


def pareto_figure(run: analysis.RunData) -> Figure:
    """The size-vs-metric figure of ``pareto.png``."""
    fig, ax = _figure((8, 5.5))
    analysis.plot_pareto(ax, run)
    title = f"{run.model_name}: size vs {run.metric} ({len(analysis.complete_trials(run.trials))} trials)"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _pareto_layer_rows(run: analysis.RunData) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Per-layer encodings of every Pareto model that has a saved file.

    Returns (rows for :func:`analysis.plot_layer_encodings`, row labels,
    notes about models that could not be read).
    """
    frames, labels, notes = [], [], []
    for _, row in run.pareto.sort_values("size_bytes").iterrows():
        path = resolve_model_file(run.path, row["model_file"])
        tag = f"trial {row['trial']}"
        enc = None
        if path is not None:
            try:
                enc = analysis.layer_encodings(path)
            except USER_ERRORS as exc:
                notes.append(f"{tag}: cannot read {path.name}: {exc}")
        if enc is None:
            enc = analysis.layer_encodings_from_column(row["layer_encodings"])
            if enc.empty:
                if path is None:
                    notes.append(f"{tag}: no saved model file ({row['model_file']!r}) and no layer_encodings")
                continue
            notes.append(f"{tag}: encodings from trials.csv (layer_encodings), the model file is not in "
                         f"{rundir.MODELS}/")
        enc["model"] = len(labels)
        frames.append(enc)
        labels.append(f"{tag}: {row['size_bytes'] / 1024:.1f} KB, {run.metric} {row[run.metric]:.4f}")
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "layer", "nbits", "label"])
    return rows, labels, notes


def layers_figure(run: analysis.RunData) -> tuple[Figure, list[str]]:
    """The per-layer encodings figure of ``layers.png`` and notes on missing models."""
    rows, labels, notes = _pareto_layer_rows(run)
    n_layers = rows["layer"].nunique() if not rows.empty else 1
    # room under the axes for the rotated layer names (converted models have long ones)
    names = 0.0 if rows.empty else min(5.0, 0.06 * float(rows["layer"].astype(str).str.len().max()))
    fig, ax = _figure((max(6.0, 0.45 * n_layers + 3.5), max(2.5, 0.35 * len(labels) + 2.0) + names))
    if rows.empty:
        ax.text(0.5, 0.5, "no Pareto-optimal model files to show", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        im = analysis.plot_layer_encodings(ax, rows, labels)
        cbar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
        cbar.set_ticks([0, 1, 2, 3, 4, 5])
        cbar.set_ticklabels(["1", "2", "4", "8", "16", "32"])
        cbar.set_label("bits per weight", fontsize=7)
    ax.set_title(f"{run.model_name}: per-layer encoding of the Pareto-optimal models\n(smallest first)", fontsize=10)
    fig.tight_layout()
    return fig, notes


def sensitivity_figure(run: analysis.RunData) -> Figure:
    """The heatmap of ``sensitivity.png``: units x codecs, the metric drop of quantizing one unit alone."""
    sens = run.sensitivity
    assert sens is not None, "sensitivity_figure needs a sensitivity run"
    unit = run.summary["search"]["unit"]  # layer or tensor (SensitivitySearch.describe)
    mat = analysis.sensitivity_matrix(sens)
    fig, ax = _figure((max(5.0, 0.7 * mat.shape[1] + 3.0), max(3.0, 0.3 * mat.shape[0] + 1.8)))
    im = analysis.plot_sensitivity(ax, sens)
    cbar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01)
    cbar.set_label(f"metric drop (quantizing that {unit} alone)", fontsize=7)
    ax.set_title(f"{run.model_name}: {run.metric} drop when one {unit} alone is quantized", fontsize=10)
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    with writing(path):
        path.write_bytes(data)
    return data


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Write ``pareto.png``, ``layers.png`` (and ``sensitivity.png`` for a
    sensitivity run) and ``report.html`` into ``run_dir``.

    Returns:
        ``{"pareto": ..., "layers": ..., "sensitivity": ..., "report": ...}``
        (only the files written).

    Raises:
        QsweepError: ``run_dir`` is not a qsweep run directory.
    """
    run = analysis.load_run(run_dir)
    out: dict[str, Path] = {}
    metric = run.metric
    title = f"qsweep report: {run.model_name}"
    sections: list[str] = []
    if not run.trials.empty:
        sections.append(html_sections.headline(run))
    sections.append(html_sections.run_section(run))

    if not run.trials.empty and analysis.search_kind(run) != "sensitivity":
        data = _save(pareto_figure(run), run.path / rundir.PARETO_PNG)
        out["pareto"] = run.path / rundir.PARETO_PNG
        sections.append(html_sections.best_section(run))
        sections.append(html_sections.hypervolume_section(run))
        sections.append(f"<h2>Size vs {html.escape(metric)}</h2>" + _img(data, "Pareto front") +
                        '<p class="note">Every trial, coloured by mode; bars: 95% intervals on the test set; the step '
                        "line is the Pareto front; the star is the float model"
                        + ("; the dashed line is the accuracy target" if run.max_accuracy_drop is not None else "")
                        + ".</p>")
        sections.append(html_sections.front_section(run))
        fig, notes = layers_figure(run)
        data = _save(fig, run.path / rundir.LAYERS_PNG)
        out["layers"] = run.path / rundir.LAYERS_PNG
        note_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
        sections.append("<h2>Per-layer encodings of the Pareto-optimal models</h2>" + _img(data, "layer encodings")
                        + note_html)
    if run.sensitivity is not None and not run.sensitivity.empty:
        sens = run.sensitivity
        data = _save(sensitivity_figure(run), run.path / rundir.SENSITIVITY_PNG)
        out["sensitivity"] = run.path / rundir.SENSITIVITY_PNG
        rank = analysis.sensitivity_ranking(sens)
        sections.append("<h2>Per-layer sensitivity</h2>" + _img(data, "sensitivity heatmap"))
        sections.append("<h2>Sensitivity ranking (most sensitive first)</h2><div class='scroll'>"
                        + rank.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0) + "</div>")
    sections.append(html_sections.trials_section(run))
    subtitle = (f"{analysis.search_kind(run)} search over {len(run.trials)} trial(s) on {run.summary['data']['name']} "
                f"({run.summary['evaluation']['n']} samples), task metric {metric}")
    page = html_sections.page(title, subtitle, sections)
    with writing(run.path / rundir.REPORT_HTML) as path:
        path.write_text(page, encoding="utf-8")
    out["report"] = run.path / rundir.REPORT_HTML
    return out


def main(argv: list[str] | None = None) -> int:
    """``qsweep-report RUN_DIR`` (the report of a run) or ``qsweep-report --study NAME --storage URL OUT_DIR``
    (the whole run directory, rebuilt from the study alone: :func:`harness.rebuild.rebuild`)."""
    parser = argparse.ArgumentParser(
        prog="qsweep-report",
        description="Write pareto.png, layers.png and report.html into a qsweep run directory, or with --study "
                    "rebuild a whole run directory (trials.csv, pareto.csv, summary.json, models/, the report) "
                    "from the study alone.",
        epilog="Rebuilding needs the float model: the file must still exist at the path recorded in the study, or "
               "be given with --model (its sha256 is checked against the study's). Each Pareto model is re-created "
               "and checked byte for byte against the sha256 recorded when it was evaluated. The password can come "
               "from QSWEEP_STORAGE_PASSWORD (or PGPASSWORD / ~/.pgpass) instead of the URL.")
    parser.add_argument("run_dir", nargs="?", default=None,
                        help="run directory (default: the newest run under ./outputs); with --study: OUT_DIR, "
                             "the folder to write")
    parser.add_argument("--study", help="rebuild the run directory of this study (needs --storage and OUT_DIR)")
    parser.add_argument("--storage", help="the study's storage URL, e.g. postgresql://user@host:5432/db or "
                                          "sqlite:///outputs/qsweep.db")
    parser.add_argument("--model", help="the float .mlmodel file, when it is not at the path recorded in the study")
    parser.add_argument("--no-report", action="store_true", help="with --study: skip the figures and report.html")
    parser.add_argument("--retry-s", type=float, default=120.0,
                        help="seconds to ride out a database outage (storage.retry_s; default 120)")
    args = parser.parse_args(argv)
    if args.study is not None and (not args.storage or not args.run_dir):
        parser.error("--study needs --storage URL and OUT_DIR")
    if args.study is None and (args.storage or args.model or args.no_report):
        parser.error("--storage, --model and --no-report go with --study NAME")
    try:
        if args.study is not None:
            from harness.rebuild import rebuild

            result = rebuild(args.study, args.storage, args.run_dir, model_path=args.model,
                             report=not args.no_report, retry_s=args.retry_s)
            paths = dict(result.files)
        else:
            run_dir = Path(args.run_dir) if args.run_dir else analysis.newest_run("outputs")
            paths = write_report(run_dir)
    except USER_ERRORS as exc:
        print(f"qsweep-report: error: {mask(exc)}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind:12s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
