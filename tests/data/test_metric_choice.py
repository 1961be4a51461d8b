"""Which metric a run measures on which output: output kinds, the auto metric, refusals, labels, metric.fn.

Every case runs the real float model (and real quantized copies) of a small
NeuralNetworkBuilder model (tests/metric_models.py) through the Evaluator.
"""
from __future__ import annotations

import numpy as np
import pytest

import quantizer
from harness import rundir
from harness.data import Dataset, match_labels
from harness.errors import ConfigError, DataError
from harness.evaluate import Evaluator
from harness.metric_choice import MetricRequest
from tests import metric_models as M


def _ev(spec, feeds, labels=None, **metric):
    y = None if labels is None else match_labels(spec, labels, len(labels))
    return Evaluator(spec, Dataset.create("t", feeds, y), metric=dict(metric), seed=0)


def _q(spec, nbits):
    return quantizer.quantize_weights(spec, nbits, "linear")


# ------------------------------------------------------------------------------------ output kinds
def test_binary_output_with_01_labels_is_accuracy_of_value_above_threshold():
    spec, feeds, y = M.binary_model()
    ev = _ev(spec, feeds, y)
    assert ev.metric.name == "accuracy" and ev.metric.head.kind == "binary"
    assert ev.baseline["accuracy"] == pytest.approx(0.97)
    broken = ev.evaluate(_q(spec, 2))
    good = ev.evaluate(_q(spec, 8))
    assert broken["accuracy"] < 0.65 and broken["accuracy_drop"] > 0.3
    assert broken["accuracy_drop_p"] < 1e-10  # distinguishable: exact McNemar
    assert broken["accuracy_ci_high"] < ev.baseline["accuracy_ci_low"]
    assert broken["agreement"] < 0.7  # thresholded agreement, not argmax over one value (always 1)
    assert good["accuracy_drop_p"] > 0.05 and good["accuracy_ci_low"] < 0.97 < good["accuracy_ci_high"]
    assert ev.evaluation_entry()["threshold"] == 0.5 and ev.evaluation_entry()["interval"] == "wilson"


def test_binary_output_takes_boolean_labels_and_a_threshold():
    spec, feeds, y = M.binary_model()
    ev = _ev(spec, feeds, y.astype(bool))
    assert ev.metric.name == "accuracy" and ev.baseline["accuracy"] == pytest.approx(0.97)
    strict = _ev(spec, feeds, y, threshold=0.99)
    assert strict.baseline["accuracy"] < ev.baseline["accuracy"]


def test_binary_output_without_labels_is_thresholded_agreement():
    spec, feeds, _ = M.binary_model()
    ev = _ev(spec, feeds)
    assert ev.metric.name == "agreement" and ev.baseline["agreement"] == 1.0
    broken = ev.evaluate(_q(spec, 2))
    assert broken["agreement"] < 0.7 and broken["agreement_drop"] > 0.3
    assert broken["agreement_ci_high"] < 1.0  # the float model's 1.0 is outside: distinguishable
    assert broken["agreement_drop_p"] is None  # measured against the float model: no drop test
    assert broken["snr_db"] < ev.evaluate(_q(spec, 8))["snr_db"] - 20


def test_embedding_output_without_labels_is_cosine():
    spec, feeds, _ = M.embedding_model()
    ev = _ev(spec, feeds)
    assert ev.metric.name == "cosine" and ev.metric.head.kind == "vector"
    assert ev.baseline["cosine"] == pytest.approx(1.0) and ev.baseline["agreement"] is None
    good, broken = ev.evaluate(_q(spec, 8)), ev.evaluate(_q(spec, 2))
    assert good["cosine"] > 0.999 and broken["cosine"] < 0.9
    assert broken["cosine_ci_low"] <= broken["cosine"] <= broken["cosine_ci_high"] < 1.0
    assert broken["agreement"] is None and ev.evaluation_entry()["interval"] == "bootstrap"
    assert ev.evaluation_entry()["bootstrap_resamples"] == 1000


def test_integer_labels_on_an_embedding_are_not_its_classes_but_on_logits_they_are(caplog):
    spec, feeds, _ = M.embedding_model()
    out = _ev(spec, feeds).float_outputs[_ev(spec, feeds).metric.output]
    argmax = np.argmax(out.reshape(len(out), -1), axis=1)
    width = out.reshape(len(out), -1).shape[1]
    wrong = (argmax + 1) % width  # speaker ids, say: the float model's argmax never matches them
    with caplog.at_level("INFO", logger="qsweep"):
        ev = _ev(spec, feeds, wrong)
    assert ev.metric.name == "cosine"
    assert "no better than always answering the most frequent label" in caplog.text
    with pytest.raises(ConfigError, match=r"metric.name=accuracy: the argmax of output .* use metric.name=cosine"):
        _ev(spec, feeds, wrong, name="accuracy")
    logits = _ev(spec, feeds, argmax)  # the columns are the classes: argmax accuracy
    assert logits.metric.name == "accuracy" and logits.baseline["accuracy"] == 1.0


def test_a_model_whose_outputs_are_nan_fails_with_the_output_named():
    from harness.errors import ExecutorError

    spec, feeds, _ = M.embedding_model()
    ev = _ev(spec, feeds)
    broken = type(spec)()
    broken.CopyFrom(spec)
    for layer in broken.neuralNetwork.layers:
        if layer.WhichOneof("layer") == "innerProduct":
            layer.innerProduct.weights.floatValue[0] = float("nan")
            break
    with pytest.raises(ExecutorError, match=r"cosine of this model is not a number: output .* is NaN or infinite "
                                            r"on \d+ of \d+ samples"):
        ev.evaluate(broken)


def test_class_scores_from_a_softmax_layer_and_from_rows_summing_to_1():
    spec, feeds, _ = M.three_output_model()
    ev = _ev(spec, feeds, output="face_prob")
    assert ev.metric.head.kind == "class_scores" and "softmax layer 'face_softmax'" in ev.metric.head.why
    assert ev.metric.name == "agreement" and ev.evaluation_entry()["output_default"] is False
    from harness import zoo

    digits, test = zoo.load("digits_cnn")  # a plain neuralNetwork whose probabilities come from a softmax
    ev = Evaluator(digits, Dataset.create("d", {k: v[:64] for k, v in test.feeds.items()}, test.labels[:64]))
    assert ev.metric.name == "accuracy" and ev.metric.head.kind == "class_scores"


def test_a_softmax_over_the_channels_of_a_map_is_a_vector_not_class_scores():
    spec, feeds, _ = M.map_softmax_model()
    ev = _ev(spec, feeds)
    assert ev.metric.head.kind == "vector" and ev.metric.head.width == 32 and ev.metric.name == "cosine"


def test_multi_output_default_output_and_every_outputs_snr():
    spec, feeds, _ = M.three_output_model()
    ev = _ev(spec, feeds)  # the one class-score output is the model's probabilities
    assert ev.metric.output == "face_prob" and ev.metric.name == "agreement"
    assert ev.evaluation_entry()["output_choice"] == "the model's only class-score output"
    first = _ev(spec, feeds, output="boxes")
    assert first.metric.name == "cosine" and first.evaluation_entry()["output_choice"] == "metric.output"
    spec2, feeds2, _ = M.constant_output_model()
    assert _ev(spec2, feeds2, name="snr_db").metric.head.chosen == "the model's first output"
    assert ev.snr_outputs == ["boxes", "landmarks", "face_prob"]
    fig = ev.evaluate(_q(spec, 4))
    per = {o: fig[rundir.snr_column(o)] for o in ev.snr_outputs}
    assert fig["snr_db"] == min(per.values()) and len(set(per.values())) == 3
    assert list(fig) == rundir.figure_columns("agreement", ev.snr_outputs)


def test_metric_output_naming_no_output_is_refused():
    spec, feeds, _ = M.three_output_model()
    with pytest.raises(ConfigError, match=r"metric.output='face' names no output of the model; its outputs are "
                                          r"'boxes', 'landmarks', 'face_prob'"):
        _ev(spec, feeds, output="face")


# ------------------------------------------------------------------------------------ degenerate metrics
def test_constant_output_is_refused_naming_the_output_to_use():
    spec, feeds, _ = M.constant_output_model()
    with pytest.raises(ConfigError, match=r"metric.output='bias_only' is constant over the 200 test samples.*"
                                          r"cosine on it cannot tell.*metric.output=score"):
        _ev(spec, feeds)  # the default (first) output
    assert _ev(spec, feeds, output="score").metric.name == "cosine"
    assert _ev(spec, feeds, name="snr_db").metric.name == "snr_db"  # every output's noise still measures


def test_argmax_over_one_value_is_refused():
    spec, feeds, _ = M.one_class_softmax_model()  # softmax over one value: 1.0 for every sample
    with pytest.raises(ConfigError, match=r"metric.output='p' is constant.*agreement on it cannot tell"):
        _ev(spec, feeds)
    spec, feeds, y = M.binary_model()
    with pytest.raises(ConfigError, match=r"metric.name=top1_accuracy needs class scores, but output 'prob' is "
                                          r"binary.*use metric.name=accuracy"):
        _ev(spec, feeds, y, name="top1_accuracy")


def test_cosine_over_one_value_and_top_k_over_k_classes_are_refused():
    spec, feeds, y = M.binary_model()
    with pytest.raises(ConfigError, match=r"metric.name=cosine on output 'prob'.*only their sign.*"
                                          r"metric.name=agreement"):
        _ev(spec, feeds, name="cosine")
    from harness import zoo

    digits, test = zoo.load("digits_mlp")
    data = Dataset.create("d", {k: v[:50] for k, v in test.feeds.items()}, test.labels[:50])
    with pytest.raises(ConfigError, match=r"top10_accuracy on output 'probs', which has 10 class scores.*always"):
        Evaluator(digits, data, metric="top10_accuracy")
    assert Evaluator(digits, data, metric="top3_accuracy").metric.name == "top3_accuracy"


def test_metrics_that_do_not_fit_the_output_are_refused():
    spec, feeds, _ = M.three_output_model()
    with pytest.raises(ConfigError, match=r"metric.name=snr_db is the worst SNR over every numeric output.*"
                                          r"metric.output='landmarks' does not apply"):
        _ev(spec, feeds, name="snr_db", output="landmarks")
    labels = np.random.default_rng(0).normal(size=300)
    with pytest.raises(ConfigError, match=r"metric.name=r2 needs one prediction per sample, but output 'boxes' "
                                          r"has 4"):
        _ev(spec, feeds, labels, name="r2", output="boxes")
    with pytest.raises(ConfigError, match="metric.name=accuracy needs labels"):
        _ev(spec, feeds, name="accuracy")


# ------------------------------------------------------------------------------------ labels
def test_labels_that_do_not_fit_a_binary_output_are_refused():
    spec, feeds, y = M.binary_model()
    digits = np.arange(len(y)) % 10
    with pytest.raises(DataError, match=r"labels range over 0..9, but metric.output='prob' has one value per "
                                        r"sample \(a binary output: labels must be 0/1 or booleans"):
        _ev(spec, feeds, digits)


def test_labels_that_do_not_fit_class_scores_are_refused():
    spec, feeds, _ = M.three_output_model()
    with pytest.raises(DataError, match=r"labels range over 0..4 but metric.output='face_prob' has 2 class "
                                        r"scores"):
        _ev(spec, feeds, np.arange(300) % 5, output="face_prob")
    ev = _ev(spec, feeds, np.arange(300) % 2, output="face_prob")
    assert ev.metric.name == "accuracy" and ev.metric.drop_test == "mcnemar"


def test_real_valued_labels_on_a_one_value_output_are_regression():
    spec, feeds, y = M.binary_model()
    target = y + np.random.default_rng(0).normal(0, 0.1, len(y))
    ev = _ev(spec, feeds, target)
    assert ev.metric.name == "r2" and ev.metric.drop_test == "paired_t" and ev.baseline["agreement"] is None
    fig = ev.evaluate(_q(spec, 2))
    assert fig["r2_drop"] > 0 and fig["r2_drop_p"] < 0.05


# ------------------------------------------------------------------------------------ metric.fn
def good_fn(outputs, labels, float_outputs):
    """Mean squared gap of the embedding to the float model's (smaller is better)."""
    return float(np.mean((outputs["embedding"] - float_outputs["embedding"]) ** 2))


def text_fn(outputs, labels, float_outputs):
    return "0.9"


def nan_fn(outputs, labels, float_outputs):
    return float("nan")


def raising_fn(outputs, labels, float_outputs):
    return outputs["no_such_output"]


def test_user_metric_by_import_path():
    spec, feeds, _ = M.embedding_model(n=120)
    ev = _ev(spec, feeds, fn="tests.data.test_metric_choice.good_fn", maximize=False)
    assert ev.metric.name == "good_fn" and ev.metric.direction == "minimize" and ev.baseline["good_fn"] == 0.0
    broken = ev.evaluate(_q(spec, 2))
    assert broken["good_fn"] > 0.01 and broken["good_fn_drop"] == broken["good_fn"]
    assert broken["good_fn_ci_low"] < broken["good_fn"] < broken["good_fn_ci_high"]
    assert broken["good_fn_drop_p"] == 0.0  # paired bootstrap: every resample is worse than the float model
    named = _ev(spec, feeds, fn="tests.data.test_metric_choice.good_fn", name="gap", maximize=False)
    assert named.metric.name == "gap" and named.record()["fn"] == "tests.data.test_metric_choice.good_fn"


@pytest.mark.parametrize("path,error,match", [
    ("tests.data.no_such_module.fn", ConfigError, r"metric.fn='tests.data.no_such_module.fn': cannot import module"),
    ("tests.data.test_metric_choice.no_such_fn", ConfigError, r"has no attribute 'no_such_fn'"),
    ("good_fn", ConfigError, r"metric.fn='good_fn' is not an import path"),
    ("tests.data.test_metric_choice.text_fn", DataError, r"metric.fn=tests.data.test_metric_choice.text_fn returned "
                                                          r"'0.9' \(str\), not a number"),
    ("tests.data.test_metric_choice.nan_fn", DataError, r"returned NaN"),
    ("tests.data.test_metric_choice.raising_fn", DataError, r"metric.fn=tests.data.test_metric_choice.raising_fn "
                                                            r"raised KeyError"),
])
def test_bad_user_metrics_are_refused_before_the_sweep(path, error, match):
    spec, feeds, _ = M.embedding_model(n=50)
    with pytest.raises(error, match=match):
        _ev(spec, feeds, fn=path)


def test_metric_config_values_are_checked():
    with pytest.raises(ConfigError, match=r"metric.name='f1' is not a task metric"):
        MetricRequest.from_config({"name": "f1"})
    with pytest.raises(ConfigError, match=r"metric.name='accuracy' cannot name the user metric"):
        MetricRequest.from_config({"name": "accuracy", "fn": "tests.data.test_metric_choice.good_fn"})
    with pytest.raises(ConfigError, match=r"metric.name='size_bytes' cannot name"):
        MetricRequest.from_config({"name": "size_bytes", "fn": "tests.data.test_metric_choice.good_fn"})
    with pytest.raises(ConfigError, match=r"metric.maximize=True contradicts metric.name=rmse"):
        MetricRequest.from_config({"name": "rmse", "maximize": True})
    with pytest.raises(ConfigError, match=r"metric.bootstrap .* integer >= 100"):
        MetricRequest.from_config({"bootstrap": 5})
    with pytest.raises(ConfigError, match=r"metric.threshold must be a finite number"):
        MetricRequest.from_config({"threshold": float("nan")})
    assert MetricRequest.from_config("top5_accuracy").name == "top5_accuracy"
