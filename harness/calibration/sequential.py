"""Sequential statistics (as in the GPTQ paper): each layer's inputs taken from the model whose earlier layers are already quantized.

:func:`sequential_stats` collects the statistics of the weight layers one at
a time, in network order: before layer ``k`` it applies the plan of the
layers before ``k`` (built by ``plan_for`` from the statistics collected so
far) and runs the numpy executor on that partly quantized model. The result
is tied to one plan (codec, algorithm, bias correction), so a sweep would
have to collect it once per trial; :func:`harness.calibration.collect_stats`
(the float model's activations, once per run) is what qsweep uses -- the
README gives the measurement behind that choice (``python -m harness.bench
calibrated --stats both``).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np

import quantizer
from harness.calibration.collect import collect_stats, stats_layers
from harness.calibration.store import DEFAULT_MEMORY_BYTES, CalibrationStats

__all__ = ["sequential_stats"]


def sequential_stats(model: Any, feeds: Mapping[str, np.ndarray], plan_for: Callable[[Mapping[str, Any]], Any], *,
                     batch_size: int = 32, memory_bytes: int = DEFAULT_MEMORY_BYTES, fuse: bool = True) -> CalibrationStats:
    """Statistics of each weight layer from the model whose earlier layers are quantized.

    Args:
        model: the float model (spec, ``MLModel`` or path).
        feeds: calibration inputs.
        plan_for: statistics so far (layer name -> LayerStats) -> the full
            :class:`quantizer.QuantPlan` they give (e.g. ``lambda s:
            quantizer.build_plan(spec, 4, "linear", algorithm="gptq", calibration=s)``);
            only its entries for layers before the current one are applied.
        fuse: passed to :func:`quantizer.apply_plan`.
    """
    t0 = time.perf_counter()
    spec = quantizer.load(model)
    targets, skipped = stats_layers(spec)
    order = {layer.name: i for i, layer in enumerate(quantizer.walk.iter_layers(spec))}
    stats: dict[str, Any] = {}
    for t in targets:
        here = order[t.name]
        plan = plan_for(dict(stats))
        earlier = quantizer.QuantPlan({k: c for k, c in plan.items() if order.get(k[0], here) < here})
        partial = quantizer.apply_plan(spec, earlier, fuse=fuse) if len(earlier) else spec
        one = collect_stats(partial, feeds, layers=[t.name], batch_size=batch_size, memory_bytes=memory_bytes)
        stats.update({key: one[key] for key in t.keys})
    n = int(next(iter(feeds.values())).shape[0])
    return CalibrationStats(stats, samples=n, seconds=time.perf_counter() - t0, skipped=skipped, source="sequential")
