"""Predicted output noise of quantizing one unit with one codec, for the greedy path of ``search=mixed``.

A unit's sensitivity is measured once: the output noise power of a probe (the
unit alone at the probe codec, ``10^(-SNR/10)`` of its output SNR) or a row of a
sensitivity table. Another codec's noise is predicted by scaling the probe's by
the codec's weight quantization error relative to the probe codec's, measured
on the weights with no evaluation (:func:`unit_profiles`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from harness.search.choices import FLOAT
from harness.search.units import UnitPlans


def unit_profiles(units: UnitPlans) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per unit and codec: stored-bytes change and weight squared error vs float.

    Measured on the weights (each uniform plan applied once, through the codec
    cache), no evaluation. Returns ``(delta_bytes, weight_sq_error)``.
    """
    import quantizer
    from quantizer.tensors import get_weight_params, layer_weights, stored_bytes
    from quantizer.walk import iter_layers

    delta: dict[str, dict[str, float]] = {u: {FLOAT.label: 0.0} for u in units.units}
    err: dict[str, dict[str, float]] = {u: {FLOAT.label: 0.0} for u in units.units}
    float_cache: dict[bool, Any] = {}
    for label, plan in units.uniform.items():
        fused = plan.quantizes
        if fused not in float_cache:
            float_cache[fused] = quantizer.fuse(units.model) if fused else units.model
        ref = float_cache[fused]
        q = quantizer.apply_plan(units.model, plan)
        ref_layers = {layer.name: layer for layer in iter_layers(ref)}
        q_layers = {layer.name: layer for layer in iter_layers(q)}
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
            rw = layer_weights(rl)[field]
            qwp = get_weight_params(ql, field)
            _, shape, axis = rw
            a = quantizer.decode_weights(rw[0], shape, axis).astype(np.float64)
            b = quantizer.decode_weights(qwp, shape, axis).astype(np.float64)
            err[u][label] += float(np.sum((a - b) ** 2))
            delta[u][label] += float(stored_bytes(qwp) - stored_bytes(rw[0]))
    return delta, err


def noise_from_snr(snr_db: Any) -> float | None:
    """Output noise power relative to the signal, ``10^(-SNR/10)``, of an SNR in dB (None if unknown)."""
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
