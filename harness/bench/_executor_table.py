"""Tables of the executor benchmark: one line per model, and per layer type ours vs the torch peer."""
from __future__ import annotations

#: Issue 11 §3 targets (ours / torch time) per layer type; other types are shown without a target.
TARGETS = {
    "batchedMatmul": 1.2, "softmaxND": 1.2, "mvn": 1.2, "scale": 1.2, "layerNormalization": 1.2,
    "gelu": 1.2, "reshapeStatic": 1.2, "transpose": 1.2,
    "uniDirectionalLSTM": 1.5, "biDirectionalLSTM": 1.5, "gru": 1.5, "loop": 1.5,
}
#: Rows that add up several layer types (the converter splits one torch layer into them).
GROUPS = {
    "= layernorm (mvn+scale)": ("mvn", "scale", "layerNormalization"),  # torch: one affine layer_norm
    "= reshape/transpose chain": ("reshapeStatic", "transpose", "squeeze", "expandDims"),
    "= transformer types (all 1.2x)": ("batchedMatmul", "softmaxND", "mvn", "scale", "layerNormalization", "gelu",
                                       "reshapeStatic", "transpose"),
}
GROUP_TARGETS = {"= layernorm (mvn+scale)": 1.2, "= reshape/transpose chain": 1.2, "= transformer types (all 1.2x)": 1.2}
#: Below this many milliseconds on both sides a type's ratio is noise; such types are summed in one row.
TINY_MS = 0.05


#: How the table names the peer's heap (``peer_heap`` of a row; see ``--peer-heap``).
HEAPS = {"default": "default", "kept": "kept", "user": "user's", "unsupported": "default", "refused": "default"}


def _heap(r: dict) -> str:
    return HEAPS.get(r.get("peer_heap", "default"), r.get("peer_heap", "default"))


def model_line(r: dict) -> str:
    """One model's whole-network line."""
    ours = f"{r['ours_s'] * 1e3:>10.1f}{r['batch'] / r['ours_s']:>10.0f}"
    if "torch_s" in r:
        peer = f"{r['torch_s'] * 1e3:>10.1f}{r['batch'] / r['torch_s']:>10.0f}{r['ours_s'] / r['torch_s']:>8.2f}{r['max_diff']:>10.1e}"
    else:
        peer = f"  {r.get('torch_note', '')}"
    return f"{r['model']:<18}{r['threads']:>4}{r['layers']:>7}{r['batch']:>7}{ours}{peer}{_heap(r):>9}"


def _model_table(rows: list[dict]) -> list[str]:
    head = (f"{'model':<18}{'thr':>4}{'layers':>7}{'batch':>7}{'numpy ms':>10}{'numpy/s':>10}"
            f"{'torch ms':>10}{'torch/s':>10}{'ratio':>8}{'max diff':>10}{'peer heap':>10}")
    clock = rows[0].get("clock", "wall") if rows else "wall"
    stat = rows[0].get("stat", "median") if rows else "median"
    return [f"per model — ratio = numpy time / torch time ({clock} clock, {stat} over the repeats)", head, "-" * len(head)] + [
        model_line(r) for r in rows]


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:>7.2f}" if theirs > 0 else f"{'-':>7}"


def _line(label: str, calls: str, ours: float, theirs: float | str, target: float | None) -> str:
    if isinstance(theirs, str):  # the peer does this work inside another layer type
        return f"  {label:<32}{calls:>6}{ours * 1e3:>10.2f}{theirs:>10}{'-':>7}"
    met = "" if target is None else ("yes" if theirs > 0 and ours / theirs <= target else "NO")
    tgt = f"{target:>7.1f}" if target else f"{'':>7}"
    return f"  {label:<32}{calls:>6}{ours * 1e3:>10.2f}{theirs * 1e3:>10.2f}{_ratio(ours, theirs)}{tgt}{met:>5}"


def type_table(r: dict) -> list[str]:
    """Per layer type (and group): calls, our ms, torch ms, ratio, target, met."""
    ours, theirs, calls = r["ours_types"], r["torch_types"], r.get("calls", {})
    fused, mine = r.get("torch_fused", {}), r.get("ours_fused", {})
    both = {t: h for t, h in fused.items() if mine.get(t) == h}  # fused alike: the host rows compare directly
    fused = {t: h for t, h in fused.items() if t not in both}
    hosts = {h: [t for t, g in fused.items() if g == h] for h in set(fused.values())}
    head = f"  {'layer type':<32}{'calls':>6}{'numpy ms':>10}{'torch ms':>10}{'ratio':>7}{'target':>7}{'met':>5}"
    out = [f"{r['model']} (batch {r['batch']}, threads {r['threads']}, peer heap {_heap(r)}): per layer type", head, "  " + "-" * (len(head) - 2)]
    tiny = [0.0, 0.0, 0]
    for t in sorted(set(ours) | set(theirs) | set(both), key=lambda t: -ours.get(t, 0.0)):
        a, b = ours.get(t, 0.0), theirs.get(t, 0.0)
        if max(a, b) * 1e3 < TINY_MS and t not in TARGETS and t not in fused and t not in hosts and t not in both:
            tiny[0] += a
            tiny[1] += b
            tiny[2] += calls.get(t, 0)
            continue
        if t in both:
            out.append(f"  {t:<32}{calls.get(t, ''):>6}{'in ' + both[t]:>10}{'in ' + both[t]:>10}")
        elif t in fused:
            out.append(_line(t, str(calls.get(t, "")), a, f"in {fused[t]}", None))
        elif t in hosts:  # its peer time includes the fused types: only the group row is comparable
            out.append(_line(f"{t} (torch: +{'+'.join(hosts[t])})", str(calls.get(t, "")), a, b, None))
        else:
            extra = [u for u, h in both.items() if h == t]
            label = f"{t} (+{'+'.join(extra)})" if extra else t
            out.append(_line(label, str(calls.get(t, "")), a, b, TARGETS.get(t)))
    if tiny[2]:
        out.append(_line(f"(other types < {TINY_MS} ms)", str(tiny[2]), tiny[0], tiny[1], None))
    for g, members in GROUPS.items():
        present = [t for t in members if t in ours]
        if len(present) > 1:
            a, b = sum(ours.get(t, 0.0) for t in present), sum(theirs.get(t, 0.0) for t in present)
            out.append(_line(g, str(sum(calls.get(t, 0) for t in present)), a, b, GROUP_TARGETS.get(g)))
    return out


def report(rows: list[dict]) -> str:
    """The whole report: the per-model table, then one per-layer-type table per model with a peer."""
    lines = _model_table(rows)
    for r in rows:
        if "torch_types" in r:
            lines += [""] + type_table(r)
    return "\n".join(lines)
