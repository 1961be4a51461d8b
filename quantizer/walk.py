"""Walking a Core ML model: its neural networks (pipeline members included) and their layers.

One walker for the whole project: pipeline members, and the bodies nested in
``loop`` (condition, body) and ``branch`` (if, else) layers, are reached the
same way everywhere (selection, applying a plan, fusion, weight tables, the
executors).

>>> import quantizer.walk as walk                          # doctest: +SKIP
>>> [layer.name for layer in walk.iter_layers(spec)]        # doctest: +SKIP
['dense_1', 'relu_1', 'dense_2', 'softmax']
"""
from __future__ import annotations

from typing import Any, Iterator

from .errors import UnsupportedModelError

__all__ = [
    "NN_TYPES",
    "PIPELINE_TYPES",
    "neural_networks",
    "neural_network",
    "model_networks",
    "iter_layers",
    "sub_networks",
    "layer_lists",
    "blobs_read",
    "blobs_written",
]

#: Model types that hold a NeuralNetwork message (``spec.<type>``).
NN_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
#: Model types that hold other models.
PIPELINE_TYPES = ("pipeline", "pipelineClassifier", "pipelineRegressor")


def neural_networks(spec: Any, *, source: str = "the model") -> list[Any]:
    """The top-level NeuralNetwork messages of a model (several for a pipeline).

    Raises :class:`UnsupportedModelError` when there are none (e.g. mlProgram).
    """
    kind = spec.WhichOneof("Type")
    if kind in NN_TYPES:
        return [getattr(spec, kind)]
    if kind in PIPELINE_TYPES:
        nets: list[Any] = []
        container = getattr(spec, kind)  # Pipeline, or PipelineClassifier/Regressor holding one
        for sub in (container if kind == "pipeline" else container.pipeline).models:
            sub_kind = sub.WhichOneof("Type")
            if sub_kind in NN_TYPES or sub_kind in PIPELINE_TYPES:
                nets.extend(neural_networks(sub, source=source))
        if not nets:
            raise UnsupportedModelError(f"{source} is a {kind} that contains no neural network")
        return nets
    if kind == "mlProgram":
        raise UnsupportedModelError(
            f"{source} is an ML Program (mlProgram); qsweep and quantizer handle neuralnetwork models "
            "only. Compress ML Programs with coremltools.optimize.coreml, or convert the source model "
            "with convert_to='neuralnetwork'."
        )
    raise UnsupportedModelError(
        f"{source} is a '{kind}' model, not a neural network: quantizer handles neuralNetwork, "
        "neuralNetworkClassifier, neuralNetworkRegressor and pipelines containing them"
    )


def model_networks(spec: Any, *, wrappers: bool = False) -> Iterator[tuple[Any, Any]]:
    """``(model spec, NeuralNetwork)`` for the model and every pipeline member that is a
    neural network, in order; with ``wrappers=True`` also ``(pipeline spec, None)``
    for each enclosing pipeline (before its members). Other models are skipped."""
    kind = spec.WhichOneof("Type")
    if kind in NN_TYPES:
        yield spec, getattr(spec, kind)
    elif kind in PIPELINE_TYPES:
        container = getattr(spec, kind)  # Pipeline, or PipelineClassifier/Regressor holding one
        if wrappers:
            yield spec, None
        for sub in (container if kind == "pipeline" else container.pipeline).models:
            yield from model_networks(sub, wrappers=wrappers)


def neural_network(spec: Any) -> Any:
    """The single NeuralNetwork message of a non-pipeline model (first one of a pipeline)."""
    return neural_networks(spec)[0]


def iter_layers(spec_or_nn: Any, *, recurse: bool = True) -> Iterator[Any]:
    """Every layer of a model or NeuralNetwork message, in order, including the
    layers of ``loop`` and ``branch`` bodies (after their parent layer)."""
    if hasattr(spec_or_nn, "WhichOneof") and spec_or_nn.DESCRIPTOR.name == "Model":
        nets = neural_networks(spec_or_nn)
    else:
        nets = [spec_or_nn]
    for net in nets:
        for layer in net.layers:
            yield layer
            if recurse:
                for sub in sub_networks(layer):
                    yield from iter_layers(sub)


def sub_networks(layer: Any) -> list[Any]:
    """The NeuralNetwork bodies nested in a loop (condition, body) or branch (if,
    else) layer; an unset body reads as an empty network. Empty for other layers."""
    kind = layer.WhichOneof("layer")
    if kind == "loop":
        return [layer.loop.conditionNetwork, layer.loop.bodyNetwork]
    if kind == "branch":
        return [layer.branch.ifBranch, layer.branch.elseBranch]
    return []


def layer_lists(nn: Any) -> Iterator[Any]:
    """The repeated ``layers`` field of ``nn`` and of every nested body."""
    yield nn.layers
    for layer in list(nn.layers):
        for sub in sub_networks(layer):
            yield from layer_lists(sub)


def blobs_read(layer: Any) -> list[str]:
    """Blob names a layer reads, including those of its nested bodies."""
    names = list(layer.input)
    kind = layer.WhichOneof("layer")
    if kind == "loop" and layer.loop.conditionVar:
        names.append(layer.loop.conditionVar)
    for sub in sub_networks(layer):
        for inner in sub.layers:
            names.extend(blobs_read(inner))
    return names


def blobs_written(layer: Any) -> list[str]:
    """Blob names a layer writes, including those of its nested bodies."""
    names = list(layer.output)
    for sub in sub_networks(layer):
        for inner in sub.layers:
            names.extend(blobs_written(inner))
    return names
