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
   a ``search=sensitivity`` run is used instead and no probe runs.
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
   no evaluation needed); a sensitivity table gives it directly.
4. **sampled** -- the sampler proposes assignments until ``search.n_trials``
   (study-wide budget: seeds and probes count) or ``search.timeout``.

Two assignments that compile to the same plan are evaluated once (the
driver's plan-hash dedupe). With ``search.max_accuracy_drop`` the sampler is
given the constraint ``drop <= max_accuracy_drop`` (Optuna's
``constraints_func``), so it concentrates on feasible models, and the run
reports the smallest model within the drop, or says clearly that none met it
and names the best-effort model that was saved.

``summary.json`` records ``hypervolume``: the 2-D hypervolume of this run's
trials (size normalised by the float model's size; reference point: float
size, zero metric), of its uniform seeds, and -- with
``search.options.compare_to=<grid run dir>`` -- of that run's trials, plus the
smallest model within 1 point of the float metric for each. The acceptance
benchmark ``python tests/bench/bench_mixed.py --model digits_cnn`` runs a
grid and a mixed run with the same trial budget and prints both.

Example::

    qsweep model=digits_cnn search=mixed search.n_trials=60 search.max_accuracy_drop=0.005
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from harness.errors import ConfigError
from harness.search.base import Candidate, SearchContext, SearchStrategy, StrategyResult
from harness.sensitivity import FLOAT, Choice, UnitPlans, load_sensitivity, search_options, space_choices
from harness.study import counted_trials, mark_running, worker_id

log = logging.getLogger(__name__)

__all__ = ["MixedSearch", "greedy_path", "spread", "unit_profiles", "MIXED_OPTIONS"]

MIXED_OPTIONS: dict[str, Any] = {
    "algorithm": "tpe",       # tpe | nsga2
    "unit": "layer",          # layer | tensor
    "keep_float": True,       # a unit may stay float32 (fp32)
    "seed_uniform": True,     # queue every codec applied everywhere
    "seed_greedy": True,      # queue the greedy path from the sensitivity ranking
    "greedy_points": 8,       # this many points of the greedy path, evenly spread
    "refine_steps": 6,        # then bisect the path around the focus drop, at most this many trials
    "focus_drop": None,       # the drop the bisection aims at (default: max_accuracy_drop, else 0.01)
    "probe_codec": None,      # codec label of the per-unit probes (default: the codec nearest 4 bits)
    "sensitivity": None,      # run dir (or csv) of a search=sensitivity run: use it instead of probes
    "compare_to": None,       # a grid run dir whose hypervolume summary.json records beside this run's
}
ALGORITHMS = ("tpe", "nsga2")
SEED_ATTR = "mixed_seed"
GREEDY_FLAG = "qsweep:mixed_greedy"
PARAM_PREFIX = "codec:"


# --------------------------------------------------------------------------- the greedy path
def greedy_path(units: Sequence[str], labels: Sequence[str], delta_bytes: Mapping[str, Mapping[str, float]],
                noise: Mapping[str, Mapping[str, float]]) -> list[dict[str, str]]:
    """Assignments from every unit at its smallest codec to every unit at its least noisy one.

    ``delta_bytes[u][c]`` is the size change of quantizing unit ``u`` with
    codec ``c`` (negative = smaller); ``noise[u][c]`` its predicted output
    noise. Each step makes the one move (unit, gentler codec) that removes
    the most noise per added byte (a move that removes noise without adding
    bytes comes first). Noise is assumed additive over units.

    >>> path = greedy_path(["a", "b"], ["lo", "hi"],
    ...                    {"a": {"lo": -90, "hi": -50}, "b": {"lo": -90, "hi": -50}},
    ...                    {"a": {"lo": 1.0, "hi": 0.1}, "b": {"lo": 0.1, "hi": 0.01}})
    >>> [p["a"] + "/" + p["b"] for p in path]
    ['lo/lo', 'hi/lo', 'hi/hi']
    """
    cur = {u: min(labels, key=lambda c: (delta_bytes[u][c], noise[u][c])) for u in units}
    path = [dict(cur)]
    while True:
        best: tuple[float, float, str, str] | None = None
        for u in units:
            here_b, here_n = delta_bytes[u][cur[u]], noise[u][cur[u]]
            for c in labels:
                gain = here_n - noise[u][c]
                if gain <= 0:
                    continue
                cost = delta_bytes[u][c] - here_b
                rate = math.inf if cost <= 0 else gain / cost
                key = (rate, -cost)
                if best is None or key > best[:2]:
                    best = (rate, -cost, u, c)
        if best is None:
            return path
        cur[best[2]] = best[3]
        path.append(dict(cur))


def spread(n_items: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``range(n_items)`` (ends included)."""
    if k <= 0 or n_items <= 0:
        return []
    if k >= n_items:
        return list(range(n_items))
    return sorted({int(round(i * (n_items - 1) / (k - 1))) for i in range(k)}) if k > 1 else [n_items // 2]


def unit_profiles(units: UnitPlans) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per unit and codec: stored-bytes change and weight squared error vs float.

    Measured on the weights (each uniform plan applied once, through the codec
    cache), no evaluation. Returns ``(delta_bytes, weight_sq_error)``.
    """
    import quantizer
    from quantizer.tensors import get_weight_params, stored_bytes

    delta: dict[str, dict[str, float]] = {u: {FLOAT.label: 0.0} for u in units.units}
    err: dict[str, dict[str, float]] = {u: {FLOAT.label: 0.0} for u in units.units}
    float_cache: dict[bool, Any] = {}
    for label, plan in units.uniform.items():
        fused = plan.quantizes
        if fused not in float_cache:
            float_cache[fused] = quantizer.fuse(units.model) if fused else units.model
        ref = float_cache[fused]
        q = quantizer.apply_plan(units.model, plan)
        ref_layers = {layer.name: layer for layer in quantizer.iter_layers(ref)}
        q_layers = {layer.name: layer for layer in quantizer.iter_layers(q)}
        for u in units.units:
            delta[u][label] = 0.0
            err[u][label] = 0.0
        for (lname, field), codec in plan.items():
            if codec is None:
                continue
            u = units.unit_of((lname, field))
            if u not in delta:  # a layer fusion folds away (see UnitPlans.hidden)
                continue
            rl, ql = ref_layers[lname], q_layers[lname]
            rw = quantizer.layer_weights(rl)[field]
            qwp = get_weight_params(ql, field)
            _, shape, axis = rw
            a = quantizer.decode_weights(rw[0], shape, axis).astype(np.float64)
            b = quantizer.decode_weights(qwp, shape, axis).astype(np.float64)
            err[u][label] += float(np.sum((a - b) ** 2))
            delta[u][label] += float(stored_bytes(qwp) - stored_bytes(rw[0]))
    return delta, err


def _drop_of(trial: optuna.trial.FrozenTrial) -> float | None:
    """The task-metric drop (``<metric>_drop`` user attribute) of a trial, or None."""
    for k, v in trial.user_attrs.items():
        if k.endswith("_drop") and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _noise_from_snr(snr_db: Any) -> float | None:
    try:
        v = float(snr_db)
    except (TypeError, ValueError):
        return None
    if math.isnan(v):
        return None
    if math.isinf(v):
        return 0.0 if v > 0 else 1.0
    return 10.0 ** (-v / 10.0)


def predicted_noise(units: Sequence[str], labels: Sequence[str], err: Mapping[str, Mapping[str, float]],
                    probe_label: str | Mapping[str, str], probe_noise: Mapping[str, float],
                    measured: Mapping[tuple[str, str], float] | None = None) -> dict[str, dict[str, float]]:
    """Output noise of each (unit, codec): measured when known, else the unit's probe noise
    scaled by the codec's weight error relative to the probe codec's."""
    measured = measured or {}
    out: dict[str, dict[str, float]] = {}
    for u in units:
        p = probe_label if isinstance(probe_label, str) else probe_label[u]
        gain = probe_noise.get(u, 0.0) / err[u][p] if err[u].get(p, 0.0) > 0 else 0.0
        out[u] = {}
        for c in labels:
            if (u, c) in measured:
                out[u][c] = measured[(u, c)]
            elif c == FLOAT.label:
                out[u][c] = 0.0
            else:
                out[u][c] = gain * err[u][c]
    return out


# ---------------------------------------------------------------------------------- strategy
class MixedSearch(SearchStrategy):
    """Optuna over one codec per unit, seeded with probes, uniform settings and a greedy path."""

    def __init__(self, ctx: SearchContext):
        super().__init__(ctx)
        o = search_options(ctx.cfg, MIXED_OPTIONS, "mixed")
        if o["algorithm"] not in ALGORITHMS:
            raise ConfigError(f"search.options.algorithm={o['algorithm']!r}; choose one of {', '.join(ALGORITHMS)}.")
        n_trials, timeout = ctx.cfg.n_trials, ctx.cfg.timeout
        if n_trials is None and timeout is None:
            raise ConfigError("search=mixed needs a budget: set search.n_trials and/or search.timeout.")
        if n_trials is not None and n_trials < 1:
            raise ConfigError(f"search.n_trials must be at least 1, got {n_trials}.")
        gp = o["greedy_points"]
        if isinstance(gp, bool) or not isinstance(gp, int) or gp < 0:
            raise ConfigError(f"search.options.greedy_points must be an integer >= 0, got {gp!r}.")
        self.options = o
        codecs = space_choices(ctx.space)
        self.codecs: list[Choice] = [c for c in codecs if not c.is_float]
        self.choices: list[Choice] = self.codecs + ([FLOAT] if o["keep_float"] else [])
        self.labels = [c.label for c in self.choices]
        #: What the other units get in a probe: float, or the gentlest codec when float is not a choice.
        self.rest_label = FLOAT.label if o["keep_float"] else self.codecs[0].label
        self.units = UnitPlans(ctx.model, self.codecs, ctx.build_plan, str(o["unit"]))
        self.probe_label = self._probe_label(o["probe_codec"])
        self.sens_table: pd.DataFrame | None = None
        if o["sensitivity"]:
            self.sens_table = load_sensitivity(str(o["sensitivity"]))
        self.max_drop = ctx.cfg.max_accuracy_drop
        fd = o["focus_drop"]
        if fd is not None and (isinstance(fd, bool) or not isinstance(fd, (int, float)) or fd < 0):
            raise ConfigError(f"search.options.focus_drop must be a number >= 0 or null, got {fd!r}.")
        rs = o["refine_steps"]
        if isinstance(rs, bool) or not isinstance(rs, int) or rs < 0:
            raise ConfigError(f"search.options.refine_steps must be an integer >= 0, got {rs!r}.")
        self.focus_drop = float(fd if fd is not None else self.max_drop if self.max_drop is not None else 0.01)
        self._sampler = self._make_sampler()
        self._greedy_done = False
        log.info("mixed: %d %ss x %d codecs (%s); sampler %s", len(self.units.units), self.units.unit_kind,
                 len(self.labels), ", ".join(self.labels), o["algorithm"])

    # -- set-up ----------------------------------------------------------------------------
    def _probe_label(self, wanted: Any) -> str:
        if wanted is not None:
            if str(wanted) not in self.units.by_label:
                raise ConfigError(f"search.options.probe_codec={wanted!r} is not a codec of the space "
                                  f"({', '.join(c.label for c in self.codecs)}).")
            return str(wanted)
        quantizing = [c for c in self.codecs if c.nbits < 16] or self.codecs
        return min(quantizing, key=lambda c: (abs(c.nbits - 4), c.mode != "kmeans_lut", -c.nbits)).label

    def _constraints(self, trial: optuna.trial.FrozenTrial) -> list[float]:
        d = _drop_of(trial)
        if d is None or self.max_drop is None:
            return [0.0]
        return [d - float(self.max_drop)]

    def _make_sampler(self) -> optuna.samplers.BaseSampler:
        kwargs = dict(self.ctx.cfg.sampler or {})
        kwargs.setdefault("seed", self.ctx.seed)
        if self.max_drop is not None:
            kwargs.setdefault("constraints_func", self._constraints)
        algo = self.options["algorithm"]
        # constraints_func is deprecated in Optuna 5 in favour of Trial.set_constraint, which must be
        # called before the driver tells the result; constraints_func works on Optuna 4 and 5.
        warnings.filterwarnings("ignore", message=".*constraints_func.*deprecated", category=FutureWarning)
        try:
            if algo == "tpe":
                kwargs.setdefault("multivariate", True)
                kwargs.setdefault("n_startup_trials", 5)
                return optuna.samplers.TPESampler(**kwargs)
            kwargs.setdefault("population_size", max(8, min(30, 2 * len(self.units.units) + 4)))
            return optuna.samplers.NSGAIISampler(**kwargs)
        except TypeError as e:
            raise ConfigError(f"search.sampler={dict(self.ctx.cfg.sampler or {})!r} does not fit the {algo} sampler: "
                              f"{e}") from None

    def sampler(self) -> optuna.samplers.BaseSampler:
        return self._sampler

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["units"] = list(self.units.units)
        d["codecs"] = list(self.labels)
        d["options"] = {k: self.options[k] for k in ("algorithm", "unit", "keep_float", "seed_uniform",
                                                     "seed_greedy", "greedy_points", "refine_steps", "probe_codec",
                                                     "sensitivity")}
        d["focus_drop"] = self.focus_drop
        d["probe_codec"] = self.probe_label
        d["sampler"] = {k: v for k, v in dict(self.ctx.cfg.sampler or {}).items()}
        return d

    def total(self) -> int | None:
        return self.ctx.cfg.n_trials

    def progress_desc(self) -> str:
        return f"mixed: {len(self.units.units)} {self.units.unit_kind}s x {len(self.labels)} codecs"

    # -- parameters ------------------------------------------------------------------------
    def param(self, unit: str) -> str:
        return PARAM_PREFIX + unit

    def params_of(self, assignment: Mapping[str, str]) -> dict[str, str]:
        return {self.param(u): assignment.get(u, self.rest_label) for u in self.units.units}

    def _enqueue(self, study: optuna.Study, assignment: Mapping[str, str], seed: str, **attrs: Any) -> None:
        study.enqueue_trial(self.params_of(assignment), user_attrs={SEED_ATTR: seed, **attrs}, skip_if_exists=True)

    def prepare(self, study: optuna.Study) -> None:
        """Queue the probes (unless a sensitivity table is given) and the uniform settings, once."""
        with self.ctx.claims.lock(study._study_id, "mixed-seeds", worker_id()):
            seen = {t.user_attrs.get(SEED_ATTR) for t in study.get_trials(deepcopy=False)}
            if seen & {"probe", "uniform"}:
                return
            n = 0
            if self.sens_table is None and self.options["seed_greedy"]:
                for u in self.units.units:
                    if self.units.entries(u, self.probe_label):
                        self._enqueue(study, {**{v: self.rest_label for v in self.units.units}, u: self.probe_label},
                                      "probe")
                        n += 1
            if self.options["seed_uniform"]:
                for c in self.codecs:
                    self._enqueue(study, {u: c.label for u in self.units.units}, "uniform")
                    n += 1
        log.info("mixed: queued %d seed trial(s) (%s)", n, "uniform settings" if self.sens_table is not None
                 else "per-unit probes, uniform settings")

    def _maybe_greedy(self, study: optuna.Study) -> None:
        """Queue the greedy path once every probe has finished (idempotent across workers)."""
        if self._greedy_done or not self.options["seed_greedy"] or self.options["greedy_points"] == 0:
            self._greedy_done = True
            return
        storage = study._storage
        if storage.get_study_system_attrs(study._study_id).get(GREEDY_FLAG):
            self._greedy_done = True
            return
        trials = study.get_trials(deepcopy=False)
        probes = [t for t in trials if t.user_attrs.get(SEED_ATTR) == "probe"]
        if any(not t.state.is_finished() for t in probes):
            return  # probes still queued or running: the path needs their results
        with self.ctx.claims.lock(study._study_id, "mixed-greedy", worker_id()):
            if storage.get_study_system_attrs(study._study_id).get(GREEDY_FLAG):
                self._greedy_done = True
                return
            path = self.path_from_probes(probes)
            picks = spread(len(path), int(self.options["greedy_points"]))
            for i in picks:
                self._enqueue(study, path[i], "greedy", path_index=i)
            storage.set_study_system_attr(study._study_id, GREEDY_FLAG, path)
        self._greedy_done = True
        log.info("mixed: greedy path from the sensitivity ranking has %d steps; queued %d of them",
                 len(path), len(picks))

    def _maybe_refine(self, study: optuna.Study) -> bool:
        """Bisect the greedy path around the focus drop: queue one point, or return False.

        Between the largest evaluated path point that loses more than the focus
        drop and the smallest one within it, the middle point is queued, one at a
        time (each needs the previous result), at most ``refine_steps`` times.
        """
        steps = int(self.options["refine_steps"])
        if steps <= 0 or not self.options["seed_greedy"]:
            return False
        storage = study._storage
        path = storage.get_study_system_attrs(study._study_id).get(GREEDY_FLAG)
        if not path:
            return False
        trials = study.get_trials(deepcopy=False)
        on_path = [t for t in trials if t.user_attrs.get("path_index") is not None]
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
        with self.ctx.claims.lock(study._study_id, "mixed-refine", worker_id()):
            if any(t.user_attrs.get("path_index") == mid for t in study.get_trials(deepcopy=False)):
                return False
            self._enqueue(study, path[mid], "refine", path_index=mid)
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
                noise = _noise_from_snr(t.user_attrs.get("snr_db"))
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
            n = _noise_from_snr(getattr(row, "snr_db", None))
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

    def next_trial(self, study: optuna.Study) -> optuna.Trial | None:
        n_trials = self.ctx.cfg.n_trials
        trials = study.get_trials(deepcopy=False)
        if n_trials is not None:
            waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
            if len(counted_trials(trials)) - waiting >= n_trials:
                return None
        if not any(t.state == TrialState.WAITING for t in trials):
            self._maybe_greedy(study)
            self._maybe_refine(study)
        with warnings.catch_warnings():  # the driver records heartbeats itself (harness.study.Heartbeat)
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = study.ask()
        mark_running(trial)
        return trial

    def assignment(self, params: Mapping[str, Any]) -> dict[str, str]:
        return {u: str(params.get(self.param(u), FLOAT.label)) for u in self.units.units}

    def suggest(self, trial: optuna.Trial) -> Candidate:
        params = {self.param(u): trial.suggest_categorical(self.param(u), self.labels) for u in self.units.units}
        cand = self.candidate(params)
        seed = trial.user_attrs.get(SEED_ATTR) if hasattr(trial, "user_attrs") else None
        cand.attrs[SEED_ATTR] = seed or "sampled"
        return cand

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        a = self.assignment(params)
        bad = sorted({c for c in a.values() if c not in self.labels})
        if bad:
            raise ConfigError(f"mixed trial uses codec(s) {bad} that this search space does not have "
                              "(the study was made with another config?).")
        plan = self.units.plan(a)
        weights = self._weights()
        total = sum(weights.get(u, 0) for u in self.units.units) or 1
        mean_bits = sum(self.units.by_label[c].nbits * weights.get(u, 0) for u, c in a.items()
                        if c in self.units.by_label) + sum(32 * weights.get(u, 0) for u, c in a.items()
                                                             if c == FLOAT.label)
        mean_bits /= total
        uniform = len(set(a.values())) == 1
        ch = self.units.by_label.get(next(iter(a.values()))) if uniform else None
        attrs: dict[str, Any] = {
            "mode": ch.mode if ch is not None else ("float" if uniform else "mixed"),
            "nbits": ch.nbits if ch is not None else None,
            "mean_bits": round(mean_bits, 3),
            "setting": (ch.label if ch is not None else
                        "fp32" if uniform else f"mixed, {mean_bits:.2f} bits/weight on average"),
            "assignment": json.dumps(a),
        }
        label = ch.label if ch is not None else f"mixed_{mean_bits:.2f}bit"
        return Candidate(attrs=attrs, plan=plan, label=label.replace(".", "p"))

    def _weights(self) -> dict[str, int]:
        if not hasattr(self, "_weight_counts"):
            import quantizer

            counts: dict[str, int] = {}
            keys = {k for pieces in self.units.pieces.values() for p in pieces.values() for k in p}
            for t in quantizer.weight_tensors(self.units.model):
                if (t.layer, t.field) in keys:
                    u = self.units.unit_of((t.layer, t.field))
                    counts[u] = counts.get(u, 0) + t.count
            self._weight_counts = counts
        return self._weight_counts

    # -- outputs ---------------------------------------------------------------------------
    def finish(self, table: pd.DataFrame, summary: dict[str, Any], evaluator: Any) -> StrategyResult:
        """Hypervolumes, the mixed-search record and the accuracy-target outcome (summary entries)."""
        entries: dict[str, Any] = {
            "hypervolume": mixed_summary(table, evaluator.metric, evaluator.baseline, self.options["compare_to"])}
        seeds = table[SEED_ATTR].value_counts().to_dict() if SEED_ATTR in table.columns else {}
        entries["mixed"] = {"trials_by_seed": {str(k): int(v) for k, v in seeds.items()},
                            "units": list(self.units.units), "codecs": list(self.labels),
                            "probe_codec": self.probe_label}
        target_note(summary, evaluator.metric)  # on the writer's copy of summary.json
        entries["target"] = summary["target"]
        return StrategyResult(summary=entries)


def _smallest_within(df: pd.DataFrame, metric: Any, baseline: float, drop: float) -> dict[str, Any] | None:
    if df.empty:
        return None
    drops = df[metric.name].astype(float).map(lambda v: metric.drop(baseline, v))
    ok = df[drops <= drop + 1e-12]
    if ok.empty:
        return None
    row = ok.sort_values(["size_bytes", "trial"], kind="mergesort").iloc[0]
    return {"trial": int(row["trial"]), "size_bytes": int(row["size_bytes"]), metric.name: float(row[metric.name])}


def hv_block(df: pd.DataFrame, metric: Any, baseline: Mapping[str, Any], n_trials: int | None = None) -> dict[str, Any]:
    """Hypervolume (normalised size; reference float size, zero metric) and the smallest model
    within 1 point of the float metric, for the complete trials in ``df``."""
    from harness.analysis import hypervolume

    ref = float(baseline["size_bytes"])
    base = float(baseline[metric.name])
    out: dict[str, Any] = {"trials": int(n_trials if n_trials is not None else len(df)),
                           "evaluated": int(df["reused_from"].isna().sum()) if "reused_from" in df.columns else len(df)}
    if metric.maximize:
        out["hypervolume"] = round(hypervolume(df["size_bytes"].astype(float), df[metric.name].astype(float), ref), 6)
    out["smallest_within_1_point"] = _smallest_within(df, metric, base, 0.01)
    return out


def mixed_summary(table: pd.DataFrame, metric: Any, baseline: Mapping[str, Any], compare_to: Any) -> dict[str, Any]:
    """The ``hypervolume`` block of a mixed run's summary.json (see module docstring)."""
    complete = table[table["state"] == "COMPLETE"]
    out: dict[str, Any] = {
        "reference": {"size_bytes": int(baseline["size_bytes"]), metric.name: 0.0,
                      "size": "normalised by the float model's size"},
        "mixed": hv_block(complete, metric, baseline, len(counted_rows(table))),
    }
    if SEED_ATTR in complete.columns:
        uni = complete[complete[SEED_ATTR] == "uniform"]
        out["uniform_seeds_in_this_run"] = hv_block(uni, metric, baseline)
    if compare_to:
        from harness import analysis

        run = analysis.load_run(str(compare_to))
        other = analysis.complete_trials(run.trials)
        other_base = run.baseline or {}
        if other_base.get("size_bytes") != baseline["size_bytes"]:
            raise ConfigError(f"search.options.compare_to={str(compare_to)!r} is a run on another model "
                              f"(float size {other_base.get('size_bytes')} bytes, this one {baseline['size_bytes']}).")
        blk = hv_block(other, metric, baseline, len(counted_rows(run.trials)))
        blk["run_dir"] = str(Path(str(compare_to)).resolve())
        blk["search"] = analysis.search_kind(run)
        out["compare_to"] = blk
        if "hypervolume" in blk and "hypervolume" in out["mixed"]:
            out["mixed_minus_compare_to"] = round(out["mixed"]["hypervolume"] - blk["hypervolume"], 6)
    return out


def counted_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Trials that used budget: finished (not skipped, not queued and left unrun) and not a dead
    trial that was retried."""
    t = table[table["state"].isin(["COMPLETE", "FAIL"])]
    if "error" in t.columns:
        t = t[~t["error"].astype(str).str.contains("retried as trial", na=False)]
    return t


def target_note(summary: dict[str, Any], metric: Any) -> None:
    """Make the accuracy-target message name the best-effort model when nothing met the target."""
    target = summary.get("target")
    if not isinstance(target, dict) or target.get("max_accuracy_drop") is None or target.get("best") is not None:
        return
    front = summary.get("pareto_front") or []
    if not front:
        return
    best = max(front, key=lambda r: (r.get(metric.name) if metric.maximize else -r.get(metric.name, 0), -r["size_bytes"]))
    target["best_effort"] = best
    where = f", saved as {best['model_file']}" if best.get("model_file") else ""
    target["message"] = (f"NO candidate met the target: none is within {metric.name} drop "
                         f"{target['max_accuracy_drop']:g} of the float model. Best effort: trial {best['trial']}, "
                         f"{best['size_bytes']} bytes, {metric.name} {best[metric.name]:.4f} "
                         f"(drop {best.get(metric.drop_name, float('nan')):.4f}){where}.")
