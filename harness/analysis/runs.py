"""The run-directory reader: load a finished qsweep run directory, find the runs under a folder.

It reads what the writer (:mod:`harness.outputs`) writes, by the names of the
schema (:mod:`harness.rundir`), so it works on a run from any machine. A
directory that lacks a file or a summary.json key of the schema is refused
with a message that says which.

>>> from harness.analysis import load_run
>>> run = load_run("outputs/2024-01-01/12-00-00")        # doctest: +SKIP
>>> run.metric, run.baseline["size_bytes"]                # doctest: +SKIP
('accuracy', 331522)
>>> run.best_within(0.01)                                 # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness import pareto, rundir
from harness.errors import QsweepError

__all__ = ["RunData", "load_run", "is_run_dir", "find_runs", "newest_run", "resolve_run_dirs", "search_kind",
           "complete_trials"]


@dataclass
class RunData:
    """Everything a run directory holds, loaded.

    Attributes:
        path: the run directory.
        trials: ``trials.csv`` (one row per trial).
        pareto: ``pareto.csv`` (the Pareto-optimal trials, sorted by size).
        summary: ``summary.json`` (:class:`harness.rundir.Summary`).
        config: ``config.yaml`` as a plain dict.
        environment: ``environment.json``.
        tables: the strategy tables (``<name>.csv``, e.g. ``sensitivity``) by name.
        metric: the task-metric column (``summary["metric"]``).
        maximize: whether a larger metric is better (``summary["direction"]``).
        baseline: the float model's figures (``summary["baseline"]``): ``size_bytes``, the metric, ...
        max_accuracy_drop: the run's accuracy target (``summary["target"]``), or None.
    """

    path: Path
    trials: pd.DataFrame
    pareto: pd.DataFrame
    summary: dict[str, Any]
    config: dict[str, Any]
    environment: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    metric: str
    maximize: bool
    baseline: dict[str, Any]
    max_accuracy_drop: float | None

    @property
    def drop_column(self) -> str:
        """The metric-drop column of the run's tables (``<metric>_drop``, positive = worse)."""
        return rundir.drop_column(self.metric)

    @property
    def complete(self) -> pd.DataFrame:
        """The finished trials (see :func:`complete_trials`)."""
        return complete_trials(self.trials)

    @property
    def sensitivity(self) -> pd.DataFrame | None:
        """``sensitivity.csv`` of a sensitivity run, else None."""
        return self.tables.get(rundir.SENSITIVITY_TABLE)

    def best_within(self, max_drop: float) -> pd.Series | None:
        """The smallest finished trial within ``max_drop`` of the float metric
        (:func:`harness.pareto.best_within`), or None."""
        return pareto.best_within(self.complete, self.drop_column, max_drop)

    @property
    def name(self) -> str:
        """A short label for plots: the last two path parts (date/time under Hydra)."""
        return "/".join(self.path.resolve().parts[-2:])

    @property
    def model_name(self) -> str:
        """The model the run swept (``summary["model"]["name"]``)."""
        return str(self.summary["model"]["name"])


def complete_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that finished (``state`` COMPLETE): each has a size and a metric."""
    return trials[trials["state"] == rundir.COMPLETE]


def search_kind(run: RunData) -> str:
    """The search kind of a run (``summary["search"]["kind"]``: grid, tpe, ..., sensitivity, mixed)."""
    return str(run.summary["search"]["kind"])


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise QsweepError(f"cannot read {path}: {exc}; is this a complete qsweep run directory?") from exc


def _read_table(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    df = _read_csv(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise QsweepError(f"{path} lacks the column(s) {', '.join(missing)}: it was not written by this version "
                          "of qsweep")
    return df


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise QsweepError(f"cannot read {path}: {exc}; the file is not valid JSON") from exc
    if not isinstance(data, dict):
        raise QsweepError(f"{path} holds a {type(data).__name__}, not a JSON object")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # omegaconf and yaml raise several types
        raise QsweepError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise QsweepError(f"{path} is not a mapping")
    return data


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` holds a run's ``trials.csv``."""
    return (Path(path) / rundir.TRIALS).is_file()


def load_run(path: str | Path) -> RunData:
    """Load a run directory written by ``qsweep`` (see :class:`RunData`).

    Raises:
        QsweepError: ``path`` does not exist, is not a run directory, lacks a
            file or a summary.json key of :mod:`harness.rundir` (names which).
    """
    p = Path(path)
    if not p.is_dir():
        raise QsweepError(f"run directory {p} does not exist; pass the folder a qsweep run wrote "
                          "(e.g. outputs/<date>/<time>)")
    if not is_run_dir(p):
        raise QsweepError(f"{p} is not a qsweep run directory: it has no {rundir.TRIALS} "
                          f"(found: {', '.join(sorted(x.name for x in p.iterdir())) or 'nothing'})")
    missing = [f for f in rundir.REQUIRED_FILES if not (p / f).is_file()]
    if missing:
        raise QsweepError(f"{p} is an incomplete qsweep run directory: {', '.join(missing)} missing")
    summary = _read_json(p / rundir.SUMMARY)
    lacking = [k for k in rundir.SUMMARY_KEYS if k not in summary]
    if lacking:
        raise QsweepError(f"{p / rundir.SUMMARY} lacks {', '.join(lacking)}: it was not written by this version "
                          "of qsweep")
    metric = str(summary["metric"])
    if summary["direction"] not in ("maximize", "minimize"):
        raise QsweepError(f"{p / rundir.SUMMARY}: direction is {summary['direction']!r}, not maximize or minimize")
    columns = rundir.leading_columns(metric, summary["evaluation"]["snr_outputs"])
    target = summary["target"]["max_accuracy_drop"]
    own = {rundir.TRIALS, rundir.PARETO}
    return RunData(
        path=p,
        trials=_read_table(p / rundir.TRIALS, columns),
        pareto=_read_table(p / rundir.PARETO, columns),
        summary=summary,
        config=_read_yaml(p / rundir.CONFIG),
        environment=_read_json(p / rundir.ENVIRONMENT),
        tables={f.stem: _read_csv(f) for f in sorted(p.glob(rundir.table_file("*"))) if f.name not in own},
        metric=metric,
        maximize=summary["direction"] == "maximize",
        baseline=dict(summary["baseline"]),
        max_accuracy_drop=None if target is None else float(target),
    )


def _kind(d: Path) -> str | None:
    f = d / rundir.SUMMARY
    return str(_read_json(f)["search"]["kind"]) if f.is_file() else None


def find_runs(root: str | Path = "outputs", *, kind: str | None = None) -> list[Path]:
    """Every run directory under ``root`` (recursively), oldest first (by the time of its trials.csv).

    ``kind``: only the runs of that search kind (e.g. ``sensitivity``).
    """
    r = Path(root)
    if not r.is_dir():
        return []
    runs = sorted((f.parent for f in r.rglob(rundir.TRIALS)), key=lambda d: (d / rundir.TRIALS).stat().st_mtime)
    return [d for d in runs if kind is None or _kind(d) == kind]


def _which(kind: str | None) -> str:
    return "qsweep run directory" if kind is None else f"qsweep {kind} run"


def newest_run(root: str | Path = "outputs", *, kind: str | None = None) -> Path:
    """The most recently written run directory under ``root`` (of search ``kind``, if given).

    Raises:
        QsweepError: no run directory exists there (says how to make one).
    """
    runs = find_runs(root, kind=kind)
    if not runs:
        how = "`qsweep`" if kind is None else f"`qsweep search={kind}`"
        raise QsweepError(f"no {_which(kind)} under {Path(root).resolve()}; run {how} first or set the run "
                          "directory explicitly")
    return runs[-1]


def resolve_run_dirs(value: str | Path | Sequence[str | Path] | None,
                     roots: Sequence[str | Path] = ("outputs", "../outputs"), *, kind: str | None = None) -> list[Path]:
    """The run directories a notebook should read.

    ``value`` is one directory, several (a list, or one string joined with
    ``os.pathsep``), or None/empty for the newest run (of search ``kind``, if
    given) under the first folder of ``roots`` that has one (``outputs/`` of
    the working folder, or of its parent when the notebook runs from
    ``notebooks/``).
    """
    if value is None or (isinstance(value, (str, Path)) and not str(value).strip()):
        for root in roots:
            if find_runs(root, kind=kind):
                return [newest_run(root, kind=kind)]
        how = "`qsweep`" if kind is None else f"`qsweep search={kind}`"
        raise QsweepError(f"no {_which(kind)} under {', '.join(str(Path(r).resolve()) for r in roots)}; "
                          f"run {how} first or set RUN_DIR")
    if isinstance(value, (str, Path)):
        parts = [x for x in str(value).split(os.pathsep) if x.strip()]
    else:
        parts = [str(x) for x in value]
    return [Path(x) for x in parts]
