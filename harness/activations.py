"""Reuse of the float model's activations: a candidate's run starts at its first changed layer.

A sensitivity probe (one layer quantized alone), a mixed-precision candidate whose first units
stay float, or a grid point whose selector keeps the first layers float computes, on every chunk
of the test set, exactly what the float model computes up to its first changed layer. The
:class:`ActivationCache` keeps those blobs -- per chunk (the chunks of
:class:`harness.racing.SampleOrder`, so a stored blob was computed on exactly the batch it
stands for) and keyed by the digest of every layer before that point -- and the numpy executor
starts there (:meth:`harness.executors.NumpyExecutor.run_blobs`): the outputs are bit for bit
those of the full run, because the same layers run on the same batch from the same inputs.

Which layers are "the float model's": a candidate's top-level layers are compared, byte for
byte, with the float model's and with the fused float model's (below 16 bits, batchnorm, scale
and bias layers are first folded into the layer before them, :func:`quantizer.fuse`); the first
layer where neither matches is the first changed one. A layer's bytes are read from the model
file bytes the executor was parsed from (:func:`layer_bytes`: a trial's candidate is serialized
once, for its size and sha256, and not again here). A candidate stores the blobs live at that
boundary (those a later layer reads, and model outputs made before it) after computing them, and
starts from the latest stored boundary at or before its own.

Memory: ``evaluation.activation_cache_mb`` (default 512 MiB) of entries in memory, least recently
used first out; an entry pushed out is written to a temporary folder while the
``evaluation.activation_spill_mb`` disk budget (default 2048 MiB) lasts, and forgotten past it
(that chunk is then recomputed from the inputs) -- unless its chunk has an entry at a later
boundary of the same float prefix: such a shadowed entry is forgotten, not written.
``activation_cache_mb=0`` turns reuse off. Besides the budget, the cache holds the float
references' layer bytes (about the model file's size for the float and the fused float model each).

Example:
    >>> import numpy as np
    >>> cache = ActivationCache(memory_mb=1, spill_mb=0)
    >>> cache.put(("d", 0), {"x": np.ones((4, 8), np.float32)})
    >>> sorted(cache.get(("d", 0), {"x"}))
    ['x']
    >>> cache.get(("d", 1), {"x"}) is None
    True
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.executors.ops.base import Blobs

log = logging.getLogger("qsweep")

__all__ = ["ActivationCache", "Prefix", "Reference", "header_digest", "layer_bytes"]

Key = tuple[str, Any]


def header_digest(io: Any) -> str:
    """Digest of what a network's first layer computes from: the input layout, preprocessing and inputs."""
    h = hashlib.sha256()
    h.update(f"legacy={io.legacy},rank5={io.image_rank5};".encode())
    for p in io.nn.preprocessing:
        h.update(p.SerializeToString(deterministic=True))
    for inp in io.inputs:
        h.update(repr(inp).encode())
    return h.hexdigest()


def layer_bytes(executor: Any) -> list[Any]:
    """Each top-level layer's serialized bytes: slices of the executor's model file bytes where it has them
    (``model_bytes``, read as protobuf wire format without parsing or copying), else each layer serialized."""
    io = executor.io
    data = getattr(executor, "model_bytes", None)
    if data is not None:
        net = executor.spec.DESCRIPTOR.fields_by_name[io.model_type].number
        layers = _wire_layers(memoryview(data), net, io.nn.DESCRIPTOR.fields_by_name["layers"].number)
        if layers is not None and len(layers) == len(io.nn.layers):
            return layers
    return [layer.SerializeToString(deterministic=True) for layer in io.nn.layers]


def _wire_layers(data: memoryview, net: int, field: int) -> list[memoryview] | None:
    """The entries of field ``field`` (``layers``) inside the model's field ``net`` (its network); None when
    the bytes hold the network more than once or are not plain wire format (then the caller serializes)."""
    try:
        nets = [(a, b) for f, w, a, b in _wire_fields(data, 0, len(data)) if f == net and w == 2]
        if len(nets) != 1:
            return None
        a, b = nets[0]
        return [data[x:y] for f, w, x, y in _wire_fields(data, a, b) if f == field and w == 2]
    except (ValueError, IndexError):
        return None


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _wire_fields(data: memoryview, i: int, end: int):
    """``(field number, wire type, value start, value end)`` of each field in ``data[i:end]``."""
    while i < end:
        tag, i = _varint(data, i)
        wire = tag & 7
        if wire == 0:
            _, j = _varint(data, i)
        elif wire == 1:
            j = i + 8
        elif wire == 2:
            n, i = _varint(data, i)
            j = i + n
        elif wire == 5:
            j = i + 4
        else:  # groups: not in Core ML's schema
            raise ValueError(f"wire type {wire}")
        yield tag >> 3, wire, i, j
        i = j


def same_bytes(a: Any, b: Any) -> bool:
    """``bytes(a) == bytes(b)`` for buffers without copying them (8-byte words compared by numpy)."""
    if len(a) != len(b):
        return False
    x, y = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
    n = len(x) - len(x) % 8
    return bool(np.array_equal(x[:n].view(np.uint64), y[:n].view(np.uint64))) and x[n:].tobytes() == y[n:].tobytes()


@dataclass(frozen=True)
class Reference:
    """A float network whose prefixes candidates share: its header digest, each top-level layer's bytes and
    ``digests[i]``, the digest of everything its first ``i`` layers compute from (``len == layers + 1``)."""

    header: str
    layers: list[Any]
    digests: list[str]

    @classmethod
    def of(cls, executor: Any) -> "Reference":
        head, layers = header_digest(executor.io), layer_bytes(executor)
        digests = [head]
        for b in layers:
            step = hashlib.sha256(digests[-1].encode())
            step.update(b)
            digests.append(step.hexdigest())
        return cls(head, layers, digests)

    def shared(self, header: str, layers: list[Any]) -> int:
        """How many leading layers of a network (its header digest, its layer bytes) are this network's
        (-1: a different header)."""
        if header != self.header:
            return -1
        i = 0
        while i < len(layers) and i < len(self.layers) and same_bytes(layers[i], self.layers[i]):
            i += 1
        return i


def _needed(network: Any, outputs: set[str], inputs: list[str]) -> list[frozenset[str]]:
    """Per op boundary ``i``: the blobs present there that an op from ``i`` on reads, or that are model outputs."""
    from harness.executors.runner import _reads

    ops = network.ops
    later: list[set[str]] = [set() for _ in range(len(ops) + 1)]
    for i in range(len(ops) - 1, -1, -1):
        later[i] = later[i + 1] | _reads(ops[i].layer)
    made: set[str] = set(inputs)
    out = []
    for i in range(len(ops) + 1):
        out.append(frozenset(made & (later[i] | outputs)))
        if i < len(ops):
            made |= _writes(ops[i].layer) | set(ops[i].outputs)  # a fused op writes its last layer's outputs
    return out


def _writes(layer: Any) -> set[str]:
    """Blob names a layer writes, including what its loop/branch bodies write into the outer dict."""
    import quantizer.walk as walk

    names = set(layer.output)
    for net in walk.sub_networks(layer):
        for inner in walk.iter_layers(net):
            names.update(inner.output)
    return names


@dataclass
class Prefix:
    """Where one candidate's network stops being the float model's.

    Boundaries are the executor's op boundaries (``0 .. len(network.ops)``): an op fused from several
    layers (:mod:`harness.executors.fusion`) is never entered in the middle.

    Attributes:
        digests: ``digests[i]`` (``i <= first_changed``): the digest of everything its first ``i`` top-level
            layers compute from, the float reference's (:attr:`Reference.digests`).
        first_changed: the first top-level layer that is no float reference's (``len(layers)``: none).
        needed: per op boundary, the blobs a run starting there needs.
        layers: per op boundary, the layer boundary it is (:meth:`Network.layer_boundaries`).
    """

    digests: list[str]
    first_changed: int
    needed: list[frozenset[str]]
    layers: list[int]

    @property
    def first_op(self) -> int:
        """The last op boundary at or before the first changed layer: where the candidate's own run begins."""
        return max(j for j, b in enumerate(self.layers) if b <= self.first_changed)

    def key(self, boundary: int, chunk: Any) -> Key:
        """The cache key of op boundary ``boundary`` on ``chunk``: the digest of every layer before it."""
        return self.digests[self.layers[boundary]], chunk


class ActivationCache:
    """Blobs at layer boundaries, per chunk, within a memory budget (then a disk budget).

    Args:
        memory_mb: entries held in memory (MiB); 0 disables the cache.
        spill_mb: entries written to a temporary folder once memory is full (MiB); 0: none.
    """

    def __init__(self, memory_mb: float = 512, spill_mb: float = 2048):
        self.memory_budget = int(float(memory_mb) * 2**20)
        self.spill_budget = int(float(spill_mb) * 2**20)
        self.references: list[Reference] = []
        self._mem: OrderedDict[Key, Blobs] = OrderedDict()
        self._disk: OrderedDict[Key, tuple[Path, dict[str, str], int]] = OrderedDict()
        self._mem_bytes = 0
        self._disk_bytes = 0
        self._dir: Path | None = None
        #: Keys with a stored entry of the same chunk at a later boundary on the same float prefix.
        self._shadowed: set[Key] = set()
        self.stats = {"hits": 0, "misses": 0, "stored": 0, "spilled": 0, "dropped": 0, "shadowed_dropped": 0,
                      "skipped_layers": 0}

    @property
    def enabled(self) -> bool:
        return self.memory_budget > 0

    # -- float references and candidates ----------------------------------------------------
    def add_reference(self, executor: Any) -> None:
        """Record a float network (the float model, the fused float model) whose prefixes are shared."""
        ref = Reference.of(executor)
        if all(r.digests != ref.digests for r in self.references):
            self.references.append(ref)

    def prefix(self, executor: Any) -> Prefix | None:
        """The candidate's :class:`Prefix` (None when the cache is off or the executor is not the numpy one)."""
        if not self.enabled or not hasattr(executor, "run_blobs") or not self.references:
            return None
        head, layers = header_digest(executor.io), layer_bytes(executor)
        first, digests = 0, [head]
        for ref in self.references:
            i = ref.shared(head, layers)
            if i > first:
                first, digests = i, ref.digests[:i + 1]
        needed = _needed(executor.network, set(executor.output_blobs), list(executor.io.input_names))
        return Prefix(digests, first, needed, executor.network.layer_boundaries())

    # -- entries ----------------------------------------------------------------------------
    def get(self, key: Key, needed: set[str] | frozenset[str]) -> Blobs | None:
        """The blobs stored under ``key`` (a dict of read-only arrays) if they hold every ``needed`` blob."""
        blobs = self._mem.get(key)
        if blobs is not None:
            self._mem.move_to_end(key)
        elif key in self._disk:
            folder, files, _ = self._disk[key]
            self._disk.move_to_end(key)
            blobs = {name: np.load(folder / f, mmap_mode="r") for name, f in files.items()}
        if blobs is None or not set(needed) <= set(blobs):
            return None
        return dict(blobs)

    def put(self, key: Key, blobs: Mapping[str, np.ndarray]) -> None:
        """Store ``blobs`` (made read-only; views are copied so a stored blob holds no more than itself)."""
        if key in self._mem or key in self._disk or not self.enabled:
            return
        kept = {}
        for name, a in blobs.items():
            a = np.asarray(a)
            if a.base is not None or not a.flags.c_contiguous:
                a = np.ascontiguousarray(a).copy()
            a.setflags(write=False)
            kept[name] = a
        size = sum(a.nbytes for a in kept.values())
        self.stats["stored"] += 1
        if size > self.memory_budget:
            self._spill(key, kept, size)
            return
        while self._mem and self._mem_bytes + size > self.memory_budget:
            old, old_blobs = self._mem.popitem(last=False)
            old_size = sum(a.nbytes for a in old_blobs.values())
            self._mem_bytes -= old_size
            if old in self._shadowed:  # a later boundary of its chunk is stored: not worth a disk write
                self._shadowed.discard(old)
                self.stats["shadowed_dropped"] += 1
            else:
                self._spill(old, old_blobs, old_size)
        self._mem[key] = kept
        self._mem_bytes += size

    def _spill(self, key: Key, blobs: Mapping[str, np.ndarray], size: int) -> None:
        if size > self.spill_budget:
            self.stats["dropped"] += 1
            return
        while self._disk and self._disk_bytes + size > self.spill_budget:
            _, (folder, _, old_size) = self._disk.popitem(last=False)
            shutil.rmtree(folder, ignore_errors=True)
            self._disk_bytes -= old_size
            self.stats["dropped"] += 1
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="qsweep-activations-"))
        folder = self._dir / f"e{self.stats['spilled']:06d}"
        folder.mkdir()
        files = {}
        for i, (name, a) in enumerate(blobs.items()):
            files[name] = f"b{i}.npy"
            np.save(folder / files[name], a)
        self._disk[key] = (folder, files, size)
        self._disk_bytes += size
        self.stats["spilled"] += 1

    @property
    def memory_bytes(self) -> int:
        """Bytes of the entries held in memory (never above the memory budget)."""
        return self._mem_bytes

    @property
    def disk_bytes(self) -> int:
        return self._disk_bytes

    def close(self) -> None:
        """Forget every entry and delete the spill folder."""
        self._mem.clear()
        self._disk.clear()
        self._shadowed.clear()
        self._mem_bytes = self._disk_bytes = 0
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __del__(self) -> None:  # the spill folder never outlives the cache
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- running ----------------------------------------------------------------------------
    def run(self, executor: Any, prefix: Prefix, chunk: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs of ``executor`` on ``feeds`` (the chunk ``chunk``), started from the latest stored
        boundary at or before the candidate's first changed layer; stores that boundary's blobs."""
        first = prefix.first_op
        n_ops = len(prefix.layers) - 1
        start, blobs = 0, None
        for b in range(first, 0, -1):
            blobs = self.get(prefix.key(b, chunk), prefix.needed[b])
            if blobs is not None:
                start = b
                break
        if blobs is None:
            self.stats["misses"] += 1
            blobs = executor.input_blobs(feeds)
        else:
            self.stats["hits"] += 1
            self.stats["skipped_layers"] += prefix.layers[start]
        n = next(iter(feeds.values())).shape[0]
        capture = first if start < first < n_ops else None
        outputs, captured = executor.run_blobs(blobs, n, start=start, capture=capture,
                                               keep=prefix.needed[first] if capture is not None else None)
        if captured is not None:
            self.put(prefix.key(first, chunk), captured)
            self._shadow(prefix, first, chunk)
        return outputs

    def _shadow(self, prefix: Prefix, boundary: int, chunk: Any) -> None:
        """Mark the entries of ``chunk`` at boundaries before ``boundary`` on ``prefix``'s float prefix as shadowed:
        a candidate only needs one of them if its first changed layer lies between it and ``boundary``.
        Memory full, a shadowed entry is forgotten instead of spilled: a sensitivity run's probes (layer
        order) and a mixed run's candidates read none of them again (measured on minilm_l6: 0 of 663 hits
        from disk), and writing them was 4% of the with-reuse run."""
        for b in range(1, boundary):
            key = prefix.key(b, chunk)
            if key in self._mem:
                self._shadowed.add(key)
