"""The runnable examples in the docstrings of the fault-handling modules."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["harness.secrets", "harness.shutdown", "harness.writes", "harness.study.retry", "harness.study.rdb",
           "harness.claims", "harness.study.storage", "harness.rebuild", "harness.bench.pgserver"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
