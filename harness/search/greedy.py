"""The greedy path of a mixed-precision search: from every unit at its smallest codec to every unit at
its least noisy one, one move at a time, the move that removes the most predicted noise per added byte first.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence


def greedy_path(units: Sequence[str], labels: Sequence[str], delta_bytes: Mapping[str, Mapping[str, float]],
                noise: Mapping[str, Mapping[str, float]]) -> list[dict[str, str]]:
    """Assignments from every unit at its smallest codec to every unit at its least noisy one.

    ``delta_bytes[u][c]`` is the size change of quantizing unit ``u`` with
    codec ``c`` (negative = smaller); ``noise[u][c]`` its predicted output
    noise. Each step makes the one move (unit, gentler codec) that removes
    the most noise per added byte (a move that removes noise without adding
    bytes comes first). Noise is assumed additive over units.

    >>> path = greedy_path(["a", "b"], ["lo", "hi"],
    ...                    {"a": {"lo": -90, "hi": -50}, "b": {"lo": -90, "hi": -50}},
    ...                    {"a": {"lo": 1.0, "hi": 0.1}, "b": {"lo": 0.1, "hi": 0.01}})
    >>> [p["a"] + "/" + p["b"] for p in path]
    ['lo/lo', 'hi/lo', 'hi/hi']
    """
    cur = {u: min(labels, key=lambda c: (delta_bytes[u][c], noise[u][c])) for u in units}
    path = [dict(cur)]
    while True:
        best: tuple[float, float, str, str] | None = None
        for u in units:
            here_b, here_n = delta_bytes[u][cur[u]], noise[u][cur[u]]
            for c in labels:
                gain = here_n - noise[u][c]
                if gain <= 0:
                    continue
                cost = delta_bytes[u][c] - here_b
                rate = math.inf if cost <= 0 else gain / cost
                key = (rate, -cost)
                if best is None or key > best[:2]:
                    best = (rate, -cost, u, c)
        if best is None:
            return path
        cur[best[2]] = best[3]
        path.append(dict(cur))


def spread(n_items: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``range(n_items)`` (ends included)."""
    if k <= 0 or n_items <= 0:
        return []
    if k >= n_items:
        return list(range(n_items))
    return sorted({int(round(i * (n_items - 1) / (k - 1))) for i in range(k)}) if k > 1 else [n_items // 2]
