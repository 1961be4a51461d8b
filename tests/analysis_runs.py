"""Real tiny qsweep runs for the analysis tests (report, notebooks, sensitivity, mixed).

:func:`sweep` composes the qsweep config with Hydra (the same tree the CLI
uses), runs :func:`harness.sweep.run_sweep` in this process and returns the
run directory. Runs are cached per process by their overrides, so several
tests share one run. Every run has its own SQLite study file.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

#: A 2 x 2 grid on the bundled MLP: fast (a few seconds) and with a real front.
TINY_GRID = ("model=digits_mlp", "search.space.nbits=[8,2]", "search.space.mode=[linear,kmeans_lut]", "selector=all")


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

    root = Path(tempfile.mkdtemp(prefix="qsweep-analysis-")) if root is None else Path(root)
    cfg = compose(*overrides, root=root)
    return run_sweep(cfg, root / name)


@functools.lru_cache(maxsize=None)
def sweep(*overrides: str) -> Path:
    """Run directory of a (cached) sweep with these overrides."""
    return Path(run(*overrides).run_dir)
