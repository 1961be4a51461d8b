"""The models the quantizer tests run on: every model of ``tests/nn_models.py`` by name."""
from __future__ import annotations

from typing import Any, Callable

from tests.nn_models import FUSION_MODELS, LAYER_MODELS

#: one model per layer type coremltools touches, plus the fusion cases (ours must handle all of them)
ALL_MODELS: dict[str, Callable[[], Any]] = {**LAYER_MODELS, **{n: c.build for n, c in FUSION_MODELS.items()}}
#: the models coremltools quantizes correctly (the fusion cases where its fusion is right)
CT_OK_MODELS: dict[str, Callable[[], Any]] = {
    **LAYER_MODELS, **{n: c.build for n, c in FUSION_MODELS.items() if c.coremltools == "ok"}}
