"""Layer selection: which tensors a global setting quantizes, asked of a selector layer by layer.

:func:`build_plan` compiles a global setting -- ``(nbits, mode, selector)``,
the arguments of coremltools' ``quantize_weights`` -- into a
:class:`~quantizer.QuantPlan`, selecting tensors exactly as coremltools does
(:func:`select_tensors`). The selector protocol and the selector classes are
in :mod:`quantizer.selectors`.

With ``algorithm`` (``gptq``, ``awkm``) or ``bias_correction`` and the
layers' calibration statistics, each weight matrix an algorithm handles gets a
calibration-aware codec; the rest fall back to round-to-nearest with a note
(:mod:`quantizer.algorithms.support`).

>>> import quantizer                                               # doctest: +SKIP
>>> plan = quantizer.build_plan("model.mlmodel", 4, "kmeans_lut",
...                             selector=quantizer.AdvancedQuantizedLayerSelector())  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from .algorithms.support import bias_field, calibrated_codec, check_request
from .codecs import Codec
from .errors import InvalidArgumentError, UnsupportedModelError
from .fusion import fuse_in_place, should_fuse
from .io import fresh_spec, source_spec
from .plan import Key, QuantPlan
from .selectors import QuantizedLayerSelector
from .tensors import encoding_of, get_weight_params, layer_slots
from .walk import model_networks, sub_networks

__all__ = ["build_plan", "select_tensors", "check_selector"]


def _ask(selector: Any, layer: Any, **kwargs: Any) -> bool:
    try:
        return bool(selector.do_quantize(layer, **kwargs))
    except Exception as exc:
        what = f" for weight_param={kwargs['weight_param']!r}" if kwargs else ""
        raise InvalidArgumentError(
            f"selector {type(selector).__name__}.do_quantize failed on layer '{layer.name}' "
            f"(type {layer.WhichOneof('layer')}){what}: {type(exc).__name__}: {exc}"
        ) from exc


def check_selector(selector: Any) -> Any:
    """The selector to use: the default :class:`~quantizer.selectors.QuantizedLayerSelector` for
    ``None``; any object with a callable ``do_quantize(layer, weight_param=None)`` otherwise."""
    if selector is None:
        return QuantizedLayerSelector()
    if not callable(getattr(selector, "do_quantize", None)):
        raise InvalidArgumentError(
            f"selector must have a do_quantize(layer, weight_param=None) method (like coremltools' "
            f"QuantizedLayerSelector); got {type(selector).__name__}"
        )
    return selector


def select_tensors(spec: Any, codec: Codec, selector: Any = None, *, algorithm: str = "rtn",
                   bias_correction: bool = False, options: Mapping[str, Any] | None = None,
                   calibration: Mapping[str, Any] | None = None) -> QuantPlan:
    """The plan coremltools' ``_quantize_nn_spec`` would carry out on ``spec`` (already fused).

    Walks each network in order; a layer the selector rejects is skipped
    (a rejected loop/branch skips its bodies); conv/innerProduct/batchedMatmul
    biases are also asked with ``weight_param="bias"``. Quantizing codecs and
    fp16 take float32 tensors only (as coremltools, which leaves float16 and
    already-quantized tensors alone); ``dequantization`` takes every tensor
    that is not float32. A calibration-aware request gives each selected tensor
    :func:`~quantizer.algorithms.support.calibrated_codec`; with bias correction
    the bias of a corrected layer is left out (it is stored float32, corrected).
    """
    selector = check_selector(selector)
    calibrated = check_request(algorithm, bias_correction, calibration)
    entries: dict[Key, Codec] = {}
    decided: dict[Key, bool] = {}
    corrected: set[Key] = set()  # biases a bias-correcting codec changes

    def visit(nn: Any) -> None:
        for layer in nn.layers:
            if not _ask(selector, layer):
                for slot in layer_slots(layer):
                    _note(decided, (layer.name, slot.field), False)
                continue
            for sub in sub_networks(layer):
                visit(sub)
            for slot in layer_slots(layer):
                key = (layer.name, slot.field)
                wp = get_weight_params(layer, slot.field)
                enc, _ = encoding_of(wp)
                wanted = slot.quantizable and enc != "empty" and (
                    enc != "float32" if codec.mode == "dequantization" else enc == "float32"
                )
                if wanted and slot.selector_param is not None:
                    wanted = _ask(selector, layer, weight_param=slot.selector_param)
                _note(decided, key, wanted)
                if wanted:
                    entries[key] = codec if not calibrated else calibrated_codec(
                        layer, slot.field, codec, algorithm=algorithm, bias_correction=bias_correction,
                        options=options, calibration=calibration, shape=slot.shape)
                    if entries[key].bias_correction:
                        corrected.add((layer.name, bias_field(layer, slot.field)))

    for _, nn in model_networks(spec):
        visit(nn)
    if bias_correction:  # a corrected bias stays float32: re-quantizing it would undo the correction
        entries = {k: c for k, c in entries.items() if k not in corrected}
    return QuantPlan(entries)


def _note(decided: dict[Key, bool], key: Key, wanted: bool) -> None:
    if decided.setdefault(key, wanted) != wanted:
        raise UnsupportedModelError(
            f"two layers are named '{key[0]}' and the selector quantizes field '{key[1]}' of one but not "
            "the other; plans address tensors by layer name: give the layers unique names"
        )


def build_plan(
    model: Any,
    nbits: int | None,
    quantization_mode: str = "linear",
    selector: Any = None,
    lut_function: Callable | None = None,
    *,
    fuse: bool = True,
    algorithm: str = "rtn",
    bias_correction: bool = False,
    algorithm_options: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> QuantPlan:
    """Compile a global setting into a per-tensor :class:`QuantPlan`.

    Same arguments and tensor selection as coremltools' ``quantize_weights``.
    Below 16 bits (and with ``fuse=True``) the plan addresses the tensors of
    the *fused* model -- the one :func:`~quantizer.apply_plan` quantizes -- so a
    convolution that gains a bias from a folded batchnorm gets an entry for it.

    ``algorithm`` (``rtn``, ``gptq``, ``awkm``), ``bias_correction`` and
    ``algorithm_options`` (gptq: ``damp``, ``block_size``, ``act_order``,
    ``centered``, ``lut``) choose how the stored values are computed; anything
    but plain ``rtn`` needs ``calibration``: layer name -> statistics of the
    layer's inputs (:class:`quantizer.algorithms.LayerStats`, e.g. from
    ``harness.calibration.collect_stats``). The statistics' digests are part of
    the plan's digest.
    """
    codec = Codec(quantization_mode, nbits, lut_function)
    check_request(algorithm, bias_correction, calibration)
    spec, owned = source_spec(model)
    if should_fuse(spec, fuse=fuse, quantizes=codec.quantizes):
        spec = spec if owned else fresh_spec(spec)
        fuse_in_place(spec)
    return select_tensors(spec, codec, selector, algorithm=algorithm, bias_correction=bias_correction,
                          options=algorithm_options, calibration=calibration)
