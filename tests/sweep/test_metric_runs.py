"""End-to-end ``qsweep`` runs on models of every output kind (tests/metric_models.py), composed by Hydra.

A binary detector's broken 2-bit model must be reported as broken (with and
without labels), the intervals and p-values must reach trials.csv, pareto.csv,
summary.json and the report, a multi-output model gets one SNR column per
output, the scored output is chosen with ``metric.output`` and recorded, and
bad metric input fails before the sweep naming the key.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness import rundir
from harness.errors import ConfigError
from tests import metric_models as M
from tests.sweep.support import frame, restored_logging, run
from tests.sweep.test_errors import _check, _no_sweep_started, _qsweep

GRID = ["selector=all", "search.space.nbits=[8,2]", "search.space.mode=[linear]"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("metric-models")
    return {name: M.save(folder, name, *build()) for name, build in
            (("binary", M.binary_model), ("three", M.three_output_model), ("const", M.constant_output_model))}


def _own(files, name: str) -> list[str]:
    model, data = files[name]
    return [f"model.path={model}", "data=npz", f"data.path={data}"]


@pytest.fixture(scope="module")
def binary_run(files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("binary-run")
    return run(folder, [*_own(files, "binary"), *GRID, "search.max_accuracy_drop=0.02"], report=True)


def test_binary_model_broken_at_2_bits_is_reported_as_broken(binary_run):
    df = frame(binary_run).set_index("nbits")
    base = binary_run.summary["baseline"]
    assert binary_run.summary["metric"] == "accuracy" and base["accuracy"] == pytest.approx(0.97)
    two, eight = df.loc[2], df.loc[8]
    assert two["accuracy"] < 0.65 and two["accuracy_drop"] > 0.3 and two["agreement"] < 0.7
    assert two["accuracy_drop_p"] < 1e-10 and two["accuracy_ci_high"] < base["accuracy_ci_low"]
    assert eight["accuracy_drop_p"] > 0.05
    front = frame(binary_run, rundir.PARETO)
    broken = front[front["nbits"] == 2]  # on the front (it is the smallest), with its real accuracy
    assert len(broken) == 1 and broken["accuracy_drop"].iloc[0] > 0.3
    ev = binary_run.summary["evaluation"]
    assert ev["output"] == "prob" and ev["output_kind"] == "binary" and ev["threshold"] == 0.5
    assert ev["interval"] == "wilson" and ev["drop_test"] == "mcnemar" and ev["output_default"] is True
    assert ev["n"] == 400 and ev["snr_outputs"] == ["prob"]


def test_intervals_and_p_values_in_every_table(binary_run):
    d = binary_run.run_dir
    cols = ["accuracy_ci_low", "accuracy_ci_high", "accuracy_drop_p", "snr_db:prob"]
    for name in (rundir.TRIALS, rundir.PARETO):
        df = frame(d, name)
        assert df[cols].notna().all().all(), name
        assert ((df["accuracy_ci_low"] <= df["accuracy"]) & (df["accuracy"] <= df["accuracy_ci_high"])).all()
    summary = json.loads((d / rundir.SUMMARY).read_text())
    assert all(c in summary["baseline"] for c in cols[:3])
    assert all(c in row for row in summary["pareto_front"] for c in cols)
    report = (d / rundir.REPORT_HTML).read_text()
    assert "accuracy_ci_low" in report and "too small to resolve" in report and "exact McNemar" in report


def test_best_within_the_drop_says_whether_it_is_distinguishable_and_resolvable(binary_run):
    target = binary_run.summary["target"]
    assert target["best"]["nbits"] == 8
    ev = target["evidence"]
    assert ev["trial"] == target["best"]["trial"] and ev["distinguishable"] is False
    assert ev["resolves_max_drop"] is False and ev["ci_width"] > 0.02
    assert "not distinguishable from the float model (exact McNemar p = " in target["message"]
    assert "The test set (400 samples) is too small to resolve a drop of 0.02" in target["message"]


def test_binary_model_without_labels_is_scored_by_thresholded_agreement(files, tmp_path, capsys):
    res = run(tmp_path, [*_own(files, "binary"), "data.labels=null", *GRID])
    df = frame(res).set_index("nbits")
    assert res.summary["metric"] == "agreement"
    assert df.loc[2, "agreement"] < 0.7 and df.loc[2, "agreement_drop"] > 0.3  # was 1.0000 / +0.0000 (argmax)
    assert df.loc[2, "agreement_ci_high"] < 1.0 and df["agreement_drop_p"].isna().all()
    out = capsys.readouterr().out
    assert "ci95" in out and "drop_p" not in out  # no drop test for a metric measured against the float model


def test_multi_output_model_scores_the_chosen_output_and_records_every_snr(files, tmp_path):
    res = run(tmp_path, [*_own(files, "three"), *GRID, "study.name=three"])  # face_prob: its class scores
    df = frame(res)
    snr = [rundir.snr_column(o) for o in ("boxes", "landmarks", "face_prob")]
    assert df[snr].notna().all().all()
    assert (df["snr_db"] == df[snr].min(axis=1)).all()
    assert list(frame(res, rundir.PARETO).columns) == list(df.columns)
    ev = res.summary["evaluation"]
    assert (res.summary["metric"], ev["output"], ev["output_kind"], ev["output_default"], ev["output_choice"]) == \
        ("agreement", "face_prob", "class_scores", True, "the model's only class-score output")
    # the study records what its trials measure: the same study with another output is refused
    with pytest.raises(ConfigError, match=r"metric.output: \"face_prob\" in the study, \"landmarks\" now"):
        run(tmp_path, [*_own(files, "three"), "metric.output=landmarks", *GRID, "study.name=three"], run_dir="again")
    first = run(tmp_path, [*_own(files, "three"), "metric.output=boxes", *GRID], run_dir="boxes", db="boxes.db")
    assert first.summary["metric"] == "cosine" and first.summary["evaluation"]["output"] == "boxes"
    assert first.summary["evaluation"]["output_choice"] == "metric.output"


def test_old_metric_spelling_still_runs(tmp_path, capsys, monkeypatch):
    import sys

    from harness import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["qsweep", "model=digits_mlp", "metric=top3_accuracy", *GRID,
                                      f"hydra.run.dir={tmp_path / 'run'}", "progress=false", "report.enabled=false"])
    with restored_logging():
        cli.main()
    err = capsys.readouterr().err
    assert "metric=top3_accuracy is now spelled metric.name=top3_accuracy" in err
    summary = json.loads((tmp_path / "run" / rundir.SUMMARY).read_text())
    assert summary["metric"] == "top3_accuracy"
    assert pd.read_csv(tmp_path / "run" / rundir.TRIALS)["top3_accuracy_drop_p"].notna().all()


@pytest.mark.parametrize("case,args,needles", [
    ("output", ["metric.output=face"], ["metric.output='face' names no output", "'boxes', 'landmarks', 'face_prob'"]),
    ("fn", ["metric.fn=tests.nowhere.f1"], ["metric.fn='tests.nowhere.f1': cannot import module"]),
    ("fn_value", ["metric.fn=tests.data.test_metric_choice.text_fn"], ["metric.fn=", "not a number"]),
    ("snr_output", ["metric.output=landmarks", "metric.name=snr_db"], ["metric.output='landmarks' does not apply"]),
    ("no_labels", ["metric.name=top3_accuracy"], ["metric.name=top3_accuracy needs labels"]),
])
def test_bad_metric_input_fails_before_the_sweep(files, tmp_path, capsys, monkeypatch, case, args, needles):
    code, err = _qsweep([*_own(files, "three"), *args], capsys, tmp_path, monkeypatch)
    _check(code, err, *needles)
    _no_sweep_started(tmp_path)


def test_labels_that_do_not_fit_the_output_fail_before_the_sweep(files, tmp_path, capsys, monkeypatch):
    import numpy as np

    model, data = files["binary"]
    arrays = dict(np.load(data))
    np.savez(tmp_path / "digits_labels.npz", x=arrays["x"], y=np.arange(len(arrays["y"])) % 10)
    code, err = _qsweep([f"model.path={model}", "data=npz", f"data.path={tmp_path / 'digits_labels.npz'}"], capsys,
                        tmp_path, monkeypatch)
    _check(code, err, "labels range over 0..9", "metric.output='prob'", "0/1 or booleans")
    _no_sweep_started(tmp_path)
    code, err = _qsweep([*_own(files, "const")], capsys, tmp_path, monkeypatch)
    _check(code, err, "metric.output='bias_only' is constant", "metric.output=score")
    _no_sweep_started(tmp_path)


def test_a_reused_trial_copies_the_interval_p_value_and_snr_columns(files, tmp_path):
    res = run(tmp_path, [*_own(files, "binary"), "selector=all", "search.space.nbits=[16]",
                         "search.space.mode=[linear,kmeans_lut]"])  # both fp16: one plan, evaluated once
    df = frame(res)
    reused = df[df["reused_from"].notna()]
    assert len(reused) == 1
    original = df[df["trial"] == int(reused["reused_from"].iloc[0])]
    cols = ["accuracy", "accuracy_ci_low", "accuracy_ci_high", "accuracy_drop", "accuracy_drop_p", "agreement",
            "snr_db", "psnr_db", "snr_db:prob"]
    assert reused[cols].to_numpy().tolist() == original[cols].to_numpy().tolist()


def test_the_pareto_plot_draws_the_intervals_as_error_bars(binary_run):
    import numpy as np
    from matplotlib.container import ErrorbarContainer
    from matplotlib.figure import Figure

    from harness import analysis

    run_ = analysis.load_run(binary_run.run_dir)
    ax = Figure().subplots()
    analysis.plot_pareto(ax, run_)
    spans = set()
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            for seg in c.lines[2][0].get_segments():
                spans.add((round(float(seg[0][1]), 9), round(float(seg[1][1]), 9)))
    trials = analysis.complete_trials(run_.trials)
    want = {(round(lo, 9), round(hi, 9)) for lo, hi in zip(trials["accuracy_ci_low"], trials["accuracy_ci_high"])}
    assert want <= spans
    base = run_.baseline
    assert (round(base["accuracy_ci_low"], 9), round(base["accuracy_ci_high"], 9)) in spans
    assert np.isfinite(list(want)).all()


def test_a_model_option_can_choose_the_scored_output(files, tmp_path):
    """conf/model/<name>.yaml with ``# @package _global_`` may set metric.* for its model (config.yaml's own
    values come before the groups); the command line still wins."""
    model, data = files["three"]
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "three_heads.yaml").write_text(
        f"# @package _global_\nmodel:\n  name: null\n  path: {model}\nmetric:\n  output: boxes\n")
    common = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=three_heads", "data=npz", f"data.path={data}",
              *GRID]
    res = run(tmp_path, common)
    assert res.summary["evaluation"]["output"] == "boxes" and res.summary["metric"] == "cosine"
    res = run(tmp_path, [*common, "metric.output=landmarks"], run_dir="cli", db="cli.db")
    assert res.summary["evaluation"]["output"] == "landmarks" and res.summary["metric"] == "cosine"
