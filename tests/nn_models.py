"""Small Core ML neuralnetwork models built with coremltools' ``NeuralNetworkBuilder``.

One model per layer type that coremltools' ``quantize_weights`` touches
(:data:`LAYER_MODELS`), fusion cases (:data:`FUSION_MODELS`, with what
coremltools 9.0 does on each), a tiny numpy reference for the layers the fusion
cases use (:func:`reference_predict`) and a field-by-field protobuf diff
(:func:`spec_diff`) that names the layer, field and first differing byte.

Weights are drawn from a generator seeded by the model name, so every call
builds the same model. Tensors are small (tens to hundreds of values) to keep
the conformance suite fast; the 8-bit cases still use up to 256 levels.

Example::

    from tests.nn_models import LAYER_MODELS
    spec = LAYER_MODELS["convolution"]()
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from quantizer.coremltools_quiet import coremltools

ct = coremltools()
from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402

__all__ = [
    "LAYER_MODELS",
    "FUSION_MODELS",
    "FusionCase",
    "reference_predict",
    "spec_diff",
    "rng_for",
]

Spec = Any


def rng_for(name: str) -> np.random.Generator:
    """A generator seeded by ``name`` (stable across runs and processes)."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _builder(inputs, outputs=(("out", None),), rank5: bool = True, **kw) -> NeuralNetworkBuilder:
    return NeuralNetworkBuilder(
        [(n, datatypes.Array(*s)) for n, s in inputs],
        list(outputs),
        disable_rank5_shape_mapping=not rank5,
        **kw,
    )


# ----------------------------------------------------------------------------- layer models


def _conv(name: str, *, cin=4, cout=8, k=3, groups=1, bias=True, deconv=False, hw=6) -> Spec:
    rng = rng_for(name)
    b = _builder([("data", (cin, hw, hw))])
    kc = cin if deconv else cin // groups
    w_last = cout // groups if deconv else cout
    W = _f32(rng.standard_normal((k, k, kc, w_last)))
    bias_v = _f32(rng.standard_normal(cout)) if bias else None
    b.add_convolution(
        name, kc, cout, k, k, 1, 1, "valid", groups, W, bias_v, bias,
        is_deconv=deconv, output_shape=(hw + k - 1, hw + k - 1) if deconv else None,
        input_name="data", output_name="out",
    )
    return b.spec


def _inner_product(name: str, *, cin=16, cout=10, bias=True) -> Spec:
    rng = rng_for(name)
    b = _builder([("data", (cin,))])
    b.add_inner_product(name, _f32(rng.standard_normal((cout, cin))), _f32(rng.standard_normal(cout)) if bias else None,
                        cin, cout, bias, "data", "out")
    return b.spec


def _batchnorm(name: str = "batchnorm") -> Spec:
    rng = rng_for(name)
    c = 6
    b = _builder([("data", (c, 3, 3))])
    b.add_batchnorm(name, c, _f32(rng.standard_normal(c)), _f32(rng.standard_normal(c)),
                    _f32(rng.standard_normal(c)), _f32(rng.uniform(0.5, 2.0, c)), "data", "out")
    return b.spec


def _embedding(name: str = "embedding") -> Spec:
    rng = rng_for(name)
    b = _builder([("data", (1,))])
    b.add_embedding(name, _f32(rng.standard_normal((6, 12))), _f32(rng.standard_normal(6)), 12, 6, True, "data", "out")
    return b.spec


def _embedding_nd(name: str = "embeddingND") -> Spec:
    rng = rng_for(name)
    b = _builder([("data", (4, 1))], rank5=False)
    b.add_embedding_nd(name, "data", "out", vocab_size=20, embedding_size=6, W=_f32(rng.standard_normal((6, 20))),
                       b=_f32(rng.standard_normal(6)))
    return b.spec


def _scale(name: str = "scale") -> Spec:
    rng = rng_for(name)
    c = 5
    b = _builder([("data", (c, 2, 2))])
    b.add_scale(name, _f32(rng.standard_normal(c)), _f32(rng.standard_normal(c)), True, "data", "out",
                shape_scale=[c], shape_bias=[c])
    return b.spec


def _bias(name: str = "bias") -> Spec:
    rng = rng_for(name)
    c = 5
    b = _builder([("data", (c, 2, 2))])
    b.add_bias(name, _f32(rng.standard_normal((c, 2, 2))), "data", "out", shape_bias=[c, 2, 2])
    return b.spec


def _load_constant(name: str = "loadConstant") -> Spec:
    rng = rng_for(name)
    b = _builder([("data", (3, 4, 5))])
    b.add_load_constant(name, "const", _f32(rng.standard_normal((3, 4, 5))), [3, 4, 5])
    b.add_elementwise("add", ["data", "const"], "out", "ADD")
    return b.spec


def _load_constant_nd(name: str = "loadConstantND") -> Spec:
    rng = rng_for(name)
    b = _builder([("data", (5, 7))], rank5=False)
    b.add_load_constant_nd(name, "const", _f32(rng.standard_normal((5, 7))), [5, 7])
    b.add_elementwise("add", ["data", "const"], "out", "ADD")
    return b.spec


def _simple_rnn(name: str = "simpleRecurrent") -> Spec:
    rng = rng_for(name)
    h, i = 5, 3
    b = _builder([("data", (i,))])
    b.add_simple_rnn(name, _f32(rng.standard_normal((h, h))), _f32(rng.standard_normal((h, i))),
                     _f32(rng.standard_normal(h)), h, i, "TANH", ["data"], ["out"])
    return b.spec


def _gru(name: str = "gru") -> Spec:
    rng = rng_for(name)
    h, i = 5, 3
    b = _builder([("data", (i,))])
    W_h = [_f32(rng.standard_normal((h, h))) for _ in range(3)]
    W_x = [_f32(rng.standard_normal((h, i))) for _ in range(3)]
    bias = [_f32(rng.standard_normal(h)) for _ in range(3)]
    b.add_gru(name, W_h, W_x, bias, h, i, ["data"], ["out"])
    return b.spec


def _lstm_params(rng, h, i):
    W_h = [_f32(rng.standard_normal((h, h))) for _ in range(4)]
    W_x = [_f32(rng.standard_normal((h, i))) for _ in range(4)]
    bias = [_f32(rng.standard_normal(h)) for _ in range(4)]
    peep = [_f32(rng.standard_normal(h)) for _ in range(3)]
    return W_h, W_x, bias, peep


def _uni_lstm(name: str = "uniDirectionalLSTM") -> Spec:
    rng = rng_for(name)
    h, i = 5, 3
    b = _builder([("data", (i,))])
    W_h, W_x, bias, peep = _lstm_params(rng, h, i)
    b.add_unilstm(name, W_h, W_x, bias, h, i, ["data"], ["out"], peep=peep)
    return b.spec


def _bi_lstm(name: str = "biDirectionalLSTM") -> Spec:
    rng = rng_for(name)
    h, i = 4, 3
    b = _builder([("data", (i,))])
    W_h, W_x, bias, peep = _lstm_params(rng, h, i)
    W_hb, W_xb, bias_b, peep_b = _lstm_params(rng, h, i)
    b.add_bidirlstm(name, W_h, W_x, bias, W_hb, W_xb, bias_b, h, i, ["data"], ["out"], peep=peep, peep_back=peep_b)
    return b.spec


def _batched_matmul(name: str = "batchedMatmul") -> Spec:
    rng = rng_for(name)
    rows, cols = 6, 5
    b = _builder([("data", (2, rows))], rank5=False)
    b.add_batched_mat_mul(name, ["data"], "out", weight_matrix_rows=rows, weight_matrix_columns=cols,
                          W=_f32(rng.standard_normal((rows, cols))), bias=_f32(rng.standard_normal(cols)))
    return b.spec


def _loop(name: str = "loop") -> Spec:
    """copy data->x; loop 3 times { x = innerProduct_2(relu(innerProduct_1(x))) }; out = x."""
    rng = rng_for(name)
    c = 8
    b = _builder([("data", (c,))])
    b.add_copy("copy_in", "data", "x")
    loop = b.add_loop(name, max_iterations=3)
    body = NeuralNetworkBuilder(nn_spec=loop.loop.bodyNetwork)
    body.add_inner_product("body_ip1", _f32(rng.standard_normal((c, c))), _f32(rng.standard_normal(c)), c, c, True,
                           "x", "ip1_out")
    body.add_activation("body_relu", "RELU", "ip1_out", "relu_out")
    body.add_inner_product("body_ip2", _f32(rng.standard_normal((c, c))), None, c, c, False, "relu_out", "ip2_out")
    body.add_copy("body_copy", "ip2_out", "x")
    b.add_copy("copy_out", "x", "out")
    return b.spec


def _branch(name: str = "branch") -> Spec:
    """if cond: out = innerProduct_a(data) else: out = scale(innerProduct_b(data) ... ) with weight layers in both."""
    rng = rng_for(name)
    c = 6
    b = _builder([("data", (c,)), ("cond", (1,))])
    layer = b.add_branch(name, "cond")
    if_b = NeuralNetworkBuilder(nn_spec=layer.branch.ifBranch)
    if_b.add_inner_product("if_ip", _f32(rng.standard_normal((c, c))), _f32(rng.standard_normal(c)), c, c, True,
                           "data", "out")
    else_b = NeuralNetworkBuilder(nn_spec=layer.branch.elseBranch)
    else_b.add_inner_product("else_ip", _f32(rng.standard_normal((c, c))), None, c, c, False, "data", "else_mid")
    else_b.add_activation("else_relu", "RELU", "else_mid", "else_act")
    else_b.add_batchnorm("else_bn", c, _f32(rng.standard_normal(c)), _f32(rng.standard_normal(c)),
                         _f32(rng.standard_normal(c)), _f32(rng.uniform(0.5, 2, c)), "else_act", "out")
    return b.spec


def _updatable_flags(name: str = "innerProduct_updatable") -> Spec:
    """An innerProduct whose layer and weights carry ``isUpdatable`` (must survive quantization)."""
    spec = _inner_product(name)
    layer = spec.neuralNetwork.layers[0]
    layer.isUpdatable = True
    layer.innerProduct.weights.isUpdatable = True
    layer.innerProduct.bias.isUpdatable = True
    return spec


def _classifier(name: str = "classifier") -> Spec:
    rng = rng_for(name)
    b = NeuralNetworkBuilder([("data", datatypes.Array(12))], [("probs", None)], mode="classifier")
    b.add_inner_product("clf_ip", _f32(rng.standard_normal((3, 12))), _f32(rng.standard_normal(3)), 12, 3, True,
                        "data", "logits")
    b.add_softmax("softmax", "logits", "probs")
    b.set_class_labels(["a", "b", "c"], predicted_feature_name="label", prediction_blob="probs")
    return b.spec


#: name -> zero-argument function building a fresh spec; one model per layer type
#: coremltools' quantize_weights touches (none of them holds a fusable pair).
LAYER_MODELS: dict[str, Callable[[], Spec]] = {
    "convolution": lambda: _conv("convolution"),
    "convolution_nobias": lambda: _conv("convolution_nobias", bias=False),
    "convolution_grouped": lambda: _conv("convolution_grouped", cin=4, cout=6, groups=2),
    "convolution_depthwise": lambda: _conv("convolution_depthwise", cin=4, cout=4, groups=4),
    "convolution_1x1_256w": lambda: _conv("convolution_1x1_256w", cin=16, cout=16, k=1),
    "deconvolution": lambda: _conv("deconvolution", cin=4, cout=6, deconv=True, hw=4),
    "deconvolution_grouped": lambda: _conv("deconvolution_grouped", cin=4, cout=6, groups=2, deconv=True, hw=4),
    "innerProduct": lambda: _inner_product("innerProduct"),
    "innerProduct_nobias": lambda: _inner_product("innerProduct_nobias", bias=False),
    "batchnorm": _batchnorm,
    "embedding": _embedding,
    "embeddingND": _embedding_nd,
    "scale": _scale,
    "bias": _bias,
    "loadConstant": _load_constant,
    "loadConstantND": _load_constant_nd,
    "simpleRecurrent": _simple_rnn,
    "gru": _gru,
    "uniDirectionalLSTM": _uni_lstm,
    "biDirectionalLSTM": _bi_lstm,
    "batchedMatmul": _batched_matmul,
    "loop": _loop,
    "branch": _branch,
    "classifier": _classifier,
    "innerProduct_updatable": _updatable_flags,
}


# ----------------------------------------------------------------------------- fusion models


@dataclass(frozen=True)
class FusionCase:
    """A model with a (possible) fold and what coremltools 9.0 does with it below 16 bits.

    ``coremltools``: ``"ok"`` (its result is right: ours must be byte-identical),
    ``"crash"`` (it raises), ``"wrong"`` (it silently computes something else).
    ``folds``: the number of layers :func:`quantizer.fuse` removes.
    ``input_shape``: the shape of the ``data`` input (without batch).
    """

    build: Callable[[], Spec]
    coremltools: str
    folds: int
    input_shape: tuple[int, ...]
    why: str = ""


def _chain(name: str, first: str, *rest: str, cin=4, cout=6, groups=1, first_bias=True,
           scale_bias=True, scalar=False, outputs=(("out", None),)) -> Spec:
    """data -> first -> rest... -> out, where first is conv/deconv/ip and rest are
    batchnorm/scale/bias/bn_cmv (batchnorm computing mean/var)/relu."""
    rng = rng_for(name)
    hw, k = 5, 3
    if first == "ip":
        b = _builder([("data", (cin,))], outputs)
        b.add_inner_product("first", _f32(rng.standard_normal((cout, cin))),
                            _f32(rng.standard_normal(cout)) if first_bias else None, cin, cout, first_bias, "data", "b0")
    else:
        deconv = first == "deconv"
        b = _builder([("data", (cin, hw, hw))], outputs)
        kc = cin if deconv else cin // groups
        W = _f32(rng.standard_normal((k, k, kc, cout // groups if deconv else cout)))
        b.add_convolution("first", kc, cout, k, k, 1, 1, "valid", groups, W,
                          _f32(rng.standard_normal(cout)) if first_bias else None, first_bias,
                          is_deconv=deconv, output_shape=(hw + k - 1, hw + k - 1) if deconv else None,
                          input_name="data", output_name="b0")
    n = 1 if scalar else cout
    for idx, kind in enumerate(rest):
        src, dst = f"b{idx}", "out" if idx == len(rest) - 1 else f"b{idx + 1}"
        lname = f"{kind}{idx}"
        if kind in ("bn", "bn_cmv", "bn_instance"):
            b.add_batchnorm(lname, cout, _f32(rng.uniform(0.5, 2, cout)), _f32(rng.standard_normal(cout)),
                            _f32(rng.standard_normal(cout)), _f32(rng.uniform(0.5, 2, cout)), src, dst,
                            compute_mean_var=kind == "bn_instance", instance_normalization=kind == "bn_instance",
                            epsilon=1e-3)
            # the builder refuses computeMeanVar without instanceNormalization; the format allows it
            b.spec.neuralNetwork.layers[-1].batchnorm.computeMeanVar = kind != "bn"
        elif kind == "scale":
            b.add_scale(lname, _f32(rng.uniform(-2, 2, n)), _f32(rng.standard_normal(n)) if scale_bias else None,
                        scale_bias, src, dst, shape_scale=[n], shape_bias=[n])
        elif kind == "bias":
            b.add_bias(lname, _f32(rng.standard_normal(n)), src, dst, shape_bias=[n])
        elif kind == "relu":
            b.add_activation(lname, "RELU", src, dst)
        else:  # pragma: no cover - programming error in this table
            raise ValueError(kind)
    return b.spec


def _conv_output_also_model_output() -> Spec:
    """conv -> scale, but the conv's output is also a model output: folding would lose it."""
    return _chain("conv_out_is_output", "conv", "scale", outputs=(("out", None), ("b0", None)))


def _conv_two_readers() -> Spec:
    """conv output read by a scale and a relu: not fusable for anyone."""
    spec = _chain("conv_two_readers", "conv", "scale", outputs=(("out", None), ("r", None)))
    relu = spec.neuralNetwork.layers.add()
    relu.name = "relu_side"
    relu.input.append("b0")
    relu.output.append("r")
    relu.activation.ReLU.SetInParent()
    return spec


_SPATIAL = (4, 5, 5)
_VECTOR = (4,)

#: name -> FusionCase. coremltools 9.0's behaviour measured with its quantize_weights(8 bits).
FUSION_MODELS: dict[str, FusionCase] = {
    "conv+bn": FusionCase(lambda: _chain("conv+bn", "conv", "bn"), "crash", 1, _SPATIAL,
                          "conv+batchnorm broadcasting bug"),
    "conv_nobias+bn": FusionCase(lambda: _chain("conv_nobias+bn", "conv", "bn", first_bias=False), "crash", 1,
                                 _SPATIAL, "conv+batchnorm broadcasting bug"),
    "conv_grouped+bn": FusionCase(lambda: _chain("conv_grouped+bn", "conv", "bn", groups=2), "crash", 1, _SPATIAL,
                                  "conv+batchnorm broadcasting bug"),
    "conv+scale": FusionCase(lambda: _chain("conv+scale", "conv", "scale"), "ok", 1, _SPATIAL),
    "conv_nobias+scale": FusionCase(lambda: _chain("conv_nobias+scale", "conv", "scale", first_bias=False), "ok", 1,
                                    _SPATIAL),
    "conv+scale_nobias": FusionCase(lambda: _chain("conv+scale_nobias", "conv", "scale", scale_bias=False), "wrong",
                                    1, _SPATIAL, "coremltools leaves the conv bias unscaled"),
    "conv_nobias+scale_nobias": FusionCase(
        lambda: _chain("conv_nobias+scale_nobias", "conv", "scale", first_bias=False, scale_bias=False), "ok", 1,
        _SPATIAL),
    "conv+scalar_scale": FusionCase(lambda: _chain("conv+scalar_scale", "conv", "scale", scalar=True), "ok", 1,
                                    _SPATIAL),
    "conv+bias": FusionCase(lambda: _chain("conv+bias", "conv", "bias"), "ok", 1, _SPATIAL),
    "conv_nobias+bias": FusionCase(lambda: _chain("conv_nobias+bias", "conv", "bias", first_bias=False), "ok", 1,
                                   _SPATIAL),
    "conv_nobias+scalar_bias": FusionCase(
        lambda: _chain("conv_nobias+scalar_bias", "conv", "bias", first_bias=False, scalar=True), "crash", 1,
        _SPATIAL, "coremltools writes a 1-element bias for a 6-channel convolution, then fails to quantize it"),
    "conv_grouped+scale": FusionCase(lambda: _chain("conv_grouped+scale", "conv", "scale", groups=2), "ok", 1,
                                     _SPATIAL),
    "conv+scale+bias": FusionCase(lambda: _chain("conv+scale+bias", "conv", "scale", "bias"), "ok", 2, _SPATIAL),
    "conv+bn+scale": FusionCase(lambda: _chain("conv+bn+scale", "conv", "bn", "scale"), "crash", 2, _SPATIAL,
                                "conv+batchnorm broadcasting bug"),
    "conv+bn_computed": FusionCase(lambda: _chain("conv+bn_computed", "conv", "bn_cmv"), "crash", 0, _SPATIAL,
                                   "coremltools tries to fold a batchnorm that computes mean/variance at run time"),
    "conv+bn_instance": FusionCase(lambda: _chain("conv+bn_instance", "conv", "bn_instance"), "ok", 0, _SPATIAL),
    "conv+relu+scale": FusionCase(lambda: _chain("conv+relu+scale", "conv", "relu", "scale"), "ok", 0, _SPATIAL),
    "deconv+scale": FusionCase(lambda: _chain("deconv+scale", "deconv", "scale"), "wrong", 1, _SPATIAL,
                               "coremltools scales deconvolution weights along the input-channel axis"),
    "deconv_grouped+scale": FusionCase(lambda: _chain("deconv_grouped+scale", "deconv", "scale", groups=2), "wrong", 1,
                                       _SPATIAL, "coremltools scales deconvolution weights along the wrong axis"),
    "deconv+bias": FusionCase(lambda: _chain("deconv+bias", "deconv", "bias"), "ok", 1, _SPATIAL),
    "deconv_grouped+bn": FusionCase(lambda: _chain("deconv_grouped+bn", "deconv", "bn", groups=2), "crash", 1,
                                    _SPATIAL, "conv+batchnorm broadcasting bug"),
    "ip+bn": FusionCase(lambda: _chain("ip+bn", "ip", "bn"), "ok", 0, _VECTOR,
                        "neither folds a batchnorm into an innerProduct"),
    "ip+scale": FusionCase(lambda: _chain("ip+scale", "ip", "scale"), "ok", 1, _VECTOR),
    "ip_nobias+scale": FusionCase(lambda: _chain("ip_nobias+scale", "ip", "scale", first_bias=False), "ok", 1,
                                  _VECTOR),
    "ip+scale_nobias": FusionCase(lambda: _chain("ip+scale_nobias", "ip", "scale", scale_bias=False), "wrong", 1,
                                  _VECTOR, "coremltools leaves the innerProduct bias unscaled"),
    "ip+bias": FusionCase(lambda: _chain("ip+bias", "ip", "bias"), "ok", 1, _VECTOR),
    "ip+bn+scale": FusionCase(lambda: _chain("ip+bn+scale", "ip", "bn", "scale"), "ok", 1, _VECTOR,
                              "batchnorm+scale folds; innerProduct+batchnorm does not"),
    "ip+scale+bias": FusionCase(lambda: _chain("ip+scale+bias", "ip", "scale", "bias"), "ok", 2, _VECTOR),
    "bn+scale": FusionCase(lambda: _chain("bn+scale", "ip", "relu", "bn", "scale"), "ok", 1, _VECTOR),
    "conv_out_is_output": FusionCase(_conv_output_also_model_output, "wrong", 0, _SPATIAL,
                                     "coremltools folds away a blob that is a model output"),
    "conv_two_readers": FusionCase(_conv_two_readers, "ok", 0, _SPATIAL),
}


# ----------------------------------------------------------------------------- numpy reference


def _conv2d(x: np.ndarray, p: Any, w: np.ndarray) -> np.ndarray:
    """Valid, stride-1, undilated (de)convolution of x [N, C, H, W] (float64)."""
    groups = max(1, p.nGroups)
    kh, kw = p.kernelSize
    n, cin, h, wd = x.shape
    cout = p.outputChannels
    if p.isDeconvolution:
        w = w.reshape(cin, cout // groups, kh, kw)
        out = np.zeros((n, cout, h + kh - 1, wd + kw - 1))
        gi, go = cin // groups, cout // groups
        for g in range(groups):
            xs = x[:, g * gi:(g + 1) * gi]
            ws = w[g * gi:(g + 1) * gi]  # [gi, go, kh, kw]
            for dy in range(kh):
                for dx in range(kw):
                    out[:, g * go:(g + 1) * go, dy:dy + h, dx:dx + wd] += np.einsum("nchw,co->nohw", xs, ws[:, :, dy, dx])
        return out
    w = w.reshape(cout, cin // groups, kh, kw)
    ho, wo = h - kh + 1, wd - kw + 1
    out = np.zeros((n, cout, ho, wo))
    gi, go = cin // groups, cout // groups
    for g in range(groups):
        xs = x[:, g * gi:(g + 1) * gi]
        ws = w[g * go:(g + 1) * go]
        for dy in range(kh):
            for dx in range(kw):
                out[:, g * go:(g + 1) * go] += np.einsum("nchw,oc->nohw", xs[:, :, dy:dy + ho, dx:dx + wo], ws[:, :, dy, dx])
    return out


def _channel(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Broadcast a length-1/length-C vector (or [C,H,W] tensor) over x [N, C, ...] along axis 1."""
    if v.size == 1:
        return v.reshape(())
    if v.ndim == 1:
        return v.reshape((1, -1) + (1,) * (x.ndim - 2))
    return v.reshape((1,) + v.shape)


def reference_predict(spec: Spec, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate a rank-5-mapped model made of convolution/deconvolution (valid,
    stride 1), innerProduct, batchnorm, scale, bias, ReLU, copy and fixed-count
    loop layers in float64.

    ``feeds`` arrays carry a leading batch axis: ``[N, C, H, W]`` or ``[N, C]``.
    Weights are decoded with :func:`quantizer.decode_weights` (any encoding).
    """
    blobs = {k: np.asarray(v, dtype=np.float64) for k, v in feeds.items()}
    _run(spec.neuralNetwork.layers, blobs)
    return {f.name: blobs[f.name] for f in spec.description.output}


def _run(layers: Any, blobs: dict[str, np.ndarray]) -> None:
    import quantizer
    from quantizer.tensors import layer_weights

    for layer in layers:
        kind = layer.WhichOneof("layer")
        if kind == "loop":
            p = layer.loop
            if p.conditionVar or p.conditionNetwork.layers:
                raise NotImplementedError("reference_predict: loops with a condition")
            for _ in range(p.maxLoopIterations):
                _run(p.bodyNetwork.layers, blobs)
            continue
        x = blobs[layer.input[0]]
        weights = {f: quantizer.decode_weights(wp, shape, axis).astype(np.float64)
                   for f, (wp, shape, axis) in layer_weights(layer).items()}
        if kind == "convolution":
            y = _conv2d(x, layer.convolution, weights["weights"])
            if layer.convolution.hasBias:
                y = y + _channel(weights["bias"], y)
        elif kind == "innerProduct":
            p = layer.innerProduct
            y = x.reshape(x.shape[0], -1) @ weights["weights"].reshape(p.outputChannels, p.inputChannels).T
            if p.hasBias:
                y = y + weights["bias"]
        elif kind == "batchnorm":
            p = layer.batchnorm
            if p.computeMeanVar:
                axes = tuple(range(2, x.ndim)) if p.instanceNormalization else (0,) + tuple(range(2, x.ndim))
                mean = x.mean(axis=axes, keepdims=True)
                var = x.var(axis=axes, keepdims=True)
            else:
                mean, var = _channel(weights["mean"], x), _channel(weights["variance"], x)
            y = _channel(weights["gamma"], x) * (x - mean) / np.sqrt(var + p.epsilon) + _channel(weights["beta"], x)
        elif kind == "scale":
            p = layer.scale
            y = x * _channel(weights["scale"].reshape(tuple(p.shapeScale)), x)
            if p.hasBias:
                y = y + _channel(weights["bias"].reshape(tuple(p.shapeBias)), x)
        elif kind == "bias":
            y = x + _channel(weights["bias"].reshape(tuple(layer.bias.shape)), x)
        elif kind == "activation" and layer.activation.WhichOneof("NonlinearityType") == "ReLU":
            y = np.maximum(x, 0)
        elif kind == "copy":
            y = x.copy()
        else:
            raise NotImplementedError(f"reference_predict: layer {layer.name!r} of type {kind}")
        blobs[layer.output[0]] = y


# ----------------------------------------------------------------------------- protobuf diff


def _first_diff(a: bytes, b: bytes) -> str:
    n = min(len(a), len(b))
    i = next((k for k in range(n) if a[k] != b[k]), n)
    return (f"lengths {len(a)} vs {len(b)}, first difference at byte {i}: "
            f"{a[i:i + 8].hex() or '<end>'} vs {b[i:i + 8].hex() or '<end>'}")


def spec_diff(ours: Any, theirs: Any, path: str = "", limit: int = 20) -> list[str]:
    """Human-readable differences between two protobuf messages.

    Paths name layers by their ``name`` (``neuralNetwork.layers[conv1].convolution.weights.rawValue``),
    bytes differences give the lengths and first differing byte, float lists
    the first differing index and both values.
    """
    out: list[str] = []

    def walk(a: Any, b: Any, p: str) -> None:
        if len(out) >= limit:
            return
        fields = {fd.name: fd for fd, _ in a.ListFields()} | {fd.name: fd for fd, _ in b.ListFields()}
        for name, fd in sorted(fields.items()):
            va, vb = getattr(a, name), getattr(b, name)
            q = f"{p}.{name}" if p else name
            if fd.is_repeated:
                if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                    da, db = dict(va), dict(vb)  # maps: order-free (values here are scalars)
                    if da != db:
                        keys = sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k))
                        out.append(f"{q}: differ at keys {keys[:5]}")
                    continue
                if fd.message_type is not None:
                    if len(va) != len(vb):
                        out.append(f"{q}: {len(va)} vs {len(vb)} entries")
                        continue
                    for i, (x, y) in enumerate(zip(va, vb)):
                        label = getattr(x, "name", "") if hasattr(x, "name") and isinstance(getattr(x, "name"), str) else ""
                        walk(x, y, f"{q}[{label or i}]")
                elif list(va) != list(vb):
                    la, lb = list(va), list(vb)
                    if len(la) != len(lb):
                        out.append(f"{q}: {len(la)} vs {len(lb)} values")
                    else:
                        i = next(k for k in range(len(la)) if la[k] != lb[k])
                        out.append(f"{q}[{i}]: {la[i]!r} vs {lb[i]!r} ({sum(x != y for x, y in zip(la, lb))} differ)")
            elif fd.message_type is not None:
                if a.HasField(name) != b.HasField(name):
                    out.append(f"{q}: set in {'ours' if a.HasField(name) else 'theirs'} only")
                else:
                    walk(va, vb, q)
            elif va != vb:
                if isinstance(va, bytes):
                    out.append(f"{q}: {_first_diff(va, vb)}")
                else:
                    out.append(f"{q}: {va!r} vs {vb!r}")

    walk(ours, theirs, path)
    return out[:limit]
