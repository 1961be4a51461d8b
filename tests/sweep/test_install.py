"""After a plain (non-editable) ``pip install`` of the wheel, ``qsweep`` runs from any folder.

Builds the wheel from a copy of the source tree, installs it into a throwaway
virtual environment (with the system site-packages for the dependencies), and
runs a tiny sweep from an unrelated folder: the config tree must come from the
installed package (``pkg://harness.conf``), the zoo model from package data.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd

from tests.sweep.support import REPO


def test_wheel_install_runs_from_any_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
    for name in ("conf", "harness", "quantizer"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("qsweep-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True, timeout=600)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    where = subprocess.run([str(py), "-c", "import harness.cli as c; print(c.config_dir()); print(c.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=300, check=True)
    config_dir, module = where.stdout.split()
    assert config_dir == "pkg://harness.conf" and str(venv) in module
    proc = subprocess.run([str(venv / "bin" / "qsweep"), "model=digits_mlp", "selector=all", "search.space.nbits=[8,2]",
                           "search.space.mode=[linear,kmeans_lut]", "report.enabled=false", "progress=false"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Pareto front" in proc.stdout
    (pareto,) = (work / "outputs").rglob("pareto.csv")
    assert len(pd.read_csv(pareto)) >= 1 and (work / "outputs" / "qsweep.db").is_file()
