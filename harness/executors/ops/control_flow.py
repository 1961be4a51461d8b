"""Control flow: ``loop``, ``branch``, ``copy``, ``loopBreak``, ``loopContinue`` (spec >= 4).

Sub-networks run over the *same* blob dict as the outer network, so bodies
read and write outer blobs (the converter's GRU is a ``loop`` whose body
``copy``-s new states over outer blobs).

Conditions and per-sample control flow
--------------------------------------
A condition (``branch`` input, loop ``conditionVar``, loop count input) is
one value per sample; it is true when ``|value| > 1e-6``. When every sample
agrees (always the case for conditions computed from constants and counters,
like the converter's loops), the sub-network runs once over the whole batch.
When samples disagree, the executor stays vectorised by masking:

* ``branch`` runs both branches (each on its own view of the blobs) and
  merges every blob either branch wrote with ``where(cond, if, else)``
  per sample;
* ``loop`` keeps iterating while any sample is still running, and after each
  iteration restores, for finished samples, every blob the body overwrote.

Blobs whose per-sample shape a masked merge would have to combine across
different shapes raise an :class:`~harness.errors.ExecutorError`.
``loopBreak``/``loopContinue`` work when the batch agrees on reaching them;
reaching them under a per-sample branch raises an error.
"""
from __future__ import annotations

import numpy as np

from harness.errors import ExecutorError
from harness.executors.ops.base import Blobs, Op, broadcast_samples
from harness.executors.registry import register

#: Values with ``|v| <= 1e-6`` are False (NeuralNetwork.proto, branch and loop).
FALSE_TOLERANCE = 1e-6

#: Safety net for while loops whose condition never turns false.
MAX_WHILE_ITERATIONS = 1_000_000


class _LoopSignal(ExecutorError):
    """Raised by loopBreak/loopContinue and caught by the innermost enclosing loop.

    An :class:`ExecutorError` so that one reached outside any loop surfaces
    as a clear error instead of a traceback.
    """

    def __init__(self, kind: str, layer: str) -> None:
        super().__init__(f"layer {layer!r} ({'loopBreak' if kind == 'break' else 'loopContinue'}) "
                         "was reached outside of any loop")
        self.kind, self.layer = kind, layer


def truth(op: Op, x: np.ndarray, what: str) -> np.ndarray:
    """Per-sample truth of a scalar condition blob: bool array ``(N or 1,)``."""
    v = x.reshape(x.shape[0], -1)
    if v.shape[1] != 1:
        raise op.error(f"{what} must be a scalar (one value per sample), got per-sample shape {tuple(x.shape[1:])}")
    return np.abs(v[:, 0]) > FALSE_TOLERANCE


def _merge(op: Op, mask: np.ndarray, new: np.ndarray, old: np.ndarray, name: str) -> np.ndarray:
    """``where(mask, new, old)`` per sample (mask ``(N,)``)."""
    if new.shape[1:] != old.shape[1:]:
        raise op.error(
            f"blob {name!r} has per-sample shape {tuple(new.shape[1:])} on some samples and {tuple(old.shape[1:])} "
            f"on others (the samples take different control-flow paths); run them one at a time")
    new, old = broadcast_samples(new, old)
    if mask.shape[0] != new.shape[0]:
        new, old = np.broadcast_to(new, (mask.shape[0],) + new.shape[1:]), np.broadcast_to(old, (mask.shape[0],) + old.shape[1:])
    return np.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)


@register("copy")
class Copy(Op):
    """``output = input``; the only layer allowed to overwrite an existing blob."""

    n_inputs = 1

    def run(self, x):
        return x


@register("loopBreak")
class LoopBreak(Op):
    """Leave the innermost enclosing loop."""

    n_inputs = 0
    n_outputs = 0

    def run_blobs(self, blobs: Blobs) -> None:
        raise _LoopSignal("break", self.name)


@register("loopContinue")
class LoopContinue(Op):
    """Skip the rest of this iteration of the innermost enclosing loop."""

    n_inputs = 0
    n_outputs = 0

    def run_blobs(self, blobs: Blobs) -> None:
        raise _LoopSignal("continue", self.name)


@register("branch")
class Branch(Op):
    """Run ``ifBranch`` where the input is true, ``elseBranch`` (optional) where it is false."""

    n_inputs = 1
    n_outputs = 0

    def build(self, params, ctx) -> None:
        self.if_net = ctx.compile(params.ifBranch)
        self.else_net = ctx.compile(params.elseBranch)

    def run_blobs(self, blobs: Blobs) -> None:
        try:
            cond = blobs[self.inputs[0]]
        except KeyError:
            raise self.error(f"its condition blob {self.inputs[0]!r} has not been produced") from None
        t = truth(self, cond, "the branch condition")
        if t.all():
            self.if_net.run(blobs)
            return
        if not t.any():
            self.else_net.run(blobs)
            return
        # Samples disagree: run both branches on copies and merge per sample.
        before = dict(blobs)
        results = []
        for net in (self.if_net, self.else_net):
            view = dict(before)
            try:
                net.run(view)
            except _LoopSignal as s:
                raise ExecutorError(
                    f"layer {s.layer!r} ({'loopBreak' if s.kind == 'break' else 'loopContinue'}) is reached by only "
                    f"some samples of the batch (branch {self.name!r} differs per sample); run them one at a time") from None
            results.append(view)
        if_b, else_b = results
        for name in set(if_b) | set(else_b):
            a, b = if_b.get(name), else_b.get(name)
            if a is not None and a is before.get(name) and b is before.get(name):
                continue
            if a is None or b is None:  # produced by one branch only: take it as is
                blobs[name] = a if a is not None else b
            else:
                blobs[name] = _merge(self, t, a, b, name)


@register("loop")
class Loop(Op):
    """A for/while loop (NeuralNetwork.proto ``LoopLayerParams``, cases 1-3) over outer blobs."""

    n_inputs = (0, 1)
    n_outputs = 0

    def build(self, params, ctx) -> None:
        self.max_iter = int(params.maxLoopIterations)
        self.cond_var = params.conditionVar
        has_cond = len(params.conditionNetwork.layers) > 0
        if has_cond != bool(self.cond_var):
            raise self.error("conditionVar and conditionNetwork must be given together")
        self.cond_net = ctx.compile(params.conditionNetwork) if has_cond else None
        self.body = ctx.compile(params.bodyNetwork)

    def _condition(self, blobs: Blobs) -> np.ndarray:
        self.cond_net.run(blobs)  # type: ignore[union-attr]
        if self.cond_var not in blobs:
            raise self.error(f"its condition network did not produce conditionVar {self.cond_var!r}")
        return truth(self, blobs[self.cond_var], f"conditionVar {self.cond_var!r}")

    def _limit(self, blobs: Blobs) -> np.ndarray | int | None:
        """Per-sample iteration limits (input), the static maxLoopIterations, or None (unbounded while)."""
        if self.inputs:
            x = blobs.get(self.inputs[0])
            if x is None:
                raise self.error(f"its iteration-count blob {self.inputs[0]!r} has not been produced")
            v = x.reshape(x.shape[0], -1)
            if v.shape[1] != 1:
                raise self.error(f"the iteration count must be a scalar, got per-sample shape {tuple(x.shape[1:])}")
            return np.rint(v[:, 0]).astype(np.int64)
        if self.cond_net is None or self.max_iter > 0:
            return self.max_iter
        return None

    def run_blobs(self, blobs: Blobs) -> None:
        limit = self._limit(blobs)
        active: np.ndarray | None = None  # samples still running; None: all of them
        it = 0
        while True:
            run = np.ones(1, bool)  # shape (1,) stands for "every sample"
            if limit is not None:
                run = run & np.asarray(it < limit).reshape(-1)
            if self.cond_net is not None:  # evaluated after every body, as in the proto's pseudo-code
                run = run & self._condition(blobs)
            if active is not None:
                if run.shape[0] not in (1, active.shape[0]):
                    raise self.error(f"its condition has {run.shape[0]} samples, the loop started with {active.shape[0]}")
                run = run & active
            if not run.any():
                return
            if limit is None and it >= MAX_WHILE_ITERATIONS:
                raise self.error(f"its condition is still true after {MAX_WHILE_ITERATIONS} iterations")
            masked = not run.all()
            before = dict(blobs) if masked else {}
            stop = False
            try:
                self.body.run(blobs)
            except _LoopSignal as s:
                stop = s.kind == "break"
            if masked:
                self._restore(blobs, before, run)
            if stop:
                return
            if run.shape[0] > 1:
                active = run
            it += 1

    def _restore(self, blobs: Blobs, before: Blobs, run: np.ndarray) -> None:
        """Undo, for samples not in ``run``, what the body wrote over existing blobs."""
        for name, new in list(blobs.items()):
            old = before.get(name)
            if old is not None and new is not old:
                blobs[name] = _merge(self, run, new, old, name)
