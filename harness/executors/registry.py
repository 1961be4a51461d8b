"""The op registry: Core ML layer type name -> :class:`~harness.executors.ops.base.Op` subclass.

Keys are the names ``NeuralNetworkLayer.WhichOneof("layer")`` returns
(``"innerProduct"``, ``"convolution"``, ``"softmaxND"``...). Op modules in
:mod:`harness.executors.ops` register themselves with :func:`register`; every
module in that package is imported by :func:`load_ops`, so adding a file is
enough to add ops.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, TypeVar

from harness.executors.ops.base import Op

OPS: dict[str, type[Op]] = {}
_T = TypeVar("_T", bound=type[Op])
_loaded = False


def register(*layer_types: str) -> Callable[[_T], _T]:
    """Class decorator: make ``cls`` the implementation of the given layer types.

    Example::

        @register("relu6Like", "otherName")
        class MyOp(Op):
            def run(self, x):
                return x
    """

    def deco(cls: _T) -> _T:
        for t in layer_types:
            if t in OPS and OPS[t] is not cls:
                raise RuntimeError(f"layer type {t!r} registered twice: {OPS[t].__module__}.{OPS[t].__name__} and {cls.__module__}.{cls.__name__}")
            OPS[t] = cls
        return cls

    return deco


def load_ops() -> dict[str, type[Op]]:
    """Import every module of :mod:`harness.executors.ops` (once) and return the registry."""
    global _loaded
    if not _loaded:
        import harness.executors.ops as pkg

        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name != "base" and not info.name.startswith("_"):
                importlib.import_module(f"{pkg.__name__}.{info.name}")
        _loaded = True
    return OPS


def supported_layer_types() -> list[str]:
    """Sorted names of the layer types the numpy executor can run."""
    return sorted(load_ops())
