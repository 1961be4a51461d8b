"""The large-model part of ``python -m harness.bench calibrated``: statistics + GPTQ on a 20 M-weight model vs coremltools.

The model is :func:`harness.bench.quantize.build_model` (two 3x3 convolutions
on an 8x8 image input and two innerProducts, random weights); the
calibration inputs are synthetic (normal image / vector inputs), as there is
no real data for it. Ours (statistics from ``samples`` inputs, then
``quantize_weights(..., 4, "linear", algorithm="gptq")``) runs in a fresh
process that reports its wall times and its peak extra resident memory (over
the loaded model and inputs) as a multiple of the model's float32 weight
bytes; coremltools' plain ``quantize_weights(mlmodel, 4, "linear")`` is timed
in this process on the same model.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

_CHILD = r"""
import json, sys, time
path, samples, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import numpy as np
import quantizer
from harness.calibration import collect_stats
from harness.data import expected_inputs


def status():
    d = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                k, v = line.split(":")
                d[k] = int(v.split()[0]) * 1024
    return d


spec = quantizer.load(path)
rng = np.random.default_rng(seed)
feeds = {i.name: rng.standard_normal((samples,) + tuple(i.sample_shape), dtype=np.float32)
         for i in expected_inputs(spec)}
weights = sum(t.count for t in quantizer.weight_tensors(spec) if t.encoding == "float32")
base = status()["VmRSS"]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak resident set to the current one
t0 = time.perf_counter()
stats = collect_stats(spec, feeds, memory_bytes=4 * weights)  # statistics beyond 1x fp32: file-backed
t1 = time.perf_counter()
peak_stats = status()["VmHWM"]
q = quantizer.quantize_weights(spec, 4, "linear", algorithm="gptq", calibration=stats)
t2 = time.perf_counter()
peak = status()["VmHWM"]
print(json.dumps({"weights": weights, "stats_s": t1 - t0, "gptq_s": t2 - t1, "extra_bytes": peak - base,
                  "base_bytes": base, "peak_bytes": peak,
                  "extra_bytes_stats": peak_stats - base, "stats_bytes": stats.nbytes,
                  "resident_stats_bytes": stats.resident_bytes,
                  "layers": {n: [s.columns, s.block] for n, s in stats.items()}}))
"""


def run_large(weights: int, samples: int, seed: int, *, peer: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Statistics + GPTQ 4-bit (fresh process) and coremltools' 4-bit linear time on one built model."""
    import quantizer
    from coremltools.models.neural_network import quantization_utils as ct_qu

    from harness.bench.quantize import _ct, build_model

    ct = _ct()
    spec = build_model(weights, seed)
    out: dict[str, Any] = {"samples": samples}
    with tempfile.TemporaryDirectory(prefix="qsweep-bench-calib-") as folder:
        path = Path(folder) / "model.mlmodel"
        quantizer.save(spec, path)
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        log(f"[large] statistics + GPTQ on {path.stat().st_size / 2**20:.0f} MiB model, {samples} calibration inputs")
        res = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(samples), str(seed)], capture_output=True,
                             text=True, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"the statistics + GPTQ child failed:\n{res.stderr[-2000:]}")
        child = json.loads(res.stdout.strip().splitlines()[-1])
    out.update(child)
    out["fp32_bytes"] = 4 * child["weights"]
    out["peak_x"] = child["extra_bytes"] / out["fp32_bytes"]
    out["peak_stats_x"] = child["extra_bytes_stats"] / out["fp32_bytes"]
    out["ours_s"] = child["stats_s"] + child["gptq_s"]
    t0 = time.perf_counter()
    quantizer.quantize_weights(spec, 4, "linear")
    out["ours_rtn_s"] = time.perf_counter() - t0
    if peer:
        mlmodel = ct.models.MLModel(spec)
        log("[large] coremltools quantize_weights(mlmodel, 4, 'linear') (a few minutes here)")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            ct_qu.quantize_weights(mlmodel, 4, "linear")
        out["coremltools_s"] = time.perf_counter() - t0
    return out


def format_large(r: dict[str, Any]) -> str:
    """The printed block of the large-model measurement, with the targets."""
    lines = [f"20 M-weight model ({r['weights']:,} weights, {r['fp32_bytes'] / 2**20:.0f} MiB fp32), "
             f"{r['samples']} synthetic calibration inputs:",
             f"  ours: statistics {r['stats_s']:.1f} s + GPTQ linear 4-bit {r['gptq_s']:.1f} s = {r['ours_s']:.1f} s "
             f"(round-to-nearest {r['ours_rtn_s']:.1f} s); statistics {r['stats_bytes'] / 2**20:.0f} MiB "
             f"({r['resident_stats_bytes'] / 2**20:.0f} MiB in memory, the rest file-backed)",
             f"  peak extra memory {r['peak_x']:.2f}x fp32 (statistics phase {r['peak_stats_x']:.2f}x; target < 4x): "
             f"{'met' if r['peak_x'] < 4 else 'NOT met'}"
             + (f" (whole process: {r['base_bytes'] / 2**20:.0f} MiB with the model and inputs loaded, peak "
                f"{r['peak_bytes'] / 2**20:.0f} MiB)" if "peak_bytes" in r else "")]
    if r.get("coremltools_s") is not None:
        ok = r["ours_s"] <= r["coremltools_s"]
        lines.append(f"  coremltools quantize_weights 4-bit linear (round-to-nearest): {r['coremltools_s']:.1f} s; "
                     f"ours/coremltools {r['ours_s'] / r['coremltools_s']:.2f} (target <= 1): "
                     f"{'met' if ok else 'NOT met'}")
    else:
        lines.append("  coremltools not timed (--no-peers)")
    return "\n".join(lines)
