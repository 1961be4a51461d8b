"""One entry point for a calibration-aware codec: algorithm + options + statistics -> stored tensor (+ bias delta).

:func:`quantize_calibrated` quantizes one tensor with an algorithm;
:func:`encode_calibrated` is what :meth:`quantizer.Codec.encode` calls for a
codec whose ``algorithm`` is not plain ``rtn`` (or that corrects the bias): it
returns quantizer's :class:`~quantizer.codecs.Encoded` (same WeightParams
layout as round-to-nearest) carrying the bias delta. :func:`resolve_options`
fills in the defaults so that a codec's identity (:meth:`Codec.token`) names
every option; :func:`algorithm_token` is that identity text.

Algorithms: ``rtn`` (round-to-nearest, with ``bias_correction`` the same bytes
as today's codec plus the bias delta), ``gptq`` (:func:`~quantizer.algorithms.gptq.gptq`)
and ``awkm`` (round-to-nearest on the activation-weighted k-means LUT,
``kmeans_lut`` only); ``affine`` (a batchnorm layer's vectors chosen together,
:mod:`quantizer.algorithms.affine`) is encoded per layer by :func:`quantizer.apply_plan`,
so only its options and identity live here.

>>> import numpy as np
>>> from quantizer.algorithms.stats import LayerStats
>>> st = LayerStats(np.eye(3), np.zeros(3), 10)
>>> algorithm_token("gptq", st, bias_correction=True)[:60]
'gptq(act_order=1,block_size=128,centered=1,damp=0.01,lut=pla'
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from ..errors import InvalidArgumentError, InvalidWeightsError
from ..labels import ALGORITHMS, CODEC_ALGORITHMS
from ..packing import unpack_bits
from .bias_correction import bias_correction as _bias_delta
from .gptq import DEFAULT_BLOCK_SIZE, DEFAULT_DAMP, gptq
from .relu_off import DEFAULT_ACTIVITY, off_channels
from .grids import QuantizedTensor, rtn
from .affine import DEFAULT_WINDOW
from .stats import LayerStats
from .weighted_kmeans import activation_weighted_lut

__all__ = ["ALGORITHMS", "quantize_calibrated", "algorithm_token", "gptq_options", "resolve_options",
           "encode_calibrated", "decode_encoded"]

_GPTQ_KEYS = ("damp", "block_size", "act_order", "centered", "lut", "relu_off")


def gptq_options(*, damp: float = DEFAULT_DAMP, block_size: int = DEFAULT_BLOCK_SIZE, act_order: bool = True,
                 centered: bool | None = None, lut: str = "plain", bias_correction: bool = False,
                 relu_off: float = DEFAULT_ACTIVITY) -> dict[str, Any]:
    """The resolved options (defaults filled in): ``centered`` defaults to ``bias_correction``
    (GPTQ then minimises the error that bias correction leaves; measured better in 40 of 51
    real kmeans cases, see the README). ``relu_off``: on a layer with ReLU statistics, switch
    off the output channels active on fewer than this share of the calibration rows where that
    costs less than the quantized row (:mod:`quantizer.algorithms.relu_off`; linear modes);
    0 (or False) never does."""
    if lut not in ("plain", "weighted"):
        raise ValueError(f"lut must be 'plain' or 'weighted', got {lut!r}")
    if not float(damp) > 0:
        raise ValueError(f"damp must be > 0, got {damp!r}")
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size!r}")
    if isinstance(relu_off, bool):
        relu_off = DEFAULT_ACTIVITY if relu_off else 0.0
    if not 0.0 <= float(relu_off) <= 1.0:
        raise ValueError(f"relu_off must be a share in [0, 1] (or a bool), got {relu_off!r}")
    return {"damp": float(damp), "block_size": int(block_size), "act_order": bool(act_order),
            "centered": bool(bias_correction if centered is None else centered), "lut": lut,
            "relu_off": float(relu_off)}


def resolve_options(algorithm: str, bias_correction: bool, options: Any) -> tuple[tuple[str, Any], ...]:
    """A codec's options as a sorted tuple of ``(name, value)`` with every default filled in
    (``gptq``: :func:`gptq_options`; ``rtn``/``awkm`` take none).

    Raises:
        InvalidArgumentError: an unknown option name or a bad value (names it).
    """
    given = dict(options.items() if isinstance(options, Mapping) else tuple(options or ()))
    if algorithm == "affine":  # a batchnorm layer's joint fit (quantizer.algorithms.affine)
        unknown = sorted(set(given) - {"window"})
        if unknown:
            raise InvalidArgumentError(f"unknown affine option(s) {unknown}; valid: window")
        window = given.get("window", DEFAULT_WINDOW)
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or int(window) < 1:
            raise InvalidArgumentError(f"affine option window must be an integer >= 1, got {window!r}")
        return (("window", int(window)),)
    if algorithm != "gptq":
        if given:
            raise InvalidArgumentError(f"algorithm {algorithm!r} takes no options, got {sorted(given)}")
        return ()
    unknown = sorted(set(given) - set(_GPTQ_KEYS))
    if unknown:
        raise InvalidArgumentError(f"unknown gptq option(s) {unknown}; valid: {', '.join(_GPTQ_KEYS)}")
    try:
        opts = gptq_options(bias_correction=bias_correction, **given)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"gptq options {given}: {e}") from None
    return tuple(sorted(opts.items()))


def algorithm_token(algorithm: str, stats: LayerStats | None, *, bias_correction: bool = False, **options) -> str:
    """Stable text identity of (algorithm, options, bias correction, statistics digest): what
    :meth:`quantizer.Codec.token` appends after ``mode:nbits|``."""
    if algorithm not in CODEC_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "rtn" and not bias_correction:
        return "rtn"  # today's behaviour: no statistics involved
    opts = resolve_options(algorithm, bias_correction, options)
    inner = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in opts)
    digest = stats.digest() if stats is not None else "none"
    return f"{algorithm}({inner}){'+bc' if bias_correction else ''}@{digest}"


def _centered_diag(stats: LayerStats) -> np.ndarray:
    """``diag(H - n m m^T)`` clipped at 0, without forming the centred ``H``."""
    return np.maximum(stats.diag() - float(stats.rows) * stats.mean ** 2, 0.0)


def quantize_calibrated(weights: np.ndarray, mode: str, nbits: int, stats: LayerStats, *, algorithm: str = "gptq",
                        bias_correction: bool = False, **options) -> tuple[QuantizedTensor, np.ndarray | None]:
    """Quantize one stored weight tensor (output channels on axis 0) with ``algorithm``.

    Returns the :class:`QuantizedTensor` (``.encoded()`` is what quantizer writes) and, with
    ``bias_correction``, the float64 delta to add to the layer's bias (None otherwise).
    ``options`` are :func:`gptq_options`' (``gptq`` only); ``awkm`` is round-to-nearest on the
    activation-weighted k-means LUT (its element weights are the centred diagonal with bias
    correction, the plain one without).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    opts = gptq_options(bias_correction=bias_correction, **options)
    table = None
    weighted = algorithm == "awkm" or (algorithm == "gptq" and mode == "kmeans_lut" and opts["lut"] == "weighted")
    if weighted:
        if mode != "kmeans_lut":
            raise ValueError(f"activation-weighted k-means is a kmeans_lut LUT, not {mode!r}")
        diag = _centered_diag(stats) if opts["centered"] else stats
        table, _ = activation_weighted_lut(weights, diag, nbits)
    if algorithm == "gptq":
        res = gptq(weights, stats, mode, nbits, lut=table, damp=opts["damp"], block_size=opts["block_size"],
                   act_order=opts["act_order"], centered=opts["centered"])
    else:
        res = rtn(weights, mode, nbits, lut=table)
        res.info["algorithm"] = algorithm
    delta = _bias_delta(weights, res.dequantize(), stats) if bias_correction else None
    if algorithm == "gptq" and opts["relu_off"] > 0:
        res, delta, _ = off_channels(weights, res, delta, stats, opts["relu_off"])
    res.info["bias_correction"] = bool(bias_correction)
    res.info["token"] = algorithm_token(algorithm, stats, bias_correction=bias_correction,
                                        **(options if algorithm == "gptq" else {}))
    return res, delta


def decode_encoded(enc: Any, shape: tuple[int, ...], channel_axis: int = 0) -> np.ndarray:
    """The float32 weights an n-bit :class:`~quantizer.codecs.Encoded` decodes to (``shape``)."""
    count = int(np.prod(shape))
    q = unpack_bits(enc.data, enc.nbits, count)
    if enc.encoding == "lut":
        return np.asarray(enc.lut, np.float32)[q].reshape(shape)
    if enc.encoding != "linear":
        raise ValueError(f"decode_encoded decodes n-bit encodings, not {enc.encoding!r}")
    scale, bias = np.asarray(enc.scale, np.float32), np.asarray(enc.bias, np.float32)
    view = q.reshape(int(np.prod(shape[:channel_axis])), shape[channel_axis], -1) if len(shape) > 1 else q.reshape(1, 1, -1)
    out = view.astype(np.float32) * scale.reshape(1, -1, 1) + bias.reshape(1, -1, 1)
    return out.astype(np.float32).reshape(shape)


def encode_calibrated(codec: Any, values: np.ndarray, shape: tuple[int, ...], channel_axis: int = 0,
                      where: str = "") -> Any:
    """Encode ``values`` (float32, ``prod(shape)`` of them) with a calibration-aware ``codec``.

    Returns :class:`~quantizer.codecs.Encoded` with ``bias_delta`` set when the codec corrects
    the bias and ``info`` the algorithm's record.

    Raises:
        InvalidArgumentError: the tensor does not have its output channels on axis 0, or the
            codec's statistics do not fit its shape (names the tensor).
    """
    from ..codecs import Codec

    who = where or "tensor"
    if codec.algorithm == "affine":
        raise InvalidArgumentError(
            f"{who}: an affine codec chooses a batchnorm layer's four vectors together; it is applied by "
            "quantizer.apply_plan (a plan entry per field), not encoded on one tensor")
    stats = codec.stats
    if channel_axis != 0 or len(shape) < 2:
        raise InvalidArgumentError(
            f"{who} (shape {shape}, channel axis {channel_axis}) is not a weight matrix with output channels on "
            "axis 0: calibration-aware algorithms handle convolution, innerProduct and batchedMatmul weights")
    columns = int(np.prod(shape[1:]))
    if columns != stats.columns or shape[0] % stats.groups:
        raise InvalidArgumentError(
            f"{who}: calibration statistics of {stats.groups} group(s) x {stats.columns} input columns do not fit "
            f"weights of shape {shape} ({columns} columns per output channel): were they collected on another model?")
    weights = np.asarray(values, dtype=np.float32).reshape(shape)
    if codec.algorithm == "rtn":  # today's bytes, plus the bias delta
        plain = Codec(codec.mode, codec.nbits, codec.lut_function).encode(weights, shape, channel_axis, where=where)
        delta = _bias_delta(weights, decode_encoded(plain, shape), stats)
        return dataclasses.replace(plain, bias_delta=delta, info={"algorithm": "rtn", "bias_correction": True})
    if not np.isfinite(weights).all():
        raise InvalidWeightsError(f"{who} has NaN or infinite weights: fix or retrain the model before quantizing")
    opts = dict(codec.options)
    res, delta = quantize_calibrated(weights, codec.mode, codec.nbits, stats, algorithm=codec.algorithm,
                                     bias_correction=codec.bias_correction, **opts)
    info = {k: v for k, v in res.info.items() if k != "token"}
    return dataclasses.replace(res.encoded(), bias_delta=delta, info=info)
