"""search=sensitivity on a real tiny model: one evaluation per layer x codec, each checked."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import quantizer
from harness import analysis, zoo
from harness.errors import ConfigError
from harness.evaluate import Evaluator
from harness.search.choices import FLOAT, space_choices
from harness.search.units import UnitPlans
from harness.space import SearchSpace, build_plan
from tests.sweep.conftest import SENS
from tests.sweep.support import compose, run


def test_table_has_every_layer_and_codec(sens_dir):
    sens = pd.read_csv(sens_dir / "sensitivity.csv")
    assert list(dict.fromkeys(sens["unit"])) == ["dense1", "dense2", "dense3"]  # model order
    assert list(dict.fromkeys(sens["codec"])) == ["linear-8bit", "kmeans_lut-8bit", "linear-2bit", "kmeans_lut-2bit"]
    assert len(sens) == 12 and not sens.duplicated(["unit", "codec"]).any()
    for col in ("layer_type", "mode", "nbits", "weights", "size_bytes", "saved_bytes", "accuracy", "accuracy_drop",
                "agreement", "snr_db", "psnr_db", "trial"):
        assert col in sens.columns, col
    assert (sens["layer_type"] == "innerProduct").all()
    assert sens.set_index("unit")["weights"].to_dict() == {"dense1": 64 * 128 + 128, "dense2": 128 * 64 + 64,
                                                          "dense3": 64 * 10 + 10}
    summary = json.loads((sens_dir / "summary.json").read_text())
    assert summary["sensitivity"]["evaluations"] == 12
    assert [r["unit"] for r in summary["sensitivity"]["ranking"]] == \
        analysis.sensitivity_ranking(sens)["unit"].tolist()
    assert (sens_dir / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def test_each_row_is_that_layer_alone(sens_dir):
    """Recompute two rows independently: quantize one layer with the quantizer, evaluate."""
    sens = pd.read_csv(sens_dir / "sensitivity.csv").set_index(["unit", "codec"])
    spec, data = zoo.load("digits_mlp")
    ev = Evaluator(spec, data, executor="numpy")
    for unit, mode, nbits in (("dense1", "kmeans_lut", 2), ("dense3", "linear", 8)):
        plan = quantizer.QuantPlan({(unit, "weights"): (mode, nbits), (unit, "bias"): (mode, nbits)})
        q = quantizer.apply_plan(spec, plan)
        figs = ev.evaluate(q)
        row = sens.loc[(unit, f"{mode}-{nbits}bit")]
        assert row["size_bytes"] == figs["size_bytes"] == quantizer.model_size(q)
        assert row["saved_bytes"] == quantizer.model_size(spec) - figs["size_bytes"]
        assert row["accuracy"] == pytest.approx(figs["accuracy"])
        assert row["accuracy_drop"] == pytest.approx(ev.baseline["accuracy"] - figs["accuracy"])
        assert row["snr_db"] == pytest.approx(figs["snr_db"])
        others = [t for t in quantizer.weight_tensors(q) if t.layer != unit]
        assert all(t.encoding == "float32" for t in others)


def test_two_bits_hurt_more_than_eight(sens_dir):
    sens = pd.read_csv(sens_dir / "sensitivity.csv")
    m = analysis.sensitivity_matrix(sens, "snr_db")
    assert (m["linear-8bit"] > m["linear-2bit"]).all() and (m["kmeans_lut-8bit"] > m["kmeans_lut-2bit"]).all()


def test_report_shows_the_heatmap_and_ranking(sens_dir):
    page = (sens_dir / "report.html").read_text()
    assert "Per-layer sensitivity" in page and "Sensitivity ranking" in page
    assert page.count("data:image/png;base64,") == 1  # a sensitivity run has no Pareto plot


def test_trials_are_not_reported_as_uniform_settings(sens_dir):
    trials = pd.read_csv(sens_dir / "trials.csv")
    assert trials["nbits"].isna().all() and trials["mode"].isna().all()
    assert trials["setting"].str.endswith("alone").all()


def test_progress_says_the_cost():
    from harness.search import SearchContext, make_strategy

    spec = zoo.load_spec("digits_mlp")
    cfg = compose(list(SENS))
    space = SearchSpace.from_config(cfg.search.space, cfg.selector)
    strat = make_strategy(SearchContext(cfg=cfg.search, space=space, model=spec, seed=0,
                                        build_plan=lambda s: build_plan(spec, s)))
    assert strat.progress_desc() == "sensitivity: 3 layers x 4 codecs = 12 evaluations"
    assert strat.total() == 12


def test_tensor_units(tmp_path):
    res = run(tmp_path, [*SENS, "search.space.nbits=[8]", "search.space.mode=[linear]", "search.options.unit=tensor",
                         "output.save_models=false"])
    sens = pd.read_csv(res.run_dir / "sensitivity.csv")
    assert sens["unit"].tolist() == ["dense1.weights", "dense1.bias", "dense2.weights", "dense2.bias",
                                     "dense3.weights", "dense3.bias"]
    # the strategy returns its table; the writer writes sensitivity.csv, only the report draws sensitivity.png
    assert res.files["sensitivity"] == res.run_dir / "sensitivity.csv"
    assert not (res.run_dir / "sensitivity.png").exists()


def test_unit_plans_recompose_the_uniform_plan():
    spec = zoo.load_spec("digits_cnn")
    space = SearchSpace(nbits=(16, 4, 1), modes=("linear", "kmeans_lut"))
    choices = space_choices(space)
    assert [c.label for c in choices] == ["fp16", "linear-4bit", "kmeans_lut-4bit", "linear-1bit", "kmeans_lut-1bit"]
    units = UnitPlans(spec, choices, lambda s: build_plan(spec, s))
    assert units.units == ["input.3", "input.9", "input.17", "linear_0", "linear_1"]
    for c in choices:
        assert units.plan({u: c.label for u in units.units}).digest() == units.uniform[c.label].digest()
    assert len(units.plan({u: FLOAT.label for u in units.units})) == 0
    single = units.single("input.9", "linear-4bit")
    assert set(single) == {("input.9", "weights"), ("input.9", "bias")}


def test_bad_options_fail_before_any_work(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigError, match=r"search.options has unknown key\(s\) \['units'\] for search=sensitivity"):
        run(tmp_path, [*SENS, "+search.options.units=layer"])
    with pytest.raises(ConfigCompositionException, match="search.options.unit=neuron"):
        compose([*SENS, "search.options.unit=neuron"])
    with pytest.raises(ConfigError, match="search.sampler=.* is not used by search=sensitivity"):
        run(tmp_path, [*SENS, "+search.sampler.seed=3"])
    with pytest.raises(ConfigError, match="search space is empty"):
        run(tmp_path, [*SENS, "search.space.nbits=[1]", "search.space.mode=[linear_symmetric]"])
    with pytest.raises(ConfigError, match=r"search.n_trials must be at least 1 \(or null for every unit x codec\)"):
        run(tmp_path, [*SENS, "search.n_trials=0"])
    assert not np.any([p.name == "sensitivity.csv" for p in tmp_path.rglob("*")])
    assert not (tmp_path / "qsweep.db").exists()


def _conv_bn_fc():
    """conv (no bias) -> batchnorm -> flatten -> innerProduct, built with coremltools' builder."""
    from quantizer.coremltools_quiet import coremltools

    coremltools()
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(0)
    b = NeuralNetworkBuilder([("x", datatypes.Array(3, 8, 8))], [("y", None)])
    b.add_convolution(name="conv", kernel_channels=3, output_channels=8, height=3, width=3, stride_height=1,
                      stride_width=1, border_mode="same", groups=1,
                      W=rng.normal(size=(3, 3, 3, 8)).astype(np.float32), b=None, has_bias=False, is_deconv=False,
                      input_name="x", output_name="c")
    b.add_batchnorm("bn", 8, rng.random(8) + 0.5, rng.normal(size=8), rng.normal(size=8), rng.random(8) + 0.5,
                    input_name="c", output_name="b")
    b.add_flatten("flat", 0, "b", "f")
    b.add_inner_product("fc", rng.normal(size=(4, 512)).astype(np.float32), rng.normal(size=4).astype(np.float32),
                        512, 4, True, input_name="f", output_name="y")
    return b.spec


def test_layers_folded_by_fusion_are_not_units():
    """Below 16 bits conv+batchnorm are fused first: bn is no unit, and follows fp16 only when all units do."""
    from harness.search.noise import unit_profiles

    spec = _conv_bn_fc()
    units = UnitPlans(spec, space_choices(SearchSpace(nbits=(16, 4), modes=("linear",))),
                      lambda s: build_plan(spec, s))
    assert units.units == ["conv", "fc"] and units.hidden == ["bn"]
    for label, plan in units.uniform.items():
        assert units.plan({u: label for u in units.units}) == plan
    mixed = units.plan({"conv": "fp16", "fc": "linear-4bit"})
    assert ("bn", "gamma") not in mixed
    q = quantizer.apply_plan(spec, mixed)
    enc = {(t.layer, t.field): t.encoding for t in quantizer.weight_tensors(q)}
    assert enc == {("conv", "weights"): "float16", ("conv", "bias"): "float32",
                   ("fc", "weights"): "linear", ("fc", "bias"): "linear"}
    delta, err = unit_profiles(units)
    assert set(delta) == {"conv", "fc"} and err["fc"]["linear-4bit"] > 0 and delta["conv"]["fp16"] < 0
