"""The run-directory writer: every file of a run, written from the study (so it holds every worker's trials).

:func:`write_run` writes what :mod:`harness.rundir` defines — ``config.yaml``,
``environment.json``, ``trials.csv``, ``pareto.csv``, the tables a search
strategy returns (``StrategyResult.tables[name]`` as ``<name>.csv``),
``summary.json`` (with ``StrategyResult.summary`` merged in) and ``models/``
(the Pareto-optimal models) — prints the Pareto front and calls the report.
Every file is written through :func:`harness.writes.writing` (a disk error
names the file) and no text in it holds a secret (:func:`harness.secrets.mask`).
Each saved model is checked against the sha256 its trial recorded in the study
when it was evaluated (:func:`model_file`).

:func:`trials_frame` fixes the leading columns; attributes a search strategy
adds (e.g. per-layer codecs) follow in name order.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import optuna
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial

from harness import pareto, rundir
from harness.errors import OutputError
from harness.search.base import SearchStrategy, StrategyResult
from harness.secrets import mask, mask_data
from harness.study import retried_numbers, worker_id
from harness.writes import writing

log = logging.getLogger("qsweep")

PACKAGES = ["qsweep", "numpy", "protobuf", "coremltools", "optuna", "hydra-core", "omegaconf", "SQLAlchemy",
            "pandas", "scikit-learn", "tqdm", "psycopg2-binary"]
_INTERNAL_ATTRS = set(rundir.STUDY_ONLY_ATTRS)


@dataclass
class SweepResult:
    """What a run produced (paths are inside ``run_dir``)."""

    run_dir: Path
    study_name: str
    trials: pd.DataFrame
    front: pd.DataFrame
    summary: dict[str, Any]
    interrupted: bool = False
    files: dict[str, Path] = field(default_factory=dict)
    #: The worker loop's record (:class:`harness.study.LoopState`): why it stopped, trials put back.
    loop: Any = None


class ModelFile(NamedTuple):
    """The saved model file of a spec: its size in bytes, its sha256 and the bytes themselves."""

    size: int
    sha256: str
    data: bytes


def model_file(spec: Any) -> ModelFile:
    """The saved model file of ``spec`` (:func:`quantizer.io.serialize`, what :func:`quantizer.save` writes:
    the same bytes in every process), from one serialization."""
    import quantizer.io

    data = quantizer.io.serialize(spec)
    return ModelFile(len(data), hashlib.sha256(data).hexdigest(), data)


def _cell(v: Any) -> Any:
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return v


def trial_row(t: FrozenTrial, retried_as: int | None = None) -> dict[str, Any]:
    """One trials.csv row of a frozen trial (user attributes flattened).

    A FAIL trial without an ``error`` attribute is one whose worker died
    (SIGKILL, lost machine); ``retried_as`` names the trial that re-ran it.
    """
    row: dict[str, Any] = {"trial": t.number, "state": t.state.name}
    row.update(t.params)
    for k, v in t.user_attrs.items():
        if k in _INTERNAL_ATTRS:
            continue
        row[k] = _cell(v)
    if t.state.name == "PRUNED" and "skipped" in t.user_attrs:
        row.setdefault("error", "skipped: " + str(t.user_attrs["skipped"]))
    if t.state.name == "FAIL":
        msg = row.get("error") or "its worker stopped (process killed or no heartbeat)"
        row["error"] = msg + (f"; retried as trial {retried_as}" if retried_as is not None else "")
    row["retry_of"] = t.system_attrs.get("failed_trial")
    row["worker"] = t.system_attrs.get("qsweep:worker")
    row["datetime_start"] = t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None
    row["datetime_complete"] = t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None
    return row


def trials_frame(trials: Sequence[FrozenTrial], metric: str, outputs: Sequence[str] = ()) -> pd.DataFrame:
    """Every trial as a row: :func:`harness.rundir.leading_columns` (``outputs``: the numeric outputs, one
    ``snr_db:<output>`` column each), a strategy's attributes, the tail columns."""
    retried = retried_numbers(trials)
    rows = [trial_row(t, retried.get(t.number)) for t in trials]
    lead = rundir.leading_columns(metric, outputs)
    tail = rundir.TAIL_COLUMNS
    extra = sorted({k for r in rows for k in r} - set(lead) - set(tail) - {"skipped"})
    df = pd.DataFrame(rows, columns=lead + extra + tail)
    for c in rundir.INTEGER_COLUMNS:
        df[c] = df[c].astype("Int64")
    return df


def _json_safe(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        if math.isnan(f):
            return None
        return f if math.isfinite(f) else ("inf" if f > 0 else "-inf")
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-safe dicts (NaN -> null)."""
    return [_json_safe({k: (None if (not isinstance(v, (list, dict, str)) and pd.isna(v)) else v)
                        for k, v in row.items()}) for row in df.to_dict(orient="records")]


def write_json(path: Path, data: Any) -> Path:
    text = json.dumps(mask_data(_json_safe(data)), indent=2, sort_keys=False, allow_nan=False) + "\n"
    with writing(path):
        path.write_text(text)
    return path


def config_record(cfg: DictConfig) -> dict[str, Any]:
    """The composed config with every interpolation resolved, as plain data, every secret masked."""
    return mask_data(OmegaConf.to_container(cfg, resolve=True))


def write_config(run_dir: Path, cfg: DictConfig) -> Path:
    """``config.yaml``: the composed config with every interpolation resolved (storage password masked)."""
    path = run_dir / rundir.CONFIG
    text = OmegaConf.to_yaml(OmegaConf.create(config_record(cfg)))
    with writing(path):
        path.write_text(text)
    return path


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    if out.get("qsweep") is None:  # running from a source checkout
        import quantizer

        out["qsweep"] = f"{quantizer.__version__} (source tree, not installed)"
    return out


def environment(**extra: Any) -> dict[str, Any]:
    """Package versions, Python and platform, plus ``extra`` (hashes, seed, ...)."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": package_versions(),
        "argv": [mask(a) for a in sys.argv],
        **extra,
    }


def write_tables(run_dir: Path, trials: pd.DataFrame, front: pd.DataFrame) -> tuple[Path, Path]:
    """``trials.csv`` and ``pareto.csv``."""
    t, p = run_dir / rundir.TRIALS, run_dir / rundir.PARETO
    for path, df in ((t, trials), (p, front)):
        with writing(path):
            df.to_csv(path, index=False)
    return t, p


def _kb(n: Any) -> str:
    return "" if n is None or pd.isna(n) else f"{n / 1024:.1f}"


def _ci(row: Mapping[str, Any], metric: str) -> str:
    lo, hi = (row.get(c) for c in rundir.ci_columns(metric))
    return "" if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) else f"{lo:.4f}..{hi:.4f}"


def _p(v: Any) -> str:
    return "" if v is None or pd.isna(v) else f"{v:.3g}"


def front_table(front: pd.DataFrame, baseline: Mapping[str, Any], metric: str) -> str:
    """The Pareto front as a text table, float baseline first (``ci95``: the metric's 95% interval;
    ``drop_p``: the paired test against the float model, for metrics that have one)."""
    drop, drop_p = rundir.drop_column(metric), rundir.drop_p_column(metric)
    rows = [{"trial": "float", "setting": "float32 (baseline)", "size_kb": _kb(baseline["size_bytes"]),
             "ratio": "1.00", metric: f"{baseline[metric]:.4f}", "ci95": _ci(baseline, metric), drop: "",
             "drop_p": "", **{k: "" for k in ("agreement", "snr_db") if k != metric}}]
    for _, r in front.iterrows():
        sel = []
        for k, short in (("skip_layer_types", "skip"), ("minimum_conv_kernel_channels", "conv_ch>="),
                         ("minimum_conv_weight_count", "conv_w>="), ("minimum_matrix_weight_count", "mat_w>=")):
            v = r[k]
            if not pd.isna(v) and v not in ("none", 0):
                sel.append(f"{short}{v}" if short.endswith("=") else f"{short}:{v}")
        if pd.isna(r["nbits"]):  # not a uniform setting (mixed, sensitivity): the strategy's own description
            setting = str(r.get("setting", ""))
        else:
            setting = "fp16" if r["nbits"] == 16 else f"{r['mode']} {r['nbits']}-bit"
            algo, bc = r.get("algorithm"), str(r.get("bias_correction")).lower() == "true"
            if isinstance(algo, str) and algo != "rtn":
                setting += f" {algo}"
            if bc:
                setting += " +bias-corr"
        rows.append({
            "trial": str(r["trial"]), "setting": " ".join([setting] + sel), "size_kb": _kb(r["size_bytes"]),
            "ratio": f"{r['compression_ratio']:.2f}", metric: f"{r[metric]:.4f}", "ci95": _ci(r, metric),
            drop: f"{r[drop]:+.4f}", "drop_p": _p(r[drop_p]),
            **{k: "" if pd.isna(r[k]) else f"{r[k]:{fmt}}" for k, fmt in (("agreement", ".4f"), ("snr_db", ".1f"))
               if k != metric},  # the metric's own column keeps its format (and the float model's value)
        })
    table = pd.DataFrame(rows)
    if front.empty or front[drop_p].isna().all():  # a metric without a drop test (agreement, cosine, SNR)
        table = table.drop(columns="drop_p")
    return table.to_string(index=False)


# ------------------------------------------------------------------------------- the run directory
def save_front_models(run_dir: Path, front: pd.DataFrame, study: optuna.Study, strategy: SearchStrategy,
                      model: Any, fuse: bool, *, strict: bool = False) -> dict[int, tuple[str, str]]:
    """Rebuild and save each Pareto-optimal model; return trial number -> (path relative to ``run_dir``, sha256).

    The rebuilt model must be the one evaluated: same plan digest, same size and the
    sha256 the trial recorded (``model_sha256``, trials evaluated by this version).
    A model that differs is not saved: a warning, or with ``strict`` (rebuilding from
    the study) an OutputError naming the trial.
    """
    import quantizer

    out: dict[int, tuple[str, str]] = {}
    if front.empty:
        return out
    with writing(run_dir / rundir.MODELS):
        (run_dir / rundir.MODELS).mkdir(exist_ok=True)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}

    def refuse(number: int, why: str) -> None:
        if strict:
            raise OutputError(f"trial {number}: {why}; the model cannot be re-created byte for byte (was the study "
                              "made with another version of qsweep or another model file?).")
        log.warning("trial %d: %s; model not saved", number, why)

    for _, row in front.iterrows():
        t = by_number[int(row["trial"])]
        cand = strategy.candidate(t.params)
        if cand.plan.digest() != row["plan_hash"]:
            refuse(t.number, f"its plan rebuilt now differs from the one evaluated ({cand.plan.digest()[:12]} != "
                             f"{str(row['plan_hash'])[:12]})")
            continue
        qspec = quantizer.apply_plan(model.spec, cand.plan, fuse=fuse)
        size, digest, data = model_file(qspec)
        if size != int(row["size_bytes"]):
            refuse(t.number, f"the rebuilt model has {size} bytes, the evaluated one {int(row['size_bytes'])}")
            continue
        recorded = t.user_attrs.get("model_sha256")
        if recorded is not None and recorded != digest:
            refuse(t.number, f"the rebuilt model has sha256 {digest[:16]}..., the study recorded {recorded[:16]}...")
            continue
        rel = rundir.model_file(t.number, cand.label)
        with writing(run_dir / rel) as path:
            path.write_bytes(data)
        out[t.number] = (rel, digest)
    return out


def write_strategy_result(run_dir: Path, result: StrategyResult, summary: dict[str, Any]) -> dict[str, Path]:
    """Write each ``result.tables[name]`` as ``<name>.csv`` and merge ``result.summary`` into ``summary``.

    Returns the files written, by table name.

    Raises:
        TypeError: ``result`` is not a :class:`~harness.search.base.StrategyResult`.
        ValueError: a table is named after one of the run's own tables (trials, pareto).
    """
    if not isinstance(result, StrategyResult):
        raise TypeError(f"SearchStrategy.finish must return a StrategyResult, not {type(result).__name__}")
    files: dict[str, Path] = {}
    for name, table in result.tables.items():
        if name in rundir.RESERVED_TABLES:
            raise ValueError(f"a strategy table may not be named {name!r} (the run's own {rundir.table_file(name)})")
        path = run_dir / rundir.table_file(name)
        with writing(path):
            table.to_csv(path, index=False)
        files[name] = path
    summary.update(result.summary)
    return files


def _target(complete: pd.DataFrame, metric: Any, baseline: Mapping[str, Any], max_drop: float | None, n: int
            ) -> dict[str, Any]:
    """summary.json ``target``: the smallest complete trial within ``max_drop``, its evidence and the message
    (:func:`harness.pareto.target`)."""
    target: dict[str, Any] = {"max_accuracy_drop": max_drop, "metric": metric.name}
    if max_drop is None:
        return target
    best, evidence, message = pareto.target(complete, metric.name, baseline, float(max_drop), n=n,
                                            drop_test=metric.drop_test)
    target["best"] = None if best is None else records(best.to_frame().T)[0]
    target["evidence"] = evidence
    target["message"] = message
    return target


def _calibration_entry(calibration: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """summary.json ``calibration``: the source, samples used and statistics digest (None without)."""
    if not calibration or calibration.get("kind") == "none":
        return None
    stats = calibration.get("statistics") or {}
    out = {k: calibration[k] for k in ("kind", "samples", "available", "name", "sha256", "path", "split")
           if k in calibration}
    out.update({k: stats[k] for k in ("source", "digest", "bytes") if k in stats})
    return out


def write_run(run_dir: Path, cfg: Any, *, study: optuna.Study, storage_url: str, strategy: SearchStrategy,
              evaluator: Any, model: Any, dataset: Any, experiment: dict[str, Any], created: bool,
              loop: Any, t_start: float, strict_models: bool = False,
              calibration: dict[str, Any] | None = None) -> SweepResult:
    """Write the run directory (see module docstring), print the front and write the report (if enabled).

    ``evaluator`` needs ``metric``, ``baseline`` and ``executor_name``; ``dataset`` ``name``,
    ``description``, ``n`` and ``sha256`` (the recorded ones when rebuilding from the study,
    :mod:`harness.rebuild`, which also sets ``strict_models``: see :func:`save_front_models`).

    Raises:
        OutputError: a file cannot be written (names it) or, with ``strict_models``, a model
            cannot be re-created byte for byte (names the trial).
    """
    metric = evaluator.metric
    baseline = evaluator.baseline
    trials = study.get_trials(deepcopy=False)
    table = trials_frame(trials, metric.name, evaluator.snr_outputs)
    complete = table[table["state"] == rundir.COMPLETE]
    front = pareto.front(complete, metric.name, maximize=metric.maximize)
    files: dict[str, Path] = {}
    if bool(cfg.output.save_models):
        saved = save_front_models(run_dir, front, study, strategy, model, bool(cfg.search.fuse),
                                  strict=strict_models)
        table["model_file"] = table["model_file"].astype(object)
        table["model_sha256"] = table["model_sha256"].astype(object)
        for number, (rel, digest) in saved.items():
            table.loc[table["trial"] == number, ["model_file", "model_sha256"]] = [rel, digest]
        front = table.loc[front.index]
        complete = table.loc[complete.index]
    files["config"] = write_config(run_dir, cfg)
    files["environment"] = write_json(run_dir / rundir.ENVIRONMENT, environment(
        model={"name": model.label, "path": str(model.path), "sha256": model.sha256, "zoo": model.zoo},
        data={"name": dataset.name, "description": dataset.description, "n": dataset.n, "sha256": dataset.sha256},
        seed=int(cfg.seed), executor=evaluator.executor_name,
        storage=mask(storage_url), study=study.study_name, worker=worker_id(),
        calibration=calibration or {"kind": "none"}))
    files["trials"], files["pareto"] = write_tables(run_dir, table, front)

    max_drop = cfg.search.max_accuracy_drop
    target = _target(complete, metric, baseline, max_drop, dataset.n)
    states = table["state"].value_counts().to_dict()
    summary: rundir.Summary = {
        "study": {"name": study.study_name, "storage": mask(storage_url), "created_by_this_run": created},
        "model": {"name": model.label, "path": str(model.path), "sha256": model.sha256},
        "data": {"name": dataset.name, "n": dataset.n, "sha256": dataset.sha256},
        "metric": metric.name,
        "direction": metric.direction,
        "evaluation": evaluator.evaluation_entry(),
        "search": {**strategy.describe(), "total": strategy.total(),
                   "dropped": [vars(d) for d in getattr(strategy, "dropped", [])]},
        "baseline": baseline,
        "trials": {"total": len(table), **{k.lower(): int(v) for k, v in states.items()},
                   "reused": int(complete["reused_from"].notna().sum())},
        "pareto_front": records(front),
        "target": target,  # type: ignore[typeddict-item]
        "racing": racing_entry(table, evaluator, int(dataset.n)),
        "worker": {"id": worker_id(), "trials_started": len(loop.started), "stopped_by": loop.stopped_by,
                   "elapsed_s": round(time.time() - t_start, 2)},
        "calibration": _calibration_entry(calibration),
        "calibration_s": float((calibration or {}).get("seconds", 0.0)),
    }
    # A strategy's tables and summary entries (e.g. sensitivity.csv), before summary.json is written. It gets
    # copies: what it returns is what is written.
    result = strategy.finish(table.copy(), copy.deepcopy(summary), evaluator)
    files.update(write_strategy_result(run_dir, result, summary))  # type: ignore[arg-type]
    files["summary"] = write_json(run_dir / rundir.SUMMARY, summary)

    # The target as written (a strategy may have replaced its message, e.g. mixed's best-effort note).
    _print_outcome(study.study_name, table, complete, front, baseline, metric.name,
                   summary["target"]["message"] if max_drop is not None else None, run_dir)
    r = summary["racing"]
    if r["full_evaluations"]:
        print(f"Racing ({r['mode']}): {r['sample_evaluations']:,} sample evaluations of {r['full_evaluations']:,} "
              f"without racing ({r['ratio']:.0%}); {r['stopped']} trial(s) stopped early.")
    if bool(cfg.report.enabled):
        _write_report(run_dir)
    return SweepResult(run_dir, study.study_name, table, front, dict(summary), interrupted=loop.interrupted,
                       files=files, loop=loop)


def racing_entry(table: pd.DataFrame, evaluator: Any, n: int) -> rundir.RacingEntry:
    """``summary["racing"]``: the mode and the sample evaluations of the study's trials against a full run
    (``n`` test samples); the activation cache's figures are this worker's (none in a rebuild)."""
    seen = pd.to_numeric(table[rundir.EVALUATED_COLUMN], errors="coerce")
    own = seen.notna() & table["reused_from"].isna()
    full = int(own.sum()) * int(n)
    done = int(seen.fillna(0).sum())
    cache = evaluator.cache
    stats = {} if cache is None else {**cache.stats, "memory_mb": round(cache.memory_budget / 2**20, 1),
                                      "spill_mb": round(cache.spill_budget / 2**20, 1)}
    return {**evaluator.racing_record(), "stopped": int(table[rundir.DOMINATED_COLUMN].notna().sum()),  # type: ignore[typeddict-item]
            "sample_evaluations": done, "full_evaluations": full, "ratio": round(done / full, 4) if full else None,
            "activation_cache": stats}


def _print_outcome(study_name: str, table: pd.DataFrame, complete: pd.DataFrame, front: pd.DataFrame,
                   baseline: Mapping[str, Any], metric: str, message: str | None, run_dir: Path) -> None:
    n_reused = int(complete["reused_from"].notna().sum())
    counts = table["state"].value_counts()
    parts = [f"{len(complete) - n_reused} evaluated", f"{n_reused} reused the result of an identical plan",
             f"{int(counts.get(rundir.FAIL, 0))} failed"]
    raced = int(table[rundir.DOMINATED_COLUMN].notna().sum())
    if raced:
        parts.append(f"{raced} stopped early by racing (dominated)")
    if counts.get(rundir.PRUNED, 0) - raced:
        parts.append(f"{int(counts[rundir.PRUNED]) - raced} skipped (invalid combination)")
    if counts.get(rundir.RUNNING, 0) or counts.get(rundir.WAITING, 0):
        parts.append(f"{int(counts.get(rundir.RUNNING, 0) + counts.get(rundir.WAITING, 0))} not finished")
    print(f"\n{len(table)} trial(s) in study {study_name!r}: " + ", ".join(parts) + ".")
    print(f"Pareto front ({len(front)} of {len(complete)} complete trials):")
    print(front_table(front, baseline, metric))
    if message is not None:
        print(message)
    print(f"Run directory: {run_dir}")


def _write_report(run_dir: Path) -> None:
    """:func:`harness.report.write_report`; a failure to draw is logged (the run's own files are written already)."""
    from harness import report  # here, not at the top: matplotlib only for runs that write a report

    try:
        written = report.write_report(run_dir)
    except OutputError:  # the disk, as for any other file of the run (it names the file)
        raise
    except Exception as e:  # noqa: BLE001 - the sweep's tables are complete; say what failed and go on
        log.warning("report: failed (%s: %s); the sweep's tables are complete", type(e).__name__, e)
        return
    log.info("report: wrote %s", ", ".join(p.name for p in written.values()))
