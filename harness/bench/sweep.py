"""Sweep benchmark: racing off / exact / confident on the default grid, and activation reuse on sensitivity and mixed.

Run ``python -m harness.bench sweep [--model NAME] [--all-zoo] [--out DIR] [--seed 0]``
(``--skip-reuse``: only 1; ``--skip-racing``: only 2 and 3). With the
config tree of ``qsweep`` and one process:

1. the default grid (``search=grid``, the default space and selector) on ``--model`` -- by default
   the largest zoo model (most weights) whose test set has at least ``--min-samples`` (1 000)
   samples -- with ``evaluation.racing=off``, ``exact`` and ``confident``, each in its own study;
   it prints the wall time, the sample evaluations (the sum of ``evaluated_samples``: samples run
   through a candidate's network), their ratio to ``off``, the trials stopped, and whether the
   Pareto front (``pareto.csv``: plan hash, size and metric of every row) is identical to
   ``off``'s; ``--all-zoo`` repeats the three runs on every other zoo model (front identity on
   every zoo model), ``--zoo a,b`` on the models named;
2. ``search=sensitivity`` on the same model (``--sens-nbits`` x ``--sens-modes``, default
   [8, 4, 2] x [linear, kmeans_lut]) with ``evaluation.activation_cache_mb=0`` and with the
   default cache: wall time, speed-up, and whether the two sensitivity tables are identical; on the
   first ``--reuse-limit`` test samples (``data.limit``, default 256; 0: the whole set), because a
   probe's cost is per sample and 312 probes of a 22 M-parameter model on 1 000 samples take hours;
   ``--reuse-repeats`` (default 3) pairs, without and with alternately, compared by their median wall
   times (this machine's speed drifts by 10-15% over minutes: one pair's ratio moves with it);
3. ``search=mixed`` the same way (``--mixed-trials`` trials, default 40);
4. ``--held-out`` synthetic sweeps built to be hard for a confident stop (:mod:`harness.bench._heldout`,
   default 100): fronts and best-within models changed, wrong stops, sample evaluations;
5. ``--replay`` (default 20): each raced model's ``off`` run records every candidate's per-sample rows,
   which are raced again offline on that many seeded sample orders (:mod:`harness.bench._replay`): the
   measured chance of a wrong confident stop on real models.

Targets (issue 11): exact at most 60% of off's sample evaluations with an identical front;
confident at most 30% with an identical front on every zoo model; sensitivity at least 1.5x
faster with activation reuse. Timings are wall-clock on this machine: others' load shows.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

MODES = ("off", "exact", "confident")


def _compose(overrides: Sequence[str]) -> Any:
    from hydra import compose, initialize_config_dir

    import harness.cli as cli

    with initialize_config_dir(config_dir=cli.config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def default_model(min_samples: int) -> str:
    """The zoo model with the most weights among those whose test set has at least ``min_samples`` samples."""
    from harness import zoo

    fits = [(zoo.info(n).get("weight_count", 0), n) for n in zoo.names()
            if (zoo.info(n)["dataset"].get("n") or zoo.load_data(n).n) >= min_samples]
    if not fits:
        raise SystemExit(f"no zoo model has {min_samples} test samples; pass --model or a smaller --min-samples")
    weights, pick = max(fits)
    built = zoo.names()
    for name in zoo.catalog():  # an on-demand model whose default build would qualify, not built so
        ref = json.loads((zoo.ZOO_DIR / f"{name}.json").read_text())  # its committed reference record
        if (zoo.is_on_demand(name) and ref["weight_count"] > weights and ref["dataset"]["n"] >= min_samples
                and all(name != n for _, n in fits)):
            why = "is not built" if name not in built else f"has {zoo.info(name)['dataset'].get('n')} test samples"
            print(f"note: {name} ({ref['weight_count']:,} weights) is larger than {pick} but {why}; "
                  f"`{ref['on_demand']['command']}` builds it with at least {min_samples} samples for this benchmark",
                  file=sys.stderr)
    return pick


def _run(out: Path, name: str, overrides: Sequence[str]) -> tuple[Any, float]:
    from harness.sweep import run_sweep

    cfg = _compose([f"storage.url=sqlite:///{out / 'bench.db'}", f"study.name={name}-{time.time_ns()}",
                    "progress=false", "report.enabled=false", "output.save_models=false", *overrides])
    t0 = time.perf_counter()
    res = run_sweep(cfg, out / name)
    return res, time.perf_counter() - t0


def front_key(front: Any, metric: str) -> list[tuple[str, int, float]]:
    """What "the same front" means: every row's plan hash, size and metric value."""
    return [(str(r["plan_hash"]), int(r["size_bytes"]), float(r[metric])) for _, r in front.iterrows()]


def racing_rows(model: str, out: Path, seed: int, extra: Sequence[str] = (), replays: dict | None = None,
                replay_seeds: int = 0) -> list[dict[str, Any]]:
    """The grid with each racing mode: wall time, sample evaluations, ratio to off, front identity; with
    ``replay_seeds``, the off run's per-sample rows replayed on that many orders into ``replays[model]``."""
    from harness.bench._replay import recording, replay

    rows, ref = [], None
    for mode in MODES:
        with recording() if mode == "off" and replay_seeds else contextlib.nullcontext() as recorded:
            res, secs = _run(out, f"{model}-grid-{mode}", [f"model={model}", f"seed={seed}", "search=grid",
                                                            f"evaluation.racing={mode}", *extra])
        if recorded is not None and replays is not None:
            replays[model] = replay(recorded, replay_seeds)
        r = res.summary["racing"]
        key = front_key(res.front, res.summary["metric"])
        if ref is None:
            ref = (r["sample_evaluations"], key)
        rows.append({"model": model, "mode": mode, "seconds": secs, "evaluations": r["sample_evaluations"],
                     "ratio": r["sample_evaluations"] / ref[0] if ref[0] else float("nan"), "stopped": r["stopped"],
                     "trials": len(res.trials), "front": len(key), "identical": key == ref[1],
                     "n": res.summary["data"]["n"], "metric": res.summary["metric"]})
        print(f"  {model} racing={mode}: {secs:.1f} s, {r['sample_evaluations']:,} sample evaluations", flush=True)
    return rows


def reuse_rows(model: str, out: Path, seed: int, kind: str, overrides: Sequence[str],
               repeats: int = 1) -> dict[str, Any]:
    """``search=<kind>`` without and with activation reuse, ``repeats`` times alternately: the median wall times,
    their ratio, each pair's ratio, and whether every run's results are identical to the first one's."""
    import statistics

    import pandas as pd

    times: dict[str, list[float]] = {"without": [], "with": []}
    ref = table = None
    same = True
    for r in range(repeats):
        for label, mb in (("without", "0"), ("with", "512")):
            name = f"{model}-{kind}-reuse-{label}" + (f"-{r + 1}" if repeats > 1 else "")
            res, secs = _run(out, name, [f"model={model}", f"seed={seed}", f"search={kind}",
                                         f"evaluation.activation_cache_mb={mb}", *overrides])
            times[label].append(secs)
            print(f"  {model} search={kind} activation reuse {label}"
                  + (f" (run {r + 1} of {repeats})" if repeats > 1 else "") + f": {secs:.1f} s", flush=True)
            metric = res.summary["metric"]
            cols = ["plan_hash", "state", "size_bytes", metric, "snr_db", "evaluated_samples"]
            rows = res.trials[cols].reset_index(drop=True)
            sens = pd.read_csv(res.files["sensitivity"]) if "sensitivity" in res.files else None
            if ref is None:
                ref, table, n, trials = rows, sens, res.summary["data"]["n"], len(res.trials)
            else:
                same = same and rows.equals(ref) and (table is None or table.equals(sens))
            if mb != "0":
                cache = res.summary["racing"]["activation_cache"]
    ta, tb = statistics.median(times["without"]), statistics.median(times["with"])
    return {"kind": kind, "without": ta, "with": tb, "speedup": ta / tb if tb else float("nan"), "identical": same,
            "trials": trials, "n": n, "hits": cache["hits"], "misses": cache["misses"],
            "skipped_layers": cache["skipped_layers"], "spilled": cache["spilled"], "repeats": repeats,
            "pair_speedups": [a / b for a, b in zip(times["without"], times["with"])]}


def print_racing(rows: list[dict[str, Any]]) -> None:
    print("\n| model | samples | racing | wall s | sample evaluations | ratio to off | stopped | front identical |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['n']} | {r['mode']} | {r['seconds']:.1f} | {r['evaluations']:,} | "
              f"{r['ratio']:.1%} | {r['stopped']} of {r['trials']} | {'yes' if r['identical'] else 'NO'} |")


def print_reuse(rows: list[dict[str, Any]], model: str) -> None:
    repeats = max(r.get("repeats", 1) for r in rows)
    cols = ["trials", f"without reuse s (median of {repeats} runs)" if repeats > 1 else "without reuse s",
            "with reuse s", "speed-up", *(["each pair's speed-up"] if repeats > 1 else []), "identical results",
            "cache hits / misses"]
    print(f"\n| {model} | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for r in rows:
        pairs = [", ".join(f"{x:.2f}x" for x in r["pair_speedups"])] if repeats > 1 else []
        cells = [str(r["trials"]), f"{r['without']:.1f}", f"{r['with']:.1f}", f"{r['speedup']:.2f}x", *pairs,
                 "yes" if r["identical"] else "NO", f"{r['hits']} / {r['misses']}"]
        print(f"| search={r['kind']} | " + " | ".join(cells) + " |")


def print_replays(replays: dict[str, Any]) -> None:
    """The recorded off runs replayed on seeded orders (:mod:`harness.bench._replay`)."""
    print("\n| replayed (model, candidates x orders) | racing | sample evaluations | fronts changed "
          "| best within 1 point changed | wrong stops |")
    print("|---|---|---|---|---|---|")
    total = {m: [0, 0, 0, 0] for m in ("exact", "confident")}
    for model, r in replays.items():
        if r is None:
            continue
        for mode in ("exact", "confident"):
            h = r[mode]
            print(f"| {model}, {r['candidates']} x {r['seeds']} | {mode} | {h['ratio']:.1%} | {h['front_changed']} of "
                  f"{h['races']} | {h['best_changed']} | {h['wrong_stops']} of {h['stops']} |")
            t = total[mode]
            t[0] += h["front_changed"]; t[1] += h["races"]; t[2] += h["wrong_stops"]; t[3] += h["stops"]  # noqa: E702
    for mode, (f, n, w, s) in total.items():
        print(f"| all | {mode} | | {f} of {n} | | {w} of {s} ({w / max(1, s):.2%}) |")


def main(argv: list[str] | None = None) -> int:
    from harness import zoo

    ap = argparse.ArgumentParser(prog="python -m harness.bench sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="zoo model (default: the largest with --min-samples test samples)")
    ap.add_argument("--min-samples", type=int, default=1000)
    ap.add_argument("--all-zoo", action="store_true", help="also race off/exact/confident on every other zoo model")
    ap.add_argument("--zoo", default="", help="also race these other zoo models (comma-separated names)")
    ap.add_argument("--skip-reuse", action="store_true", help="only the racing table")
    ap.add_argument("--skip-racing", action="store_true", help="only the activation reuse table")
    ap.add_argument("--sens-nbits", default="[8,4,2]")
    ap.add_argument("--sens-modes", default="[linear,kmeans_lut]")
    ap.add_argument("--mixed-trials", type=int, default=40)
    ap.add_argument("--reuse-limit", type=int, default=256,
                    help="test samples of the sensitivity and mixed reuse runs (data.limit; 0: the whole test set)")
    ap.add_argument("--reuse-repeats", type=int, default=3,
                    help="runs of each reuse pair, without and with alternately; the medians are compared")
    ap.add_argument("--held-out", type=int, default=100, help="synthetic hard sweeps raced exact and confident")
    ap.add_argument("--replay", type=int, default=20,
                    help="seeded sample orders each zoo model's recorded off run is replayed on (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="keep the run directories here (default: a temp dir)")
    args = ap.parse_args(argv)
    model = args.model or default_model(args.min_samples)
    out = args.out or Path(tempfile.mkdtemp(prefix="qsweep-bench-sweep-"))
    out.mkdir(parents=True, exist_ok=True)
    info = zoo.info(model)
    print(f"model {model}: {info.get('weight_count', 0):,} weights, {info['dataset'].get('n')} test samples; "
          f"runs in {out}", flush=True)
    replays: dict[str, Any] = {}
    rows = [] if args.skip_racing else racing_rows(model, out, args.seed, replays=replays, replay_seeds=args.replay)
    others = [] if args.skip_racing else list(zoo.names()) if args.all_zoo else [n for n in args.zoo.split(",") if n]
    for other in others:
        if other != model:
            rows += racing_rows(other, out, args.seed, replays=replays, replay_seeds=args.replay)
    reuse = []
    if not args.skip_reuse:
        space = [f"search.space.nbits={args.sens_nbits}", f"search.space.mode={args.sens_modes}",
                 *([f"data.limit={args.reuse_limit}"] if args.reuse_limit > 0 else [])]
        reuse.append(reuse_rows(model, out, args.seed, "sensitivity", space, args.reuse_repeats))
        reuse.append(reuse_rows(model, out, args.seed, "mixed", [*space, f"search.n_trials={args.mixed_trials}"],
                                args.reuse_repeats))
    held = None
    if args.held_out:
        from harness.bench._heldout import held_out

        held = held_out(args.held_out, args.seed)
    if rows:
        print_racing(rows)
    if reuse:
        print_reuse(reuse, f"{model}, {reuse[0]['n']} samples")  # what the runs measured (a limit past the set is the set)
    if held is not None:
        print(f"\n| held-out synthetic sweeps ({held['cases']} x 40 candidates x 1024 samples) | sample evaluations "
              "| fronts changed | best within 1 point changed | wrong stops |")
        print("|---|---|---|---|---|")
        for mode in ("exact", "confident"):
            h = held[mode]
            print(f"| {mode} | {h['ratio']:.1%} | {h['front_changed']} | {h['best_changed']} | "
                  f"{h['wrong_stops']} of {h['stops']} |")
    if any(replays.values()):
        print_replays(replays)
    targets = []
    if rows:
        main_rows = [r for r in rows if r["model"] == model]
        exact = next(r for r in main_rows if r["mode"] == "exact")
        conf = [r for r in rows if r["mode"] == "confident"]
        targets.append(f"exact <= 60% with an identical front: {exact['ratio']:.1%}, "
                       f"{'identical' if exact['identical'] else 'DIFFERENT'}; confident <= 30%: "
                       f"{next(r for r in main_rows if r['mode'] == 'confident')['ratio']:.1%}, fronts identical on "
                       f"{sum(r['identical'] for r in conf)} of {len(conf)} model(s)")
    if reuse:
        targets.append(f"sensitivity with reuse {reuse[0]['speedup']:.2f}x (>= 1.5x)")
    print("\ntargets: " + "; ".join(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
