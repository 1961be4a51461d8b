"""Stable text identities of LUT functions and the values they capture.

A ``custom_lut`` codec's identity (:meth:`quantizer.Codec.token`, and so a
plan's digest) includes its LUT function. :func:`function_token` gives two
functions the same token only when they compute the same thing as far as can
be told (same code, same captured values), so equal settings are recognised
across processes and different ones are never confused.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any, Callable

import numpy as np

__all__ = ["function_token", "value_token"]


def value_token(value: Any) -> str:
    """Text identity of a value captured by a LUT function (arrays by content hash)."""
    if isinstance(value, np.ndarray):
        return f"ndarray{value.shape}{value.dtype}:{hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]}"
    if callable(value) and not isinstance(value, type):
        return function_token(value)
    return repr(value)


def function_token(fn: Callable) -> str:
    """A stable text identity for a LUT function.

    Two functions get the same token only if they compute the same thing as far
    as we can tell: same qualified name, same code, and the same captured values
    (defaults, closure cells, ``functools.partial`` arguments, a callable
    object's attributes). An object whose state cannot be read gets a token
    unique to that object, so it can lose deduplication but never be confused
    with another function.
    """
    if isinstance(fn, functools.partial):
        args = ",".join(value_token(a) for a in fn.args)
        kwargs = ",".join(f"{k}={value_token(v)}" for k, v in sorted(fn.keywords.items()))
        return f"partial({function_token(fn.func)};{args};{kwargs})"
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    h = hashlib.sha256()
    code = getattr(fn, "__code__", None)
    state: list[str] = []
    if code is None:  # a callable object: its class's __call__ and its attributes
        call = getattr(type(fn), "__call__", None)
        code = getattr(call, "__code__", None)
        try:
            state.append(",".join(f"{k}={value_token(v)}" for k, v in sorted(vars(fn).items())))
        except TypeError:  # no __dict__ (builtins, slots): identity only
            state.append(f"id={id(fn)}")
    else:
        state.append(repr(getattr(fn, "__defaults__", None)))
        state.append(repr(getattr(fn, "__kwdefaults__", None)))
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                state.append(value_token(cell.cell_contents))
            except ValueError:  # empty cell
                state.append("<empty>")
    if code is not None:
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode())
        h.update(repr(code.co_names).encode())
    else:
        state.append(f"id={id(fn)}")
    for part in state:
        h.update(part.encode())
    return f"{name}#{h.hexdigest()[:16]}"
