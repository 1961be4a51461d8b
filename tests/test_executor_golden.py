"""Golden tests of the numpy executor against PyTorch outputs (tests/fixtures).

For every fixture in ``tests/fixtures/manifest.json``:

* the executor's outputs match the stored reference within the manifest's
  tolerance, relative to the output's scale;
* running the batch at once equals running it sample by sample;
* quantized variants of the model (linear 8 and 4 bits per channel, linear
  LUT, k-means-style LUT, fp16) give the same outputs as the same network with
  the decoded (dequantized) weights written back as float32.
"""
from __future__ import annotations

import numpy as np
import pytest

import quantizer
from harness.executors import NumpyExecutor
from harness.executors.registry import load_ops
from harness.executors.runner import iter_layers
from tests.fixtures import load_fixture, load_manifest, max_scaled_error, tolerance_for

MANIFEST = load_manifest()
NAMES = [e["name"] for e in MANIFEST]
ENTRIES = {e["name"]: e for e in MANIFEST}


def _executor(spec) -> NumpyExecutor:
    missing = sorted({l.WhichOneof("layer") for l in iter_layers(quantizer.neural_network(spec).layers)} - set(load_ops()))
    if missing:
        pytest.skip(f"layer types not implemented yet in the numpy executor: {missing}")
    return NumpyExecutor(spec)


def _assert_close(got: dict, expected: dict, entry: dict, what: str) -> None:
    for name, ref in expected.items():
        assert name in got, f"{what}: output {name!r} missing; got {sorted(got)}"
        out = got[name]
        if ref.dtype.kind in "iuUSO":
            np.testing.assert_array_equal(out, ref, err_msg=f"{what}: output {name!r}")
            continue
        assert out.shape == ref.shape, f"{what}: output {name!r} has shape {out.shape}, expected {ref.shape}"
        err = max_scaled_error(out, ref)
        tol = tolerance_for(entry, name)
        assert err <= tol, f"{what}: output {name!r} scaled max error {err:.3g} > {tol:g}"


@pytest.mark.parametrize("name", NAMES)
def test_matches_pytorch(name: str) -> None:
    spec, inputs, expected = load_fixture(name)
    ex = _executor(spec)
    _assert_close(ex.predict(inputs), expected, ENTRIES[name], name)


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_per_sample(name: str) -> None:
    entry = ENTRIES[name]
    if not entry.get("batch"):
        pytest.skip("the fixture holds a single sample")
    spec, inputs, _ = load_fixture(name)
    ex = _executor(spec)
    batched = ex.predict(inputs)
    n = entry["batch"]
    singles = [ex.predict({k: v[i: i + 1] for k, v in inputs.items()}) for i in range(n)]
    for out_name, y in batched.items():
        assert y.shape[0] == n
        stacked = np.concatenate([s[out_name] for s in singles], axis=0)
        if y.dtype.kind in "iuUSO":
            np.testing.assert_array_equal(y, stacked)
        else:
            assert max_scaled_error(y, stacked) <= 1e-5, out_name


# -- quantized variants ------------------------------------------------------------

def _encode(values: np.ndarray, channel_axis: int, mode: str, nbits: int, wp) -> None:
    """Write ``values`` into ``wp`` with the given encoding (test-local encoder)."""
    v = values.astype(np.float64)
    if mode == "fp16":
        quantizer.write_float16(wp, values.astype(np.float32))
        return
    if mode == "linear":  # per channel along channel_axis, coremltools' formula
        c = v.shape[channel_axis] if v.ndim > 1 else 1
        moved = np.moveaxis(v, channel_axis, 0).reshape(c, -1) if v.ndim > 1 else v.reshape(1, -1)
        lo, hi = moved.min(axis=1), moved.max(axis=1)
        scale = np.where(hi > lo, (hi - lo) / (2 ** nbits - 1), 1.0)
        shape = [1] * v.ndim
        if v.ndim > 1:
            shape[channel_axis] = c
        s_b, lo_b = (scale.reshape(shape), lo.reshape(shape)) if v.ndim > 1 else (scale, lo)
        q = np.clip(np.round((v - lo_b) / s_b), 0, 2 ** nbits - 1).astype(np.uint8)
        quantizer.write_quantized(wp, quantizer.pack_bits(q.ravel(), nbits), nbits, scale=scale, bias=lo)
        return
    if mode == "linear_lut":
        lo, hi = v.min(), v.max()
        scale = (hi - lo) / (2 ** nbits - 1) if hi > lo else 1.0
        lut = np.arange(2 ** nbits) * scale + lo
    else:  # "quantile_lut": a non-uniform table (k-means-like)
        lut = np.quantile(v.ravel(), np.linspace(0, 1, 2 ** nbits))
    idx = np.abs(v.ravel()[:, None] - lut[None, :]).argmin(axis=1).astype(np.uint8)
    quantizer.write_quantized(wp, quantizer.pack_bits(idx, nbits), nbits, lut=lut)


def _variant(spec, mode: str, nbits: int):
    """(quantized spec, the same network with its decoded weights written as float32)."""
    q = type(spec)()
    q.CopyFrom(spec)
    for layer, slot, wp in list(quantizer.iter_weight_slots(q)):
        if not slot.quantizable:
            continue
        values = quantizer.decode_weights(wp, slot.shape, slot.channel_axis)
        _encode(values, slot.channel_axis, mode, nbits, wp)
    if q.specificationVersion < 3:
        q.specificationVersion = 3
    d = type(q)()
    d.CopyFrom(q)
    for layer, slot, wp in list(quantizer.iter_weight_slots(d)):
        quantizer.write_float32(wp, quantizer.decode_weights(wp, slot.shape, slot.channel_axis))
    return q, d


QUANT_MODES = [("linear", 8), ("linear", 4), ("linear_lut", 3), ("quantile_lut", 2), ("fp16", 16)]


@pytest.mark.parametrize("mode,nbits", QUANT_MODES, ids=[f"{m}{b}" for m, b in QUANT_MODES])
@pytest.mark.parametrize("name", NAMES)
def test_quantized_matches_dequantized(name: str, mode: str, nbits: int) -> None:
    spec, inputs, _ = load_fixture(name)
    _executor(spec)  # skip when layers are missing
    q, d = _variant(spec, mode, nbits)
    got, ref = NumpyExecutor(q).predict(inputs), NumpyExecutor(d).predict(inputs)
    for out_name, y in ref.items():
        if y.dtype.kind in "iuUSO":
            continue
        assert max_scaled_error(got[out_name], y) <= 1e-6, f"{name} {mode}{nbits}: output {out_name!r}"
