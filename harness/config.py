"""Structured configs: the schema every qsweep config is validated against.

The YAML tree in ``conf/`` (Hydra groups ``model``, ``data``, ``executor``,
``search``, ``selector``, ``storage``) is merged over :class:`QsweepConfig`,
registered in Hydra's ConfigStore as ``qsweep_schema`` (the first entry of the
defaults list in ``conf/config.yaml``). OmegaConf therefore rejects an unknown
key or a value of the wrong type while the config is composed, before any work,
with a message naming the key (``Key 'nbit' not in 'SpaceConfig'``,
``Value 'x' ... could not be converted to Integer  full_key: search.space.nbits[1]``).

Values whose valid set is only known at run time (search kinds, modes, layer
types, metric names) are checked by :func:`harness.space.SearchSpace.from_config`
and :func:`harness.sweep` with a :class:`~harness.errors.ConfigError` naming
the key.

Example:
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.structured(QsweepConfig)
    >>> cfg.search.space.nbits
    [16, 8, 6, 4, 3, 2, 1]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

ALL_NBITS = [16, 8, 6, 4, 3, 2, 1]
ALL_MODES = ["linear", "linear_symmetric", "kmeans_lut", "linear_lut"]


@dataclass
class ModelConfig:
    """The model to compress.

    ``path`` (a ``.mlmodel`` file), when set, is used; otherwise ``name`` is a
    bundled zoo model (``harness.zoo.names()``).
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


@dataclass
class SearchConfig:
    """How the space is searched and how long.

    kind: ``grid`` (every valid point exactly once), ``tpe``, ``nsga2``,
    ``random`` (Optuna samplers; ``sampler`` holds extra keyword arguments for
    the sampler class). ``n_trials`` is the study-wide budget (all workers and
    resumed runs together; the grid size when null for ``grid``); ``timeout``
    is the seconds this worker may spend starting trials. ``max_accuracy_drop``
    reports the smallest model whose task metric is within that drop of the
    float model. ``fuse`` applies coremltools' pre-quantization fusions.
    ``options`` holds settings of one search kind (e.g. ``mixed``, ``sensitivity``;
    each validates its own keys and names an unknown one).
    """

    kind: str = "grid"
    n_trials: Optional[int] = None
    timeout: Optional[float] = None
    max_accuracy_drop: Optional[float] = None
    space: SpaceConfig = field(default_factory=SpaceConfig)
    sampler: Dict[str, Any] = field(default_factory=dict)
    fuse: bool = True
    wait_for_others: bool = True
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class StorageConfig:
    """Where the Optuna study lives (any Optuna RDB URL).

    A relative SQLite path is relative to the working folder, so re-running in
    the same folder resumes. ``heartbeat_interval``/``grace_period`` (seconds)
    detect workers that died mid-trial; their trials are retried up to
    ``max_retry`` times.
    """

    url: str = "sqlite:///outputs/qsweep.db"
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: Optional[int] = 3


@dataclass
class StudyConfig:
    """The study name; null derives a stable one from the model, data and space."""

    name: Optional[str] = None


@dataclass
class ReportConfig:
    """Call ``harness.report.write_report(run_dir)`` at the end when it exists."""

    enabled: bool = True


@dataclass
class OutputConfig:
    """What goes into the run directory besides the tables."""

    save_models: bool = True


@dataclass
class QsweepConfig:
    """The whole experiment. ``metric``: ``auto`` (accuracy with labels on a
    classifier, r2 on a regressor, agreement / snr_db without labels) or one of
    accuracy, top<k>_accuracy, agreement, snr_db, psnr_db, r2, rmse, mae."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    selector: SelectorSpace = field(default_factory=SelectorSpace)
    storage: StorageConfig = field(default_factory=StorageConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    metric: str = "auto"
    seed: int = 0
    progress: bool = True


def register_configs() -> None:
    """Register :class:`QsweepConfig` as ``qsweep_schema`` in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="qsweep_schema", node=QsweepConfig)
