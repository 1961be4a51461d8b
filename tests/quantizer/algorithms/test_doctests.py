"""Every module's docstring examples run."""
import doctest
import importlib

import pytest

MODULES = ["quantizer.algorithms." + m for m in ("stats", "patches", "gptq", "grids", "bias_correction",
                                                 "weighted_kmeans", "calibrated", "support")]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
