'''Executors: run a Core ML neural-network model on batches of test data.

``make_executor(kind, model)`` returns a :class:`Executor` whose
``predict({input: array}) -> {output: array}`` runs a whole batch (the batch
convention of inputs: :mod:`harness.data.model_inputs`, shared with the data
loaders; outputs: :mod:`harness.executors.interface`):

* :class:`NumpyExecutor` — the reference executor, numpy (plus three compiled numba
  loops: gelu, softmax, layer norm), everywhere;
* :class:`CoreMLExecutor` — ``coremltools.models.MLModel.predict`` (macOS).

How the numpy executor is built (modelled on ``onnx.reference``)
-----------------------------------------------------------------
* ``ops/<family>.py`` — one small :class:`~harness.executors.ops.base.Op`
  subclass per layer type or family (``ops/dense.py``: innerProduct...,
  ``ops/conv.py``, ``ops/activation.py``...).
* ``registry.py`` — ``OPS``: layer type name (``layer.WhichOneof("layer")``)
  -> op class; every module under ``ops/`` is imported automatically.
* ``runner.py`` — :func:`~harness.executors.runner.compile_network` checks
  every layer against the registry (an unknown one raises
  :class:`~harness.errors.UnsupportedLayerError` at build time), builds the
  ops (weights decoded once), and :class:`~harness.executors.runner.Network`
  runs them in spec order over a dict ``{blob name: array}``.
* ``fusion.py`` — peephole fusions of the compiled model network (``mvn`` +
  ``scale`` as one layer-norm pass); ``trace`` runs the unfused network.
* ``ops/_parallel.py``, ``ops/_kernels.py``, ``ops/_jit.py`` — the thread pool
  (sized like numpy's BLAS), the chunked float32 kernels (gelu, softmax, row
  normalization) the transformer ops use, and their compiled (numba) loops; ``ops/lstm.py`` runs LSTMs in a
  transposed gate layout with column blocks over threads.
* ``interface.py`` — the model's inputs (read and checked with the one
  model-input contract, :mod:`harness.data.model_inputs`), outputs, class labels
  and image preprocessing; ``numpy_executor.py`` turns feeds into blobs and
  blobs into outputs.

Blob layout: every blob is ``(N, *core_ml_shape_of_one_sample)`` — a sample
axis in front of what Core ML sees (rank 5 ``(S, B, C, H, W)`` for legacy
models, the exact traced shape, batch dim 1 included, for converted ones).
Details and helpers: :mod:`harness.executors.ops.base`.

Adding an op
------------
1. Pick (or create) the family module in ``harness/executors/ops/``.
2. Write a subclass of ``Op`` and register it under the layer type name(s)::

       from harness.executors.ops.base import Op, axis, F32
       from harness.executors.registry import register

       @register("softmaxND")
       class SoftmaxND(Op):
           n_inputs = 1                      # checked at build time

           def build(self, params, ctx):     # once per model
               self.axis = params.axis       # Core ML axis (per sample)

           def run(self, x):                 # x: (N, *per-sample shape), float32
               a = axis(self.axis, x)        # Core ML axis -> numpy axis
               e = np.exp(x - x.max(axis=a, keepdims=True))
               return e / e.sum(axis=a, keepdims=True)

   * weights: ``self.weights("weights", (cout, cin), channel_axis=0)``
     (dotted field path inside the params message; any encoding, cached);
     ``self.has_weights("bias")``.
   * several outputs: return a tuple, one array per ``layer.output``.
   * ops over the whole blob dict (loop, branch, ops writing outer blobs):
     override ``run_blobs(self, blobs)``; compile sub-networks in ``build``
     with ``ctx.compile(params.bodyNetwork)`` and run them with
     ``net.run(blobs)``.
   * raise ``self.error("...")`` for bad params (names layer and type);
     numpy errors at run time are wrapped by the runner with the layer name
     and input shapes.
3. Add a unit test in ``tests/executors/test_executor_ops*.py`` (hand-computed or
   against a numpy formula) and, where the converter emits it, a golden
   fixture.
'''
from __future__ import annotations

from harness.executors.base import Executor
from harness.executors.factory import make_executor
from harness.executors.numpy_executor import NumpyExecutor
from harness.executors.registry import register, supported_layer_types

__all__ = ["Executor", "NumpyExecutor", "CoreMLExecutor", "make_executor", "register", "supported_layer_types"]


def __getattr__(name: str):  # CoreMLExecutor imports coremltools lazily
    if name == "CoreMLExecutor":
        from harness.executors.coreml import CoreMLExecutor

        return CoreMLExecutor
    raise AttributeError(name)
