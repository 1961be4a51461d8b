"""``search=grid``: every valid point of the space exactly once, across any number of workers.

Optuna's GridSampler repeats points when workers run concurrently (its
documentation says so). Here the grid is queued in the study instead
(:class:`~harness.search.queued.QueuedSearch`); each trial carries its point as
the user attribute ``grid_point``.

Points are queued smallest predicted model first (:func:`predicted_bytes`; on equal
size, k-means LUTs first): racing (:mod:`harness.racing`) can only stop a candidate
once a trial no larger than it has finished, so every smaller candidate should be
finished by then (measured: the README's Racing section). Points that compile to a
plan seen earlier in the grid are queued after all distinct plans, so their trials
find the result ready to reuse. The order is the same with ``racing=off``.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Mapping

import optuna

from harness.search.base import Candidate
from harness.search.queued import QueuedSearch
from harness.search.uniform import algorithm_result, setting_candidate, suggest_setting
from harness.space import Setting

log = logging.getLogger(__name__)


#: Tie-break of equal predicted sizes: the mode that is usually the more accurate first.
MODE_RANK = {"kmeans_lut": 0, "linear_lut": 1, "custom_lut": 2, "linear": 3, "linear_symmetric": 4}


def predicted_bytes(plan: Any, tensors: Mapping[tuple[str, str], Any]) -> float:
    """The weight bytes a plan stores, predicted without quantizing: ``nbits`` per quantized weight plus a
    lookup table per tensor (LUT modes) or a scale and bias per channel (linear modes); 4 bytes per
    float weight. ``tensors``: ``(layer, field) -> quantizer.WeightTensor`` of the float model."""
    total = 0.0
    for key, t in tensors.items():
        codec = plan[key] if key in plan else None
        if codec is None or codec.nbits is None:
            total += 4.0 * t.count
            continue
        total += t.count * codec.nbits / 8.0
        if codec.nbits < 16:
            lut = "lut" in codec.mode
            channels = t.shape[t.channel_axis] if t.shape else 1
            total += 4.0 * (2 ** codec.nbits) if lut else 8.0 * channels
    return total


def point_key(params: Mapping[str, Any]) -> str:
    """A stable text key of a grid point's parameters, e.g. ``nbits=4,mode=kmeans_lut,skip_layer_types=none,...``."""
    return ",".join(f"{k}={v}" for k, v in params.items())


def _dropped_name(d: Any) -> str:
    extra = ("" if d.algorithm == "rtn" else f"/{d.algorithm}") + ("/bc" if d.bias_correction else "")
    return f"{d.mode}/{d.nbits}{extra}"


class GridSearch(QueuedSearch):
    """Queue the whole grid once; workers pop points until none is left."""

    point_attr = "grid_point"
    all_trials = "the whole grid"

    def setup(self) -> None:
        space = self.ctx.space
        points, dropped = space.grid()
        self.dropped = dropped
        if dropped:
            per_codec = space.grid_size() // space.codec_count()
            reasons = Counter(d.reason for d in dropped)
            log.info("grid: dropped %d of %d point(s), invalid (nbits, mode%s) combinations: %s",
                     len(dropped) * per_codec, space.grid_size(), ", algorithm" if space.calibrated else "",
                     "; ".join(", ".join(_dropped_name(d) for d in dropped if d.reason == r) + f" ({r})"
                               for r in reasons))
        self.settings: list[Setting] = points
        n_trials = self.ctx.cfg.n_trials
        log.info("grid: %d point(s)%s", len(points),
                 f", run until {n_trials} trial(s) exist (search.n_trials)" if n_trials else "")

    def n_points(self) -> int:
        return len(self.settings)

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """Smallest predicted model first (see module docstring), points whose plan repeats an earlier one
        at the end."""
        import quantizer

        tensors = {(t.layer, t.field): t for t in quantizer.weight_tensors(self.ctx.model)}
        keyed = []
        for i, s in enumerate(self.settings):
            try:
                plan = self.ctx.build_plan(s)
                keyed.append((predicted_bytes(plan, tensors), MODE_RANK.get(s.mode, 9), i, s, plan.digest()))
            except Exception:  # the trial itself will report the problem
                keyed.append((float("inf"), 9, i, s, None))
        keyed.sort(key=lambda k: k[:3])
        seen: set[str] = set()
        first, repeats = [], []
        for *_, s, digest in keyed:
            (repeats if digest is not None and digest in seen else first).append(s)
            if digest is not None:
                seen.add(digest)
        space = self.ctx.space
        return [(point_key(space.params(s)), space.params(s)) for s in first + repeats]

    def suggest(self, trial: optuna.Trial) -> Candidate:
        return self.candidate(suggest_setting(trial, self.ctx.space).params())

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        return setting_candidate(self.ctx, params)

    def finish(self, table: Any, summary: Any, evaluator: Any) -> Any:
        """With calibration-aware points: the hypervolume of every trial vs the round-to-nearest ones."""
        return algorithm_result(self.ctx, table, evaluator)
