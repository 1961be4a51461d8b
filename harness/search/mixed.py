"""``search=mixed``: mixed precision, one codec per layer, found by Optuna.

Every unit (a layer, or a tensor with ``search.options.unit=tensor``) gets its
own codec from the configured space (``search.space.nbits`` x
``search.space.mode``, plus ``fp32`` = keep float when
``search.options.keep_float``). The study's parameters are one categorical
per unit; its objectives are those of every sweep (size, task metric). The
sampler is Optuna's multi-objective TPE (``search.options.algorithm=tpe``) or
NSGA-II (``nsga2``), seeded with queued trials, in this order:

1. **probes** -- one trial per unit: that unit alone at the probe codec (the
   codec nearest 4 bits, ``search.options.probe_codec``), the rest float. Their
   output SNR gives each unit's sensitivity. With
   ``search.options.sensitivity=<sensitivity run dir>`` the measured table of
   a ``search=sensitivity`` run is used instead and no probe runs (the driver
   loads that run: ``SearchContext.runs``).
2. **uniform** -- every codec of the space applied everywhere (the uniform
   settings; the same plans as a grid run with the ``all`` selector).
3. **greedy** -- a path from the sensitivity ranking: start with every unit at
   its most aggressive (smallest) codec, then repeatedly move the unit whose
   move to a gentler codec removes the most predicted output noise per added
   byte (the most sensitive layers move first), until every unit is at its
   gentlest codec. ``search.options.greedy_points`` points of this path,
   evenly spread, are queued; then (``refine_steps``) the path is bisected
   between the largest point that loses more than the focus drop
   (``focus_drop``, default ``max_accuracy_drop``, else 0.01) and the smallest
   point within it, one trial at a time. The noise of (unit, codec) is the probe's
   output noise power (``10^(-SNR/10)``) scaled by the codec's weight
   quantization error relative to the probe codec's (measured on the weights,
   no evaluation needed); a sensitivity table gives it directly
   (:mod:`harness.search.noise`, :mod:`harness.search.greedy`).
4. **sampled** -- the sampler proposes assignments until ``search.n_trials``
   (study-wide budget: seeds and probes count) or ``search.timeout``.

Two assignments that compile to the same plan are evaluated once (the
driver's plan-hash dedupe). With ``search.max_accuracy_drop`` the sampler is
given the constraint ``drop <= max_accuracy_drop`` (Optuna's
``constraints_func``), so it concentrates on feasible models, and the run
reports the smallest model within the drop, or says clearly that none met it
and names the best-effort model that was saved.

``summary.json`` records ``hypervolume`` (:mod:`harness.search.mixed_summary`):
the 2-D hypervolume of this run's trials (size normalised by the float model's
size; reference point: float size, zero metric), of its uniform seeds, and -- with
``search.options.compare_to=<grid run dir>`` -- of that run's trials, plus the
smallest model within 1 point of the float metric for each. The acceptance
benchmark ``python -m harness.bench mixed`` runs a grid and a mixed run with
the same trial budget on ``digits_cnn`` and ``digits_resnet`` and prints both.

Example::

    qsweep model=digits_cnn search=mixed search.n_trials=60 search.max_accuracy_drop=0.005
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Mapping, Sequence

import optuna
import pandas as pd
from optuna.trial import TrialState

from harness.config import MixedAlgorithm, MixedOptions
from harness.errors import ConfigError
from harness.rundir import DROP_BOUND_COLUMN
from harness.search.base import Candidate, SearchStrategy, StrategyResult
from harness.search.choices import FLOAT, Choice, space_choices
from harness.search.greedy import greedy_path, spread
from harness.search.mixed_summary import SEED_ATTR, mixed_summary, target_note
from harness.search.noise import noise_from_snr, predicted_noise, unit_profiles
from harness.search.units import UnitPlans
from harness.study import StudyDB

log = logging.getLogger(__name__)

__all__ = ["MixedSearch", "GREEDY_FLAG", "PARAM_PREFIX"]

#: Seeds whose figures the search itself reads: evaluated on every sample, never stopped by racing.
MEASURED_SEEDS = ("probe", "greedy", "refine")
#: Study system attribute holding the greedy path once it is queued (every worker reads the same path).
GREEDY_FLAG = "qsweep:mixed_greedy"
PARAM_PREFIX = "codec:"


def _drop_of(trial: optuna.trial.FrozenTrial) -> float | None:
    """The task-metric drop (``<metric>_drop`` user attribute) of a trial, or None; for a trial racing
    stopped, the least drop it could still have reached (``drop_lower_bound``: its recorded drop is
    that of the samples it saw)."""
    bound = trial.user_attrs.get(DROP_BOUND_COLUMN)
    if bound is not None:
        return float(bound)
    for k, v in trial.user_attrs.items():
        if k.endswith("_drop") and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


class MixedSearch(SearchStrategy):
    """Optuna over one codec per unit, seeded with probes, uniform settings and a greedy path."""

    options_type = MixedOptions
    run_options = ("sensitivity", "compare_to")
    sampler_options = True
    needs_budget = True

    def setup(self) -> None:
        o: MixedOptions = self.options
        self.codecs: list[Choice] = [c for c in space_choices(self.ctx.space) if not c.is_float]
        self.choices: list[Choice] = self.codecs + ([FLOAT] if o.keep_float else [])
        self.labels = [c.label for c in self.choices]
        #: What the other units get in a probe: float, or the gentlest codec when float is not a choice.
        self.rest_label = FLOAT.label if o.keep_float else self.codecs[0].label
        self.units = UnitPlans(self.ctx.model, self.codecs, self.ctx.build_plan, o.unit.value)
        self.probe_label = self._probe_label(o.probe_codec)
        self.sens_table: pd.DataFrame | None = None
        if o.sensitivity:
            self.sens_table = self.ctx.runs[o.sensitivity].sensitivity
            if self.sens_table is None:
                raise ConfigError(f"search.options.sensitivity={o.sensitivity!r}: no sensitivity.csv there; run "
                                  "`qsweep search=sensitivity` first and pass its run directory.")
        self.max_drop = self.ctx.cfg.max_accuracy_drop
        fd = o.focus_drop
        self.focus_drop = float(fd if fd is not None else self.max_drop if self.max_drop is not None else 0.01)
        self._greedy_done = False
        log.info("mixed: %d %ss x %d codecs (%s); sampler %s", len(self.units.units), self.units.unit_kind,
                 len(self.labels), ", ".join(self.labels), o.algorithm.value)

    # -- set-up ----------------------------------------------------------------------------
    def _probe_label(self, wanted: str | None) -> str:
        if wanted is not None:
            if wanted not in self.units.by_label:
                raise ConfigError(f"search.options.probe_codec={wanted!r} is not a codec of the space "
                                  f"({', '.join(c.label for c in self.codecs)}).")
            return wanted
        quantizing = [c for c in self.codecs if c.nbits < 16] or self.codecs
        return min(quantizing, key=lambda c: (abs(c.nbits - 4), c.mode != "kmeans_lut", -c.nbits,
                                              c.algorithm != "rtn", c.bias_correction)).label

    def _constraints(self, trial: optuna.trial.FrozenTrial) -> list[float]:
        d = _drop_of(trial)
        if d is None or self.max_drop is None:
            return [0.0]
        return [d - float(self.max_drop)]

    def sampler_class(self) -> type[optuna.samplers.BaseSampler]:
        if self.options.algorithm == MixedAlgorithm.tpe:
            return optuna.samplers.TPESampler
        return optuna.samplers.NSGAIISampler

    def sampler_defaults(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.max_drop is not None:
            out["constraints_func"] = self._constraints
        if self.options.algorithm == MixedAlgorithm.tpe:
            out.update(multivariate=True, n_startup_trials=5)
        else:
            out["population_size"] = max(8, min(30, 2 * len(self.units.units) + 4))
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["units"] = list(self.units.units)
        d["codecs"] = list(self.labels)
        options = self.options_record()
        d["options"] = {k: options[k] for k in ("algorithm", "unit", "keep_float", "seed_uniform", "seed_greedy",
                                                 "greedy_points", "refine_steps", "probe_codec", "sensitivity")}
        d["focus_drop"] = self.focus_drop
        d["probe_codec"] = self.probe_label
        d["sampler"] = {k: v for k, v in dict(self.ctx.cfg.sampler or {}).items()}
        return d

    def progress_desc(self) -> str:
        return f"mixed: {len(self.units.units)} {self.units.unit_kind}s x {len(self.labels)} codecs"

    # -- parameters ------------------------------------------------------------------------
    def param(self, unit: str) -> str:
        return PARAM_PREFIX + unit

    def params_of(self, assignment: Mapping[str, str]) -> dict[str, str]:
        return {self.param(u): assignment.get(u, self.rest_label) for u in self.units.units}

    def _enqueue(self, db: StudyDB, assignment: Mapping[str, str], seed: str, **attrs: Any) -> None:
        db.enqueue(self.params_of(assignment), user_attrs={SEED_ATTR: seed, **attrs}, skip_if_exists=True)

    def prepare(self, db: StudyDB) -> None:
        """Queue the probes (unless a sensitivity table is given) and the uniform settings, once."""
        with db.lock("mixed-seeds"):
            seen = {t.user_attrs.get(SEED_ATTR) for t in db.trials()}
            if seen & {"probe", "uniform"}:
                return
            n = 0
            if self.sens_table is None and self.options.seed_greedy:
                for u in self.units.units:
                    if self.units.entries(u, self.probe_label):
                        self._enqueue(db, {**{v: self.rest_label for v in self.units.units}, u: self.probe_label},
                                      "probe")
                        n += 1
            if self.options.seed_uniform:  # smallest first: racing stops a seed only once a smaller one finished
                for c in reversed(self.codecs):
                    self._enqueue(db, {u: c.label for u in self.units.units}, "uniform")
                    n += 1
        log.info("mixed: queued %d seed trial(s) (%s)", n, "uniform settings" if self.sens_table is not None
                 else "per-unit probes, uniform settings")

    def _maybe_greedy(self, db: StudyDB) -> None:
        """Queue the greedy path once every probe has finished (idempotent across workers)."""
        if self._greedy_done or not self.options.seed_greedy or self.options.greedy_points == 0:
            self._greedy_done = True
            return
        if db.study_attrs().get(GREEDY_FLAG):
            self._greedy_done = True
            return
        probes = [t for t in db.trials() if t.user_attrs.get(SEED_ATTR) == "probe"]
        if any(not t.state.is_finished() for t in probes):
            return  # probes still queued or running: the path needs their results
        with db.lock("mixed-greedy"):
            if db.study_attrs().get(GREEDY_FLAG):
                self._greedy_done = True
                return
            path = self.path_from_probes(probes)
            picks = spread(len(path), self.options.greedy_points)
            for i in picks:
                self._enqueue(db, path[i], "greedy", path_index=i)
            db.set_study_attr(GREEDY_FLAG, path)
        self._greedy_done = True
        log.info("mixed: greedy path from the sensitivity ranking has %d steps; queued %d of them",
                 len(path), len(picks))

    def _maybe_refine(self, db: StudyDB) -> bool:
        """Bisect the greedy path around the focus drop: queue one point, or return False.

        Between the largest evaluated path point that loses more than the focus
        drop and the smallest one within it, the middle point is queued, one at a
        time (each needs the previous result), at most ``refine_steps`` times.
        """
        steps = self.options.refine_steps
        if steps <= 0 or not self.options.seed_greedy:
            return False
        path = db.study_attrs().get(GREEDY_FLAG)
        if not path:
            return False
        on_path = [t for t in db.trials() if t.user_attrs.get("path_index") is not None]
        if any(not t.state.is_finished() for t in on_path):
            return False
        if sum(1 for t in on_path if t.user_attrs.get(SEED_ATTR) == "refine") >= steps:
            return False
        focus = self.focus_drop
        drops = {}
        for t in on_path:
            d = _drop_of(t)
            if t.state == TrialState.COMPLETE and d is not None:
                drops[int(t.user_attrs["path_index"])] = d
        ok = [i for i, d in drops.items() if d <= focus + 1e-12]
        if not ok:
            return False
        hi = min(ok)
        below = [i for i, d in drops.items() if i < hi and d > focus + 1e-12]
        lo = max(below) if below else None
        if lo is None or hi - lo <= 1:
            return False
        mid = (lo + hi) // 2
        with db.lock("mixed-refine"):
            if any(t.user_attrs.get("path_index") == mid for t in db.trials()):
                return False
            self._enqueue(db, path[mid], "refine", path_index=mid)
        log.info("mixed: refining the greedy path between steps %d and %d (drop %.4f / %.4f; focus %g)",
                 lo, hi, drops[lo], drops[hi], focus)
        return True

    def path_from_probes(self, probes: Sequence[optuna.trial.FrozenTrial]) -> list[dict[str, str]]:
        """The greedy path (uniform assignments left out: they are seeds already)."""
        delta, err = unit_profiles(self.units)
        labels = [c.label for c in self.choices]
        measured: dict[tuple[str, str], float] = {}
        probe_noise: dict[str, float] = {}
        probe_label: str | dict[str, str] = self.probe_label
        if self.sens_table is not None:
            measured, probe_noise, probe_label = self._from_table(err)
        else:
            for t in probes:
                if t.state != TrialState.COMPLETE:
                    continue
                a = self.assignment(t.params)
                unit = next((u for u, c in a.items() if c == self.probe_label and c != self.rest_label), None)
                noise = noise_from_snr(t.user_attrs.get("snr_db"))
                if unit is not None and noise is not None:
                    probe_noise[unit] = noise
        missing = [u for u in self.units.units if u not in probe_noise and not any(k[0] == u for k in measured)]
        if missing:
            log.warning("mixed: no sensitivity for %s (probe failed?); treated as the most sensitive",
                        ", ".join(missing))
            worst = max(probe_noise.values(), default=1.0)
            for u in missing:
                probe_noise[u] = worst
        noise = predicted_noise(self.units.units, labels, err, probe_label, probe_noise, measured)
        # A unit a codec does not touch (not selected) keeps float: same bytes, no noise.
        for u in self.units.units:
            for c in labels:
                if c != FLOAT.label and not self.units.entries(u, c):
                    delta[u][c], noise[u][c] = 0.0, 0.0
        path = greedy_path(self.units.units, labels, delta, noise)
        return [a for a in path if len(set(a.values())) > 1]

    def _from_table(self, err: Mapping[str, Mapping[str, float]]):
        """Measured noise from a sensitivity table: (measured, probe noise, per-unit probe codec)."""
        t = self.sens_table
        assert t is not None
        unit_col = "unit" if "unit" in t.columns else "layer"
        measured: dict[tuple[str, str], float] = {}
        for row in t.itertuples(index=False):
            n = noise_from_snr(getattr(row, "snr_db", None))
            u, c = str(getattr(row, unit_col)), str(row.codec)
            if n is not None and u in self.units.units and c in self.labels:
                measured[(u, c)] = n
        probe_noise, probe_label = {}, {}
        for u in self.units.units:
            known = [(c, n) for (uu, c), n in measured.items() if uu == u and err[u].get(c, 0) > 0]
            if known:
                c, n = min(known, key=lambda cn: abs(math.log10(max(err[u][cn[0]], 1e-30))))
                probe_label[u], probe_noise[u] = c, n
            else:
                probe_label[u] = self.probe_label
        return measured, probe_noise, probe_label

    def next_trial(self, db: StudyDB) -> optuna.Trial | None:
        if self.budget_reached(db):
            return None
        if not db.trials(states=(TrialState.WAITING,)):
            self._maybe_greedy(db)
            self._maybe_refine(db)
        return self.ask(db)

    def assignment(self, params: Mapping[str, Any]) -> dict[str, str]:
        return {u: str(params.get(self.param(u), FLOAT.label)) for u in self.units.units}

    def suggest(self, trial: optuna.Trial) -> Candidate:
        params = {self.param(u): trial.suggest_categorical(self.param(u), self.labels) for u in self.units.units}
        cand = self.candidate(params)
        seed = trial.user_attrs.get(SEED_ATTR) or "sampled"
        cand.attrs[SEED_ATTR] = seed
        # Probes give the sensitivity ranking (their SNR) and path points the bisection (their drop): measured
        # on every sample. Uniform seeds and sampled trials race.
        cand.race = seed not in MEASURED_SEEDS
        return cand

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        a = self.assignment(params)
        bad = sorted({c for c in a.values() if c not in self.labels})
        if bad:
            raise ConfigError(f"mixed trial uses codec(s) {bad} that this search space does not have "
                              "(the study was made with another config?).")
        plan = self.units.plan(a)
        weights = self.units.weight_counts()
        total = sum(weights.get(u, 0) for u in self.units.units) or 1
        mean_bits = sum(self.units.by_label[c].nbits * weights.get(u, 0) for u, c in a.items()
                        if c in self.units.by_label) + sum(32 * weights.get(u, 0) for u, c in a.items()
                                                             if c == FLOAT.label)
        mean_bits /= total
        uniform = len(set(a.values())) == 1
        ch = self.units.by_label.get(next(iter(a.values()))) if uniform else None
        used = [self.units.by_label[c] for c in a.values() if c in self.units.by_label]
        algos, bcs = {c.algorithm for c in used}, {c.bias_correction for c in used}
        attrs: dict[str, Any] = {
            "mode": ch.mode if ch is not None else ("float" if uniform else "mixed"),
            "nbits": ch.nbits if ch is not None else None,
            "algorithm": algos.pop() if len(algos) == 1 else ("mixed" if algos else None),
            "bias_correction": bcs.pop() if len(bcs) == 1 else None,
            "mean_bits": round(mean_bits, 3),
            "setting": (ch.label if ch is not None else
                        "fp32" if uniform else f"mixed, {mean_bits:.2f} bits/weight on average"),
            "assignment": json.dumps(a),
        }
        label = ch.label if ch is not None else f"mixed_{mean_bits:.2f}bit"
        return Candidate(attrs=attrs, plan=plan, label=label.replace(".", "p"))

    # -- outputs ---------------------------------------------------------------------------
    def finish(self, table: pd.DataFrame, summary: dict[str, Any], evaluator: Any) -> StrategyResult:
        """Hypervolumes, the seeds and codecs, and the accuracy-target outcome for summary.json."""
        ref = self.options.compare_to
        out: dict[str, Any] = {
            "hypervolume": mixed_summary(table, evaluator.metric, evaluator.baseline,
                                         (ref, self.ctx.runs[ref]) if ref else None)}
        seeds = table[SEED_ATTR].value_counts().to_dict() if SEED_ATTR in table.columns else {}
        out["mixed"] = {"trials_by_seed": {str(k): int(v) for k, v in seeds.items()},
                        "units": list(self.units.units), "codecs": list(self.labels),
                        "probe_codec": self.probe_label}
        target = target_note(summary, evaluator.metric)
        if target is not None:
            out["target"] = target
        return StrategyResult(summary=out)
