"""``search=sensitivity``: how much each layer suffers from each codec, alone.

For every quantizable layer (``search.options.unit=layer``, the default) or
weight tensor (``unit=tensor``) and every codec of the search space, the
float model is quantized in that one place only and evaluated against the
cached float outputs. The metric drop and the output SNR go into
``sensitivity.csv`` (one row per unit x codec; the report draws it as
``sensitivity.png``, a heatmap units x codecs). This is AIMET's QuantAnalyzer per-layer analysis for
Core ML neuralnetwork models; the mixed-precision search
(:mod:`harness.mixed`) uses the same per-unit decomposition.

The cost is one evaluation per unit x codec (the progress bar and the log say
how many). Each (unit, codec) is a queued trial of the study, so a
sensitivity run resumes, and several workers share it, like a grid.

The per-unit plans come from the uniform plans: the plan of ``(unit, codec)``
is the entries of ``build_plan(model, nbits, mode)`` (coremltools' tensor
selection, all layers selected) that belong to ``unit``. So a unit quantized
alone gets exactly what it gets in the uniform sweep. The ``selector`` config
group is not used here.

Example::

    qsweep model=digits_cnn search=sensitivity search.space.nbits=[8,4,2] search.space.mode=[linear,kmeans_lut]
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
import pandas as pd

from harness.errors import ConfigError
from harness.search.base import Candidate, SearchContext, SearchStrategy, StrategyResult
from harness.space import SearchSpace, Setting
from harness.study import counted_trials, pop_waiting, worker_id

log = logging.getLogger(__name__)

__all__ = [
    "Choice",
    "FLOAT",
    "UnitPlans",
    "space_choices",
    "search_options",
    "SensitivitySearch",
    "sensitivity_table",
    "sensitivity_result",
]

UNIT_KINDS = ("layer", "tensor")


# ------------------------------------------------------------------------------------ choices
@dataclass(frozen=True)
class Choice:
    """A codec a unit may get: ``label`` (``fp32`` = keep float, ``fp16``,
    ``kmeans_lut-4``, ``linear-8``...), ``nbits`` (32 for float) and ``mode``."""

    label: str
    nbits: int
    mode: str

    @property
    def is_float(self) -> bool:
        return self.nbits == 32

    def setting(self) -> Setting:
        """The uniform setting (every layer selected) of this codec."""
        return Setting(self.nbits, "linear" if self.mode == "fp16" else self.mode)


FLOAT = Choice("fp32", 32, "float")


def choice_label(nbits: int, mode: str) -> str:
    """``fp16`` for 16 bits, else ``<mode>-<nbits>``."""
    return "fp16" if nbits == 16 else f"{mode}-{nbits}"


def space_choices(space: SearchSpace) -> list[Choice]:
    """The valid codecs of ``space`` (16 bits counted once, as fp16), gentlest first.

    Raises:
        ConfigError: no (nbits, mode) combination of the space is valid.
    """
    from harness.space import codec_problem

    out: dict[str, Choice] = {}
    reasons = set()
    for nbits in sorted(space.nbits, reverse=True):
        for mode in space.modes:
            why = codec_problem(nbits, mode, space.lut_function)
            if why is not None:
                reasons.add(why)
                continue
            label = choice_label(nbits, mode)
            out.setdefault(label, Choice(label, nbits, "fp16" if nbits == 16 else mode))
    if not out:
        raise ConfigError("The search space is empty: every (nbits, mode) combination of search.space.nbits="
                          f"{list(space.nbits)} and search.space.mode={list(space.modes)} is invalid ("
                          + "; ".join(sorted(reasons)) + ").")
    return list(out.values())


def search_options(cfg: Any, defaults: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """``search.options`` merged over ``defaults``; an unknown key raises a ConfigError naming it."""
    raw = getattr(cfg, "options", None) or {}
    try:
        from omegaconf import OmegaConf

        if not isinstance(raw, dict):
            raw = OmegaConf.to_container(raw, resolve=True)
    except ImportError:  # pragma: no cover
        raw = dict(raw)
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        raise ConfigError(f"search.options has unknown key(s) {unknown} for search={kind}; valid keys: "
                          f"{', '.join(sorted(defaults))}.")
    return {**defaults, **raw}


# ------------------------------------------------------------------------------- unit plans
class UnitPlans:
    """The uniform plan of every codec, split into per-unit pieces.

    A *unit* is a layer name (``unit="layer"``) or a ``layer.field`` tensor
    (``unit="tensor"``). :meth:`plan` assembles a plan from one choice per
    unit; an assignment of the same choice to every unit gives back the
    uniform plan of that codec (same digest).

    Args:
        model: the float model spec.
        choices: codecs units may get (``FLOAT`` = keep, no entries).
        build_plan: uniform :class:`~harness.space.Setting` -> QuantPlan.
        unit: ``layer`` or ``tensor``.
    """

    def __init__(self, model: Any, choices: Sequence[Choice], build_plan: Callable[[Setting], Any],
                 unit: str = "layer"):
        import quantizer

        if unit not in UNIT_KINDS:
            raise ConfigError(f"search.options.unit={unit!r}; choose one of {', '.join(UNIT_KINDS)}.")
        self.model = model
        self.unit_kind = unit
        self.choices = list(choices)
        self.by_label = {c.label: c for c in self.choices}
        self.uniform: dict[str, Any] = {}
        self.pieces: dict[str, dict[str, dict[tuple[str, str], Any]]] = {}
        order = {layer.name: i for i, layer in enumerate(quantizer.iter_layers(model))}
        slot_order = {(t.layer, t.field): i for i, t in enumerate(quantizer.weight_tensors(model))}
        self.layer_type = {layer.name: layer.WhichOneof("layer") for layer in quantizer.iter_layers(model)}
        units: dict[str, tuple[int, int, str]] = {}
        self._layer: dict[str, str] = {}
        for ch in self.choices:
            if ch.is_float:
                continue
            plan = build_plan(ch.setting())
            self.uniform[ch.label] = plan
            split: dict[str, dict[tuple[str, str], Any]] = {}
            for key, codec in plan.items():
                if codec is None:
                    continue
                u = self.unit_of(key)
                split.setdefault(u, {})[key] = codec
                units.setdefault(u, (order.get(key[0], len(order)), slot_order.get(key, len(slot_order)), key[1]))
                self._layer[u] = key[0]
            self.pieces[ch.label] = split
        if not units:
            raise ConfigError("The model has no weight tensor any codec of the search space would quantize; "
                              "nothing to search.")
        # Below 16 bits the model is fused first (coremltools' batchnorm/scale/bias folds): a layer that
        # only the fp16 plan names is folded away by any n-bit codec. It is not a unit of its own; it
        # gets fp16 when every unit does (so the uniform fp16 assignment is the uniform fp16 plan).
        quantizing = {u for c in self.choices if not c.is_float and c.nbits < 16 for u in self.pieces[c.label]}
        self.hidden: list[str] = sorted((u for u in units if quantizing and u not in quantizing),
                                        key=lambda u: (units[u], u))
        self.units: list[str] = sorted((u for u in units if u not in self.hidden), key=lambda u: (units[u], u))

    def unit_of(self, key: tuple[str, str]) -> str:
        """The unit a ``(layer, field)`` tensor belongs to."""
        return key[0] if self.unit_kind == "layer" else f"{key[0]}.{key[1]}"

    def layer_of(self, unit: str) -> str:
        """The layer name of a unit."""
        return self._layer.get(unit, unit)

    def entries(self, unit: str, label: str) -> dict[tuple[str, str], Any]:
        """The plan entries of ``unit`` under codec ``label`` (empty for fp32 or an unselected unit)."""
        if label == FLOAT.label:
            return {}
        if label not in self.pieces:
            raise ConfigError(f"codec {label!r} is not in the search space ({', '.join(self.by_label)}).")
        return self.pieces[label].get(unit, {})

    def plan(self, assignment: Mapping[str, str]) -> Any:
        """The QuantPlan giving each unit its choice (units not named stay float)."""
        import quantizer

        entries: dict[tuple[str, str], Any] = {}
        for u, label in assignment.items():
            entries.update(self.entries(u, label))
        if self.hidden and self.units and all(assignment.get(u) == "fp16" for u in self.units):
            for u in self.hidden:
                entries.update(self.entries(u, "fp16"))
        return quantizer.QuantPlan(entries)

    def single(self, unit: str, label: str) -> Any:
        """The plan quantizing ``unit`` alone with codec ``label``."""
        return self.plan({unit: label})


# ---------------------------------------------------------------------------------- strategy
SENSITIVITY_OPTIONS = {"unit": "layer"}


def _sens_key(unit: str, label: str) -> str:
    return f"{unit}|{label}"


class SensitivitySearch(SearchStrategy):
    """Queue one trial per (unit, codec); workers pop them until none is left."""

    uses = ("options",)  # no sampler: every trial is queued with fixed parameters

    def __init__(self, ctx: SearchContext):
        super().__init__(ctx)
        self.options = search_options(ctx.cfg, SENSITIVITY_OPTIONS, "sensitivity")
        self.choices = [c for c in space_choices(ctx.space) if not c.is_float]
        self.units = UnitPlans(ctx.model, self.choices, ctx.build_plan, str(self.options["unit"]))
        self.pairs = [(u, c.label) for u in self.units.units for c in self.choices
                      if self.units.entries(u, c.label)]
        n_trials = ctx.cfg.n_trials
        if n_trials is not None and n_trials < 1:
            raise ConfigError(f"search.n_trials must be at least 1 (or null for every unit x codec), got {n_trials}.")
        log.info("%s (one per %s and codec)", self.progress_desc(), self.units.unit_kind)

    # -- description -----------------------------------------------------------------------
    def progress_desc(self) -> str:
        """What the progress bar shows: the cost, units x codecs evaluations."""
        kind = "layers" if self.units.unit_kind == "layer" else "tensors"
        return (f"sensitivity: {len(self.units.units)} {kind} x {len(self.choices)} codecs = "
                f"{len(self.pairs)} evaluations")

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["unit"] = self.units.unit_kind
        d["codecs"] = [c.label for c in self.choices]
        d["units"] = list(self.units.units)
        return d

    def sampler(self) -> optuna.samplers.BaseSampler:
        # Never consulted: every trial's parameters are fixed when it is queued.
        return optuna.samplers.RandomSampler(seed=self.ctx.seed)

    def total(self) -> int:
        n = len(self.pairs)
        return min(n, self.ctx.cfg.n_trials) if self.ctx.cfg.n_trials else n

    # -- trials ----------------------------------------------------------------------------
    def prepare(self, study: optuna.Study) -> None:
        with self.ctx.claims.lock(study._study_id, "sensitivity", worker_id()):
            present = {t.user_attrs.get("sensitivity_point") for t in study.get_trials(deepcopy=False)}
            missing = [(u, c) for u, c in self.pairs if _sens_key(u, c) not in present]
            for u, c in missing:
                study.enqueue_trial({"unit": u, "codec": c}, user_attrs={"sensitivity_point": _sens_key(u, c)})
        if missing:
            log.info("sensitivity: queued %d evaluation(s) in the study", len(missing))

    def next_trial(self, study: optuna.Study) -> optuna.Trial | None:
        n_trials = self.ctx.cfg.n_trials
        if n_trials is not None:
            trials = study.get_trials(deepcopy=False)
            waiting = sum(1 for t in trials if t.state == optuna.trial.TrialState.WAITING)
            if len(counted_trials(trials)) - waiting >= n_trials:
                return None
        return pop_waiting(study)

    def suggest(self, trial: optuna.Trial) -> Candidate:
        params = {
            "unit": trial.suggest_categorical("unit", list(self.units.units)),
            "codec": trial.suggest_categorical("codec", [c.label for c in self.choices]),
        }
        return self.candidate(params)

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        unit, label = str(params["unit"]), str(params["codec"])
        choice = self.units.by_label.get(label)
        if choice is None or unit not in self.units.units:
            raise ConfigError(f"sensitivity trial names unit {unit!r} / codec {label!r}, which this search space "
                              "does not have (the study was made with another config?).")
        layer = self.units.layer_of(unit)
        # No nbits/mode columns: this is not a uniform setting (reports would read it as one).
        attrs = {"unit": unit, "codec": label, "codec_mode": choice.mode, "codec_nbits": choice.nbits,
                 "layer_type": self.units.layer_type.get(layer, "?"), "setting": f"{label} on {unit} alone"}
        safe = unit.replace("/", "_").replace(".", "_")
        return Candidate(attrs=attrs, plan=self.units.single(unit, label), label=f"{safe}_{label}")

    # -- outputs ---------------------------------------------------------------------------
    def finish(self, table: pd.DataFrame, summary: dict[str, Any], evaluator: Any) -> StrategyResult:
        """The ``sensitivity`` table (sensitivity.csv) and its ranking in ``summary["sensitivity"]``."""
        return sensitivity_result(table, summary, evaluator.metric.name, self.units)


def sensitivity_table(table: pd.DataFrame, metric: str, units: UnitPlans | None = None) -> pd.DataFrame:
    """``sensitivity.csv`` rows from a run's trials table (complete sensitivity trials only).

    Columns: ``unit, layer_type, codec, mode, nbits, weights, size_bytes,
    saved_bytes, <metric>, <metric>_drop, agreement, snr_db, psnr_db, trial``
    in unit order, then codec order (gentlest first).
    """
    drop = f"{metric}_drop"
    done = table[table["state"] == "COMPLETE"] if "unit" in table.columns else table.iloc[0:0]
    done = done[done["unit"].notna()].copy() if "unit" in done.columns else done
    if done.empty or "unit" not in done.columns:
        return pd.DataFrame(columns=["unit", "layer_type", "codec", "mode", "nbits", "size_bytes", metric, drop,
                                     "agreement", "snr_db", "psnr_db", "trial"])
    done = done.drop_duplicates(subset=["unit", "codec"], keep="first")
    if units is not None:
        uorder = {u: i for i, u in enumerate(units.units)}
        corder = {c.label: i for i, c in enumerate(units.choices)}
        done = done.assign(_u=done["unit"].map(uorder), _c=done["codec"].map(corder))
        done = done.sort_values(["_u", "_c"], kind="mergesort").drop(columns=["_u", "_c"])
        counts = _unit_weight_counts(units)
        done.insert(0, "weights", done["unit"].map(counts).astype("Int64"))
    done = done.rename(columns={"codec_mode": "mode", "codec_nbits": "nbits"})
    cols = ["unit", "layer_type", "codec", "mode", "nbits", "weights", "size_bytes", metric, drop,
            "agreement", "snr_db", "psnr_db", "trial"]
    out = done[[c for c in cols if c in done.columns]].reset_index(drop=True)
    return out


def _unit_weight_counts(units: UnitPlans) -> dict[str, int]:
    import quantizer

    counts: dict[str, int] = {}
    keys = {k for pieces in units.pieces.values() for p in pieces.values() for k in p}
    for t in quantizer.weight_tensors(units.model):
        if (t.layer, t.field) in keys:
            u = units.unit_of((t.layer, t.field))
            counts[u] = counts.get(u, 0) + t.count
    return counts


def sensitivity_result(table: pd.DataFrame, summary: dict[str, Any], metric: str,
                       units: UnitPlans | None) -> StrategyResult:
    """The ``sensitivity`` table and ``summary["sensitivity"]`` (the report draws sensitivity.png)."""
    from harness import analysis, rundir

    sens = sensitivity_table(table, metric, units)
    baseline = summary.get("baseline", {})
    if "size_bytes" in baseline and not sens.empty:
        sens.insert(sens.columns.get_loc("size_bytes") + 1, "saved_bytes",
                    (int(baseline["size_bytes"]) - sens["size_bytes"].astype("int64")).astype("Int64"))
    info: dict[str, Any] = {"file": rundir.table_file(rundir.SENSITIVITY_TABLE), "evaluations": int(len(sens)),
                            "units": int(sens["unit"].nunique()) if not sens.empty else 0,
                            "codecs": int(sens["codec"].nunique()) if not sens.empty else 0}
    if not sens.empty:
        ranking = analysis.sensitivity_ranking(sens, f"{metric}_drop")
        info["ranking"] = [
            {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in ranking.to_dict(orient="records")
        ]
    return StrategyResult(summary={"sensitivity": info}, tables={rundir.SENSITIVITY_TABLE: sens})


def load_sensitivity(source: str | Path) -> pd.DataFrame:
    """Read ``sensitivity.csv`` from a file or a sensitivity run directory.

    Raises:
        ConfigError: no such file (names the path).
    """
    p = Path(source)
    if p.is_dir():
        p = p / "sensitivity.csv"
    if not p.is_file():
        raise ConfigError(f"search.options.sensitivity={str(source)!r}: no sensitivity.csv there; run "
                          "`qsweep search=sensitivity` first and pass its run directory.")
    return pd.read_csv(p)

