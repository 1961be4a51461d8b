"""Shared set-up of the quantizer tests: the small models of ``tests/nn_models.py`` and
coremltools 9's quantized versions of them, each built once per session."""
from __future__ import annotations

import contextlib
import io
from typing import Any, Callable

import pytest

from quantizer.coremltools_quiet import coremltools
from tests.quantizer.models import ALL_MODELS


def _copy(spec: Any) -> Any:
    out = coremltools().proto.Model_pb2.Model()
    out.CopyFrom(spec)
    return out


@pytest.fixture(scope="session")
def nn_model() -> Callable[[str], Any]:
    """``nn_model(name)``: a fresh copy of model ``name`` of ``tests.quantizer.models.ALL_MODELS``
    (each built once)."""
    built: dict[str, Any] = {}

    def make(name: str) -> Any:
        if name not in built:
            built[name] = ALL_MODELS[name]()
        return _copy(built[name])

    return make


@pytest.fixture(scope="session")
def ct_quantized(nn_model) -> Callable[..., Any]:
    """``ct_quantized(name, nbits, mode, **kwargs)``: the spec coremltools 9's ``quantize_weights``
    makes of ``nn_model(name)`` (its prints silenced). Calls without kwargs are computed once;
    calls with kwargs (a selector, a LUT function) every time, as they cannot be keyed safely."""
    from coremltools.models.neural_network import quantization_utils as ct_qu

    done: dict[tuple, Any] = {}

    def quantize(name: str, nbits: int, mode: str, **kwargs: Any) -> Any:
        key = (name, nbits, mode)
        if kwargs or key not in done:
            mlmodel = coremltools().models.MLModel(nn_model(name))
            with contextlib.redirect_stdout(io.StringIO()):
                out = ct_qu.quantize_weights(mlmodel, nbits, mode, **kwargs).get_spec()
            if kwargs:
                return out
            done[key] = out
        return _copy(done[key])

    return quantize
