"""The quantize benchmark runs end to end (slow: it times coremltools too) and its
command-line plumbing works (fast)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.bench import quantize as bench


def test_parse_size_and_targets():
    assert bench.parse_size("2M") == 2_000_000 and bench.parse_size("500k") == 500_000
    assert bench.parse_size("1.5m") == 1_500_000 and bench.parse_size("1234") == 1234
    assert bench.target_for("linear2") == 100 and bench.target_for("kmeans8") == 20
    assert bench.target_for("fp16") == 1 and bench.target_for("linear8") == 1


def test_model_builder_hits_the_requested_size(bench_model_50k):
    spec = bench_model_50k
    n = sum(w.size for _, _, w in bench.float_weights(spec))
    assert 0.9 * 50_000 <= n <= 1.1 * 50_000
    assert [layer.name for layer in spec.neuralNetwork.layers if layer.WhichOneof("layer") != "activation"] == [
        "conv1", "conv2", "fc1", "fc2"]


def test_dispatcher_lists_quantize():
    out = subprocess.run([sys.executable, "-m", "harness.bench"], capture_output=True, text=True)
    assert out.returncode == 0 and "quantize" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "harness.bench", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown benchmark" in bad.stderr


@pytest.mark.slow
def test_benchmark_runs_on_a_small_model(tmp_path, capsys):
    out = tmp_path / "rows.json"
    settings = "fp16,linear8,linear2,linear_lut4,kmeans8"
    assert bench.main(["--sizes", "40k", "--modes", settings, "--repeats", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "speedup" in table and "kmeans_lut" in table
    rows = json.loads(out.read_text())
    assert [r["setting"] for r in rows] == settings.split(",")
    for r in rows:
        assert r["ours_s"] > 0 and r["coremltools_s"] > 0 and r["speedup"] > 0
        if r["mode"] != "kmeans_lut":
            assert r["extra"]["byte_identical"], r  # same bytes as coremltools
    km = rows[-1]
    assert km["mse_ours"] <= km["mse_coremltools"]
    if sys.platform.startswith("linux"):
        assert all(r["peak_mem_x"] is not None and r["peak_mem_x"] > 0 for r in rows)
