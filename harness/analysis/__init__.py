"""Analysis of finished qsweep runs, from their files: the reader, table algorithms and plots.

``from harness import analysis`` is what the report and the notebooks use:

* :mod:`.runs` — the run-directory reader (:class:`RunData`, :func:`load_run`,
  :func:`find_runs`, :func:`newest_run`, :func:`resolve_run_dirs`);
* :mod:`.tables` — hypervolume, run comparison, per-layer encodings, the
  sensitivity matrix and ranking (the Pareto front and the best model within a
  drop are :mod:`harness.pareto`'s);
* :mod:`.plots` — ``plot_*`` onto a matplotlib axis.

>>> from harness import analysis
>>> run = analysis.load_run("outputs/2024-01-01/12-00-00")        # doctest: +SKIP
>>> run.best_within(0.01)["trial"]                                 # doctest: +SKIP
6
"""
from harness.analysis.plots import plot_layer_encodings, plot_metric_vs_nbits, plot_pareto, plot_sensitivity
from harness.analysis.runs import (
    RunData,
    complete_trials,
    find_runs,
    is_run_dir,
    load_run,
    newest_run,
    resolve_run_dirs,
    search_kind,
)
from harness.analysis.tables import (
    compare_runs,
    hypervolume,
    layer_encodings,
    layer_encodings_from_column,
    metric_by_nbits,
    sensitivity_matrix,
    sensitivity_ranking,
)

__all__ = [
    "RunData",
    "load_run",
    "is_run_dir",
    "find_runs",
    "newest_run",
    "resolve_run_dirs",
    "search_kind",
    "complete_trials",
    "hypervolume",
    "compare_runs",
    "metric_by_nbits",
    "layer_encodings",
    "layer_encodings_from_column",
    "sensitivity_matrix",
    "sensitivity_ranking",
    "plot_pareto",
    "plot_metric_vs_nbits",
    "plot_layer_encodings",
    "plot_sensitivity",
]
