"""A model's weight tensors grouped into units (layers or tensors), with each codec's plan split per unit.

:class:`UnitPlans` is the decomposition ``search=sensitivity`` and
``search=mixed`` share: the plan of "unit u gets codec c" is exactly the
entries of codec c's uniform plan (coremltools' tensor selection, every layer
selected) that belong to u, so a unit quantized alone gets what it gets in the
uniform sweep, and one codec for every unit gives back the uniform plan.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from harness.errors import ConfigError
from harness.search.choices import FLOAT, Choice
from harness.space import Setting

UNIT_KINDS = ("layer", "tensor")


class UnitPlans:
    """The uniform plan of every codec, split into per-unit pieces.

    A *unit* is a layer name (``unit="layer"``) or a ``layer.field`` tensor
    (``unit="tensor"``). :meth:`plan` assembles a plan from one choice per
    unit; an assignment of the same choice to every unit gives back the
    uniform plan of that codec (same digest).

    Args:
        model: the float model spec.
        choices: codecs units may get (``FLOAT`` = keep, no entries).
        build_plan: uniform :class:`~harness.space.Setting` -> QuantPlan.
        unit: ``layer`` or ``tensor``.
    """

    def __init__(self, model: Any, choices: Sequence[Choice], build_plan: Callable[[Setting], Any],
                 unit: str = "layer"):
        import quantizer
        from quantizer.walk import iter_layers

        if unit not in UNIT_KINDS:
            raise ConfigError(f"search.options.unit={unit!r}; choose one of {', '.join(UNIT_KINDS)}.")
        self.model = model
        self.unit_kind = unit
        self._weight_counts: dict[str, int] | None = None
        self.choices = list(choices)
        self.by_label = {c.label: c for c in self.choices}
        self.uniform: dict[str, Any] = {}
        self.pieces: dict[str, dict[str, dict[tuple[str, str], Any]]] = {}
        order = {layer.name: i for i, layer in enumerate(iter_layers(model))}
        slot_order = {(t.layer, t.field): i for i, t in enumerate(quantizer.weight_tensors(model))}
        self.layer_type = {layer.name: layer.WhichOneof("layer") for layer in iter_layers(model)}
        units: dict[str, tuple[int, int, str]] = {}
        self._layer: dict[str, str] = {}
        for ch in self.choices:
            if ch.is_float:
                continue
            plan = build_plan(ch.setting())
            self.uniform[ch.label] = plan
            split: dict[str, dict[tuple[str, str], Any]] = {}
            for key, codec in plan.items():
                if codec is None:
                    continue
                u = self.unit_of(key)
                split.setdefault(u, {})[key] = codec
                units.setdefault(u, (order.get(key[0], len(order)), slot_order.get(key, len(slot_order)), key[1]))
                self._layer[u] = key[0]
            self.pieces[ch.label] = split
        if not units:
            raise ConfigError("The model has no weight tensor any codec of the search space would quantize; "
                              "nothing to search.")
        # Below 16 bits the model is fused first (coremltools' batchnorm/scale/bias folds): a layer that
        # only the fp16 plan names is folded away by any n-bit codec. It is not a unit of its own; it
        # gets fp16 when every unit does (so the uniform fp16 assignment is the uniform fp16 plan).
        quantizing = {u for c in self.choices if not c.is_float and c.nbits < 16 for u in self.pieces[c.label]}
        self.hidden: list[str] = sorted((u for u in units if quantizing and u not in quantizing),
                                        key=lambda u: (units[u], u))
        self.units: list[str] = sorted((u for u in units if u not in self.hidden), key=lambda u: (units[u], u))

    def unit_of(self, key: tuple[str, str]) -> str:
        """The unit a ``(layer, field)`` tensor belongs to."""
        return key[0] if self.unit_kind == "layer" else f"{key[0]}.{key[1]}"

    def layer_of(self, unit: str) -> str:
        """The layer name of a unit."""
        return self._layer.get(unit, unit)

    def entries(self, unit: str, label: str) -> dict[tuple[str, str], Any]:
        """The plan entries of ``unit`` under codec ``label`` (empty for fp32 or an unselected unit)."""
        if label == FLOAT.label:
            return {}
        if label not in self.pieces:
            raise ConfigError(f"codec {label!r} is not in the search space ({', '.join(self.by_label)}).")
        return self.pieces[label].get(unit, {})

    def plan(self, assignment: Mapping[str, str]) -> Any:
        """The QuantPlan giving each unit its choice (units not named stay float)."""
        import quantizer

        entries: dict[tuple[str, str], Any] = {}
        for u, label in assignment.items():
            entries.update(self.entries(u, label))
        if self.hidden and self.units and all(assignment.get(u) == "fp16" for u in self.units):
            for u in self.hidden:
                entries.update(self.entries(u, "fp16"))
        return quantizer.QuantPlan(entries)

    def single(self, unit: str, label: str) -> Any:
        """The plan quantizing ``unit`` alone with codec ``label``."""
        return self.plan({unit: label})

    def weight_counts(self) -> dict[str, int]:
        """Unit -> number of weights any codec of the space quantizes in it."""
        if self._weight_counts is None:
            import quantizer

            counts: dict[str, int] = {}
            keys = {k for pieces in self.pieces.values() for p in pieces.values() for k in p}
            for t in quantizer.weight_tensors(self.model):
                if (t.layer, t.field) in keys:
                    u = self.unit_of((t.layer, t.field))
                    counts[u] = counts.get(u, 0) + t.count
            self._weight_counts = counts
        return self._weight_counts
