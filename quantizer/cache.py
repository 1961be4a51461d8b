"""The codec cache: encoded tensors kept by ``(tensor digest, codec)``, bounded in bytes.

Encoding a tensor is a pure function of (tensor values, shape, channel axis,
codec), so results are kept in a bounded LRU :class:`CodecCache`: a sweep
quantizes each tensor once per codec, not once per trial.

>>> import quantizer                                               # doctest: +SKIP
>>> quantizer.codec_cache.stats()                                  # doctest: +SKIP
{'hits': 0, 'misses': 7, ...}
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .codecs import Codec, Encoded

__all__ = ["CodecCache", "codec_cache", "tensor_digest"]


def tensor_digest(values: np.ndarray, shape: tuple[int, ...], channel_axis: int) -> str:
    """sha256 of a float32 tensor's bytes, its shape and channel axis."""
    h = hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").data)
    h.update(repr((tuple(int(s) for s in shape), int(channel_axis))).encode())
    return h.hexdigest()


@dataclass
class _Stats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class CodecCache:
    """LRU cache of encoded tensors keyed by ``(tensor digest, codec)``, bounded in bytes.

    >>> cache = CodecCache(max_bytes=1 << 20)
    >>> cache.stats()["entries"]
    0
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self._data: OrderedDict[tuple[str, Codec], Encoded] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._stats = _Stats()
        self.max_bytes = int(max_bytes)

    def get_or_encode(self, digest: str, codec: Codec, encode: Callable[[], Encoded]) -> Encoded:
        """The cached encoding, or ``encode()`` stored (if it fits) and returned."""
        key = (digest, codec)
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                self._stats.hits += 1
                return hit
            self._stats.misses += 1
        value = encode()
        size = value.nbytes
        if size > self.max_bytes:
            return value
        with self._lock:
            if key not in self._data:
                self._data[key] = value
                self._bytes += size
            while self._bytes > self.max_bytes and self._data:
                _, old = self._data.popitem(last=False)
                self._bytes -= old.nbytes
                self._stats.evictions += 1
        return value

    def clear(self) -> None:
        """Drop every entry and reset the statistics."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self._stats = _Stats()

    def resize(self, max_bytes: int) -> None:
        """Change the memory bound (evicting least recently used entries as needed)."""
        with self._lock:
            self.max_bytes = int(max_bytes)
            while self._bytes > self.max_bytes and self._data:
                _, old = self._data.popitem(last=False)
                self._bytes -= old.nbytes
                self._stats.evictions += 1

    def stats(self) -> dict[str, int]:
        """``hits``, ``misses``, ``evictions``, ``entries``, ``bytes``, ``max_bytes``."""
        with self._lock:
            return {
                "hits": self._stats.hits,
                "misses": self._stats.misses,
                "evictions": self._stats.evictions,
                "entries": len(self._data),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
            }


#: The process-wide cache :func:`apply_plan` and :func:`~quantizer.quantize_weights` use by default.
codec_cache = CodecCache()
