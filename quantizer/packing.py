"""Vectorised n-bit packing in Core ML's bit order.

Core ML stores n-bit weights (1 <= n <= 8) as one continuous big-endian bit
stream: each value is written MSB first as ``nbits`` bits, every 8 stream bits
form a byte whose first bit is bit 7, and the stream is zero-padded to a whole
byte (at least one byte). This is exactly ``np.packbits`` of the values' low
``nbits`` bits; we compute it without materialising one byte per bit.

>>> import numpy as np
>>> pack_bits(np.array([1, 2, 3], np.uint8), 2).hex()
'6c'
>>> pack_bits(np.array([5, 1, 7], np.uint8), 3).hex()
'a780'
>>> unpack_bits(bytes.fromhex('a780'), 3, 3).tolist()
[5, 1, 7]
"""
from __future__ import annotations

import numpy as np

from .errors import InvalidArgumentError, InvalidWeightsError

__all__ = ["pack_bits", "unpack_bits", "packed_length"]

_CHUNK = 1 << 22  # values per block, bounds temporary memory


def packed_length(count: int, nbits: int) -> int:
    """Bytes Core ML uses for ``count`` values of ``nbits`` bits."""
    return max(1, -(-count * nbits // 8))


def _check_nbits(nbits: int) -> None:
    if not isinstance(nbits, (int, np.integer)) or not 1 <= nbits <= 8:
        raise InvalidArgumentError(f"nbits must be an integer from 1 to 8 for bit packing, got {nbits!r}")


def pack_bits(values: np.ndarray, nbits: int) -> bytes:
    """Pack unsigned integers < 2**nbits into Core ML's n-bit byte stream."""
    _check_nbits(nbits)
    q = np.ascontiguousarray(values, dtype=np.uint8).ravel()
    n = q.size
    if n and nbits < 8 and int(q.max()) >> nbits:
        raise InvalidArgumentError(f"values to pack must be below 2**{nbits}={1 << nbits}, got {int(q.max())}")
    if nbits == 8:
        return q.tobytes() if n else b"\x00"
    out = bytearray()
    for start in range(0, max(n, 1), _CHUNK * 8):
        block = q[start : start + _CHUNK * 8]
        m = -(-block.size // 8)
        padded = np.zeros(m * 8, dtype=np.uint64)
        padded[: block.size] = block
        groups = padded.reshape(m, 8)
        acc = np.zeros(m, dtype=np.uint64)
        for i in range(8):  # 8 values -> 8*nbits bits (<= 64) in one word
            acc |= groups[:, i] << np.uint64(nbits * (7 - i))
        bytes_ = np.empty((m, nbits), dtype=np.uint8)
        for j in range(nbits):
            bytes_[:, j] = (acc >> np.uint64(8 * (nbits - 1 - j))) & np.uint64(0xFF)
        out += bytes_.tobytes()
    size = packed_length(n, nbits)
    return bytes(out[:size]).ljust(size, b"\x00")


def unpack_bits(data: bytes | np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Unpack ``count`` values of ``nbits`` bits from Core ML's byte stream (uint8 array)."""
    _check_nbits(nbits)
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    need = -(-count * nbits // 8)
    if buf.size < need:
        raise InvalidWeightsError(
            f"packed weights hold {buf.size} bytes but {count} values of {nbits} bits need {need}"
        )
    if nbits == 8:
        return buf[:count].copy()
    out = np.empty(count, dtype=np.uint8)
    mask = np.uint64((1 << nbits) - 1)
    step = _CHUNK * 8  # values per block (a multiple of 8)
    for start in range(0, count, step):
        stop = min(count, start + step)
        m = -(-(stop - start) // 8)
        b0 = start // 8 * nbits
        raw = np.zeros(m * nbits, dtype=np.uint64)
        chunk = buf[b0 : b0 + m * nbits]
        raw[: chunk.size] = chunk
        raw = raw.reshape(m, nbits)
        acc = np.zeros(m, dtype=np.uint64)
        for j in range(nbits):
            acc |= raw[:, j] << np.uint64(8 * (nbits - 1 - j))
        vals = np.empty((m, 8), dtype=np.uint8)
        for i in range(8):
            vals[:, i] = (acc >> np.uint64(nbits * (7 - i))) & mask
        out[start:stop] = vals.ravel()[: stop - start]
    return out
