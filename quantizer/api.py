"""``quantize_weights``: the drop-in for coremltools' function of the same name.

Same positional order as coremltools 9's
``quantization_utils.quantize_weights(full_precision_model, nbits,
quantization_mode="linear", sample_data=None, **kwargs)``, so a call written for
coremltools works unchanged. It builds a plan (:func:`quantizer.build_plan`) and
applies it (:func:`quantizer.apply_plan`): there is one quantizing path. (A model
with something to fold is folded once first, so selection and application share
the folded copy instead of folding twice.)

>>> import quantizer                                                   # doctest: +SKIP
>>> small = quantizer.quantize_weights("model.mlmodel", 8)              # doctest: +SKIP
>>> lut4 = quantizer.quantize_weights(small_model, 4, "kmeans_lut")     # doctest: +SKIP
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Mapping

from .apply import apply_plan, bump_spec_version
from .cache import CodecCache
from .codecs import Codec, check_nbits, normalize_mode
from .errors import InvalidArgumentError
from .fusion import fuse as fuse_model, should_fuse
from .io import as_kind_of, source_spec
from .selection import build_plan

__all__ = ["quantize_weights"]


def quantize_weights(
    full_precision_model: Any,
    nbits: int | None,
    quantization_mode: str = "linear",
    sample_data: Any = None,
    *,
    selector: Any = None,
    lut_function: Callable | None = None,
    fuse: bool = True,
    cache: CodecCache | None = None,
    algorithm: str = "rtn",
    calibration: Mapping[str, Any] | None = None,
    bias_correction: bool = False,
    algorithm_options: Mapping[str, Any] | None = None,
) -> Any:
    """Quantize the weights of a Core ML neuralnetwork model; return a new model.

    Same meaning and positional order as coremltools'
    ``quantization_utils.quantize_weights``, and the same bytes for ``linear``
    (1-8 bits), ``linear_symmetric`` (8), ``linear_lut`` and 16-bit ``fp16`` on
    models coremltools handles correctly.

    Parameters
    ----------
    full_precision_model:
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
    sample_data:
        Accepted for coremltools compatibility and **changes nothing**.
        coremltools uses it for one thing only: on macOS 10.14+ it runs the
        float and the quantized model on these samples (a list of input dicts,
        or a folder of images for a one-image-input model) and *prints* how
        much their predictions differ; the quantized model is the same with or
        without it. quantizer runs no model, so a ``sample_data`` that is given
        raises a ``UserWarning`` saying it was not used (measure accuracy with
        ``qsweep`` or ``harness.evaluate`` instead). A value that is neither a
        list of dicts nor a folder path raises :class:`InvalidArgumentError`
        -- in particular a selector passed fourth, as in earlier versions of
        this function, where the fourth parameter was ``selector``.
    selector:
        Keyword only (a coremltools ``**kwargs`` entry). Which layers to
        quantize: a :class:`~quantizer.QuantizedLayerSelector` (default: every
        layer with weights), an :class:`~quantizer.AdvancedQuantizedLayerSelector`,
        a :class:`~quantizer.MatrixMultiplyLayerSelector`, or any object with a
        coremltools-style ``do_quantize(layer, weight_param=None)`` -- including
        coremltools' own selector instances.
    lut_function:
        Keyword only (a coremltools ``**kwargs`` entry). For ``custom_lut``:
        ``lut_function(nbits, weights) -> (lut, indices)``; ``weights`` is a
        float32 array of the tensor's shape (as coremltools passes it), ``lut``
        must have ``2**nbits`` entries and ``indices`` one integer per weight.
    fuse:
        Below 16 bits, first fold batchnorm/scale/bias layers into the
        convolution/innerProduct before them (:func:`quantizer.fuse`), as
        coremltools does -- correctly where coremltools 9 crashes or is wrong.
    cache:
        The :class:`~quantizer.CodecCache` to use (default: the process-wide
        ``quantizer.codec_cache``).
    algorithm:
        How the stored values are chosen (not in coremltools): ``rtn``
        (round-to-nearest / plain k-means, the default: coremltools' bytes),
        ``gptq`` (GPTQ error feedback through each layer's input Gram matrix;
        linear, linear_symmetric, linear_lut, kmeans_lut) or ``awkm``
        (activation-weighted k-means; kmeans_lut). Layers an algorithm cannot
        handle (recurrent gates, embeddings, deconvolution) are rounded to
        nearest, with a logged note.
    calibration:
        Layer name -> :class:`quantizer.algorithms.LayerStats` of the layer's
        inputs, e.g. ``harness.calibration.collect_stats(model, feeds)`` on a
        few hundred unlabelled samples (never the test set). Required by
        ``gptq``, ``awkm`` and ``bias_correction``.
    bias_correction:
        Shift each output channel's bias by the mean error the quantized
        weights introduce on the calibration inputs, ``b += (W - W_hat) E[x]``
        (a layer without a bias gets one), after any algorithm.
    algorithm_options:
        ``gptq`` options: ``damp`` (0.01), ``block_size`` (128), ``act_order``
        (True), ``centered`` (default: ``bias_correction``), ``lut``
        (``plain`` or ``weighted`` for kmeans_lut).

    Only float32 tensors are quantized (as coremltools: float16 or already
    quantized tensors are left alone; use :func:`quantizer.apply_plan` to
    requantize them). The specification version is raised to 2 (fp16) or 3
    (n-bit) if lower, even when nothing is selected (as coremltools does).
    Any other keyword argument raises ``TypeError``.
    """
    _check_sample_data(sample_data)
    mode = normalize_mode(quantization_mode)
    if mode == "dequantization":
        codec = Codec("dequantization", lut_function=lut_function)
    else:
        codec = Codec(mode, check_nbits(nbits), lut_function)
    src, _ = source_spec(full_precision_model)
    if codec.nbits == 16 and src.isUpdatable:
        raise InvalidArgumentError(
            "updatable models cannot be quantized to float16 (Core ML trains them in float32): "
            "quantize a non-updatable copy, or keep float32"
        )
    if should_fuse(src, fuse=fuse, quantizes=codec.quantizes):
        src = fuse_model(src)  # fold once: the plan is built on, and applied to, this private copy
    plan = build_plan(src, codec.nbits, codec.mode, selector, codec.lut_function, fuse=False, algorithm=algorithm,
                      bias_correction=bias_correction, algorithm_options=algorithm_options, calibration=calibration)
    spec = apply_plan(src, plan, fuse=False, cache=cache)
    bump_spec_version(spec, codec.min_spec_version)
    return as_kind_of(full_precision_model, spec)


def _check_sample_data(sample_data: Any) -> None:
    """Warn that ``sample_data`` is unused; raise for a value coremltools would reject."""
    if sample_data is None:
        return
    if callable(getattr(sample_data, "do_quantize", None)):
        raise InvalidArgumentError(
            f"the fourth argument of quantize_weights is sample_data (coremltools' order), but a selector "
            f"({type(sample_data).__name__}) was given: pass it as selector=..."
        )
    is_list = isinstance(sample_data, list) and all(isinstance(d, dict) for d in sample_data)
    if not (is_list or isinstance(sample_data, (str, os.PathLike))):
        raise InvalidArgumentError(
            f"sample_data must be a list of input dicts or the path of a folder of images (as in coremltools), "
            f"got {type(sample_data).__name__}"
        )
    warnings.warn(
        "quantize_weights ignores sample_data: coremltools only uses it to print how far the quantized "
        "model's predictions are from the float model's (on macOS); the quantized model is the same "
        "without it. Measure accuracy with qsweep or harness.evaluate instead.",
        UserWarning,
        stacklevel=3,
    )
