"""The numpy reference executor: runs a neural-network spec with the op registry."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

import quantizer
from harness.data.model_inputs import Feed, InputSpec
from harness.errors import ExecutorError
from harness.executors import fusion
from harness.executors.base import Executor
from harness.executors.interface import ModelIO, load_spec
from harness.executors.ops.base import F32, Blobs
from harness.executors.runner import BuildContext, Network, compile_network


class NumpyExecutor(Executor):
    """Run a Core ML ``neuralNetwork`` / classifier / regressor model with numpy.

    Built once per model: layers are checked and compiled, weights decoded.
    ``predict`` runs the whole batch vectorised. It uses as many threads as
    numpy's BLAS may (``threadpoolctl.threadpool_limits(n)``,
    ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``): matrix products in BLAS, and
    the executor's own chunked elementwise, softmax, normalization and LSTM
    work on a pool of that size (:mod:`harness.executors.ops._parallel`).

    Example:
        >>> ex = NumpyExecutor("tests/fixtures/mlp.mlmodel")    # doctest: +SKIP
        >>> ex.predict({"x": np.zeros((8, 64), np.float32)})     # doctest: +SKIP
    """

    kind = "numpy"

    def __init__(self, model: Any) -> None:
        spec, label, data = load_spec(model)
        super().__init__(ModelIO(spec, label))
        self.spec = spec
        #: The model file bytes ``spec`` was parsed from (None for an MLModel): where the activation cache reads
        #: each layer's bytes (:mod:`harness.activations`) without serializing the model again.
        self.model_bytes: bytes | None = data
        io = self.io
        self.ctx = BuildContext(legacy=io.legacy, spec_version=io.spec_version, model_name=label)
        self.network: Network = compile_network(io.nn, self.ctx)
        produced = set(io.input_names) | {o for layer in quantizer.walk.iter_layers(io.nn) for o in layer.output}
        wanted = [o.name for o in io.outputs if o.kind == "array"] + ([io.prob_blob] if io.prob_blob else [])
        missing = [w for w in wanted if w not in produced]
        if missing:
            raise ExecutorError(f"{label}: output(s) {missing} are not produced by any layer of the network")
        #: fusions of the predict network (harness.executors.fusion): {absorbed type: host type}
        self.fused = fusion.fuse(self.network, wanted)
        self.network.release_dead_blobs(wanted)
        #: The internal blobs the outputs are read from (never released).
        self.output_blobs: list[str] = wanted
        self._plain: Network | None = None  # unfused, for trace (every layer's output); built on demand
        self._labels = np.asarray(io.class_labels) if io.class_labels is not None else None

    # -- feeds -> internal blobs ---------------------------------------------
    def _blob(self, info: InputSpec, feed: Feed) -> np.ndarray:
        x, n, s = feed.x, feed.n, feed.s
        if info.kind == "image":
            x = self.io.image_to_blob(info, x)  # (N, C, H, W)
            return x.reshape((n, 1, 1) + x.shape[1:]) if self.io.image_rank5 else x.reshape((n, 1) + x.shape[1:])
        x = np.asarray(x, dtype=F32)
        if not self.io.legacy:
            return x
        # legacy rank-5: (N, [S,] C[, H, W]) -> (N, S, 1, C, H, W)
        chw = x.shape[2:] if x.ndim == len(info.declared_shape) + 2 else x.shape[1:]
        if len(chw) == 1:
            chw = (chw[0], 1, 1)
        return x.reshape((n, s, 1) + tuple(chw))

    def _input_blobs(self, split: dict[str, Feed]) -> Blobs:
        infos = {i.name: i for i in self.io.inputs}
        return {k: self._blob(infos[k], feed) for k, feed in split.items()}

    def _predict(self, split: dict[str, Feed], n: int) -> dict[str, np.ndarray]:
        blobs = self._input_blobs(split)
        self.network.run(blobs, release=True)
        return self._outputs(blobs, n)

    def run_blobs(self, blobs: Blobs, n: int, *, start: int = 0, capture: int | None = None,
                  keep: Iterable[str] | None = None) -> tuple[dict[str, np.ndarray], Blobs | None]:
        """The outputs of ``n`` samples, running the layers from ``start`` on over ``blobs``.

        ``start`` and ``capture`` are op boundaries (``network.layer_boundaries()`` maps them to the
        model's layers; a fused op counts once). ``blobs`` are the internal blobs at that boundary: :meth:`input_blobs` for ``start=0``, or
        what an earlier run left there (:mod:`harness.activations`; the dict is copied, its arrays are
        only read). With ``capture=i`` the blobs named in ``keep`` that exist when layer ``i`` is about
        to run are returned too (``(outputs, captured)``; ``captured`` is None without ``capture``).
        """
        blobs = dict(blobs)
        captured = None
        if capture is not None and start <= capture:
            self.network.run(blobs, release=True, start=start, stop=capture)
            names = set(keep) if keep is not None else set(blobs)
            captured = {k: v for k, v in blobs.items() if k in names}
            start = capture
        self.network.run(blobs, release=True, start=start)
        return self._outputs(blobs, n), captured

    def trace(self, feeds: Mapping[str, np.ndarray]) -> Blobs:
        """Run the network and return every blob (inputs and layer outputs) in the internal layout.

        Each blob is ``(N, *Core ML per-sample shape)``; useful to inspect a layer's output.
        Runs the network without fusions, so every layer's output is there.
        """
        split, n = self.io.split_feeds(feeds)
        blobs = self._input_blobs(split)
        inputs = dict(blobs)
        if self._plain is None:
            self._plain = compile_network(self.io.nn, self.ctx)  # decoded weights are cached in ctx
        self._plain.run(blobs)
        return {**inputs, **blobs}

    def input_blobs(self, feeds: Mapping[str, np.ndarray]) -> Blobs:
        """The validated feeds as the network's input blobs (internal layout), without running it."""
        split, n = self.io.split_feeds(feeds)
        return self._input_blobs(split)

    # -- internal blobs -> outputs -------------------------------------------
    def _outputs(self, blobs: Blobs, n: int) -> dict[str, np.ndarray]:
        io = self.io
        out: dict[str, np.ndarray] = {}
        probs = None
        if io.class_labels is not None:
            p = blobs.get(io.prob_blob) if io.prob_blob else None
            if p is None:
                raise ExecutorError(f"{io.label}: the classifier's probability blob {io.prob_blob!r} was not produced")
            if p.shape[0] != n:
                p = np.broadcast_to(p, (n,) + p.shape[1:])
            p = p.reshape(n, -1)
            if p.shape[1] != len(io.class_labels):
                raise ExecutorError(
                    f"{io.label}: the probability blob {io.prob_blob!r} has {p.shape[1]} values per sample "
                    f"but the classifier has {len(io.class_labels)} class labels")
            probs = np.ascontiguousarray(p, dtype=F32)
        for o in io.outputs:
            if o.kind == "label":
                out[o.name] = self._labels[np.argmax(probs, axis=1)]
            elif o.kind == "probabilities":
                out[o.name] = probs
            else:
                out[o.name] = self._output_array(blobs[o.name], o.shape, n)
        return out

    def _output_array(self, y: np.ndarray, declared: tuple[int, ...], n: int) -> np.ndarray:
        if y.shape[0] != n:
            y = np.broadcast_to(y, (n,) + y.shape[1:])
        if self.io.legacy and y.ndim == 6:
            y = y[:, :, 0]  # drop Batch: (N, S, C, H, W)
            if y.shape[1] == 1:
                y = y[:, 0]
            if (len(declared) == 1 or (not declared and y.shape[-2:] == (1, 1))) and y.shape[-2:] == (1, 1):
                y = y[..., 0, 0]
        elif y.ndim >= 2 and y.shape[1] == 1:
            y = y[:, 0]
        return np.ascontiguousarray(y, dtype=F32)
