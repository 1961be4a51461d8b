"""Calibration-aware quantization on real models: round-to-nearest vs GPTQ, bias correction and activation-weighted k-means.

Run ``python -m harness.bench calibrated [--model NAME ...] [--model PATH --data NPZ ...]
[--fraction 0.25] [--stats float|both] [--skip batchnorm] [--grid NAME|none] [--large 20M|none]``.

For each model (default: the zoo's real models ``silero_vad``, ``silero_vad_8k``,
``crepe_tiny``, ``mtcnn_onet``, ``resemblyzer``; or an ``.mlmodel`` with its ``.npz``: inputs
by name, labels ``y``) the data is split reproducibly (seeded, as
``calibration=split`` does: :func:`harness.data.calibration.split_dataset`)
into calibration samples and the test samples every figure is computed on, so
nothing is calibrated on a test sample. It prints, for ``linear`` and
``kmeans_lut`` at 4, 3 and 2 bits, the task metric (accuracy: argmax of the
model's class output, or ``p > threshold`` for a one-value output; the output
and threshold are the model record's ``metric.output`` / ``metric.threshold``,
else the first output and 0.5) and the output SNR of:

* the float model; round-to-nearest (``quantizer.quantize_weights``, today's
  codec, = coremltools' bytes); RTN + bias correction; GPTQ; GPTQ + bias
  correction; activation-weighted k-means (``awkm``, kmeans_lut only);
* with ``--stats both``: GPTQ / GPTQ + bias correction on statistics
  collected sequentially (each layer from the model whose earlier layers are
  quantized, as the GPTQ paper does) instead of from the float model;

and the seconds spent collecting statistics and running each algorithm, next
to coremltools' own ``quantize_weights(mlmodel, 4, "linear")`` time on the same
model, measured in the same run (its ``kmeans_lut`` mode is broken on this
stack). ``--grid`` runs a qsweep grid with ``search.space.algorithm=[rtn,gptq]``
and ``bias_correction=[false,true]`` (``calibration=split``, same split) and
prints the hypervolume of all its trials against that of its round-to-nearest
trials (from its summary.json). ``--large`` times statistics + GPTQ on a
20 M-weight model against coremltools' plain 4-bit ``quantize_weights`` and
measures the peak memory (:mod:`harness.bench.calibrated_large`).

Targets (issue 10): on the model where 4-bit linear round-to-nearest loses
several points, GPTQ 4-bit linear within 1 point of float and 3-bit within 5;
the 20 M-weight model no slower than coremltools and under 4x its fp32 size in
memory; the calibrated grid's front dominates the round-to-nearest one.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.bench.calibrated_large import format_large, run_large

DEFAULT_MODELS = ("silero_vad", "silero_vad_8k", "crepe_tiny", "mtcnn_onet", "resemblyzer")
#: (column, algorithm, bias correction, statistics) of the table; awkm only for kmeans_lut.
CELLS = (("RTN", "rtn", False, "float"), ("RTN+BC", "rtn", True, "float"), ("GPTQ", "gptq", False, "float"),
         ("GPTQ+BC", "gptq", True, "float"), ("AWKM", "awkm", False, "float"),
         ("GPTQ seq", "gptq", False, "sequential"), ("GPTQ+BC seq", "gptq", True, "sequential"))


@dataclass
class Case:
    """One model with its calibration and test parts."""

    label: str
    spec: Any
    calibration: Any
    test: Any
    output: str
    split: dict[str, Any]
    source: dict[str, str] = field(default_factory=dict)
    threshold: float = 0.5


def _record_output(path: Path | None, spec: Any) -> tuple[str, float]:
    """The scored output and binary threshold: the model record's (``<name>.json`` beside the file:
    ``metric.output`` / ``metric.threshold``, or a top-level ``output``), else the first output and 0.5."""
    if path is not None:
        meta = path.with_suffix(".json")
        if meta.is_file():
            rec = json.loads(meta.read_text())
            metric = rec.get("metric") if isinstance(rec.get("metric"), dict) else {}
            out = metric.get("output") or rec.get("output")
            if out in [o.name for o in spec.description.output]:
                return str(out), float(metric.get("threshold", 0.5))
    return spec.description.output[0].name, 0.5


def load_case(model: str, data: str | None, fraction: float, seed: int) -> Case:
    """A zoo model by name, or ``model`` (.mlmodel) with ``data`` (.npz), split for calibration."""
    import quantizer
    from harness import zoo
    from harness.data import load_npz
    from harness.data.calibration import split_dataset
    from harness.errors import ConfigError

    if data is not None or model.endswith(".mlmodel"):
        if data is None:
            raise ConfigError(f"--model {model} is a file: give its test data with --data <file>.npz")
        path = Path(model)
        spec = quantizer.load(path)
        ds = load_npz(data, spec, label_key="y")
        label, source = path.stem, {"model": str(path), "data": str(data)}
    else:
        if model not in zoo.names():
            raise ConfigError(f"{model!r} is not in harness/zoo (yet): pass --model PATH.mlmodel --data PATH.npz "
                              f"(zoo models: {', '.join(zoo.names())})")
        path = zoo.path(model)
        spec, ds = zoo.load(model)
        label, source = model, {"zoo": model}
    if ds.labels is None:
        raise ConfigError(f"{label}: the data has no labels (y); the benchmark reports accuracy")
    cal, test, split = split_dataset(ds, fraction, seed)
    output, threshold = _record_output(path, spec)
    return Case(label, spec, cal, test, output, split, source, threshold)


class Scorer:
    """Accuracy and output SNR of a model's class output on the test part, against the float model."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.y = np.asarray(case.test.labels)
        self.ref = self.outputs(case.spec)

    def outputs(self, spec: Any) -> np.ndarray:
        from harness.executors.numpy_executor import NumpyExecutor

        ex = NumpyExecutor(spec)
        feeds = self.case.test.feeds
        n = self.case.test.n
        parts = [ex.predict({k: v[a:a + 256] for k, v in feeds.items()})[self.case.output] for a in range(0, n, 256)]
        return np.concatenate(parts).reshape(n, -1)

    def accuracy(self, out: np.ndarray) -> float:
        pred = (out[:, 0] > self.case.threshold).astype(np.int64) if out.shape[1] == 1 else out.argmax(axis=1)
        return float((pred == self.y).mean())

    def score(self, spec: Any) -> tuple[float, float]:
        from harness import metrics

        out = self.outputs(spec)
        return self.accuracy(out), float(metrics.noise_stats(self.ref, out).snr_mean)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def coremltools_time(spec: Any) -> tuple[float | None, str]:
    """Seconds of coremltools' ``quantize_weights(mlmodel, 4, "linear")`` (None and why if it fails)."""
    from coremltools.models.neural_network import quantization_utils as ct_qu

    from harness.bench.quantize import _ct

    mlmodel = _ct().models.MLModel(spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            t, _ = _timed(lambda: ct_qu.quantize_weights(mlmodel, 4, "linear"))
    except Exception as e:  # noqa: BLE001 - coremltools 9 fails on some models; say how
        return None, f"{type(e).__name__}: {str(e)[:80]}"
    return t, ""


def run_case(case: Case, modes: Sequence[str], bits: Sequence[int], stats_kinds: Sequence[str],
             log: Callable[[str], None], skip: Sequence[str] = ()) -> dict[str, Any]:
    """Every cell of one model's table, with its timings (``skip``: layer types kept in float, as
    coremltools' ``AdvancedQuantizedLayerSelector(skip_layer_types=...)``)."""
    import quantizer
    from harness.calibration import collect_stats, sequential_stats

    selector = quantizer.AdvancedQuantizedLayerSelector(skip_layer_types=list(skip), minimum_conv_kernel_channels=0,
                                                       minimum_conv_weight_count=0) if skip else None
    scorer = Scorer(case)
    res: dict[str, Any] = {"model": case.label + (f" (float {'+'.join(skip)})" if skip else ""), "output": case.output,
                           "split": case.split, "source": case.source, "skip": list(skip),
                           "float": scorer.accuracy(scorer.ref), "rows": []}
    res["stats_s"], stats = _timed(lambda: collect_stats(case.spec, case.calibration.feeds))
    res["stats_layers"] = len(stats)
    log(f"[{case.label}] float accuracy {res['float']:.4f} on {case.test.n} test samples; statistics of "
        f"{len(stats)} layers from {case.calibration.n} samples in {res['stats_s']:.1f} s")
    res["rtn4_s"], _ = _timed(lambda: quantizer.quantize_weights(case.spec, 4, "linear"))
    res["coremltools4_s"], res["coremltools_note"] = coremltools_time(case.spec)
    for mode in modes:
        for nb in bits:
            row: dict[str, Any] = {"mode": mode, "nbits": nb, "cells": {}}
            for name, algo, bc, kind in CELLS:
                if kind not in stats_kinds or (algo == "awkm" and mode != "kmeans_lut"):
                    continue
                cal: Any = stats
                seq_s = 0.0
                if kind == "sequential":
                    plan_for = (lambda s, nb=nb, mode=mode, algo=algo, bc=bc: quantizer.build_plan(
                        case.spec, nb, mode, selector, algorithm=algo, bias_correction=bc, calibration=s))
                    seq_s, cal = _timed(lambda: sequential_stats(case.spec, case.calibration.feeds, plan_for))
                t, q = _timed(lambda: quantizer.quantize_weights(case.spec, nb, mode, selector=selector, algorithm=algo,
                                                                 bias_correction=bc, calibration=cal))
                acc, snr = scorer.score(q)
                row["cells"][name] = {"accuracy": acc, "snr_db": snr, "seconds": round(t, 3),
                                      "size_bytes": quantizer.model_size(q), **({"stats_s": round(seq_s, 2)} if seq_s else {})}
            log(f"[{case.label}] {mode} {nb}-bit: " + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in row["cells"].items()))
            res["rows"].append(row)
    stats.close()
    return res


def run_grid(case: Case, model_arg: str, data_arg: str | None, fraction: float, seed: int, out: Path,
             log: Callable[[str], None]) -> dict[str, Any]:
    """A qsweep grid with algorithm=[rtn,gptq] x bias_correction=[false,true]; its hypervolume block."""
    from hydra import compose, initialize_config_dir

    import harness.cli as cli
    from harness.sweep import run_sweep

    source = [f"model={model_arg}", "data=zoo"] if data_arg is None else [
        f"model.path={Path(model_arg).resolve()}", "data=npz", f"data.path={Path(data_arg).resolve()}"]
    overrides = source + [
        "calibration=split", f"calibration.fraction={fraction}", f"calibration.seed={seed}", "calibration.limit=null",
        "search.space.nbits=[8,6,4,3,2]", "search.space.mode=[linear,kmeans_lut]",
        "search.space.algorithm=[rtn,gptq]", "search.space.bias_correction=[false,true]", "selector=all",
        "selector.skip_layer_types=[[],[batchnorm]]",
        f"storage.url=sqlite:///{out / 'bench.db'}", f"study.name=bench-calibrated-{case.label}-{int(time.time())}",
        "progress=false", "report.enabled=false"]
    with initialize_config_dir(config_dir=cli.config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    log(f"[{case.label}] grid: {' '.join(overrides[len(source):-3])}")
    t, result = _timed(lambda: run_sweep(cfg, out / f"{case.label}-grid"))
    hv = result.summary.get("hypervolume", {})
    return {"model": case.label, "seconds": round(t, 1), "hypervolume": hv, "run_dir": str(result.run_dir),
            "front": [{k: r.get(k) for k in ("trial", "nbits", "mode", "algorithm", "bias_correction", "size_bytes",
                                             result.summary["metric"])} for r in result.summary["pareto_front"]],
            "metric": result.summary["metric"], "calibration_s": result.summary.get("calibration_s")}


# ----------------------------------------------------------------------------- output
def _cell(c: dict[str, Any] | None) -> str:
    return "-" if c is None else f"{c['accuracy']:.4f} ({c['snr_db']:.1f} dB)"


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A markdown table: accuracy (output SNR) per model x mode x bits x algorithm, with timings."""
    names = [n for n, *_ in CELLS if any(n in row["cells"] for r in results for row in r["rows"])]
    head = ["model", "mode", "bits", "float"] + names + ["GPTQ s", "stats s", "coremltools 4-bit s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ct = "failed" if r["coremltools4_s"] is None else f"{r['coremltools4_s']:.2f}"
        for i, row in enumerate(r["rows"]):
            cells = [_cell(row["cells"].get(n)) for n in names]
            g = row["cells"].get("GPTQ")
            lines.append("| " + " | ".join([r["model"] if i == 0 else "", row["mode"], str(row["nbits"]),
                                            f"{r['float']:.4f}" if i == 0 else ""] + cells
                                           + ["-" if g is None else f"{g['seconds']:.2f}",
                                              f"{r['stats_s']:.1f}" if i == 0 else "", ct if i == 0 else ""]) + " |")
    return "\n".join(lines)


def verdicts(results: Sequence[dict[str, Any]]) -> list[str]:
    """The accuracy targets, on each model where 4-bit linear RTN loses at least 3 points."""
    out = []
    for r in results:
        rows = {(row["mode"], row["nbits"]): row["cells"] for row in r["rows"]}
        four, three = rows.get(("linear", 4)), rows.get(("linear", 3))
        if not four or "RTN" not in four:
            continue
        loss = r["float"] - four["RTN"]["accuracy"]
        tag = "loses several points" if loss >= 0.03 else "loses little (no target)"
        line = f"{r['model']}: 4-bit linear RTN {-loss * 100:+.1f} points ({tag})"
        for name in ("GPTQ", "GPTQ+BC"):
            if name in four and three and name in three:
                d4 = (r["float"] - four[name]["accuracy"]) * 100
                d3 = (r["float"] - three[name]["accuracy"]) * 100
                ok = "" if loss < 0.03 else (" -> 4-bit " + ("met" if d4 <= 1 else "NOT met") + ", 3-bit "
                                             + ("met" if d3 <= 5 else "NOT met"))
                line += f"; {name} 4-bit {-d4:+.1f}, 3-bit {-d3:+.1f} points{ok}"
        out.append(line)
    return out


def format_grid(g: dict[str, Any]) -> str:
    hv = g["hypervolume"]
    a, r = hv.get("all_algorithms", {}), hv.get("round_to_nearest", {})

    def small(b: dict[str, Any]) -> str:
        s = b.get("smallest_within_1_point")
        return "none" if not s else f"{s['size_bytes'] / 1024:.1f} KB ({g['metric']} {s[g['metric']]:.4f})"

    ok = a.get("hypervolume", 0) > r.get("hypervolume", 0)
    dom = hv.get("round_to_nearest_front", {})
    return (f"grid on {g['model']} ({g['seconds']} s, statistics {g['calibration_s']:.1f} s): hypervolume "
            f"{a.get('hypervolume', float('nan')):.4f} (all {a.get('trials')} trials) vs "
            f"{r.get('hypervolume', float('nan')):.4f} (its {r.get('trials')} round-to-nearest trials): "
            f"{'larger' if ok else 'NOT larger'}; {dom.get('dominated_by_calibrated')} of the "
            f"{dom.get('points')} round-to-nearest front points are strictly dominated by calibrated trials; "
            f"smallest within 1 point {small(a)} vs {small(r)}\n  run: {g['run_dir']}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.bench calibrated", description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="zoo name or .mlmodel path (repeatable; default: "
                    + ", ".join(DEFAULT_MODELS) + ")")
    ap.add_argument("--data", action="append", help=".npz test data of each --model path, in the same order")
    ap.add_argument("--fraction", type=float, default=0.25, help="share of each data set held out for calibration")
    ap.add_argument("--seed", type=int, default=0, help="the split's seed")
    ap.add_argument("--modes", default="linear,kmeans_lut")
    ap.add_argument("--bits", default="4,3,2")
    ap.add_argument("--stats", choices=("float", "both"), default="float",
                    help="statistics from the float model only (qsweep's choice), or also sequentially collected")
    ap.add_argument("--skip", default="", help="layer types kept in float in every cell (e.g. batchnorm), as "
                    "coremltools' skip_layer_types")
    ap.add_argument("--grid", default="crepe_tiny", help="model (a --model label) for the calibrated grid, or none")
    ap.add_argument("--large", default="20M", help="size of the synthetic large model, or none")
    ap.add_argument("--large-samples", type=int, default=256, help="calibration inputs of the large model")
    ap.add_argument("--no-peers", action="store_true", help="do not time coremltools on the large model")
    ap.add_argument("--out", type=Path, default=None, help="folder for the grid's run directory")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    import os

    log(f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        "(timings on a shared machine are noisy)")
    models = args.model or list(DEFAULT_MODELS)
    datas = list(args.data or [])
    paths = [m for m in models if m.endswith(".mlmodel")]
    if len(datas) != len(paths):
        ap.error(f"{len(paths)} --model path(s) need as many --data files (got {len(datas)})")
    data_of = dict(zip(paths, datas))
    stats_kinds = ("float",) + (("sequential",) if args.stats != "float" else ())
    results, cases = [], {}
    for m in models:
        case = load_case(m, data_of.get(m), args.fraction, args.seed)
        cases[case.label] = (case, m)
        results.append(run_case(case, args.modes.split(","), [int(b) for b in args.bits.split(",")], stats_kinds,
                                log, [t for t in args.skip.split(",") if t]))
    out: dict[str, Any] = {"models": results}
    print(format_table(results))
    print("cells: accuracy on the test part (output SNR vs float); GPTQ s: seconds of quantize_weights with GPTQ "
          "(float statistics); stats s: collecting them; coremltools: quantize_weights(mlmodel, 4, 'linear')")
    for r in results:
        print(f"{r['model']}: ours RTN 4-bit {r['rtn4_s']:.3f} s, coremltools 4-bit "
              + ("failed: " + r["coremltools_note"] if r["coremltools4_s"] is None else f"{r['coremltools4_s']:.2f} s")
              + f"; {r['split']['calibration_n']} calibration / {r['split']['test_n']} test samples (seed "
              f"{r['split']['seed']})")
    for v in verdicts(results):
        print(v)
    if args.grid != "none" and args.grid in cases:
        case, m = cases[args.grid]
        folder = args.out or Path(tempfile.mkdtemp(prefix="qsweep-bench-calibrated-"))
        out["grid"] = run_grid(case, m, data_of.get(m), args.fraction, args.seed, folder, log)
        print(format_grid(out["grid"]))
    if args.large != "none":
        from harness.bench.quantize import parse_size

        out["large"] = run_large(parse_size(args.large), args.large_samples, args.seed, peer=not args.no_peers, log=log)
        print(format_large(out["large"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
