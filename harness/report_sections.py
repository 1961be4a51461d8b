"""The HTML sections of ``report.html``: the headline, the run, the target, the tables, the page template.

:mod:`harness.report` draws the figures and puts the page together from these functions; each one
takes the run (:class:`harness.analysis.RunData`) and returns an HTML fragment ('' when the run has
nothing to show there). Every value shown is read from the run directory's files.
"""
from __future__ import annotations

import html
from typing import Any, Iterable

import pandas as pd

from harness import analysis, rundir

#: Columns of the HTML Pareto table, in this order, when present (``{metric}``: the task metric).
TABLE_COLUMNS = ("trial", "setting", "mean_bits", "size_kb", "compression_ratio", "{metric}",
                 "95% interval", "{metric}_drop", "{metric}_drop_p", "agreement", "snr_db", "evaluated_samples",
                 "plan_hash", "model_file")

CSS = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--good:#1a7f37;--warn:#9a6700;--bad:#cf222e}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:var(--ink);background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.15em;margin:32px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
.sub{color:var(--muted);margin:0 0 18px;font-size:14px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.card{flex:1 1 180px;border:1px solid var(--line);border-radius:8px;padding:10px 14px;background:var(--soft)}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;margin-top:2px}.card .d{color:var(--muted);font-size:12px;margin-top:2px}
.verdict{border-left:4px solid var(--good);background:#f0fff4;padding:10px 14px;border-radius:4px;margin:10px 0}
.verdict.miss{border-color:var(--bad);background:#fff5f5}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 9px;border-bottom:1px solid var(--line);text-align:right;
white-space:nowrap}th{background:var(--soft);font-weight:600}
table.kv th{text-align:left;color:var(--muted);background:none;font-weight:500}table.kv td{text-align:left}
tr.best td{background:#fff8c5}td.l,th.l{text-align:left}
img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
.warn{color:var(--warn);font-weight:600}.note{color:var(--muted);font-size:13px}
code{background:var(--soft);padding:1px 4px;border-radius:4px;font-size:12px}
"""


def esc(v: Any) -> str:
    return html.escape(fmt(v))


def fmt(v: Any) -> str:
    if v is None or (not isinstance(v, (str, list, dict)) and pd.isna(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def kv_table(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f'<table class="kv">{rows}</table>'


def _card(key: str, value: str, detail: str = "") -> str:
    return (f'<div class="card"><div class="k">{html.escape(key)}</div><div class="v">{html.escape(value)}</div>'
            f'<div class="d">{html.escape(detail)}</div></div>')


def _interval(row: Any, metric: str) -> str:
    lo, hi = (row.get(c) for c in rundir.ci_columns(metric))
    return "" if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) else f"{lo:.4f} – {hi:.4f}"


def _setting(row: Any) -> str:
    """What a trial tried, for a person: its ``setting`` label, else mode and bits."""
    s = row.get("setting")
    if isinstance(s, str) and s:
        return s
    if pd.notna(row.get("nbits")):
        return "fp16" if int(row["nbits"]) == 16 else f"{row['mode']} {int(row['nbits'])}-bit"
    return ""


def headline(run: analysis.RunData) -> str:
    """The answer first: float model, best within the target, smallest on the front, trial counts."""
    m, base = run.metric, run.baseline
    cards = [_card("float model", f"{base['size_bytes'] / 1024:.1f} KB",
                   f"{m} {base[m]:.4f} ({_interval(base, m)})")]
    best = run.best_within(run.max_accuracy_drop) if run.max_accuracy_drop is not None else None
    if best is not None:
        cards.append(_card(f"best within {m} drop ≤ {run.max_accuracy_drop:g}", f"{best['size_bytes'] / 1024:.1f} KB",
                           f"trial {best['trial']}: {_setting(best)}, {best['compression_ratio']:.2f}x smaller, "
                           f"{m} {best[m]:.4f}"))
    if not run.pareto.empty and analysis.search_kind(run) != "sensitivity":  # its trials probe one unit each
        small = run.pareto.sort_values("size_bytes").iloc[0]
        cards.append(_card("smallest on the front", f"{small['size_bytes'] / 1024:.1f} KB",
                           f"trial {small['trial']}: {_setting(small)}, {m} {small[m]:.4f}"))
    states = run.trials["state"].value_counts() if not run.trials.empty else pd.Series(dtype=int)
    reused = int(run.complete["reused_from"].notna().sum()) if not run.complete.empty else 0
    cards.append(_card("trials", f"{len(run.trials)}",
                       f"{int(states.get(rundir.COMPLETE, 0)) - reused} evaluated, {reused} reused, "
                       f"{int(states.get(rundir.PRUNED, 0))} pruned/skipped, {int(states.get(rundir.FAIL, 0))} failed"))
    verdict = ""
    message = (run.summary.get("target") or {}).get("message")
    if run.max_accuracy_drop is not None and message:
        cls = "verdict" if best is not None else "verdict miss"
        verdict = f'<div class="{cls}">{html.escape(str(message))}</div>'
    return f'<div class="cards">{"".join(cards)}</div>{verdict}'


def run_section(run: analysis.RunData) -> str:
    """What was measured and how: model, data, metric, intervals, test, float figures."""
    metric, ev = run.metric, run.summary["evaluation"]
    scored = (f"output {ev['output']!r} ({ev['output_kind']}: {ev['output_reason']})" if ev["output"] else
              ev["output_reason"])
    items: list[tuple[str, Any]] = [
        ("model", f"{run.model_name} ({run.summary['model']['path']})"),
        ("test data", f"{run.summary['data']['name']}, {ev['n']} samples"),
        ("search", analysis.search_kind(run)),
        ("metric", f"{metric} on {scored}" + (f", value > {ev['threshold']:g}" if ev["threshold"] is not None else "")
         + (f", metric.fn={ev['fn']}" if ev["fn"] else "")),
        ("95% intervals", "Wilson score" if ev["interval"] == "wilson" else
         f"percentile bootstrap ({ev['bootstrap_resamples']} resamples)"),
        ("drop test", ev["drop_test"] or "none (measured against the float model, whose figure is exact)"),
        ("float model", f"{run.baseline['size_bytes']} bytes, {metric} {run.baseline[metric]:.4f} "
                        f"(95% interval {_interval(run.baseline, metric)})"),
        ("study", run.summary["study"]["name"]),
        ("run directory", str(run.path.resolve())),
    ]
    return "<h2>Run and float baseline</h2>" + kv_table(items)


def best_section(run: analysis.RunData) -> str:
    """The smallest trial within the run's target (:func:`harness.pareto.best_within`, as in summary.json)
    and what the test set can tell about it."""
    metric = run.metric
    if run.max_accuracy_drop is None:
        return ""
    best = run.best_within(run.max_accuracy_drop)
    head = f"<h2>Best within the target ({html.escape(metric)} drop &le; {run.max_accuracy_drop:g})</h2>"
    evidence = run.summary["target"].get("evidence")
    resolution = ""
    if evidence is not None and not evidence["resolves_max_drop"]:
        resolution = (f'<p class="warn">The test set ({run.summary["evaluation"]["n"]} samples) is too small to '
                      f'resolve a drop of {run.max_accuracy_drop:g}: the 95% interval of {html.escape(metric)} is '
                      f'{evidence["ci_width"]:.3g} wide.</p>')
    if best is None:
        return (head + f'<p class="warn">No candidate met the target: every trial lost more than '
                f'{run.max_accuracy_drop:g} {html.escape(metric)}.</p>' + resolution)
    drop = best[rundir.drop_column(metric)]
    items: list[tuple[str, Any]] = [
        ("trial", best["trial"]), ("setting", _setting(best)),
        ("size", f"{best['size_bytes']} bytes ({best['size_bytes'] / 1024:.1f} KB, "
                 f"{best['compression_ratio']:.2f}x smaller than the float model)"),
        (metric, f"{best[metric]:.4f} (95% interval {_interval(best, metric)})"),
        (f"{metric} drop", f"{drop:+.4f}" + (f" (p = {best[rundir.drop_p_column(metric)]:.3g})"
                                             if pd.notna(best.get(rundir.drop_p_column(metric))) else "")),
    ]
    if evidence is not None:
        items.append(("distinguishable from the float model", "yes" if evidence["distinguishable"] else
                      "no (the drop may be chance on this test set)"))
    for k in ("agreement", "snr_db", "encodings", "plan_hash", "model_file"):
        if pd.notna(best.get(k)):
            items.append((k, best[k]))
    return head + kv_table(items) + resolution


def hypervolume_section(run: analysis.RunData) -> str:
    """The hypervolume block of a mixed-precision run's summary.json, as a table."""
    hv = run.summary.get("hypervolume")  # a strategy's entry (search=mixed), see harness.rundir.Summary
    if not hv:
        return ""
    rows = []
    for key, label in rundir.HYPERVOLUME_SETS.items():
        if key not in hv:
            continue
        blk = hv[key]
        best = blk["smallest_within_1_point"]
        if key == "compare_to":
            label += f" ({blk['search']}: {blk['run_dir']})"
        rows.append({"": label, "trials": blk["trials"], "evaluated": blk["evaluated"],
                     "hypervolume": blk.get("hypervolume"),  # absent for a metric that is minimised
                     "smallest within 1 point (KB)": best["size_bytes"] / 1024 if best else None,
                     f"its {run.metric}": best[run.metric] if best else None})
    table = pd.DataFrame(rows).to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, na_rep="none")
    return ("<h2>Hypervolume (size normalised by the float model; reference point: float size, zero "
            f"{html.escape(run.metric)})</h2>" + f'<div class="scroll">{table}</div>')


_LEFT = ' class="l"'
#: Shorter table headers.
HEADERS = {"size_kb": "size (KB)", "compression_ratio": "ratio", "evaluated_samples": "samples", "quantize_s":
           "quantize (s)", "evaluate_s": "evaluate (s)", "plan_hash": "plan"}


def _table(df: pd.DataFrame, metric: str, columns: Iterable[str], best_trial: Any = None) -> str:
    """Rows of trials as an HTML table: sizes in KB, the interval in one column, short plan hashes, model links."""
    t = df.copy()
    t["size_kb"] = t["size_bytes"] / 1024
    t["95% interval"] = [_interval(r, metric) for _, r in t.iterrows()]
    t["setting"] = [_setting(r) for _, r in t.iterrows()]
    cols = [c.format(metric=metric) for c in columns]
    cols = [c for c in cols if c in t.columns and not t[c].isna().all()]
    left = {"setting", "mode", "plan_hash", "model_file", "state", "note", "encodings"}
    lo, hi = rundir.ci_columns(metric)
    titles = {"95% interval": f"{lo} – {hi}"}  # the trials.csv columns, on hover
    head = "".join(f'<th{_LEFT if c in left else ""}'
                   + (f' title="{html.escape(titles.get(c, c))}"' if HEADERS.get(c, c) != c or c in titles else "")
                   + f">{html.escape(HEADERS.get(c, c))}</th>" for c in cols)
    body = []
    for _, r in t.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c == "plan_hash" and isinstance(v, str):
                text = f"<code>{html.escape(v[:12])}</code>"
            elif c == "model_file" and isinstance(v, str):
                text = f'<a href="{html.escape(v)}">{html.escape(v.rsplit("/", 1)[-1])}</a>'
            elif c == "size_kb":
                text = f"{v:.1f}" if pd.notna(v) else ""
            elif isinstance(v, float) and pd.notna(v):
                text = f"{v:.0f}" if c in ("trial", "nbits", "reused_from", "evaluated_samples") else f"{v:.4f}"
            else:
                text = esc(v)
            cells.append(f'<td{_LEFT if c in left else ""}>{text}</td>')
        cls = ' class="best"' if best_trial is not None and r["trial"] == best_trial else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table class="tbl"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


def front_section(run: analysis.RunData) -> str:
    """The Pareto table, smallest first; the best trial within the target highlighted."""
    best = run.best_within(run.max_accuracy_drop) if run.max_accuracy_drop is not None else None
    note = '<p class="note">Highlighted: the best model within the target.</p>' if best is not None else ""
    return ("<h2>Pareto front</h2>" + _table(run.pareto.sort_values("size_bytes"), run.metric, TABLE_COLUMNS,
                                             None if best is None else best["trial"]) + note)


def trials_section(run: analysis.RunData) -> str:
    """Every trial: what was evaluated, what reused an identical plan, what was pruned, skipped or failed."""
    if run.trials.empty:
        return ""
    t = run.trials.copy()
    notes = []
    for _, r in t.iterrows():
        if pd.notna(r.get("reused_from")):
            notes.append(f"same plan as trial {int(r['reused_from'])}: its result reused")
        elif r["state"] == rundir.PRUNED:
            samples = r.get("evaluated_samples")
            notes.append(str(r["error"]) if isinstance(r.get("error"), str) else
                         "pruned" + (f" after {int(samples)} samples" if pd.notna(samples) else ""))
        elif isinstance(r.get("error"), str):
            notes.append(r["error"])
        else:
            notes.append("")
    t["note"] = notes
    front = set(run.pareto["trial"]) if analysis.search_kind(run) != "sensitivity" else set()
    t["state"] = [s.lower() + (" · front" if n in front else "") for s, n in zip(t["state"], t["trial"])]
    cols = ("trial", "state", "setting", "size_kb", "compression_ratio", "{metric}", "95% interval", "{metric}_drop",
            "evaluated_samples", "quantize_s", "evaluate_s", "note")
    states = run.trials["state"].value_counts()
    reused = int(run.trials["reused_from"].notna().sum())
    parts = [f"{int(states.get(rundir.COMPLETE, 0)) - reused} evaluated", f"{reused} reused the result of an "
             "identical plan (evaluated once)", f"{int(states.get(rundir.PRUNED, 0))} pruned or skipped",
             f"{int(states.get(rundir.FAIL, 0))} failed"]
    return (f"<h2>All trials ({len(t)})</h2><p>{html.escape(', '.join(parts))}.</p>"
            + _table(t.sort_values("trial"), run.metric, cols))


def page(title: str, subtitle: str, sections: Iterable[str]) -> str:
    body = "\n".join(s for s in sections if s)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body><main><h1>{html.escape(title)}</h1><p class='sub'>{html.escape(subtitle)}</p>\n{body}\n"
            "</main></body></html>\n")
