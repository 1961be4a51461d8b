"""Exceptions raised by :mod:`quantizer` for problems a user can cause.

Every message names the thing that is wrong (file, layer, field, argument) and
says what to do about it.
"""
from __future__ import annotations


class QuantizerError(Exception):
    """Base class of every error :mod:`quantizer` raises on purpose."""


class ModelLoadError(QuantizerError):
    """The model file is missing, unreadable, or not a Core ML model."""


class UnsupportedModelError(QuantizerError):
    """The model is valid Core ML but not a neural network this library handles
    (for example an ``mlProgram``, or a pipeline without a neural network)."""


class InvalidArgumentError(QuantizerError, ValueError):
    """An argument is out of range or of the wrong kind (nbits, mode, selector,
    lut_function, plan entry)."""


class InvalidWeightsError(QuantizerError, ValueError):
    """A weight tensor cannot be processed (NaN/Inf values, inconsistent length)."""
