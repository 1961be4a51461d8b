"""Disk trouble in the run directory: checked before the sweep, noticed mid-run, always named by file.

* :func:`check_writable` — the run directory (and ``models/``) can be created and
  written, or an :class:`~harness.errors.OutputError` naming the folder, before
  any work.
* :func:`writing` — every file the writer produces is written inside it: an
  ``OSError`` (disk full, read-only filesystem, permissions) becomes an
  OutputError naming that file and saying that the study keeps every finished
  trial.
* :class:`DiskWatch` — while the trials run, a log file that can no longer be
  written (the only file written mid-run) stops the worker after the trial in
  flight, instead of a traceback per log line.

Example:
    >>> import tempfile
    >>> check_writable(tempfile.mkdtemp())
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from harness.errors import OutputError

#: What every disk error adds: the trials are in the study, not only in the files.
SAFE = ("The study keeps every finished trial: free space (or fix the folder) and run the same command again, "
        "or write the run directory elsewhere from the study with "
        "`qsweep-report --study NAME --storage URL OUT_DIR`.")


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def check_writable(run_dir: str | Path) -> None:
    """Create ``run_dir`` and ``run_dir/models`` and write a probe file in each, or raise OutputError."""
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / "models"):
        probe = folder / f".qsweep-write-test-{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as f:
                f.write(b"qsweep" * 1024)
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as e:
            with contextlib.suppress(OSError):
                probe.unlink()
            raise OutputError(f"The run directory {folder} cannot be written ({_reason(e)}). Choose a writable "
                              "folder (hydra.run.dir=... for qsweep, OUT_DIR for qsweep-report), or fix its "
                              "permissions or free space, before the sweep starts.") from None


def check_creatable(folder: str | Path) -> None:
    """``folder`` can be created (its nearest existing ancestor takes a new folder), or raise OutputError.

    Nothing is left behind; for a folder that exists already see :func:`check_writable`.
    """
    folder = Path(folder).expanduser().absolute()
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent == folder:
        return check_writable(folder)
    try:
        if not parent.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        os.rmdir(tempfile.mkdtemp(prefix=".qsweep-write-test-", dir=parent))
    except OSError as e:
        raise OutputError(f"The run directory {folder} cannot be created: {parent} is not writable "
                          f"({_reason(e)}). Choose a writable folder (hydra.run.dir=...), or fix its permissions "
                          "or free space, before the sweep starts.") from None


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[Path]:
    """Write ``path`` inside the block; an OSError becomes an OutputError naming it."""
    path = Path(path)
    try:
        yield path
    except OSError as e:
        raise OutputError(f"Cannot write {path}: {_reason(e)}. {SAFE}") from None


class DiskWatch:
    """Notice, while trials run, that a log file under ``run_dir`` cannot be written (``with`` block).

    :meth:`problem` (the worker's ``should_stop``) then says why to stop; the
    first failure prints one line to stderr and the file handler is silenced.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir).resolve()
        self.failed: tuple[Path, str] | None = None
        self._lock = threading.Lock()
        self._patched: list[tuple[logging.Handler, Any]] = []

    def __enter__(self) -> "DiskWatch":
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.FileHandler):
                self._patched.append((h, h.handleError))
                h.handleError = self._handler_error(h)  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h, original in self._patched:
            h.handleError = original  # type: ignore[method-assign]
        self._patched.clear()

    def _handler_error(self, handler: logging.FileHandler) -> Any:
        def handle_error(record: logging.LogRecord) -> None:
            err = sys.exc_info()[1]
            if not isinstance(err, OSError):
                logging.FileHandler.handleError(handler, record)
                return
            with self._lock:
                first = self.failed is None
                if first:
                    self.failed = (Path(handler.baseFilename), _reason(err))
            if first:
                print(f"qsweep: cannot write {handler.baseFilename}: {_reason(err)}; stopping after the trial in "
                      "flight.", file=sys.stderr, flush=True)
        return handle_error

    def problem(self) -> str | None:
        """Why the worker should stop starting trials (a file it cannot write), or None."""
        if self.failed is None:
            return None
        return f"cannot write {self.failed[0]} ({self.failed[1]})"

    def raise_problem(self) -> None:
        """Raise the OutputError of the first failed write, if any."""
        if self.failed is not None:
            path, reason = self.failed
            raise OutputError(f"Cannot write {path}: {reason}; the sweep stopped early. {SAFE}")
