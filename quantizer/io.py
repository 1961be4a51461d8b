"""Reading, writing and copying Core ML neuralnetwork models.

Every function accepts a file path, a ``coremltools.models.MLModel`` or a
``Model_pb2.Model`` spec (:func:`load` also a model file's bytes) and never
mutates the caller's object: :func:`load` and :func:`fresh_spec` return
private copies, :func:`source_spec` a read-only view where no copy is needed,
and :func:`as_kind_of` gives a result back in the kind the caller passed
(``MLModel`` in, ``MLModel`` out).

>>> import quantizer
>>> spec = quantizer.load("model.mlmodel")          # doctest: +SKIP
>>> quantizer.model_size(spec)                       # doctest: +SKIP
30516
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .coremltools_quiet import coremltools
from .errors import ModelLoadError, UnsupportedModelError
from .walk import neural_networks

__all__ = [
    "load",
    "load_with_bytes",
    "save",
    "parse",
    "model_size",
    "source_spec",
    "fresh_spec",
    "as_kind_of",
    "ModelSource",
]

ModelSource = Any  # str | os.PathLike | MLModel | Model_pb2.Model


def _model_pb2():
    return coremltools().proto.Model_pb2


def _describe(src: Any) -> str:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "the given model bytes"
    return f"'{src}'" if isinstance(src, (str, os.PathLike)) else type(src).__name__


def load(src: ModelSource, *, validate: bool = True) -> Any:
    """Return a fresh ``Model_pb2.Model`` for a path, an ``MLModel``, a spec or a model file's bytes.

    Raises :class:`ModelLoadError` for a missing, empty or non-Core-ML file and
    :class:`UnsupportedModelError` for a model that holds no neural network
    (with ``validate=True``, the default).
    """
    return load_with_bytes(src, validate=validate)[0]


def load_with_bytes(src: ModelSource, *, validate: bool = True) -> tuple[Any, bytes | None]:
    """:func:`load`, and the model file bytes the private copy was parsed from (None for an ``MLModel``,
    whose ``get_spec()`` copies without them): a spec's :func:`serialize`, a path's file, the bytes given."""
    Model = _model_pb2().Model
    data: bytes | None
    if isinstance(src, Model):
        # serialize + parse copies a large spec several times faster than CopyFrom
        data = serialize(src)
        spec = Model.FromString(data)
    elif isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        spec = parse(data, source="the given model bytes")
    elif isinstance(src, (str, os.PathLike)):
        data = _read_bytes(Path(src))
        spec = parse(data, source=f"'{src}'")
    elif hasattr(src, "get_spec") and callable(src.get_spec):
        data, spec = None, src.get_spec()  # already a private deep copy
        if not isinstance(spec, Model):
            raise ModelLoadError(f"{type(src).__name__}.get_spec() did not return a Core ML Model spec")
    else:
        raise ModelLoadError(
            f"cannot load a model from a {type(src).__name__}: pass a path to an .mlmodel file, "
            "a coremltools.models.MLModel, a Model_pb2.Model spec or the bytes of an .mlmodel file"
        )
    if validate:
        neural_networks(spec, source=_describe(src))
    return spec, data


def _read_bytes(path: Path) -> bytes:
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
    return data


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


def serialize(model: ModelSource) -> bytes:
    """The ``.mlmodel`` file bytes of ``model``: protobuf's deterministic serialization (map entries such as
    the metadata's ``userDefined`` sorted), so the same model gives the same bytes in every process (plain
    ``SerializeToString`` orders maps by the process's string hash seed)."""
    spec = load(model, validate=False) if not isinstance(model, _model_pb2().Model) else model
    return spec.SerializeToString(deterministic=True)


def save(model: ModelSource, path: str | os.PathLike) -> Path:
    """Write ``model`` as an ``.mlmodel`` file (:func:`serialize`: the same bytes in every process) and return
    the path."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ModelLoadError(f"cannot save to '{path}': folder '{path.parent}' does not exist")
    path.write_bytes(serialize(model))
    return path


def model_size(model: ModelSource) -> int:
    """Exact serialized size of the model in bytes (the size of its .mlmodel file)."""
    if isinstance(model, (str, os.PathLike)):
        return Path(model).stat().st_size
    spec = model if isinstance(model, _model_pb2().Model) else load(model, validate=False)
    return spec.ByteSize()


def _held_spec(model: Any) -> tuple[Any, str] | None:
    """(spec, description) of a spec or an ``MLModel`` without copying it; None for a path."""
    Model = _model_pb2().Model
    if isinstance(model, Model):
        return model, "the model"
    if callable(getattr(model, "get_spec", None)) and isinstance(getattr(model, "_spec", None), Model):
        return model._spec, "the MLModel"  # read only; get_spec() would deep-copy it first
    return None


def source_spec(model: ModelSource) -> tuple[Any, bool]:
    """(spec, owned): the model's spec without copying it where possible. ``owned`` is True
    when the spec is a private object (loaded from a path) that may be modified."""
    held = _held_spec(model)
    if held is None:
        return load(model), True
    spec, source = held
    neural_networks(spec, source=source)
    return spec, False


def fresh_spec(model: ModelSource) -> Any:
    """A private, validated copy of ``model``'s spec (path, spec or ``MLModel``).

    Specs and ``MLModel``s are copied by serializing and parsing, several times
    faster than ``CopyFrom``/``MLModel.get_spec()`` (a deep copy) on large models.
    """
    held = _held_spec(model)
    if held is None:
        return load(model)
    src, source = held
    spec = _model_pb2().Model()
    spec.ParseFromString(src.SerializeToString())
    neural_networks(spec, source=source)
    return spec


def as_kind_of(model: ModelSource, spec: Any) -> Any:
    """``spec`` as an ``MLModel`` if ``model`` was one (same compute units), else the spec."""
    if callable(getattr(model, "get_spec", None)):
        kwargs = {}
        if hasattr(model, "compute_unit"):
            kwargs["compute_units"] = model.compute_unit
        return coremltools().models.MLModel(spec, **kwargs)
    return spec
