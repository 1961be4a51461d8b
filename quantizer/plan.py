"""The quantization plan: which codec each weight tensor of a model gets.

A :class:`QuantPlan` maps ``(layer name, field)`` to a :class:`~quantizer.Codec`
(mode, nbits and, for a calibration-aware codec, the algorithm with its options
and the digest of the layer statistics it reads) or ``None`` (keep the tensor
as it is). It is an immutable value: equal plans
(same effective entries) hash equal and share a stable :meth:`QuantPlan.digest`,
so a sweep can recognise two trials that are the same experiment.
:func:`quantizer.build_plan` compiles a global setting into a plan and
:func:`quantizer.apply_plan` carries one out.

>>> import quantizer                                               # doctest: +SKIP
>>> plan = quantizer.build_plan("model.mlmodel", 4, "kmeans_lut")    # doctest: +SKIP
>>> plan = plan.replace({("fc_out", "weights"): quantizer.Codec("linear", 8)})  # doctest: +SKIP
>>> small = quantizer.apply_plan("model.mlmodel", plan)            # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Iterator, Mapping

from .codecs import Codec
from .errors import InvalidArgumentError

__all__ = ["QuantPlan", "Key", "as_plan"]

#: A plan key: ``(layer name, field)``, the field a dotted path inside the layer's params.
Key = tuple[str, str]


class QuantPlan(Mapping):
    """Immutable mapping ``(layer name, field) -> Codec | None`` (``None`` = keep).

    Values may be given as :class:`Codec`, ``None``, or a ``(mode, nbits)``
    tuple. Equality, ``hash`` and :meth:`digest` consider only the entries that
    change something (a ``None`` entry equals a missing one).

    >>> p = QuantPlan({("fc", "weights"): Codec("linear", 8), ("fc", "bias"): None})
    >>> p == QuantPlan({("fc", "weights"): ("linear", 8)})
    True
    >>> p.digest() == QuantPlan({("fc", "weights"): Codec("linear", 8)}).digest()
    True
    """

    __slots__ = ("_entries", "_effective", "_hash")

    def __init__(self, entries: Mapping[Key, Any] | Iterable[tuple[Key, Any]] = ()) -> None:
        items = entries.items() if isinstance(entries, Mapping) else entries
        out: dict[Key, Codec | None] = {}
        for key, value in items:
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
                raise InvalidArgumentError(f"plan keys are (layer name, field) string pairs, got {key!r}")
            out[key] = _as_codec(value, key)
        self._entries = out
        self._effective = frozenset((k, v) for k, v in out.items() if v is not None)
        self._hash = hash(self._effective)

    def __getitem__(self, key: Key) -> Codec | None:
        return self._entries[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QuantPlan):
            return self._effective == other._effective
        return NotImplemented

    def __repr__(self) -> str:
        counts = self.summary()
        body = ", ".join(f"{tok}: {n}" for tok, n in sorted(counts.items()))
        return f"QuantPlan({len(self._effective)} tensors; {body or 'nothing to do'}; digest {self.digest()[:12]})"

    def digest(self) -> str:
        """Stable hex digest (sha256) of the effective entries; equal plans, equal digests."""
        lines = sorted(f"{layer}\t{field}\t{codec.token()}" for (layer, field), codec in self._effective)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def summary(self) -> dict[str, int]:
        """How many tensors each codec (by token) is applied to."""
        out: dict[str, int] = {}
        for _, codec in self._effective:
            out[codec.token()] = out.get(codec.token(), 0) + 1
        return out

    @property
    def codecs(self) -> frozenset[Codec]:
        """The distinct codecs the plan applies."""
        return frozenset(c for _, c in self._effective)

    @property
    def quantizes(self) -> bool:
        """True when some codec is below 16 bits (then :func:`apply_plan` fuses first)."""
        return any(c.quantizes for c in self.codecs)

    def replace(self, entries: Mapping[Key, Any]) -> "QuantPlan":
        """A new plan with ``entries`` added or overriding existing ones."""
        merged = dict(self._entries)
        merged.update(QuantPlan(entries)._entries)
        return QuantPlan(merged)

    def to_records(self) -> list[dict[str, Any]]:
        """Entries as JSON-friendly rows ``{layer, field, mode, nbits}`` (keep entries omitted);
        a calibration-aware entry adds ``algorithm``, ``bias_correction`` and ``stats_digest``."""
        out = []
        for (layer, field), c in sorted(self._effective, key=lambda kv: kv[0]):
            row: dict[str, Any] = {"layer": layer, "field": field, "mode": c.mode, "nbits": c.nbits}
            if c.calibrated:
                row.update(algorithm=c.algorithm, bias_correction=c.bias_correction, stats_digest=c.stats_digest)
            out.append(row)
        return out


def _as_codec(value: Any, key: Key) -> Codec | None:
    if value is None or isinstance(value, Codec):
        return value
    if isinstance(value, tuple) and 1 <= len(value) <= 3:
        return Codec(*value)
    raise InvalidArgumentError(
        f"plan entry {key!r} must be a Codec, a (mode, nbits) tuple or None (keep), got {value!r}"
    )


def as_plan(plan: Any) -> QuantPlan:
    """``plan`` as a :class:`QuantPlan` (a mapping is converted; anything else raises)."""
    if isinstance(plan, QuantPlan):
        return plan
    if not isinstance(plan, Mapping):
        raise InvalidArgumentError(f"plan must be a QuantPlan or a mapping, got {type(plan).__name__}")
    return QuantPlan(plan)
