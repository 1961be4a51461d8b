"""The run directory: the schema (harness.rundir), the writer (harness.outputs), the reader, best_within."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness import analysis, outputs, pareto, rundir
from harness.errors import QsweepError
from harness.report import write_report
from harness.search.base import StrategyResult
from harness.search.grid import GridSearch
from tests.analysis_runs import SENSITIVITY, TINY_GRID, run


def _summary(d: Path) -> dict:
    return json.loads((d / rundir.SUMMARY).read_text())


# ------------------------------------------------------------------------------------ the schema
@pytest.mark.parametrize("fixture, added", [("grid_dir", ()), ("mixed_dir", ("hypervolume", "mixed")),
                                            ("sensitivity_dir", ("sensitivity",))])
def test_summary_has_the_schema_keys(fixture: str, added: tuple[str, ...], request):
    d = request.getfixturevalue(fixture)
    summary = _summary(d)
    assert tuple(summary) == rundir.SUMMARY_KEYS + added
    assert set(added) <= set(rundir.STRATEGY_SUMMARY_KEYS)
    for name in rundir.REQUIRED_FILES:
        assert (d / name).is_file(), name
    assert set(summary["target"]) >= set(rundir.Target.__required_keys__)


@pytest.mark.parametrize("fixture", ["grid_dir", "mixed_dir", "sensitivity_dir"])
def test_tables_have_the_schema_columns(fixture: str, request):
    d = request.getfixturevalue(fixture)
    summary = _summary(d)
    trials = pd.read_csv(d / rundir.TRIALS)
    lead = rundir.leading_columns(summary["metric"], summary["evaluation"]["snr_outputs"])
    assert summary["evaluation"]["snr_outputs"] == ["probs"] and "snr_db:probs" in lead
    assert list(trials.columns[:len(lead)]) == lead
    assert list(trials.columns[-len(rundir.TAIL_COLUMNS):]) == rundir.TAIL_COLUMNS
    assert list(pd.read_csv(d / rundir.PARETO).columns) == list(trials.columns)
    for f in pd.read_csv(d / rundir.PARETO)["model_file"].dropna():
        assert re.fullmatch(rf"{rundir.MODELS}/trial_\d{{4}}_.+\.mlmodel", f) and (d / f).is_file()


def test_sensitivity_table_has_the_schema_columns(sensitivity_dir: Path):
    path = sensitivity_dir / rundir.table_file(rundir.SENSITIVITY_TABLE)
    header = path.read_text().splitlines()[0].split(",")
    assert header == rundir.sensitivity_columns("accuracy")  # exactly: no duplicate mode/nbits columns
    sens = pd.read_csv(path)
    assert rundir.sensitivity_drop_column(sens.columns) == "accuracy_drop"
    assert sens["mode"].notna().all() and sens["nbits"].notna().all()


# ------------------------------------------------------------------------------------ the reader
def test_the_reader_reads_what_the_writer_wrote(grid_dir: Path):
    run_ = analysis.load_run(grid_dir)
    summary = _summary(grid_dir)
    assert run_.metric == summary["metric"] == "accuracy"
    assert run_.maximize is True
    assert run_.baseline == summary["baseline"]
    assert run_.max_accuracy_drop == summary["target"]["max_accuracy_drop"] == 0.01
    assert run_.model_name == summary["model"]["name"] == "digits_mlp"
    assert analysis.search_kind(run_) == summary["search"]["kind"] == "grid"
    assert run_.drop_column == "accuracy_drop"
    assert run_.tables == {} and run_.sensitivity is None
    assert run_.config["search"]["max_accuracy_drop"] == 0.01
    assert run_.environment["model"]["sha256"] == summary["model"]["sha256"]
    assert run_.pareto["trial"].tolist() == [r["trial"] for r in summary["pareto_front"]]
    assert (run_.complete["state"] == rundir.COMPLETE).all()


def test_the_reader_refuses_what_the_writer_does_not_write(grid_dir: Path, tmp_path: Path):
    d = Path(shutil.copytree(grid_dir, tmp_path / "run"))
    (d / rundir.PARETO).rename(tmp_path / "pareto.csv")
    with pytest.raises(QsweepError, match="incomplete qsweep run directory: pareto.csv missing"):
        analysis.load_run(d)
    (tmp_path / "pareto.csv").rename(d / rundir.PARETO)

    summary = _summary(d)
    del summary["metric"]
    (d / rundir.SUMMARY).write_text(json.dumps(summary))
    with pytest.raises(QsweepError, match="lacks metric"):
        analysis.load_run(d)
    summary["metric"] = "task_metric"  # a name no trials.csv column has
    (d / rundir.SUMMARY).write_text(json.dumps(summary))
    with pytest.raises(QsweepError, match="lacks the column"):
        analysis.load_run(d)


def test_sensitivity_run_reads_its_table(sensitivity_dir: Path):
    run_ = analysis.load_run(sensitivity_dir)
    assert set(run_.tables) == {rundir.SENSITIVITY_TABLE}
    assert len(run_.sensitivity) == 12
    assert analysis.find_runs(sensitivity_dir.parent, kind="sensitivity") == [sensitivity_dir]
    assert analysis.newest_run(sensitivity_dir.parent, kind="sensitivity") == sensitivity_dir


# ------------------------------------------------------------------------------- best within a drop
def _frame(rows):
    return pd.DataFrame(rows, columns=["trial", "size_bytes", "accuracy_drop", "reused_from"])


def test_best_within_tie_break_size_then_drop_then_trial():
    df = _frame([(0, 100, 0.0, None), (1, 50, 0.008, None), (2, 50, 0.004, None), (3, 50, 0.004, None),
                 (4, 40, 0.02, None)])
    assert pareto.best_within(df, "accuracy_drop", 0.01)["trial"] == 2  # smallest, then smallest drop, then lowest
    assert pareto.best_within(df, "accuracy_drop", 0.001)["trial"] == 0
    assert pareto.best_within(df, "accuracy_drop", 0.02)["trial"] == 4
    assert pareto.best_within(df, "accuracy_drop", -0.1) is None
    assert pareto.best_within(df.iloc[0:0], "accuracy_drop", 0.01) is None


def test_best_within_ignores_reused_rows_and_allows_rounding():
    df = _frame([(0, 60, 0.01 + 1e-13, None), (1, 50, 0.0, 0)])
    assert pareto.best_within(df, "accuracy_drop", 0.01)["trial"] == 0


@pytest.mark.parametrize("fixture", ["grid_dir", "mixed_dir"])
def test_summary_and_report_name_the_same_trial(fixture: str, request, tmp_path: Path):
    d = Path(shutil.copytree(request.getfixturevalue(fixture), tmp_path / "run"))
    summary = _summary(d)
    run_ = analysis.load_run(d)
    assert run_.max_accuracy_drop is not None
    best = summary["target"]["best"]
    assert best is not None
    want = pareto.best_within(run_.complete, run_.drop_column, run_.max_accuracy_drop)
    assert best["trial"] == want["trial"] == run_.best_within(run_.max_accuracy_drop)["trial"]
    write_report(d)
    page = (d / rundir.REPORT_HTML).read_text()
    section = page[page.index("Best within the target"):]
    section = section[:section.index("</table>")]
    assert re.search(r"<th>trial</th><td>(\d+)</td>", section).group(1) == str(best["trial"])
    assert f"Smallest model within accuracy drop {run_.max_accuracy_drop:g}: trial {best['trial']}," in \
        summary["target"]["message"]


# ------------------------------------------------------------------------------------ the writer
def test_write_strategy_result(tmp_path: Path):
    summary = {"metric": "accuracy"}
    table = pd.DataFrame({"unit": ["a", "b"], "x": [1, 2]})
    files = outputs.write_strategy_result(tmp_path, StrategyResult(summary={"extra": {"n": 2}},
                                                                   tables={"extra": table}), summary)
    assert files == {"extra": tmp_path / "extra.csv"}
    pd.testing.assert_frame_equal(pd.read_csv(files["extra"]), table)
    assert summary == {"metric": "accuracy", "extra": {"n": 2}}
    assert outputs.write_strategy_result(tmp_path, StrategyResult(), summary) == {}
    with pytest.raises(ValueError, match="may not be named 'trials'"):
        outputs.write_strategy_result(tmp_path, StrategyResult(tables={"trials": table}), summary)
    with pytest.raises(TypeError, match="must return a StrategyResult"):
        outputs.write_strategy_result(tmp_path, {}, summary)  # type: ignore[arg-type]


def test_the_writer_writes_what_a_strategy_returns(tmp_path: Path, monkeypatch):
    """A strategy returns data (StrategyResult); the writer writes ``<name>.csv`` and merges the summary."""
    seen = {}

    def finish(self, table, summary, evaluator):
        seen["columns"] = list(table.columns)
        summary["target"] = "changed"  # a copy: this changes nothing
        table["trial"] = -1  # a copy too
        return StrategyResult(summary={"extra": {"modes": 2}},
                              tables={"extra": pd.DataFrame({"unit": ["dense1", "dense2"], "value": [0.5, 0.25]})})

    monkeypatch.setattr(GridSearch, "finish", finish)
    res = run(*TINY_GRID, "search.max_accuracy_drop=0.01", "report.enabled=false", "output.save_models=false",
              root=tmp_path)
    d = Path(res.run_dir)
    lead = rundir.leading_columns("accuracy", ["probs"])  # digits_mlp: one numeric output
    assert seen["columns"][:len(lead)] == lead
    assert res.files["extra"] == d / "extra.csv"
    assert pd.read_csv(d / "extra.csv")["value"].tolist() == [0.5, 0.25]
    summary = _summary(d)
    assert tuple(summary) == rundir.SUMMARY_KEYS + ("extra",)
    assert summary["extra"] == {"modes": 2}
    assert isinstance(summary["target"], dict) and summary["target"]["best"] is not None
    assert len(pd.read_csv(d / rundir.TRIALS)) == len(res.trials) == 4
    loaded = analysis.load_run(d)
    assert list(loaded.tables) == ["extra"]


def test_sensitivity_png_is_drawn_by_the_report_only(tmp_path: Path):
    res = run(*SENSITIVITY, "report.enabled=false", "output.save_models=false", root=tmp_path)
    d = Path(res.run_dir)
    assert (d / "sensitivity.csv").is_file() and res.files["sensitivity"] == d / "sensitivity.csv"
    assert not (d / rundir.SENSITIVITY_PNG).exists(), "the strategy drew a figure; only harness.report draws"
    paths = write_report(d)
    assert set(paths) == {"sensitivity", "report"} and (d / rundir.SENSITIVITY_PNG).is_file()
