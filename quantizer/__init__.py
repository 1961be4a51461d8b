"""quantizer — compress the weights of Core ML neuralnetwork models.

A fast, dependency-light reimplementation of coremltools'
``quantize_weights`` (same file format, same API shape) plus a per-tensor plan
API for sweeps. Knows the Core ML protobuf and numpy, nothing of Hydra or
Optuna.

>>> import quantizer
>>> spec = quantizer.load("model.mlmodel")                      # doctest: +SKIP
>>> quantizer.weight_table(spec)                                # doctest: +SKIP
>>> small = quantizer.quantize_weights(spec, 4, "kmeans_lut")   # doctest: +SKIP
>>> quantizer.save(small, "model_4bit.mlmodel")                 # doctest: +SKIP

The names below (``quantizer.__all__``) are the public API. Lower-level parts
live in public submodules: :mod:`quantizer.walk` (networks and layers, loop and
branch bodies included), :mod:`quantizer.tensors` (weight slots of a layer:
``layer_weights``, ``get_weight_params``, ``iter_weight_slots``),
:mod:`quantizer.weightparams` (the protobuf writers), :mod:`quantizer.packing`
(n-bit packing), :mod:`quantizer.io` (``parse`` and model copying),
:mod:`quantizer.fusion`, :mod:`quantizer.codecs` and
:mod:`quantizer.coremltools_quiet` (coremltools, imported without its noise).
Calibration-aware algorithms (GPTQ, bias correction, activation-weighted
k-means) and their layer statistics are in :mod:`quantizer.algorithms`
(``quantize_weights(..., algorithm="gptq", calibration=stats)``).
"""
from .api import quantize_weights
from .apply import apply_plan
from .cache import CodecCache, codec_cache
from .codecs import QUANTIZATION_MODES, VALID_NBITS, Codec, codec_label
from .errors import (
    InvalidArgumentError,
    InvalidWeightsError,
    ModelLoadError,
    QuantizerError,
    UnsupportedModelError,
)
from .fusion import fuse
from .io import load, model_size, save
from .plan import QuantPlan
from .selection import build_plan
from .selectors import (
    SKIPPABLE_LAYER_TYPES,
    AdvancedQuantizedLayerSelector,
    MatrixMultiplyLayerSelector,
    QuantizedLayerSelector,
)
from .tensors import QUANTIZABLE_LAYER_TYPES, WeightTensor, encoding_label, weight_table, weight_tensors
from .weightparams import decode_weights

__all__ = [
    # models
    "load",
    "save",
    "model_size",
    # the coremltools drop-in
    "quantize_weights",
    "QuantizedLayerSelector",
    "AdvancedQuantizedLayerSelector",
    "MatrixMultiplyLayerSelector",
    # plans
    "QuantPlan",
    "Codec",
    "build_plan",
    "apply_plan",
    "CodecCache",
    "codec_cache",
    "fuse",
    # weight tensors
    "weight_table",
    "weight_tensors",
    "WeightTensor",
    "decode_weights",
    # labels and constants
    "codec_label",
    "encoding_label",
    "QUANTIZATION_MODES",
    "VALID_NBITS",
    "SKIPPABLE_LAYER_TYPES",
    "QUANTIZABLE_LAYER_TYPES",
    # errors
    "QuantizerError",
    "ModelLoadError",
    "UnsupportedModelError",
    "InvalidArgumentError",
    "InvalidWeightsError",
]

__version__ = "0.1.0"
