"""Import coremltools without the noise it prints on Linux, and without torch.

coremltools prints "Failed to load _MLModelProxy ..." lines (to stdout/stderr)
and warns about untested scikit-learn/torch versions on import. Users of
qsweep should not see that. Import it only through :func:`coremltools`.

coremltools also imports torch (and friends) on import when it is installed,
which costs seconds and is not needed to read, write or quantize specs. Unless
the process has imported torch already (the fixture and zoo scripts that
convert PyTorch models do so first), those imports are blocked while
coremltools loads, so its converters treat torch as absent.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
import warnings


@functools.lru_cache(maxsize=None)
def coremltools():
    """Return the ``coremltools`` module, imported quietly (once)."""
    if "coremltools" in sys.modules:
        return sys.modules["coremltools"]
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        # coremltools also logs through the logging module and writes to fd 2 from C code
        # on some platforms; silence the Python-level loggers during import.
        prev = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        try:
            with _quiet_fd(2), _quiet_fd(1), _without_optional_frameworks():
                import coremltools as ct  # noqa: F401
        finally:
            logging.disable(prev)
    return sys.modules["coremltools"]


_OPTIONAL_FRAMEWORKS = ("torch", "torchvision", "torchaudio", "torchao", "executorch", "tensorflow")


@contextlib.contextmanager
def _without_optional_frameworks():
    """Make ``import torch`` (etc.) fail while coremltools loads, unless already imported."""
    if os.environ.get("QSWEEP_COREMLTOOLS_WITH_TORCH") or "torch" in sys.modules:
        yield
        return
    blocked = [name for name in _OPTIONAL_FRAMEWORKS if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


@contextlib.contextmanager
def _quiet_fd(fd: int):
    """Redirect an OS-level file descriptor to /dev/null for the duration."""
    try:
        saved = os.dup(fd)
    except OSError:  # no such fd (embedded interpreters)
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            sys.stdout.flush() if fd == 1 else sys.stderr.flush()
        except Exception:
            pass
        os.dup2(devnull, fd)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def proto():
    """Return coremltools' generated protobuf modules namespace (``coremltools.proto``)."""
    return coremltools().proto


def can_predict() -> bool:
    """True where Core ML prediction works (macOS with libcoremlpython)."""
    ct = coremltools()
    try:
        from coremltools.models import model as _m  # noqa: F401
        return bool(getattr(ct.utils, "_is_macos", lambda: False)()) and _m._MLModelProxy is not None
    except Exception:
        return False
