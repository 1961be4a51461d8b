"""``quantize_weights``: the drop-in for coremltools' function of the same name.

>>> import quantizer                                                   # doctest: +SKIP
>>> small = quantizer.quantize_weights("model.mlmodel", 8)              # linear, per channel
>>> lut4 = quantizer.quantize_weights(small_model, 4, "kmeans_lut")     # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Callable

from .codecs import Codec, check_nbits, normalize_mode
from .errors import InvalidArgumentError
from .plan import (
    CodecCache,
    apply_copying,
    apply_in_place,
    as_kind_of,
    bump_spec_version,
    codec_cache,
    fresh_spec,
    fusion_possible,
    select_tensors,
    source_spec,
)

__all__ = ["quantize_weights"]


def quantize_weights(
    model: Any,
    nbits: int | None,
    quantization_mode: str = "linear",
    selector: Any = None,
    lut_function: Callable | None = None,
    fuse: bool = True,
    *,
    cache: CodecCache | None = None,
) -> Any:
    """Quantize the weights of a Core ML neuralnetwork model; return a new model.

    Same meaning as coremltools' ``quantization_utils.quantize_weights``, and the
    same bytes for ``linear`` (1-8 bits), ``linear_symmetric`` (8), ``linear_lut``
    and 16-bit ``fp16`` on models coremltools handles correctly.

    Parameters
    ----------
    model:
        Path to an ``.mlmodel``, a ``Model_pb2.Model`` spec, or a coremltools
        ``MLModel``. It is never modified. An ``MLModel`` gives an ``MLModel``
        back (as coremltools does); a path or a spec gives a spec (save it with
        :func:`quantizer.save`).
    nbits:
        16 (float16) or 1-8. Ignored (may be ``None``) for ``dequantization``.
    quantization_mode:
        ``linear`` (per-channel scale and bias), ``linear_symmetric`` (2-8 bits;
        coremltools: 8 only), ``kmeans_lut`` (alias ``kmeans``), ``linear_lut``,
        ``custom_lut`` (needs ``lut_function``) or ``dequantization`` (every
        quantized or float16 tensor back to float32).
    selector:
        Which layers to quantize: a :class:`~quantizer.QuantizedLayerSelector`
        (default: every layer with weights), an
        :class:`~quantizer.AdvancedQuantizedLayerSelector`, a
        :class:`~quantizer.MatrixMultiplyLayerSelector`, or any object with a
        coremltools-style ``do_quantize(layer, weight_param=None)`` -- including
        coremltools' own selector instances.
    lut_function:
        For ``custom_lut``: ``lut_function(nbits, weights) -> (lut, indices)``;
        ``weights`` is a float32 array of the tensor's shape (as coremltools passes it), ``lut`` must have
        ``2**nbits`` entries and ``indices`` one integer per weight.
    fuse:
        Below 16 bits, first fold batchnorm/scale/bias layers into the
        convolution/innerProduct before them (:func:`quantizer.fuse`), as
        coremltools does -- correctly where coremltools 9 crashes or is wrong.
    cache:
        The :class:`~quantizer.plan.CodecCache` to use (default: the
        process-wide ``quantizer.codec_cache``).

    Only float32 tensors are quantized (as coremltools: float16 or already
    quantized tensors are left alone; use :func:`quantizer.apply_plan` to
    requantize them). The specification version is raised to 2 (fp16) or 3
    (n-bit) if lower.
    """
    mode = normalize_mode(quantization_mode)
    if mode == "dequantization":
        codec = Codec("dequantization", lut_function=lut_function)
    else:
        codec = Codec(mode, check_nbits(nbits), lut_function)
    cache = codec_cache if cache is None else cache
    src, owned = source_spec(model)
    if codec.nbits == 16 and src.isUpdatable:
        raise InvalidArgumentError(
            "updatable models cannot be quantized to float16 (Core ML trains them in float32): "
            "quantize a non-updatable copy, or keep float32"
        )
    fusing = fuse and codec.quantizes and fusion_possible(src)
    if owned or fusing:
        spec = src if owned else fresh_spec(src)
        if fusing:
            from .fuse import fuse_in_place

            fuse_in_place(spec)
        apply_in_place(spec, select_tensors(spec, codec, selector), cache=cache)
    else:  # nothing to fold: select on the source, copy it applying the plan (no float copy)
        spec = apply_copying(src, select_tensors(src, codec, selector), cache=cache)
    if codec.mode != "dequantization":
        bump_spec_version(spec, codec.min_spec_version)
    return as_kind_of(model, spec)
