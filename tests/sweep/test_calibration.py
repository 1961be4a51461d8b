"""Calibration in the sweep: algorithm / bias_correction dimensions in every search kind, the files they
write (columns, summary, environment), and the refusals that name ``calibration``."""
import json

import numpy as np
import pandas as pd
import pytest

from harness.errors import ConfigError
from tests.sweep.support import run

CALIBRATED = ["model=digits_mlp", "selector=all", "calibration=zoo", "search.space.nbits=[4,2]",
              "search.space.mode=[linear,kmeans_lut]", "search.space.algorithm=[rtn,gptq,awkm]",
              "search.space.bias_correction=[false,true]"]


@pytest.fixture(scope="module")
def calibrated_grid(tmp_path_factory):
    return run(tmp_path_factory.mktemp("calibrated-grid"), CALIBRATED)


def test_calibrated_grid_columns_summary_and_environment(calibrated_grid):
    res = calibrated_grid
    df = pd.read_csv(res.run_dir / "trials.csv")
    # 2 nbits x (linear: rtn, gptq; kmeans_lut: rtn, gptq, awkm) x 2 bias corrections (awkm/linear dropped)
    assert len(df) == 20 and set(df["state"]) <= {"COMPLETE", "PRUNED"}
    reference = df[(df["algorithm"] == "rtn") & ~df["bias_correction"]]
    assert set(reference["state"]) == {"COMPLETE"}  # the round-to-nearest front is never raced away
    assert set(zip(df["algorithm"], df["bias_correction"])) == {(a, b) for a in ("rtn", "gptq", "awkm")
                                                                for b in (False, True)}
    assert not ((df["algorithm"] == "awkm") & (df["mode"] == "linear")).any()
    cols = list(df.columns)
    assert cols.index("algorithm") < cols.index("size_bytes") and cols[-1] == "layer_algorithms"
    rec = df[df["algorithm"] == "gptq"]["layer_algorithms"].map(json.loads)
    assert all(set(r.values()) <= {"gptq", "gptq+bc"} and len(r) == 3 for r in rec)
    assert df[(df["algorithm"] == "rtn") & ~df["bias_correction"]]["layer_algorithms"].isna().all()
    assert df["plan_hash"].nunique() == len(df)  # every algorithm/bias-correction point is its own plan
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["calibration_s"] > 0 and summary["calibration"]["kind"] == "zoo"
    assert summary["calibration"]["samples"] == 256 and summary["calibration"]["source"] == "float"
    hv = summary["hypervolume"]
    assert hv["all_algorithms"]["trials"] == (df["state"] == "COMPLETE").sum()  # racing stopped the others
    assert hv["round_to_nearest"]["trials"] == 4
    assert hv["all_algorithms"]["hypervolume"] >= hv["round_to_nearest"]["hypervolume"]
    front = hv["round_to_nearest_front"]
    assert front["points"] >= 1 and 0 <= front["dominated_by_calibrated"] <= front["points"]
    calibrated = set(df[(df["algorithm"] != "rtn") | df["bias_correction"]]["trial"])
    assert set(front["dominating_trial"].values()) <= calibrated
    env = json.loads((res.run_dir / "environment.json").read_text())
    assert env["calibration"]["statistics"]["layers"].keys() == {"dense1", "dense2", "dense3"}
    assert env["calibration"]["samples"] == 256 and env["calibration"]["available"] > 256
    # bias correction keeps the corrected biases in float32: a little larger than the plain plan
    plain = df[(df["algorithm"] == "gptq") & ~df["bias_correction"] & (df["nbits"] == 2)]
    corrected = df[(df["algorithm"] == "gptq") & df["bias_correction"] & (df["nbits"] == 2)]
    assert (corrected["size_bytes"].values > plain["size_bytes"].values).all()


def test_front_models_of_a_calibrated_grid_are_saved_and_load(calibrated_grid):
    import quantizer

    front = pd.read_csv(calibrated_grid.run_dir / "pareto.csv")
    assert front["model_file"].notna().all()
    for f in front["model_file"]:
        quantizer.load(calibrated_grid.run_dir / f)


def test_a_calibrated_run_is_rebuilt_from_the_study_with_its_statistics_collected_again(calibrated_grid):
    from harness.rebuild import rebuild

    res = calibrated_grid
    out = res.run_dir.parent / "rebuilt"
    url = f"sqlite:///{res.run_dir.parent / 'qsweep.db'}"
    rebuilt = rebuild(res.study_name, url, out, report=False)
    pd.testing.assert_frame_equal(pd.read_csv(out / "trials.csv"), pd.read_csv(res.run_dir / "trials.csv"))
    front = pd.read_csv(res.run_dir / "pareto.csv")
    for f in front["model_file"]:  # byte for byte: the same statistics digest, so the same plans
        assert (out / f).read_bytes() == (res.run_dir / f).read_bytes(), f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"]["digest"] == res.summary["calibration"]["digest"]
    assert summary["hypervolume"] == res.summary["hypervolume"] and rebuilt.summary["pareto_front"]


def test_round_to_nearest_spaces_keep_todays_parameters(small_grid_dir):
    df = pd.read_csv(small_grid_dir / "trials.csv")
    assert set(df["algorithm"]) == {"rtn"} and not df["bias_correction"].any()
    assert df["layer_algorithms"].isna().all()


def test_round_to_nearest_with_calibration_data_is_todays_run(small_grid_dir, tmp_path):
    """algorithm=[rtn], bias_correction=[false] with calibration data configured: no statistics are collected,
    the trials have today's parameters, plans and figures."""
    import optuna

    from tests.sweep.support import SMALL_GRID

    res = run(tmp_path, [*SMALL_GRID, "calibration=zoo"])
    a, b = pd.read_csv(small_grid_dir / "trials.csv"), pd.read_csv(res.run_dir / "trials.csv")
    keys = ["plan_hash", "size_bytes", "accuracy", "model_sha256"]
    pd.testing.assert_frame_equal(a[keys], b[keys])
    assert res.summary["calibration_s"] == 0 and "hypervolume" not in res.summary
    study = optuna.load_study(study_name=res.study_name, storage=f"sqlite:///{tmp_path / 'qsweep.db'}")
    assert not any({"algorithm", "bias_correction"} & set(t.params) for t in study.trials)


def test_split_holds_samples_out_of_the_test_set(tmp_path):
    res = run(tmp_path, ["model=digits_mlp", "selector=all", "calibration=split", "calibration.fraction=0.2",
                         "search.space.nbits=[4]", "search.space.mode=[linear]", "search.space.algorithm=[gptq]",
                         "search=tpe", "search.n_trials=2"])
    env = json.loads((res.run_dir / "environment.json").read_text())
    split = env["calibration"]["split"]
    assert split["source_n"] == 450 and split["calibration_n"] == 90 and split["test_n"] == 360
    assert env["data"]["n"] == 360 and res.summary["data"]["n"] == 360 and res.summary["baseline"]["size_bytes"] > 0
    assert "test split" in env["data"]["name"]
    df = pd.read_csv(res.run_dir / "trials.csv")
    assert set(df["algorithm"]) == {"gptq"}


@pytest.mark.parametrize("kind", ["tpe", "nsga2"])
def test_samplers_search_the_algorithm(tmp_path, kind):
    res = run(tmp_path, [*CALIBRATED[:-2], "search.space.algorithm=[rtn,gptq]", "search.space.bias_correction=[false,true]",
                         f"search={kind}", "search.n_trials=6"])
    import optuna

    study = optuna.load_study(study_name=res.study_name, storage=f"sqlite:///{tmp_path / 'qsweep.db'}")
    assert all({"algorithm", "bias_correction"} <= set(t.params) for t in study.trials)
    assert "hypervolume" in res.summary


def test_sensitivity_and_mixed_units_carry_their_algorithm(tmp_path):
    sens = run(tmp_path, ["model=digits_mlp", "calibration=zoo", "search=sensitivity", "search.space.nbits=[2]",
                          "search.space.mode=[linear]", "search.space.algorithm=[rtn,gptq]"], run_dir="sens")
    table = pd.read_csv(sens.run_dir / "sensitivity.csv")
    assert set(table["codec"]) == {"linear-2bit", "linear-2bit-gptq"} and len(table) == 6
    mixed = run(tmp_path, ["model=digits_mlp", "calibration=zoo", "search=mixed", "search.space.nbits=[4,2]",
                           "search.space.mode=[linear]", "search.space.algorithm=[rtn,gptq]", "search.n_trials=10",
                           "search.options.greedy_points=2", "search.options.refine_steps=0"], run_dir="mixed",
                db="mixed.db")
    df = pd.read_csv(mixed.run_dir / "trials.csv")
    assert mixed.summary["mixed"]["probe_codec"] == "linear-4bit"
    assert {"linear-4bit-gptq", "linear-2bit-gptq"} <= set(mixed.summary["mixed"]["codecs"])
    uniform = df[df["mixed_seed"] == "uniform"]
    assert set(uniform["algorithm"]) == {"rtn", "gptq"}
    assigned = df["assignment"].map(json.loads)
    gptq_rows = df[assigned.map(lambda a: any(v.endswith("-gptq") for v in a.values()))]
    assert gptq_rows["layer_algorithms"].map(lambda v: "gptq" in str(v)).all()


@pytest.mark.parametrize("overrides,match", [
    (["search.space.algorithm=[rtn,gptq]"], r"calibration=none: set calibration=split"),
    (["search.space.bias_correction=[false,true]"], r"need calibration data"),
    (["calibration=split", "search.space.algorithm=[adaround]"], r"search.space.algorithm has \['adaround'\]"),
    (["calibration=split", "calibration.fraction=1.5", "search.space.algorithm=[gptq]"], r"calibration.fraction"),
    (["calibration=zoo", "model.path=MODEL", "data=npz", "data.path=DATA"], r"calibration=zoo reads a zoo model"),
    (["calibration=zoo", "calibration.gptq.lut=sorted", "search.space.algorithm=[gptq]"], r"calibration.gptq: .*lut"),
    (["calibration=zoo", "calibration.gptq.damp=0", "search.space.algorithm=[gptq]"], r"calibration.gptq: .*damp"),
])
def test_config_errors_name_calibration(tmp_path, overrides, match):
    overrides = [o.replace("MODEL", str(_mlp_file(tmp_path))).replace("DATA", str(_test_npz(tmp_path)))
                 for o in overrides]
    with pytest.raises(ConfigError, match=match):
        run(tmp_path, ["model=digits_mlp", "selector=all", "search.space.nbits=[4]", "search.space.mode=[linear]",
                       *overrides])


def _mlp_file(tmp_path):
    from harness import zoo

    return zoo.path("digits_mlp")


def _test_npz(tmp_path, extra=None):
    from harness import zoo

    spec, test = zoo.load("digits_mlp")
    name = next(iter(test.feeds))
    path = tmp_path / "test.npz"
    np.savez(path, **{name: test.feeds[name], "y": test.labels})
    return path


def test_calibrating_on_the_test_set_is_refused(tmp_path):
    from harness import zoo

    data = _test_npz(tmp_path)
    common = ["model=digits_mlp", "data=npz", f"data.path={data}", "search.space.nbits=[4]",
              "search.space.mode=[linear]", "search.space.algorithm=[gptq]"]
    with pytest.raises(ConfigError, match=r"calibration.path=.* is the test data file"):
        run(tmp_path, [*common, "calibration=npz", f"calibration.path={data}"])
    spec, test = zoo.load("digits_mlp")
    name = next(iter(test.feeds))
    train = zoo.load_data("digits_mlp", spec, part="train").feeds[name][:50]
    mixed = tmp_path / "cal.npz"
    np.savez(mixed, **{name: np.concatenate([train, test.feeds[name][7:8]])})
    with pytest.raises(ConfigError, match=r"calibration: 1 of the 51 calibration samples also appear in the test set"):
        run(tmp_path, [*common, "calibration=npz", f"calibration.path={mixed}"])
    clean = tmp_path / "clean.npz"
    np.savez(clean, **{name: train})
    res = run(tmp_path, [*common, "calibration=npz", f"calibration.path={clean}", "selector=all"])
    assert res.summary["calibration"]["samples"] == 50 and res.summary["calibration"]["kind"] == "npz"
