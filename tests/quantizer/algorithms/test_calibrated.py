"""quantize_calibrated / algorithm_token: the integrator's entry points."""
import numpy as np
import pytest

from quantizer.algorithms import GramAccumulator, algorithm_token, quantize_calibrated
from quantizer.codecs import Codec

rng = np.random.default_rng(0)


def make():
    x = rng.normal(size=(400, 24)) @ rng.normal(size=(24, 24)) + 1.0
    acc = GramAccumulator(24)
    acc.add(x)
    return rng.normal(size=(8, 24)).astype(np.float32), acc.stats(), x


def test_rtn_without_bias_correction_is_todays_codec():
    w, st, _ = make()
    for mode in ("linear", "linear_symmetric", "linear_lut", "kmeans_lut"):
        res, delta = quantize_calibrated(w, mode, 3, st, algorithm="rtn")
        assert delta is None and res.encoded().data == Codec(mode, 3).encode(w, w.shape).data
    assert algorithm_token("rtn", st) == "rtn"


def test_gptq_with_bias_correction():
    w, st, x = make()
    res, delta = quantize_calibrated(w, "linear", 3, st, bias_correction=True)
    assert res.info["centered"] and delta.shape == (8,)
    err = (w - res.dequantize()) @ x.T - delta[:, None]
    np.testing.assert_allclose(err.mean(axis=1), 0, atol=1e-3)
    res_w, _ = quantize_calibrated(w, "kmeans_lut", 3, st, lut="weighted")
    assert res_w.lut.shape == (8,)


def test_tokens_separate_what_differs():
    w, st, _ = make()
    _, st2, _ = make()
    base = algorithm_token("gptq", st)
    assert base == algorithm_token("gptq", st, damp=0.01, act_order=True)
    others = {algorithm_token("gptq", st2), algorithm_token("gptq", st, bias_correction=True),
              algorithm_token("gptq", st, damp=0.02), algorithm_token("gptq", st, act_order=False),
              algorithm_token("gptq", st, lut="weighted"), algorithm_token("rtn", st, bias_correction=True)}
    assert base not in others and len(others) == 6
    with pytest.raises(ValueError):
        algorithm_token("adaround", st)
