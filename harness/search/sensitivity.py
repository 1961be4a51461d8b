"""``search=sensitivity``: how much each layer suffers from each codec, alone.

For every quantizable layer (``search.options.unit=layer``, the default) or
weight tensor (``unit=tensor``) and every codec of the search space, the
float model is quantized in that one place only and evaluated against the
cached float outputs. The metric drop and the output SNR make the table
``sensitivity`` (one row per unit x codec; the run directory's
``sensitivity.csv``, drawn by the report as the heatmap ``sensitivity.png``).
This is AIMET's QuantAnalyzer per-layer analysis for Core ML neuralnetwork
models; the mixed-precision search (:mod:`harness.search.mixed`) uses the same
per-unit decomposition (:class:`~harness.search.units.UnitPlans`).

The cost is one evaluation per unit x codec (the progress bar and the log say
how many). Each (unit, codec) is a queued trial of the study, so a
sensitivity run resumes, and several workers share it, like a grid.
The ``selector`` config group is not used here.

Example::

    qsweep model=digits_cnn search=sensitivity search.space.nbits=[8,4,2] search.space.mode=[linear,kmeans_lut]
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import optuna
import pandas as pd

from harness.config import SensitivityOptions
from harness import rundir
from harness.errors import ConfigError
from harness.search.base import Candidate, StrategyResult
from harness.search.choices import space_choices
from harness.search.queued import QueuedSearch
from harness.search.units import UnitPlans

log = logging.getLogger(__name__)


def _sens_key(unit: str, label: str) -> str:
    return f"{unit}|{label}"


class SensitivitySearch(QueuedSearch):
    """Queue one trial per (unit, codec); workers pop them until none is left."""

    options_type = SensitivityOptions
    point_attr = "sensitivity_point"
    point_noun = "evaluation(s)"
    all_trials = "every unit x codec"

    def setup(self) -> None:
        self.choices = [c for c in space_choices(self.ctx.space) if not c.is_float]
        self.units = UnitPlans(self.ctx.model, self.choices, self.ctx.build_plan, self.options.unit.value)
        self.pairs = [(u, c.label) for u in self.units.units for c in self.choices
                      if self.units.entries(u, c.label)]
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

    # -- trials ----------------------------------------------------------------------------
    def n_points(self) -> int:
        return len(self.pairs)

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        return [(_sens_key(u, c), {"unit": u, "codec": c}) for u, c in self.pairs]

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
        # Every cell of the table is a measurement: racing never stops one (the activation cache speeds them up).
        return Candidate(attrs=attrs, plan=self.units.single(unit, label), label=f"{safe}_{label}", race=False)

    # -- outputs ---------------------------------------------------------------------------
    def finish(self, table: pd.DataFrame, summary: dict[str, Any], evaluator: Any) -> StrategyResult:
        """The table ``sensitivity`` and ``summary["sensitivity"]`` (counts and the ranking)."""
        from harness import analysis

        metric = evaluator.metric.name
        sens = sensitivity_table(table, metric, self.units, summary.get("baseline", {}))
        info: dict[str, Any] = {"file": "sensitivity.csv", "evaluations": int(len(sens)),
                                "units": int(sens["unit"].nunique()) if not sens.empty else 0,
                                "codecs": int(sens["codec"].nunique()) if not sens.empty else 0}
        if not sens.empty:
            ranking = analysis.sensitivity_ranking(sens, f"{metric}_drop")
            info["ranking"] = [
                {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                for row in ranking.to_dict(orient="records")
            ]
        return StrategyResult(summary={"sensitivity": info}, tables={"sensitivity": sens})


def sensitivity_table(table: pd.DataFrame, metric: str, units: UnitPlans | None = None,
                      baseline: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The sensitivity table from a run's trials table (complete sensitivity trials only).

    Columns (:func:`harness.rundir.sensitivity_columns`): ``unit, layer_type, codec, mode, nbits, weights,
    size_bytes, saved_bytes, <metric>, <metric>_drop, agreement, snr_db,
    psnr_db, trial`` in unit order, then codec order (gentlest first);
    ``weights`` needs ``units``, ``saved_bytes`` the float ``baseline``.
    """
    done = table[table["state"] == "COMPLETE"] if "unit" in table.columns else table.iloc[0:0]
    done = done[done["unit"].notna()].copy() if "unit" in done.columns else done
    if done.empty or "unit" not in done.columns:
        return pd.DataFrame(columns=[c for c in rundir.sensitivity_columns(metric) if c not in ("weights", "saved_bytes")])
    done = done.drop_duplicates(subset=["unit", "codec"], keep="first")
    if units is not None:
        uorder = {u: i for i, u in enumerate(units.units)}
        corder = {c.label: i for i, c in enumerate(units.choices)}
        done = done.assign(_u=done["unit"].map(uorder), _c=done["codec"].map(corder))
        done = done.sort_values(["_u", "_c"], kind="mergesort").drop(columns=["_u", "_c"])
        done.insert(0, "weights", done["unit"].map(units.weight_counts()).astype("Int64"))
    # The unit's codec, not the (empty) uniform-setting columns of the same name.
    done = done.drop(columns=[c for c in ("mode", "nbits") if c in done.columns])
    done = done.rename(columns={"codec_mode": "mode", "codec_nbits": "nbits"})
    cols = [c for c in rundir.sensitivity_columns(metric) if c != "saved_bytes"]
    out = done[[c for c in cols if c in done.columns]].reset_index(drop=True)
    if baseline and "size_bytes" in baseline:
        out.insert(out.columns.get_loc("size_bytes") + 1, "saved_bytes",
                   (int(baseline["size_bytes"]) - out["size_bytes"].astype("int64")).astype("Int64"))
    return out
