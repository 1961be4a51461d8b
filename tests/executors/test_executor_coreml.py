"""The Core ML executor against the numpy executor on every golden fixture (macOS only)."""
from __future__ import annotations

import numpy as np
import pytest

from harness.executors.factory import coreml_available
from tests.fixtures import load_fixture, load_manifest, max_scaled_error

pytestmark = [
    pytest.mark.macos,
    pytest.mark.skipif(not coreml_available(),
                       reason="Core ML prediction needs macOS with coremltools' libcoremlpython; not available here"),
]

NAMES = [e["name"] for e in load_manifest()]


@pytest.mark.parametrize("name", NAMES)
def test_coreml_matches_numpy(name: str) -> None:
    from harness.executors import CoreMLExecutor, NumpyExecutor

    spec, inputs, _ = load_fixture(name)
    ours = NumpyExecutor(spec).predict(inputs)
    theirs = CoreMLExecutor(spec).predict(inputs)
    assert set(theirs) == set(ours)
    for k, y in ours.items():
        if y.dtype.kind in "iuUSO":
            np.testing.assert_array_equal(theirs[k], y, err_msg=k)
        else:
            assert theirs[k].shape == y.shape, k
            assert max_scaled_error(theirs[k], y) <= 1e-3, k   # Core ML CPU may compute in float16 for some layers


def test_make_executor_auto_picks_coreml() -> None:
    from harness.executors import make_executor

    spec, _, _ = load_fixture(NAMES[0])
    assert make_executor("auto", spec).kind == "coreml"
