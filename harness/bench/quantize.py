"""Quantization speed and quality: quantizer.quantize_weights next to coremltools 9, same model, same run.

Run ``python -m harness.bench quantize [--sizes 2M,20M] [--modes fp16,linear8,...]``.
For each size it builds (with coremltools' ``NeuralNetworkBuilder``; no torch)
a model of about that many float32 weights -- two convolutions and two
innerProducts with biases, random normal weights -- and for each setting times

* ours: ``quantizer.quantize_weights(mlmodel, nbits, mode)`` with an empty codec
  cache (no reuse between repeats);
* coremltools: ``quantization_utils.quantize_weights(mlmodel, nbits, mode)`` on
  the same ``MLModel`` (its prints silenced). Its ``kmeans_lut`` mode is broken
  on this stack, so the k-means peer is ``_get_kmeans_lookup_table_and_weight``
  called on every float tensor of the model, as ``quantize_weights`` would.

It prints seconds, the speed-up (coremltools time / ours), the target, the
k-means MSE of both (weights as stored, float32 LUTs), and, on the largest
model, the peak extra memory of ours while quantizing (resident set, measured
in a fresh process) as a multiple of the model's float32 weight bytes.

Targets (issue 2): sub-8-bit linear / linear_lut >= 100x; 8-bit and fp16 no
slower (>= 1x); 8-bit k-means >= 20x with MSE no higher; peak memory < 4x.
coremltools' slow modes (sub-8-bit linear and LUT packing in a Python loop,
scikit-learn k-means) take minutes on the larger model: by default they are
measured on the smallest size only (``--slow-peers all`` for every size,
``none`` to skip them).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: settings: name -> (mode, nbits)
SETTINGS: dict[str, tuple[str, int]] = {
    "fp16": ("linear", 16),
    "linear8": ("linear", 8),
    "linear4": ("linear", 4),
    "linear2": ("linear", 2),
    "linear1": ("linear", 1),
    "linear_lut4": ("linear_lut", 4),
    "kmeans8": ("kmeans_lut", 8),
}
DEFAULT_SETTINGS = tuple(SETTINGS)
#: settings whose coremltools peer runs at Python-loop / scikit-learn speed
SLOW_PEERS = {"linear4", "linear2", "linear1", "linear_lut4", "kmeans8"}


def target_for(name: str) -> float:
    """Required speed-up (coremltools seconds / ours) for a setting."""
    mode, nbits = SETTINGS[name]
    if mode == "kmeans_lut":
        return 20.0
    if nbits < 8:
        return 100.0
    return 1.0


def parse_size(text: str) -> int:
    """``"2M"`` -> 2_000_000, ``"500k"`` -> 500_000, ``"12345"`` -> 12345."""
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 2M, 500k)") from None


def _ct():
    from quantizer.coremltools_quiet import coremltools

    return coremltools()


# ----------------------------------------------------------------------------- the model
def build_model(weights: int, seed: int = 0) -> Any:
    """A valid neuralnetwork spec with about ``weights`` float32 weights.

    Two 3x3 convolutions (c -> 2c -> 2c, ~40% of the weights) on an image
    input and two innerProducts (d -> d -> d/2, ~60%) on a vector input, each
    with a bias; weights ~ N(0, 0.05), biases ~ N(0, 0.01).
    """
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    _ct()
    rng = np.random.default_rng(seed)
    c = max(1, round(math.sqrt(0.4 * weights / 54)))  # 9*(c*2c + 2c*2c) = 54 c^2
    d = max(2, round(math.sqrt(0.6 * weights / 1.5)))  # d*d + d*d/2
    d -= d % 2
    b = NeuralNetworkBuilder(
        [("image", datatypes.Array(c, 8, 8)), ("vector", datatypes.Array(d))],
        [("features", None), ("scores", None)],
    )

    def w(*shape: int, s: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(s)).astype(np.float32)

    b.add_convolution("conv1", c, 2 * c, 3, 3, 1, 1, "same", 1, w(3, 3, c, 2 * c), w(2 * c, s=0.01), True,
                      input_name="image", output_name="c1")
    b.add_activation("relu1", "RELU", "c1", "r1")
    b.add_convolution("conv2", 2 * c, 2 * c, 3, 3, 1, 1, "same", 1, w(3, 3, 2 * c, 2 * c), w(2 * c, s=0.01), True,
                      input_name="r1", output_name="features")
    b.add_inner_product("fc1", w(d, d), w(d, s=0.01), d, d, True, input_name="vector", output_name="h1")
    b.add_activation("relu2", "RELU", "h1", "r2")
    b.add_inner_product("fc2", w(d // 2, d), w(d // 2, s=0.01), d, d // 2, True, input_name="r2", output_name="scores")
    return b.spec


def float_weights(spec: Any) -> list[tuple[str, str, np.ndarray]]:
    """(layer, field, float32 values) of every float weight tensor, in model order."""
    from quantizer.tensors import layer_weights
    from quantizer.walk import iter_layers

    out = []
    for layer in iter_layers(spec):
        for fld, (wp, shape, _axis) in layer_weights(layer).items():
            if len(wp.floatValue):
                out.append((layer.name, fld, np.array(wp.floatValue, np.float32).reshape(shape)))
    return out


# ----------------------------------------------------------------------------- timing
def best_time(fn: Callable[[], Any], repeats: int, budget: float) -> tuple[float, Any]:
    """Smallest wall time of up to ``repeats`` runs (fewer once ``budget`` seconds are spent)."""
    best, out, spent = math.inf, None, 0.0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget:
            break
    return best, out


def _quiet(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run():
        with contextlib.redirect_stdout(io.StringIO()):
            return fn()

    return run


def _lut_mse(spec: Any, tensors: list[tuple[str, str, np.ndarray]]) -> float:
    """MSE over every weight of a quantized spec against the float tensors."""
    import quantizer
    from quantizer.tensors import layer_weights
    from quantizer.walk import iter_layers

    got = {}
    for layer in iter_layers(spec):
        for fld, (wp, shape, axis) in layer_weights(layer).items():
            got[(layer.name, fld)] = quantizer.decode_weights(wp, shape, axis)
    err = sum(float(np.sum((got[(l, f)].astype(np.float64) - w) ** 2)) for l, f, w in tensors)
    return err / sum(w.size for _, _, w in tensors)


def coremltools_kmeans(nbits: int, tensors: list[tuple[str, str, np.ndarray]]) -> float:
    """Run coremltools' k-means LUT on every tensor; return the MSE of its (float32) LUTs."""
    from coremltools.models.neural_network.quantization_utils import _get_kmeans_lookup_table_and_weight

    err = 0.0
    for _, _, w in tensors:
        lut, q = _get_kmeans_lookup_table_and_weight(nbits, w)
        deq = np.asarray(lut, np.float64).ravel().astype(np.float32)[np.asarray(q).ravel()]
        err += float(np.sum((deq.astype(np.float64) - w.ravel()) ** 2))
    return err / sum(w.size for _, _, w in tensors)


@dataclass
class Row:
    size: str
    setting: str
    mode: str
    nbits: int
    weights: int
    ours_s: float
    coremltools_s: float | None = None
    speedup: float | None = None
    target: float = 1.0
    mse_ours: float | None = None
    mse_coremltools: float | None = None
    peak_mem_x: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def met(self) -> str:
        if self.speedup is None:
            return "-"
        ok = self.speedup >= self.target
        if self.mse_ours is not None and self.mse_coremltools is not None:
            ok = ok and self.mse_ours <= self.mse_coremltools
        if self.peak_mem_x is not None:
            ok = ok and self.peak_mem_x < 4.0
        return "yes" if ok else "NO"


def bench_size(label: str, weights: int, settings: list[str], *, peers: bool, slow_peers: bool,
               repeats: int, memory: bool, log: Callable[[str], None]) -> list[Row]:
    """Measure every setting on one freshly built model."""
    import quantizer

    ct = _ct()
    t0 = time.perf_counter()
    spec = build_model(weights)
    mlmodel = ct.models.MLModel(spec)
    tensors = float_weights(spec)
    count = sum(w.size for _, _, w in tensors)
    log(f"[{label}] built a model with {count:,} weights in {time.perf_counter() - t0:.1f} s")
    with contextlib.ExitStack() as stack:  # the model file for the memory child is removed afterwards
        mem_path = None
        if memory:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="qsweep-bench-"))
            mem_path = Path(folder) / "model.mlmodel"
            quantizer.save(spec, mem_path)
        return _measure_settings(label, settings, mlmodel, tensors, count, mem_path, peers=peers,
                                 slow_peers=slow_peers, repeats=repeats, log=log)


def _measure_settings(label: str, settings: list[str], mlmodel: Any, tensors: list, count: int,
                      mem_path: Path | None, *, peers: bool, slow_peers: bool, repeats: int,
                      log: Callable[[str], None]) -> list[Row]:
    """Time ours (and the coremltools peer) on every setting of one model: one row each."""
    import quantizer
    from quantizer import CodecCache

    from coremltools.models.neural_network import quantization_utils as ct_qu

    rows = []
    for name in settings:
        mode, nbits = SETTINGS[name]
        ours_s, out = best_time(
            lambda: quantizer.quantize_weights(mlmodel, nbits, mode, cache=CodecCache()), 2 * repeats + 1, budget=20.0
        )
        shown = "fp16" if nbits == 16 else mode
        row = Row(label, name, shown, nbits, count, ours_s, target=target_for(name))
        run_peer = peers and (slow_peers or name not in SLOW_PEERS)
        if mode == "kmeans_lut":
            row.mse_ours = _lut_mse(out.get_spec(), tensors)
            if run_peer:
                row.coremltools_s, row.mse_coremltools = best_time(
                    _quiet(lambda: coremltools_kmeans(nbits, tensors)), 1, budget=0.0
                )
        elif run_peer:
            row.coremltools_s, theirs = best_time(
                _quiet(lambda: ct_qu.quantize_weights(mlmodel, nbits, mode)), repeats, budget=30.0
            )
            same = theirs.get_spec().SerializeToString() == out.get_spec().SerializeToString()
            row.extra["byte_identical"] = same
            if not same:
                row.note = "output differs from coremltools"
        if row.coremltools_s is None and peers:
            row.note = "peer skipped (slow; --slow-peers all to measure)"
        if row.coremltools_s is not None:
            row.speedup = row.coremltools_s / row.ours_s
        if mem_path is not None:
            row.peak_mem_x = peak_memory(mem_path, nbits, mode, count)
        log(f"[{label}] {name}: ours {row.ours_s:.3f} s" + (
            f", coremltools {row.coremltools_s:.3f} s ({row.speedup:.1f}x)" if row.speedup else ""))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- memory
_MEM_CHILD = r"""
import json, sys
path, nbits, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import quantizer

def status():
    d = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                k, v = line.split(":")
                d[k] = int(v.split()[0]) * 1024
    return d

import quantizer.api, quantizer.apply, quantizer.codecs, quantizer.fusion, quantizer.kmeans  # noqa: F401
spec = quantizer.load(path)
base = status()["VmRSS"]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak resident set to the current one
out = quantizer.quantize_weights(spec, nbits, mode)  # the default (process-wide) cache, as users get
peak = status()["VmHWM"]
print(json.dumps({"extra_bytes": peak - base}))
"""


def peak_memory(path: Path, nbits: int, mode: str, weights: int) -> float | None:
    """Peak extra resident memory of one quantize_weights call on a spec (the input model
    already in memory), in a fresh process, as a multiple of the float32 weight bytes.
    Linux only (None elsewhere)."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                       os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(path), str(nbits), mode],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        return None
    extra = json.loads(res.stdout.strip().splitlines()[-1])["extra_bytes"]
    return extra / (4 * weights)


# ----------------------------------------------------------------------------- output
def format_table(rows: list[Row]) -> str:
    head = ["size", "mode", "nbits", "weights", "ours s", "coremltools s", "speedup", "target", "met",
            "MSE ours", "MSE coremltools", "peak mem", "note"]
    lines = []
    for r in rows:
        lines.append([
            r.size, r.mode, str(r.nbits), f"{r.weights:,}", f"{r.ours_s:.3f}",
            "-" if r.coremltools_s is None else f"{r.coremltools_s:.3f}",
            "-" if r.speedup is None else f"{r.speedup:.1f}x", f">={r.target:g}x", r.met,
            "-" if r.mse_ours is None else f"{r.mse_ours:.4g}",
            "-" if r.mse_coremltools is None else f"{r.mse_coremltools:.4g}",
            "-" if r.peak_mem_x is None else f"{r.peak_mem_x:.2f}x fp32",
            r.note,
        ])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.bench quantize", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2M,20M", help="model sizes in weights, e.g. 2M,20M (default) or 200k")
    ap.add_argument("--modes", default=",".join(DEFAULT_SETTINGS),
                    help=f"settings to run, from {','.join(SETTINGS)} (default: all)")
    ap.add_argument("--slow-peers", choices=("smallest", "all", "none"), default="smallest",
                    help="where to measure coremltools' slow modes (sub-8-bit, k-means): the smallest size "
                         "(default), every size, or nowhere")
    ap.add_argument("--no-peers", action="store_true", help="time ours only")
    ap.add_argument("--repeats", type=int, default=3,
                    help="coremltools runs per measurement (ours: 2*repeats+1, as it is far faster); the best "
                         "is kept; runs stop early once 20-30 s are spent (default 3)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    try:
        sizes = [(s.strip(), parse_size(s)) for s in args.sizes.split(",") if s.strip()]
    except argparse.ArgumentTypeError as exc:
        ap.error(str(exc))
    settings = [s.strip() for s in args.modes.split(",") if s.strip()]
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        ap.error(f"unknown settings {bad}; choose from {', '.join(SETTINGS)}")
    smallest = min(n for _, n in sizes)
    largest = max(n for _, n in sizes)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    rows: list[Row] = []
    for label, n in sizes:
        slow = args.slow_peers == "all" or (args.slow_peers == "smallest" and n == smallest)
        rows += bench_size(label, n, settings, peers=not args.no_peers, slow_peers=slow, repeats=args.repeats,
                           memory=not args.no_memory and n == largest, log=log)
    print(format_table(rows))
    print("speedup = coremltools seconds / ours; peak mem = extra resident memory of ours while quantizing "
          "the largest model, as a multiple of its float32 weight bytes (target < 4x)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"met": r.met} for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
