"""Grid sweeps on SQLite with the real zoo model digits_mlp: counts, dedupe, run files, resume, determinism."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.sweep.support import (
    REQUIRED_COLUMNS, RUN_SPECIFIC, TINY_GRID, TINY_POINTS, finished, frame, grid_points, run,
)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """The tiny grid with an accuracy target, run once for the module."""
    folder = tmp_path_factory.mktemp("grid")
    result = run(folder, TINY_GRID + ["search.max_accuracy_drop=0.01"])
    return folder, result


def test_grid_runs_every_valid_point_exactly_once(first):
    _, result = first
    df = frame(result)
    assert len(df) == len(TINY_POINTS)
    assert finished(df).all()  # COMPLETE, or stopped early by racing (dominated)
    points = grid_points(df)
    assert sorted(points) == sorted(TINY_POINTS)  # each valid point once; linear_symmetric/1 never ran
    dropped = result.summary["search"]["dropped"]
    assert [(d["nbits"], d["mode"]) for d in dropped] == [(1, "linear_symmetric")]
    assert "2 bits" in dropped[0]["reason"]
    assert result.summary["search"]["total"] == len(TINY_POINTS)


def test_same_plan_is_evaluated_once_and_reused(first):
    _, result = first
    df = frame(result)
    fp16 = df[df["nbits"] == 16].sort_values("trial")
    assert len(fp16) == 3 and fp16["plan_hash"].nunique() == 1
    owner = fp16.iloc[0]
    assert pd.isna(owner["reused_from"]) and owner["quantize_s"] > 0
    reused = fp16.iloc[1:]
    assert (reused["reused_from"] == owner["trial"]).all()
    assert reused["quantize_s"].isna().all() and reused["evaluate_s"].isna().all()
    for col in ("size_bytes", "accuracy", "snr_db", "agreement"):
        assert (reused[col] == owner[col]).all()
    # every other plan was evaluated by exactly one trial
    evaluated = df[df["reused_from"].isna()]
    assert evaluated["plan_hash"].is_unique
    assert set(evaluated["plan_hash"]) == set(df["plan_hash"])


def test_run_directory_files(first):
    from quantizer.coremltools_quiet import coremltools
    import quantizer
    from harness import zoo

    _, result = first
    d = result.run_dir
    for name in ("config.yaml", "environment.json", "trials.csv", "pareto.csv", "summary.json"):
        assert (d / name).is_file(), name
    trials, front = frame(d), frame(d, "pareto.csv")
    assert [c for c in REQUIRED_COLUMNS if c not in trials.columns] == []
    assert list(front.columns) == list(trials.columns)

    # pareto.csv: sorted by size, non-dominated, a subset of the trials, no reused copies
    assert front["size_bytes"].is_monotonic_increasing
    assert front["accuracy"].is_monotonic_increasing and front["accuracy"].is_unique
    done = trials[trials["state"] == "COMPLETE"]
    for _, p in front.iterrows():
        better = done[(done["size_bytes"] <= p["size_bytes"]) & (done["accuracy"] >= p["accuracy"])
                      & ((done["size_bytes"] < p["size_bytes"]) | (done["accuracy"] > p["accuracy"]))]
        assert better.empty, f"trial {p['trial']} is dominated by {better['trial'].tolist()}"
    assert front["reused_from"].isna().all()
    for _, t in done.iterrows():  # every complete trial is dominated by or equal to a front point
        assert ((front["size_bytes"] <= t["size_bytes"]) & (front["accuracy"] >= t["accuracy"])).any()

    # models/: every Pareto model, loadable by coremltools, with the measured size and encodings
    ct = coremltools()
    assert front["model_file"].notna().all()
    assert sorted(p.name for p in (d / "models").iterdir()) == sorted(Path(f).name for f in front["model_file"])
    for _, p in front.iterrows():
        path = d / p["model_file"]
        assert path.stat().st_size == p["size_bytes"]
        spec = ct.models.MLModel(str(path)).get_spec()
        assert spec.WhichOneof("Type") == "neuralNetworkClassifier"
        enc = {f"{t.layer}.{t.field}": quantizer.encoding_label(t.encoding, t.nbits) for t in quantizer.weight_tensors(spec)}
        assert enc == json.loads(p["layer_encodings"])

    # environment.json and summary.json
    env = json.loads((d / "environment.json").read_text())
    assert env["model"]["sha256"] == hashlib.sha256(zoo.path("digits_mlp").read_bytes()).hexdigest()
    assert len(env["data"]["sha256"]) == 64 and env["seed"] == 0
    assert env["packages"]["optuna"] and env["packages"]["coremltools"]
    summary = json.loads((d / "summary.json").read_text())
    assert summary["metric"] == "accuracy"
    base = summary["baseline"]
    assert base["size_bytes"] == zoo.path("digits_mlp").stat().st_size
    assert 0.9 < base["accuracy"] <= 1.0
    assert [r["trial"] for r in summary["pareto_front"]] == front["trial"].tolist()
    ok = done[done["accuracy_drop"] <= 0.01 + 1e-12].sort_values(["size_bytes", "trial"])
    best = summary["target"]["best"]
    assert best["trial"] == ok.iloc[0]["trial"] and best["size_bytes"] == ok.iloc[0]["size_bytes"]
    assert "Smallest model within accuracy drop 0.01" in summary["target"]["message"]
    assert (trials["compression_ratio"].dropna() - base["size_bytes"] / trials["size_bytes"].dropna()).abs().max() < 1e-9


def test_rerun_resumes_the_study_and_keeps_finished_trials(first):
    folder, result = first
    again = run(folder, TINY_GRID + ["search.max_accuracy_drop=0.01"], run_dir="run2")
    assert again.study_name == result.study_name
    assert again.summary["study"]["created_by_this_run"] is False
    assert again.summary["worker"]["trials_started"] == 0
    a, b = frame(result), frame(again)
    assert b["trial"].tolist() == a["trial"].tolist()
    pd.testing.assert_frame_equal(a.drop(columns=["model_file"]), b.drop(columns=["model_file"]))


def test_same_config_and_seed_give_the_same_pareto_figures(first, tmp_path):
    _, result = first
    other = run(tmp_path, TINY_GRID + ["search.max_accuracy_drop=0.01"])  # fresh storage: every trial re-run
    assert other.summary["worker"]["trials_started"] == len(TINY_POINTS)
    a = frame(result, "pareto.csv").drop(columns=RUN_SPECIFIC)
    b = frame(other, "pareto.csv").drop(columns=RUN_SPECIFIC)
    pd.testing.assert_frame_equal(a, b)


def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    result = run(tmp_path, ["model=digits_mlp", "selector=all", "search.space.nbits=[1]",
                            "search.space.mode=[custom_lut,linear]",
                            "search.space.lut_function=tests.sweep.support.bad_lut",
                            "search.max_accuracy_drop=0.0"])
    df = frame(result).set_index("mode")
    assert df.loc["custom_lut", "state"] == "FAIL"
    assert "lut_function returned a LUT of shape (3,)" in df.loc["custom_lut", "error"]
    assert df.loc["linear", "state"] == "COMPLETE" and pd.isna(df.loc["linear", "error"])
    # an accuracy target nobody meets is stated plainly
    target = result.summary["target"]
    assert target["best"] is None and "No trial is within accuracy drop 0" in target["message"]


def test_custom_lut_by_import_path(tmp_path):
    result = run(tmp_path, ["model=digits_mlp", "selector=all", "search.space.nbits=[2]",
                            "search.space.mode=[custom_lut,linear_lut]",
                            "search.space.lut_function=tests.sweep.support.linear_lut"])
    df = frame(result).set_index("mode")
    assert finished(df).all()
    assert df.loc["custom_lut", "encodings"] == "lut2 x6"
    assert result.summary["search"]["space"]["lut_function"] == "tests.sweep.support.linear_lut"


def test_sampler_search_honours_the_study_wide_budget(tmp_path):
    overrides = ["model=digits_mlp", "selector=all", "search=random", "search.n_trials=5",
                 "search.space.nbits=[8,2,1]", "search.space.mode=[linear,linear_symmetric]", "seed=3"]
    result = run(tmp_path, overrides)
    df = frame(result)
    counted = df[df["state"] != "PRUNED"]
    assert len(counted) == 5 and (counted["state"] == "COMPLETE").all()
    skipped = df[df["state"] == "PRUNED"]
    assert ((skipped["mode"] == "linear_symmetric") & (skipped["nbits"] == 1)).all()
    assert skipped["error"].str.contains("needs at least 2 bits").all()
    # resuming with a larger budget runs only the difference
    more = run(tmp_path, overrides[:3] + ["search.n_trials=7"] + overrides[4:], run_dir="run2")
    df2 = frame(more)
    assert len(df2[df2["state"] != "PRUNED"]) == 7


def test_bring_your_own_model_and_npz_data(tmp_path):
    import shutil

    import numpy as np

    from harness import zoo

    shutil.copy(zoo.path("digits_mlp"), tmp_path / "my.mlmodel")
    _, test = zoo.load("digits_mlp")
    x = test.feeds["pixels"]
    np.savez(tmp_path / "test.npz", x=x, y=test.labels)  # `x` feeds the single input
    np.savez(tmp_path / "unlabelled.npz", pixels=x)
    grid = ["selector=all", "search.space.nbits=[4]", "search.space.mode=[linear,kmeans_lut]"]
    mine = run(tmp_path, [f"model.path={tmp_path / 'my.mlmodel'}", "data=npz", f"data.path={tmp_path / 'test.npz'}",
                          *grid])
    zoo_run = run(tmp_path, ["model=digits_mlp", *grid], run_dir="zoo", db="zoo.db")
    a, b = frame(mine), frame(zoo_run)
    assert a["accuracy"].tolist() == b["accuracy"].tolist()  # same model, same data, same figures
    assert mine.summary["model"]["name"] == "my"
    # without labels the task metric is agreement with the float model
    unl = run(tmp_path, [f"model.path={tmp_path / 'my.mlmodel'}", "data=npz",
                         f"data.path={tmp_path / 'unlabelled.npz'}", *grid], run_dir="unl", db="unl.db")
    assert unl.summary["metric"] == "agreement" and unl.summary["baseline"]["agreement"] == 1.0
    df = frame(unl)
    assert "accuracy" not in df.columns and df["agreement_drop"].notna().all()
    # racing stops on the task metric: a trial stopped on accuracy holds its partial agreement; the trials
    # both runs evaluated on every sample agree exactly
    both = (df["state"] == "COMPLETE").to_numpy() & (b["state"] == "COMPLETE").to_numpy()
    assert both.any()
    assert df["agreement"][both].tolist() == b["agreement"][both].tolist()


def test_regressor_sweeps_on_r2(tmp_path):
    result = run(tmp_path, ["model=diabetes_mlp", "selector=all", "search.space.nbits=[8,2]",
                            "search.space.mode=[linear]"])
    assert result.summary["metric"] == "r2" and result.summary["direction"] == "maximize"
    df = frame(result)
    assert (df["state"] == "COMPLETE").all() and df["agreement"].isna().all()
    assert (df["r2_drop"] - (result.summary["baseline"]["r2"] - df["r2"])).abs().max() < 1e-12
