"""Codec names: the modes, bit widths and algorithms, and the one text label of a codec.

:func:`codec_label` is the only place a codec's label is spelled
(``kmeans_lut-4bit``, ``fp16``, ``linear-4bit-gptq-bc``); :func:`normalize_mode`
and :func:`check_nbits` validate user input with messages that list what is
valid. Re-exported by :mod:`quantizer.codecs`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["MODES", "MODE_ALIASES", "QUANTIZATION_MODES", "VALID_NBITS", "LUT_MODES", "ALGORITHMS",
           "CODEC_ALGORITHMS", "ALGORITHM_MODES", "normalize_mode", "check_nbits", "algorithm_suffix", "codec_label"]

#: The modes that compress a tensor to n bits, as coremltools names them (at 16 bits any of
#: them means float16, as in coremltools).
QUANTIZATION_MODES = ("linear", "linear_symmetric", "kmeans_lut", "linear_lut", "custom_lut")
#: Every codec mode: fp16, the n-bit modes, and dequantization (``kmeans`` is an alias of ``kmeans_lut``).
MODES = ("fp16",) + QUANTIZATION_MODES + ("dequantization",)
MODE_ALIASES = {"kmeans": "kmeans_lut"}
#: Valid bit widths: 16 (float16) and 1..8.
VALID_NBITS = (16, 8, 7, 6, 5, 4, 3, 2, 1)
LUT_MODES = ("kmeans_lut", "linear_lut", "custom_lut")
#: How a codec chooses the stored values: ``rtn`` (round-to-nearest, plain k-means: no calibration),
#: ``gptq`` (linear, linear_symmetric, linear_lut, kmeans_lut) and ``awkm`` (activation-weighted
#: k-means, kmeans_lut only); see :mod:`quantizer.algorithms`.
ALGORITHMS = ("rtn", "gptq", "awkm")
#: What a single codec may carry: the plan-wide algorithms plus ``affine`` -- the joint per-channel fit of a
#: batchnorm layer's four parameter vectors (:mod:`quantizer.algorithms.affine`), which a plan gives the
#: batchnorm layers of any calibration-aware request; it is not a plan-wide or search algorithm.
CODEC_ALGORITHMS = ALGORITHMS + ("affine",)
#: The modes each calibration-aware algorithm handles.
ALGORITHM_MODES = {"gptq": ("linear", "linear_symmetric", "linear_lut", "kmeans_lut"), "awkm": ("kmeans_lut",),
                   "affine": ("linear", "linear_symmetric", "linear_lut", "kmeans_lut")}


def normalize_mode(mode: Any) -> str:
    """Canonical mode name; raises :class:`InvalidArgumentError` listing the valid ones."""
    if isinstance(mode, str):
        m = MODE_ALIASES.get(mode, mode)
        if m in MODES:
            return m
    valid = ", ".join(repr(m) for m in MODES[1:]) + " (or 'kmeans' for kmeans_lut)"
    raise InvalidArgumentError(f"unknown quantization_mode {mode!r}: use one of {valid}")


def check_nbits(nbits: Any) -> int:
    """Validate ``nbits`` (1-8 or 16) and return it as an int."""
    if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)) or int(nbits) not in VALID_NBITS:
        raise InvalidArgumentError(
            f"nbits must be 16 (float16) or an integer from 1 to 8, got {nbits!r}"
        )
    return int(nbits)


def algorithm_suffix(algorithm: str = "rtn", bias_correction: bool = False) -> str:
    """The label suffix of a codec's algorithm: ``""`` (rtn), ``-gptq``, ``-awkm``, ``-affine``, plus ``-bc``
    with bias correction (file-name safe).

    >>> algorithm_suffix(), algorithm_suffix("gptq", True), algorithm_suffix("rtn", True)
    ('', '-gptq-bc', '-bc')
    """
    if algorithm not in CODEC_ALGORITHMS:
        raise InvalidArgumentError(f"unknown algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    return ("" if algorithm == "rtn" else f"-{algorithm}") + ("-bc" if bias_correction else "")


def codec_label(mode: str, nbits: int | None = None, algorithm: str = "rtn", bias_correction: bool = False) -> str:
    """The one text label of a codec: ``fp16`` for 16 bits (whatever the mode, as in
    coremltools), ``<mode>-<n>bit`` otherwise, ``dequantization`` for that mode; a
    calibration-aware algorithm adds :func:`algorithm_suffix` (``linear-4bit-gptq-bc``).

    >>> codec_label("kmeans", 4), codec_label("linear", 16), codec_label("linear_symmetric", 8)
    ('kmeans_lut-4bit', 'fp16', 'linear_symmetric-8bit')
    >>> codec_label("linear", 4, "gptq", True)
    'linear-4bit-gptq-bc'
    """
    suffix = algorithm_suffix(algorithm, bias_correction)
    if suffix:
        return codec_label(mode, nbits) + suffix
    mode = normalize_mode(mode)
    if mode == "dequantization":
        return mode
    if mode == "fp16" and nbits is None:
        return "fp16"
    nbits = check_nbits(nbits)
    if mode == "fp16" and nbits != 16:
        raise InvalidArgumentError(f"mode 'fp16' stores 16 bits, got nbits={nbits!r}")
    return "fp16" if nbits == 16 else f"{mode}-{nbits}bit"
