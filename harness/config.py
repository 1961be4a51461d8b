"""Structured configs: the schema every qsweep config is validated against.

The YAML tree in ``conf/`` (Hydra groups ``model``, ``data``, ``calibration``,
``executor``, ``search``, ``selector``, ``storage``, ``tracking``) is merged over :class:`QsweepConfig`,
registered in Hydra's ConfigStore as ``qsweep_schema`` (the first entry of the
defaults list in ``conf/config.yaml``). OmegaConf therefore rejects an unknown
key or a value of the wrong type while the config is composed, before any work,
with a message naming the key (``Key 'nbit' not in 'SpaceConfig'``,
``Value 'x' ... could not be converted to Integer  full_key: search.space.nbits[1]``).

``search.options`` is typed per search kind: ``conf/search/mixed.yaml`` and
``conf/search/sensitivity.yaml`` place the structured node of their kind
(:class:`MixedOptions`, :class:`SensitivityOptions`, registered in the group
``search/options``) there, so a misspelt option or a wrong type fails while
composing too (``qsweep search=mixed search.options.greedy_pointz=3``). Numeric
ranges are checked when the node becomes its dataclass (:func:`search_options`).

Values whose valid set is only known at run time (search kinds, modes, layer
types, metric names, the model's outputs) are checked by
:func:`harness.space.SearchSpace.from_config`,
:meth:`harness.metric_choice.MetricRequest.from_config` and
:func:`harness.sweep.run_sweep` with a :class:`~harness.errors.ConfigError`
naming the key.

Example:
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.structured(QsweepConfig)
    >>> cfg.search.space.nbits
    [16, 8, 6, 4, 3, 2, 1]
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.errors import ConfigError

ALL_NBITS = [16, 8, 6, 4, 3, 2, 1]
ALL_MODES = ["linear", "linear_symmetric", "kmeans_lut", "linear_lut"]


@dataclass
class ModelConfig:
    """The model to compress.

    ``path`` (a ``.mlmodel`` file), when set, is used; otherwise ``name`` is a
    zoo model (``harness.zoo.catalog()``: bundled, or built on demand; one that is
    not built fails with its build command).
    """

    name: Optional[str] = "digits_cnn"
    path: Optional[str] = None


@dataclass
class DataConfig:
    """The test set every candidate is measured on.

    kind: ``zoo`` (the zoo model's own test set), ``sklearn`` (``name``:
    digits, iris, wine, breast_cancer, diabetes; ``transforms``; ``seed``),
    ``npz`` (``path``; ``inputs``: input name -> array key; labels key ``labels``,
    default ``y``) or ``csv`` (``path``; ``feature_columns``; label column
    ``labels``, default a column named ``label`` or ``y``).
    ``labels: null`` ignores labels: the task metric becomes agreement with the
    float model. ``limit`` keeps the first N samples.
    """

    kind: str = "zoo"
    name: Optional[str] = None
    path: Optional[str] = None
    transforms: Optional[str] = None
    seed: int = 0
    inputs: Dict[str, str] = field(default_factory=dict)
    labels: Optional[str] = "auto"
    label_mode: str = "auto"
    feature_columns: Optional[List[str]] = None
    limit: Optional[int] = None


@dataclass
class GptqConfig:
    """Options of ``algorithm=gptq`` (see :func:`quantizer.algorithms.gptq.gptq`): dampening as a
    fraction of the mean diagonal of H, columns per lazy batch, act-order, for kmeans_lut the
    table GPTQ rounds to (``plain`` k-means or ``weighted``, the activation-weighted one), and
    ``relu_off``: the most activity of a channel feeding a ReLU that may be switched off
    (:mod:`quantizer.algorithms.relu_off`; 0 never)."""

    damp: float = 0.01
    block_size: int = 128
    act_order: bool = True
    lut: str = "plain"
    relu_off: float = 0.03


@dataclass
class CalibrationConfig:
    """Unlabelled samples the calibration-aware algorithms read (never the test set).

    kind: ``none`` (no calibration-aware algorithm can run), ``npz`` / ``csv``
    (``path``: a file with the test data's conventions -- ``inputs`` /
    ``feature_columns`` as in ``data`` --, labels ignored), ``split`` (a seeded
    ``fraction`` of the configured test data is held out; the test figures are
    computed on the rest) or ``zoo`` (a zoo model's own training split).
    ``limit``: most calibration samples used (the first ones). Statistics of
    more than ``memory_mb`` MiB are kept file-backed in a temporary folder.
    """

    kind: str = "none"
    path: Optional[str] = None
    inputs: Dict[str, str] = field(default_factory=dict)
    feature_columns: Optional[List[str]] = None
    fraction: float = 0.25
    seed: int = 0
    limit: Optional[int] = 256
    batch_size: int = 32
    memory_mb: int = 256
    gptq: GptqConfig = field(default_factory=GptqConfig)


@dataclass
class ExecutorConfig:
    """How models are run: ``numpy`` (everywhere), ``coreml`` (macOS), ``auto``."""

    kind: str = "numpy"
    batch_size: int = 512


@dataclass
class SpaceConfig:
    """The codec part of the search space: every value listed is a candidate.

    ``lut_function`` is the import path of a ``custom_lut`` function
    (``package.module.function``) or a ``{_target_: ..., _partial_: true, ...}``
    node; it is only used by the ``custom_lut`` mode.
    """

    nbits: List[int] = field(default_factory=lambda: list(ALL_NBITS))
    mode: List[str] = field(default_factory=lambda: list(ALL_MODES))
    lut_function: Optional[Any] = None
    #: How the stored values are chosen: rtn (round-to-nearest), gptq, awkm (kmeans_lut); all but rtn
    #: need calibration data (the ``calibration`` group).
    algorithm: List[str] = field(default_factory=lambda: ["rtn"])
    #: Shift each output channel's bias by the mean error of its quantized weights (needs calibration data).
    bias_correction: List[bool] = field(default_factory=lambda: [False])


@dataclass
class SelectorSpace:
    """The layer-selection part of the search space (lists: every value is a candidate).

    The thresholds are those of coremltools' ``AdvancedQuantizedLayerSelector``
    (a weight is kept in float when its layer type is skipped, or a convolution
    has fewer kernel channels / weights than the minimum) plus
    ``minimum_matrix_weight_count`` for innerProduct / batchedMatmul weights
    (as ``MatrixMultiplyLayerSelector.minimum_weight_count``). All zeros and no
    skipped types is coremltools' default selector: quantize every weight.
    """

    skip_layer_types: List[List[str]] = field(default_factory=lambda: [[]])
    minimum_conv_kernel_channels: List[int] = field(default_factory=lambda: [0])
    minimum_conv_weight_count: List[int] = field(default_factory=lambda: [0])
    minimum_matrix_weight_count: List[int] = field(default_factory=lambda: [0])


class Unit(str, enum.Enum):
    """What a sensitivity / mixed search treats as one unit: a layer, or one weight tensor of a layer."""

    layer = "layer"
    tensor = "tensor"


class MixedAlgorithm(str, enum.Enum):
    """The Optuna sampler of ``search=mixed``: multi-objective TPE or NSGA-II."""

    tpe = "tpe"
    nsga2 = "nsga2"


def _at_least(value: Any, minimum: float, key: str, what: str) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"search.options.{key} must be {what} >= {minimum:g}, got {value!r}.")


@dataclass
class SensitivityOptions:
    """``search.options`` of ``search=sensitivity``: ``unit`` is ``layer`` (each layer alone) or
    ``tensor`` (each weight tensor alone, e.g. a bias)."""

    unit: Unit = Unit.layer


@dataclass
class MixedOptions:
    """``search.options`` of ``search=mixed`` (see :mod:`harness.search.mixed`).

    algorithm: ``tpe`` or ``nsga2``. unit: ``layer`` or ``tensor``.
    keep_float: a unit may also stay float32 (``fp32``).
    seed_uniform: queue every codec applied to every unit.
    seed_greedy: queue points of the greedy path from the sensitivity ranking,
    ``greedy_points`` of them evenly spread; then bisect the path around
    ``focus_drop`` (default ``search.max_accuracy_drop``, else 0.01), at most
    ``refine_steps`` trials. probe_codec: the codec of the per-unit probes,
    e.g. ``kmeans_lut-4bit`` (default: the codec nearest 4 bits).
    sensitivity: the run directory of a ``search=sensitivity`` run, whose table
    replaces the probes. compare_to: a run directory (e.g. a grid) whose
    hypervolume summary.json records beside this run's.
    """

    algorithm: MixedAlgorithm = MixedAlgorithm.tpe
    unit: Unit = Unit.layer
    keep_float: bool = True
    seed_uniform: bool = True
    seed_greedy: bool = True
    greedy_points: int = 8
    refine_steps: int = 6
    focus_drop: Optional[float] = None
    probe_codec: Optional[str] = None
    sensitivity: Optional[str] = None
    compare_to: Optional[str] = None

    def __post_init__(self) -> None:
        _at_least(self.greedy_points, 0, "greedy_points", "an integer")
        _at_least(self.refine_steps, 0, "refine_steps", "an integer")
        _at_least(self.focus_drop, 0, "focus_drop", "null or a number")


#: ``search.options`` node of each search kind that has options (the ``search/options`` group).
OPTIONS_TYPES: Dict[str, type] = {"sensitivity": SensitivityOptions, "mixed": MixedOptions}


def search_options(node: Any, options_type: type, kind: str) -> Any:
    """``search.options`` as an ``options_type`` instance, validated.

    The node is normally that dataclass's structured node already (composed from
    ``conf/search/<kind>.yaml``); a plain one (``search.kind=mixed`` over another
    kind's YAML) is merged over the defaults here. Keys added with ``+`` bypass
    the schema while composing, so unknown keys are refused here by name.

    Raises:
        ConfigError: an unknown key, a wrong type or a value out of range (names the key).
    """
    names = [f.name for f in dataclasses.fields(options_type)]
    given = list(node.keys()) if node else []
    unknown = sorted(str(k) for k in given if k not in names)
    if unknown:
        raise ConfigError(f"search.options has unknown key(s) {unknown} for search={kind}; valid keys: "
                          f"{', '.join(sorted(names))}.")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(options_type), node if node else {})
    except OmegaConfBaseException as e:
        raise ConfigError(f"search.options of search={kind}: {e}") from None
    return OmegaConf.to_object(merged)


def options_record(options: Any) -> Dict[str, Any]:
    """An options dataclass as plain JSON-able values (enum members as their value)."""
    return {f.name: (v.value if isinstance(v, enum.Enum) else v)
            for f in dataclasses.fields(options) for v in [getattr(options, f.name)]}


@dataclass
class SearchConfig:
    """How the space is searched and how long.

    kind: ``grid`` (every valid point exactly once), ``tpe``, ``nsga2``,
    ``random`` (Optuna samplers; ``sampler`` holds extra keyword arguments for
    the sampler class), ``sensitivity`` (each layer x codec alone) or ``mixed``
    (one codec per layer). ``n_trials`` is the study-wide budget (all workers and
    resumed runs together; the grid size when null for ``grid``); ``timeout``
    is the seconds this worker may spend starting trials. ``max_accuracy_drop``
    reports the smallest model whose task metric is within that drop of the
    float model. ``fuse`` applies coremltools' pre-quantization fusions.
    ``options`` holds the settings of the kinds that have some: the structured
    node :class:`MixedOptions` or :class:`SensitivityOptions` (empty for the others).
    """

    kind: str = "grid"
    n_trials: Optional[int] = None
    timeout: Optional[float] = None
    max_accuracy_drop: Optional[float] = None
    space: SpaceConfig = field(default_factory=SpaceConfig)
    sampler: Dict[str, Any] = field(default_factory=dict)
    fuse: bool = True
    wait_for_others: bool = True
    options: Any = field(default_factory=dict)


@dataclass
class StorageConfig:
    """Where the Optuna study lives (any Optuna RDB URL).

    A relative SQLite path is relative to the working folder, so re-running in
    the same folder resumes. ``heartbeat_interval``/``grace_period`` (seconds)
    detect workers that died mid-trial; their trials are retried up to
    ``max_retry`` times. ``retry_s``: how long a worker rides out a database
    outage (connection lost, server restarting) before it exits. The password
    may come from the file ``password_file`` or the environment variable named
    by ``password_env`` instead of the URL (masked everywhere in any case).
    """

    url: str = "sqlite:///outputs/qsweep.db"
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: Optional[int] = 3
    retry_s: float = 120.0
    password_env: Optional[str] = "QSWEEP_STORAGE_PASSWORD"
    password_file: Optional[str] = None


@dataclass
class StudyConfig:
    """The study name; null derives a stable one from the model, data and space."""

    name: Optional[str] = None


@dataclass
class ReportConfig:
    """Call ``harness.report.write_report(run_dir)`` at the end of the run (pareto.png, report.html, ...)."""

    enabled: bool = True


@dataclass
class OutputConfig:
    """What goes into the run directory besides the tables."""

    save_models: bool = True


@dataclass
class TrackingConfig:
    """Experiment tracking (:mod:`harness.tracking`): ``kind`` none (default) or mlflow.

    ``uri``: any MLflow tracking URI (``http://host:5000``, ``sqlite:///mlflow.db``, a folder); null: the
    local ``mlruns/`` folder next to ``outputs/`` in the working folder. ``experiment``: the MLflow
    experiment the sweep's runs go into. ``timeout_s``: how long one tracking request may take (an
    unreachable server is warned about once and never stops the sweep).
    """

    kind: str = "none"
    uri: Optional[str] = None
    experiment: str = "qsweep"
    timeout_s: float = 10.0


@dataclass
class MetricConfig:
    """The task metric: what every candidate is scored by (see :mod:`harness.metric_choice`).

    name: ``auto`` (accuracy with labels, r2 for real-valued labels or a regressor; without labels
    agreement for class predictions, cosine for other vector outputs, snr_db for a regressor) or one
    of accuracy, top<k>_accuracy, agreement, cosine, snr_db, psnr_db, r2, rmse, mae; with ``fn``, the
    column name of the user metric (``auto``: the function's name).
    output: the model output scored (null: a classifier's probabilities or a model's only
    class-score output, a regressor's prediction, else the first output). threshold: a one-value-per-sample output is binary, predicted positive
    when ``value > threshold``. fn: the import path of ``fn(outputs, labels, float_outputs) -> float``
    (outputs: output name -> array with N rows); maximize: its direction (default true).
    bootstrap: resamples of the seeded percentile bootstrap behind the intervals of the metrics
    that are not proportions.
    """

    name: str = "auto"
    output: Optional[str] = None
    threshold: float = 0.5
    fn: Optional[str] = None
    maximize: Optional[bool] = None
    bootstrap: int = 1000


class Racing(str, enum.Enum):
    """``evaluation.racing``: stop a candidate once it is dominated (see :mod:`harness.racing`).

    ``off``: every candidate sees every sample. ``exact``: stop only when no completion of the remaining
    samples could put it on the front (the front is identical to ``off``). ``confident``: stop when it is
    dominated at ``evaluation.confidence``.
    """

    off = "off"
    exact = "exact"
    confident = "confident"


@dataclass
class EvaluationConfig:
    """How candidates are measured on the test set (see :mod:`harness.racing` and :mod:`harness.activations`).

    racing: ``off`` | ``exact`` | ``confident``; confidence: of a ``confident`` stop (0.5 .. 1, exclusive).
    chunk: samples per chunk of the fixed, seeded order (null: N/64 rounded to a multiple of 16, within
    16..256). activation_cache_mb: memory for the float model's activations at the first changed layer
    (0 turns activation reuse off); activation_spill_mb: disk space (a temporary folder) for entries
    past the memory budget (0: entries past it are not cached).
    """

    racing: Racing = Racing.exact
    confidence: float = 0.99
    chunk: Optional[int] = None
    activation_cache_mb: float = 512.0
    activation_spill_mb: float = 2048.0

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"evaluation.confidence must be at least 0.5 and below 1 (e.g. 0.99), got "
                              f"{self.confidence!r}.")
        if self.chunk is not None and self.chunk < 1:
            raise ConfigError(f"evaluation.chunk must be a positive number of samples (or null), got {self.chunk!r}.")
        for key in ("activation_cache_mb", "activation_spill_mb"):
            if getattr(self, key) < 0:
                raise ConfigError(f"evaluation.{key} must be >= 0 (0 turns it off), got {getattr(self, key)!r}.")


def evaluation_options(node: Any) -> EvaluationConfig:
    """The ``evaluation`` node as an :class:`EvaluationConfig`, its ranges checked.

    Raises:
        ConfigError: a value out of range (names the key).
    """
    if isinstance(node, EvaluationConfig):
        node.__post_init__()
        return node
    try:
        merged = OmegaConf.merge(OmegaConf.structured(EvaluationConfig), node if node else {})
    except OmegaConfBaseException as e:
        raise ConfigError(f"evaluation: {e}") from None
    return OmegaConf.to_object(merged)


@dataclass
class QsweepConfig:
    """The whole experiment (``metric``: :class:`MetricConfig`; ``evaluation``: :class:`EvaluationConfig`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    selector: SelectorSpace = field(default_factory=SelectorSpace)
    storage: StorageConfig = field(default_factory=StorageConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    seed: int = 0
    progress: bool = True


def register_configs() -> None:
    """Register :class:`QsweepConfig` as ``qsweep_schema`` and each kind's options node as
    ``search/options/<kind>`` in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="qsweep_schema", node=QsweepConfig)
    for kind, node in OPTIONS_TYPES.items():
        cs.store(group="search/options", name=kind, node=node)
