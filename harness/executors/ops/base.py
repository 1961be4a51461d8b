"""The op base class and the helpers every op module uses.

An op is the compiled form of one Core ML layer. It is built once per model
(``__init__`` → :meth:`Op.build`: read params, decode weights, validate) and
run once per batch (:meth:`Op.run` or :meth:`Op.run_blobs`).

Blob layout (the one rule every op relies on)
---------------------------------------------
Every blob is a float32 ``numpy`` array with **one extra leading axis, the
sample axis**, in front of the shape Core ML itself would give that blob for
one sample::

    internal array shape == (N, *core_ml_shape_for_one_sample)

* A converted (EXACT_ARRAY_MAPPING) model declaring ``[1, 3, 32, 32]`` sees its
  input as ``(N, 1, 3, 32, 32)``; the ``1`` is the model's own batch dim.
* A legacy (RANK5_ARRAY_MAPPING) model sees every blob as rank 5
  ``(Seq, Batch, C, H, W)`` per sample, so internally ``(N, S, 1, C, H, W)``.
* So the Core ML rank of a blob is always ``x.ndim - 1`` (:func:`rank`).
  Ops never need the spec to tell them ranks.
* Negative axes mean the same in both views; a non-negative Core ML axis ``a``
  is internal axis ``a + 1`` (:func:`axis`).
* Static shapes baked into layers (``reshapeStatic.targetShape``,
  ``loadConstantND.shape``, ``fillStatic``...) are *per-sample* shapes: apply
  them behind the sample axis, ``x.reshape((x.shape[0], *target))``. A leading
  ``1`` in such a shape is the model's batch dim of one sample and stays 1;
  nothing has to be patched to N.
* Constants (``loadConstant``/``loadConstantND``, weights used as blobs) carry a
  sample axis of size 1 and broadcast against N. Use ``x.shape[0]``, never a
  global N; when an op must materialise the sample axis (concat, stack,
  scatter...), call :func:`broadcast_samples` first.
* Right-aligned (numpy-style) broadcasting between blobs of different Core ML
  rank must first align ranks behind the sample axis: :func:`align_ranks`.

Inputs of a layer are looked up by name in the blob dict, outputs stored by
name; layers run in spec order. Ops must be vectorised over the sample axis
(no Python loop over samples) and keep float32.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from harness.errors import ExecutorError

if TYPE_CHECKING:  # pragma: no cover
    from harness.executors.runner import BuildContext

F32 = np.float32
Blobs = dict[str, np.ndarray]


class Op:
    """One compiled layer.

    Subclasses set up state in :meth:`build` and compute in :meth:`run`
    (``inputs -> output`` or a tuple of outputs, one per ``layer.output``).
    Ops that read or write blobs other than their declared inputs/outputs
    (``loop``, ``branch``, ``copy`` into an outer blob...) override
    :meth:`run_blobs` instead, which receives the whole blob dict.

    Attributes available to subclasses: ``layer`` (the protobuf layer),
    ``name``, ``type`` (the layer's ``WhichOneof("layer")`` name),
    ``params`` (the type-specific params message), ``inputs``, ``outputs``
    (lists of blob names), ``ctx`` (the :class:`BuildContext`).
    """

    #: Allowed numbers of inputs (None: any). Checked at build time.
    n_inputs: int | tuple[int, int] | None = None
    #: Allowed numbers of outputs (None: any). Checked at build time.
    n_outputs: int | tuple[int, int] | None = 1

    def __init__(self, layer: Any, ctx: "BuildContext") -> None:
        self.layer = layer
        self.name: str = layer.name
        self.type: str = layer.WhichOneof("layer")
        self.params = getattr(layer, self.type)
        self.inputs: list[str] = list(layer.input)
        self.outputs: list[str] = list(layer.output)
        self.ctx = ctx
        self._check_count("input", len(self.inputs), self.n_inputs)
        self._check_count("output", len(self.outputs), self.n_outputs)
        self.build(self.params, ctx)

    # -- to override -------------------------------------------------------
    def build(self, params: Any, ctx: "BuildContext") -> None:
        """Read params and decode weights once per model (optional)."""

    def run(self, *inputs: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        """Compute the outputs from the input blobs (internal layout)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither run nor run_blobs")

    def run_blobs(self, blobs: Blobs) -> None:
        """Read inputs from ``blobs``, run, write outputs into ``blobs``."""
        try:
            xs = [blobs[n] for n in self.inputs]
        except KeyError as e:
            raise self.error(f"its input blob {e.args[0]!r} has not been produced by any earlier layer or input") from None
        ys = self.run(*xs)
        if len(self.outputs) == 1:
            blobs[self.outputs[0]] = ys  # type: ignore[assignment]
        else:
            if not isinstance(ys, (tuple, list)) or len(ys) != len(self.outputs):
                raise self.error(f"produced {1 if not isinstance(ys, (tuple, list)) else len(ys)} outputs, expected {len(self.outputs)}")
            for n, y in zip(self.outputs, ys):
                blobs[n] = y

    # -- helpers -----------------------------------------------------------
    def error(self, message: str) -> ExecutorError:
        """An :class:`ExecutorError` naming this layer and its type."""
        return ExecutorError(f"layer {self.name!r} ({self.type}): {message}")

    def weights(self, field: str, shape: Sequence[int], channel_axis: int = 0) -> np.ndarray:
        """Decode the WeightParams at dotted ``field`` of this layer's params to float32 ``shape``."""
        return self.ctx.weights(self, field, tuple(int(s) for s in shape), channel_axis)

    def has_weights(self, field: str) -> bool:
        """True if the WeightParams at ``field`` holds any values."""
        from harness.executors.weights import has_values
        return has_values(_get_field(self.params, field))

    def _check_count(self, what: str, n: int, allowed: int | tuple[int, int] | None) -> None:
        if allowed is None:
            return
        lo, hi = (allowed, allowed) if isinstance(allowed, int) else allowed
        if not lo <= n <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.error(f"has {n} {what}s, the executor supports {want}")


def _get_field(msg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        msg = msg[int(part)] if part.isdigit() else getattr(msg, part)
    return msg


# ---------------------------------------------------------------------------
# Layout helpers
# ---------------------------------------------------------------------------

def rank(x: np.ndarray) -> int:
    """Core ML rank of an internal blob (its ndim without the sample axis)."""
    return x.ndim - 1


def axis(a: int, x: np.ndarray | int) -> int:
    """Internal (non-negative) numpy axis of Core ML axis ``a`` of blob ``x`` (or of Core ML rank ``x``).

    Raises ``ValueError`` when ``a`` is out of range for the blob's rank.
    """
    r = x if isinstance(x, int) else rank(x)
    if not -r <= a < r:
        raise ValueError(f"axis {a} is out of range for a rank-{r} tensor")
    return (a % r) + 1


def align_ranks(*xs: np.ndarray) -> list[np.ndarray]:
    """Insert size-1 axes after the sample axis so all blobs have the same rank (right-aligned broadcasting)."""
    r = max(x.ndim for x in xs)
    return [x if x.ndim == r else x.reshape((x.shape[0],) + (1,) * (r - x.ndim) + x.shape[1:]) for x in xs]


def broadcast_samples(*xs: np.ndarray) -> list[np.ndarray]:
    """Broadcast the sample axis of every blob to the common N (constants carry N=1)."""
    n = max(x.shape[0] for x in xs)
    return [x if x.shape[0] == n else np.broadcast_to(x, (n,) + x.shape[1:]) for x in xs]


def constant(value: np.ndarray) -> np.ndarray:
    """A constant blob: float32 with a sample axis of size 1."""
    v = np.asarray(value, dtype=F32)
    return v.reshape((1,) + v.shape)


def f32(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 (no copy when it already is)."""
    return x if x.dtype == F32 else x.astype(F32)


ElementFn = Callable[[np.ndarray], np.ndarray]
