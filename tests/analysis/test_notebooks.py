"""The analysis notebooks run headless (nbclient, kernel python3) against real tiny runs.

Each notebook's first code cell reads its run directory from an environment
variable (``QSWEEP_RUN_DIR``, ``QSWEEP_SENSITIVITY_DIR``); the kernel inherits
the test's environment. A cell that raises fails the test.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def _execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in list(env) + ["PYTHONPATH", "MPLBACKEND"]}
    os.environ.update(env)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), old["PYTHONPATH"]]))
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend puts figures into the outputs
    try:
        NotebookClient(nb, kernel_name="python3", timeout=300,
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out["text"])
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


def _images(nb: nbformat.NotebookNode) -> int:
    return sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))


@pytest.mark.parametrize("name", ["pareto_analysis.ipynb", "sensitivity.ipynb"])
def test_committed_without_outputs(name: str):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("name", ["pareto_analysis.ipynb", "sensitivity.ipynb"])
def test_notebooks_read_runs_through_the_reader_only(name: str):
    """No notebook opens a run's files itself: it goes through harness.analysis (load_run and friends)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for word in ("read_csv", "read_json", "json.load", "open(", "OmegaConf", '.csv"', '.json"', '.yaml"'):
        assert word not in code, f"{name} reads run files itself ({word!r}); use harness.analysis.load_run"
    assert "analysis.load_run(" in code


def test_pareto_analysis_one_run(grid_dir: Path):
    run_dir = grid_dir
    nb = _execute("pareto_analysis.ipynb", {"QSWEEP_RUN_DIR": str(run_dir)})
    text = _text(nb)
    assert f"run: {run_dir}" in text
    assert "smallest model within 0.01" in text
    assert "one run given" in text
    assert _images(nb) == 2  # size vs accuracy, accuracy vs nbits


def test_pareto_analysis_compares_two_runs(grid_dir: Path, mixed_dir: Path):
    nb = _execute("pareto_analysis.ipynb", {"QSWEEP_RUN_DIR": os.pathsep.join([str(grid_dir), str(mixed_dir)])})
    text = _text(nb)
    assert "hypervolume" in text and "mixed" in text and "grid" in text
    assert _images(nb) == 3


def test_sensitivity_notebook(sensitivity_dir: Path):
    nb = _execute("sensitivity.ipynb", {"QSWEEP_SENSITIVITY_DIR": str(sensitivity_dir)})
    text = _text(nb)
    assert "3 layers x 4 codecs" in text
    assert "mean_drop" in text  # the ranking table
    assert _images(nb) == 3  # two heatmaps and the ranking bars
