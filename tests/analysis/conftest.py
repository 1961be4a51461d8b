"""Session-scoped real tiny runs for the analysis tests (reader, report, notebooks).

Each run is made once per test session under ``tmp_path_factory`` (removed by
pytest) with :func:`tests.analysis_runs.run`. Tests that rewrite a run's files
copy it first (``shutil.copytree`` into their ``tmp_path``).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.analysis_runs import GRID, MIXED, SENSITIVITY, run


def _run(tmp_path_factory: pytest.TempPathFactory, name: str, *overrides: str) -> Path:
    return Path(run(*overrides, root=tmp_path_factory.mktemp(name)).run_dir)


@pytest.fixture(scope="session")
def grid_dir(tmp_path_factory) -> Path:
    """The tiny grid run with target 0.01 (do not modify: copy it)."""
    return _run(tmp_path_factory, "grid", *GRID)


@pytest.fixture(scope="session")
def mixed_dir(tmp_path_factory) -> Path:
    """The small mixed run (do not modify)."""
    return _run(tmp_path_factory, "mixed", *MIXED)


@pytest.fixture(scope="session")
def sensitivity_dir(tmp_path_factory) -> Path:
    """The sensitivity run (do not modify)."""
    return _run(tmp_path_factory, "sensitivity", *SENSITIVITY)
