"""Reading and writing Core ML neuralnetwork models.

Every function accepts a file path, a ``coremltools.models.MLModel`` or a
``Model_pb2.Model`` spec and works on a private copy, so callers' objects are
never mutated.

>>> import quantizer
>>> spec = quantizer.load("model.mlmodel")          # doctest: +SKIP
>>> quantizer.model_size(spec)                       # doctest: +SKIP
30516
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from ._coremltools import coremltools
from .errors import ModelLoadError, UnsupportedModelError

__all__ = [
    "load",
    "save",
    "model_size",
    "neural_networks",
    "neural_network",
    "iter_layers",
    "model_networks",
    "sub_networks",
    "NN_TYPES",
    "ModelSource",
]

NN_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
PIPELINE_TYPES = ("pipeline", "pipelineClassifier", "pipelineRegressor")

ModelSource = Any  # str | os.PathLike | MLModel | Model_pb2.Model


def _model_pb2():
    return coremltools().proto.Model_pb2


def _describe(src: Any) -> str:
    return f"'{src}'" if isinstance(src, (str, os.PathLike)) else type(src).__name__


def load(src: ModelSource, *, validate: bool = True) -> Any:
    """Return a fresh ``Model_pb2.Model`` for a path, an ``MLModel`` or a spec.

    Raises :class:`ModelLoadError` for a missing, empty or non-Core-ML file and
    :class:`UnsupportedModelError` for a model that holds no neural network
    (with ``validate=True``, the default).
    """
    Model = _model_pb2().Model
    if isinstance(src, Model):
        # serialize + parse copies a large spec several times faster than CopyFrom
        spec = Model.FromString(src.SerializeToString())
    elif isinstance(src, (str, os.PathLike)):
        spec = _read_file(Path(src))
    elif hasattr(src, "get_spec") and callable(src.get_spec):
        spec = src.get_spec()  # already a private deep copy
        if not isinstance(spec, Model):
            raise ModelLoadError(f"{type(src).__name__}.get_spec() did not return a Core ML Model spec")
    else:
        raise ModelLoadError(
            f"cannot load a model from a {type(src).__name__}: pass a path to an .mlmodel file, "
            "a coremltools.models.MLModel, or a Model_pb2.Model spec"
        )
    if validate:
        neural_networks(spec, source=_describe(src))
    return spec


def _read_file(path: Path) -> Any:
    if path.is_dir():
        if (path / "Manifest.json").exists() or path.suffix == ".mlpackage":
            raise UnsupportedModelError(
                f"'{path}' is an .mlpackage (an ML Program); qsweep and quantizer handle neuralnetwork "
                "models only. Compress ML Programs with coremltools.optimize.coreml, or convert with "
                "convert_to='neuralnetwork'."
            )
        raise ModelLoadError(f"'{path}' is a directory, not an .mlmodel file")
    if not path.exists():
        raise ModelLoadError(f"model file '{path}' does not exist: check the path")
    data = path.read_bytes()
    if not data:
        raise ModelLoadError(f"model file '{path}' is empty: it is not a Core ML model")
    return parse(data, source=f"'{path}'")


def parse(data: bytes, source: str = "the given bytes") -> Any:
    """Parse serialized Core ML bytes into a spec, with a clear error if they are not one."""
    from google.protobuf.message import DecodeError

    spec = _model_pb2().Model()
    try:
        spec.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{source} is not a Core ML model (protobuf parse failed: {exc})") from None
    if spec.WhichOneof("Type") is None or spec.specificationVersion == 0:
        raise ModelLoadError(
            f"{source} is not a Core ML model (it parses, but declares no model type or "
            "specification version): pass an .mlmodel file"
        )
    return spec


def save(model: ModelSource, path: str | os.PathLike) -> Path:
    """Write ``model`` as an ``.mlmodel`` file and return the path."""
    spec = load(model, validate=False) if not isinstance(model, _model_pb2().Model) else model
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ModelLoadError(f"cannot save to '{path}': folder '{path.parent}' does not exist")
    path.write_bytes(spec.SerializeToString())
    return path


def model_size(model: ModelSource) -> int:
    """Exact serialized size of the model in bytes (the size of its .mlmodel file)."""
    if isinstance(model, (str, os.PathLike)):
        return Path(model).stat().st_size
    spec = model if isinstance(model, _model_pb2().Model) else load(model, validate=False)
    return spec.ByteSize()


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
