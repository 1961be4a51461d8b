"""Recurrent layers' semantics and shared plumbing; the ``gru`` and ``simpleRecurrent`` ops (LSTMs: :mod:`.lstm`).

Semantics are NeuralNetwork.proto's (which differ from PyTorch's in places —
the converter emits a ``loop`` for ``nn.GRU`` because of the reset gate):

* Blobs are rank 5 per sample: input ``(Seq, Batch, inputVectorSize, 1, 1)``,
  output ``(Seq or 1, Batch, outputVectorSize, 1, 1)`` (``sequenceOutput``),
  states ``(1, Batch, outputVectorSize, 1, 1)``. Initial states are optional
  extra inputs (zeros when absent); final states are optional extra outputs.
* Gate weights: ``W_* [H, X]``, ``R_* [H, H]``, biases and peepholes ``[H]``.
  LSTM gate order i (input), f (forget), z (block input), o (output);
  GRU z (update), r (reset), o (output).
* Activations: LSTM ``[f, g, h]`` (gates, block input, cell output),
  GRU ``[f, g]``, simpleRecurrent one; linear (identity), sigmoid, tanh, ReLU,
  and the fixed scaled tanh (1.7159, 2/3) and hard sigmoid (0.2, 0.5) —
  stored alpha/beta are ignored (see :func:`activation`).
* Every pre-activation is clipped to ``[-50, 50]``; the LSTM cell to
  ``±cellClipThreshold`` (50 when 0); ``forgetBias`` adds 1 to ``b_f``;
  ``coupledInputAndForgetGate`` uses ``1 - i`` as the forget gate; peepholes
  ``p_i, p_f`` see ``c_{t-1}``, ``p_o`` sees ``c_t``.
* ``reverseInput`` (unidirectional layers) processes the sequence from the
  end and emits outputs in processing order (what Apple's reference
  implementation in coremltools' recurrent tests does). In
  ``biDirectionalLSTM`` the backward outputs are aligned with the input
  steps: output t is ``[yf_t, yb_t]`` where ``yb_t`` has seen ``x_S..x_t``.

The batch is vectorised over (samples × Batch); only time is a Python loop.
The input projections of all steps are one matrix product before the loop.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from harness.executors.ops import _parallel as par
from harness.executors.ops.base import F32, Op, f32, rank
from harness.executors.registry import register

PREACT_CLIP = F32(50.0)
Act = Callable[[np.ndarray], np.ndarray]


def activation(op: Op, params: Any, what: str) -> Act:
    """The callable of a recurrent-layer ``ActivationParams`` (error naming ``what`` if unsupported).

    Recurrent layers support fixed forms only (NeuralNetwork.proto): linear is
    the identity, scaled tanh is ``1.7159 tanh(2/3 x)``, hard sigmoid is
    ``clip(0.2 x + 0.5, 0, 1)``. The alpha/beta stored in the message are
    ignored, as on device: coremltools' builder stores them as 0.
    """
    kind = params.WhichOneof("NonlinearityType")
    if kind == "sigmoid":
        return lambda x: F32(1) / (F32(1) + np.exp(-x))
    if kind == "tanh":
        return np.tanh
    if kind == "ReLU":
        return lambda x: np.maximum(x, F32(0))
    if kind == "linear":
        return lambda x: x
    if kind == "scaledTanh":
        return lambda x: F32(1.7159) * np.tanh(F32(2.0 / 3.0) * x)
    if kind == "sigmoidHard":
        return lambda x: np.clip(x * F32(0.2) + F32(0.5), F32(0), F32(1))
    raise op.error(f"{what} activation {kind!r} is not supported in recurrent layers "
                   "(linear, sigmoid, tanh, ReLU, scaledTanh, sigmoidHard)")


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -PREACT_CLIP, PREACT_CLIP, out=x)


# ---------------------------------------------------------------------------
# Layout: rank-5 blobs <-> (time, rows, features)
# ---------------------------------------------------------------------------

class _Recurrent(Op):
    """Shared plumbing: input/state/output reshapes between blobs and ``(S, M, C)`` matrices."""

    in_size = out_size = 0

    def sequence(self, x: np.ndarray) -> tuple[np.ndarray, int, int]:
        """``(N, S, B, X, 1, 1)`` -> ``(S, N*B, X)`` float32, and N, B."""
        if rank(x) != 5 or x.shape[-2:] != (1, 1) or x.shape[3] != self.in_size:
            raise self.error(
                f"input has per-sample shape {tuple(x.shape[1:])}; expected rank 5 (Seq, Batch, {self.in_size}, 1, 1)")
        n, s, b = x.shape[:3]
        return np.ascontiguousarray(f32(x)[..., 0, 0].transpose(1, 0, 2, 3).reshape(s, n * b, self.in_size)), n, b

    def state(self, blob: np.ndarray | None, n: int, b: int, what: str) -> np.ndarray:
        """Initial state blob ``(N|1, 1, B|1, H, 1, 1)`` (or None: zeros) -> ``(N*B, H)``."""
        h = self.out_size
        if blob is None:
            return np.zeros((n * b, h), F32)
        per = int(np.prod(blob.shape[1:], dtype=np.int64))
        if per not in (h, b * h) or blob.shape[0] not in (1, n):
            raise self.error(f"{what} has per-sample shape {tuple(blob.shape[1:])}; expected (1, {b}, {h}, 1, 1)")
        v = f32(blob).reshape(blob.shape[0], -1, h)  # (N|1, B|1, H)
        return np.ascontiguousarray(np.broadcast_to(v, (n, b, h)).reshape(n * b, h))

    def blob(self, y: np.ndarray, n: int, b: int) -> np.ndarray:
        """``(S, N*B, C)`` -> ``(N, S, B, C, 1, 1)``."""
        s, _, c = y.shape
        return np.ascontiguousarray(y.reshape(s, n, b, c).transpose(1, 0, 2, 3))[..., None, None]

    def inputs_of(self, blobs: dict[str, np.ndarray]) -> list[np.ndarray | None]:
        """The layer's input blobs; empty names (skipped optional inputs) give None."""
        out: list[np.ndarray | None] = []
        for name in self.inputs:
            if not name:
                out.append(None)
                continue
            if name not in blobs:
                raise self.error(f"its input blob {name!r} has not been produced by any earlier layer or input")
            out.append(blobs[name])
        return out

    def write(self, blobs: dict[str, np.ndarray], values: list[np.ndarray]) -> None:
        for name, v in zip(self.outputs, values):
            if name:
                blobs[name] = v


# ---------------------------------------------------------------------------
# GRU and simple RNN
# ---------------------------------------------------------------------------

@register("gru")
class GRU(_Recurrent):
    """Core ML GRU (reset gate applied to the state *before* ``R_o``): ``(x[, h0]) -> (y[, h_T])``."""

    n_inputs = (1, 2)
    n_outputs = (1, 2)

    def build(self, params, ctx) -> None:
        x, h = self.in_size, self.out_size = int(params.inputVectorSize), int(params.outputVectorSize)
        if len(params.activations) != 2:
            raise self.error(f"activations must list 2 activations [f, g], got {len(params.activations)}")
        self.f, self.g = (activation(self, a, f"activations[{i}]") for i, a in enumerate(params.activations))
        self.seq_out, self.reverse = bool(params.sequenceOutput), bool(params.reverseInput)
        gates = ("update", "reset", "output")
        self.w = np.ascontiguousarray(np.concatenate([self.weights(f"{g}GateWeightMatrix", (h, x), 0) for g in gates]).T)
        r = [self.weights(f"{g}GateRecursionMatrix", (h, h), 0) for g in gates]
        self.r_zr = np.ascontiguousarray(np.concatenate(r[:2]).T)  # (H, 2H)
        self.r_o = np.ascontiguousarray(r[2].T)
        self.b = (np.concatenate([self.weights(f"{g}GateBiasVector", (h,), 0) for g in gates])
                  if params.hasBiasVectors else np.zeros(3 * h, F32))

    def run_blobs(self, blobs) -> None:
        x, h0 = (self.inputs_of(blobs) + [None])[:2]
        xs, n, b = self.sequence(x)
        h = self.state(h0, n, b, "the initial state")
        s, m, _ = xs.shape
        hs = self.out_size
        proj = par.matmul(xs.reshape(s * m, -1), self.w).reshape(s, m, 3 * hs) + self.b
        ys = np.empty((s, m, hs), F32)
        for k in range(s):
            t = s - 1 - k if self.reverse else k
            zr = proj[t, :, :2 * hs] + par.matmul(h, self.r_zr)
            z = self.f(_clip(zr[:, :hs]))
            r = self.f(_clip(zr[:, hs:]))
            c = _clip(h * r)
            o = self.g(_clip(proj[t, :, 2 * hs:] + par.matmul(c, self.r_o)))
            h = f32((F32(1) - z) * o + z * h)
            ys[k] = h
        y = ys if self.seq_out else ys[-1:]
        self.write(blobs, [self.blob(y, n, b), self.blob(h[None], n, b)])


@register("simpleRecurrent")
class SimpleRecurrent(_Recurrent):
    """``y_t = f(clip(W x_t + R y_{t-1} + b))``: ``(x[, h0]) -> (y[, h_T])``."""

    n_inputs = (1, 2)
    n_outputs = (1, 2)

    def build(self, params, ctx) -> None:
        x, h = self.in_size, self.out_size = int(params.inputVectorSize), int(params.outputVectorSize)
        self.f = activation(self, params.activation, "activation")
        self.seq_out, self.reverse = bool(params.sequenceOutput), bool(params.reverseInput)
        self.w = np.ascontiguousarray(self.weights("weightMatrix", (h, x), 0).T)
        self.r = np.ascontiguousarray(self.weights("recursionMatrix", (h, h), 0).T)
        self.b = self.weights("biasVector", (h,), 0) if params.hasBiasVector else np.zeros(h, F32)

    def run_blobs(self, blobs) -> None:
        x, h0 = (self.inputs_of(blobs) + [None])[:2]
        xs, n, b = self.sequence(x)
        h = self.state(h0, n, b, "the initial state")
        s, m, _ = xs.shape
        proj = par.matmul(xs.reshape(s * m, -1), self.w).reshape(s, m, -1) + self.b
        ys = np.empty((s, m, self.out_size), F32)
        for k in range(s):
            t = s - 1 - k if self.reverse else k
            h = f32(self.f(_clip(proj[t] + par.matmul(h, self.r))))
            ys[k] = h
        y = ys if self.seq_out else ys[-1:]
        self.write(blobs, [self.blob(y, n, b), self.blob(h[None], n, b)])
