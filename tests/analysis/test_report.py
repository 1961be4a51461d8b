"""The report of a real tiny sweep: pareto.png, layers.png, report.html, qsweep-report; the reader's helpers."""
from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import quantizer
from harness import analysis
from harness.errors import QsweepError
from harness.report import _pareto_layer_rows, main, write_report
from tests.analysis_runs import TINY_GRID, run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def grid_run(grid_dir: Path, tmp_path_factory) -> Path:
    """A copy of the tiny grid run (the tests rewrite its report files)."""
    return Path(shutil.copytree(grid_dir, tmp_path_factory.mktemp("report") / "run"))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_sweep_calls_the_report_at_its_end(grid_dir: Path):
    for name in ("pareto.png", "layers.png", "report.html"):
        assert (grid_dir / name).is_file(), f"the driver's report hook did not write {name}"


def test_report_disabled_writes_no_report(tmp_path: Path):
    run_dir = run(*TINY_GRID, "report.enabled=false", "output.save_models=false", root=tmp_path).run_dir
    assert (run_dir / "trials.csv").is_file()
    assert not (run_dir / "report.html").exists()
    assert not (run_dir / "pareto.png").exists()


def test_write_report_files(grid_run: Path):
    for name in ("pareto.png", "layers.png", "report.html"):
        (grid_run / name).unlink(missing_ok=True)
    paths = write_report(grid_run)
    assert set(paths) == {"pareto", "layers", "report"}
    for key in ("pareto", "layers"):
        w, h = _png_size(paths[key].read_bytes())
        assert w >= 400 and h >= 200


def test_report_html_is_self_contained_with_table_and_baseline(grid_run: Path):
    write_report(grid_run)
    page = (grid_run / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert base64.b64decode(images[0]) == (grid_run / "pareto.png").read_bytes()
    assert base64.b64decode(images[1]) == (grid_run / "layers.png").read_bytes()
    assert not re.search(r'(src|href)="(https?:|file:|/)', page), "report.html must not reference outside files"
    run = analysis.load_run(grid_run)
    # the float baseline and every Pareto trial appear, with their measured figures
    assert f"{run.baseline['accuracy']:.4f}" in page
    table = page[page.index("<h2>Pareto front</h2>"):]
    for _, row in run.pareto.iterrows():
        assert f"<td>{row['trial']}</td>" in table
        assert f"{row['accuracy']:.4f}" in table
    assert "Best within the target" in page


def test_best_within_target_matches_the_trials(grid_run: Path):
    run = analysis.load_run(grid_run)
    best = run.best_within(0.01)
    done = run.complete
    ok = done[(done["accuracy"] >= run.baseline["accuracy"] - 0.01 - 1e-12) & done["reused_from"].isna()]
    ok = ok.sort_values(["size_bytes", "accuracy_drop", "trial"], kind="mergesort")
    assert best is not None and best["trial"] == ok.iloc[0]["trial"]
    assert run.summary["target"]["best"]["trial"] == best["trial"]


def test_layers_figure_reads_the_saved_models(grid_run: Path):
    run = analysis.load_run(grid_run)
    rows, labels, notes = _pareto_layer_rows(run)
    assert not notes
    assert len(labels) == len(run.pareto)
    for i, (_, prow) in enumerate(run.pareto.sort_values("size_bytes").iterrows()):
        got = rows[rows["model"] == i].set_index("layer")["label"].to_dict()
        spec = quantizer.load(grid_run / prow["model_file"])
        want = {t.layer: quantizer.encoding_label(t.encoding, t.nbits) for t in quantizer.weight_tensors(spec)
                if t.field == "weights"}
        assert {k: v.rstrip("*") for k, v in got.items()} == want
        # the trial's own setting is what the model holds
        if prow["nbits"] < 16:
            kind = "lut" if "lut" in prow["mode"] else "lin"
            assert set(v.rstrip("*") for v in got.values()) == {f"{kind}{prow['nbits']}"}


def test_layers_fall_back_to_the_trials_table(grid_run: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(grid_run, copy)
    shutil.rmtree(copy / "models")
    run = analysis.load_run(copy)
    rows, labels, notes = _pareto_layer_rows(run)
    assert len(labels) == len(run.pareto)
    assert all("layer_encodings" in n for n in notes)
    assert set(rows["layer"]) == {"dense1", "dense2", "dense3"}


def test_cli_writes_and_reports_errors(grid_run: Path, capsys, tmp_path: Path):
    assert main([str(grid_run)]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "pareto.png" in out
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "not a qsweep run directory" in capsys.readouterr().err


def test_load_run_errors(grid_dir: Path, tmp_path: Path):
    with pytest.raises(QsweepError, match="does not exist"):
        analysis.load_run(tmp_path / "nope")
    with pytest.raises(QsweepError, match="no qsweep run directory"):
        analysis.newest_run(tmp_path)
    with pytest.raises(QsweepError, match="no qsweep sensitivity run"):
        analysis.newest_run(grid_dir.parent, kind="sensitivity")


def test_hypervolume_by_hand():
    # two points on a float size of 100: (10, 0.9) and (50, 0.95)
    hv = analysis.hypervolume([10, 50], [0.9, 0.95], 100)
    assert hv == pytest.approx(0.9 * 0.9 + 0.5 * 0.05)
    # a dominated point and points outside the box add nothing
    assert analysis.hypervolume([10, 50, 60, 120], [0.9, 0.95, 0.94, 0.99], 100) == pytest.approx(hv)
    assert analysis.hypervolume([], [], 100) == 0.0


def test_compare_runs_table(grid_run: Path):
    run = analysis.load_run(grid_run)
    t = analysis.compare_runs([run, run], drops=(0.01,))
    assert len(t) == 2
    assert t["hypervolume"].iloc[0] == pytest.approx(
        analysis.hypervolume(run.complete["size_bytes"], run.complete["accuracy"], run.baseline["size_bytes"]))
    assert t["smallest_kb_within_0.01"].iloc[0] == pytest.approx(run.best_within(0.01)["size_bytes"] / 1024)
    assert isinstance(t, pd.DataFrame)


def test_newest_run_is_the_notebook_default(grid_dir: Path, tmp_path: Path):
    import os

    outputs = tmp_path / "outputs"
    old, new = outputs / "2024-01-01" / "10-00-00", outputs / "2024-01-02" / "09-00-00"
    for d, stamp in ((old, 1_700_000_000), (new, 1_700_100_000)):
        shutil.copytree(grid_dir, d)
        os.utime(d / "trials.csv", (stamp, stamp))
    (outputs / "qsweep.db").write_bytes(b"")
    assert analysis.find_runs(outputs) == [old, new]
    assert analysis.newest_run(outputs) == new
    assert analysis.resolve_run_dirs(None, roots=(tmp_path / "nothing", outputs)) == [new]
    assert analysis.resolve_run_dirs(f"{old}{os.pathsep}{new}") == [old, new]
    assert analysis.resolve_run_dirs([old]) == [old]
    assert analysis.find_runs(outputs, kind="grid") == [old, new]
    assert analysis.find_runs(outputs, kind="sensitivity") == []
    with pytest.raises(QsweepError, match="set RUN_DIR"):
        analysis.resolve_run_dirs("", roots=(tmp_path / "nothing",))
