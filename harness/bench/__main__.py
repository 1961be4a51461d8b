"""``python -m harness.bench <benchmark> [options]``: run one benchmark.

Every module of :mod:`harness.bench` with a ``main(argv) -> int`` function is a
benchmark named after the module (``quantize``, ``executor``, ...); ``python -m
harness.bench`` alone lists them.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys

import harness.bench as _pkg


def benchmarks() -> dict[str, str]:
    """{name: first docstring line} of every benchmark module."""
    out = {}
    for info in pkgutil.iter_modules(_pkg.__path__):
        if info.name.startswith("_"):
            continue
        try:
            mod = importlib.import_module(f"harness.bench.{info.name}")
        except ImportError as exc:  # e.g. an optional extra is missing
            out[info.name] = f"(unavailable: {exc})"
            continue
        if callable(getattr(mod, "main", None)):
            out[info.name] = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    available = benchmarks()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m harness.bench <benchmark> [options]   (<benchmark> --help for its options)\n")
        for name, doc in sorted(available.items()):
            print(f"  {name:<12} {doc}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in available:
        print(f"unknown benchmark {name!r}; available: {', '.join(sorted(available))}", file=sys.stderr)
        return 2
    return int(importlib.import_module(f"harness.bench.{name}").main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
