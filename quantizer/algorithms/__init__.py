"""Calibration-aware weight quantization for Core ML neuralnetwork models.

- :mod:`quantizer.algorithms.stats`: :class:`LayerStats` (input Gram matrix + mean per layer, with the
  matricization convention) and :class:`GramAccumulator`;
- :mod:`quantizer.algorithms.patches`: convolution inputs as im2col patch rows;
- :mod:`quantizer.algorithms.gptq`: :func:`gptq` for ``linear``, ``linear_symmetric``, ``linear_lut``, ``kmeans_lut``;
- :mod:`quantizer.algorithms.bias_correction`: :func:`bias_correction`;
- :mod:`quantizer.algorithms.weighted_kmeans`: activation-weighted k-means LUTs;
- :mod:`quantizer.algorithms.affine`: a batchnorm layer's four vectors chosen together (the ``affine`` codec);
- :mod:`quantizer.algorithms.grids`: the codecs' grids, :class:`QuantizedTensor`, :func:`rtn`;
- :mod:`quantizer.algorithms.calibrated`: :func:`quantize_calibrated` (one call per tensor) and
  :func:`algorithm_token` (the codec-identity text for plan digests and cache keys).

Pure numpy/scipy; reads ``quantizer`` (codecs, kmeans) only.
"""
from .bias_correction import bias_correction
from .calibrated import ALGORITHMS, algorithm_token, gptq_options, quantize_calibrated
from .grids import QuantizedTensor, rtn
from .gptq import gptq
from .patches import ConvGeometry, conv_patch_rows, hwc_to_chw_order, same_padding
from .stats import GramAccumulator, LayerStats, block_size_for, dense_rows, matricize
from .weighted_kmeans import activation_weighted_lut, element_weights, weighted_kmeans_1d, weighted_kmeans_lut

__all__ = [
    "LayerStats", "GramAccumulator", "block_size_for", "matricize", "dense_rows",
    "ConvGeometry", "conv_patch_rows", "hwc_to_chw_order", "same_padding",
    "gptq", "bias_correction", "rtn", "QuantizedTensor",
    "quantize_calibrated", "algorithm_token", "gptq_options", "ALGORITHMS",
    "weighted_kmeans_1d", "weighted_kmeans_lut", "activation_weighted_lut", "element_weights",
]
