"""Session-scoped real runs the sweep tests share (each in its own folder under pytest's tmp_path)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.sweep.support import SMALL_GRID, run

#: A sensitivity run on the MLP: 3 layers x 4 codecs.
SENS = ("model=digits_mlp", "search=sensitivity", "search.space.nbits=[8,2]", "search.space.mode=[linear,kmeans_lut]")
#: A small mixed run on the MLP (16 trials: probes, uniform seeds, the greedy path, refinement, sampling).
MIXED = ("model=digits_mlp", "search=mixed", "search.space.nbits=[8,4,2]", "search.space.mode=[linear,kmeans_lut]",
         "search.options.greedy_points=3", "search.options.refine_steps=2")


@pytest.fixture(scope="session")
def small_grid_dir(tmp_path_factory) -> Path:
    """Run directory of :data:`~tests.sweep.support.SMALL_GRID` (no report)."""
    return run(tmp_path_factory.mktemp("small-grid"), SMALL_GRID).run_dir


@pytest.fixture(scope="session")
def sens_dir(tmp_path_factory) -> Path:
    """Run directory of the :data:`SENS` sensitivity run, with its report."""
    return run(tmp_path_factory.mktemp("sensitivity"), SENS, report=True).run_dir


@pytest.fixture(scope="session")
def mixed_dir(tmp_path_factory) -> Path:
    """Run directory of the :data:`MIXED` run with 16 trials, with its report."""
    return run(tmp_path_factory.mktemp("mixed"), [*MIXED, "search.n_trials=16"], report=True).run_dir
