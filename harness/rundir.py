"""What a run directory holds: its file names, the columns of its tables and the keys of summary.json.

This module is the one definition of a run directory. The writer
(:mod:`harness.outputs`) writes exactly this and every reader
(:mod:`harness.analysis.runs`, the report, the notebooks) reads it by these
names; neither guesses at alternatives.

A run directory holds:

* ``config.yaml`` — the composed config, interpolations resolved (:data:`CONFIG`);
* ``environment.json`` — package versions, model/data sha256, seed, machine (:data:`ENVIRONMENT`);
* ``trials.csv`` — one row per trial (:data:`TRIALS`): :func:`leading_columns` (the task metric
  with its 95% interval :func:`ci_columns`, its drop and the drop's p-value :func:`drop_p_column`,
  one :func:`snr_column` per numeric output, then :data:`RACING_COLUMNS`), then the attributes a
  search strategy adds in name order, then :data:`TAIL_COLUMNS`. A PRUNED row that racing stopped
  holds the figures of the samples it saw (``evaluated_samples`` of them);
* ``pareto.csv`` — the Pareto-optimal trials sorted by size, same columns (:data:`PARETO`);
* ``summary.json`` — :class:`Summary` (:data:`SUMMARY`);
* ``<name>.csv`` — each table a search strategy returns (``StrategyResult.tables``), e.g.
  ``sensitivity.csv`` (:func:`table_file`, :func:`sensitivity_columns`);
* ``models/`` — the Pareto-optimal models, ``models/trial_0012_<label>.mlmodel`` (:func:`model_file`);
* the report (when enabled): ``pareto.png``, ``layers.png``, ``sensitivity.png``, ``report.html``.

Example:
    >>> leading_columns("accuracy")[:4]
    ['trial', 'state', 'nbits', 'mode']
    >>> drop_column("accuracy"), table_file("sensitivity"), model_file(12, "linear-8bit")
    ('accuracy_drop', 'sensitivity.csv', 'models/trial_0012_linear-8bit.mlmodel')
    >>> ci_columns("accuracy"), drop_p_column("accuracy"), snr_column("probs")
    (('accuracy_ci_low', 'accuracy_ci_high'), 'accuracy_drop_p', 'snr_db:probs')
"""
from __future__ import annotations

from typing import Any, Iterable, TypedDict

# ----------------------------------------------------------------------------------- files
CONFIG = "config.yaml"
ENVIRONMENT = "environment.json"
TRIALS = "trials.csv"
PARETO = "pareto.csv"
SUMMARY = "summary.json"
MODELS = "models"
#: The report's files (written by :mod:`harness.report`).
PARETO_PNG = "pareto.png"
LAYERS_PNG = "layers.png"
SENSITIVITY_PNG = "sensitivity.png"
REPORT_HTML = "report.html"
#: The files every finished run has (the reader needs them all).
REQUIRED_FILES = (CONFIG, ENVIRONMENT, TRIALS, PARETO, SUMMARY)
#: Table names a strategy may not use (they are the run's own tables).
RESERVED_TABLES = ("trials", "pareto")
#: The table of a ``search=sensitivity`` run (``sensitivity.csv``).
SENSITIVITY_TABLE = "sensitivity"


def table_file(name: str) -> str:
    """The file of a strategy table ``name`` (``StrategyResult.tables[name]``): ``<name>.csv``."""
    return f"{name}.csv"


def model_file(trial: int, label: str) -> str:
    """The saved Pareto model of ``trial``, relative to the run directory."""
    return f"{MODELS}/trial_{trial:04d}_{label}.mlmodel"


# --------------------------------------------------------------------------------- columns
#: trials.csv ``state``: Optuna's state names.
COMPLETE, FAIL, PRUNED, RUNNING, WAITING = "COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING"

#: The parameters of a uniform setting (empty for a trial that is not one, e.g. mixed or sensitivity).
SETTING_COLUMNS = ["nbits", "mode", "skip_layer_types", "minimum_conv_kernel_channels",
                   "minimum_conv_weight_count", "minimum_matrix_weight_count", "algorithm", "bias_correction"]
#: The last columns of trials.csv / pareto.csv. ``layer_algorithms``: per layer, what chose its
#: stored values (``gptq``, ``gptq+bc``, ``rtn``, ``rtn (fallback: <why>)``...).
TAIL_COLUMNS = ["retry_of", "worker", "datetime_start", "datetime_complete", "layer_encodings", "layer_algorithms"]
#: A trial's size in KB: a user attribute for browsing the study (optuna-dashboard), not a column
#: (``size_bytes`` is).
SIZE_KB_ATTR = "size_kb"
#: User attributes of a trial that are not trials.csv columns.
STUDY_ONLY_ATTRS = ("grid_point", "failure", SIZE_KB_ATTR)
#: The samples a trial ran through its model (every sample when it finished; fewer when racing stopped it;
#: 0 for a trial that reused another's result).
EVALUATED_COLUMN = "evaluated_samples"
#: A trial racing stopped (PRUNED): the finished trial that dominates it, the best final figure it could
#: still have reached, and the least drop it could still have reached (the drop at that figure).
DOMINATED_COLUMN, REACH_COLUMN, DROP_BOUND_COLUMN = "dominated_by", "best_reachable", "drop_lower_bound"
#: The racing columns, after the figures (empty for a trial that was not stopped).
RACING_COLUMNS = [EVALUATED_COLUMN, DOMINATED_COLUMN, REACH_COLUMN, DROP_BOUND_COLUMN]
#: Integer columns (nullable ``Int64`` when written).
INTEGER_COLUMNS = ("trial", "reused_from", "retry_of", "size_bytes", "nbits", EVALUATED_COLUMN, DOMINATED_COLUMN)


def drop_column(metric: str) -> str:
    """The column of the metric drop from the float model (positive = worse): ``<metric>_drop``."""
    return f"{metric}_drop"


def ci_columns(metric: str) -> tuple[str, str]:
    """The columns of the metric's 95% interval on the test set: ``<metric>_ci_low``, ``<metric>_ci_high``."""
    return f"{metric}_ci_low", f"{metric}_ci_high"


def drop_p_column(metric: str) -> str:
    """The column of the two-sided p-value that the trial's metric differs from the float model's
    (paired on the same samples; empty for metrics measured against the float model): ``<metric>_drop_p``."""
    return f"{metric}_drop_p"


#: The prefix of the per-output SNR columns (``snr_db:<output>``); ``snr_db`` is the worst output's.
SNR_PREFIX = "snr_db:"


def snr_column(output: str) -> str:
    """The column of one output's mean SNR in dB against the float model: ``snr_db:<output>``."""
    return f"{SNR_PREFIX}{output}"


def figure_columns(metric: str, outputs: Iterable[str] = ()) -> list[str]:
    """The measured figures of a trial, in column order (``outputs``: the numeric outputs, one
    :func:`snr_column` each)."""
    figures = ["size_bytes", "compression_ratio", metric, *ci_columns(metric), drop_column(metric),
               drop_p_column(metric), "agreement", "snr_db", "psnr_db", *(snr_column(o) for o in outputs)]
    return list(dict.fromkeys(figures))


def leading_columns(metric: str, outputs: Iterable[str] = ()) -> list[str]:
    """The first columns of trials.csv / pareto.csv for task metric ``metric`` (always present);
    ``outputs``: the model's numeric outputs (``summary["evaluation"]["snr_outputs"]``)."""
    return (["trial", "state"] + SETTING_COLUMNS + figure_columns(metric, outputs) + RACING_COLUMNS
            + ["plan_hash", "reused_from", "model_file", "model_sha256", "quantize_s", "evaluate_s", "encodings",
               "error"])


def fixed_columns() -> set[str]:
    """The trials.csv columns whose names do not derive from the metric or the outputs (a user metric
    may not take one of these names)."""
    marker = "\0"
    return {c for c in leading_columns(marker) + TAIL_COLUMNS if marker not in c}


def sensitivity_columns(metric: str) -> list[str]:
    """The columns of ``sensitivity.csv``: one row per unit (layer or tensor) x codec."""
    return ["unit", "layer_type", "codec", "mode", "nbits", "weights", "size_bytes", "saved_bytes", metric,
            drop_column(metric), "agreement", "snr_db", "psnr_db", "trial"]


def sensitivity_drop_column(columns: Iterable[str]) -> str:
    """The metric-drop column of a sensitivity table (the ``<metric>_drop`` beside its ``<metric>``).

    Raises:
        ValueError: there is not exactly one such column.
    """
    cols = list(columns)
    found = [c for c in cols if c.endswith("_drop") and c[: -len("_drop")] in cols]
    if len(found) != 1:
        raise ValueError(f"a sensitivity table has one <metric>_drop column beside its <metric> column; "
                         f"these columns have {len(found)}: {', '.join(map(str, cols))}")
    return found[0]


# ----------------------------------------------------------------------------- summary.json
class StudyEntry(TypedDict):
    name: str
    storage: str  # password masked
    created_by_this_run: bool


class ModelEntry(TypedDict):
    name: str
    path: str
    sha256: str


class DataEntry(TypedDict):
    name: str
    n: int
    sha256: str


class _TargetFields(TypedDict):
    max_accuracy_drop: float | None
    metric: str


class Evidence(TypedDict):
    """What the test set says about a trial's drop (:func:`harness.pareto.evidence`)."""

    trial: int
    drop: float  # the point drop from the float model (positive = worse)
    ci_low: float  # the trial's 95% interval of the metric
    ci_high: float
    ci_width: float
    drop_p: float | None  # paired test against the float model (label metrics), else None
    distinguishable: bool  # drop_p < 0.05, or (reference metrics) the float value outside the interval
    resolves_max_drop: bool  # the interval is at most max_accuracy_drop wide


class Target(_TargetFields, total=False):
    """The accuracy target: ``best`` is :func:`harness.pareto.best_within` of the complete trials
    (a trials.csv row, or None when no trial met it); ``evidence`` is what the test set says about
    ``best`` (or, when none met the target, the trial of smallest drop); ``best``, ``evidence`` and
    ``message`` are absent when no target was set."""

    best: dict[str, Any] | None
    evidence: Evidence | None
    message: str
    best_effort: dict[str, Any]  # a mixed run that missed the target: its most accurate front row


class CalibrationEntry(TypedDict, total=False):
    """``summary["calibration"]``: where the calibration samples came from and what was collected
    (``kind`` none/split/npz/csv/zoo; ``samples`` used; the statistics' ``source`` -- float
    activations --, ``digest``, ``bytes``; per-layer ``layers``), or None without calibration."""

    kind: str
    samples: int
    source: str
    digest: str
    split: dict[str, Any]


class EvaluationEntry(TypedDict):
    """``summary["evaluation"]``: what the task metric measures and how sure its figures are."""

    metric: str  # the task-metric column
    output: str | None  # the scored output (None: every numeric output, snr_db / psnr_db)
    output_kind: str  # labels | class_scores | binary | vector (harness.heads.KINDS)
    output_reason: str  # how the kind was decided
    output_default: bool  # the output was not chosen with metric.output
    output_choice: str | None  # why it is the scored one ("metric.output", "the classifier's probabilities", ...)
    threshold: float | None  # binary outputs: prediction = value > threshold
    fn: str | None  # metric.fn's import path
    labels: bool  # the test set has labels
    n: int  # test samples
    confidence: float  # of every interval (0.95)
    interval: str  # wilson | bootstrap
    bootstrap_resamples: int | None  # of the percentile bootstrap (seeded with the run's seed)
    drop_test: str | None  # mcnemar | paired_t | paired_bootstrap | None
    snr_outputs: list[str]  # numeric outputs, one snr_db:<output> column each


class RacingEntry(TypedDict):
    """``summary["racing"]``: how candidates were stopped early (:mod:`harness.racing`)."""

    mode: str  # off | exact | confident
    confidence: float | None  # of a confident stop
    chunk: int  # samples per chunk of the fixed seeded order
    strata: list[int]  # samples per stratum of the order, hardest first
    stops: bool  # whether the task metric can stop a candidate at all (not: off, metric.fn, exact snr_db)
    stopped: int  # trials racing stopped (PRUNED, with dominated_by)
    sample_evaluations: int  # the sum of evaluated_samples over the study's trials
    full_evaluations: int  # what every evaluated trial would have run without racing (trials x samples)
    ratio: float | None  # sample_evaluations / full_evaluations
    activation_cache: dict[str, Any]  # this worker's activation cache: hits, misses, stored, spilled, ...


class WorkerEntry(TypedDict):
    id: str
    trials_started: int
    stopped_by: str | None
    elapsed_s: float


class _SummaryFields(TypedDict):
    study: StudyEntry
    model: ModelEntry
    data: DataEntry
    metric: str  # the task-metric column of trials.csv
    direction: str  # "maximize" or "minimize": the direction of ``metric``
    evaluation: EvaluationEntry  # the scored output, intervals and tests
    search: dict[str, Any]  # the strategy's describe(): at least ``kind``; plus total, dropped
    baseline: dict[str, Any]  # the float model: size_bytes, compression_ratio, <metric>, its interval, <metric>_drop, ...
    trials: dict[str, int]  # total, one count per state (lower case), reused
    pareto_front: list[dict[str, Any]]  # the rows of pareto.csv
    target: Target
    racing: RacingEntry
    worker: WorkerEntry
    calibration: CalibrationEntry | None  # the calibration data and statistics (None: no calibration)
    calibration_s: float  # seconds spent collecting calibration statistics (0 without)


class Summary(_SummaryFields, total=False):
    """``summary.json``: the keys of the run, then those a strategy adds (``StrategyResult.summary``)."""

    sensitivity: dict[str, Any]  # search=sensitivity: the table's file, counts and ranking
    # search=mixed, or a calibrated uniform sweep: a HypervolumeBlock per set (HYPERVOLUME_SETS); a calibrated
    # sweep adds all_minus_round_to_nearest and round_to_nearest_front (its points dominated by calibrated trials)
    hypervolume: dict[str, Any]
    mixed: dict[str, Any]  # search=mixed: trials by seed, units, codecs, probe codec


class _HypervolumeFields(TypedDict):
    trials: int
    evaluated: int
    smallest_within_1_point: dict[str, Any] | None  # trial, size_bytes, <metric>


class HypervolumeBlock(_HypervolumeFields, total=False):
    """One entry of ``summary["hypervolume"]`` (see :data:`HYPERVOLUME_SETS`)."""

    hypervolume: float  # maximised metrics only
    run_dir: str  # compare_to only
    search: str  # compare_to only


#: The keys every summary.json has, in the order they are written.
SUMMARY_KEYS = tuple(_SummaryFields.__annotations__)
#: The summary.json entries a strategy adds.
STRATEGY_SUMMARY_KEYS = tuple(k for k in Summary.__annotations__ if k not in SUMMARY_KEYS)
#: ``summary["hypervolume"]`` entries, with the labels the report gives them.
HYPERVOLUME_SETS = {"mixed": "this run (all trials)", "uniform_seeds_in_this_run": "its uniform settings",
                    "compare_to": "compared run", "all_algorithms": "this run (every algorithm)",
                    "round_to_nearest": "its round-to-nearest trials (rtn, no bias correction)"}
