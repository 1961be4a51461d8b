"""The algorithms on real zoo layers with real calibration inputs (digits through the numpy executor)."""
import numpy as np
import pytest

from quantizer.algorithms import GramAccumulator, activation_weighted_lut, bias_correction, gptq, rtn
from quantizer.algorithms.grids import MODES
from quantizer.algorithms.weighted_kmeans import weighted_error
from quantizer.kmeans import kmeans_lut
from tests.quantizer.algorithms.realdata import real_layers

CASES = [("digits_mlp", "dense2"), ("digits_cnn", "input.3"), ("digits_cnn", "input.9"), ("digits_cnn", "linear_0"),
         ("digits_resnet", "out")]


@pytest.fixture(scope="module", params=CASES, ids=["/".join(c) for c in CASES])
def layer(request):
    model, name = request.param
    L = real_layers(model, 128, 128, (name,))[0]
    acc = GramAccumulator(L.calib.shape[-1], groups=L.groups)
    acc.add(L.calib)
    L.stats = acc.stats()
    return L


@pytest.mark.parametrize("mode", MODES)
def test_gptq_beats_round_to_nearest(layer, mode):
    w = layer.weights
    for nbits in (4, 3, 2):
        g = gptq(w, layer.stats, mode, nbits)
        assert g.indices.max() < 2 ** nbits and g.indices.size == w.size
        r = rtn(w, mode, nbits).dequantize()
        for rows in ("calib", "test"):  # the objective, and held-out samples
            assert layer.output_error(g.dequantize(), rows=rows) < layer.output_error(r, rows=rows), (mode, nbits, rows)


def test_bias_correction_zeroes_the_mean_output_error(layer):
    w, st = layer.weights, layer.stats
    for wh in (rtn(w, "linear", 3).dequantize(), gptq(w, st, "linear", 3).dequantize()):
        delta = bias_correction(w, wh, st)
        x = layer.calib.astype(np.float64)
        d = layer.matrix().astype(np.float64) - layer.matrix(wh)
        mean_err = np.stack([(x[g] @ d[g].T).mean(axis=0) for g in range(layer.groups)]).reshape(-1) - delta
        scale = np.abs(np.stack([(x[g] @ layer.matrix()[g].T) for g in range(layer.groups)])).mean()
        assert np.abs(mean_err).max() < 1e-4 * scale  # float32 statistics
        assert layer.output_error(wh, delta, rows="calib") < layer.output_error(wh, rows="calib")


def test_weighted_kmeans_reduces_the_activation_weighted_error(layer):
    w, st = layer.weights, layer.stats
    for nbits in (4, 3, 2):
        lut, idx = activation_weighted_lut(w, st, nbits)
        plut, pidx = kmeans_lut(w.reshape(-1), nbits)
        ours = weighted_error(w, lut[idx].reshape(w.shape), st)
        plain = weighted_error(w, plut[pidx].reshape(w.shape), st)
        assert ours <= plain * (1 + 1e-9), nbits


def test_encoded_form_is_the_round_to_nearest_layout(layer):
    from quantizer.codecs import Codec

    w = layer.weights
    for mode in MODES:
        ours, theirs = gptq(w, layer.stats, mode, 4).encoded(), Codec(mode, 4).encode(w, w.shape)
        assert (ours.encoding, ours.nbits, len(ours.data)) == (theirs.encoding, theirs.nbits, len(theirs.data))
        for f in ("scale", "bias", "lut"):
            a, b = getattr(ours, f), getattr(theirs, f)
            assert (a is None) == (b is None) and (a is None or (a.shape == b.shape and a.dtype == b.dtype))
        if mode != "kmeans_lut":  # same grid as round-to-nearest
            for f in ("scale", "bias", "lut"):
                if getattr(theirs, f) is not None:
                    np.testing.assert_array_equal(getattr(ours, f), getattr(theirs, f))
