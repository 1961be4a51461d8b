"""Unit tests of tricky numpy-executor ops against independent (naive) numpy references."""
from __future__ import annotations

import numpy as np
import pytest

from harness.executors import NumpyExecutor
from tests.executors.executor_specs import border, layer, net, weights

RNG = np.random.default_rng(7)


def _run(spec, feeds):
    return NumpyExecutor(spec).predict(feeds)


def naive_conv(x, w, b, stride, dil, pads, groups):
    """Direct convolution by loops over output pixels: x (N,C,H,W), w (Co, C/g, kh, kw)."""
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    pt, pb, pl, pr = pads
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    ho = (h + pt + pb - dil[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + pl + pr - dil[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, co, ho, wo))
    opg = co // groups
    for o in range(co):
        gi = o // opg
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, gi * cg:(gi + 1) * cg, i * stride[0]: i * stride[0] + dil[0] * (kh - 1) + 1: dil[0],
                           j * stride[1]: j * stride[1] + dil[1] * (kw - 1) + 1: dil[1]]
                y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + (b[o] if b is not None else 0)
    return y


def _conv_spec(cin, cout, k, stride, dil, groups, hw, *, same=None, pads=(0, 0, 0, 0)):
    spec, nn = net({"x": (1, cin, hw[0], hw[1])}, ["y"])
    p = layer(nn, "convolution", "conv", ["x"], ["y"])
    p.outputChannels, p.kernelChannels, p.nGroups = cout, cin // groups, groups
    p.kernelSize.extend(k)
    p.stride.extend(stride)
    p.dilationFactor.extend(dil)
    if same is None:
        border(p.valid.paddingAmounts, *pads)
    else:
        p.same.asymmetryMode = same
    w = RNG.standard_normal((cout, cin // groups) + tuple(k)).astype(np.float32)
    b = RNG.standard_normal(cout).astype(np.float32)
    weights(p.weights, w)
    p.hasBias = True
    weights(p.bias, b)
    return spec, w, b


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("k,stride,hw", [((2, 2), (2, 2), (7, 6)), ((3, 4), (2, 1), (6, 7)), ((3, 3), (1, 1), (5, 5))])
def test_conv_same_padding(mode, k, stride, hw):
    spec, w, b = _conv_spec(4, 6, k, stride, (1, 1), 1, hw, same=mode)
    x = RNG.standard_normal((3, 4) + hw).astype(np.float32)
    got = _run(spec, {"x": x})["y"]
    pads = []
    for size, kk, s in zip(hw, k, stride):
        out = -(-size // s)
        total = max(0, (out - 1) * s + kk - size)
        small = total // 2
        pads += [total - small, small] if mode == 1 else [small, total - small]
    ref = naive_conv(x, w, b, stride, (1, 1), pads, 1)
    assert got.shape == ref.shape == (3, 6, -(-hw[0] // stride[0]), -(-hw[1] // stride[1]))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cin,cout,groups,dil,pads", [
    (4, 8, 4, (1, 1), (1, 1, 1, 1)),      # depthwise with channel multiplier 2
    (6, 6, 6, (2, 2), (2, 1, 0, 2)),      # depthwise, dilation, asymmetric pads
    (6, 4, 2, (1, 2), (0, 0, 1, 1)),      # grouped
    (2, 5, 1, (1, 1), (1, 0, 0, 1)),      # few channels (NCHW columns path)
])
def test_conv_groups_dilation_pads(cin, cout, groups, dil, pads):
    spec, w, b = _conv_spec(cin, cout, (3, 3), (1, 2), dil, groups, (8, 9), pads=pads)
    x = RNG.standard_normal((2, cin, 8, 9)).astype(np.float32)
    np.testing.assert_allclose(_run(spec, {"x": x})["y"], naive_conv(x, w, b, (1, 2), dil, pads, groups), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block", [1, 4 * 8 * 72 * 4, 3 * 9 * 8 * 72 * 4])  # rows of 1, 4 (4+4+1), 3 samples (3+3+1)
@pytest.mark.parametrize("cin, groups", [(8, 1), (8, 2), (2, 1)])  # channels-last im2col; grouped; few channels
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_im2col_blocks_and_row_bands(block, cin, groups, threads, monkeypatch):
    """im2col runs in blocks of _COLS_BLOCK bytes: channels-last, bands of output rows of one sample
    (a block smaller than one sample's columns) or several whole samples; with few input channels,
    blocks of samples. The result is the same."""
    from threadpoolctl import threadpool_limits

    from harness.executors.ops import _parallel as par
    from harness.executors.ops import conv as conv_mod

    monkeypatch.setattr(conv_mod, "_COLS_BLOCK", block)
    monkeypatch.setattr(par, "SPLIT_MATMUL", 1)
    spec, w, b = _conv_spec(cin, 6, (3, 3), (1, 1), (1, 1), groups, (9, 8), pads=(1, 1, 1, 1))
    x = RNG.standard_normal((7, cin, 9, 8)).astype(np.float32)
    with threadpool_limits(threads):
        got = _run(spec, {"x": x})["y"]
    np.testing.assert_allclose(got, naive_conv(x, w, b, (1, 1), (1, 1), (1, 1, 1, 1), groups), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cin,cout,stride,dil", [(6, 6, (2, 2), (1, 1)), (3, 6, (1, 2), (2, 1))])
@pytest.mark.parametrize("threads", [1, 2])
def test_depthwise_blocks_of_samples_on_threads(cin, cout, stride, dil, threads, monkeypatch):
    """The compiled depthwise loop over blocks of samples (a channel multiplier, strides, dilation and
    channels-last input from a 1x1 convolution's output view) equals the direct convolution."""
    from threadpoolctl import threadpool_limits

    from harness.executors.ops import _parallel as par

    monkeypatch.setattr(par, "GRAIN", 64)  # a few samples per block
    spec, w, b = _conv_spec(cin, cout, (3, 3), stride, dil, cin, (9, 8), pads=(1, 2, 2, 1))
    x = RNG.standard_normal((9, 9, 8, cin)).astype(np.float32).transpose(0, 3, 1, 2)  # channels-last memory
    with threadpool_limits(threads):
        got = _run(spec, {"x": x})["y"]
    np.testing.assert_allclose(got, naive_conv(x, w, b, stride, dil, (1, 2, 2, 1), cin), rtol=1e-4, atol=1e-4)


def naive_deconv(x, w, b, stride, groups):
    """Transposed convolution by scattering every input pixel: w (Cin, Cout/g, kh, kw)."""
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    cig = cin // groups
    y = np.zeros((n, cog * groups, (h - 1) * stride[0] + kh, (wd - 1) * stride[1] + kw))
    for ci in range(cin):
        gi = ci // cig
        for i in range(h):
            for j in range(wd):
                y[:, gi * cog:(gi + 1) * cog, i * stride[0]: i * stride[0] + kh, j * stride[1]: j * stride[1] + kw] += \
                    x[:, ci, i, j][:, None, None, None] * w[ci][None]
    return y + b[None, :, None, None]


@pytest.mark.parametrize("groups,out_shape,pads", [(1, None, (1, 1, 1, 1)), (2, (10, 12), (1, 1, 1, 1)), (1, (9, 9), (0, 0, 0, 0))])
def test_deconvolution(groups, out_shape, pads):
    cin, cout, h, wd = 4, 6, 4, 5
    spec, nn = net({"x": (1, cin, h, wd)}, ["y"])
    p = layer(nn, "convolution", "deconv", ["x"], ["y"])
    p.isDeconvolution = True
    p.outputChannels, p.kernelChannels, p.nGroups = cout, cin, groups
    p.kernelSize.extend([4, 4])
    p.stride.extend([2, 2])
    border(p.valid.paddingAmounts, *pads)
    if out_shape:
        p.outputShape.extend(out_shape)
    w = RNG.standard_normal((cin, cout // groups, 4, 4)).astype(np.float32)
    b = RNG.standard_normal(cout).astype(np.float32)
    weights(p.weights, w)
    p.hasBias = True
    weights(p.bias, b)
    x = RNG.standard_normal((2, cin, h, wd)).astype(np.float32)
    full = naive_deconv(x, w, b, (2, 2), groups)
    pt, pb, pl, pr = pads
    if out_shape:
        ref = np.zeros((2, cout) + out_shape) + b[None, :, None, None]
        part = full[:, :, pt: pt + out_shape[0], pl: pl + out_shape[1]]
        ref[:, :, : part.shape[2], : part.shape[3]] = part
    else:
        ref = full[:, :, pt: full.shape[2] - pb, pl: full.shape[3] - pr]
    np.testing.assert_allclose(_run(spec, {"x": x})["y"], ref, rtol=1e-4, atol=1e-4)


def _pool_spec(kind, k, s, *, pads=None, same=None, last=None, exclude=False, glob=False, hw=(7, 8)):
    spec, nn = net({"x": (1, 2) + hw}, ["y"])
    p = layer(nn, "pooling", "pool", ["x"], ["y"])
    p.type = kind
    p.kernelSize.extend(k)
    p.stride.extend(s)
    p.avgPoolExcludePadding = exclude
    p.globalPooling = glob
    if same is not None:
        p.same.asymmetryMode = same
    elif last is not None:
        p.includeLastPixel.paddingAmounts.extend(last)
    else:
        border(p.valid.paddingAmounts, *(pads or (0, 0, 0, 0)))
    return spec


def naive_pool(x, kind, k, s, pads, out_hw, exclude):
    n, c, h, w = x.shape
    pt, pl = pads[0], pads[2]
    y = np.zeros((n, c) + out_hw)
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            r0, c0 = i * s[0] - pt, j * s[1] - pl
            r1, c1 = r0 + k[0], c0 + k[1]
            win = x[:, :, max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)]
            if kind == 0:
                y[:, :, i, j] = win.max(axis=(2, 3))
            elif kind == 2:
                y[:, :, i, j] = np.sqrt((win ** 2).sum(axis=(2, 3)))
            else:
                cnt = win.shape[2] * win.shape[3] if exclude else k[0] * k[1]
                y[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    return y


@pytest.mark.parametrize("kind", [0, 1, 2])
@pytest.mark.parametrize("exclude", [False, True])
def test_pooling_valid_asymmetric_pads(kind, exclude):
    pads = (1, 0, 2, 1)
    spec = _pool_spec(kind, (3, 3), (2, 2), pads=pads, exclude=exclude)
    x = RNG.standard_normal((2, 2, 7, 8)).astype(np.float32)
    out = ((7 + 1 - 3) // 2 + 1, (8 + 3 - 3) // 2 + 1)
    np.testing.assert_allclose(_run(spec, {"x": x})["y"], naive_pool(x, kind, (3, 3), (2, 2), pads, out, exclude), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", [0, 1])
def test_pooling_same(mode):
    spec = _pool_spec(0, (2, 3), (2, 2), same=mode)
    x = RNG.standard_normal((2, 2, 7, 8)).astype(np.float32)
    out = (4, 4)
    tot = ((out[0] - 1) * 2 + 2 - 7, (out[1] - 1) * 2 + 3 - 8)
    pt = tot[0] - tot[0] // 2 if mode else tot[0] // 2
    pl = tot[1] - tot[1] // 2 if mode else tot[1] // 2
    ref = naive_pool(x, 0, (2, 3), (2, 2), (pt, 0, pl, 0), out, True)
    np.testing.assert_allclose(_run(spec, {"x": x})["y"], ref, rtol=1e-6)


def test_pooling_include_last_pixel_average():
    # H=7, k=3, s=2, pad=1: ceil((7+2-3)/2)+1 = 4 rows; W=8: ceil((8+2-3)/2)+1 = 5 -> (5-1)*2 >= 8+1? no -> 5
    spec = _pool_spec(1, (3, 3), (2, 2), last=(1, 1), exclude=True)
    x = RNG.standard_normal((1, 2, 7, 8)).astype(np.float32)
    got = _run(spec, {"x": x})["y"]
    assert got.shape == (1, 2, 4, 5)
    np.testing.assert_allclose(got, naive_pool(x, 1, (3, 3), (2, 2), (1, 1, 1, 1), (4, 5), True), rtol=1e-5, atol=1e-6)


def test_global_pooling():
    x = RNG.standard_normal((3, 2, 7, 8)).astype(np.float32)
    for kind, ref in [(0, x.max(axis=(2, 3))), (1, x.mean(axis=(2, 3))), (2, np.sqrt((x ** 2).sum(axis=(2, 3))))]:
        got = _run(_pool_spec(kind, (3, 3), (1, 1), glob=True), {"x": x})["y"]
        np.testing.assert_allclose(got[..., 0, 0], ref, rtol=1e-5)


def _upsample(x, mode, linear_mode=0, ints=(), frac=()):
    spec, nn = net({"x": (1,) + x.shape[1:]}, ["y"])
    p = layer(nn, "upsample", "up", ["x"], ["y"])
    p.mode = mode
    p.linearUpsampleMode = linear_mode
    p.scalingFactor.extend(ints)
    p.fractionalScalingFactor.extend(frac)
    return _run(spec, {"x": x})["y"]


def test_upsample_nearest():
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    y = _upsample(x, 0, ints=(2, 3))
    np.testing.assert_array_equal(y[0, 0], np.repeat(np.repeat(x[0, 0], 2, 0), 3, 1))


@pytest.mark.parametrize("linear_mode,expected", [
    (1, [0.0, 1 / 3, 2 / 3, 1.0]),             # align corners: spacing (2-1)/(4-1)
    (2, [0.0, 0.25, 0.75, 1.0]),               # half-pixel: i*0.5 + 0.25 - 0.5, clamped to [0, 1]
    (0, [0.0, 0.5, 1.0, 1.0]),                 # default: spacing (2 - 2/4)/3 = 0.5
])
def test_upsample_bilinear_modes(linear_mode, expected):
    x = np.array([[[[0.0, 1.0], [10.0, 11.0]]]], np.float32)   # value = 10*row + col
    y = _upsample(x, 1, linear_mode, ints=(2, 2))
    e = np.asarray(expected)
    np.testing.assert_allclose(y[0, 0], 10 * e[:, None] + e[None, :], rtol=1e-6, atol=1e-6)


def test_upsample_fractional_align_corners():
    x = np.arange(3, dtype=np.float32).reshape(1, 1, 1, 3)
    y = _upsample(x, 1, 1, frac=(1.0, 1.5))   # W: floor(3 * 1.5) = 4 points over [0, 2]
    np.testing.assert_allclose(y[0, 0, 0], [0, 2 / 3, 4 / 3, 2], rtol=1e-6)


def test_inner_product_int8_dynamic_quantized_and_ranks():
    w8 = RNG.integers(-128, 128, size=(3, 4)).astype(np.int8)
    spec, nn = net({"x": (1, 2, 4)}, ["y"])
    p = layer(nn, "innerProduct", "fc", ["x"], ["y"])
    p.inputChannels, p.outputChannels, p.hasBias, p.int8DynamicQuantize = 4, 3, True, True
    p.weights.int8RawValue = w8.tobytes()
    p.weights.quantization.numberOfBits = 8
    p.weights.quantization.linearQuantization.scale.append(0.05)
    weights(p.bias, [1.0, -1.0, 0.5])
    x = RNG.standard_normal((5, 2, 4)).astype(np.float32)
    ref = x @ (w8.astype(np.float32) * 0.05).T + np.array([1.0, -1.0, 0.5])
    np.testing.assert_allclose(_run(spec, {"x": x})["y"], ref, rtol=1e-5, atol=1e-5)


def test_legacy_rank5_inner_product_flattens_chw():
    spec, nn = net({"x": (2, 2, 3)}, ["y"], exact=False)
    p = layer(nn, "innerProduct", "fc", ["x"], ["y"])
    p.inputChannels, p.outputChannels = 12, 2
    w = RNG.standard_normal((2, 12)).astype(np.float32)
    weights(p.weights, w)
    spec.description.output[0].type.multiArrayType.shape.extend([2])
    x = RNG.standard_normal((4, 2, 2, 3)).astype(np.float32)
    y = _run(spec, {"x": x})["y"]
    assert y.shape == (4, 2)
    np.testing.assert_allclose(y, x.reshape(4, 12) @ w.T, rtol=1e-5)
    one = _run(spec, {"x": x[0]})["y"]   # exactly the declared shape: one sample, leading N = 1
    # one row takes BLAS's matrix-vector kernel, four rows its matrix kernel: float32 sums of 12 terms in
    # another order (measured 1.5e-6 relative on a 0.027 result with OpenBLAS's Haswell kernels)
    np.testing.assert_allclose(one, y[:1], rtol=1e-5, atol=1e-6)


def test_legacy_reshape_permute_flatten_channel_last():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)   # N=2 samples of (C=3, H=2, W=2)
    spec, nn = net({"x": (3, 2, 2)}, ["r", "p", "f"], exact=False)
    layer(nn, "reshape", "r", ["x"], ["r"]).targetShape.extend([2, 3, 2])
    rl = layer(nn, "reshape", "rl", ["x"], ["rl"])
    rl.targetShape.extend([2, 3, 2])
    rl.mode = 1
    layer(nn, "permute", "p", ["x"], ["p"]).axis.extend([0, 3, 1, 2])      # (Seq, C, H, W) -> (Seq, W, C, H)
    layer(nn, "flatten", "f", ["x"], ["f"]).mode = 1                         # CHANNEL_LAST
    out = _run(spec, {"x": x})
    np.testing.assert_array_equal(out["r"], x.reshape(2, 2, 3, 2))
    np.testing.assert_array_equal(out["p"], x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(out["f"], x.transpose(0, 2, 3, 1).reshape(2, 12))
    blobs = NumpyExecutor(spec).trace({"x": x})
    hwc = x.transpose(0, 2, 3, 1).reshape(2, -1)                            # CHANNEL_LAST reshape
    np.testing.assert_array_equal(blobs["rl"][:, 0, 0], hwc.reshape(2, 3, 2, 2).transpose(0, 3, 1, 2))


def test_lrn_against_loops():
    spec, nn = net({"x": (1, 7, 3, 3)}, ["y"])
    p = layer(nn, "lrn", "lrn", ["x"], ["y"])
    p.alpha, p.beta, p.localSize, p.k = 0.3, 0.75, 3, 2.0
    x = RNG.standard_normal((2, 7, 3, 3)).astype(np.float32)
    ref = np.empty_like(x)
    for c in range(7):
        s = (x[:, max(0, c - 1): c + 2] ** 2).sum(axis=1)
        ref[:, c] = x[:, c] / (2.0 + 0.3 / 3 * s) ** 0.75
    np.testing.assert_allclose(_run(spec, {"x": x})["y"], ref, rtol=1e-5)


@pytest.mark.parametrize("mode,axis,fn", [
    (0, 0, lambda x, a: x.sum(a)), (1, 1, lambda x, a: x.mean(a)), (2, 2, lambda x, a: x.prod(a)),
    (3, 3, lambda x, a: np.log(x + 1e-6).sum(a)), (4, 4, lambda x, a: (x ** 2).sum(a)),
    (5, 0, lambda x, a: np.abs(x).sum(a)), (6, 1, lambda x, a: np.sqrt((x ** 2).sum(a))),
    (7, 2, lambda x, a: x.max(a)), (8, 3, lambda x, a: x.min(a)), (9, 2, lambda x, a: np.argmax(x, a[0])),
])
def test_legacy_reduce(mode, axis, fn):
    spec, nn = net({"x": (1, 3, 4, 5)}, ["y"])
    p = layer(nn, "reduce", "r", ["x"], ["y"])
    p.mode, p.axis = mode, axis
    x = RNG.uniform(0.5, 1.5, (2, 3, 4, 5)).astype(np.float32)
    axes = {0: (1, 2, 3), 1: (2, 3), 2: (1,), 3: (2,), 4: (3,)}[axis]
    got = _run(spec, {"x": x})["y"]
    np.testing.assert_allclose(got, np.expand_dims(fn(x, axes), axes), rtol=1e-5)


@pytest.mark.parametrize("op,ref", [
    (0, np.sqrt), (1, lambda v: 1 / np.sqrt(v + 1e-6)), (2, lambda v: 1 / (v + 1e-6)), (3, lambda v: v ** 1.5),
    (4, np.exp), (5, np.log), (6, np.abs), (7, lambda v: np.maximum(v, 1.5)),
])
def test_unary_after_scale_and_shift(op, ref):
    spec, nn = net({"x": (1, 6)}, ["y"])
    p = layer(nn, "unary", "u", ["x"], ["y"])
    p.type, p.alpha, p.scale, p.shift = op, 1.5, 2.0, 0.25
    x = RNG.uniform(0.1, 2.0, (3, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(spec, {"x": x})["y"], ref(2.0 * x + 0.25), rtol=1e-5)


@pytest.mark.parametrize("shape", [(1,), (3,), (1, 2, 2), (3, 2, 2)])
def test_bias_and_scale_shapes(shape):
    spec, nn = net({"x": (1, 3, 2, 2)}, ["b", "s"])
    pb = layer(nn, "bias", "bias", ["x"], ["b"])
    pb.shape.extend(shape)
    bv = RNG.standard_normal(shape).astype(np.float32)
    weights(pb.bias, bv)
    ps = layer(nn, "scale", "scale", ["x"], ["s"])
    ps.shapeScale.extend(shape)
    sv = RNG.standard_normal(shape).astype(np.float32)
    weights(ps.scale, sv)
    ps.hasBias = True
    ps.shapeBias.extend(shape)
    weights(ps.bias, bv)
    x = RNG.standard_normal((2, 3, 2, 2)).astype(np.float32)
    bb = bv.reshape(-1, 1, 1) if len(shape) == 1 else bv
    ss = sv.reshape(-1, 1, 1) if len(shape) == 1 else sv
    out = _run(spec, {"x": x})
    np.testing.assert_allclose(out["b"], x + bb, rtol=1e-6)
    np.testing.assert_allclose(out["s"], x * ss + bb, rtol=1e-6)


def test_instance_norm_batchnorm_compute_mean_var():
    spec, nn = net({"x": (1, 2, 3, 4)}, ["y"])
    p = layer(nn, "batchnorm", "bn", ["x"], ["y"])
    p.channels, p.computeMeanVar, p.instanceNormalization, p.epsilon = 2, True, True, 1e-3
    weights(p.gamma, [2.0, 0.5])
    weights(p.beta, [0.1, -0.1])
    x = RNG.standard_normal((3, 2, 3, 4)).astype(np.float32)
    m, v = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    ref = (x - m) / np.sqrt(v + 1e-3) * np.array([2.0, 0.5])[:, None, None] + np.array([0.1, -0.1])[:, None, None]
    np.testing.assert_allclose(_run(spec, {"x": x})["y"], ref, rtol=1e-4, atol=1e-5)


def test_legacy_elementwise_broadcast_and_alpha():
    spec, nn = net({"a": (1, 3, 2, 2), "b": (1, 3, 1, 1)}, ["add", "mul1", "avg", "mx"])
    layer(nn, "add", "add", ["a", "b"], ["add"])
    layer(nn, "multiply", "mul1", ["a"], ["mul1"]).alpha = 3.0
    layer(nn, "average", "avg", ["a", "b", "a"], ["avg"])
    layer(nn, "max", "mx", ["a", "b"], ["mx"])
    a = RNG.standard_normal((2, 3, 2, 2)).astype(np.float32)
    b = RNG.standard_normal((2, 3, 1, 1)).astype(np.float32)
    out = _run(spec, {"a": a, "b": b})
    np.testing.assert_allclose(out["add"], a + b, rtol=1e-6)
    np.testing.assert_allclose(out["mul1"], 3 * a, rtol=1e-6)
    np.testing.assert_allclose(out["avg"], (2 * a + b) / 3, rtol=1e-6)
    np.testing.assert_allclose(out["mx"], np.maximum(a, b), rtol=1e-6)


def test_image_input_preprocessing_bgr_and_classifier_labels():
    from tests.executors.executor_specs import Model

    spec = Model()
    spec.specificationVersion = 1
    f = spec.description.input.add()
    f.name = "img"
    f.type.imageType.width, f.type.imageType.height, f.type.imageType.colorSpace = 3, 2, 30   # BGR
    for name in ("label", "probs"):
        spec.description.output.add().name = name
    spec.description.output[0].type.stringType.SetInParent()
    spec.description.output[1].type.dictionaryType.stringKeyType.SetInParent()
    spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName = "label", "probs"
    nn = spec.neuralNetworkClassifier
    nn.stringClassLabels.vector.extend(["blue", "green", "red"])
    pre = nn.preprocessing.add()
    pre.featureName = "img"
    pre.scaler.channelScale, pre.scaler.blueBias, pre.scaler.greenBias, pre.scaler.redBias = 0.5, -1.0, -2.0, -3.0
    p = layer(nn, "reduce", "mean", ["img"], ["m"])
    p.mode, p.axis = 1, 1                                   # AVG over H, W -> (C, 1, 1)
    layer(nn, "softmax", "sm", ["m"], ["probs"])
    px = RNG.integers(0, 256, size=(4, 2, 3, 3)).astype(np.uint8)   # (N, H, W, RGB)
    ex = NumpyExecutor(spec)
    out = ex.predict({"img": px})
    bgr = px[..., ::-1].astype(np.float64).mean(axis=(1, 2)) * 0.5 + np.array([-1.0, -2.0, -3.0])
    e = np.exp(bgr - bgr.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    assert ex.class_labels == ["blue", "green", "red"]
    np.testing.assert_allclose(out["probs"], probs, rtol=1e-5)
    assert list(out["label"]) == [["blue", "green", "red"][i] for i in probs.argmax(axis=1)]


def test_regressor_and_multiple_inputs_outputs():
    spec, nn = net({"a": (1, 3), "b": (1, 3)}, ["sum", "prod"], kind="neuralNetworkRegressor")
    layer(nn, "addBroadcastable", "s", ["a", "b"], ["sum"])
    layer(nn, "multiplyBroadcastable", "p", ["a", "b"], ["prod"])
    a, b = RNG.standard_normal((5, 3)), RNG.standard_normal((5, 3))
    out = _run(spec, {"a": a, "b": b})
    a32, b32 = a.astype(np.float32), b.astype(np.float32)  # the executor computes in float32: a sum near 0
    np.testing.assert_allclose(out["sum"], a32 + b32, rtol=1e-6)  # would miss a float64 reference's rtol
    np.testing.assert_allclose(out["prod"], a32 * b32, rtol=1e-6)


def test_predict_in_chunks_equals_whole_batch():
    spec, w, b = _conv_spec(3, 4, (3, 3), (1, 1), (1, 1), 1, (6, 6), pads=(1, 1, 1, 1))
    x = RNG.standard_normal((7, 3, 6, 6)).astype(np.float32)
    ex = NumpyExecutor(spec)
    np.testing.assert_allclose(ex.predict({"x": x}, batch_size=3)["y"], ex.predict({"x": x})["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("count", [4, 1])
def test_quantized_prelu_alpha_per_channel_or_shared(count):
    """A quantized PReLU alpha stores no count: 4 channels or 1 shared value, read from the packed length."""
    import quantizer

    spec, nn = net({"x": (1, 4, 2, 3)}, ["y"])
    alpha = np.array([0.1, 0.2, 0.3, 0.4][:count], np.float32)
    wp = layer(nn, "activation", "prelu", ["x"], ["y"]).PReLU.alpha
    quantizer.weightparams.write_quantized(wp, quantizer.packing.pack_bits(np.arange(count), 8), 8, scale=[0.1], bias=[0.1])
    x = -np.ones((2, 1, 4, 2, 3), np.float32)
    y = _run(spec, {"x": x})["y"]
    np.testing.assert_allclose(y, x[:, 0] * alpha.reshape(-1, 1, 1), rtol=1e-6)


def test_quantized_prelu_alpha_of_a_wrong_length_is_an_error():
    import quantizer
    from harness.errors import ExecutorError

    spec, nn = net({"x": (1, 4, 2, 3)}, ["y"])
    wp = layer(nn, "activation", "prelu", ["x"], ["y"]).PReLU.alpha
    quantizer.weightparams.write_quantized(wp, quantizer.packing.pack_bits(np.arange(3), 8), 8, scale=[0.1], bias=[0.1])
    with pytest.raises(ExecutorError, match=r"'prelu' \(activation\).*3 bytes of 8-bit values.*neither 4.*nor 1"):
        _run(spec, {"x": np.ones((1, 1, 4, 2, 3), np.float32)})


def test_sigmoid_in_place_is_bitwise_the_expression():
    """The sigmoid activation computes 1 / (1 + exp(-x)) with the same operations in one array: the same bits,
    saturating to exactly 0 and 1 far from zero."""
    from harness.executors.ops.activation import _sigmoid

    x = (np.random.default_rng(7).standard_normal((64, 33)) * 60).astype(np.float32)
    with np.errstate(over="ignore"):
        want = np.float32(1) / (np.float32(1) + np.exp(-x))
        assert np.array_equal(_sigmoid(x), want)
        assert _sigmoid(np.array([-200.0, 0.0, 200.0], np.float32)).tolist() == [0.0, 0.5, 1.0]
