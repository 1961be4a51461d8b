"""The examples in the calibration modules' docstrings run."""
import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["harness.calibration", "harness.calibration.store", "harness.data.calibration"])
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
