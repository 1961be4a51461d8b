"""Acceptance benchmark: mixed precision vs the uniform grid, same model, same trial budget.

Run ``python -m harness.bench mixed [--model digits_cnn] [--model digits_resnet]
[--out DIR] [--seed 0]``. For each model it runs, in this process and with
the same config tree as ``qsweep``:

1. ``search=grid`` with the default space and selector (every uniform setting);
2. ``search=mixed`` with ``search.n_trials`` = the number of grid trials (the
   same budget; the mixed run's probes and seeds count against it) and
   ``search.options.compare_to`` = the grid run directory, so the mixed run's
   ``summary.json`` records both hypervolumes.

It prints, for both: trials, distinct evaluations, hypervolume (size
normalised by the float model's size; reference point: float size, zero
accuracy) and the smallest model within 1 point of the float accuracy, then
the mixed/grid ratios and whether the acceptance holds (larger hypervolume
and a strictly smaller model within 1 point). Both run directories are kept
(with their reports) under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence


def _compose(overrides: Sequence[str]) -> Any:
    from hydra import compose, initialize_config_dir

    import harness.cli as cli

    with initialize_config_dir(config_dir=cli.config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_pair(model: str, out: Path, seed: int = 0, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Run the grid and the budget-matched mixed sweep of ``model``; return the figures."""
    from harness.search.mixed_summary import finished_budget
    from harness.sweep import run_sweep

    out.mkdir(parents=True, exist_ok=True)
    common = [f"model={model}", f"seed={seed}", f"storage.url=sqlite:///{out / 'bench.db'}", "progress=false",
              f"study.name=bench-{model}-{seed}-{int(time.time())}"]
    t0 = time.perf_counter()
    grid = run_sweep(_compose(common[:-1] + [common[-1] + "-grid", "search=grid", *extra]), out / f"{model}-grid")
    t_grid = time.perf_counter() - t0
    budget = finished_budget(grid.trials)
    t0 = time.perf_counter()
    mixed = run_sweep(_compose(common[:-1] + [common[-1] + "-mixed", "search=mixed", f"search.n_trials={budget}",
                                              f"search.options.compare_to={grid.run_dir}", *extra]),
                      out / f"{model}-mixed")
    t_mixed = time.perf_counter() - t0
    hv = mixed.summary["hypervolume"]
    return {"model": model, "budget": budget, "baseline": mixed.summary["baseline"], "metric": mixed.summary["metric"],
            "grid": hv["compare_to"], "mixed": hv["mixed"], "uniform_seeds": hv.get("uniform_seeds_in_this_run"),
            "grid_dir": str(grid.run_dir), "mixed_dir": str(mixed.run_dir),
            "seconds": {"grid": round(t_grid, 1), "mixed": round(t_mixed, 1)}}


def verdict(res: dict[str, Any]) -> tuple[bool, bool]:
    """(larger hypervolume, strictly smaller model within 1 point) for one model's figures."""
    g, m = res["grid"], res["mixed"]
    hv_ok = m["hypervolume"] > g["hypervolume"]
    gs, ms = g["smallest_within_1_point"], m["smallest_within_1_point"]
    small_ok = ms is not None and (gs is None or ms["size_bytes"] < gs["size_bytes"])
    return hv_ok, small_ok


def format_result(res: dict[str, Any]) -> str:
    """The printed block of one model."""
    metric = res["metric"]
    base = res["baseline"]
    lines = [f"model {res['model']}: float {base['size_bytes'] / 1024:.1f} KB, {metric} {base[metric]:.4f}; "
             f"budget {res['budget']} trials each",
             f"  {'search':8s} {'trials':>6s} {'evaluated':>9s} {'hypervolume':>11s}   smallest within 1 point "
             f"({metric} >= {base[metric] - 0.01:.4f})"]
    for name in ("grid", "mixed"):
        b = res[name]
        s = b["smallest_within_1_point"]
        small = f"{s['size_bytes'] / 1024:7.2f} KB  {metric} {s[metric]:.4f}  (trial {s['trial']})" if s else "none"
        lines.append(f"  {name:8s} {b['trials']:6d} {b['evaluated']:9d} {b['hypervolume']:11.4f}   {small}")
    g, m = res["grid"], res["mixed"]
    hv_ok, small_ok = verdict(res)
    gs, ms = g["smallest_within_1_point"], m["smallest_within_1_point"]
    ratio = f"{ms['size_bytes'] / gs['size_bytes']:.3f}" if gs and ms else "n/a"
    lines.append(f"  mixed/grid: hypervolume {m['hypervolume'] / g['hypervolume']:.4f} "
                 f"({m['hypervolume'] - g['hypervolume']:+.4f}), smallest within 1 point {ratio}")
    lines.append(f"  acceptance: larger hypervolume {'YES' if hv_ok else 'NO'}; strictly smaller model within 1 point "
                 f"{'YES' if small_ok else 'NO'}")
    lines.append(f"  runs: {res['grid_dir']}  {res['mixed_dir']}  ({res['seconds']['grid']} s, "
                 f"{res['seconds']['mixed']} s)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench mixed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="zoo model (repeatable; default digits_cnn and digits_resnet)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the run directories (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("overrides", nargs="*", help="extra qsweep overrides for both runs, e.g. executor=numpy")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    from harness import zoo

    models = args.model or [m for m in ("digits_cnn", "digits_resnet") if m in zoo.names()]
    out = args.out or Path(tempfile.mkdtemp(prefix="qsweep-bench-mixed-"))
    results, ok = [], True
    for model in models:
        res = run_pair(model, out, args.seed, args.overrides)
        results.append(res)
        ok = ok and all(verdict(res))
    print()
    for res in results:
        print(format_result(res))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
