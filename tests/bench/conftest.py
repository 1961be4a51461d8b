"""Shared set-up of the benchmark tests: the quantize benchmark's model, built once per session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def bench_model_50k():
    """The quantize benchmark's model with about 50,000 float32 weights (a spec; do not modify)."""
    from harness.bench import quantize as bench

    return bench.build_model(50_000)
