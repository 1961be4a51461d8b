"""Decode and write ``WeightParams`` values, fast: the one weight decoder and the protobuf writers.

:func:`decode_weights` turns any stored encoding — ``floatValue``,
``float16Value``, n-bit ``rawValue`` with linear (per-channel or length-1
scale/bias, any channel axis) or lookup-table quantization, and
``int8RawValue`` — into a float32 array of the logical shape (``exact=True``:
linear dequantization in float64, rounded once, as coremltools does).

Writers replace a WeightParams' payload without the slow element-by-element
protobuf path (``extend`` on a repeated field costs ~0.5 µs per value; merging
a packed field costs ~7 ns).

>>> import numpy as np
>>> from quantizer.coremltools_quiet import coremltools
>>> wp = coremltools().proto.NeuralNetwork_pb2.WeightParams()
>>> write_float32(wp, np.array([1.5, -2.0], np.float32))
>>> decode_weights(wp, (2,)).tolist()
[1.5, -2.0]
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import InvalidWeightsError
from .packing import unpack_bits

__all__ = ["decode_weights", "write_float32", "write_float16", "write_quantized", "clear_payload"]

_FLOAT_VALUE_TAG = b"\x0a"  # field 1 (floatValue), wire type 2 (packed)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def clear_payload(wp: Any) -> None:
    """Remove every value encoding and quantization parameters from ``wp``."""
    wp.ClearField("floatValue")
    wp.ClearField("float16Value")
    wp.ClearField("rawValue")
    wp.ClearField("int8RawValue")
    wp.ClearField("quantization")


def write_float32(wp: Any, values: np.ndarray) -> None:
    """Store ``values`` (any shape; row-major) as ``floatValue``."""
    clear_payload(wp)
    raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    if raw:
        wp.MergeFromString(_FLOAT_VALUE_TAG + _varint(len(raw)) + raw)


def write_float16(wp: Any, values: np.ndarray) -> None:
    """Store ``values`` as little-endian IEEE half precision in ``float16Value``."""
    clear_payload(wp)
    wp.float16Value = np.ascontiguousarray(values, dtype="<f2").tobytes()


def write_quantized(
    wp: Any,
    packed: bytes,
    nbits: int,
    *,
    scale: Sequence[float] | np.ndarray | None = None,
    bias: Sequence[float] | np.ndarray | None = None,
    lut: Sequence[float] | np.ndarray | None = None,
) -> None:
    """Store packed n-bit values with linear (scale, bias) or LUT parameters."""
    clear_payload(wp)
    wp.rawValue = packed
    q = wp.quantization
    q.numberOfBits = int(nbits)
    if lut is not None:
        q.lookupTableQuantization.floatValue.extend(np.asarray(lut, dtype=np.float64).ravel().tolist())
    else:
        q.linearQuantization.scale.extend(np.asarray(scale, dtype=np.float64).ravel().tolist())
        q.linearQuantization.bias.extend(np.asarray(bias, dtype=np.float64).ravel().tolist())


def decode_weights(
    wp: Any, shape: Sequence[int], channel_axis: int = 0, *, name: str = "weights", exact: bool = False
) -> np.ndarray:
    """Float32 values of ``wp`` reshaped to ``shape``, whatever their encoding.

    ``channel_axis`` is the axis a per-channel linear scale/bias runs along
    (1 for deconvolution weights). A length-1 scale/bias applies to every
    channel. ``name`` is used in error messages (e.g. ``"conv1.weights"``).

    ``exact=False`` (the default, for inference) dequantizes linear and int8
    values in float32. ``exact=True`` computes ``q * scale + bias`` in float64
    and rounds once to float32, as coremltools' ``_dequantize_wp`` does (what
    :func:`quantizer.apply_plan` uses to requantize or dequantize a tensor); the
    two can differ in the last bit. Other encodings decode the same either way.
    """
    shape = tuple(int(s) for s in shape)
    count = int(np.prod(shape)) if shape else 1
    ftype = np.float64 if exact else np.float32
    if len(wp.floatValue):
        arr = np.array(wp.floatValue, dtype=np.float32)
    elif wp.float16Value:
        if len(wp.float16Value) % 2:
            raise InvalidWeightsError(f"{name}: float16Value has an odd number of bytes ({len(wp.float16Value)})")
        arr = np.frombuffer(wp.float16Value, dtype="<f2").astype(np.float32)
    elif wp.int8RawValue:
        q = np.frombuffer(wp.int8RawValue, dtype=np.int8).astype(ftype)
        if q.size != count:
            raise InvalidWeightsError(f"{name}: int8RawValue holds {q.size} values, expected {count} (shape {shape})")
        lq = wp.quantization.linearQuantization
        scale = np.asarray(lq.scale, dtype=ftype) if len(lq.scale) else np.ones(1, ftype)
        return _per_channel(q, shape, channel_axis, scale, np.zeros(1, ftype), name)
    elif wp.rawValue:
        return _decode_raw(wp, shape, count, channel_axis, name, ftype)
    else:
        arr = np.zeros(0, dtype=np.float32)
    if arr.size != count:
        raise InvalidWeightsError(f"{name}: holds {arr.size} values but its layer expects {count} (shape {shape})")
    return arr.reshape(shape)


def _decode_raw(wp: Any, shape: tuple[int, ...], count: int, axis: int, name: str, ftype: type) -> np.ndarray:
    q = wp.quantization
    kind = q.WhichOneof("QuantizationType")
    nbits = q.numberOfBits
    if kind is None:
        # Unquantized rawValue: float32 bytes.
        if len(wp.rawValue) == 4 * count:
            return np.frombuffer(wp.rawValue, dtype="<f4").astype(np.float32).reshape(shape)
        raise InvalidWeightsError(f"{name}: rawValue without quantization parameters and of unexpected length {len(wp.rawValue)}")
    if not 1 <= nbits <= 8:
        raise InvalidWeightsError(f"{name}: quantization.numberOfBits is {nbits}; Core ML allows 1 to 8")
    if len(wp.rawValue) < -(-count * nbits // 8):
        raise InvalidWeightsError(
            f"{name}: rawValue holds {len(wp.rawValue)} bytes, too few for {count} values of {nbits} bits"
        )
    idx = unpack_bits(wp.rawValue, nbits, count)
    if kind == "lookupTableQuantization":
        lut = np.asarray(q.lookupTableQuantization.floatValue, dtype=np.float32)
        if lut.size != 1 << nbits:
            raise InvalidWeightsError(f"{name}: lookup table has {lut.size} entries; {nbits}-bit needs {1 << nbits}")
        return lut[idx].reshape(shape)
    lq = q.linearQuantization
    scale = np.asarray(lq.scale, dtype=ftype)
    bias = np.asarray(lq.bias, dtype=ftype) if len(lq.bias) else np.zeros(1, ftype)
    return _per_channel(idx.astype(ftype), shape, axis, scale, bias, name)


def _per_channel(q: np.ndarray, shape: tuple[int, ...], axis: int, scale: np.ndarray, bias: np.ndarray, name: str) -> np.ndarray:
    """``q * scale + bias`` with a length-1 or per-channel (on ``axis``) scale and bias, computed in
    the inputs' dtype and rounded once to float32."""
    q = q.reshape(shape)
    if scale.size == 1 and bias.size == 1:
        return (q * scale[0] + bias[0]).astype(np.float32)
    if len(shape) == 0 or scale.size != shape[axis] or bias.size not in (1, scale.size):
        raise InvalidWeightsError(
            f"{name}: {scale.size} scales / {bias.size} biases do not match {shape[axis] if shape else 0} "
            f"channels on axis {axis} of shape {shape}"
        )
    bshape = [1] * len(shape)
    bshape[axis] = scale.size
    offset = bias.reshape(bshape) if bias.size > 1 else bias[0]
    return (q * scale.reshape(bshape) + offset).astype(np.float32)
