"""Codecs: how one weight tensor is compressed, and the math that does it.

A :class:`Codec` is a small immutable value -- ``(mode, nbits, lut_function)``
-- and :meth:`Codec.encode` turns a float32 tensor into an :class:`Encoded`
tensor (the bytes and parameters a ``WeightParams`` stores). The math mirrors
coremltools 9's ``quantization_utils`` exactly, so the bytes are identical:

- ``fp16``: IEEE half precision (``float16Value``).
- ``linear``: per output channel, ``scale = (max - min) / (2**n - 1)``,
  ``bias = min``, ``q = round((w - min) * (1 / scale))``, in float32 exactly as
  coremltools computes it on this stack (see :func:`linear_quantize`).
- ``linear_symmetric``: ``scale = max|w| / (2**(n-1) - 1)``,
  ``bias = -2**(n-1) * scale``, ``q = round((w - bias) / scale)``; 2 to 8 bits
  (coremltools allows only 8).
- ``linear_lut``: one LUT ``arange(2**n) * scale + bias`` over the whole tensor.
- ``kmeans_lut`` (alias ``kmeans``): a k-means LUT (:mod:`quantizer.kmeans`).
- ``custom_lut``: ``lut_function(nbits, weights) -> (lut, indices)``.
- ``dequantization``: back to float32 (applied by :mod:`quantizer.apply`, which
  decodes whatever encoding the tensor has).

How the stored values are *chosen* is the codec's ``algorithm``: ``rtn``
(round-to-nearest / plain k-means: everything above), ``gptq`` (error
feedback through the layer's input Gram matrix) or ``awkm``
(activation-weighted k-means), optionally with ``bias_correction``. Every
algorithm but plain ``rtn`` reads the layer's calibration statistics
(:class:`quantizer.algorithms.LayerStats`), and their digest is part of the
codec's identity (:meth:`Codec.token`); see :mod:`quantizer.algorithms`.

Deliberate differences from coremltools (it is wrong in these cases): a channel
whose scale is tiny but not zero (coremltools maps every value of a channel to
``q = 0`` when ``scale <= 1e-6``, e.g. an 8-bit channel with a range below
2.6e-4) is quantized properly; NaN/Inf weights raise instead of being written;
fp16 rejects only values that overflow half precision (|w| >= 65520) where
coremltools rejects |w| >= 65504.

>>> import numpy as np
>>> enc = Codec("linear", 2).encode(np.array([[0, 1, 2, 3]], np.float32), (1, 4))
>>> enc.data.hex(), enc.scale.tolist(), enc.bias.tolist()
('1b', [1.0], [0.0])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import InvalidArgumentError, InvalidWeightsError
from .fingerprint import function_token
from .kmeans import kmeans_lut
from .labels import (
    ALGORITHM_MODES, ALGORITHMS, CODEC_ALGORITHMS, LUT_MODES, MODE_ALIASES, MODES, QUANTIZATION_MODES, VALID_NBITS,
    algorithm_suffix, check_nbits, codec_label, normalize_mode,
)
from .packing import pack_bits
from .weightparams import clear_payload, write_float32, write_quantized

__all__ = [
    "MODES",
    "MODE_ALIASES",
    "QUANTIZATION_MODES",
    "VALID_NBITS",
    "ALGORITHMS",
    "Codec",
    "codec_label",
    "Encoded",
    "normalize_mode",
    "check_nbits",
    "linear_quantize",
    "linear_lut",
    "fp16_bytes",
    "pack",
    "validate_custom_lut",
]

_FP16_OVERFLOW = 65520.0  # the smallest magnitude float16 rounds to infinity
_CHUNK = 1 << 22  # elements per block in the linear math (bounds temporary memory)


@dataclass(frozen=True)
class Codec:
    """How to compress one weight tensor: ``(mode, nbits, lut_function)`` and how the values are
    chosen (``algorithm``, ``bias_correction``, ``options``, the layer's ``stats``).

    Frozen and hashable. ``nbits=16`` with any quantizing mode is ``fp16``;
    ``dequantization`` has no nbits. ``lut_function`` is only for
    ``custom_lut`` (required there). A calibration-aware codec (``algorithm``
    other than ``rtn``, or ``bias_correction``) needs an n-bit mode and the
    layer's :class:`~quantizer.algorithms.LayerStats` as ``stats``; equality,
    the hash and :meth:`token` include the algorithm, its resolved options and
    ``stats_digest`` (never the arrays). ``note`` says why a requested
    algorithm fell back to ``rtn`` (not part of the identity).

    >>> Codec("linear", 16) == Codec("fp16")
    True
    >>> Codec("kmeans", 4)
    Codec(mode='kmeans_lut', nbits=4)
    """

    mode: str
    nbits: int | None = None
    lut_function: Callable | None = field(default=None, repr=False)
    algorithm: str = "rtn"
    bias_correction: bool = False
    options: Any = ()
    stats: Any = field(default=None, compare=False, repr=False)
    stats_digest: str | None = field(default=None, repr=False)
    note: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        mode = normalize_mode(self.mode)
        nbits = self.nbits
        fn = self.lut_function
        if mode == "dequantization":
            nbits, fn_allowed = None, False
        elif mode == "fp16":
            if nbits not in (None, 16):
                raise InvalidArgumentError(f"mode 'fp16' stores 16 bits, got nbits={nbits!r}")
            nbits, fn_allowed = 16, False
        else:
            if nbits is None:
                raise InvalidArgumentError(f"mode {mode!r} needs nbits (1 to 8, or 16 for float16)")
            nbits = check_nbits(nbits)
            if nbits == 16:  # coremltools: 16 bits means float16 whatever the mode
                mode, fn, fn_allowed = "fp16", None, False
            else:
                fn_allowed = mode == "custom_lut"
        if mode == "linear_symmetric" and nbits == 1:
            raise InvalidArgumentError(
                "linear_symmetric needs at least 2 bits (1 bit leaves no level besides -scale*1): "
                "use nbits 2-8, or 'linear'/'kmeans_lut' for 1 bit"
            )
        if mode == "custom_lut":
            if fn is None:
                raise InvalidArgumentError(
                    "quantization_mode 'custom_lut' needs lut_function(nbits, weights) -> (lut, indices)"
                )
            if not callable(fn):
                raise InvalidArgumentError(f"lut_function must be callable, got {type(fn).__name__}")
        elif fn is not None and not fn_allowed:
            raise InvalidArgumentError(
                f"lut_function is only used by quantization_mode 'custom_lut', not {mode!r}: drop it or "
                "switch the mode"
            )
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "nbits", nbits)
        object.__setattr__(self, "lut_function", fn)
        self._check_algorithm()

    def _check_algorithm(self) -> None:
        algo, bc = self.algorithm, self.bias_correction
        if algo not in CODEC_ALGORITHMS:
            raise InvalidArgumentError(f"unknown algorithm {algo!r}: use one of {', '.join(ALGORITHMS)}")
        if algo == "affine" and bc:
            raise InvalidArgumentError("algorithm 'affine' fits a batchnorm layer's effective bias itself: it takes "
                                       "no bias_correction")
        if not isinstance(bc, (bool, np.bool_)):
            raise InvalidArgumentError(f"bias_correction must be True or False, got {bc!r}")
        object.__setattr__(self, "bias_correction", bool(bc))
        if not self.calibrated:
            if self.options or self.stats is not None or self.stats_digest is not None:
                raise InvalidArgumentError("options and stats are for calibration-aware codecs (algorithm gptq or "
                                           "awkm, or bias_correction=True); plain rtn takes neither")
            object.__setattr__(self, "options", ())
            return
        if not self.quantizes or self.mode == "dequantization":
            raise InvalidArgumentError(f"algorithm {algo!r}{' with bias correction' if bc else ''} needs an n-bit "
                                       f"mode (1-8 bits); {self.label} is not quantized")
        modes = ALGORITHM_MODES.get(algo)
        if modes is not None and self.mode not in modes:
            raise InvalidArgumentError(f"algorithm {algo!r} handles the modes {', '.join(modes)}, not {self.mode!r}")
        if self.stats is None or not callable(getattr(self.stats, "digest", None)):
            raise InvalidArgumentError(f"{self.label}{algorithm_suffix(algo, bc)} needs the layer's calibration "
                                       "statistics (a quantizer.algorithms.LayerStats) as stats")
        from .algorithms.calibrated import resolve_options  # the algorithms package imports this module

        object.__setattr__(self, "options", resolve_options(algo, bc, self.options))
        digest = self.stats.digest()
        if self.stats_digest is not None and self.stats_digest != digest:
            raise InvalidArgumentError(f"stats_digest {self.stats_digest[:12]} does not match the stats given "
                                       f"({digest[:12]})")
        object.__setattr__(self, "stats_digest", digest)

    @property
    def calibrated(self) -> bool:
        """True when the codec reads calibration statistics (gptq, awkm, or bias correction)."""
        return self.algorithm != "rtn" or bool(self.bias_correction)

    # -- identity ---------------------------------------------------------------------------
    def token(self) -> str:
        """Stable text form, e.g. ``linear:8``, ``fp16:16``, ``custom_lut:4:mod.fn#3f2a...``; a
        calibration-aware codec appends ``|gptq(act_order=1,...)+bc@<stats digest>``."""
        base = f"{self.mode}:{self.nbits}" if self.nbits is not None else self.mode
        if self.lut_function is not None:
            base += ":" + function_token(self.lut_function)
        if self.calibrated:
            inner = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in self.options)
            base += f"|{self.algorithm}({inner}){'+bc' if self.bias_correction else ''}@{self.stats_digest}"
        return base

    @property
    def label(self) -> str:
        """:func:`codec_label` of this codec, e.g. ``kmeans_lut-4bit``, ``fp16`` or
        ``linear-4bit-gptq-bc`` (the LUT function, options and statistics are not part of it;
        :meth:`token` is the full identity)."""
        return codec_label(self.mode, self.nbits, self.algorithm, self.bias_correction)

    def __repr__(self) -> str:
        extra = f", lut_function={function_token(self.lut_function)}" if self.lut_function else ""
        nb = f", nbits={self.nbits}" if self.nbits is not None else ""
        if self.calibrated:
            extra += f", algorithm={self.algorithm!r}" + (", bias_correction=True" if self.bias_correction else "")
            extra += f", stats={self.stats_digest[:12]}"
        return f"Codec(mode={self.mode!r}{nb}{extra})"

    @property
    def quantizes(self) -> bool:
        """True for the n-bit modes (below 16 bits), where coremltools fuses layers first."""
        return self.nbits is not None and self.nbits < 16

    @property
    def cacheable(self) -> bool:
        """Worth caching: everything but ``fp16`` and ``dequantization``, whose encoding is a
        single cast -- cheaper than computing the tensor digest a cache lookup needs."""
        return self.mode not in ("fp16", "dequantization")

    @property
    def min_spec_version(self) -> int:
        """Core ML specification version the encoded weights need (fp16: 2, n-bit: 3)."""
        if self.mode == "dequantization":
            return 1
        return 2 if self.nbits == 16 else 3

    # -- the work ---------------------------------------------------------------------------
    def encode(self, values: np.ndarray, shape: tuple[int, ...], channel_axis: int = 0, *, where: str = "") -> "Encoded":
        """Compress float32 ``values`` (any layout with ``prod(shape)`` elements, row-major).

        ``channel_axis`` is the output-channel axis for per-channel linear
        scales (0, or 1 for deconvolution); 1-D tensors are one channel.
        ``where`` names the tensor in error messages (``layer 'fc1' field 'weights'``).
        """
        w = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape)) != w.size:
            raise InvalidWeightsError(
                f"{where or 'tensor'} holds {w.size} values but its shape {shape} needs {int(np.prod(shape))}"
            )
        if self.calibrated:
            from .algorithms.calibrated import encode_calibrated  # the algorithms package imports this module

            return encode_calibrated(self, w, shape, channel_axis, where)
        if self.mode not in ("linear", "linear_symmetric"):  # linear checks its channel min/max instead
            _check_finite(w, where)
        if self.mode == "dequantization":
            return Encoded("float32", 32, w.tobytes())
        if self.mode == "fp16":
            return Encoded("float16", 16, fp16_bytes(w, where))
        n = self.nbits
        if self.mode in ("linear", "linear_symmetric"):
            q, scale, bias = linear_quantize(
                w, n, shape, channel_axis, symmetric=self.mode == "linear_symmetric", where=where
            )
            return Encoded("linear", n, pack(q, n), scale=scale.astype(np.float32), bias=bias.astype(np.float32))
        if self.mode == "linear_lut":
            lut, q = linear_lut(w, n)
        elif self.mode == "kmeans_lut":
            lut, q = kmeans_lut(w, n)
        else:
            lut, q = validate_custom_lut(self.lut_function, n, w, shape, where)
        return Encoded("lut", n, pack(q, n), lut=lut.astype(np.float32))


@dataclass(frozen=True, eq=False)
class Encoded:
    """A tensor in stored form: what to write into a ``WeightParams``.

    ``encoding`` is ``float32`` (``data`` = little-endian float32 bytes),
    ``float16`` (``float16Value``), ``linear`` (``rawValue`` + per-channel
    ``scale``/``bias``) or ``lut`` (``rawValue`` + ``lut``). ``bias_delta``
    (bias-correcting codecs): the float64 per-output-channel delta to add to
    the layer's bias (:func:`quantizer.apply_plan` does); ``info``: what the
    algorithm did (for records).
    """

    encoding: str
    nbits: int
    data: bytes
    scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    lut: np.ndarray | None = None
    bias_delta: np.ndarray | None = None
    info: dict | None = None

    @property
    def nbytes(self) -> int:
        """Memory this value holds (for the cache's bound)."""
        extra = sum(a.nbytes for a in (self.scale, self.bias, self.lut, self.bias_delta) if a is not None)
        return len(self.data) + extra + 200

    def write(self, wp: Any) -> None:
        """Replace the values of WeightParams ``wp`` with this tensor (other fields, such as
        ``isUpdatable``, are kept)."""
        if self.encoding == "float32":
            write_float32(wp, np.frombuffer(self.data, dtype="<f4"))
        elif self.encoding == "float16":
            clear_payload(wp)
            wp.float16Value = self.data
        elif self.encoding == "linear":
            write_quantized(wp, self.data, self.nbits, scale=self.scale, bias=self.bias)
        else:
            write_quantized(wp, self.data, self.nbits, lut=self.lut)


def pack(q: np.ndarray, nbits: int) -> bytes:
    """:func:`quantizer.packing.pack_bits` with fast paths for 1, 2, 4 and 8 bits (values
    already known to be < 2**nbits): whole bytes are assembled from 8/nbits values."""
    q = np.ascontiguousarray(q, dtype=np.uint8).reshape(-1)
    if nbits == 8:
        return q.tobytes() if q.size else b"\x00"
    if nbits == 1:
        return np.packbits(q).tobytes() if q.size else b"\x00"
    if nbits in (2, 4):
        per = 8 // nbits
        pad = -q.size % per
        if pad or not q.size:
            q = np.concatenate((q, np.zeros(pad or per, np.uint8)))
        cols = q.reshape(-1, per)
        out = cols[:, 0] << np.uint8(8 - nbits)
        for i in range(1, per):
            out |= cols[:, i] << np.uint8(8 - nbits * (i + 1))
        return out.tobytes()
    return pack_bits(q, nbits)


def _check_finite(w: np.ndarray, where: str) -> None:
    if w.size and not (np.isfinite(w.min()) and np.isfinite(w.max())):
        bad = ~np.isfinite(w)
        nan, inf = int(np.isnan(w).sum()), int(bad.sum() - np.isnan(w).sum())
        first = int(np.flatnonzero(bad)[0])
        raise InvalidWeightsError(
            f"{where or 'tensor'} has {nan} NaN and {inf} infinite values (first at flat index {first}): "
            "fix or retrain the model before quantizing; these cannot be quantized"
        )


def fp16_bytes(w: np.ndarray, where: str = "") -> bytes:
    """float32 values as little-endian IEEE half bytes (``float16Value``)."""
    w = np.asarray(w, dtype=np.float32)
    if w.size:
        peak = float(max(abs(float(w.min())), abs(float(w.max()))))
        if peak >= _FP16_OVERFLOW:
            raise InvalidWeightsError(
                f"{where or 'tensor'} has a weight of magnitude {peak:g}, beyond float16's range (65504): "
                "keep this tensor in float32 (a plan entry of None) or use an n-bit mode"
            )
    return w.astype("<f2").tobytes()


def _channel_view(w: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """``w`` viewed as ``[pre, C, post]`` with the channels on axis 1 (1-D: one channel)."""
    if len(shape) <= 1:
        return w.reshape(1, 1, -1)
    if not 0 <= axis < len(shape):
        raise InvalidArgumentError(f"channel_axis {axis} is out of range for a tensor of shape {shape}")
    pre = int(np.prod(shape[:axis]))
    return w.reshape(pre, shape[axis], -1)


def _blocks(w3: np.ndarray):
    """Yield (index, block) slices of a [pre, C, post] view, each about _CHUNK elements."""
    pre, c, post = w3.shape
    if pre > 1:
        step = max(1, _CHUNK // max(1, c * post))
        for i in range(0, pre, step):
            yield (slice(i, i + step), slice(None), slice(None))
    elif c > 1:
        step = max(1, _CHUNK // max(1, post))
        for i in range(0, c, step):
            yield (slice(None), slice(i, i + step), slice(None))
    else:
        for i in range(0, post, _CHUNK):
            yield (slice(None), slice(None), slice(i, i + _CHUNK))


def linear_quantize(
    w: np.ndarray, nbits: int, shape: tuple[int, ...], channel_axis: int = 0, *, symmetric: bool = False,
    where: str = "",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """coremltools' ``_quantize_channelwise_linear``: returns ``(q uint8 flat, scale, bias)`` (float32 [C]).

    The arithmetic is float32, as coremltools' is on this stack: it quantizes
    ``np.array(wp.floatValue)``, which protobuf 4+ hands over as a float32 array,
    and numpy 2 keeps ``float32 op python-scalar`` in float32. Computed in
    blocks, so large tensors need no full-size temporaries.
    """
    w32 = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    w3 = _channel_view(w32, shape, channel_axis)
    a = w3.min(axis=(0, 2))
    b = w3.max(axis=(0, 2))
    if not (np.isfinite(a).all() and np.isfinite(b).all()):  # min/max propagate NaN and show Inf
        _check_finite(w32, where)
    if symmetric:
        r = np.maximum(np.abs(a), np.abs(b))
        scale = r / ((1 << nbits) / 2.0 - 1)
        bias = -(1 << nbits) / 2.0 * scale
        mul = None
    else:
        qb = (1 << nbits) - 1
        scale = (b - a) / qb
        bias = a
        mul = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    q3 = np.empty(w3.shape, dtype=np.uint8)
    for sl in _blocks(w3):
        csl = sl[1]
        if symmetric:
            den = scale[csl][None, :, None]
            num = w3[sl] - bias[csl][None, :, None]
            qf = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        else:
            qf = w3[sl] - a[csl][None, :, None]
            qf *= mul[csl][None, :, None]
        np.round(qf, out=qf)
        q3[sl] = qf
    return q3.reshape(-1), scale, bias


def linear_lut(w: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """coremltools' ``_get_linear_lookup_table_and_weight``: ``(lut float64 [2**n], q uint8)``.

    As in coremltools, ``arange(2**n)`` (int64) times the float32 scale promotes
    to float64; the LUT is rounded to float32 when stored.
    """
    w = np.asarray(w, dtype=np.float32).reshape(-1)
    q, scale, bias = linear_quantize(w, nbits, (w.size,), 0)
    lut = np.arange(1 << nbits) * np.float64(scale[0]) + np.float64(bias[0])
    return lut, q


def validate_custom_lut(
    fn: Callable, nbits: int, w: np.ndarray, shape: tuple[int, ...], where: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Call ``fn(nbits, weights)`` as coremltools does (a float32 copy of the weights in the
    tensor's shape) and check what it returns: a LUT of exactly ``2**nbits`` finite values
    (shape ``(2**n,)`` or ``(2**n, 1)``) and one integer index in ``[0, 2**n)`` per weight."""
    k = 1 << nbits
    who = where or "tensor"
    try:
        out = fn(nbits, w.astype(np.float32, copy=True).reshape(shape))
    except Exception as exc:  # the user's function failed: say where
        raise InvalidArgumentError(f"lut_function failed on {who}: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise InvalidArgumentError(f"lut_function must return (lut, indices); on {who} it returned {type(out).__name__}")
    try:
        lut = np.asarray(out[0], dtype=np.float64)
        idx = np.asarray(out[1])
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"lut_function returned non-numeric output on {who}: {exc}") from None
    if lut.shape not in ((k,), (k, 1)):
        raise InvalidArgumentError(
            f"lut_function returned a LUT of shape {lut.shape} on {who}; {nbits}-bit quantization needs "
            f"exactly {k} entries (shape ({k},))"
        )
    lut = lut.reshape(k)
    if not np.isfinite(lut).all():
        raise InvalidArgumentError(f"lut_function returned a LUT with NaN/Inf entries on {who}")
    if idx.size != w.size:
        raise InvalidArgumentError(
            f"lut_function returned {idx.size} indices on {who}, which holds {w.size} weights (shape {shape})"
        )
    idx = idx.reshape(-1)
    if idx.dtype.kind == "f":
        if not (np.isfinite(idx).all() and np.array_equal(idx, np.round(idx))):
            raise InvalidArgumentError(f"lut_function returned non-integer indices on {who}")
    elif idx.dtype.kind not in "iub":
        raise InvalidArgumentError(f"lut_function returned indices of dtype {idx.dtype} on {who}; need integers")
    if idx.size and (idx.min() < 0 or idx.max() >= k):
        raise InvalidArgumentError(
            f"lut_function returned indices in [{idx.min()}, {idx.max()}] on {who}; they must lie in [0, {k - 1}]"
        )
    return lut, idx.astype(np.uint8)
