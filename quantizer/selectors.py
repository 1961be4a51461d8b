"""Layer selectors: which layers (and which of their tensors) to quantize.

The protocol is coremltools': an object with ``do_quantize(layer,
weight_param=None) -> bool``. :func:`quantizer.build_plan` asks it once per
layer (``weight_param`` omitted; rejecting a ``loop``/``branch`` skips its
bodies) and once more with ``weight_param="bias"`` for the bias of a
convolution, innerProduct or batchedMatmul. coremltools' own selector
instances work unchanged.

These classes keep coremltools' meaning and fix its mistakes:

* :class:`AdvancedQuantizedLayerSelector` -- coremltools tests
  ``layer_type == "innerProduct" or "batchedMatmul"`` (always true), so every
  non-convolution layer is treated as an innerProduct and asking about any
  field but ``weights``/``bias`` raises. Here the weight-count and
  kernel-channel thresholds apply to convolutions only, bias fields are
  governed by ``"bias"`` in ``skip_layer_types`` for convolution, innerProduct
  and batchedMatmul, and other layers are quantized unless their type is
  skipped. A deconvolution's weight count is its real one
  (``Cin * Cout/groups * kH * kW``; coremltools multiplies by ``Cout``).
* :class:`MatrixMultiplyLayerSelector` -- coremltools never stores
  ``include_layers_with_names`` when it is given (AttributeError later); here
  it is honoured.

>>> sel = AdvancedQuantizedLayerSelector(skip_layer_types=["batchnorm", "depthwiseConv"],
...                                      minimum_conv_kernel_channels=4, minimum_conv_weight_count=4096)
>>> sel.skip_layer_types
('batchnorm', 'depthwiseConv')
"""
from __future__ import annotations

from typing import Any, Iterable

from .errors import InvalidArgumentError
from .tensors import QUANTIZABLE_LAYER_TYPES

__all__ = [
    "SKIPPABLE_LAYER_TYPES",
    "QuantizedLayerSelector",
    "AdvancedQuantizedLayerSelector",
    "MatrixMultiplyLayerSelector",
]

#: Layer types coremltools' ``QuantizedLayerSelector`` admits, in its order: the layers
#: holding weights it quantizes, ``depthwiseConv`` (a name it accepts, for a convolution
#: with ``kernelChannels == 1`` and ``nGroups > 1``) and the containers. These are the
#: values ``AdvancedQuantizedLayerSelector(skip_layer_types=...)`` accepts (``"bias"``
#: also keeps the bias tensors of convolution/innerProduct/batchedMatmul in float).
SKIPPABLE_LAYER_TYPES = QUANTIZABLE_LAYER_TYPES + ("depthwiseConv", "loop", "branch")
QUANTIZABLE_TYPES = frozenset(SKIPPABLE_LAYER_TYPES)


def _layer_type(layer: Any) -> str | None:
    return layer.WhichOneof("layer")


class QuantizedLayerSelector:
    """Base selector: quantize every layer type that holds quantizable weights.

    Subclass and override :meth:`do_quantize` for custom rules::

        class SkipDense2(QuantizedLayerSelector):
            def do_quantize(self, layer, weight_param=None):
                return super().do_quantize(layer) and layer.name != "dense_2"
    """

    def __init__(self) -> None:
        self.quantizable_layer_types = set(QUANTIZABLE_TYPES)

    def do_quantize(self, layer: Any, weight_param: str | None = None, **kwargs: Any) -> bool:
        """True if ``layer`` (or its ``weight_param`` tensor) should be quantized."""
        return _layer_type(layer) in self.quantizable_layer_types

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_count(name: str, value: Any, *, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative integer, got {value!r}")
    return value


class AdvancedQuantizedLayerSelector(QuantizedLayerSelector):
    """Skip layer types, and convolutions that are small.

    ``skip_layer_types``: layer types never quantized (``"depthwiseConv"`` for
    depthwise convolutions; ``"bias"`` also keeps the bias tensors of
    convolution/innerProduct/batchedMatmul in float). A convolution's weights
    are quantized only with at least ``minimum_conv_kernel_channels`` kernel
    channels and ``minimum_conv_weight_count`` weights; a convolution whose
    weights are skipped is skipped whole, as in coremltools.
    """

    def __init__(
        self,
        skip_layer_types: Iterable[str] = (),
        minimum_conv_kernel_channels: int = 4,
        minimum_conv_weight_count: int = 4096,
    ) -> None:
        super().__init__()
        if isinstance(skip_layer_types, str):
            skip_layer_types = [skip_layer_types]
        skip = tuple(skip_layer_types)
        invalid = [t for t in skip if t not in self.quantizable_layer_types]
        if invalid:
            raise InvalidArgumentError(
                f"skip_layer_types {invalid} are not quantizable layer types; use some of: "
                + ", ".join(sorted(self.quantizable_layer_types))
            )
        self.skip_layer_types = skip
        self.minimum_conv_kernel_channels = _check_count("minimum_conv_kernel_channels", minimum_conv_kernel_channels)
        self.minimum_conv_weight_count = _check_count("minimum_conv_weight_count", minimum_conv_weight_count)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(skip_layer_types={list(self.skip_layer_types)}, "
            f"minimum_conv_kernel_channels={self.minimum_conv_kernel_channels}, "
            f"minimum_conv_weight_count={self.minimum_conv_weight_count})"
        )

    def do_quantize(self, layer: Any, weight_param: str | None = None, **kwargs: Any) -> bool:
        if not super().do_quantize(layer):
            return False
        kind = _layer_type(layer)
        if kind in self.skip_layer_types:
            return False
        if kind == "convolution":
            if weight_param == "bias":
                return "bias" not in self.skip_layer_types
            conv = layer.convolution
            kc, groups = conv.kernelChannels, max(1, conv.nGroups)
            if "depthwiseConv" in self.skip_layer_types and kc == 1 and groups > 1:
                return False
            kh, kw = (list(conv.kernelSize) + [3, 3])[:2] if len(conv.kernelSize) else (3, 3)
            cout = conv.outputChannels // groups if conv.isDeconvolution else conv.outputChannels
            count = cout * kc * kh * kw
            return kc >= self.minimum_conv_kernel_channels and count >= self.minimum_conv_weight_count
        if kind in ("innerProduct", "batchedMatmul") and weight_param == "bias":
            return "bias" not in self.skip_layer_types
        return True


class MatrixMultiplyLayerSelector(QuantizedLayerSelector):
    """Select innerProduct / batchedMatmul layers (with a constant weight matrix) by size and name.

    A layer is selected when every given criterion holds: at least
    ``minimum_weight_count`` weights, input/output channels within the given
    bounds, and (if ``include_layers_with_names`` is given) its name listed.
    Loop and branch layers are selected so their bodies are searched; every
    other layer type is not.
    """

    def __init__(
        self,
        minimum_weight_count: int = 1,
        minimum_input_channels: int = 1,
        minimum_output_channels: int = 1,
        maximum_input_channels: int | None = None,
        maximum_output_channels: int | None = None,
        include_layers_with_names: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        self.minimum_weight_count = _check_count("minimum_weight_count", minimum_weight_count)
        self.minimum_input_channels = _check_count("minimum_input_channels", minimum_input_channels)
        self.minimum_output_channels = _check_count("minimum_output_channels", minimum_output_channels)
        self.maximum_input_channels = _check_count("maximum_input_channels", maximum_input_channels, allow_none=True)
        self.maximum_output_channels = _check_count("maximum_output_channels", maximum_output_channels, allow_none=True)
        names = [] if include_layers_with_names is None else include_layers_with_names
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise InvalidArgumentError("include_layers_with_names must be a list/tuple of layer-name strings")
        self.include_layers_with_names = list(names)

    def do_quantize(self, layer: Any, weight_param: str | None = None, **kwargs: Any) -> bool:
        if not super().do_quantize(layer):
            return False
        kind = _layer_type(layer)
        if kind in ("loop", "branch"):
            return True
        if kind not in ("innerProduct", "batchedMatmul"):
            return False
        if weight_param == "bias":
            return True
        if kind == "innerProduct":
            ic, oc = layer.innerProduct.inputChannels, layer.innerProduct.outputChannels
        else:
            ic, oc = layer.batchedMatmul.weightMatrixFirstDimension, layer.batchedMatmul.weightMatrixSecondDimension
        if ic * oc < self.minimum_weight_count or ic < self.minimum_input_channels or oc < self.minimum_output_channels:
            return False
        if self.maximum_input_channels is not None and ic > self.maximum_input_channels:
            return False
        if self.maximum_output_channels is not None and oc > self.maximum_output_channels:
            return False
        if self.include_layers_with_names and layer.name not in self.include_layers_with_names:
            return False
        return True
