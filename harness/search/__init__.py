"""Search strategies: how a sweep chooses which settings to try.

One module per search kind; :data:`STRATEGIES` maps ``search.kind`` to the
class (``"module:Class"`` relative to this package, imported on demand). Add a
kind by writing a :class:`~harness.search.base.SearchStrategy` subclass in a
new module and one entry here.

* ``grid`` (:mod:`.grid`): every valid point exactly once, queued in the study
  so concurrent workers never repeat one (:mod:`.queued`).
* ``tpe``, ``nsga2``, ``random`` (:mod:`.sampled`): Optuna samplers within
  ``search.n_trials`` / ``search.timeout``.
* ``sensitivity`` (:mod:`.sensitivity`): each layer x codec alone.
* ``mixed`` (:mod:`.mixed`): one codec per layer, Optuna-searched.

Their shared parts: :mod:`.base` (the interface, the shared checks, the
sampler), :mod:`.uniform` (uniform settings as parameters), :mod:`.choices`
(the codecs a unit may get), :mod:`.units` (plans split per layer or tensor),
:mod:`.noise` (predicted output noise), :mod:`.greedy` (the greedy path) and
:mod:`.mixed_summary` (hypervolumes).
"""
from __future__ import annotations

import importlib

from harness.errors import ConfigError
from harness.search.base import Candidate, SearchContext, SearchStrategy, SkipTrial, StrategyResult

STRATEGIES: dict[str, str] = {
    "grid": "grid:GridSearch",
    "tpe": "sampled:SamplerSearch",
    "nsga2": "sampled:SamplerSearch",
    "random": "sampled:SamplerSearch",
    "sensitivity": "sensitivity:SensitivitySearch",
    "mixed": "mixed:MixedSearch",
}


def strategy_class(kind: str) -> type[SearchStrategy]:
    """The strategy class for ``search.kind`` (ConfigError listing the kinds if unknown)."""
    target = STRATEGIES.get(kind)
    if target is None:
        raise ConfigError(f"search.kind={kind!r} is not a search kind; choose one of {', '.join(STRATEGIES)} "
                          f"(e.g. search={next(iter(STRATEGIES))}).")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def make_strategy(ctx: SearchContext) -> SearchStrategy:
    """Instantiate the strategy of ``ctx.cfg.kind``."""
    return strategy_class(str(ctx.cfg.kind))(ctx)


__all__ = ["STRATEGIES", "Candidate", "SearchContext", "SearchStrategy", "SkipTrial", "StrategyResult",
           "make_strategy", "strategy_class"]
