"""``python -m harness.bench <benchmark> [options]``: run one benchmark.

Every module of :mod:`harness.bench` with a top-level ``main(argv) -> int``
function is a benchmark named after the module (``quantize``, ``executor``,
``mixed``); ``python -m harness.bench`` alone lists them. The list is read from
the modules' source (docstring and ``def main``) without importing them, so a
benchmark that needs an optional extra (torch) is listed anyway and fails with
its own message when run.
"""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import harness.bench as _pkg


def benchmarks() -> dict[str, str]:
    """{name: first docstring line} of every benchmark module."""
    out = {}
    for path in sorted(Path(_pkg.__file__).parent.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            doc = ast.get_docstring(tree) or ""
            out[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
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
