"""The public surface of ``quantizer``: ``__all__``, the coremltools-order ``quantize_weights``
(positional calls, ``sample_data``), labels, constants, the one decoder, and the package rules."""
from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import re
import types
from pathlib import Path

import numpy as np
import pytest

import quantizer
from quantizer import Codec, InvalidArgumentError, QuantPlan
from quantizer.coremltools_quiet import coremltools
from quantizer.packing import pack_bits
from quantizer.weightparams import write_quantized

ct = coremltools()
from coremltools.models.neural_network import quantization_utils as ct_qu  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "quantizer"

#: names that left the top-level namespace -> the public submodule that holds them now
MOVED = {
    "iter_layers": "quantizer.walk",
    "neural_networks": "quantizer.walk",
    "neural_network": "quantizer.walk",
    "sub_networks": "quantizer.walk",
    "model_networks": "quantizer.walk",
    "get_weight_params": "quantizer.tensors",
    "iter_weight_slots": "quantizer.tensors",
    "layer_weights": "quantizer.tensors",
    "write_float16": "quantizer.weightparams",
    "write_float32": "quantizer.weightparams",
    "write_quantized": "quantizer.weightparams",
    "pack_bits": "quantizer.packing",
    "unpack_bits": "quantizer.packing",
    "packed_length": "quantizer.packing",
    "parse": "quantizer.io",
}


def _bytes(model) -> bytes:
    spec = model.get_spec() if hasattr(model, "get_spec") else model
    return spec.SerializeToString(deterministic=True)


def _theirs(*args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return ct_qu.quantize_weights(*args, **kwargs)


# ----------------------------------------------------------------------------- the surface
def test_all_is_the_public_namespace_and_small():
    assert len(quantizer.__all__) <= 30
    assert len(set(quantizer.__all__)) == len(quantizer.__all__)
    public = {n for n, v in vars(quantizer).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == set(quantizer.__all__)


@pytest.mark.parametrize("name,module", sorted(MOVED.items()))
def test_helpers_live_in_public_submodules(name, module):
    assert not hasattr(quantizer, name), f"quantizer.{name} should have left the top-level namespace"
    assert callable(getattr(importlib.import_module(module), name))


def test_no_import_fallbacks_and_small_modules():
    for path in sorted(PACKAGE.rglob("*.py")):  # quantizer/algorithms/ included
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree)
        assert doc and doc.splitlines()[0].strip(), f"{path.name}: no first docstring line"
        assert len(path.read_text().splitlines()) <= 500, f"{path.name} is over 500 lines"
        for node in ast.walk(tree):
            if isinstance(node, ast.Try):
                caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
                assert not caught & {"ImportError", "ModuleNotFoundError"}, f"{path.name}:{node.lineno}: import fallback"
    init = ast.parse((PACKAGE / "__init__.py").read_text())
    assert not any(isinstance(node, ast.Try) for node in ast.walk(init))


def test_no_private_quantizer_module_is_imported_outside_the_package():
    pattern = re.compile(r"\bquantizer\._[a-z]|from quantizer import _[a-z]|\bquantizer/_[a-z]")
    offenders = []
    for folder in ("harness", "tests", "notebooks"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".ipynb") and pattern.search(path.read_text(errors="replace")):
                if path != Path(__file__).resolve():
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


# ----------------------------------------------------------------------------- coremltools order
def test_signature_starts_as_coremltools():
    ours = list(inspect.signature(quantizer.quantize_weights).parameters.values())[:4]
    theirs = list(inspect.signature(ct_qu.quantize_weights).parameters.values())[:4]
    assert [(p.name, p.default, p.kind) for p in ours] == [(p.name, p.default, p.kind) for p in theirs]
    rest = list(inspect.signature(quantizer.quantize_weights).parameters.values())[4:]
    assert all(p.kind is p.KEYWORD_ONLY for p in rest)
    assert {"selector", "lut_function"} <= {p.name for p in rest}


@pytest.mark.parametrize("name", ["innerProduct", "convolution", "conv+scale"])
@pytest.mark.parametrize("args", [(8,), (4, "linear"), (3, "linear_lut", None), (16, "linear", None)])
def test_positional_calls_as_written_for_coremltools(nn_model, name, args):
    mlmodel = ct.models.MLModel(nn_model(name))
    ours = quantizer.quantize_weights(mlmodel, *args)
    assert isinstance(ours, ct.models.MLModel)
    assert _bytes(ours) == _bytes(_theirs(mlmodel, *args))
    assert _bytes(quantizer.quantize_weights(full_precision_model=mlmodel, nbits=args[0])) == _bytes(
        quantizer.quantize_weights(mlmodel, args[0]))


@pytest.mark.parametrize("sample_data", [[{"data": np.zeros((1, 16), np.float32)}], "/tmp/some-image-folder"])
def test_sample_data_is_accepted_changes_nothing_and_warns(nn_model, sample_data):
    mlmodel = ct.models.MLModel(nn_model("innerProduct"))
    with pytest.warns(UserWarning, match="ignores sample_data"):
        ours = quantizer.quantize_weights(mlmodel, 8, "linear", sample_data)
    assert _bytes(ours) == _bytes(quantizer.quantize_weights(mlmodel, 8, "linear"))
    assert _bytes(ours) == _bytes(_theirs(mlmodel, 8, "linear", sample_data))  # prediction-free on Linux


def test_a_selector_passed_fourth_raises_clearly(nn_model):
    spec = nn_model("innerProduct")
    for selector in (quantizer.QuantizedLayerSelector(), ct_qu.AdvancedQuantizedLayerSelector()):
        with pytest.raises(InvalidArgumentError, match=r"fourth argument .* sample_data .* selector=\.\.\."):
            quantizer.quantize_weights(spec, 8, "linear", selector)
    with pytest.raises(InvalidArgumentError, match="sample_data must be a list of input dicts"):
        quantizer.quantize_weights(spec, 8, "linear", 3)
    with pytest.raises(InvalidArgumentError, match="sample_data must be a list of input dicts"):
        quantizer.quantize_weights(spec, 8, "linear", [np.zeros(3)])


def _linear_lut(nbits, weights):
    return ct_qu._get_linear_lookup_table_and_weight(nbits, weights)


@pytest.mark.parametrize("name", ["innerProduct", "convolution"])
def test_keyword_selector_and_lut_function_as_in_coremltools(nn_model, name):
    mlmodel = ct.models.MLModel(nn_model(name))
    sel = ct_qu.AdvancedQuantizedLayerSelector(skip_layer_types=["bias"], minimum_conv_kernel_channels=1,
                                               minimum_conv_weight_count=1)
    for args, kwargs in [((4, "linear", None), {"selector": sel}), ((4, "linear"), {"selector": sel}),
                         ((3, "custom_lut", None), {"lut_function": _linear_lut}),
                         ((3, "custom_lut"), {"lut_function": _linear_lut, "selector": sel})]:
        ours = quantizer.quantize_weights(mlmodel, *args, **kwargs)
        assert _bytes(ours) == _bytes(_theirs(mlmodel, *args, **kwargs)), (args, kwargs)
    with pytest.raises(TypeError):
        quantizer.quantize_weights(mlmodel, 8, "linear", None, selectr=sel)


def test_nothing_selected_still_raises_the_spec_version_as_coremltools(nn_model):
    class Nothing(ct_qu.QuantizedLayerSelector):
        def do_quantize(self, layer, **kwargs):
            return False

    spec = nn_model("innerProduct")
    spec.specificationVersion = 1
    mlmodel = ct.models.MLModel(spec)
    ours = quantizer.quantize_weights(mlmodel, 4, selector=Nothing())
    assert ours.get_spec().specificationVersion == 3
    assert _bytes(ours) == _bytes(_theirs(mlmodel, 4, selector=Nothing()))


# ----------------------------------------------------------------------------- labels, constants
@pytest.mark.parametrize("mode,nbits,label", [
    ("linear", 8, "linear-8bit"), ("kmeans_lut", 4, "kmeans_lut-4bit"), ("kmeans", 4, "kmeans_lut-4bit"),
    ("linear_symmetric", 2, "linear_symmetric-2bit"), ("linear_lut", 1, "linear_lut-1bit"),
    ("custom_lut", 3, "custom_lut-3bit"), ("linear", 16, "fp16"), ("kmeans_lut", 16, "fp16"),
    ("fp16", 16, "fp16"), ("fp16", None, "fp16"), ("dequantization", None, "dequantization"),
])
def test_codec_label(mode, nbits, label):
    assert quantizer.codec_label(mode, nbits) == label
    fn = _linear_lut if mode == "custom_lut" else None
    assert Codec(mode, nbits, fn).label == label


def test_codec_label_rejects_what_codec_rejects():
    for mode, nbits in [("nope", 4), ("linear", 9), ("linear", None), ("fp16", 8), ("linear", True)]:
        with pytest.raises(InvalidArgumentError):
            quantizer.codec_label(mode, nbits)


def test_codec_label_is_not_part_of_the_plan_digest():
    """Plan digests are built from Codec.token() (e.g. ``linear:8``), so they did not change when
    labels were unified: these digests were computed before the restructure."""
    plan = QuantPlan({("fc", "weights"): Codec("linear", 8), ("conv", "bias"): ("kmeans", 4),
                      ("x", "y"): Codec("fp16"), ("keep", "weights"): None})
    assert plan.digest() == "bef5c66ae4b79f50fb54df2bbbe689336913b610067e00129d6fbf752732d5d5"


@pytest.mark.parametrize("name,nbits,mode,digest", [
    ("convolution", 4, "linear", "d1f50d6550c41623cdffc71c47eae72d5002fa3c96a0ac43cbc09c45a7137496"),
    ("gru", 8, "kmeans", "d103c9310b63a4f8097e9fac8f21f992359eb45343092613dc6cd5a0ba86a281"),
    ("loop", 16, "linear", "bb7ef211e100a59774f4302b2afd2a4771d2e4190906e135ff2856958801df97"),
    ("conv+bn", 3, "linear_lut", "2ea5eff9ce3bed914fdf8770da10ded350a7dfe4f7c0dcd545e5601afd042907"),
])
def test_built_plan_digests_are_unchanged(nn_model, name, nbits, mode, digest):
    assert quantizer.build_plan(nn_model(name), nbits, mode).digest() == digest


@pytest.mark.parametrize("encoding,nbits,label", [
    ("float32", 32, "fp32"), ("float16", 16, "fp16"), ("linear", 8, "lin8"), ("linear", 3, "lin3"),
    ("lut", 4, "lut4"), ("int8", 8, "int8"), ("raw", 32, "raw32"), ("empty", 0, "empty0"),
])
def test_encoding_label(encoding, nbits, label):
    assert quantizer.encoding_label(encoding, nbits) == label


def test_encoding_labels_of_a_quantized_model(nn_model):
    q = quantizer.quantize_weights(nn_model("innerProduct"), 4, "kmeans_lut")
    assert {quantizer.encoding_label(t.encoding, t.nbits) for t in quantizer.weight_tensors(q)} == {"lut4"}


def test_constants():
    assert quantizer.VALID_NBITS == (16, 8, 7, 6, 5, 4, 3, 2, 1)
    assert quantizer.QUANTIZATION_MODES == ("linear", "linear_symmetric", "kmeans_lut", "linear_lut", "custom_lut")
    assert quantizer.SKIPPABLE_LAYER_TYPES == (
        "convolution", "innerProduct", "embedding", "embeddingND", "batchnorm", "scale", "bias",
        "loadConstant", "loadConstantND", "simpleRecurrent", "gru", "uniDirectionalLSTM",
        "biDirectionalLSTM", "batchedMatmul", "depthwiseConv", "loop", "branch",
    )
    assert set(quantizer.SKIPPABLE_LAYER_TYPES) == ct_qu.QuantizedLayerSelector().quantizable_layer_types
    assert set(quantizer.QUANTIZABLE_LAYER_TYPES) < set(quantizer.SKIPPABLE_LAYER_TYPES)
    quantizer.AdvancedQuantizedLayerSelector(skip_layer_types=quantizer.SKIPPABLE_LAYER_TYPES)
    for nbits in range(0, 18):
        ok = nbits in quantizer.VALID_NBITS
        for mode in quantizer.QUANTIZATION_MODES:
            if mode == "linear_symmetric" and nbits == 1:
                continue
            if ok:
                quantizer.codec_label(mode, nbits)
            else:
                with pytest.raises(InvalidArgumentError):
                    quantizer.codec_label(mode, nbits)


# ----------------------------------------------------------------------------- the one decoder
def _linear_wp(q: np.ndarray, scale: np.ndarray, bias: np.ndarray, nbits: int = 8):
    wp = ct.proto.NeuralNetwork_pb2.WeightParams()
    write_quantized(wp, pack_bits(q, nbits), nbits, scale=scale, bias=bias)
    return wp


def test_decode_weights_exact_computes_in_float64_and_rounds_once():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, size=(4, 64)).astype(np.uint8)
    scale = (rng.random(4) * 0.01).astype(np.float32)
    bias = (-rng.random(4)).astype(np.float32)
    wp = _linear_wp(q, scale, bias)
    fast = quantizer.decode_weights(wp, (4, 64))
    exact = quantizer.decode_weights(wp, (4, 64), exact=True)
    assert fast.dtype == exact.dtype == np.float32 and fast.shape == exact.shape == (4, 64)
    np.testing.assert_array_equal(fast, q.astype(np.float32) * scale[:, None] + bias[:, None])
    want = (q.astype(np.float64) * scale.astype(np.float64)[:, None] + bias.astype(np.float64)[:, None])
    np.testing.assert_array_equal(exact, want.astype(np.float32))
    assert (fast != exact).any()  # the two really differ (in the last bit)
    assert np.abs(fast.astype(np.float64) - exact).max() <= np.spacing(np.abs(exact).max())


def test_decode_weights_same_either_way_for_luts_floats_and_scalar_scales():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 4, size=12).astype(np.uint8)
    lut = ct.proto.NeuralNetwork_pb2.WeightParams()
    write_quantized(lut, pack_bits(q, 2), 2, lut=np.array([-1.5, 0.0, 0.25, 2.0], np.float32))
    per_element = _linear_wp(q, np.arange(1, 13, dtype=np.float32) / 7, np.zeros(1, np.float32), nbits=2)
    for wp in (lut, per_element):  # a 1-D tensor with one scale per element decodes in both modes
        np.testing.assert_array_equal(quantizer.decode_weights(wp, (12,)), quantizer.decode_weights(wp, (12,), exact=True))


def test_decode_weights_names_the_tensor_in_errors():
    wp = _linear_wp(np.zeros(4, np.uint8), np.ones(1, np.float32), np.zeros(1, np.float32))
    with pytest.raises(quantizer.InvalidWeightsError, match=r"fc\.weights: rawValue holds 4 bytes, too few for 8"):
        quantizer.decode_weights(wp, (8,), name="fc.weights", exact=True)
    with pytest.raises(quantizer.InvalidWeightsError, match=r"fc\.weights: rawValue holds 4 bytes, too few for 8"):
        quantizer.decode_weights(wp, (8,), name="fc.weights")


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py")))
def test_docstring_examples_run(module):
    import doctest

    name = "quantizer" if module == "__init__" else f"quantizer.{module}"
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0
