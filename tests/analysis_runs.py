"""Real tiny qsweep runs, shared by the tests of tests/analysis/ and tests/sweep/ (sensitivity, mixed).

:func:`run` composes the qsweep config with Hydra (the same tree the CLI
uses), runs :func:`harness.sweep.run_sweep` in this process and returns its
result; every run has its own SQLite study file under ``root`` (pass pytest's
``tmp_path``). :func:`sweep` caches runs per process by their overrides, so
several tests share one run; its folders are temporary and removed when the
process exits. tests/analysis/conftest.py builds its session runs with
:func:`run` under ``tmp_path_factory``.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

#: A 2 x 2 grid on the bundled MLP: fast (a few seconds) and with a real front.
TINY_GRID = ("model=digits_mlp", "search.space.nbits=[8,2]", "search.space.mode=[linear,kmeans_lut]", "selector=all")
#: The tiny grid with an accuracy target.
GRID = TINY_GRID + ("search.max_accuracy_drop=0.01",)
#: A small mixed-precision run with an accuracy target.
MIXED = ("model=digits_mlp", "search=mixed", "search.space.nbits=[8,4,2]", "search.space.mode=[linear,kmeans_lut]",
         "search.n_trials=12", "search.options.greedy_points=3", "search.max_accuracy_drop=0.005")
#: A sensitivity run: 3 layers x 4 codecs.
SENSITIVITY = ("model=digits_mlp", "search=sensitivity", "search.space.nbits=[8,2]",
               "search.space.mode=[linear,kmeans_lut]")


def compose(*overrides: str, root: Path):
    """The composed qsweep config for ``overrides`` with storage under ``root``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import harness.cli as cli

    base = [f"storage.url=sqlite:///{root}/qsweep.db", "progress=false"]
    with initialize_config_dir(config_dir=cli.config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=base + list(overrides))


def run(*overrides: str, root: Path | None = None, name: str = "run"):
    """Run a sweep (uncached) and return its :class:`harness.sweep.SweepResult`."""
    from harness.sweep import run_sweep

    if root is None:
        root = Path(tempfile.mkdtemp(prefix="qsweep-analysis-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    cfg = compose(*overrides, root=Path(root))
    return run_sweep(cfg, Path(root) / name)


@functools.lru_cache(maxsize=None)
def sweep(*overrides: str) -> Path:
    """Run directory of a (cached) sweep with these overrides."""
    return Path(run(*overrides).run_dir)
