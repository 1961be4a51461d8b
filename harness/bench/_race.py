"""Offline racing of recorded per-sample rows: what ``harness.racing`` would stop, and whether that changes the front.

The trial runner races a candidate on the study's fully evaluated trials (:mod:`harness.trial`);
this module replays the same rule on candidates whose per-sample rows are all known (synthetic
sweeps, :mod:`harness.bench._heldout`; zoo sweeps recorded with ``racing=off``,
:mod:`harness.bench._replay`), so that one order, mode or bound can be compared with ``racing=off``
on many seeded orders without running a network: the sample evaluations, the stops whose final figure
was above the reach they stopped at (wrong stops), and whether the Pareto front or the smallest model
within a 1-point drop changed.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness import pareto
from harness.config import Racing
from harness.racing import Bounds, Finished, SampleOrder, dominator

#: The drop (in the metric's units) whose best-within model a race must not change.
BEST_WITHIN = 0.01


def race(metric: Any, rows: np.ndarray, sizes: Sequence[int], order: SampleOrder, mode: Racing | str,
         cands: Sequence[int] | None = None, confidence: float = 0.99) -> dict[str, Any]:
    """Race candidates (``rows``: candidate x sample, one proportion column) in ``cands`` order (default:
    smallest first, as the grid queues them). Returns the table of final figures (``trial`` = position in
    the race), the fully evaluated positions, the sample evaluations and the wrong stops."""
    bounds = Bounds(metric, order, None, Racing(mode), confidence)
    sizes = np.asarray(sizes)
    cands = list(np.argsort(sizes, kind="stable")) if cands is None else list(cands)
    finished: list[Finished] = []
    done, seen, wrong = set(), 0, 0
    for number, c in enumerate(cands):
        r = rows[c][order.order][:, None]
        stop = None
        for end in order.ends[:-1]:
            reach = bounds.reach(r[:end])
            if dominator(int(sizes[c]), number, reach, finished, maximize=True) is not None:
                stop = (end, reach)
                break
        final = float(rows[c].mean())
        if stop is None:
            seen += order.n
            done.add(number)
            finished.append(Finished(number, int(sizes[c]), final))
        else:
            seen += stop[0]
            wrong += final > stop[1]
    table = pd.DataFrame({"trial": range(len(cands)), "size_bytes": sizes[cands], "m": rows[cands].mean(axis=1)})
    return {"table": table, "done": done, "seen": seen, "wrong": wrong, "stops": len(cands) - len(done)}


def changes(raced: dict[str, Any], base: float) -> tuple[bool, bool]:
    """Whether the race changed the Pareto front, and the smallest model within :data:`BEST_WITHIN` of ``base``."""
    table = raced["table"]
    kept = table[table["trial"].isin(raced["done"])]
    front = pareto.front(table, "m")["trial"].tolist() != pareto.front(kept, "m")["trial"].tolist()
    a = pareto.best_within(table.assign(d=base - table["m"]), "d", BEST_WITHIN)
    b = pareto.best_within(kept.assign(d=base - kept["m"]), "d", BEST_WITHIN)
    best = not ((a is None and b is None) or (a is not None and b is not None and int(a["trial"]) == int(b["trial"])))
    return front, best


def tally() -> dict[str, dict[str, float]]:
    """Empty counters for exact and confident races."""
    return {mode: {"front_changed": 0, "best_changed": 0, "wrong_stops": 0, "stops": 0, "evaluations": 0, "races": 0}
            for mode in ("exact", "confident")}


def add(counter: dict[str, float], raced: dict[str, Any], base: float) -> None:
    """Count one race into ``counter``."""
    front, best = changes(raced, base)
    counter["front_changed"] += front
    counter["best_changed"] += best
    counter["wrong_stops"] += raced["wrong"]
    counter["stops"] += raced["stops"]
    counter["evaluations"] += raced["seen"]
    counter["races"] += 1
