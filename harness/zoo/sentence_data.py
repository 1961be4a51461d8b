"""A reproducible unlabelled sentence test set: sentences from Python standard-library docstrings.

:func:`sentences` returns the first ``n`` distinct sentences of 5-40 words (capitalised,
ending in ``.``, ``!`` or ``?``, no doctest prompts) found in the docstrings of
``MODULES`` and of their own classes and functions, in a fixed order. The text is
CPython's own (PSF licence); another Python version gives other sentences, so the
build records the Python version and the test set's sha256.
"""
from __future__ import annotations

import importlib
import re

MODULES = ["abc", "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
           "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "glob",
           "gzip", "hashlib", "heapq", "html", "http.client", "inspect", "io", "ipaddress", "itertools", "json",
           "logging", "mailbox", "math", "operator", "os", "pathlib", "pickle", "pprint", "queue", "random", "re",
           "shutil", "socket", "sqlite3", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile",
           "textwrap", "threading", "time", "timeit", "typing", "unittest", "urllib.parse", "uuid", "warnings",
           "weakref", "xml.dom.minidom", "zipfile"]


def sentences(n: int) -> list[str]:
    """The first ``n`` distinct docstring sentences of ``MODULES`` (fewer if the docstrings run out)."""
    seen, out = set(), []
    for name in MODULES:
        mod = importlib.import_module(name)
        docs = [mod.__doc__ or ""]
        for attr in sorted(vars(mod)):
            obj = getattr(mod, attr)
            doc = getattr(obj, "__doc__", None)
            if getattr(obj, "__module__", None) == mod.__name__ and isinstance(doc, str) and doc:
                docs.append(doc)  # (a class with __slots__ can have a descriptor as its __doc__)
        for doc in docs:
            text = re.sub(r"\s+", " ", doc)
            for s in re.split(r"(?<=[.!?])\s+", text):
                s = s.strip()
                words = s.split()
                if 5 <= len(words) <= 40 and s[0].isupper() and s[-1] in ".!?" and ">>>" not in s and s not in seen:
                    seen.add(s)
                    out.append(s)
                    if len(out) == n:
                        return out
    return out
