"""The executor benchmark: model/batch parsing, the per-layer-type table, the CLI end to end, and
(with the torch extra) that the PyTorch peer computes what the numpy executor computes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.bench import _executor_table as table
from harness.bench import executor as bench

FIX = Path(__file__).resolve().parents[1] / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


def test_parse_models_and_default_batch():
    assert bench.parse_models("a,b:32,x/y.mlmodel:8", None) == [("a", None), ("b", 32), ("x/y.mlmodel", 8)]
    assert bench.parse_models("a", 64) == [("a", 64)]
    spec, feeds = bench.load_model(str(FIX / "transformer_block.mlmodel"))
    assert bench.has_attention(spec) and set(feeds) == {"ids"}
    assert not bench.has_attention(bench.load_model(str(FIX / "lstm_text.mlmodel"))[0])
    names = [Path(m).stem for m in bench.default_models()]
    assert {"transformer_block", "lstm_text", "bilstm_text", "gru_text", "mobilenetv2", "digits_lstm"} <= set(names)


def _row(**extra):
    row = {"model": "m", "batch": 32, "threads": 2, "layers": 5, "ours_s": 0.30, "torch_s": 0.20, "max_diff": 1e-7,
           "calls": {"gelu": 2, "mvn": 3, "scale": 3, "innerProduct": 4, "loop": 1},
           "ours_types": {"gelu": 0.10, "mvn": 0.030, "innerProduct": 0.15, "loop": 0.012},
           "torch_types": {"gelu": 0.05, "mvn": 0.028, "scale": 0.0, "innerProduct": 0.12, "loop": 0.010},
           "ours_fused": {"scale": "mvn"}, "torch_fused": {"scale": "mvn"}}
    row.update(extra)
    return row


def test_type_table_ratios_targets_and_fusions():
    lines = table.type_table(_row())
    text = "\n".join(lines)
    gelu = next(line for line in lines if line.strip().startswith("gelu"))
    assert "2.00" in gelu and "1.2" in gelu and gelu.rstrip().endswith("NO")
    mvn = next(line for line in lines if line.strip().startswith("mvn (+scale)"))
    assert "1.07" in mvn and mvn.rstrip().endswith("yes")
    loop = next(line for line in lines if line.strip().startswith("loop"))
    assert "1.5" in loop and loop.rstrip().endswith("yes")
    assert "in mvn" in next(line for line in lines if line.strip().startswith("scale"))
    assert "= transformer types" in text
    # a fusion only the peer made: our mvn row has no target, the group row compares
    solo = table.type_table(_row(ours_fused={}, ours_types={"mvn": 0.02, "scale": 0.01}, torch_types={"mvn": 0.02}))
    assert any("mvn (torch: +scale)" in line for line in solo)
    assert any(line.strip().startswith("= layernorm") and "1.50" in line for line in solo)
    report = table.report([_row(), {**_row(), "torch_note": "peer cannot translate upsample"}])
    assert "per model" in report and report.count("per layer type") == 2
    # which heap the peer ran with is named in both tables
    kept = table.report([_row(peer_heap="kept")])
    assert "peer heap kept): per layer type" in kept and table.model_line(_row(peer_heap="kept")).endswith("kept")
    assert "peer heap default)" in table.report([_row()])


def test_cli_runs_and_writes_json(tmp_path):
    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "harness.bench", "executor", "--models",
                           f"{FIX / 'lstm_text.mlmodel'}:16", "--repeats", "1", "--threads", "1", "--processes", "2",
                           "--json", str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert rows[0]["model"] == "lstm_text" and rows[0]["batch"] == 16 and rows[0]["ours_s"] > 0
    assert rows[0]["processes"] == 2
    assert "uniDirectionalLSTM" in rows[0]["ours_types"]
    assert "lstm_text" in proc.stdout and ("torch" in proc.stdout)
    first = proc.stdout.splitlines()[0]  # the BLAS kernels the figures were measured with
    assert first.startswith("BLAS kernels: ") and "environment: " in first


def test_blas_line_names_the_kernels_and_the_environment(monkeypatch):
    from threadpoolctl import threadpool_info

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    line = bench.blas_line()
    assert "environment: OPENBLAS_CORETYPE=Haswell" in line and "OPENBLAS_L2_SIZE" not in line
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            assert f"{info['internal_api']} {info['version']}" in line
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert bench.blas_line().endswith("no OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")


def test_processes_alternate_backends_and_keep_each_fastest(monkeypatch):
    """--processes K: numpy and torch take turns in fresh processes; each backend's fastest process is kept."""
    from harness.bench import executor as bench

    ours, theirs, calls = iter([3.1, 2.0, 2.4]), iter([1.9, 2.8, 1.8]), []

    def child(backend, name, batch, repeats, threads, clock, stat, heap="default"):
        calls.append(backend)
        if backend == "numpy":
            t = next(ours)
            return {"seconds": t, "types": {"loop": t - 0.2}, "layers": 3, "calls": {}, "fused": {}}
        t = next(theirs)
        return {"seconds": t, "types": {"loop": t - 0.1}, "max_diff": 1e-7, "fused": {}, "heap": heap}

    monkeypatch.setattr(bench, "_child", child)
    (row,) = bench.bench_model("m.mlmodel", 16, 5, 1, peer_heaps=("kept",), processes=3)
    assert calls == ["numpy", "torch"] * 3
    assert (row["ours_s"], row["torch_s"], row["processes"]) == (2.0, 1.8, 3)
    assert row["ours_types"] == {"loop": 2.0 - 0.2} and row["torch_types"] == {"loop": 1.8 - 0.1}


@pytest.mark.parametrize("name", ["transformer_block", "lstm_text", "bilstm_text", "gru_text", "mlp", "resnet", "nn_loop"])
def test_torch_peer_matches_the_executor(name):
    pytest.importorskip("torch")
    from harness.bench.torch_peer import TorchPeer, unsupported
    from harness.executors import NumpyExecutor

    spec, feeds = bench.load_model(str(FIX / f"{name}.mlmodel"))
    assert unsupported(spec) == []
    ex = NumpyExecutor(spec)
    names = [o.name for o in ex.io.outputs if o.kind == "array"] + ([ex.io.prob_blob] if ex.io.prob_blob else [])
    theirs = TorchPeer(spec).run(ex.input_blobs(feeds), names)
    ours = ex.trace(feeds)
    for k in names:
        scale = max(float(np.abs(theirs[k]).max()), 1e-6)
        assert float(np.abs(ours[k] - theirs[k]).max()) / scale < 1e-5, k


def test_torch_peer_names_what_it_cannot_translate():
    pytest.importorskip("torch")
    from harness.bench.torch_peer import unsupported

    spec, _ = bench.load_model(str(FIX / "decoder.mlmodel"))
    assert set(unsupported(spec)) >= {"upsample"}


@pytest.mark.parametrize("channels", [4, 1])
def test_torch_peer_runs_prelu_per_channel_and_shared(channels):
    pytest.importorskip("torch")
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    from harness.bench.torch_peer import TorchPeer, unsupported
    from harness.executors import NumpyExecutor

    b = NeuralNetworkBuilder([("x", datatypes.Array(4, 3, 3))], [("out", None)])
    alpha = np.array([0.1, 0.2, 0.3, 0.4][:channels], np.float32)
    b.add_activation("prelu", "PRELU", "x", "out", params=alpha)
    spec = b.spec
    assert unsupported(spec) == []
    ex = NumpyExecutor(spec)
    x = np.random.default_rng(0).standard_normal((5, 4, 3, 3)).astype(np.float32)
    ours = ex.trace({"x": x})["out"]
    theirs = TorchPeer(spec).run(ex.input_blobs({"x": x}), ["out"])["out"]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-7)
