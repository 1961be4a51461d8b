"""LSTM layers: ``uniDirectionalLSTM`` and ``biDirectionalLSTM`` (semantics: :mod:`.recurrent`).

How it runs fast. The input projections of every step are one matrix product
before the time loop. Inside the loop everything is *transposed*: states are
``(H, M)`` (hidden units × sequences) and the recurrent product is
``R (4H, H) @ h (H, M)``, so each gate is a contiguous ``(H, M)`` block; gates
are stacked in the order i, f, o, z so that one call applies the gate
activation to i, f and o together. The common LSTM (sigmoid gates, tanh block
input and cell output, no peepholes, not coupled) runs its whole sequence in one
compiled call (:func:`harness.executors.ops._jit.lstm_sequence`: per step one BLAS
product and one loop for the gates, cell and hidden state, and each step's hidden state transposed
into the layer's output order while it is in cache, so the output blob needs no copy), so a column block runs
without the GIL and even small LSTMs gain from a second thread
(:data:`MIN_TASK_WORK_COMPILED`); any other LSTM runs every step as one GEMM and
about a dozen in-place ufunc calls on contiguous arrays. The M sequences are independent: with
more than one thread (:func:`~harness.executors.ops._parallel.threads`) they
are split into column blocks run concurrently, each with single-threaded BLAS,
and the two directions of a bidirectional layer run concurrently too, when a
block's per-step arrays are large enough to pay for it (:data:`MIN_TASK_WORK`).

Exactness notes (both bounded, documented deviations from a literal reading of
NeuralNetwork.proto, whose results they leave unchanged in float32):

* sigmoid gates get their weights, biases and peepholes scaled by ``-log2(e)`` at build time and
  are evaluated as ``1 / (1 + 2^a')`` (rounding differs from ``1 / (1 + exp(-a))`` by a few ulp);
* the ±50 pre-activation clip is applied for linear and ReLU activations; for
  sigmoid, tanh, scaled tanh and hard sigmoid it is skipped — those saturate
  in float32 beyond ±50 (only sigmoid's tail below 2e-22 differs);
* the cell clip is skipped when it provably cannot act: with gate activations
  in [0, 1], ``|c_t| <= max|c_0| + t * max|i| * max|z|``, so when that bound stays
  under the threshold for the whole sequence nothing is ever clipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from harness.executors.ops import _parallel as par
from harness.executors.ops.base import F32, Op, f32
from harness.executors.ops.recurrent import PREACT_CLIP, _Recurrent, activation
from harness.executors.registry import register

_GATES_IN_FILE = ("inputGate", "forgetGate", "blockInput", "outputGate")  # i, f, z, o (stored order)
_ORDER = (0, 1, 3, 2)  # -> i, f, o, z (compute order)
#: Bound of |activation(x)| per activation kind (None: unbounded).
_BOUND = {"sigmoid": 1.0, "sigmoidHard": 1.0, "tanh": 1.0, "scaledTanh": 1.7159, "linear": None, "ReLU": None}
_ONE = F32(1)
#: Sequences per block below which splitting the batch over threads does not pay.
MIN_BLOCK = 16
#: Elements of one task's per-step gate array (directions x 4H x sequences of its block) below
#: which tasks of the numpy steps run one after another in the calling thread: on small arrays two
#: threads spend more on handing the GIL back and forth than they gain (measured: lstm_text, H=24,
#: 256 sequences, 2 blocks: 1.6 ms at 2 threads vs 0.8 ms at 1; digits_lstm, H=64: 1.34 vs 1.63 ms,
#: so it keeps its blocks).
MIN_TASK_WORK = 1 << 15
#: The same threshold when every group runs compiled (:func:`harness.executors.ops._jit.lstm_sequence`:
#: the whole sequence in one call without the GIL, so a block costs no hand-offs). Measured at 2 threads,
#: the layer's call, median of 200 runs in one process (two alternations), split / not split:
#: lstm_text (H=24, 256 sequences: 2 x 96 x 128) 0.67, 0.74 / 0.58, 0.61 ms (split wins only the fastest
#: runs, 0.48 / 0.52); bilstm_text (2 x 192 x 128) 1.11, 1.10 / 1.09, 1.03; digits_lstm (H=64: 2 x 256 x 128)
#: 1.03, 1.22 / 1.68, 1.72. So a block needs 2^14 elements (lstm_text keeps one block; at 2^12 it split).
MIN_TASK_WORK_COMPILED = 1 << 14

InPlace = Callable[[np.ndarray], None]
_NO_YT = np.empty((1, 1, 1, 1), F32)  # the compiled sequence's yt when the output order is not wanted


def _neg_sigmoid(x: np.ndarray) -> None:
    """``x <- 1 / (1 + 2^x)``: sigmoid of a pre-activation that arrives as ``-a log2(e)`` (see :func:`direction`)."""
    np.exp2(x, out=x)  # numpy's exp2 is about twice as fast as its exp
    x += _ONE
    np.divide(_ONE, x, out=x)


def _neg_sigmoid_plain(x: np.ndarray) -> None:
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += _ONE
    np.divide(_ONE, x, out=x)


def _inplace(kind: str) -> InPlace:
    """An activation applied in place (out=), pre-activation clip included where it can matter."""
    if kind == "sigmoid":
        return _neg_sigmoid_plain
    if kind == "tanh":
        return lambda x: np.tanh(x, out=x)
    if kind == "ReLU":
        return lambda x: np.clip(x, F32(0), PREACT_CLIP, out=x)
    if kind == "linear":
        return lambda x: np.clip(x, -PREACT_CLIP, PREACT_CLIP, out=x)
    if kind == "scaledTanh":
        def scaled_tanh(x):
            x *= F32(2.0 / 3.0)
            np.tanh(x, out=x)
            x *= F32(1.7159)
        return scaled_tanh
    if kind == "sigmoidHard":
        def hard(x):
            x *= F32(0.2)
            x += F32(0.5)
            np.clip(x, F32(0), _ONE, out=x)
        return hard
    raise ValueError(kind)


@dataclass
class Direction:
    """One LSTM direction, weights in compute layout (gate order i, f, o, z)."""

    w: np.ndarray  # (4H, X): input projection, applied to x_t (X, M)
    r: np.ndarray  # (4H, H): recurrent product, applied to h (H, M)
    b: np.ndarray  # (4H, 1)
    peep: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # p_i, p_f, p_o as (H, 1)
    acts: tuple[str, str, str]  # gate, block input, cell output activation kinds
    fns: tuple[InPlace, InPlace, InPlace]
    reverse: bool


def direction(op: Op, prefix: str, x: int, h: int, lp: Any, acts: Any, what: str, reverse: bool) -> Direction:
    """Decode one direction's weights (``prefix`` = ``weightParams`` or ``weightParams.0``...)."""
    if len(acts) != 3:
        raise op.error(f"{what} must list 3 activations [f, g, h], got {len(acts)}")
    for i, a in enumerate(acts):
        activation(op, a, f"{what}[{i}]")  # the shared check and its error message
    kinds = tuple(a.WhichOneof("NonlinearityType") for a in acts)
    w = [op.weights(f"{prefix}.{g}WeightMatrix", (h, x), 0) for g in _GATES_IN_FILE]
    r = [op.weights(f"{prefix}.{g}RecursionMatrix", (h, h), 0) for g in _GATES_IN_FILE]
    if lp.hasBiasVectors:
        b = [op.weights(f"{prefix}.{g}BiasVector", (h,), 0).copy() for g in _GATES_IN_FILE]
    else:
        b = [np.zeros(h, F32) for _ in _GATES_IN_FILE]
    if lp.forgetBias:
        b[1] = b[1] + _ONE
    peep = None
    if lp.hasPeepholeVectors:
        peep = tuple(op.weights(f"{prefix}.{g}PeepholeVector", (h,), 0).reshape(h, 1)
                     for g in ("inputGate", "forgetGate", "outputGate"))
    fns = [_inplace(k) for k in kinds]
    if kinds[0] == "sigmoid":  # gates i, f, o get weights scaled by -log2(e): sigmoid(a) = 1 / (1 + 2^(-a log2 e))
        k = F32(-1.0 / np.log(2.0))
        scale = [k, k, _ONE, k]  # stored order i, f, z, o
        w, r, b = ([m[i] * scale[i] for i in range(4)] for m in (w, r, b))
        peep = None if peep is None else tuple(p * k for p in peep)
        fns[0] = _neg_sigmoid
    stack = lambda m: np.concatenate([m[i] for i in _ORDER], axis=0)  # noqa: E731
    return Direction(
        w=np.ascontiguousarray(stack(w)), r=np.ascontiguousarray(stack(r)),
        b=f32(stack(b)).reshape(-1, 1), peep=peep, acts=kinds,  # type: ignore[arg-type]
        fns=tuple(fns), reverse=reverse)  # type: ignore[arg-type]


class Group:
    """Directions run in lockstep (the two of a bidirectional layer when their activations agree):
    one batched GEMM and one call per elementwise step serve all of them."""

    def __init__(self, dirs: list[Direction]) -> None:
        self.dirs = dirs
        self.r = np.ascontiguousarray(np.stack([d.r for d in dirs]))  # (D, 4H, H)
        self.b = np.stack([d.b for d in dirs])  # (D, 4H, 1)
        self.b_rows = np.ascontiguousarray(self.b[:, :, 0])  # (D, 4H), for the compiled sequence
        self.aligned = np.array([d.reverse for d in dirs], dtype=np.bool_)  # yt at the input's step (bidirectional)
        self.in_order = np.zeros(len(dirs), dtype=np.bool_)  # yt in processing order (unidirectional)
        self.peep = None if dirs[0].peep is None else tuple(np.stack([d.peep[i] for d in dirs]) for i in range(3))
        self.acts, self.fns = dirs[0].acts, dirs[0].fns
        #: the common LSTM (sigmoid gates, tanh block input and cell output, no peepholes): the whole
        #: sequence in one compiled call (:func:`harness.executors.ops._jit.lstm_sequence`) when not coupled
        self.fused = self.acts == ("sigmoid", "tanh", "tanh") and self.peep is None

    def compiled(self, coupled: bool) -> bool:
        """Whether :meth:`run` takes the compiled whole-sequence path (the common LSTM, not coupled)."""
        return self.fused and not coupled

    def cell_clip_needed(self, c0s: list[np.ndarray], steps: int, clip: float, coupled: bool) -> bool:
        bf, bg = _BOUND[self.acts[0]], _BOUND[self.acts[1]]
        if bf is None or bg is None or bf > 1.0:
            return True
        start = max((float(np.max(np.abs(c))) for c in c0s if c.size), default=0.0)
        grow = max(start, bg) if coupled else start + steps * bf * bg
        return not grow < clip

    def run(self, xs: np.ndarray, h0s: list[np.ndarray], c0s: list[np.ndarray], clip: float,
            coupled: bool, yt: np.ndarray | None = None, aligned: bool = False
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``xs (S, X, M)`` (may be a column block view), per direction ``h0, c0 (M, H)`` ->
        ``ys (S, D, H, M)`` in each direction's processing order, ``h, c (D, H, M)``. ``yt (M, S, D, H)``
        (compiled groups only, :meth:`compiled`) also receives every ``h``: in processing order, or with
        ``aligned`` at its input time step (a backward direction's outputs reversed)."""
        s, _, m = xs.shape
        nd, hs = len(self.dirs), self.r.shape[2]
        empty = par.empty_aligned  # every per-step array starts on a cache line (see there)
        proj = empty((s, nd, 4 * hs, m))  # every step's input projection, gates contiguous
        for i, d in enumerate(self.dirs):
            np.matmul(d.w, xs[::-1] if d.reverse else xs, out=proj[:, i])
        compiled = self.compiled(coupled) and s > 0
        if not compiled:  # the compiled sequence adds the bias in its cell loop
            proj += self.b
        h, c = empty((nd, hs, m)), empty((nd, hs, m))  # private copies: the states may be read-only
        for i in range(nd):
            h[i], c[i] = h0s[i].T, c0s[i].T
        ys = empty((s, nd, hs, m))
        tmp = empty((nd, 4 * hs, m))
        th = empty((nd, hs, m))
        gate, block, cell = self.fns
        peep = self.peep
        do_clip = self.cell_clip_needed(c0s, s, clip, coupled)
        lim = F32(clip)
        if compiled:
            from harness.executors.ops import _jit

            want = yt is not None
            _jit.lstm_sequence(proj, self.r, self.b_rows, h, c, ys, tmp, lim, do_clip,
                               yt if want else _NO_YT, self.aligned if aligned else self.in_order, want)
            return ys, ys[-1], c
        if yt is not None:
            raise ValueError("only the compiled sequence writes the layer's output order (yt)")
        with np.errstate(over="ignore"):
            for k in range(s):
                g = proj[k]
                np.matmul(self.r, h, out=tmp)
                g += tmp
                gi, gf, go, gz = g[:, :hs], g[:, hs:2 * hs], g[:, 2 * hs:3 * hs], g[:, 3 * hs:]
                if peep is not None:
                    gi += peep[0] * c
                    gf += peep[1] * c
                    gate(g[:, :2 * hs])
                else:
                    gate(g[:, :3 * hs])
                block(gz)
                if coupled:  # c = c (1 - i) + i z = c + i (z - c)
                    gz -= c
                    gz *= gi
                    c += gz
                else:
                    c *= gf
                    gi *= gz
                    c += gi
                if do_clip:
                    np.clip(c, -lim, lim, out=c)
                if peep is not None:
                    go += peep[2] * c
                    gate(go)
                if self.acts[2] == "tanh":
                    np.tanh(c, out=th)
                else:
                    np.copyto(th, c)
                    cell(th)
                h = ys[k]
                np.multiply(go, th, out=h)
        return ys, h, c


def groups(dirs: list[Direction]) -> list[Group]:
    """One lockstep group when the directions' activations agree, else one group per direction."""
    if all(d.acts == dirs[0].acts for d in dirs):
        return [Group(dirs)]
    return [Group([d]) for d in dirs]


def _blocks(m: int, n_threads: int, rows: int, min_work: int) -> list[tuple[int, int]]:
    """Column blocks of the ``m`` sequences, one per thread, each at least :data:`MIN_BLOCK` wide and
    with a per-step gate array (``rows`` x width) of at least ``min_work`` elements."""
    k = max(1, min(n_threads, m // MIN_BLOCK, rows * m // min_work))
    return [(m * i // k, m * (i + 1) // k) for i in range(k)]


def run_lstm(gs: list[Group], xs: np.ndarray, states: list[tuple[np.ndarray, np.ndarray]], clip: float,
             coupled: bool, output_order: bool = False, aligned: bool = False
             ) -> tuple[list[tuple[np.ndarray | None, np.ndarray, np.ndarray]], np.ndarray | None]:
    """Run the groups over column blocks of the M sequences of ``xs (S, X, M)``, concurrently where
    threads allow. ``states``: per direction (in group order) ``(h0, c0)`` as ``(M, H)``. Returns per
    direction ``(ys (S, H, M), h (H, M), c (H, M))``, ys in processing order, and None; or, with
    ``output_order`` when one compiled group runs every direction, ``(None, h, c)`` per direction and every
    output as ``yt (M, S, D*H)`` instead: the directions' channels concatenated, in processing order or with
    ``aligned`` at the input's time step (the layer's output order, written by each block's own thread).
    """
    s, _, m = xs.shape
    hs = gs[0].r.shape[2]
    n = par.threads()
    rows = max(len(g.dirs) for g in gs) * 4 * hs
    min_work = MIN_TASK_WORK_COMPILED if all(g.compiled(coupled) for g in gs) else MIN_TASK_WORK
    blocks = _blocks(m, n, rows, min_work)
    nd = len(gs[0].dirs)
    yt = (par.empty_aligned((m, s, nd, hs)) if output_order and len(gs) == 1 and gs[0].compiled(coupled) and s
          else None)
    flat = None if yt is None else yt.reshape(m, s, nd * hs)
    if len(gs) == 1 and len(blocks) == 1:  # one task over every column: its arrays are the results (no copy)
        ys, h, c = gs[0].run(xs, [v[0] for v in states], [v[1] for v in states], clip, coupled, yt, aligned)
        return [(None if yt is not None else ys[:, j], h[j], c[j]) for j in range(nd)], flat
    first = np.cumsum([0] + [len(g.dirs) for g in gs])
    results = [(None if yt is not None else np.empty((s, len(g.dirs), hs, m), F32),
                np.empty((len(g.dirs), hs, m), F32), np.empty((len(g.dirs), hs, m), F32)) for g in gs]
    tasks = [(i, a, b) for i in range(len(gs)) for a, b in blocks]

    def run(lo: int, hi: int) -> None:
        for i, a, b in tasks[lo:hi]:
            st = states[first[i]:first[i + 1]]
            ys, h, c = gs[i].run(xs[:, :, a:b], [v[0][a:b] for v in st], [v[1][a:b] for v in st], clip, coupled,
                                 None if yt is None else yt[a:b], aligned)
            out = results[i]
            out[1][..., a:b], out[2][..., a:b] = h, c
            if out[0] is not None:
                out[0][..., a:b] = ys

    width = blocks[0][1] - blocks[0][0]
    if len(tasks) == 1 or rows * width < min_work:
        run(0, len(tasks))
    else:  # pool workers, single-threaded BLAS (for_chunks holds owned_threads)
        par.for_chunks(run, len(tasks), 1, n_threads=min(n, len(tasks)))
    return [(None if ys is None else ys[:, j], h[j], c[j]) for ys, h, c in results for j in range(h.shape[0])], flat


class _LSTMBase(_Recurrent):
    def step_inputs(self, blobs: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """What each gate matrix multiplies, for calibration observers (the op's run is untouched):
        per direction, in ``weightParams`` order, ``(x rows (S*M, X), h_{t-1} rows (S*M, H))`` --
        the input at every step and the hidden state the recurrent matrices see at that step
        (``h_0`` first), computed by running the layer on ``blobs`` (its inputs) as :meth:`run_blobs` would."""
        x, *st = self.inputs_of(blobs) + [None] * 4
        xs, n, b = self.sequence_t(x)
        states = []
        for d in range(sum(len(g.dirs) for g in self.groups)):
            states.append((self.state(st[2 * d], n, b, "the initial hidden state"),
                           self.state(st[2 * d + 1], n, b, "the initial cell state")))
        outs, _ = run_lstm(self.groups, xs, states, self.cell_clip, self.coupled)
        rows = xs.transpose(0, 2, 1).reshape(-1, xs.shape[1])
        res = []
        for (h0, _), (ys, _, _) in zip(states, outs):
            prev = np.concatenate([f32(h0).T[None], ys[:-1]], axis=0)  # (S, H, M) in processing order
            res.append((rows, prev.transpose(0, 2, 1).reshape(-1, prev.shape[1])))
        return res

    def sequence_t(self, x: np.ndarray) -> tuple[np.ndarray, int, int]:
        """``(N, S, B, X, 1, 1)`` -> ``(S, X, N*B)`` float32 (one transposing copy), and N, B."""
        if x is None or x.ndim != 6 or x.shape[-2:] != (1, 1) or x.shape[3] != self.in_size:
            self.sequence(x)  # raises the shared error message
        n, s, b = x.shape[:3]
        xt = np.empty((s, self.in_size, n, b), F32)
        np.copyto(xt, f32(x)[..., 0, 0].transpose(1, 3, 0, 2))
        return xt.reshape(s, self.in_size, n * b), n, b

    def lstm_params(self, params: Any) -> None:
        lp = params.params
        self.seq_out = bool(lp.sequenceOutput)
        self.cell_clip = float(lp.cellClipThreshold) or 50.0
        self.coupled = bool(lp.coupledInputAndForgetGate)

    def out_blob(self, y: np.ndarray, n: int, b: int) -> np.ndarray:
        """``(S, C, M)`` -> ``(N, S, B, C, 1, 1)``."""
        s, c, _ = y.shape
        return np.ascontiguousarray(y.reshape(s, c, n, b).transpose(2, 0, 3, 1))[..., None, None]

    def ordered_blob(self, yt: np.ndarray, n: int, b: int) -> np.ndarray:
        """:func:`run_lstm`'s ``yt (M, S, C)`` -> ``(N, S, B, C, 1, 1)`` (a view when B = 1)."""
        _, s, c = yt.shape
        return np.ascontiguousarray(yt.reshape(n, b, s, c).transpose(0, 2, 1, 3))[..., None, None]

    def state_blob(self, v: np.ndarray, n: int, b: int) -> np.ndarray:
        """``(H, M)`` -> ``(N, 1, B, H, 1, 1)``."""
        return self.out_blob(v[None], n, b)


@register("uniDirectionalLSTM")
class UniDirectionalLSTM(_LSTMBase):
    """``(x[, h0[, c0]]) -> (y[, h_T[, c_T]])``."""

    n_inputs = (1, 3)
    n_outputs = (1, 3)

    def build(self, params, ctx) -> None:
        self.in_size, self.out_size = int(params.inputVectorSize), int(params.outputVectorSize)
        self.lstm_params(params)
        self.groups = groups([direction(self, "weightParams", self.in_size, self.out_size, params.params,
                                        params.activations, "activations", bool(params.reverseInput))])

    def run_blobs(self, blobs) -> None:
        x, *st = self.inputs_of(blobs) + [None, None]
        xs, n, b = self.sequence_t(x)
        h0 = self.state(st[0], n, b, "the initial hidden state")
        c0 = self.state(st[1], n, b, "the initial cell state")
        ((ys, h, c),), yt = run_lstm(self.groups, xs, [(h0, c0)], self.cell_clip, self.coupled, self.seq_out)
        y = self.ordered_blob(yt, n, b) if yt is not None else self.out_blob(ys if self.seq_out else ys[-1:], n, b)
        self.write(blobs, [y, self.state_blob(h, n, b), self.state_blob(c, n, b)])


@register("biDirectionalLSTM")
class BiDirectionalLSTM(_LSTMBase):
    """``(x[, h0f, c0f, h0b, c0b]) -> (y[, h_f, c_f, h_b, c_b])``; y concatenates forward and backward on channels."""

    n_inputs = (1, 5)
    n_outputs = (1, 5)

    def build(self, params, ctx) -> None:
        self.in_size, self.out_size = int(params.inputVectorSize), int(params.outputVectorSize)
        self.lstm_params(params)
        if len(params.weightParams) != 2:
            raise self.error(f"weightParams must hold 2 entries (forward, backward), got {len(params.weightParams)}")
        x, h, lp = self.in_size, self.out_size, params.params
        self.groups = groups([direction(self, "weightParams.0", x, h, lp, params.activationsForwardLSTM, "activationsForwardLSTM", False),
                     direction(self, "weightParams.1", x, h, lp, params.activationsBackwardLSTM, "activationsBackwardLSTM", True)])

    def run_blobs(self, blobs) -> None:
        x, *st = self.inputs_of(blobs) + [None] * 4
        xs, n, b = self.sequence_t(x)
        names = ("forward hidden", "forward cell", "backward hidden", "backward cell")
        h0f, c0f, h0b, c0b = (self.state(st[i], n, b, f"the initial {names[i]} state") for i in range(4))
        ((yf, hf, cf), (yb, hb, cb)), yt = run_lstm(self.groups, xs, [(h0f, c0f), (h0b, c0b)], self.cell_clip,
                                                    self.coupled, self.seq_out, aligned=True)
        if yt is not None:  # forward and backward channels, each at its input step
            y = self.ordered_blob(yt, n, b)
        elif self.seq_out:
            y = self.out_blob(np.concatenate([yf, yb[::-1]], axis=1), n, b)  # align backward outputs with the input steps
        else:
            y = self.out_blob(np.concatenate([yf[-1:], yb[-1:]], axis=1), n, b)
        self.write(blobs, [y] + [self.state_blob(v, n, b) for v in (hf, cf, hb, cb)])
