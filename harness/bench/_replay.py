"""Replayed zoo races for ``python -m harness.bench sweep --replay N``: the chance of a wrong confident stop, measured.

The ``racing=off`` run of each model records every distinct candidate's per-sample rows on the
whole test set (:func:`recording`), in the order the grid ran them. Those rows are then raced
offline (:mod:`harness.bench._race`) in ``exact`` and ``confident`` mode on ``N`` seeded sample
orders (the run's seed is order 0): the share of ``off``'s sample evaluations, the stops whose final
figure was above the reach they stopped at (wrong stops), and whether the Pareto front or the
smallest model within a 1-point drop changed. Metrics other than proportions are not replayed (their
rows are not one right/wrong column).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from harness.bench._race import add, race, tally
from harness.racing import SampleOrder, difficulty_strata


@contextlib.contextmanager
def recording() -> Iterator[dict[str, Any]]:
    """While active, every :meth:`harness.evaluate.Evaluator.figures` call (a candidate evaluated on every
    sample) appends its size and per-sample rows to ``out["rows"]`` / ``out["sizes"]``; ``out["evaluator"]``
    is the evaluator (its metric, float outputs and chunking)."""
    import quantizer
    from harness.evaluate import Evaluator

    out: dict[str, Any] = {"rows": [], "sizes": [], "evaluator": None}
    original = Evaluator.figures

    def figures(self: Evaluator, spec: Any, outputs: Any, *, size: int | None = None) -> dict[str, Any]:
        out["evaluator"] = self
        out["rows"].append(self._rows(outputs, np.arange(self.dataset.n))[:, 0])
        out["sizes"].append(int(quantizer.model_size(spec) if size is None else size))
        return original(self, spec, outputs, size=size)

    Evaluator.figures = figures  # type: ignore[method-assign]
    try:
        yield out
    finally:
        Evaluator.figures = original  # type: ignore[method-assign]


def replay(recorded: dict[str, Any], seeds: int) -> dict[str, Any] | None:
    """Race the recorded candidates on ``seeds`` seeded orders; None when the metric is no proportion."""
    ev = recorded["evaluator"]
    if ev is None or not ev.metric_is_proportion or not recorded["rows"]:
        return None
    rows, sizes = np.stack(recorded["rows"]), np.asarray(recorded["sizes"])
    strata = difficulty_strata(ev.metric, ev.reference.rows, ev.float_outputs)
    chunk, base = ev.order.chunk, float(np.asarray(ev.reference.rows)[:, 0].mean())
    out = tally()
    for seed in range(seeds):
        order = ev.order if seed == 0 else SampleOrder.build(strata, seed, chunk)
        for mode, counter in out.items():
            add(counter, race(ev.metric, rows, sizes, order, mode, cands=range(len(sizes))), base)
    for counter in out.values():
        counter["ratio"] = counter["evaluations"] / (rows.size * seeds)
    return {"candidates": len(sizes), "seeds": seeds, **out}
