"""Executor benchmark: numpy executor time next to PyTorch CPU on the same network, per model and per layer type.

Run ``python -m harness.bench executor [--models a,b,path.mlmodel:32] [--batch N]
[--repeats 7] [--threads 1,2]``. Models are zoo names or ``.mlmodel`` paths
(inputs read from the ``.npz`` beside the file, keyed by input name, as the test
fixtures store them); ``:N`` after a model sets its batch. The default list is
every zoo model plus the transformer and recurrent test fixtures
(``transformer_block``, ``lstm_text``, ``bilstm_text``, ``gru_text``) when run
from a checkout. The default batch is 256, and 32 for models with attention
(a ``batchedMatmul`` of two activations), the issue's transformer setting.

For each model and thread count it times ``NumpyExecutor.predict`` on the
batch and the same network rebuilt in PyTorch from the model's decoded weights
(:mod:`harness.bench.torch_peer`), each in a fresh process with the same thread
count (numpy's BLAS via threadpoolctl, which also sizes the executor's own
elementwise pool; ``torch.set_num_threads``). Every repeat records the wall time
of each top-level layer, so the same runs give the whole-model time and, per
layer type, the time spent in the executor's ops of that type next to the same
layers in the peer. ``--clock cpu`` times CPU seconds of the process instead of
wall seconds; ``--stat min`` summarises the repeats by their minimum
instead of the median. It prints medians over the repeats: samples/s, the time
ratio ours/torch with the issue's targets (1.2 for the transformer layers,
1.5 for LSTM/GRU) and the largest output difference relative to the output
scale. A model the peer cannot translate gets a note naming the layers.
Needs the ``torch`` extra for the peer columns.

**The peer's heap.** The numpy executor keeps freed memory in its process
(:mod:`harness.executors.heap`); PyTorch as shipped uses glibc's default malloc,
which returns large freed blocks to the kernel, so its next tensor of that size
faults in fresh pages. On this project's VM that is most of PyTorch's in-model time
in gelu, softmax and layer norm (gelu: 67 ms in-model against 23 ms with the heap
kept, 1 thread). ``--peer-heap`` times the peer with its default heap
(``default``), with the same settings as ours applied in its process (``kept``:
the kernels compared on equal memory) or both (the default), one table each.

**Processes.** On this VM a process's speed is bimodal: the same worker, pinned to either core or
not, runs gru_text's predict in about 2.0 ms in most processes and 3.1 ms in some (measured: 10
fresh processes, 1 thread, min of 40 repeats each: 1.9-2.6 ms in 7, 3.1-3.2 ms in 3), and a second
thread does not change that. A ratio from one process per backend can therefore be off by 1.5x either
way. ``--processes K`` times each backend in K fresh processes, alternating numpy and torch, and keeps
each backend's fastest process (whole-model time; its per-layer times come with it): the same rule for
both, so neither side's slow process sets the ratio.

**BLAS kernels.** The first line printed names the kernels numpy's and scipy's OpenBLAS run
(threadpoolctl's ``architecture``; numba's ``np.dot`` calls scipy's) and any ``OPENBLAS_CORETYPE`` /
``OPENBLAS_L2_SIZE`` in the environment, which the worker processes inherit. PyTorch's oneDNN picks
its own. Some machines of this project set ``OPENBLAS_CORETYPE=Haswell`` (older OpenBLAS builds fail
on their CPUs); on its AVX-512 EPYC that halves our products against PyTorch's (an LSTM step's
(256, 64) @ (64, 256): 77 us Haswell, 43 us SkylakeX), so the README's figures there unset both
variables for the benchmark command alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from harness.bench import _executor_table as table

#: The transformer and recurrent fixtures benchmarked by default (when tests/fixtures exists).
#: fixtures timed by default with the zoo: transformer and recurrent layers, and depthwise convolutions
FIXTURES = ("transformer_block", "lstm_text", "bilstm_text", "gru_text", "mobilenetv2")
FIXTURE_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


def _batch(feeds: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` samples, cycling through the data when it has fewer."""
    return {k: np.ascontiguousarray(v[np.arange(n) % v.shape[0]]) for k, v in feeds.items()}


def load_model(name: str):
    """``(spec, feeds)`` of a zoo model or of an ``.mlmodel`` file with its ``.npz`` inputs beside it."""
    from harness import zoo

    if name in zoo.names():
        spec, data = zoo.load(name)
        return spec, dict(data.feeds)
    path = Path(name)
    if path.suffix != ".mlmodel" or not path.is_file():
        raise SystemExit(f"{name!r} is neither a zoo model ({', '.join(zoo.names())}) nor an .mlmodel file")
    npz = path.with_suffix(".npz")
    if not npz.is_file():
        raise SystemExit(f"{path}: no inputs file {npz} beside it (arrays keyed by input name)")
    import quantizer

    with np.load(npz) as d:
        feeds = {k: d[k] for k in d.files if not k.startswith("out:")}
    return quantizer.load(path), feeds


def has_attention(spec) -> bool:
    """True if the network multiplies two activations (``batchedMatmul`` with two inputs)."""
    import quantizer
    from harness.executors.interface import ModelIO

    return any(layer.WhichOneof("layer") == "batchedMatmul" and len(layer.input) == 2
               for layer in quantizer.walk.iter_layers(ModelIO(spec).nn))


#: ``--clock``: wall time, or the process's CPU time (all its threads), which a machine loaded by
#: other processes disturbs much less when one thread is timed.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter
#: ``--stat``: how the repeats are summarised (median; min estimates the uncontended time on a busy machine)
STATS = {"median": statistics.median, "min": min}
_stat = statistics.median


def _runs(fn: Callable[[dict], object], repeats: int, warmup: int = 2) -> tuple[float, dict[str, float]]:
    """Median total seconds and median seconds per layer type of ``fn(times)`` over ``repeats`` runs."""
    for _ in range(warmup):
        fn({})
    totals, per = [], []
    for _ in range(repeats):
        times: dict[str, float] = {}
        t0 = _clock()
        fn(times)
        totals.append(_clock() - t0)
        per.append(times)
    types = {t: _stat([p.get(t, 0.0) for p in per]) for t in per[0]}
    return _stat(totals), types


def _timed_ops(ex) -> list[dict]:
    """Instrument the executor's top-level ops: each run adds its layer times to the dict in ``sink[0]``."""
    clock = _clock
    sink: list[dict] = [{}]
    for op in ex.network.ops:
        inner = op.run_blobs

        def run_blobs(blobs, inner=inner, t=op.type):
            t0 = clock()
            inner(blobs)
            d = sink[0]
            d[t] = d.get(t, 0.0) + clock() - t0
        op.run_blobs = run_blobs  # instance attribute: shadows the method
    return sink


def _calls(layers) -> dict[str, int]:
    out: dict[str, int] = {}
    for layer in layers:
        t = layer.WhichOneof("layer")
        out[t] = out.get(t, 0) + 1
    return out


#: ``--peer-heap`` choices: the peer's malloc as shipped, or with the numpy executor's heap settings
PEER_HEAPS = {"default": ("default",), "kept": ("kept",), "both": ("default", "kept")}


def _worker(backend: str, name: str, batch: int, repeats: int, threads: int, heap: str = "default") -> dict:
    """Time one backend on one model in this (fresh) process; returns a JSON-able dict.

    ``heap="kept"`` applies :func:`harness.executors.heap.keep_freed_memory` in the peer's
    process too (the numpy executor always applies it when it compiles a network).
    """
    from threadpoolctl import threadpool_limits

    from harness.executors import NumpyExecutor

    spec, feeds = load_model(name)
    feeds = _batch(feeds, batch)
    ex = NumpyExecutor(spec)
    names = [o.name for o in ex.io.outputs if o.kind == "array"] + ([ex.io.prob_blob] if ex.io.prob_blob else [])
    calls = _calls(ex.io.nn.layers)
    if backend == "numpy":
        sink = _timed_ops(ex)

        def run(times):
            sink[0] = times
            ex.predict(feeds)
        with threadpool_limits(limits=threads):
            total, types = _runs(run, repeats)
        return {"seconds": total, "types": types, "calls": calls, "layers": len(ex.io.nn.layers), "fused": getattr(ex, "fused", {})}
    try:
        import torch
    except ImportError:  # an optional extra: the table says so instead of timing the peer
        return {"note": "torch not installed (pip install 'qsweep[torch]')"}
    from harness.bench.torch_peer import TorchPeer, unsupported

    from harness.executors.heap import keep_freed_memory

    heap_status = keep_freed_memory() if heap == "kept" else "default"
    torch.set_num_threads(threads)
    bad = unsupported(spec)
    if bad:
        return {"note": "peer cannot translate " + ", ".join(bad)}
    peer = TorchPeer(spec, clock=_clock)
    blobs = ex.input_blobs(feeds)
    total, types = _runs(lambda times: peer.run(blobs, names, times), repeats)
    theirs = peer.run(blobs, names)
    with threadpool_limits(limits=threads):
        ours = ex.trace(feeds)  # after timing: the two thread pools never compete while timed
    diff = max(float(np.max(np.abs(ours[k] - theirs[k]))) / max(float(np.max(np.abs(theirs[k]))), 1e-6) for k in names)
    return {"seconds": total, "types": types, "max_diff": diff, "fused": peer.fused, "heap": heap_status}


def blas_line() -> str:
    """The BLAS kernels this process (and the workers it starts, same environment) runs, for the header."""
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, the one numba's np.dot calls)
    from threadpoolctl import threadpool_info

    libs = ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')})"
                     for i in threadpool_info() if i.get("user_api") == "blas")
    env = ", ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.get(k))
    return f"BLAS kernels: {libs or 'none found'}; environment: {env or 'no OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE'}"


def parse_models(text: str, batch: int | None) -> list[tuple[str, int | None]]:
    """``"a,b:32,x.mlmodel"`` -> [(model, batch or None)]; a ``:N`` suffix sets that model's batch."""
    out = []
    for item in (m for m in text.split(",") if m):
        head, sep, tail = item.rpartition(":")
        if sep and tail.isdigit():
            out.append((head, int(tail)))
        else:
            out.append((item, batch))
    return out


def default_models() -> list[str]:
    """Every zoo model, then the fixtures of :data:`FIXTURES` found in a checkout."""
    from harness import zoo

    fixtures = [str(FIXTURE_DIR / f"{n}.mlmodel") for n in FIXTURES if (FIXTURE_DIR / f"{n}.mlmodel").is_file()]
    return zoo.names() + fixtures


def _child(backend: str, name: str, batch: int, repeats: int, threads: int, clock: str, stat: str,
           heap: str = "default") -> dict:
    cmd = [sys.executable, "-m", "harness.bench.executor", "--worker", backend, "--models", name,
           "--batch", str(batch), "--repeats", str(repeats), "--threads", str(threads), "--clock", clock,
           "--stat", stat, "--peer-heap", heap]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} worker failed on {name}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fastest(runs: list[dict]) -> dict:
    """Of several processes' results, the one with the shortest whole-model time (a note if none was timed)."""
    timed = [r for r in runs if "seconds" in r]
    return min(timed, key=lambda r: r["seconds"]) if timed else runs[0]


def bench_model(name: str, batch: int | None, repeats: int, threads: int, clock: str = "wall",
                stat: str = "median", peer_heaps: tuple[str, ...] = ("default", "kept"),
                processes: int = 1) -> list[dict]:
    """Measure one model: numpy, then torch once per heap in ``peer_heaps``, each in a fresh subprocess
    (OpenBLAS's and torch's thread pools otherwise spin against each other and distort both timings),
    ``processes`` times in turn, each backend's fastest process kept (module docstring).
    One row per peer heap, sharing the numpy measurement."""
    if batch is None:
        batch = 32 if has_attention(load_model(name)[0]) else 256
    base: dict = {"model": Path(name).stem if name.endswith(".mlmodel") else name, "batch": batch, "threads": threads,
                  "clock": clock, "stat": stat, "processes": processes}
    ours: list[dict] = []
    peers: dict[str, list[dict]] = {heap: [] for heap in peer_heaps}
    no_peer = False
    for _ in range(max(1, processes)):
        ours.append(_child("numpy", name, batch, repeats, threads, clock, stat))
        for heap in peer_heaps if not no_peer else ():
            peers[heap].append(_child("torch", name, batch, repeats, threads, clock, stat, heap))
            no_peer = "seconds" not in peers[heap][-1]  # torch missing or the model untranslatable: a note
            if no_peer:
                break
    res = _fastest(ours)
    base.update(ours_s=res["seconds"], layers=res["layers"], ours_types=res["types"], calls=res["calls"],
                ours_fused=res["fused"])
    rows = []
    for heap in peer_heaps:
        row = {**base, "peer_heap": heap}
        res = _fastest(peers[heap])
        if "seconds" in res:
            row.update(torch_s=res["seconds"], max_diff=res["max_diff"], torch_types=res["types"],
                       torch_fused=res["fused"], peer_heap=res["heap"])
        else:
            row["torch_note"] = res["note"]
        rows.append(row)
        if "torch_note" in row:
            break  # no peer: one row says so
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m harness.bench executor``."""
    ap = argparse.ArgumentParser(prog="python -m harness.bench executor", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None,
                    help="comma-separated zoo names or .mlmodel paths, each optionally :BATCH "
                         "(default: every zoo model and the transformer/recurrent fixtures)")
    ap.add_argument("--batch", type=int, default=None, help="samples per predict (default 256; 32 with attention)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per model and backend (medians are printed)")
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1 and the CPU count)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall time (default) or process CPU time (steadier on a machine shared with other work)")
    ap.add_argument("--stat", choices=sorted(STATS), default="median",
                    help="summary of the repeats: median (default) or min (the least disturbed run)")
    ap.add_argument("--peer-heap", choices=sorted(PEER_HEAPS), default="both",
                    help="the torch peer's malloc: as shipped (default), with the numpy executor's heap "
                         "settings (kept), or both, one table each (the default)")
    ap.add_argument("--processes", type=int, default=1,
                    help="fresh processes per backend, alternating; each backend's fastest is kept (default 1)")
    ap.add_argument("--json", default=None, help="also write the result rows to this JSON file")
    ap.add_argument("--worker", choices=("numpy", "torch"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global _clock, _stat
    _clock, _stat = CLOCKS[args.clock], STATS[args.stat]
    if args.worker:
        name, batch = parse_models(args.models, args.batch)[0]
        heap = "kept" if args.peer_heap == "kept" else "default"
        print(json.dumps(_worker(args.worker, name, batch, args.repeats, int(args.threads), heap)))
        return 0
    models = parse_models(args.models or ",".join(default_models()), args.batch)
    cpus = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cpus})
    print(blas_line(), flush=True)
    rows = []
    for n_threads in threads:
        for name, batch in models:
            for row in bench_model(name, batch, args.repeats, n_threads, args.clock, args.stat,
                                   PEER_HEAPS[args.peer_heap], args.processes):
                rows.append(row)
                print(table.model_line(row), flush=True)
    print()
    print(table.report(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
