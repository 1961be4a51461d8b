"""Executor benchmark: numpy executor throughput next to PyTorch CPU on the same network.

Run ``python -m harness.bench executor [--models digits_cnn,digits_mlp] [--batch 256]
[--repeats 7] [--threads N]``. For each zoo model (default: all of
``harness.zoo.names()``) it times ``NumpyExecutor.predict`` on a batch of
test samples and the same network rebuilt in PyTorch from the model's decoded
weights (:mod:`harness.bench.torch_peer`), in the same process with the same
thread count (numpy's BLAS via threadpoolctl, ``torch.set_num_threads``). It
prints samples/s for both, the time ratio ours/torch (target: <= 2 for the
CNNs and MLPs) and the largest difference between the two outputs, relative
to the output scale. Needs the ``torch`` extra for the peer column.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import statistics
import time
from typing import Callable

import numpy as np


def _time(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _batch(feeds: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` samples, cycling through the data when it has fewer."""
    return {k: np.ascontiguousarray(v[np.arange(n) % v.shape[0]]) for k, v in feeds.items()}


def _worker(backend: str, name: str, batch: int, repeats: int, threads: int) -> dict:
    """Time one backend on one zoo model in this (fresh) process; returns a JSON-able dict."""
    from threadpoolctl import threadpool_limits

    from harness import zoo
    from harness.executors import NumpyExecutor

    spec, data = zoo.load(name)
    feeds = _batch(data.feeds, batch)
    ex = NumpyExecutor(spec)
    names = [o.name for o in ex.io.outputs if o.kind == "array"] + ([ex.io.prob_blob] if ex.io.prob_blob else [])
    if backend == "numpy":
        with threadpool_limits(limits=threads):
            return {"seconds": _time(lambda: ex.predict(feeds), repeats), "layers": len(ex.network)}
    try:
        import torch
    except ImportError:  # an optional extra: the table says so instead of timing the peer
        return {"note": "torch not installed (pip install 'qsweep[torch]')"}
    from harness.bench.torch_peer import TorchPeer, unsupported

    torch.set_num_threads(threads)
    bad = unsupported(spec)
    if bad:
        return {"note": "peer cannot translate " + ", ".join(bad)}
    peer = TorchPeer(spec)
    blobs = ex.input_blobs(feeds)
    seconds = _time(lambda: peer.run(blobs, names), repeats)
    theirs = peer.run(blobs, names)
    with threadpool_limits(limits=threads):
        ours = ex.trace(feeds)  # after timing: the two thread pools never compete while timed
    diff = max(float(np.max(np.abs(ours[k] - theirs[k]))) / max(float(np.max(np.abs(theirs[k]))), 1e-6) for k in names)
    return {"seconds": seconds, "max_diff": diff}


def bench_model(name: str, batch: int, repeats: int, threads: int) -> dict:
    """Measure one zoo model: numpy then torch, each in a fresh subprocess (OpenBLAS's and
    torch's thread pools otherwise spin against each other and distort both timings)."""
    row: dict = {"model": name, "batch": batch}
    for backend in ("numpy", "torch"):
        cmd = [sys.executable, "-m", "harness.bench.executor", "--worker", backend, "--models", name,
               "--batch", str(batch), "--repeats", str(repeats), "--threads", str(threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{backend} worker failed on {name}:\n{proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if backend == "numpy":
            row["ours_s"], row["layers"] = res["seconds"], res["layers"]
        elif "seconds" in res:
            row["torch_s"], row["max_diff"] = res["seconds"], res["max_diff"]
        else:
            row["torch_note"] = res["note"]
    return row


def format_table(rows: list[dict], threads: int) -> str:
    """The result rows as a plain-text table."""
    head = f"{'model':<16}{'layers':>7}{'batch':>7}{'numpy ms':>10}{'numpy/s':>10}{'torch ms':>10}{'torch/s':>10}{'ratio':>8}{'max diff':>10}"
    lines = [f"executor benchmark — threads={threads}, ratio = numpy time / torch time (target <= 2)", head, "-" * len(head)]
    for r in rows:
        ours = f"{r['ours_s'] * 1e3:>10.1f}{r['batch'] / r['ours_s']:>10.0f}"
        if "torch_s" in r:
            peer = f"{r['torch_s'] * 1e3:>10.1f}{r['batch'] / r['torch_s']:>10.0f}{r['ours_s'] / r['torch_s']:>8.2f}{r['max_diff']:>10.1e}"
        else:
            peer = f"  {r.get('torch_note', '')}"
        lines.append(f"{r['model']:<16}{r['layers']:>7}{r['batch']:>7}{ours}{peer}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m harness.bench executor``."""
    from harness import zoo

    ap = argparse.ArgumentParser(prog="python -m harness.bench executor", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(zoo.names()), help="comma-separated zoo model names (default: all)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--worker", choices=("numpy", "torch"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in zoo.names()]
    if unknown:
        ap.error(f"unknown zoo model(s) {unknown}; available: {', '.join(zoo.names())}")
    if args.worker:
        print(json.dumps(_worker(args.worker, models[0], args.batch, args.repeats, args.threads)))
        return 0
    rows = []
    for name in models:
        rows.append(bench_model(name, args.batch, args.repeats, args.threads))
        print(format_table(rows[-1:], args.threads).splitlines()[-1], flush=True)
    print()
    print(format_table(rows, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
