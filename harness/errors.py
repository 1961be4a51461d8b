"""Exceptions raised by :mod:`harness` for problems a user can cause.

Each message names the file, layer, input, or config key that is wrong and says
what to do. The CLI prints these as one line without a traceback.
"""
from __future__ import annotations

from quantizer.errors import QuantizerError


class QsweepError(Exception):
    """Base class of every error the harness raises on purpose."""


class ConfigError(QsweepError, ValueError):
    """A config value is wrong (names the key)."""


class DataError(QsweepError, ValueError):
    """Test data does not fit the model (names the input and the expected shape)."""


class ExecutorError(QsweepError):
    """An executor cannot be built or run for this model."""


class UnsupportedLayerError(ExecutorError):
    """The numpy executor has no implementation for a layer type (names layer and type)."""


class StorageError(QsweepError):
    """The study storage cannot be reached or opened (names the URL)."""


class StorageUnavailableError(StorageError):
    """The study database stayed away longer than ``storage.retry_s`` in the middle of a run."""


class OutputError(QsweepError):
    """A file of the run directory cannot be written (names the file and the reason)."""


USER_ERRORS = (QsweepError, QuantizerError)
