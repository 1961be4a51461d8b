"""The files of a run directory, written from the study (so they hold every worker's trials).

``config.yaml`` (resolved config), ``environment.json`` (package versions,
model/data sha256, seed, machine), ``trials.csv`` (one row per trial),
``pareto.csv`` (the non-dominated trials, sorted by size, same columns),
``summary.json`` (baseline, Pareto front, best within the accuracy target) and
``models/`` (the Pareto-optimal ``.mlmodel`` files).

:func:`trials_frame` fixes the leading columns; attributes a search strategy
adds (e.g. per-layer codecs) follow in name order.
"""
from __future__ import annotations

import json
import math
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial

SETTING_COLUMNS = ["nbits", "mode", "skip_layer_types", "minimum_conv_kernel_channels",
                   "minimum_conv_weight_count", "minimum_matrix_weight_count"]
PACKAGES = ["qsweep", "numpy", "protobuf", "coremltools", "optuna", "hydra-core", "omegaconf", "SQLAlchemy",
            "pandas", "scikit-learn", "tqdm", "psycopg2-binary"]
_INTERNAL_ATTRS = {"grid_point", "failure"}


def leading_columns(metric: str) -> list[str]:
    """The first columns of trials.csv / pareto.csv for task metric ``metric``."""
    figures = ["size_bytes", "compression_ratio", metric, f"{metric}_drop", "agreement", "snr_db", "psnr_db"]
    figures = list(dict.fromkeys(figures))
    return (["trial", "state"] + SETTING_COLUMNS + figures
            + ["plan_hash", "reused_from", "model_file", "quantize_s", "evaluate_s", "encodings", "error"])


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


def trials_frame(trials: Sequence[FrozenTrial], metric: str) -> pd.DataFrame:
    """Every trial as a row, leading columns first (see :func:`leading_columns`)."""
    from harness.study import retried_numbers

    retried = retried_numbers(trials)
    rows = [trial_row(t, retried.get(t.number)) for t in trials]
    lead = leading_columns(metric)
    tail = ["retry_of", "worker", "datetime_start", "datetime_complete", "layer_encodings"]
    extra = sorted({k for r in rows for k in r} - set(lead) - set(tail) - {"skipped"})
    df = pd.DataFrame(rows, columns=lead + extra + tail)
    for c in ("trial", "reused_from", "retry_of", "size_bytes", "nbits"):
        if c in df.columns:
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
    path.write_text(json.dumps(_json_safe(data), indent=2, sort_keys=False, allow_nan=False) + "\n")
    return path


def write_config(run_dir: Path, cfg: DictConfig) -> Path:
    """``config.yaml``: the composed config with every interpolation resolved (storage password masked)."""
    from harness.study import masked_url

    data = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(data.get("storage"), dict) and data["storage"].get("url"):
        data["storage"]["url"] = masked_url(str(data["storage"]["url"]))
    path = run_dir / "config.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(data)))
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
        "argv": sys.argv,
        **extra,
    }


def write_tables(run_dir: Path, trials: pd.DataFrame, front: pd.DataFrame) -> tuple[Path, Path]:
    """``trials.csv`` and ``pareto.csv``."""
    t, p = run_dir / "trials.csv", run_dir / "pareto.csv"
    trials.to_csv(t, index=False)
    front.to_csv(p, index=False)
    return t, p


def _kb(n: Any) -> str:
    return "" if n is None or pd.isna(n) else f"{n / 1024:.1f}"


def front_table(front: pd.DataFrame, baseline: Mapping[str, Any], metric: str) -> str:
    """The Pareto front as a text table, float baseline first."""
    drop = f"{metric}_drop"
    rows = [{"trial": "float", "setting": "float32 (baseline)", "size_kb": _kb(baseline.get("size_bytes")),
             "ratio": "1.00", metric: f"{baseline.get(metric):.4f}", drop: "", "agreement": "",
             "snr_db": ""}]
    for _, r in front.iterrows():
        sel = []
        for k, short in (("skip_layer_types", "skip"), ("minimum_conv_kernel_channels", "conv_ch>="),
                         ("minimum_conv_weight_count", "conv_w>="), ("minimum_matrix_weight_count", "mat_w>=")):
            v = r.get(k)
            if v is not None and not pd.isna(v) and v not in ("none", 0):
                sel.append(f"{short}{v}" if short.endswith("=") else f"{short}:{v}")
        setting = (f"fp16" if r.get("nbits") == 16 else f"{r.get('mode')} {r.get('nbits')}-bit") \
            if "nbits" in r and not pd.isna(r.get("nbits")) else str(r.get("setting", ""))
        rows.append({
            "trial": str(r["trial"]), "setting": " ".join([setting] + sel), "size_kb": _kb(r["size_bytes"]),
            "ratio": f"{r['compression_ratio']:.2f}", metric: f"{r[metric]:.4f}",
            drop: f"{r[drop]:+.4f}", "agreement": "" if pd.isna(r.get("agreement")) else f"{r['agreement']:.4f}",
            "snr_db": "" if pd.isna(r.get("snr_db")) else f"{r['snr_db']:.1f}",
        })
    return pd.DataFrame(rows).to_string(index=False)
