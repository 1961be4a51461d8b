"""The search space of a uniform sweep: lists of codec and selector values -> settings -> plans.

A :class:`Setting` is one point: global ``nbits`` and ``mode``, how the
values are chosen (``algorithm``: rtn, gptq, awkm; ``bias_correction``), plus
the layer selector thresholds. :meth:`SearchSpace.from_config` validates the lists
(``search.space`` and ``selector`` in the config; a wrong value raises a
:class:`~harness.errors.ConfigError` naming the key), :meth:`SearchSpace.grid`
enumerates the valid points and reports the invalid combinations it dropped,
and :func:`build_plan` compiles a setting to a :class:`quantizer.QuantPlan` for
a model. Trial parameters are scalars (Optuna categorical choices):
``skip_layer_types`` is written ``none`` or ``batchnorm+bias``. ``algorithm`` and
``bias_correction`` are search dimensions (trial parameters) only when the
space lists more than plain ``rtn`` / ``false``, so a round-to-nearest space
has exactly the parameters, grid points and plans it always had.

Example:
    >>> space = SearchSpace(nbits=(8, 1), modes=("linear", "linear_symmetric"))
    >>> points, dropped = space.grid()
    >>> [(s.nbits, s.mode) for s in points]
    [(8, 'linear'), (8, 'linear_symmetric'), (1, 'linear')]
    >>> dropped[0].reason
    'linear_symmetric needs at least 2 bits (one sign bit and one magnitude bit)'
"""
from __future__ import annotations

import importlib
import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import quantizer
from quantizer.codecs import ALGORITHM_MODES, ALGORITHMS

from harness.errors import ConfigError

#: Modes a sweep may search, the bit widths (16 = float16) and the layer types a selector may skip:
#: the quantizer's constants (one definition).
SWEEP_MODES = quantizer.QUANTIZATION_MODES
VALID_NBITS = quantizer.VALID_NBITS
SKIPPABLE_LAYER_TYPES = quantizer.SKIPPABLE_LAYER_TYPES
SELECTOR_KEYS = ("skip_layer_types", "minimum_conv_kernel_channels", "minimum_conv_weight_count",
                 "minimum_matrix_weight_count")
#: How stored values may be chosen (quantizer's one list).
SWEEP_ALGORITHMS = ALGORITHMS


def _as_bool(v: Any) -> bool:
    """A trial parameter or config value as a bool (``True``/``"true"``/``1``)."""
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def encode_skip(types: Sequence[str]) -> str:
    """``()`` -> ``'none'``; ``('bias', 'batchnorm')`` -> ``'batchnorm+bias'`` (sorted)."""
    return "+".join(sorted(types)) if types else "none"


def decode_skip(text: str) -> tuple[str, ...]:
    """Inverse of :func:`encode_skip`."""
    return () if text in ("", "none") else tuple(sorted(text.split("+")))


@dataclass(frozen=True)
class Setting:
    """One uniform setting: a codec for every selected weight, float for the rest."""

    nbits: int
    mode: str
    skip_layer_types: tuple[str, ...] = ()
    minimum_conv_kernel_channels: int = 0
    minimum_conv_weight_count: int = 0
    minimum_matrix_weight_count: int = 0
    algorithm: str = "rtn"
    bias_correction: bool = False

    def params(self) -> dict[str, int | str | bool]:
        """Every field as a scalar (the trial's columns; :meth:`SearchSpace.params` keeps the
        ones that are search dimensions)."""
        d = asdict(self)
        d["skip_layer_types"] = encode_skip(self.skip_layer_types)
        return d

    @property
    def calibrated(self) -> bool:
        """True when the setting's plan reads calibration statistics."""
        return self.algorithm != "rtn" or self.bias_correction

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Setting":
        """Inverse of :meth:`params` (missing selector keys take their neutral value)."""
        return cls(
            nbits=int(params["nbits"]), mode=str(params["mode"]),
            skip_layer_types=decode_skip(str(params.get("skip_layer_types", "none"))),
            minimum_conv_kernel_channels=int(params.get("minimum_conv_kernel_channels", 0)),
            minimum_conv_weight_count=int(params.get("minimum_conv_weight_count", 0)),
            minimum_matrix_weight_count=int(params.get("minimum_matrix_weight_count", 0)),
            algorithm=str(params.get("algorithm", "rtn")),
            bias_correction=_as_bool(params.get("bias_correction", False)),
        )

    @property
    def label(self) -> str:
        """A short file-name-safe description, e.g. ``kmeans_lut-4bit``, ``linear-4bit-gptq-bc`` or ``fp16``."""
        base = quantizer.codec_label(self.mode, self.nbits, self.algorithm if self.nbits < 16 else "rtn",
                                     self.bias_correction and self.nbits < 16)
        sel = []
        if self.skip_layer_types:
            sel.append("skip-" + "+".join(self.skip_layer_types))
        if self.minimum_conv_kernel_channels:
            sel.append(f"convch{self.minimum_conv_kernel_channels}")
        if self.minimum_conv_weight_count:
            sel.append(f"convw{self.minimum_conv_weight_count}")
        if self.minimum_matrix_weight_count:
            sel.append(f"matw{self.minimum_matrix_weight_count}")
        return "_".join([base] + sel)

    @property
    def selects_all(self) -> bool:
        """True when the selector quantizes every quantizable weight."""
        return not (self.skip_layer_types or self.minimum_conv_kernel_channels
                    or self.minimum_conv_weight_count or self.minimum_matrix_weight_count)


@dataclass(frozen=True)
class Dropped:
    """A grid point removed before the run, and why."""

    nbits: int
    mode: str
    reason: str
    algorithm: str = "rtn"
    bias_correction: bool = False


def codec_problem(nbits: int, mode: str, lut_function: Callable | None, algorithm: str = "rtn",
                  bias_correction: bool = False) -> str | None:
    """Why ``(nbits, mode, algorithm, bias_correction)`` cannot be used, or None when it can.

    16 bits means float16 whatever the mode (as in coremltools); the
    calibration-aware algorithms and bias correction apply below 16 bits, and
    each algorithm to its modes. The quantizer's :class:`quantizer.Codec` is
    asked too, so its own rules apply.
    """
    if mode == "custom_lut" and lut_function is None:
        return "custom_lut needs search.space.lut_function (the import path of a LUT function)"
    if algorithm != "rtn" or bias_correction:
        what = algorithm if algorithm != "rtn" else "bias correction"
        if nbits == 16:
            return f"{what} applies below 16 bits (float16 is not quantized)"
        modes = ALGORITHM_MODES.get(algorithm)
        if modes is not None and mode not in modes:
            return f"{algorithm} handles {', '.join(modes)}"
    if nbits == 16:
        return None
    if mode == "linear_symmetric" and nbits < 2:
        return "linear_symmetric needs at least 2 bits (one sign bit and one magnitude bit)"
    import quantizer
    from quantizer.errors import QuantizerError

    try:
        quantizer.Codec(mode, nbits, lut_function) if mode == "custom_lut" else quantizer.Codec(mode, nbits)
    except (QuantizerError, ValueError, TypeError) as e:
        return str(e)
    return None


def _import(path: str, key: str) -> Callable:
    module, _, name = path.rpartition(".")
    if not module:
        raise ConfigError(f"{key}={path!r} is not an import path; write package.module.function.")
    try:
        fn = getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ConfigError(f"{key}={path!r}: cannot import module {module!r} ({e}).") from None
    except AttributeError:
        raise ConfigError(f"{key}={path!r}: module {module!r} has no attribute {name!r}.") from None
    if not callable(fn):
        raise ConfigError(f"{key}={path!r} is not callable.")
    return fn


class BoundLutFunction:
    """``fn(nbits, weights, **kwargs)`` with the keyword arguments of a ``_target_`` node bound.

    Its ``__qualname__`` includes the arguments and ``__code__`` is the target's, so
    the quantizer's codec identity (and thus the plan hash) tells two bindings apart.
    """

    def __init__(self, fn: Callable, kwargs: Mapping[str, Any]):
        self.fn, self.kwargs = fn, dict(kwargs)
        self.__module__ = getattr(fn, "__module__", "?")
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.kwargs.items()))
        self.__qualname__ = f"{getattr(fn, '__qualname__', type(fn).__qualname__)}({args})"
        self.__code__ = getattr(fn, "__code__", None)

    def __call__(self, nbits: int, weights: Any) -> Any:
        return self.fn(nbits, weights, **self.kwargs)


def resolve_lut_function(spec: Any, key: str = "search.space.lut_function") -> tuple[Callable | None, str | None]:
    """A custom LUT function from an import path or a ``{_target_: path, **kwargs}`` node -> (function, name).

    The function is called as ``fn(nbits, weights, **kwargs)`` and returns ``(lut, indices)``.
    """
    if spec is None:
        return None, None
    if isinstance(spec, str):
        return _import(spec, key), spec
    if isinstance(spec, Mapping) and "_target_" in spec:
        from omegaconf import DictConfig, OmegaConf

        node = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
        target = str(node.pop("_target_"))
        node.pop("_partial_", None)
        fn = _import(target, f"{key}._target_")
        return (BoundLutFunction(fn, node) if node else fn), json_name({"_target_": target, **node})
    raise ConfigError(f"{key} must be an import path string or a node with _target_, got {spec!r}.")


def json_name(node: Mapping[str, Any]) -> str:
    import json

    return json.dumps(node, sort_keys=True, default=str)


def _int_list(values: Iterable[Any], key: str, minimum: int = 0) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{key} must list integers >= {minimum}, got {v!r}.")
        out.append(int(v))
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class SearchSpace:
    """Lists of candidate values; every combination is a point (see :meth:`grid`)."""

    nbits: tuple[int, ...]
    modes: tuple[str, ...]
    skip_layer_types: tuple[tuple[str, ...], ...] = ((),)
    minimum_conv_kernel_channels: tuple[int, ...] = (0,)
    minimum_conv_weight_count: tuple[int, ...] = (0,)
    minimum_matrix_weight_count: tuple[int, ...] = (0,)
    lut_function: Callable | None = field(default=None, compare=False)
    lut_function_name: str | None = None
    algorithms: tuple[str, ...] = ("rtn",)
    bias_corrections: tuple[bool, ...] = (False,)

    @property
    def calibrated(self) -> bool:
        """True when some point of the space reads calibration statistics."""
        return any(a != "rtn" for a in self.algorithms) or any(self.bias_corrections)

    @classmethod
    def from_config(cls, space: Any, selector: Any) -> "SearchSpace":
        """Validate ``search.space`` and ``selector`` config nodes (lists) and build the space.

        Raises:
            ConfigError: an empty list, an unknown mode or layer type, or nbits
                outside 16 and 1..8 (the message names the key and the valid values).
        """
        nbits = list(space.nbits)
        modes = [str(m) for m in space.mode]
        if not nbits:
            raise ConfigError("search.space.nbits is empty: list at least one of 16, 8, 7, ..., 1.")
        if not modes:
            raise ConfigError(f"search.space.mode is empty: list at least one of {', '.join(SWEEP_MODES)}.")
        bad = [n for n in nbits if isinstance(n, bool) or n not in VALID_NBITS]
        if bad:
            raise ConfigError(f"search.space.nbits has {bad}; valid values are 16 (float16) and 1..8.")
        bad_modes = [m for m in modes if m not in SWEEP_MODES]
        if bad_modes:
            raise ConfigError(f"search.space.mode has {bad_modes}; valid modes are {', '.join(SWEEP_MODES)}.")
        skips = []
        for i, entry in enumerate(selector.skip_layer_types):
            entry = [str(t) for t in entry]
            unknown = [t for t in entry if t not in SKIPPABLE_LAYER_TYPES]
            if unknown:
                raise ConfigError(f"selector.skip_layer_types[{i}] has unknown layer type(s) {unknown}; "
                                  f"valid: {', '.join(SKIPPABLE_LAYER_TYPES)}.")
            skips.append(tuple(sorted(set(entry))))
        lists = {k: list(getattr(selector, k)) for k in SELECTOR_KEYS}
        for k, v in lists.items():
            if not v:
                raise ConfigError(f"selector.{k} is empty: list at least one value "
                                  f"({'[[]] to skip nothing' if k == 'skip_layer_types' else '[0] for no minimum'}).")
        fn, name = resolve_lut_function(space.lut_function)
        algorithms = [str(a) for a in space.get("algorithm", ["rtn"])]
        if not algorithms:
            raise ConfigError(f"search.space.algorithm is empty: list at least one of {', '.join(ALGORITHMS)}.")
        bad_algos = [a for a in algorithms if a not in ALGORITHMS]
        if bad_algos:
            raise ConfigError(f"search.space.algorithm has {bad_algos}; valid algorithms are {', '.join(ALGORITHMS)}.")
        bcs = [v for v in space.get("bias_correction", [False])]
        if not bcs or any(not isinstance(v, bool) for v in bcs):
            raise ConfigError(f"search.space.bias_correction must list true and/or false, got {list(bcs)}.")
        return cls(
            nbits=tuple(dict.fromkeys(int(n) for n in nbits)),
            modes=tuple(dict.fromkeys(modes)),
            skip_layer_types=tuple(dict.fromkeys(skips)),
            minimum_conv_kernel_channels=_int_list(lists["minimum_conv_kernel_channels"],
                                                   "selector.minimum_conv_kernel_channels"),
            minimum_conv_weight_count=_int_list(lists["minimum_conv_weight_count"], "selector.minimum_conv_weight_count"),
            minimum_matrix_weight_count=_int_list(lists["minimum_matrix_weight_count"],
                                                  "selector.minimum_matrix_weight_count"),
            lut_function=fn, lut_function_name=name,
            algorithms=tuple(dict.fromkeys(algorithms)), bias_corrections=tuple(dict.fromkeys(bcs)),
        )

    def dimensions(self) -> dict[str, list[int | str | bool]]:
        """Optuna categorical choices per parameter (``algorithm`` and ``bias_correction`` only
        when the space has more than plain rtn / no bias correction)."""
        dims: dict[str, list[int | str | bool]] = {
            "nbits": list(self.nbits),
            "mode": list(self.modes),
            "skip_layer_types": [encode_skip(s) for s in self.skip_layer_types],
            "minimum_conv_kernel_channels": list(self.minimum_conv_kernel_channels),
            "minimum_conv_weight_count": list(self.minimum_conv_weight_count),
            "minimum_matrix_weight_count": list(self.minimum_matrix_weight_count),
        }
        if self.algorithms != ("rtn",):
            dims["algorithm"] = list(self.algorithms)
        if self.bias_corrections != (False,):
            dims["bias_correction"] = list(self.bias_corrections)
        return dims

    def params(self, setting: Setting) -> dict[str, int | str | bool]:
        """The trial parameters of ``setting``: its values of :meth:`dimensions`."""
        dims = self.dimensions()
        return {k: v for k, v in setting.params().items() if k in dims}

    def describe(self) -> dict[str, Any]:
        """JSON-able description (recorded with the study)."""
        d: dict[str, Any] = dict(self.dimensions())
        d["lut_function"] = self.lut_function_name
        return d

    def problem(self, setting: Setting) -> str | None:
        """Why ``setting`` is invalid, or None."""
        return codec_problem(setting.nbits, setting.mode, self.lut_function, setting.algorithm,
                             setting.bias_correction)

    def grid(self) -> tuple[list[Setting], list[Dropped]]:
        """Every valid combination (in list order) and the dropped (nbits, mode[, algorithm,
        bias correction]) combinations with reasons."""
        dropped: list[Dropped] = []
        ok_codecs = []
        for nbits, mode, algo, bc in itertools.product(self.nbits, self.modes, self.algorithms, self.bias_corrections):
            why = codec_problem(nbits, mode, self.lut_function, algo, bc)
            if why is None:
                ok_codecs.append((nbits, mode, algo, bc))
            else:
                dropped.append(Dropped(nbits, mode, why, algo, bc))
        points = [
            Setting(n, m, skip, ch, cw, mw, algo, bc)
            for (n, m, algo, bc), skip, ch, cw, mw in itertools.product(
                ok_codecs, self.skip_layer_types, self.minimum_conv_kernel_channels,
                self.minimum_conv_weight_count, self.minimum_matrix_weight_count)
        ]
        return points, dropped

    def codec_count(self) -> int:
        """Combinations of the codec dimensions (nbits, mode, algorithm, bias correction)."""
        return len(self.nbits) * len(self.modes) * len(self.algorithms) * len(self.bias_corrections)

    def grid_size(self) -> int:
        """Number of combinations before invalid ones are dropped."""
        return (self.codec_count() * len(self.skip_layer_types) * len(self.minimum_conv_kernel_channels)
                * len(self.minimum_conv_weight_count) * len(self.minimum_matrix_weight_count))


# -- settings -> plans ------------------------------------------------------------------------
_MATRIX_TYPES = ("innerProduct", "batchedMatmul")


def make_selector(setting: Setting) -> Any:
    """A quantizer layer selector implementing ``setting``'s thresholds (None: select all)."""
    if setting.selects_all:
        return None
    import quantizer

    base = quantizer.AdvancedQuantizedLayerSelector

    class _SweepSelector(base):  # type: ignore[misc, valid-type]
        """AdvancedQuantizedLayerSelector plus a minimum weight count for matrix layers."""

        def __init__(self, minimum_matrix_weight_count: int, **kwargs: Any):
            super().__init__(**kwargs)
            self.minimum_matrix_weight_count = minimum_matrix_weight_count

        def do_quantize(self, layer: Any, weight_param: Any = None, **kwargs: Any) -> bool:
            if not super().do_quantize(layer, weight_param, **kwargs):
                return False
            kind = layer.WhichOneof("layer")
            if self.minimum_matrix_weight_count and kind in _MATRIX_TYPES and weight_param in (None, "weights"):
                p = getattr(layer, kind)
                if kind == "innerProduct":
                    count = p.inputChannels * p.outputChannels
                else:
                    count = p.weightMatrixFirstDimension * p.weightMatrixSecondDimension
                return count >= self.minimum_matrix_weight_count
            return True

    return _SweepSelector(
        setting.minimum_matrix_weight_count,
        skip_layer_types=list(setting.skip_layer_types),
        minimum_conv_kernel_channels=setting.minimum_conv_kernel_channels,
        minimum_conv_weight_count=setting.minimum_conv_weight_count,
    )


def build_plan(model: Any, setting: Setting, lut_function: Callable | None = None, *, fuse: bool = True,
               calibration: Mapping[str, Any] | None = None, algorithm_options: Mapping[str, Any] | None = None) -> Any:
    """Compile ``setting`` to a :class:`quantizer.QuantPlan` for ``model``.

    With ``fuse`` (coremltools' behaviour below 16 bits) the plan addresses the
    tensors of the fused model, the one :func:`quantizer.apply_plan` quantizes.
    A calibrated setting reads ``calibration`` (layer name -> statistics) and,
    for gptq, ``algorithm_options``.

    Raises:
        ConfigError: a calibrated setting without calibration statistics (names ``calibration``).
    """
    import quantizer

    mode = setting.mode
    if setting.calibrated and setting.nbits < 16 and calibration is None:
        raise ConfigError(f"{setting.label} needs calibration data: set calibration=split (or calibration=npz / csv "
                          "with calibration.path=...).")
    calibrated = setting.calibrated and setting.nbits < 16
    return quantizer.build_plan(model, setting.nbits, mode, selector=make_selector(setting),
                                lut_function=lut_function if mode == "custom_lut" else None, fuse=fuse,
                                algorithm=setting.algorithm if calibrated else "rtn",
                                bias_correction=setting.bias_correction and calibrated,
                                algorithm_options=algorithm_options if setting.algorithm == "gptq" else None,
                                calibration=calibration if calibrated else None)
