"""Helpers for the sweep tests (tests/sweep/): compose configs, run sweeps, open storages, run the CLI.

Runs use the real zoo model ``digits_mlp`` and its real test set with tiny
grids, a SQLite file (or a PostgreSQL server) under the test's temp folder.
Also the custom LUT functions the configs name by import path
(``tests.sweep.support.linear_lut``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]

#: A tiny grid: 3 nbits x 3 modes minus linear_symmetric/1 = 8 points; the three
#: 16-bit points compile to the same float16 plan (evaluated once, reused twice).
TINY_GRID = ["model=digits_mlp", "selector=all", "search.space.nbits=[16,4,1]",
             "search.space.mode=[linear,linear_symmetric,kmeans_lut]"]
TINY_POINTS = {(16, "linear"), (16, "linear_symmetric"), (16, "kmeans_lut"), (4, "linear"),
               (4, "linear_symmetric"), (4, "kmeans_lut"), (1, "linear"), (1, "kmeans_lut")}
#: Columns trials.csv must have (issue 4).
REQUIRED_COLUMNS = ["trial", "state", "nbits", "mode", "size_bytes", "compression_ratio", "accuracy",
                    "accuracy_drop", "agreement", "snr_db", "psnr_db", "plan_hash", "model_file",
                    "skip_layer_types", "minimum_conv_kernel_channels", "minimum_conv_weight_count",
                    "minimum_matrix_weight_count", "quantize_s", "evaluate_s", "reused_from", "error",
                    "encodings", "layer_encodings"]
#: A 2 x 2 grid on the bundled MLP with every layer selected: fast, with a real front (the mixed tests
#: compare their uniform seeds with it).
SMALL_GRID = ["model=digits_mlp", "search.space.nbits=[8,2]", "search.space.mode=[linear,kmeans_lut]", "selector=all"]
#: Columns that legitimately differ between two runs of the same config (time, process).
RUN_SPECIFIC = ["quantize_s", "evaluate_s", "worker", "datetime_start", "datetime_complete"]


def finished(df: pd.DataFrame) -> pd.Series:
    """Rows of a trials table that ran to their end: COMPLETE, or PRUNED by racing (``dominated_by`` set)."""
    raced = df["dominated_by"].notna() if "dominated_by" in df.columns else False
    return (df["state"] == "COMPLETE") | ((df["state"] == "PRUNED") & raced)


def compose(overrides: Sequence[str]) -> Any:
    """The qsweep config with ``overrides``, composed by Hydra from the repo's conf/."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import harness.cli  # noqa: F401 - registers the schema and resolvers

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def sqlite_url(folder: Path, name: str = "qsweep.db") -> str:
    return f"sqlite:///{folder / name}"


def run(folder: Path, overrides: Sequence[str], run_dir: str = "run", db: str = "qsweep.db", *,
        report: bool = False):
    """Run a sweep in-process (``harness.sweep.run_sweep``) with its storage under ``folder``
    (the report only with ``report=True``)."""
    from harness.sweep import run_sweep

    cfg = compose([f"storage.url={sqlite_url(folder, db)}", "progress=false", f"report.enabled={str(report).lower()}",
                   *overrides])
    return run_sweep(cfg, folder / run_dir)


def storage(url: str, heartbeat: int = 1, grace: int = 2, max_retry: int | None = 3):
    """``harness.study.open_storage`` of ``url`` with short heartbeats (for the study and worker tests)."""
    from omegaconf import OmegaConf

    from harness.config import StorageConfig
    from harness.study import open_storage

    return open_storage(OmegaConf.structured(StorageConfig(url=url, heartbeat_interval=heartbeat,
                                                           grace_period=grace, max_retry=max_retry)))


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """Undo the logging set-up an in-process Hydra run leaves behind (handlers bound to the
    test's captured, later closed, stdout)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers = handlers
        root.setLevel(level)


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def cli_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def run_cli(args: Sequence[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m harness ARGS`` in a subprocess (source checkout on PYTHONPATH)."""
    return subprocess.run(cli_command(args), cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(result_or_dir: Any, name: str = "trials.csv") -> pd.DataFrame:
    d = Path(getattr(result_or_dir, "run_dir", result_or_dir))
    return pd.read_csv(d / name)


def grid_points(df: pd.DataFrame) -> list[tuple[int, str]]:
    """(nbits, mode) of every finished row (COMPLETE, or stopped early by racing)."""
    done = df[finished(df)]
    return [(int(n), str(m)) for n, m in zip(done["nbits"], done["mode"])]


def bad_lut(nbits: int, weights: np.ndarray):
    """A custom_lut function that returns a LUT of the wrong length (the quantizer must refuse it)."""
    w = np.asarray(weights, dtype=np.float32).ravel()
    return np.zeros(3, dtype=np.float32), np.zeros(w.size, dtype=np.int64)


def linear_lut(nbits: int, weights: np.ndarray):
    """A valid custom_lut function: 2**nbits evenly spaced levels over the weight range."""
    w = np.asarray(weights, dtype=np.float32).ravel()
    lut = np.linspace(w.min(), w.max(), 2 ** nbits).astype(np.float32)
    idx = np.abs(w[:, None] - lut[None, :]).argmin(axis=1)
    return lut, idx


def levels_lut(nbits: int, weights: np.ndarray, spread: float = 1.0):
    """A custom_lut function with a keyword argument (for ``{_target_: ..., spread: ...}`` nodes)."""
    w = np.asarray(weights, dtype=np.float32).ravel()
    lut = (np.linspace(w.min(), w.max(), 2 ** nbits) * spread).astype(np.float32)
    return lut, np.abs(w[:, None] - lut[None, :]).argmin(axis=1)
