"""Small real Core ML specs for the data tests, built with coremltools' NeuralNetworkBuilder."""
from __future__ import annotations

import numpy as np

from quantizer.coremltools_quiet import coremltools


def builder_model(inputs: dict[str, tuple[int, ...]], *, mode: str | None = None, class_labels=None,
                  exact: bool = False, int_inputs: tuple[str, ...] = (), optional: tuple[str, ...] = ()):
    """A model with the given multiArray inputs, each passed through a linear activation.

    ``mode="classifier"`` with ``class_labels`` makes a neuralNetworkClassifier whose
    probabilities come from a softmax over the first input; ``exact`` uses
    EXACT_ARRAY_MAPPING (``disable_rank5_shape_mapping``).
    """
    ct = coremltools()
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    feats = [(n, datatypes.Array(*s)) for n, s in inputs.items()]
    outs = [(f"out_{n}", None) for n in inputs]
    b = NeuralNetworkBuilder(feats, outs, mode=mode, disable_rank5_shape_mapping=exact, use_float_arraytype=True)
    for n in inputs:
        b.add_activation(f"act_{n}", "LINEAR", n, f"out_{n}")
    if mode == "classifier":
        first = next(iter(inputs))
        b.add_softmax("softmax", f"out_{first}", "probs")
        b.spec.description.output[0].name = "probs"
        b.set_class_labels(list(class_labels), prediction_blob="probs")
    spec = b.spec
    for f in spec.description.input:
        if f.name in int_inputs:
            f.type.multiArrayType.dataType = ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
        if f.name in optional:
            f.type.isOptional = True
    return spec


def image_model(color: str = "RGB", height: int = 4, width: int = 5):
    """A model with one image input (colour space ``GRAYSCALE``, ``RGB`` or ``BGR``)."""
    ct = coremltools()
    spec = builder_model({"img": (3 if color != "GRAYSCALE" else 1, height, width)})
    t = spec.description.input[0].type
    t.ClearField("multiArrayType")
    t.imageType.width = width
    t.imageType.height = height
    t.imageType.colorSpace = getattr(ct.proto.FeatureTypes_pb2.ImageFeatureType, color)
    return spec


def rng_array(shape, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)
