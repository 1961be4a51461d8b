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
"""
from .errors import (
    InvalidArgumentError,
    InvalidWeightsError,
    ModelLoadError,
    QuantizerError,
    UnsupportedModelError,
)
from .io import iter_layers, load, model_size, neural_network, neural_networks, parse, save, sub_networks
from .packing import pack_bits, packed_length, unpack_bits
from .tensors import (
    QUANTIZABLE_LAYER_TYPES,
    WeightTensor,
    get_weight_params,
    iter_weight_slots,
    layer_weights,
    weight_table,
    weight_tensors,
)
from .weightparams import decode_weights, write_float16, write_float32, write_quantized

# Codecs, plans, selectors and fusion (modules added by the codec/plan work).
try:  # pragma: no cover - exercised once those modules exist
    from .plan import Codec, CodecCache, QuantPlan, apply_plan, build_plan, codec_cache  # noqa: F401
except ImportError:  # plan module not written yet
    pass
try:  # pragma: no cover
    from .api import quantize_weights  # noqa: F401
except ImportError:
    pass
try:  # pragma: no cover
    from .selectors import (  # noqa: F401
        AdvancedQuantizedLayerSelector,
        MatrixMultiplyLayerSelector,
        QuantizedLayerSelector,
    )
except ImportError:
    pass
try:  # pragma: no cover
    from .fuse import fuse  # noqa: F401
except ImportError:
    pass

__version__ = "0.1.0"
