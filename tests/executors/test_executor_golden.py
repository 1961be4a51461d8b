"""Golden tests of the numpy executor against PyTorch outputs (tests/fixtures).

For every fixture in ``tests/fixtures/manifest.json``:

* the executor's outputs match the stored reference within the manifest's
  tolerance, relative to the output's scale;
* running the batch at once equals running it sample by sample;
* quantized variants of the model (``quantizer.quantize_weights``: linear 8 and
  4 bits, linear_symmetric 8, linear_lut 3, kmeans_lut 2, fp16) give the same
  outputs as the same network dequantized to float32
  (``quantization_mode="dequantization"``). Fixtures without any weight
  quantize_weights touches are left out when parametrising; the list of them is
  pinned (:data:`NOTHING_TO_QUANTIZE`).

Every layer type the fixtures use must have an op: a missing one fails
(:func:`test_every_fixture_layer_type_is_implemented` names it), never skips.
"""
from __future__ import annotations

import numpy as np
import pytest

import quantizer
from harness.executors import NumpyExecutor
from harness.executors.registry import load_ops
from tests.fixtures import load_fixture, load_manifest, max_scaled_error, tolerance_for

MANIFEST = load_manifest()
NAMES = [e["name"] for e in MANIFEST]
ENTRIES = {e["name"]: e for e in MANIFEST}
BATCHED = [n for n in NAMES if ENTRIES[n].get("batch")]  # fixtures holding a batch (not a single sample)


def _has_quantizable_weights(name: str) -> bool:
    spec, _, _ = load_fixture(name)
    return any(t.count for t in quantizer.weight_tensors(spec) if t.layer_type in quantizer.QUANTIZABLE_LAYER_TYPES)


#: Fixtures whose layers hold no weight quantize_weights touches (activations, reshapes, reductions...).
NOTHING_TO_QUANTIZE = {"nn_activations", "nn_branch", "nn_concat_pad_crop", "nn_image_bgr_gray", "nn_normalization",
                       "nn_reduce", "nn_reorganize", "nn_tile_reduce_nd", "nn_unary", "tile_reduce"}
QUANTIZABLE = [n for n in NAMES if _has_quantizable_weights(n)]


def test_every_fixture_layer_type_is_implemented() -> None:
    """A layer type the golden fixtures use and the registry lacks (a deleted op) fails here, by name."""
    used = {layer.WhichOneof("layer"): name for name in NAMES for layer in quantizer.walk.iter_layers(load_fixture(name)[0])}
    missing = {t: used[t] for t in sorted(set(used) - set(load_ops()))}
    assert not missing, f"layer types without an op in harness/executors/ops (type: a fixture using it): {missing}"


def test_only_weightless_fixtures_are_left_out_of_the_quantized_runs() -> None:
    assert set(NAMES) - set(QUANTIZABLE) == NOTHING_TO_QUANTIZE


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
def test_matches_pytorch(name: str, golden) -> None:
    spec, inputs, expected = golden(name)
    ex = NumpyExecutor(spec)  # an unimplemented layer type raises UnsupportedLayerError: a failure
    _assert_close(ex.predict(inputs), expected, ENTRIES[name], name)


@pytest.mark.parametrize("name", BATCHED)
def test_batched_equals_per_sample(name: str, golden) -> None:
    entry = ENTRIES[name]
    spec, inputs, _ = golden(name)
    ex = NumpyExecutor(spec)
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

QUANT_MODES = [("linear", 8), ("linear", 4), ("linear_symmetric", 8), ("linear_lut", 3), ("kmeans_lut", 2), ("fp16", 16)]


@pytest.mark.parametrize("mode,nbits", QUANT_MODES, ids=[m if m == "fp16" else f"{m}{b}" for m, b in QUANT_MODES])
@pytest.mark.parametrize("name", QUANTIZABLE)
def test_quantized_matches_dequantized(name: str, mode: str, nbits: int, golden) -> None:
    """The quantized model and the same network with its weights dequantized to float32 agree."""
    spec, inputs, _ = golden(name)
    q = quantizer.quantize_weights(spec, nbits, mode if mode != "fp16" else "linear")
    d = quantizer.quantize_weights(q, None, "dequantization")
    encodings = {t.encoding for t in quantizer.weight_tensors(q)}
    assert encodings - {"float32"}, f"{mode}{nbits} left every weight in float32"
    assert {t.encoding for t in quantizer.weight_tensors(d)} == {"float32"}
    got, ref = NumpyExecutor(q).predict(inputs), NumpyExecutor(d).predict(inputs)
    for out_name, y in ref.items():
        if y.dtype.kind in "iuUSO":
            continue
        assert max_scaled_error(got[out_name], y) <= 1e-6, f"{name} {mode}{nbits}: output {out_name!r}"
