"""Shared set-up of the data tests: the zoo models and their test sets, loaded once per session.

``zoo_model(name)`` returns ``(spec, Dataset)`` as :func:`harness.zoo.load`
does (the dataset is read-only; the spec is shared, copy it before changing it).
"""
from __future__ import annotations

import functools

import pytest

from harness import zoo


@pytest.fixture(scope="session")
def zoo_model():
    return functools.lru_cache(maxsize=None)(zoo.load)
