"""Tiny hand-built Core ML specs for executor unit tests (no builder, no torch).

:func:`net` makes a ``neuralNetwork`` model with array inputs/outputs and
returns ``(spec, nn)``; add layers with :func:`layer` and set their params
directly on the protobuf message.

Example::

    spec, nn = net({"x": (1, 3, 8, 8)}, ["y"])
    p = layer(nn, "softmaxND", "sm", ["x"], ["y"])
    p.axis = -1
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from quantizer.coremltools_quiet import proto

P = proto()
Model = P.Model_pb2.Model
NN = P.NeuralNetwork_pb2
FLOAT32, INT32 = 65568, 131104


def net(inputs: dict[str, Sequence[int]], outputs: Sequence[str], *, exact: bool = True,
        kind: str = "neuralNetwork", dtypes: dict[str, int] | None = None) -> tuple[Any, Any]:
    """A model with multiArray inputs of the given declared shapes; returns (spec, nn message)."""
    spec = Model()
    spec.specificationVersion = 4 if exact else 1
    for name, shape in inputs.items():
        f = spec.description.input.add()
        f.name = name
        f.type.multiArrayType.shape.extend(shape)
        f.type.multiArrayType.dataType = (dtypes or {}).get(name, FLOAT32)
    for name in outputs:
        f = spec.description.output.add()
        f.name = name
        f.type.multiArrayType.dataType = FLOAT32
    nn = getattr(spec, kind)
    if exact:
        nn.arrayInputShapeMapping = 1
    return spec, nn


def layer(nn: Any, kind: str, name: str, inputs: Sequence[str], outputs: Sequence[str]) -> Any:
    """Append a layer of type ``kind``; returns its params message."""
    ly = nn.layers.add()
    ly.name = name
    ly.input.extend(inputs)
    ly.output.extend(outputs)
    params = getattr(ly, kind)
    params.SetInParent()
    return params


def weights(wp: Any, values: np.ndarray) -> None:
    """Store float32 values in a WeightParams."""
    wp.floatValue.extend(np.asarray(values, np.float32).ravel().tolist())


def border(msg: Any, top: int, bottom: int, left: int, right: int) -> None:
    """Fill a BorderAmounts message ([H, W] start/end edges)."""
    for s, e in ((top, bottom), (left, right)):
        b = msg.borderAmounts.add()
        b.startEdgeSize, b.endEdgeSize = s, e
