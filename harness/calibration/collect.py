"""Collect layer input statistics: the numpy executor over calibration inputs, with an observer per weight layer.

:func:`collect_stats` runs :class:`~harness.executors.numpy_executor.NumpyExecutor`
over the calibration feeds in batches, with an observer
(:meth:`harness.executors.runner.Network.run`) that, before each weight layer
runs, adds its input to that layer's
:class:`~quantizer.algorithms.GramAccumulator`:

* ``convolution``: the im2col patches of the input in the weights' column
  order (zero padding included; grouped and depthwise convolutions per group),
  produced and accumulated chunk by chunk (bounded memory);
* ``innerProduct``: one row per leading index (rank-3 inputs flattened over
  their leading axes; rank 4/5 inputs over ``C*H*W``);
* ``batchedMatmul`` with a weight matrix: one row per leading index of the
  last axis;
* ``batchnorm`` (``computeMeanVar`` false): per channel, the sum of squares and
  the mean of its input over every sample and position (one group per channel,
  one column): what the ``affine`` fit of its four vectors reads
  (:mod:`quantizer.algorithms.affine`);
* ``uniDirectionalLSTM`` / ``biDirectionalLSTM``: per direction, the input
  ``x_t`` of every step (what the four input-to-gate matrices ``W_*``
  multiply) and the float model's hidden state ``h_{t-1}`` of every step, ``h_0``
  included (what the recurrent matrices ``R_*`` multiply), through the LSTM
  op's ``step_inputs`` hook; keyed by
  :func:`quantizer.algorithms.support.stats_key` (``layer|weightParams.x``,
  ``layer|weightParams.1.h``).

Accumulators of wide layers keep a block-diagonal ``H``
(:func:`quantizer.algorithms.block_size_for`). When every accumulator would
not fit the memory budget at once, layers are collected in several passes.
Each pass runs only the part of the network its layers need
(:func:`prefix_model`: the layers their inputs depend on), and stops at its
last layer, so a pass over one wide layer of a large model holds that layer's
accumulator and little else. When the statistics of every layer exceed the
budget, each finished layer is file-backed
(:class:`~harness.calibration.store.CalibrationStats`).

Layers inside ``loop``/``branch`` bodies are not observed (listed in
``skipped``); a plan falls back to round-to-nearest there, with a note.

Example:
    >>> from harness import zoo
    >>> spec, test = zoo.load("digits_mlp")                                # doctest: +SKIP
    >>> stats = collect_stats(spec, test.feeds)                             # doctest: +SKIP
    >>> quantizer.quantize_weights(spec, 4, "linear", algorithm="gptq", calibration=stats)  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np

import quantizer
from harness.calibration.store import DEFAULT_MEMORY_BYTES, CalibrationStats, _Spill
from harness.errors import DataError
from harness.executors.ops.conv import pair, same_pads, valid_pads
from quantizer.algorithms import ConvGeometry, GramAccumulator, block_size_for, dense_rows
from quantizer.algorithms.support import AFFINE_LAYER_TYPES, LSTM_LAYER_TYPES, lstm_prefixes, observed, stats_key
from quantizer.io import source_spec

log = logging.getLogger("qsweep")

__all__ = ["collect_stats", "stats_layers", "LayerTarget", "relu_followed"]


class _PassDone(Exception):
    """Raised by the observer after the last layer of a pass: the rest of the network is not needed."""


#: Layers that only move values around: an activation after them acts element by element on
#: the weight layer's own output.
_RESHAPING = frozenset({"squeeze", "expandDims", "reshapeStatic", "reshape", "flatten", "flattenTo2D", "copy",
                        "transpose", "permute"})


def relu_followed(nn: Any) -> set[str]:
    """Names of the convolution / innerProduct layers of ``nn`` (top level) whose output is read only
    by a ReLU activation, directly or through one chain of layers that only reshape it (and is not
    a model output on the way)."""
    readers: dict[str, list[Any]] = {}
    for layer in nn.layers:
        for blob in _blobs(layer)[0]:
            readers.setdefault(blob, []).append(layer)
    out = set()
    for layer in nn.layers:
        if layer.WhichOneof("layer") not in ("convolution", "innerProduct") or len(layer.output) != 1:
            continue
        blob = layer.output[0]
        for _ in range(len(nn.layers)):
            nxt = readers.get(blob, [])
            if len(nxt) != 1:
                break
            kind = nxt[0].WhichOneof("layer")
            if kind == "activation" and nxt[0].activation.WhichOneof("NonlinearityType") == "ReLU":
                out.add(layer.name)
                break
            if kind not in _RESHAPING or len(nxt[0].output) != 1 or len(nxt[0].input) != 1:
                break
            blob = nxt[0].output[0]
    return out


class LayerTarget:
    """One weight layer whose input statistics are collected: its geometry and accumulator size.

    ``relu``: the layer's output feeds only a ReLU (:func:`relu_followed`): its accumulator also
    computes the float pre-activation per output channel (``LayerStats.relu``)."""

    def __init__(self, layer: Any, relu: bool = False) -> None:
        self.layer = layer
        self.relu = relu
        self.name = layer.name
        self.kind = layer.WhichOneof("layer")
        p = getattr(layer, self.kind)
        self.groups, self.unit = 1, 1
        self.keys = [self.name]
        if self.kind in LSTM_LAYER_TYPES:  # per direction: input x_t and hidden state h_{t-1} statistics
            self.prefixes = lstm_prefixes(layer)
            self.keys = [stats_key(self.name, f"{pre}inputGate{part}") for pre in self.prefixes
                         for part in ("WeightMatrix", "RecursionMatrix")]
            self.widths = [int(p.inputVectorSize), int(p.outputVectorSize)] * len(self.prefixes)
            self.columns = max(self.widths)
        elif self.kind == "convolution":
            self.kh, self.kw = pair(p.kernelSize, 3)
            self.stride, self.dilation = pair(p.stride, 1), pair(p.dilationFactor, 1)
            self.groups = max(1, int(p.nGroups))
            self.kc = int(p.kernelChannels)
            self.columns, self.unit = self.kc * self.kh * self.kw, self.kh * self.kw
            self.same = p.WhichOneof("ConvolutionPaddingType") == "same"
            self.top_left = self.same and p.same.asymmetryMode == 1
            self.pads = None if self.same else valid_pads(p.valid)
        elif self.kind == "innerProduct":
            self.columns = int(p.inputChannels)
        elif self.kind in AFFINE_LAYER_TYPES:  # per channel: sum x^2 and E[x]
            self.columns, self.groups = 1, int(p.channels)
        else:  # batchedMatmul with one input
            self.columns = int(p.weightMatrixFirstDimension)
        self.block = block_size_for(self.columns, self.groups, self.unit)

    @property
    def nbytes(self) -> int:
        """Bytes of the layer's accumulators (float64 H, full or block-diagonal)."""
        if self.kind in LSTM_LAYER_TYPES:
            return sum(8 * c * c + 16 * c for c in self.widths)
        b = self.columns if self.block is None else self.block
        nb = 1 if self.block is None else -(-self.columns // self.block)
        return 8 * self.groups * nb * b * b + 16 * self.groups * self.columns

    def accumulators(self) -> dict[str, GramAccumulator]:
        """Statistics key -> accumulator (one for most layers; two per LSTM direction)."""
        if self.kind in LSTM_LAYER_TYPES:
            return {k: GramAccumulator(c, block="auto") for k, c in zip(self.keys, self.widths)}
        weights = bias = None
        if self.relu:
            fields = quantizer.tensors.layer_weights(self.layer)
            wp, shape, axis = fields["weights"]
            weights = quantizer.weightparams.decode_weights(wp, shape, axis, name=f"{self.name}.weights")
            if "bias" in fields and getattr(self.layer, self.kind).hasBias:
                wp, shape, axis = fields["bias"]
                bias = quantizer.weightparams.decode_weights(wp, shape, axis, name=f"{self.name}.bias")
        return {self.name: GramAccumulator(self.columns, groups=self.groups, block=self.block, relu_weights=weights,
                                           relu_bias=bias)}

    def observe(self, accs: dict[str, GramAccumulator], op: Any, blobs: dict) -> None:
        """Add what the layer ``op`` is about to read from ``blobs`` to its accumulators."""
        if self.kind in LSTM_LAYER_TYPES:
            for k, (x, h) in enumerate(op.step_inputs(blobs)):
                accs[self.keys[2 * k]].add(x)
                accs[self.keys[2 * k + 1]].add(h)
            return
        self.add(accs[self.name], blobs[op.inputs[0]])

    def geometry(self, h: int, w: int) -> ConvGeometry:
        if self.same:
            ekh, ekw = (self.kh - 1) * self.dilation[0] + 1, (self.kw - 1) * self.dilation[1] + 1
            pads = same_pads(h, ekh, self.stride[0], self.top_left) + same_pads(w, ekw, self.stride[1], self.top_left)
        else:
            pads = self.pads
        return ConvGeometry((self.kh, self.kw), self.stride, self.dilation, pads, self.groups)

    def add(self, acc: GramAccumulator, x: np.ndarray) -> None:
        """Add one batch of the layer's input blob (internal layout: sample axis first)."""
        if self.kind == "convolution":
            if x.ndim < 4 or x.shape[-3] != self.kc * self.groups:
                raise DataError(f"layer {self.name!r}: input of shape {tuple(x.shape[1:])} does not have the "
                                f"{self.kc * self.groups} channels its weights expect")
            acc.add_conv_input(x, self.geometry(*x.shape[-2:]))
        elif self.kind == "innerProduct":
            acc.add(dense_rows(x, self.columns))
        elif self.kind in AFFINE_LAYER_TYPES:
            if x.ndim < 4 or x.shape[-3] != self.groups:
                raise DataError(f"layer {self.name!r}: input of shape {tuple(x.shape[1:])} does not have the "
                                f"{self.groups} channels (axis -3) the batchnorm has")
            acc.add(np.moveaxis(x, -3, 0).reshape(self.groups, -1, 1))
        else:
            if x.shape[-1] != self.columns:
                raise DataError(f"layer {self.name!r}: input's last axis is {x.shape[-1]}, the weights expect "
                                f"{self.columns}")
            acc.add(x.reshape(-1, self.columns))


def stats_layers(spec: Any, names: Iterable[str] | None = None) -> tuple[list[LayerTarget], dict[str, str]]:
    """The top-level weight layers of ``spec`` an algorithm handles (optionally only ``names``),
    in network order, and the weight layers inside loop/branch bodies (not observed) with why.

    Raises:
        DataError: two such layers share a name (statistics are keyed by layer name), or
            ``names`` names a layer that is not one of them.
    """
    from harness.executors.interface import ModelIO

    nn = ModelIO(spec).nn
    wanted = None if names is None else set(names)
    targets, skipped, seen = [], {}, set()
    relu = relu_followed(nn)
    nested = [(inner, True) for layer in nn.layers for net in quantizer.walk.sub_networks(layer)
              for inner in quantizer.walk.iter_layers(net)]
    for layer, inside in [(layer, False) for layer in nn.layers] + nested:
        kind = layer.WhichOneof("layer")
        if not observed(layer) or (wanted is not None and layer.name not in wanted):
            continue
        if layer.name in seen:
            raise DataError(f"two layers are named {layer.name!r}: calibration statistics are keyed by layer name; "
                            "give the layers unique names")
        seen.add(layer.name)
        if inside:
            skipped[layer.name] = f"{kind} inside a loop/branch body (not observed)"
            continue
        targets.append(LayerTarget(layer, layer.name in relu))
    if wanted is not None:
        missing = sorted(wanted - seen)
        if missing:
            raise DataError(f"no convolution/innerProduct/batchedMatmul/LSTM/batchnorm layer(s) named {missing} to "
                            "collect statistics for")
    return targets, skipped


def _blobs(layer: Any) -> tuple[set[str], set[str]]:
    """(blobs read, blobs written) by a top-level layer, its loop/branch bodies included."""
    reads, writes = set(layer.input), set(layer.output)
    for net in quantizer.walk.sub_networks(layer):
        for inner in quantizer.walk.iter_layers(net):
            reads.update(inner.input)
            writes.update(inner.output)
            if inner.WhichOneof("layer") == "loop" and inner.loop.conditionVar:
                reads.add(inner.loop.conditionVar)
    return reads, writes


def prefix_model(spec: Any, layer_names: Iterable[str]) -> Any:
    """A plain neuralNetwork model with the named top-level layers and every earlier layer their
    inputs depend on (the rest of the network is left out); its outputs are the named layers'
    outputs, its inputs and preprocessing the model's. A named layer no kept layer reads from is
    replaced by a weightless stand-in of the same name and input (an identity activation): the
    observer reads its input, so its weights need not be decoded."""
    from harness.executors.interface import ModelIO
    from quantizer.coremltools_quiet import coremltools

    nn = ModelIO(spec).nn
    names = set(layer_names)
    layers = list(nn.layers)
    keep = [False] * len(layers)
    need: set[str] = set()
    for i in range(len(layers) - 1, -1, -1):
        reads, writes = _blobs(layers[i])
        if layers[i].name in names or writes & need:
            keep[i] = True
            need |= reads
    out = coremltools().proto.Model_pb2.Model()
    out.specificationVersion = spec.specificationVersion
    out.description.input.extend(spec.description.input)
    sub = out.neuralNetwork
    sub.arrayInputShapeMapping = nn.arrayInputShapeMapping
    sub.imageInputShapeMapping = nn.imageInputShapeMapping
    sub.preprocessing.extend(nn.preprocessing)
    produced: list[str] = []
    later: set[str] = set()  # blobs read by kept layers after the current one
    real = [False] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        if keep[i]:
            reads, writes = _blobs(layers[i])
            # an LSTM's observer runs the layer itself (its hidden states): never a stand-in
            real[i] = (layers[i].name not in names or bool(writes & later)
                       or layers[i].WhichOneof("layer") in LSTM_LAYER_TYPES)
            later |= reads
    for layer, k, r in zip(layers, keep, real):
        if not k:
            continue
        if r:
            sub.layers.add().CopyFrom(layer)
        else:
            stand_in = sub.layers.add(name=layer.name, input=[layer.input[0]], output=list(layer.output))
            stand_in.activation.linear.alpha = 1.0
        if layer.name in names:
            produced += list(layer.output)
    for blob in dict.fromkeys(produced):
        o = out.description.output.add()
        o.name = blob
        o.type.multiArrayType.dataType = o.type.multiArrayType.FLOAT32
    return out


def _passes(targets: list[LayerTarget], budget: int) -> list[list[LayerTarget]]:
    out: list[list[LayerTarget]] = [[]]
    used = 0
    for t in targets:
        if out[-1] and used + t.nbytes > budget:
            out.append([])
            used = 0
        out[-1].append(t)
        used += t.nbytes
    return [p for p in out if p]


def collect_stats(model: Any, feeds: Mapping[str, np.ndarray], *, layers: Iterable[str] | None = None,
                  batch_size: int = 32, memory_bytes: int = DEFAULT_MEMORY_BYTES, spill_dir: Any = None,
                  progress: Callable[[str], None] | None = None) -> "CalibrationStats":
    """Input statistics (``H`` and mean) of every weight layer of ``model`` over the calibration ``feeds``.

    Args:
        model: a spec, ``MLModel`` or path (the float model: statistics of the float activations).
        feeds: input name -> array ``(N, ...)``, as the test data (harness.data conventions).
        layers: only these layer names (default: every convolution / innerProduct /
            batchedMatmul-with-weights layer the algorithms handle).
        batch_size: samples per executor call.
        memory_bytes: bytes of accumulators per pass (a wider layer gets a pass of its own);
            when every layer's statistics together exceed it, each finished layer is
            file-backed in a temporary folder under ``spill_dir`` (else all stay in memory).
        progress: called with a short message after each pass (e.g. ``log.info``).

    Returns:
        :class:`~harness.calibration.store.CalibrationStats` (close it to remove file-backed data).

    Raises:
        DataError: feeds that do not fit the model, or an input a layer cannot read.
    """
    from harness.executors.heap import release_freed_memory
    from harness.executors.numpy_executor import NumpyExecutor

    t0 = time.perf_counter()
    spec, _ = source_spec(model)  # read, never copied nor modified
    NumpyExecutor(prefix_model(spec, [])).input_blobs({k: v[:1] for k, v in feeds.items()})  # feeds fit?
    targets, skipped = stats_layers(spec, layers)
    n = int(next(iter(feeds.values())).shape[0]) if feeds else 0
    if n < 1:
        raise DataError("calibration: no samples to collect statistics from")
    total = sum(t.nbytes for t in targets)
    # all in memory when everything fits the budget; otherwise every layer file-backed as soon as it is done
    spill = _Spill(memory_bytes if total <= memory_bytes else 0, spill_dir)
    out: dict[str, Any] = {}
    passes = _passes(targets, memory_bytes)
    done = 0
    for k, group in enumerate(passes):
        ex = NumpyExecutor(prefix_model(spec, [t.name for t in group]))  # its own copy of the part it runs
        accs = {t.name: (t, t.accumulators()) for t in group}
        last = max(i for i, op in enumerate(ex.network.ops) if op.name in accs)

        def observe(op: Any, blobs: dict, accs=accs, ops=ex.network.ops, last=last) -> None:
            hit = accs.get(op.name)
            if hit is not None:
                hit[0].observe(hit[1], op, blobs)
                if op is ops[last]:
                    raise _PassDone

        for a in range(0, n, batch_size):
            batch = {name: v[a:a + batch_size] for name, v in feeds.items()}
            try:
                ex.network.run(ex.input_blobs(batch), release=True, observer=observe)
            except _PassDone:
                pass
        del ex
        for t in group:
            for key, acc in accs.pop(t.name)[1].items():
                stats = acc.stats(copy=False)
                out[key] = spill.keep(key, stats, len(out))
                del stats
        if progress is not None:
            done += len(group)
            progress(f"calibration statistics: pass {k + 1}/{len(passes)}, {done}/{len(targets)} layers")
    for name, why in skipped.items():
        log.info("calibration: layer %r: %s; its plan entries fall back to round-to-nearest", name, why)
    release_freed_memory()  # the passes' blobs: the quantizer's large matrices come next (harness.executors.heap)
    return CalibrationStats(out, samples=n, seconds=time.perf_counter() - t0, skipped=skipped, folder=spill.folder)
