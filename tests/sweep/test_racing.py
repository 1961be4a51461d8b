"""Racing in real sweeps: the same front as ``racing=off``, PRUNED rows with partial figures, sample counts,
reuse, budgets, samplers, resume and several workers on PostgreSQL."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from harness.search.raced import RacedTrialsSampler, _StudyView, as_observed
from tests.sweep.support import cli_command, cli_env, finished, frame, run
from tests.sweep.test_workers import postgres_url  # noqa: F401 - the PostgreSQL server fixture

#: 4 nbits x 3 modes x 4 selector settings on the MLP (48 points; some plans repeat).
GRID = ["model=digits_mlp", "search.space.nbits=[8,4,2,1]", "search.space.mode=[linear,kmeans_lut,linear_lut]",
        "search.max_accuracy_drop=0.01"]
N = 450


def front_key(df: pd.DataFrame) -> list[tuple[str, int, float]]:
    return [(str(r["plan_hash"]), int(r["size_bytes"]), float(r["accuracy"])) for _, r in df.iterrows()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    """The grid with each racing mode, each in its own folder."""
    return {mode: run(tmp_path_factory.mktemp(f"race-{mode}"), [*GRID, f"evaluation.racing={mode}"])
            for mode in ("off", "exact", "confident")}


def test_exact_and_confident_fronts_equal_off(runs):
    off = runs["off"]
    for mode in ("exact", "confident"):
        res = runs[mode]
        assert front_key(res.front) == front_key(off.front), mode
        assert front_key(frame(res, "pareto.csv")) == front_key(frame(off, "pareto.csv"))
        assert res.summary["target"]["best"]["plan_hash"] == off.summary["target"]["best"]["plan_hash"]
        assert res.summary["trials"]["pruned"] > 0
    off_n = off.summary["racing"]["sample_evaluations"]
    exact_n = runs["exact"].summary["racing"]["sample_evaluations"]
    conf_n = runs["confident"].summary["racing"]["sample_evaluations"]
    assert conf_n <= exact_n < 0.8 * off_n
    assert off.summary["racing"]["full_evaluations"] == off_n and off.summary["racing"]["stopped"] == 0


def test_every_trial_records_its_evaluated_samples(runs):
    off = frame(runs["off"])
    assert set(off["state"]) == {"COMPLETE"}
    own = off["reused_from"].isna()
    assert (off.loc[own, "evaluated_samples"] == N).all() and (off.loc[~own, "evaluated_samples"] == 0).all()
    for mode in ("exact", "confident"):
        df = frame(runs[mode])
        assert finished(df).all()
        done = df[(df["state"] == "COMPLETE") & df["reused_from"].isna()]
        assert (done["evaluated_samples"] == N).all() and done["dominated_by"].isna().all()
        assert (df.loc[df["reused_from"].notna(), "evaluated_samples"] == 0).all()
        summary = runs[mode].summary["racing"]
        assert summary["sample_evaluations"] == int(df["evaluated_samples"].sum())
        assert summary["mode"] == mode and summary["chunk"] == 16  # racing.chunk_size(450)


def test_pruned_rows_hold_partial_figures_and_their_dominator(runs):
    res = runs["exact"]
    df = frame(res).set_index("trial")
    pruned = df[(df["state"] == "PRUNED") & df["reused_from"].isna()]
    assert len(pruned) > 0
    base = res.summary["baseline"]["accuracy"]
    for number, row in pruned.iterrows():
        assert 0 < row["evaluated_samples"] < N and row["evaluated_samples"] % 16 == 0  # whole chunks
        assert 0 <= row["accuracy"] <= 1 and row["accuracy_ci_low"] <= row["accuracy"] <= row["accuracy_ci_high"]
        assert not pd.isna(row["snr_db"]) and not pd.isna(row["size_bytes"])
        dom = df.loc[int(row["dominated_by"])]
        assert dom["state"] == "COMPLETE" and pd.isna(dom["reused_from"]) and dom["evaluated_samples"] == N
        assert dom["size_bytes"] <= row["size_bytes"] and dom["accuracy"] >= row["best_reachable"]
        assert row["drop_lower_bound"] == pytest.approx(base - row["best_reachable"])
        # the reach is what every remaining sample being right would give
        assert row["best_reachable"] <= (row["accuracy"] * row["evaluated_samples"] + N - row["evaluated_samples"]) / N + 1e-12
    out = res.files["trials"].read_text()
    assert "evaluated_samples" in out and "dominated_by" in out


def test_a_reused_plan_of_a_stopped_trial_is_stopped_too(runs):
    df = frame(runs["exact"]).set_index("trial")
    copies = df[df["reused_from"].notna()]
    assert len(copies) > 0
    for _, row in copies.iterrows():
        owner = df.loc[int(row["reused_from"])]
        assert row["state"] == owner["state"] and row["evaluated_samples"] == 0
        if owner["state"] == "PRUNED":
            assert row["dominated_by"] == owner["dominated_by"] and row["accuracy"] == owner["accuracy"]


def test_racing_is_part_of_the_experiment(runs):
    names = {m: r.summary["study"]["name"] for m, r in runs.items()}
    assert len(set(names.values())) == 3  # a different racing mode is a different study
    env = json.loads((runs["exact"].run_dir / "summary.json").read_text())
    assert env["racing"]["strata"] and sum(env["racing"]["strata"]) == N


def test_stopped_trials_count_against_the_budget_and_samplers_learn_from_them(tmp_path):
    for kind in ("tpe", "nsga2", "random"):
        res = run(tmp_path, ["model=digits_mlp", f"search={kind}", "search.n_trials=24",
                             "+search.sampler.n_startup_trials=4" if kind == "tpe" else "search.sampler={}",
                             "search.space.nbits=[8,4,2,1]", "search.space.mode=[linear,kmeans_lut,linear_lut]"],
                  run_dir=kind, db=f"{kind}.db")
        df = res.trials
        counted = df[finished(df) | (df["state"] == "FAIL")]
        assert len(counted) == 24, kind  # stopped trials used budget; skipped ones (invalid points) did not
        assert (df["dominated_by"].notna()).sum() > 0, kind


def _nsga2_generations(wrapped: bool) -> list[int]:
    """Generations NSGA-II (population 2) gives three trials after one finished and one stopped trial."""
    inner = optuna.samplers.NSGAIISampler(seed=0, population_size=2)
    study = optuna.create_study(directions=["minimize", "maximize"],
                                sampler=RacedTrialsSampler(inner) if wrapped else inner)
    dist = {"nbits": optuna.distributions.CategoricalDistribution([1, 2, 4, 8])}
    t = study.ask(dist)
    t.set_user_attr("size_bytes", 100)
    study.tell(t, [100.0, 0.9])
    t = study.ask(dist)
    for k, v in {"size_bytes": 120, "dominated_by": 0, "best_reachable": 0.7, "accuracy": 0.2}.items():
        t.set_user_attr(k, v)
    study.tell(t, state=optuna.trial.TrialState.PRUNED)
    for _ in range(3):
        t = study.ask(dist)
        study.tell(t, [float(t.params["nbits"] * 10), 0.5])
    return [t.system_attrs.get("NSGAIISampler:generation") for t in study.trials[2:]]


def test_samplers_see_a_stopped_trial_as_finished_at_its_reach():
    study = optuna.create_study(directions=["minimize", "maximize"])
    dist = {"nbits": optuna.distributions.CategoricalDistribution([1, 2, 4, 8])}
    study.add_trial(optuna.trial.create_trial(params={"nbits": 8}, distributions=dist, values=[100.0, 0.9]))
    study.add_trial(optuna.trial.create_trial(
        params={"nbits": 4}, distributions=dist, state=optuna.trial.TrialState.PRUNED,
        user_attrs={"size_bytes": 120, "dominated_by": 0, "best_reachable": 0.7, "accuracy": 0.2}))
    study.add_trial(optuna.trial.create_trial(params={"nbits": 1}, distributions=dist,
                                              state=optuna.trial.TrialState.PRUNED, user_attrs={"skipped": "invalid"}))
    view = _StudyView(study)
    seen = view.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.number for t in seen] == [0, 1] and seen[1].values == [120.0, 0.7]
    assert [t.number for t in view.get_trials(states=(optuna.trial.TrialState.PRUNED,))] == [2]  # skipped stays
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED  # the study itself is unchanged
    first = study.trials[0]
    assert as_observed(first) is first
    # NSGA-II alone ignores the stopped trial (its first generation is not full yet); wrapped, it counts it
    assert _nsga2_generations(wrapped=False)[0] == 0
    assert _nsga2_generations(wrapped=True)[0] == 1


def test_resume_with_racing_ends_with_the_off_front(runs, tmp_path):
    first = run(tmp_path, [*GRID, "search.n_trials=12"], run_dir="first")
    assert finished(first.trials).sum() == 12
    second = run(tmp_path, GRID, run_dir="second")
    assert len(second.trials) == len(runs["off"].trials)
    assert front_key(second.front) == front_key(runs["off"].front)
    assert second.summary["racing"]["stopped"] > 0


@pytest.mark.postgres
def test_three_racing_workers_on_postgresql_end_with_the_off_front(postgres_url, runs, tmp_path):  # noqa: F811
    args = [*GRID, f"storage.url={postgres_url}", "study.name=racing", "progress=false", "report.enabled=false",
            "storage.heartbeat_interval=1", "storage.grace_period=4"]
    procs = [subprocess.Popen(cli_command(args + [f"hydra.run.dir={tmp_path / f'w{i}'}"]), cwd=tmp_path, env=cli_env(),
                              stdout=(tmp_path / f"w{i}.log").open("w"), stderr=subprocess.STDOUT) for i in range(3)]
    for p in procs:
        p.wait(timeout=900)
    assert [p.returncode for p in procs] == [0, 0, 0], (tmp_path / "w0.log").read_text()
    off = front_key(runs["off"].front)
    for i in range(3):
        df = frame(tmp_path / f"w{i}")
        assert finished(df).all() and len(df) == len(runs["off"].trials)
        assert front_key(frame(tmp_path / f"w{i}", "pareto.csv")) == off
        assert df["plan_hash"][df["reused_from"].isna() & finished(df)].is_unique  # each plan evaluated once
    assert (df["dominated_by"].notna()).sum() > 0


def test_sensitivity_cells_are_never_stopped_and_reuse_changes_nothing(tmp_path):
    common = ["model=digits_cnn", "search=sensitivity", "search.space.nbits=[8,2]", "search.space.mode=[kmeans_lut]"]
    a = run(tmp_path, [*common, "evaluation.activation_cache_mb=0"], run_dir="plain", db="a.db")
    b = run(tmp_path, common, run_dir="reused", db="b.db")
    assert (a.trials["state"] == "COMPLETE").all() and (a.trials["evaluated_samples"] == N).all()
    cols = ["plan_hash", "size_bytes", "accuracy", "accuracy_ci_low", "snr_db", "psnr_db", "agreement"]
    assert a.trials[cols].equals(b.trials[cols])
    assert pd.read_csv(a.files["sensitivity"]).equals(pd.read_csv(b.files["sensitivity"]))
    cache = b.summary["racing"]["activation_cache"]
    assert cache["hits"] > 0 and cache["skipped_layers"] > 0
    assert a.summary["racing"]["activation_cache"]["hits"] == 0


def test_confident_mode_is_validated():
    from harness.config import evaluation_options
    from harness.errors import ConfigError
    from tests.sweep.support import compose

    with pytest.raises(ConfigError, match="evaluation.confidence"):
        evaluation_options(compose(["evaluation.confidence=1.0"]).evaluation)
    with pytest.raises(ConfigError, match="evaluation.chunk"):
        evaluation_options(compose(["evaluation.chunk=0"]).evaluation)
    with pytest.raises(Exception, match="racing"):
        compose(["evaluation.racing=maybe"])
    assert np.isclose(evaluation_options(compose([]).evaluation).confidence, 0.99)
