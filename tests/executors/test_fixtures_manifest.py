"""Integrity of the committed golden fixtures (tests/fixtures): files, manifest, conventions.

The executor's golden tests (test_executor_golden.py) trust the manifest; these
tests check that what it says is true of the committed files, without torch.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import FIXTURES_DIR, OUTPUT_PREFIX, load_fixture, load_manifest
from tests.fixtures._fixturelib import declared_inputs, layer_types

MANIFEST = load_manifest()
NAMES = [e["name"] for e in MANIFEST]
REQUIRED = {"name", "model", "data", "source", "model_type", "inputs", "data_shapes", "batch",
            "outputs", "expected_shapes", "tolerance", "layer_types", "notes"}


def test_manifest_names_unique_and_files_committed() -> None:
    assert len(NAMES) == len(set(NAMES))
    listed = {e["model"] for e in MANIFEST} | {e["data"] for e in MANIFEST}
    on_disk = {p.name for p in FIXTURES_DIR.iterdir() if p.suffix in (".mlmodel", ".npz")}
    assert on_disk == listed, f"unlisted: {sorted(on_disk - listed)}, missing: {sorted(listed - on_disk)}"
    total = sum(p.stat().st_size for p in FIXTURES_DIR.iterdir() if p.is_file())
    assert total < 5_000_000, f"fixtures folder is {total} bytes"


@pytest.mark.parametrize("name", NAMES)
def test_entry_matches_files(name: str) -> None:
    entry = next(e for e in MANIFEST if e["name"] == name)
    assert REQUIRED <= set(entry), f"missing keys {sorted(REQUIRED - set(entry))}"
    assert entry["source"] in ("torch", "builder")
    assert (FIXTURES_DIR / entry["model"]).stat().st_size < 300_000
    spec, inputs, expected = load_fixture(name)
    assert spec.WhichOneof("Type") == entry["model_type"]
    assert {k: v["shape"] for k, v in declared_inputs(spec).items()} == entry["inputs"]
    assert [o.name for o in spec.description.output] == entry["outputs"]
    assert layer_types(spec) == entry["layer_types"]
    assert sorted(inputs) == sorted(entry["inputs"]), "npz inputs != model inputs"
    assert sorted(expected) == sorted(entry["outputs"]), "npz outputs != model outputs"
    assert {k: list(v.shape) for k, v in inputs.items()} == entry["data_shapes"]
    assert {k: list(v.shape) for k, v in expected.items()} == entry["expected_shapes"]
    n = entry["batch"]
    for k, v in list(inputs.items()) + list(expected.items()):
        assert v.shape[0] == n, f"{k}: leading dim {v.shape[0]} != batch {n}"
        if v.dtype.kind == "f":
            assert np.all(np.isfinite(v)), f"{k} has non-finite values"
    for k, v in expected.items():  # float references are float64, and not all-zero
        if v.dtype.kind == "f":
            assert v.dtype == np.float64 and np.max(np.abs(v)) > 0, k


@pytest.mark.parametrize("name", NAMES)
def test_feed_dtypes_follow_declared_types(name: str) -> None:
    entry = next(e for e in MANIFEST if e["name"] == name)
    _, inputs, _ = load_fixture(name)
    for k, dtype in entry["input_dtypes"].items():
        want = {"FLOAT32": np.float32, "DOUBLE": np.float64, "INT32": np.int32}.get(dtype, np.uint8)  # images: uint8 pixels
        assert inputs[k].dtype == want, f"{k}: {inputs[k].dtype} for declared {dtype}"


def test_loader_and_builder_script_do_not_need_torch() -> None:
    """load_fixture and build_builder_fixtures import without torch (blocked in a subprocess)."""
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; sys.modules['torch'] = None\n"
        f"sys.path[:0] = [{str(root)!r}, {str(FIXTURES_DIR)!r}]\n"
        "from tests.fixtures import load_fixture, load_manifest\n"
        "load_fixture(load_manifest()[0]['name'])\n"
        "import build_builder_fixtures\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_output_prefix_is_documented() -> None:
    readme = (FIXTURES_DIR / "README.md").read_text(encoding="utf-8")
    assert f"`{OUTPUT_PREFIX}<output name>`" in readme
