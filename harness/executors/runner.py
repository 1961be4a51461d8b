"""The plain runner: compile a network's Core ML layers once, run them in order over a blob dict.

:func:`compile_network` checks every layer (including ``loop``/``branch``
bodies, walked with quantizer's network walker :func:`quantizer.walk.iter_layers`)
against the registry before building anything, so an unsupported layer fails
at build time with :class:`~harness.errors.UnsupportedLayerError` naming the
layer, its type, and the supported types. :meth:`Network.run`
walks the compiled ops in spec order; an op reads its inputs from the blob
dict and writes its outputs back. Errors raised inside an op are re-raised as
:class:`~harness.errors.ExecutorError` naming the layer, its type and the
shapes of its inputs.

Observers: :meth:`Network.run` takes ``observer(op, blobs)``, called before
each top-level op runs with the blob dict holding its inputs (read them, do not
modify them); calibration uses it to collect layer input statistics. Unused,
it costs one ``is None`` test per layer.

Sub-networks (``loop``, ``branch``): an op compiles its bodies with
``ctx.compile(neural_network_message)`` in :meth:`Op.build` and runs
them with ``network.run(blobs)`` from its ``run_blobs`` over the *same* dict,
so bodies read and write outer blobs.

Threads: a run holds :func:`~harness.executors.ops._parallel.owned_threads` — numpy's
BLAS stays single-threaded and the executor's own pool (sized from BLAS's thread
count on entry) splits the large products and the elementwise work.

Memory: compiling a network applies :func:`~harness.executors.heap.keep_freed_memory`
(once per process), so the blobs of one run reuse the pages the previous run freed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

import quantizer
from harness.errors import ExecutorError, UnsupportedLayerError
from harness.executors import weights as _weights
from harness.executors.heap import keep_freed_memory
from harness.executors.ops._parallel import owned_threads
from harness.executors.ops.base import Blobs, Op, _get_field
from harness.executors.registry import load_ops, supported_layer_types

@dataclass
class BuildContext:
    """What ops may consult while they are built (one per model).

    Attributes:
        legacy: True for RANK5_ARRAY_MAPPING models (every blob is rank 5
            ``(Seq, Batch, C, H, W)`` per sample), False for EXACT_ARRAY_MAPPING.
        spec_version: the model's ``specificationVersion``.
        model_name: a label for messages (file name or ``"model"``).
    """

    legacy: bool = False
    spec_version: int = 0
    model_name: str = "model"
    _cache: dict[tuple[int, str, tuple[int, ...], int], np.ndarray] = field(default_factory=dict, repr=False)

    def weights(self, op: Op, dotted: str, shape: tuple[int, ...], channel_axis: int = 0) -> np.ndarray:
        """Decode ``op.params.<dotted>`` to float32 ``shape`` (once; cached)."""
        key = (id(op.layer), dotted, shape, channel_axis)
        if key not in self._cache:
            wp = _get_field(op.params, dotted)
            try:
                self._cache[key] = _weights.decode(wp, shape, channel_axis, name=f"{op.name}.{dotted}")
            except ExecutorError:
                raise
            except Exception as e:  # quantizer errors and shape mismatches
                raise op.error(f"cannot decode weights {dotted!r} as shape {shape}: {e}") from e
        return self._cache[key]

    def compile(self, network: Any) -> "Network":
        """Compile a (sub-)network (a NeuralNetwork message, e.g. ``params.bodyNetwork``) with this context."""
        return compile_network(network, self)


class Network:
    """Compiled layers, run in spec order."""

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops
        #: The top-level layer each op starts at (a fused op covers several layers, :mod:`.fusion`).
        self.op_layers: list[int] = list(range(len(ops)))
        #: How many layers the network was compiled from.
        self.n_layers = len(ops)
        self._release: list[list[str]] | None = None

    def layer_boundaries(self) -> list[int]:
        """Per op boundary ``j`` (``0 .. len(ops)``): the layer boundary it is (layers before op ``j``)."""
        return [*self.op_layers, self.n_layers]

    def release_dead_blobs(self, keep: Iterable[str]) -> None:
        """Drop every blob after its last reader when run with ``release=True`` (top-level network only).

        A loop/branch op counts as reading every blob its sub-networks read.
        Blobs named in ``keep`` (model outputs) are never dropped.
        """
        keep = set(keep)
        last: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            for name in _reads(op.layer):
                last[name] = i
        self._release = [[] for _ in self.ops]
        for name, i in last.items():
            if name not in keep:
                self._release[i].append(name)

    def run(self, blobs: Blobs, release: bool = False, observer: Callable[[Op, Blobs], None] | None = None, *,
            start: int = 0, stop: int | None = None) -> Blobs:
        """Run the ops ``start`` .. ``stop - 1`` (default: every op) over ``blobs`` (mutated in place and returned).

        ``release=True`` drops blobs no later layer reads (see :meth:`release_dead_blobs`),
        which bounds peak memory on large batches. ``observer(op, blobs)`` is called
        before each op runs (its inputs are in ``blobs``); ops inside loop/branch
        bodies are not observed. Starting at ``start > 0``, ``blobs`` must hold
        what the layers before it left (e.g. the float model's activations at that layer:
        :mod:`harness.activations`).
        """
        drop = self._release if release else None
        stop = len(self.ops) if stop is None else stop
        if observer is None:
            with owned_threads():  # BLAS single-threaded, the executor's pool sized from its count
                self._run(blobs, drop, None, start, stop)
        else:  # the observer's own products (calibration's Gram matrices) keep BLAS's threads
            self._run(blobs, drop, observer, start, stop)
        return blobs

    def _run(self, blobs: Blobs, drop: list[list[str]] | None, observer: Callable[[Op, Blobs], None] | None,
             start: int, stop: int) -> None:
        for i in range(start, stop):
            op = self.ops[i]
            if observer is not None:
                observer(op, blobs)
            try:
                if observer is None:
                    op.run_blobs(blobs)
                else:
                    with owned_threads():
                        op.run_blobs(blobs)
            except ExecutorError:
                raise
            except (ValueError, IndexError, TypeError, ArithmeticError, KeyError, AttributeError) as e:
                shapes = ", ".join(f"{n}{_core_shape(blobs.get(n))}" for n in op.inputs)
                raise ExecutorError(
                    f"layer {op.name!r} ({op.type}) failed on inputs [{shapes}] "
                    f"(Core ML shapes, per sample): {type(e).__name__}: {e}"
                ) from e
            if drop is not None:
                for name in drop[i]:
                    blobs.pop(name, None)

    def __len__(self) -> int:
        return len(self.ops)


def _core_shape(x: np.ndarray | None) -> str:
    return " missing" if x is None else str(tuple(x.shape[1:]))


def _reads(layer: Any) -> set[str]:
    """Blob names a layer reads, including everything its loop/branch sub-networks read."""
    names = set(layer.input)
    for inner in [layer] + [sub for net in quantizer.walk.sub_networks(layer) for sub in quantizer.walk.iter_layers(net)]:
        names.update(inner.input)
        if inner.WhichOneof("layer") == "loop" and inner.loop.conditionVar:
            names.add(inner.loop.conditionVar)
    return names


def check_supported(network: Any, model_name: str = "model") -> None:
    """Raise :class:`UnsupportedLayerError` naming every layer (and its type, loop/branch bodies
    included) of ``network`` (a NeuralNetwork message or a model spec) the registry cannot run."""
    ops = load_ops()
    bad = [(layer.name, layer.WhichOneof("layer")) for layer in quantizer.walk.iter_layers(network)
           if layer.WhichOneof("layer") not in ops]
    if not bad:
        return
    shown = ", ".join(f"{n!r} ({'no type set' if t is None else repr(t)})" for n, t in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    what = "layer" if len(bad) == 1 else f"{len(bad)} layers"
    raise UnsupportedLayerError(
        f"{model_name}: the numpy executor does not implement the type of {what} {shown}{more}. "
        f"Supported layer types: {', '.join(supported_layer_types())}. Use the Core ML executor on "
        f"macOS (executor=coreml) or add an op in harness/executors/ops/."
    )


def compile_network(network: Any, ctx: BuildContext) -> Network:
    """Check then build every layer of ``network`` (a NeuralNetwork message: the model's, or a
    loop/branch body); returns the runnable :class:`Network`."""
    check_supported(network, ctx.model_name)
    keep_freed_memory()  # large blobs reuse freed pages instead of faulting new ones (see harness.executors.heap)
    ops = load_ops()
    return Network([ops[layer.WhichOneof("layer")](layer, ctx) for layer in network.layers])
