"""The config tree and the search space: validation before any work, grid enumeration."""
from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from harness.errors import ConfigError
from harness.search import strategy_class
from harness.space import SearchSpace, Setting, decode_skip, encode_skip
from tests.sweep.support import compose, restored_logging


def _space(**over):
    cfg = compose(["selector=all"] + [f"{k}={v}" for k, v in over.items()])
    return SearchSpace.from_config(cfg.search.space, cfg.selector)


def _cli(argv, capsys):
    from harness import cli

    old = sys.argv
    sys.argv = ["qsweep", *argv]
    try:
        with pytest.raises(SystemExit) as exc, restored_logging():
            cli.main()
    finally:
        sys.argv = old
    return exc.value.code, capsys.readouterr()


def test_default_config_is_a_complete_sweep_of_a_zoo_model():
    cfg = compose([])
    assert cfg.model.name == "digits_cnn" and cfg.model.path is None
    assert cfg.data.kind == "zoo" and cfg.executor.kind == "numpy" and cfg.search.kind == "grid"
    assert cfg.storage.url == "sqlite:///outputs/qsweep.db"
    space = SearchSpace.from_config(cfg.search.space, cfg.selector)
    points, dropped = space.grid()
    assert space.grid_size() == 7 * 4 * 2 * 2
    assert len(points) == space.grid_size() - len(dropped) * 4
    assert {(d.nbits, d.mode) for d in dropped} == {(1, "linear_symmetric")}


@pytest.mark.parametrize("override, key", [
    ("search.spac.nbits=[8]", "search.spac"),
    ("search.space.nbit=[8]", "search.space.nbit"),
    ("selector.minimum_conv_weight=[1]", "selector.minimum_conv_weight"),
])
def test_unknown_key_fails_while_composing_and_names_it(override, key, capsys, tmp_path):
    code, out = _cli([override, f"hydra.run.dir={tmp_path}"], capsys)
    assert code != 0
    assert key in out.err and "Traceback" not in out.err


@pytest.mark.parametrize("argv, key", [
    (["search=mixed", "search.options.greedy_pointz=3"], "search.options.greedy_pointz"),
    (["search=mixed", "search.options.refine_steps=x"], "search.options.refine_steps"),
    (["search=mixed", "search.options.algorithm=cmaes"], "search.options.algorithm"),
    (["search=sensitivity", "search.options.unit=neuron"], "search.options.unit"),
])
def test_search_options_are_checked_while_composing(argv, key, capsys, tmp_path):
    code, out = _cli([*argv, f"hydra.run.dir={tmp_path}"], capsys)
    assert code != 0
    assert key in out.err and "Traceback" not in out.err


def test_search_options_have_one_set_of_defaults():
    """The options node of a kind is its dataclass (harness.config), defaults and all; the YAML adds none."""
    from harness.config import MixedOptions, SensitivityOptions, options_record

    for kind, cls in (("mixed", MixedOptions), ("sensitivity", SensitivityOptions)):
        node = compose([f"search={kind}"]).search.options
        assert OmegaConf.get_type(node) is cls
        assert options_record(OmegaConf.to_object(node)) == options_record(cls())
    assert options_record(MixedOptions()) == {
        "algorithm": "tpe", "unit": "layer", "keep_float": True, "seed_uniform": True, "seed_greedy": True,
        "greedy_points": 8, "refine_steps": 6, "focus_drop": None, "probe_codec": None, "sensitivity": None,
        "compare_to": None}
    assert compose(["search=grid"]).search.options == {}


@pytest.mark.parametrize("override, key", [
    ("search.space.nbits=[8,x]", "search.space.nbits[1]"),
    ("seed=abc", "seed"),
    ("storage.heartbeat_interval=fast", "storage.heartbeat_interval"),
    ("selector.skip_layer_types=bias", "selector.skip_layer_types"),
])
def test_wrong_type_fails_while_composing_and_names_the_key(override, key, capsys, tmp_path):
    code, out = _cli([override, f"hydra.run.dir={tmp_path}"], capsys)
    assert code != 0
    assert key in out.err and "Traceback" not in out.err


def test_space_lists_are_overridable_from_the_command_line():
    space = _space(**{"search.space.nbits": "[8,4,2]", "search.space.mode": "[linear,kmeans_lut]",
                      "selector.skip_layer_types": "[[],[bias,batchnorm]]",
                      "selector.minimum_conv_weight_count": "[0,4096]"})
    assert space.nbits == (8, 4, 2) and space.modes == ("linear", "kmeans_lut")
    assert space.skip_layer_types == ((), ("batchnorm", "bias"))
    points, dropped = space.grid()
    assert len(points) == 3 * 2 * 2 * 2 and not dropped
    assert space.dimensions()["skip_layer_types"] == ["none", "batchnorm+bias"]


@pytest.mark.parametrize("over, message", [
    ({"search.space.nbits": "[]"}, "search.space.nbits is empty"),
    ({"search.space.mode": "[]"}, "search.space.mode is empty"),
    ({"search.space.nbits": "[12]"}, "search.space.nbits has [12]"),
    ({"search.space.mode": "[linear,kmeans]"}, "search.space.mode has ['kmeans']"),
    ({"selector.skip_layer_types": "[[bias,conv]]"}, "selector.skip_layer_types[0] has unknown layer type(s) ['conv']"),
    ({"selector.minimum_conv_weight_count": "[-1]"}, "selector.minimum_conv_weight_count must list integers >= 0"),
    ({"selector.minimum_matrix_weight_count": "[]"}, "selector.minimum_matrix_weight_count is empty"),
    ({"search.space.lut_function": "nomodule"}, "not an import path"),
    ({"search.space.lut_function": "tests.no_such_module.fn"}, "cannot import module 'tests.no_such_module'"),
    ({"search.space.lut_function": "tests.sweep.support.no_such_fn"}, "has no attribute 'no_such_fn'"),
])
def test_bad_space_values_name_the_key(over, message):
    with pytest.raises(ConfigError) as exc:
        _space(**over)
    assert message in str(exc.value)


def test_invalid_combinations_are_dropped_with_reasons():
    space = _space(**{"search.space.nbits": "[16,2,1]", "search.space.mode": "[linear_symmetric,custom_lut]"})
    points, dropped = space.grid()
    assert [(p.nbits, p.mode) for p in points] == [(16, "linear_symmetric"), (2, "linear_symmetric")]
    reasons = {(d.nbits, d.mode): d.reason for d in dropped}
    assert "needs at least 2 bits" in reasons[(1, "linear_symmetric")]
    assert all("search.space.lut_function" in reasons[(n, "custom_lut")] for n in (16, 2, 1))


def test_grid_logs_what_it_dropped_and_refuses_an_empty_space(caplog):
    from harness.search import SearchContext, make_strategy

    cfg = compose(["search.space.nbits=[4,1]", "search.space.mode=[linear_symmetric]", "selector=all"])
    space = SearchSpace.from_config(cfg.search.space, cfg.selector)
    ctx = SearchContext(cfg=cfg.search, space=space, model=None, seed=0, build_plan=lambda s: None)
    with caplog.at_level("INFO"):
        strategy = make_strategy(ctx)
    assert strategy.total() == 1
    assert "dropped 1 of 2 point(s)" in caplog.text and "linear_symmetric/1" in caplog.text
    cfg = compose(["search.space.nbits=[1]", "search.space.mode=[linear_symmetric]"])
    ctx.space = SearchSpace.from_config(cfg.search.space, cfg.selector)
    with pytest.raises(ConfigError, match="The search space is empty"):
        make_strategy(ctx)


def test_setting_parameters_round_trip():
    s = Setting(4, "kmeans_lut", ("bias", "batchnorm"), 4, 0, 1024)
    assert Setting.from_params(s.params()) == Setting(4, "kmeans_lut", ("batchnorm", "bias"), 4, 0, 1024)
    assert s.params()["skip_layer_types"] == "batchnorm+bias"
    assert s.label == "kmeans_lut-4bit_skip-bias+batchnorm_convch4_matw1024"
    assert Setting(16, "linear").label == "fp16"
    assert decode_skip(encode_skip(())) == ()


def test_search_kind_and_budget_checks():
    from harness.search import SearchContext, make_strategy

    with pytest.raises(ConfigError, match="search.kind='annealing' is not a search kind; choose one of grid"):
        strategy_class("annealing")
    cfg = compose(["search=tpe", "search.n_trials=null"])
    space = SearchSpace.from_config(cfg.search.space, cfg.selector)
    with pytest.raises(ConfigError, match="needs a budget"):
        make_strategy(SearchContext(cfg=cfg.search, space=space, model=None, seed=0, build_plan=lambda s: None))
    cfg = compose(["search=tpe", "+search.sampler.n_startup=3"])
    with pytest.raises(ConfigError, match="search.sampler=.*n_startup.*TPESampler"):
        make_strategy(SearchContext(cfg=cfg.search, space=space, model=None, seed=0, build_plan=lambda s: None))


def test_config_yaml_round_trips_through_the_schema():
    from harness.config import QsweepConfig

    cfg = compose(["model=digits_mlp", "search=nsga2"])
    merged = OmegaConf.merge(OmegaConf.structured(QsweepConfig), OmegaConf.create(OmegaConf.to_yaml(cfg)))
    assert merged.search.kind == "nsga2" and merged.model.name == "digits_mlp"


def test_lut_function_as_a_target_node_with_arguments():
    import quantizer

    a = _space(**{"search.space.mode": "[custom_lut]",
                  "search.space.lut_function": "{_target_:tests.sweep.support.levels_lut,spread:0.5}"})
    b = _space(**{"search.space.mode": "[custom_lut]",
                  "search.space.lut_function": "{_target_:tests.sweep.support.levels_lut,spread:0.9}"})
    plain = _space(**{"search.space.mode": "[custom_lut]",
                      "search.space.lut_function": "tests.sweep.support.levels_lut"})
    assert a.lut_function_name == '{"_target_": "tests.sweep.support.levels_lut", "spread": 0.5}'
    tokens = {quantizer.Codec("custom_lut", 2, s.lut_function).token() for s in (a, b, plain)}
    assert len(tokens) == 3  # different bindings never share a plan hash
    import numpy as np

    lut, idx = a.lut_function(2, np.array([0.0, 1.0, 2.0, 3.0], np.float32))
    assert lut.tolist() == [0.0, 0.5, 1.0, 1.5] and len(idx) == 4


def test_settings_of_another_search_kind_are_refused():
    from harness.search import SearchContext, make_strategy

    for overrides, key in ((["+search.sampler.n_startup_trials=3"], "search.sampler"),
                           (["+search.options.unit=layer"], "search.options")):
        cfg = compose(["selector=all", *overrides])
        space = SearchSpace.from_config(cfg.search.space, cfg.selector)
        with pytest.raises(ConfigError, match=f"{key}=.* is not used by search=grid"):
            make_strategy(SearchContext(cfg=cfg.search, space=space, model=None, seed=0, build_plan=lambda s: None))
