"""Shared set-up of the executor tests: the golden fixtures, loaded once per session.

``golden(name)`` returns ``(spec, inputs, expected)`` of a fixture in
``tests/fixtures`` (see :func:`tests.fixtures.load_fixture`). The spec is
shared between tests: executors and ``quantizer.quantize_weights`` work on
copies, and a test that wants to change it must copy it first
(``quantizer.load(spec)``).
"""
from __future__ import annotations

import functools

import pytest

from tests.fixtures import load_fixture


@pytest.fixture(scope="session")
def golden():
    return functools.lru_cache(maxsize=None)(load_fixture)
